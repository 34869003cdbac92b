"""Feature groups -> embedding kernel.

An entry is described by five feature groups: chroma (C), spectral (6),
spatial (a thumbnail of ``grid*grid*C`` values plus one flatness slot),
label (``buckets``) and utility (2). Each group is turned into a *unit*
vector and scaled by its weight; the concatenation is projected by a
block-orthogonal matrix (groups stay in orthogonal subspaces) and
L2-normalised; each group's image is scaled back to its weight after the
projection, so every entry has the same norm before the final normalisation
even where a group has more features than its block of dimensions. A query
switches the groups it lacks off (zeros them), so
``cos(query, entry)`` is ``sum_g w_g**2 cos_g / (|q| |e|)`` over the groups the
query has: every stored entry has the same norm before normalisation, and a
missing group biases nothing.

Group vectors (before weighting):

- chroma: the chroma signature, unit-normalised;
- spectral: ``[entropy, low, mid, high, dominant_frequency, mean_psd / (1 +
  mean_psd)]`` (all in [0, 1]), unit-normalised;
- spatial: the thumbnail minus its per-channel mean (the structure; the colour
  is the chroma group's), then one slot of ``1e-3 * mean(|thumbnail|)`` so a
  flat tensor is a direction of its own rather than a zero vector, unit-normalised;
- label: one-hot of ``label mod buckets``, or uniform ``1/sqrt(buckets)`` without a label;
- utility: ``(cos(pi u / 2), sin(pi u / 2))`` of the utility clipped to [0, 1]
  (0.5 when none): unit by construction, nearby utilities have nearby directions.

A group whose vector is zero (an all-zero tensor) stays zero.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

#: number of feature groups, in order: chroma, spectral, spatial, label, utility
N_GROUPS = 5
#: length of the utility group
UTILITY_LEN = 2
#: relative size of the flatness slot of the spatial group
FLAT_EPS = 1e-3


@kernel
def _unit_into(src, dst, weight):
    """``dst = weight * src / |src|`` (float64 sums); zero stays zero."""
    ss = 0.0
    for j in range(src.shape[0]):
        ss += src[j] * src[j]
    if ss > 0.0:
        scale = weight / np.sqrt(ss)
        for j in range(src.shape[0]):
            dst[j] = src[j] * scale
    else:
        for j in range(src.shape[0]):
            dst[j] = 0.0


@kernel
def group_features(chroma, spectral, spatial, label, utility, present, weights, buckets, feat):
    """Write the weighted unit group vectors of one entry into ``feat`` (their concatenation)."""
    n_chroma = chroma.shape[0]
    n_spec = spectral.shape[0]
    n_spat = spatial.shape[0]
    feat[:] = 0.0
    base = 0
    if present[0]:
        g = np.empty(n_chroma)
        for j in range(n_chroma):
            g[j] = np.float64(chroma[j])
        _unit_into(g, feat[base : base + n_chroma], weights[0])
    base += n_chroma
    if present[1]:
        g = np.empty(n_spec)
        for j in range(n_spec):
            g[j] = np.float64(spectral[j])
        if n_spec == 6:  # mean_psd is unbounded: squash it into [0, 1)
            p = max(g[5], 0.0)
            g[5] = p / (1.0 + p)
        _unit_into(g, feat[base : base + n_spec], weights[1])
    base += n_spec
    if present[2]:
        g = np.zeros(n_spat + 1)
        C = n_chroma
        cells = n_spat // C if C > 0 else 0
        absum = 0.0
        for ch in range(C):
            m = 0.0
            for q in range(cells):
                m += np.float64(spatial[q * C + ch])
            m /= max(cells, 1)
            for q in range(cells):
                v = np.float64(spatial[q * C + ch])
                absum += abs(v)
                g[q * C + ch] = v - m
        g[n_spat] = FLAT_EPS * absum / max(n_spat, 1)
        _unit_into(g, feat[base : base + n_spat + 1], weights[2])
    base += n_spat + 1
    if present[3]:
        if label >= 0:
            feat[base + label % buckets] = weights[3]
        else:  # no label: uniform, unit like a one-hot
            u = weights[3] / np.sqrt(buckets)
            for j in range(buckets):
                feat[base + j] = u
    base += buckets
    if present[4]:
        u = 0.5 if np.isnan(utility) else min(max(utility, 0.0), 1.0)
        feat[base] = weights[4] * np.cos(0.5 * np.pi * u)
        feat[base + 1] = weights[4] * np.sin(0.5 * np.pi * u)


@kernel
def embed_batch(
    chroma, spectral, spatial, labels, utility, present, weights, buckets, projection, bounds
):
    """Unit embeddings ``(n, dim)`` float32 of ``n`` entries' feature groups.

    ``chroma`` (n, C), ``spectral`` (n, 6), ``spatial`` (n, grid*grid*C) float32;
    ``labels`` (n,) int32 (< 0: none); ``utility`` (n,) float64 (NaN: none);
    ``present`` (5,) bool switches whole groups off (queries that lack them);
    ``weights`` (5,) float64; ``projection`` (n_features, dim) float64;
    ``bounds`` (6,) int64: group ``g`` is features ``bounds[g]:bounds[g+1]``.
    """
    n = chroma.shape[0]
    n_feat = projection.shape[0]
    dim = projection.shape[1]
    out64 = np.zeros((n, dim))
    feat = np.empty(n_feat)
    acc = np.empty(dim)
    # serial: a few microseconds per entry, less than a parallel launch costs with a busy
    # core; and one kernel per entry's body, not a per-entry kernel called from here (each
    # level of kernels optimises its callees' code again on an empty cache)
    for i in range(n):
        out = out64[i]
        group_features(
            chroma[i],
            spectral[i],
            spatial[i],
            labels[i],
            utility[i],
            present,
            weights,
            buckets,
            feat,
        )
        for g in range(bounds.shape[0] - 1):
            # project the group, then scale its image back to the group's weight: a
            # projection that shrinks a group (more features than its block) must not
            # give entries different norms
            lo = bounds[g]
            hi = bounds[g + 1]
            gn2 = 0.0
            for j in range(lo, hi):
                gn2 += feat[j] * feat[j]
            if gn2 == 0.0:
                continue
            # each acc[c] sums over j in order (as a dot product per column would), but the
            # loop runs along projection's rows: contiguous, and vectorised across columns
            for c in range(dim):
                acc[c] = 0.0
            for j in range(lo, hi):
                fj = feat[j]
                prow = projection[j]
                for c in range(dim):
                    acc[c] += fj * prow[c]
            an2 = 0.0
            for c in range(dim):
                an2 += acc[c] * acc[c]
            if an2 == 0.0:
                continue
            scale = np.sqrt(gn2 / an2)
            for c in range(dim):
                out[c] += acc[c] * scale
        norm2 = 0.0
        for c in range(dim):
            norm2 += out[c] * out[c]
        if norm2 > 0.0:
            inv = 1.0 / np.sqrt(norm2)
            for c in range(dim):
                out[c] *= inv
    return out64.astype(np.float32)

"""Feature-vector -> embedding kernel.

An entry's feature vector is ``[chroma (C), spectral (6), label one-hot
(buckets), utility (1)]``, each group scaled by its weight; it is projected
by an orthonormal matrix and L2-normalised (a zero vector stays zero).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel, parallel_kernel, prange


@kernel
def _embed_one(chroma, spectral, label, utility, present, weights, buckets, projection, out):
    n_chroma = chroma.shape[0]
    n_spec = spectral.shape[0]
    n_feat = projection.shape[0]
    dim = projection.shape[1]
    feat = np.zeros(n_feat)
    if present[0]:
        for j in range(n_chroma):
            feat[j] = weights[0] * chroma[j]
    base = n_chroma
    if present[1]:
        for j in range(n_spec):
            feat[base + j] = weights[1] * spectral[j]
    base += n_spec
    if present[2]:
        if label >= 0:
            feat[base + label % buckets] = weights[2]
        else:  # no label: uniform, same norm as a one-hot
            u = weights[2] / np.sqrt(buckets)
            for j in range(buckets):
                feat[base + j] = u
    base += buckets
    if present[3]:
        u = 0.5 if np.isnan(utility) else min(max(utility, 0.0), 1.0)
        feat[base] = weights[3] * u
    norm2 = 0.0
    for c in range(dim):
        acc = 0.0
        for j in range(n_feat):
            acc += feat[j] * projection[j, c]
        out[c] = acc
        norm2 += acc * acc
    if norm2 > 0.0:
        inv = 1.0 / np.sqrt(norm2)
        for c in range(dim):
            out[c] *= inv


@parallel_kernel
def embed_batch(chroma, spectral, labels, utility, present, weights, buckets, projection):
    """Embeddings ``(n, dim)`` float32 for ``n`` feature rows.

    ``present`` (4,) bool switches whole groups off (queries that lack them);
    a label < 0 is "no label" (uniform group), a NaN utility counts as 0.5.
    """
    n = chroma.shape[0]
    dim = projection.shape[1]
    out64 = np.zeros((n, dim))
    for i in prange(n):
        _embed_one(chroma[i], spectral[i], labels[i], utility[i], present, weights,
                   buckets, projection, out64[i])
    return out64.astype(np.float32)

"""Greedy maximal marginal relevance (MMR) kernels.

Similarity is cosine, computed inside from the raw float32 rows: dot products
accumulate in float64 and are divided by the product of the float64 norms; a
zero query or zero candidate has similarity 0 with everything (as LangChain's
``maximal_marginal_relevance`` does). The first pick is the most relevant
candidate; each later pick maximises
``lambda_ * relevance[i] - (1 - lambda_) * redundancy[i]``, ties to the lower
index. :func:`mmr_standard` keeps redundancy as a running max over all picks,
so each step costs one pass of dot products against the newest pick only:
O(n k d) in all.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import kernel
from .cosine import dot64, dots_transposed, rows_transposed
from .select import fold_max, greedy_pick

__all__ = ["mmr_standard", "mmr_fast"]


@kernel
def _cosines_to(CT, norms, v64, vnorm, out):
    """``out[i] = cos(row i, v)`` with zero rows or a zero ``v`` giving 0."""
    dots_transposed(CT, v64, out)
    for i in range(out.shape[0]):
        den = norms[i] * vnorm
        out[i] = out[i] / den if den > 0.0 else 0.0


@kernel
def _row_f64(X, p, out):
    for j in range(X.shape[1]):
        out[j] = X[p, j]


@kernel
def _norms_t(CT):
    """Row norms from the transposed rows: sequential float64 sums, vectorised over rows."""
    d, n = CT.shape
    ss = np.zeros(n)
    for j in range(d):
        r = CT[j]
        for i in range(n):
            v = np.float64(r[i])
            ss[i] += v * v
    return np.sqrt(ss)


@kernel
def _mmr(query, cands, k, lambda_, min_similarity, sample_size):
    """Shared body. Stops early when no unchosen candidate has relevance
    ``>= min_similarity``; redundancy uses every pick when
    ``sample_size <= 0 or >= k``, else the first pick plus the latest
    ``sample_size - 1`` picks."""
    n, d = cands.shape
    kk = min(k, n) if k > 0 else 0
    out_i = np.empty(kk, dtype=np.int64)
    out_s = np.empty(kk, dtype=np.float32)
    if kk == 0:
        return out_i, out_s
    CT = rows_transposed(cands)  # rows along the inner loop, so dot passes vectorise
    norms = _norms_t(CT)
    q64 = np.empty(d)
    for j in range(d):
        q64[j] = query[j]
    rel = np.empty(n)
    _cosines_to(CT, norms, q64, np.sqrt(dot64(q64, q64)), rel)  # sequential, as the rows
    lam = np.float64(lambda_)
    sampled = 0 < sample_size < kk
    window = sample_size - 1 if sampled else 0  # latest picks kept besides the first
    # sampled redundancy cannot be a running max (old picks leave the sample), so
    # keep each sampled pick's similarity row: the first, plus a ring of `window`
    first_sims = np.empty(n if sampled else 0)
    ring = np.empty((window, n))
    chosen = np.zeros(n, dtype=np.bool_)
    maxsim = np.full(n, -np.inf)
    sims = np.empty(n)
    cp = np.empty(d)
    count = 0
    while count < kk:
        if min_similarity > -np.inf:  # early termination: nothing relevant enough is left
            top = -np.inf
            for i in range(n):
                if not chosen[i] and rel[i] > top:
                    top = rel[i]
            if top < min_similarity:
                break
        best, best_v = greedy_pick(rel, maxsim, chosen, count == 0, lam, 1.0 - lam)
        out_i[count] = best
        out_s[count] = best_v
        chosen[best] = True
        count += 1
        if count == kk:
            break
        _row_f64(cands, best, cp)
        _cosines_to(CT, norms, cp, norms[best], sims)
        if not sampled:
            fold_max(maxsim, sims)
        else:
            # element loops, not `a[:] = b`: an array-to-slice assignment makes numba compile
            # its shape-mismatch error message (string formatting, ~2 s on a cold cache)
            if count == 1:
                for j in range(n):
                    first_sims[j] = sims[j]
            elif window > 0:
                row = ring[(count - 2) % window]
                for j in range(n):
                    row[j] = sims[j]
            # sample = first pick + the latest `window` picks (all picks while few)
            held = min(count - 1, window)
            for j in range(n):
                maxsim[j] = first_sims[j]
            for r in range(held):
                fold_max(maxsim, ring[r])
    return out_i[:count].copy(), out_s[:count].copy()


def mmr_standard(query, cands, k, lambda_):
    """Greedy MMR: ``min(k, n)`` picks of the rows of ``cands`` for ``query``.

    Picks match LangChain's ``maximal_marginal_relevance``. A plain function over
    the one compiled kernel ``_mmr`` (a kernel wrapping it would be one more
    compile of the whole MMR code on an empty cache).

    Parameters
    ----------
    query : numpy.ndarray
        float32 ``(d,)``, C-contiguous.
    cands : numpy.ndarray
        float32 ``(n, d)``, C-contiguous.
    k : int
        Number of picks wanted.
    lambda_ : float
        In [0, 1]; 1 is relevance only.

    Returns
    -------
    indices : numpy.ndarray
        int64, in pick order.
    scores : numpy.ndarray
        float32: the first pick's relevance, then the MMR value that won each step.
    """
    return _mmr(query, cands, int(k), float(lambda_), -math.inf, 0)


def mmr_fast(query, cands, k, lambda_, min_similarity, sample_size):
    """Approximate MMR: early termination plus a sampled redundancy term.

    Stops (returning fewer than ``k``) once no unchosen candidate has
    relevance ``>= min_similarity`` (-inf, or anything below -1, disables
    this). Redundancy is the max similarity to a deterministic sample of the
    picks: the first pick plus the latest ``sample_size - 1`` picks;
    ``sample_size <= 0`` or ``>= k`` uses every pick, and then (with
    termination disabled) the result equals :func:`mmr_standard` exactly.

    Parameters
    ----------
    query : numpy.ndarray
        float32 ``(d,)``, C-contiguous.
    cands : numpy.ndarray
        float32 ``(n, d)``, C-contiguous.
    k : int
        Most picks wanted.
    lambda_ : float
        In [0, 1]; 1 is relevance only.
    min_similarity : float
        Stop once no unchosen candidate is this relevant.
    sample_size : int
        Picks in the redundancy sample (<= 0: every pick).

    Returns
    -------
    indices : numpy.ndarray
        int64, in pick order.
    scores : numpy.ndarray
        float32, as :func:`mmr_standard`'s.
    """
    return _mmr(query, cands, int(k), float(lambda_), float(min_similarity), int(sample_size))

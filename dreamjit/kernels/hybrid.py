"""Hybrid rerank of retrieval candidates: similarity, utility, class match, diversity.

For ``m`` candidates (already found by an index) the base score is
``alpha * sim_norm + beta * utility + gamma * class_match`` where

- ``sim_norm`` is the cosine similarity min-max normalised over the
  candidates (all equal -> 1.0 for all, so a lone candidate is not zeroed),
- ``utility`` is the running mean utility clipped to [0, 1],
- ``class_match`` is 1 for the query's label, 0 for another label and 0.5
  when either label is unknown (-1).

Candidates are then picked greedily: first the best base score, then the best
``lambda_ * base[i] - delta * maxsim[i]`` where ``maxsim`` is the running max
of dot products with the embeddings already picked (unit rows, so cosine).
Ties go to the lower index throughout.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel
from .cosine import dots_transposed, rows_transposed
from .select import fold_max, greedy_pick

__all__ = ["hybrid_base_scores", "hybrid_rerank"]


@kernel
def hybrid_base_scores(sim, util_mean, labels, query_label, alpha, beta, gamma):
    """The base score of each candidate, float64 (m,)."""
    m = sim.shape[0]
    base = np.empty(m)
    if m == 0:
        return base
    lo = np.float64(sim[0])
    hi = lo
    for i in range(1, m):
        v = np.float64(sim[i])
        lo = min(lo, v)
        hi = max(hi, v)
    span = hi - lo
    for i in range(m):
        s = (np.float64(sim[i]) - lo) / span if span > 0.0 else 1.0
        u = min(max(np.float64(util_mean[i]), 0.0), 1.0)
        if labels[i] < 0 or query_label < 0:
            c = 0.5
        elif labels[i] == query_label:
            c = 1.0
        else:
            c = 0.0
        base[i] = alpha * s + beta * u + gamma * c
    return base


@kernel
def hybrid_rerank(sim, util_mean, labels, query_label, emb, alpha, beta, gamma, delta, lambda_, k):
    """Greedy hybrid rerank of ``m`` candidates; ``min(k, m)`` picks.

    Parameters: ``sim`` (m,) float32 cosine to the query, ``util_mean`` (m,)
    float64, ``labels`` (m,) int32 (-1 = none), ``query_label`` int (-1 =
    none), ``emb`` (m, d) float32 unit rows, weights ``alpha, beta, gamma,
    delta, lambda_`` floats, ``k`` int. Returns ``(order int64, scores
    float32)``: candidate indices in pick order and the value that won each
    pick (the base score for the first).
    """
    m = sim.shape[0]
    kk = min(k, m) if k > 0 else 0
    order = np.empty(kk, dtype=np.int64)
    scores = np.empty(kk, dtype=np.float32)
    if kk == 0:
        return order, scores
    base = hybrid_base_scores(sim, util_mean, labels, query_label, alpha, beta, gamma)
    d = emb.shape[1]
    lam = np.float64(lambda_)
    dl = np.float64(delta)
    # without a duplicate penalty the similarities to the picks cannot change a value
    # (``lam*base - 0*maxsim``): they are not computed, and maxsim stays 0 (finite, as after
    # a first pick), so every value and pick is the same, bit for bit
    penalty = dl != 0.0
    ET = rows_transposed(emb if penalty else emb[:0])
    chosen = np.zeros(m, dtype=np.bool_)
    maxsim = np.full(m, -np.inf) if penalty else np.zeros(m)
    dots = np.empty(m)
    cp = np.empty(d)
    for step in range(kk):
        best, best_v = greedy_pick(base, maxsim, chosen, step == 0, lam, dl)
        order[step] = best
        scores[step] = best_v
        chosen[best] = True
        if penalty and step + 1 < kk:
            for j in range(d):
                cp[j] = emb[best, j]
            dots_transposed(ET, cp, dots)
            fold_max(maxsim, dots)
    return order, scores

"""Query-path kernels: the fused single soft query, filtered scans and batch retrieval.

- :func:`soft_query` runs a whole exact soft retrieval in one call (query
  normalisation, the column-major scan for candidates, the id order, the
  hybrid rerank), with the same bits as the separate kernels it is made of.
- :func:`topk_dot_slots` is the exact top-k over a given list of slots (a
  filter matching few entries: cost proportional to the matches).
- :func:`rerank_batch` and :func:`topk_cosine_batch` are the batch forms of
  the soft rerank and of hard retrieval, in parallel over queries.

Ties go to the lower entry id wherever ids are passed; where a tie straddles
the cut of a top-k (so the id order could change *which* entries are in), the
kernels flag the query and the caller answers it with the single-query path.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel, parallel_kernel, prange
from .cosine import _COL_BLOCK, _heap_result, _to_f64, _topk_cols_range, dot64, topk_cosine
from .heap import heap_offer as _heap_offer
from .hybrid import hybrid_rerank

__all__ = [
    "SOFT_OK",
    "SOFT_TIE",
    "SOFT_ZERO",
    "SOFT_NONFINITE",
    "rerank_batch",
    "soft_query",
    "topk_cosine_batch",
    "topk_dot_slots",
    "unit_query",
]

#: :func:`soft_query` status codes
SOFT_OK = 0
SOFT_TIE = 1  # scores tie across the candidate cut: the caller takes the general path
SOFT_ZERO = 2  # the query has no direction
SOFT_NONFINITE = 3  # NaN or inf in the query


@kernel
def unit_query(v):
    """``(unit float32 copy of v, status)``: as :func:`~dreamjit.kernels.cosine.normalize_rows`
    on one row; status :data:`SOFT_ZERO` or :data:`SOFT_NONFINITE` for a bad query."""
    d = v.shape[0]
    out = np.zeros(d, dtype=np.float32)
    ss = 0.0
    for j in range(d):
        x = np.float64(v[j])
        if not np.isfinite(x):
            return out, SOFT_NONFINITE
        ss += x * x
    if not ss > 0.0:
        return out, SOFT_ZERO
    if not np.isfinite(ss):
        return out, SOFT_NONFINITE
    norm = np.sqrt(ss)
    for j in range(d):
        out[j] = np.float64(v[j]) / norm
    return out, SOFT_OK


@kernel
def _by_id(slots, ids):
    """``slots`` reordered by ascending ``ids[slot]`` (ids are distinct)."""
    keys = np.empty(slots.shape[0], dtype=np.int64)
    for i in range(slots.shape[0]):
        keys[i] = ids[slots[i]]
    return np.argsort(keys)


@kernel
def _rerank_candidates(
    cand, sims, E, ids, util_mean, labels, qlabel, k, alpha, beta, gamma, delta, lambda_
):
    """The hybrid rerank of candidate ``cand`` (any order; put in id order here)."""
    order = _by_id(cand, ids)
    c = order.shape[0]
    d = E.shape[1]
    cs = np.empty(c, dtype=np.int64)
    ss = np.empty(c, dtype=np.float32)
    um = np.empty(c, dtype=np.float64)
    lb = np.empty(c, dtype=np.int32)
    emb = np.empty((c, d), dtype=np.float32)
    for i in range(c):
        sl = cand[order[i]]
        cs[i] = sl
        ss[i] = sims[order[i]]
        um[i] = util_mean[sl]
        lb[i] = labels[sl]
        for j in range(d):
            emb[i, j] = E[sl, j]
    pick, scores = hybrid_rerank(
        ss, um, lb, qlabel, emb, alpha, beta, gamma, delta, lambda_, k
    )
    out_s = np.empty(pick.shape[0], dtype=np.int64)
    out_c = np.empty(pick.shape[0], dtype=np.float32)
    for i in range(pick.shape[0]):
        out_s[i] = cs[pick[i]]
        out_c[i] = ss[pick[i]]
    return out_s, scores, out_c


@kernel
def soft_query(
    XT,
    E,
    v,
    normalize,
    mask,
    n_match,
    ids,
    util_mean,
    labels,
    qlabel,
    cc,
    k,
    alpha,
    beta,
    gamma,
    delta,
    lambda_,
):
    """One exact soft retrieval: ``(slots, scores, similarity, status)``.

    ``XT`` (d, n) column-major and ``E`` (n, d) row-major unit embeddings;
    ``v`` (d,) the query (normalised here if ``normalize``, else already unit); ``mask`` (n,) bool of the
    ``n_match`` selectable rows; ``ids``, ``util_mean``, ``labels`` the
    columns; ``cc`` the candidate count; then the rerank's ``k`` and weights.
    The candidates are the best ``cc`` rows by dot product (as
    :func:`~dreamjit.kernels.cosine.topk_dot_columns`), taken in id order and
    reranked by :func:`~dreamjit.kernels.hybrid.hybrid_rerank`. ``status``
    is :data:`SOFT_OK`, or :data:`SOFT_TIE` (scores tie across the cut), or a
    bad query (:data:`SOFT_ZERO`, :data:`SOFT_NONFINITE`); then the arrays are
    empty.
    """
    none_i = np.empty(0, dtype=np.int64)
    none_s = np.empty(0, dtype=np.float32)
    if normalize:
        q, status = unit_query(v)
        if status != SOFT_OK:
            return none_i, none_s, none_s, status
    else:
        q = v
    n = XT.shape[1]
    cap = min(cc + 1, n_match)
    if cap <= 0 or k <= 0:
        return none_i, none_s, none_s, SOFT_OK
    hs = np.empty(cap, dtype=np.float64)
    hi = np.empty(cap, dtype=np.int64)
    acc = np.empty(min(n, _COL_BLOCK), dtype=np.float64)
    size = _topk_cols_range(XT, _to_f64(q), mask, 0, n, hs, hi, acc)
    slots, sims = _heap_result(hs, hi, size)
    if size > cc:
        if sims[cc] == sims[cc - 1]:
            return none_i, none_s, none_s, SOFT_TIE
        slots = slots[:cc]
        sims = sims[:cc]
    out_s, scores, out_c = _rerank_candidates(
        slots, sims, E, ids, util_mean, labels, qlabel, k, alpha, beta, gamma, delta, lambda_
    )
    return out_s, scores, out_c, SOFT_OK


@kernel
def topk_dot_slots(X, q, slots, k):
    """Exact top-k over the rows ``slots`` (ascending) of ``X`` (n, d):
    ``(rows int64, scores float32)``, score descending, ties to the lower row,
    scores bit-identical to :func:`~dreamjit.kernels.cosine.topk_dot`."""
    cap = min(k, slots.shape[0]) if k > 0 else 0
    hs = np.empty(cap, dtype=np.float64)
    hi = np.empty(cap, dtype=np.int64)
    size = 0
    if cap > 0:
        q64 = _to_f64(q)
        thr = -np.inf
        for r in range(slots.shape[0]):
            i = slots[r]
            s = dot64(X[i], q64)
            if s > thr:  # ascending rows: an equal score never displaces
                size = _heap_offer(hs, hi, size, s, i)
                if size == cap:
                    thr = hs[0]
    return _heap_result(hs, hi, size)


@parallel_kernel(size_arg=0)
def rerank_batch(
    cand, sims, counts, E, ids, util_mean, labels, qlabels, k, alpha, beta, gamma, delta, lambda_
):
    """:func:`soft_query`'s rerank for each row of ``cand`` (m, c) (candidate slots,
    any order; the first ``counts[t]`` of row ``t`` are used) with cosines ``sims``
    (m, c) and query labels ``qlabels`` (m,), in parallel over rows.

    Returns ``(slots (m, kk) int64, scores (m, kk) float32, similarity (m, kk)
    float32)`` with ``kk = min(k, c)``, padded with -1 / NaN / NaN.
    """
    m = cand.shape[0]
    kk = min(k, cand.shape[1]) if k > 0 else 0
    out_i = np.full((m, kk), -1, dtype=np.int64)
    out_s = np.full((m, kk), np.nan, dtype=np.float32)
    out_c = np.full((m, kk), np.nan, dtype=np.float32)
    for t in prange(m):
        c = counts[t]
        if c == 0 or kk == 0:
            continue
        sl, sc, cs = _rerank_candidates(
            cand[t, :c],
            sims[t, :c],
            E,
            ids,
            util_mean,
            labels,
            qlabels[t],
            kk,
            alpha,
            beta,
            gamma,
            delta,
            lambda_,
        )
        for i in range(sl.shape[0]):
            out_i[t, i] = sl[i]
            out_s[t, i] = sc[i]
            out_c[t, i] = cs[i]
    return out_i, out_s, out_c


@parallel_kernel(size_arg=1)
def topk_cosine_batch(X, Q, mask, ids, k):
    """:func:`~dreamjit.kernels.cosine.topk_cosine` for each row of ``Q`` (m, C), in
    parallel over queries, ties to the lower *id* (``ids`` per row of ``X``).

    Returns ``(rows (m, kk) int64, scores (m, kk) float32, tie (m,) bool)`` with
    ``kk = min(k, mask.sum())``, padded with -1 / NaN; ``tie[t]`` says query
    ``t``'s scores tie across the cut (which entries are in then depends on the
    id order: the caller answers that query on its own).
    """
    m = Q.shape[0]
    nsel = 0
    for i in range(mask.shape[0]):
        if mask[i]:
            nsel += 1
    kk = min(k, nsel) if k > 0 else 0
    out_i = np.full((m, kk), -1, dtype=np.int64)
    out_s = np.full((m, kk), np.nan, dtype=np.float32)
    tie = np.zeros(m, dtype=np.bool_)
    if kk == 0:
        return out_i, out_s, tie
    for t in prange(m):
        rows, sc = topk_cosine(X, Q[t], mask, kk + 1)
        if rows.shape[0] > kk and sc[kk] == sc[kk - 1]:
            tie[t] = True
            continue
        n_out = min(kk, rows.shape[0])
        # insertion sort by (score desc, id asc): moves only entries of equal score
        for i in range(n_out):
            r = rows[i]
            s = sc[i]
            j = i
            while j > 0 and out_s[t, j - 1] == s and ids[out_i[t, j - 1]] > ids[r]:
                out_i[t, j] = out_i[t, j - 1]
                out_s[t, j] = out_s[t, j - 1]
                j -= 1
            out_i[t, j] = r
            out_s[t, j] = s
    return out_i, out_s, tie

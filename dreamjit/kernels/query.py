"""Query-path kernels: the fused single soft query, filtered scans and batch retrieval.

- :func:`soft_query` runs a whole exact soft retrieval in one call (query
  normalisation, the column-major scan for candidates, the id order, the
  hybrid rerank), with the same bits as the separate kernels it is made of;
  :func:`soft_query_into` writes its results, and the hits' ids, into arrays
  the caller passes.
- :func:`topk_dot_slots` is the exact top-k over a given list of slots (a
  filter matching few entries: cost proportional to the matches).
- :func:`soft_query_batch` is :func:`soft_query` for a batch, with a blocked
  scan: each block of rows is scored in float32 against a tile of queries at
  once (read from memory once per tile, not once per query), and only rows
  that a proven bound cannot exclude are scored exactly (the single path's
  bits, so the same candidates, ties and rerank).
- :func:`rerank_batch` and :func:`topk_cosine_batch` are the batch forms of
  the soft rerank and of hard retrieval, in parallel over queries.
- :func:`topk_dot_int8` is the exact top-k read mostly from an int8 copy of
  the embeddings (a quarter of the bytes): every row is scored in int32 from
  the copy, rows that provably cannot reach the top k are dropped, and the
  rest are scored exactly (same result, bit for bit, as the float32 scan).

The int8 bound. Rows ``x`` and the query ``q`` are quantised as
``x8 = round(127 x)``, ``q8 = round(127 q)``; with ``a = x8.q8 / 127**2``,
``r = |x - x8/127|`` (at most ``R``, the store's ``quant_error``) and
``rq = |q - q8/127|``: ``|x.q - a| <= R |q| + (|x| + R) rq =: E`` (Cauchy-
Schwarz twice; ``|x| <= 1`` for the unit rows stored, plus a slack of 1e-6
for float64 rounding). The k rows of largest ``a`` score at least
``a_k - E``, so the true k-th score is at least that, and any row of the
true top k (ties included) has ``a >= a_k - 2E``: those are the candidates.

Ties go to the lower entry id wherever ids are passed; where a tie straddles
the cut of a top-k (so the id order could change *which* entries are in), the
kernels flag the query and the caller answers it with the single-query path.
"""

from __future__ import annotations

import numpy as np

from ._jit import inline_kernel, kernel, nav_kernel, parallel_kernel, prange
from .cosine import (
    _COL_BLOCK,
    _heap_result,
    _new_heap,
    _to_f64,
    _topk_cols_range,
    dot64,
    topk_cosine,
)
from .heap import heap_offer as _heap_offer
from .hybrid import hybrid_rerank

__all__ = [
    "BLOCKED_MIN_ROWS",
    "SOFT_OK",
    "SOFT_TIE",
    "SOFT_ZERO",
    "SOFT_NONFINITE",
    "SOFT_FEW",
    "label_mask",
    "quantize_rows",
    "rerank_batch",
    "rerank_candidates",
    "round_f32_into",
    "soft_query",
    "soft_query_batch",
    "soft_query_into",
    "topk_cosine_batch",
    "topk_dot_int8",
    "topk_dot_slots",
    "unit_query",
]

#: the smallest float64 that rounds to float32 inf: halfway between float32's largest value
#: (2**128 - 2**104) and 2**128 (a tie, rounded to the even neighbour, inf)
_F32_OVERFLOW = 2.0**128 - 2.0**103

#: :func:`soft_query` status codes
SOFT_OK = 0
SOFT_TIE = 1  # scores tie across the candidate cut: the caller takes the general path
SOFT_ZERO = 2  # the query has no direction
SOFT_NONFINITE = 3  # NaN or inf in the query
SOFT_FEW = 4  # the graph walk found fewer valid rows than asked: the caller scans exactly


#: rows per block of the int8 scan: its int32 scores (16 KB) stay in L1
_Q_BLOCK = 4096
#: slack added to the int8 bound for float64 rounding in the scores and the bound
_Q_SLACK = 1e-6
#: below this many rows the float32 column scan is as fast as the int8 prefilter
INT8_MIN_ROWS = 4096
#: below :data:`INT8_MIN_ROWS` the float32 prefilter (:func:`_topk_f32_into`) scans when the
#: heap holds at most this share of the rows (else nearly every row is rescored anyway)
F32_SHARE = 4


@kernel
def quantize_rows(X):
    """``(int8 (m, d) round(127 x) clipped to [-127, 127], float64 (m,) |x - q/127|)``."""
    m, d = X.shape
    out = np.empty((m, d), dtype=np.int8)
    err = np.empty(m, dtype=np.float64)
    for i in range(m):
        ss = 0.0
        for j in range(d):
            v = np.float64(X[i, j])
            r = min(max(np.rint(v * 127.0), -127.0), 127.0)
            out[i, j] = np.int8(r)
            e = v - r / 127.0
            ss += e * e
        err[i] = np.sqrt(ss)
    return out, err


@kernel
def _int8_bound(q64, quant_error):
    """``(q8 int32 (d,), E)``: the quantised query and the bound on ``|x.q - a|``."""
    d = q64.shape[0]
    q8 = np.empty(d, dtype=np.int32)
    rq = 0.0
    qn = 0.0
    for j in range(d):
        r = min(max(np.rint(q64[j] * 127.0), -127.0), 127.0)
        q8[j] = np.int32(r)
        e = q64[j] - r / 127.0
        rq += e * e
        qn += q64[j] * q64[j]
    R = quant_error
    return q8, R * np.sqrt(qn) + (1.0 + _Q_SLACK + R) * np.sqrt(rq) + _Q_SLACK


@kernel
def _topk_int8_into(XT8, X, q64, mask, quant_error, hs, hi):
    """The exact top-``hs.shape[0]`` of the masked rows into the empty heap (see
    :func:`topk_dot_int8`); returns its size."""
    n = XT8.shape[1]
    q8, bound = _int8_bound(q64, quant_error)
    q16 = np.empty(q8.shape[0], dtype=np.int16)
    for j in range(q8.shape[0]):
        q16[j] = np.int16(q8[j])
    # int32 scores from the int8 copy (vectorised across rows; integer sums, exact in any
    # order), then the rows that can reach the top k, scored exactly
    A = np.empty(n, dtype=np.int32)
    for i0 in range(0, n, _Q_BLOCK):  # a block's sums stay in L1
        _int8_dots(XT8, q16, i0, min(_Q_BLOCK, n - i0), A[i0:])
    return _select_rescore(A, 2.0 * bound * 16129.0, X, q64, mask, hs, hi)  # 127**2


@kernel
def _int8_dots(XT8, q16, i0, b, out):
    """``out[i] = sum_j XT8[j, i0 + i] * q16[j]`` (int32, exact) for ``i < b``: rows of the
    int8 copy two at a time as int16 products (``|x|, |q| <= 127``, so a product fits in
    int16 and a pair's sum in int32), summed into int32; the loop over rows vectorises."""
    d = XT8.shape[0]
    for i in range(b):
        out[i] = 0
    j = 0
    while j + 2 <= d:
        r0 = XT8[j, i0 : i0 + b]
        r1 = XT8[j + 1, i0 : i0 + b]
        c0 = q16[j]
        c1 = q16[j + 1]
        for i in range(b):
            out[i] += np.int32(np.int16(r0[i]) * c0) + np.int32(np.int16(r1[i]) * c1)
        j += 2
    if j < d:
        r0 = XT8[j, i0 : i0 + b]
        c0 = q16[j]
        for i in range(b):
            out[i] += np.int32(np.int16(r0[i]) * c0)


@kernel
def _rescore_into(A, cut, X, q64, mask, hs, hi):
    """Score exactly (``dot64``'s bits) the masked rows of ``X`` (n, d) whose prefilter
    score ``A[i]`` is at least ``cut`` and offer them, in index order, to the empty heap
    ``hs``/``hi``; return its size.

    Rows go in runs of :data:`_SOFT_SUB`: a run with no ``A`` at or above ``cut`` (most of
    them) is passed over after one vectorised count; the rows found are scored four
    sequential float64 chains at a time (:func:`_cols_dot64` on ``X.T``).
    """
    n = A.shape[0]
    cap = hs.shape[0]
    rows = np.empty(_SOFT_PENDING + _SOFT_SUB, dtype=np.int64)
    acc = np.empty(rows.shape[0], dtype=np.float64)
    size = 0
    thr = -np.inf
    nr = np.int64(0)  # not Literal[int](0): one signature of _cols_dot64
    for i0 in range(0, n, _SOFT_SUB):
        i1 = min(i0 + _SOFT_SUB, n)
        run = A[i0:i1]
        c = 0
        for i in range(run.shape[0]):  # a count over a slice: vectorised
            c += np.float64(run[i]) >= cut
        if c > 0:
            for i in range(i0, i1):
                if np.float64(A[i]) >= cut and mask[i]:
                    rows[nr] = i
                    nr += 1
        if nr >= _SOFT_PENDING or (i1 == n and nr > 0):
            _cols_dot64(X.T, q64, rows, nr, acc)
            for r in range(nr):
                if acc[r] > thr:  # index order: an equal score never displaces
                    size = _heap_offer(hs, hi, size, acc[r], rows[r])
                    if size == cap:
                        thr = hs[0]
            nr = np.int64(0)  # not Literal[int](0): one signature of _cols_dot64
    return size


@nav_kernel
def _dots32(XT, q, i0, b, out):
    """``out[i] ~= dot(X[i0 + i], q)`` for ``i < b`` in float32 from the column-major ``XT``
    (d, n): navigation arithmetic (reassociated, contracted to FMA; four columns per pass
    over ``out``), within :func:`_approx_bound` of the exact score."""
    d = XT.shape[0]
    for i in range(b):
        out[i] = 0.0
    j = 0
    while j + 4 <= d:
        r0 = XT[j, i0 : i0 + b]
        r1 = XT[j + 1, i0 : i0 + b]
        r2 = XT[j + 2, i0 : i0 + b]
        r3 = XT[j + 3, i0 : i0 + b]
        a0 = np.float32(q[j])
        a1 = np.float32(q[j + 1])
        a2 = np.float32(q[j + 2])
        a3 = np.float32(q[j + 3])
        for i in range(b):
            out[i] += r0[i] * a0 + r1[i] * a1 + r2[i] * a2 + r3[i] * a3
        j += 4
    while j < d:
        r0 = XT[j, i0 : i0 + b]
        a0 = np.float32(q[j])
        for i in range(b):
            out[i] += r0[i] * a0
        j += 1


@kernel
def _largest_into(A, mask, start, stop, top, size):
    """Offer ``A[i]`` for the masked ``start <= i < stop`` to ``top``, the ``size`` largest
    values offered so far in ascending order (capacity ``top.shape[0]``); return the new
    size. Once full, ``top[0]`` is the capacity-th largest value.

    An insertion into a short sorted run: for the few dozen values of a top-k threshold,
    several times cheaper than a heap's offer (whose sift branches are unpredictable).
    Runs of :data:`_SOFT_SUB` values with none above the current threshold (most of them
    once ``top`` is full) are passed over after one vectorised count; in the others each
    value is compared inline and only those above the threshold are inserted (measured,
    1e3 float32 scores, top 11: 1.0 us against 2.5 us when every value of such a run went
    through a call).
    """
    cap = top.shape[0]
    lo = top[0] if size == cap else -np.inf
    for r0 in range(start, stop, _SOFT_SUB):
        r1 = min(r0 + _SOFT_SUB, stop)
        run = A[r0:r1]
        c = 0
        for i in range(run.shape[0]):  # a count over a slice: vectorised (an index range
            c += np.float64(run[i]) > lo  # r0..r1 into A is not); most runs: none above lo
        if c == 0:
            continue
        for i in range(r0, r1):
            v = A[i]
            if v > lo and mask[i]:
                size, lo = _insert_largest(v, lo, top, size)
    return size


@inline_kernel
def _insert_largest(v, lo, top, size):
    """One insertion of :func:`_largest_into` (``v > lo``, selected): ``(size, lo)`` after
    it. Inlined: a call per value would cost more than the insertion."""
    cap = top.shape[0]
    if size < cap:  # filling: insert v into top[:size]
        p = size
        while p > 0 and top[p - 1] > v:
            top[p] = top[p - 1]
            p -= 1
        top[p] = v
        size += 1
    else:  # full: drop top[0], insert v
        p = 0
        while p + 1 < cap and top[p + 1] < v:
            top[p] = top[p + 1]
            p += 1
        top[p] = v
    if size == cap:
        lo = top[0]
    return size, lo


@kernel
def _topk_f32_into(XT, E, q64, mask, hs, hi):
    """The exact top-``hs.shape[0]`` of the masked unit rows (``XT`` (d, n) column-major,
    ``E`` (n, d) row-major, the same rows) into the empty heap, the bits of
    :func:`~dreamjit.kernels.cosine.topk_dot_columns`; returns its size.

    Pass 1 scores every row in float32 (:func:`_dots32`, a quarter of the float64 scan's
    work per row) and keeps the ``cap``-th largest approximate score ``a_k`` of the masked
    rows; every approximate score is within ``E`` (:func:`_approx_bound`) of the exact one,
    so (as for the int8 bound in the module notes) every row of the exact top ``cap``, ties
    included, has ``a >= a_k - 2E``. Pass 2 scores those rows exactly
    (:func:`_rescore_into`, from ``E``: a row of ``XT`` spans ``d`` cache lines) and offers
    them in index order, as the full scan does.
    """
    n = XT.shape[1]
    # d + 2: one more rounding per product when q64 is not a float32 vector (q32 = q(1+u))
    bound = _approx_bound(q64, q64.shape[0] + 2)
    A = np.empty(n, dtype=np.float32)
    for i0 in range(0, n, _Q_BLOCK):
        _dots32(XT, q64, i0, min(_Q_BLOCK, n - i0), A[i0:])
    return _select_rescore(A, 2.0 * bound, E, q64, mask, hs, hi)


@kernel
def _select_rescore(A, slack, X, q64, mask, hs, hi):
    """The prefilters' common end: with ``a_k`` the ``cap``-th largest prefilter score ``A``
    of the masked rows (``cap = hs.shape[0]``), every row of the exact top ``cap`` has
    ``A >= a_k - slack`` (``slack``: twice the prefilter's error bound); those rows are
    scored exactly and offered in index order (:func:`_rescore_into`). Returns the heap's
    size."""
    cap = hs.shape[0]
    top = np.empty(cap, dtype=A.dtype)
    ksize = _largest_into(A, mask, 0, A.shape[0], top, np.int64(0))
    cut = np.float64(top[0]) - slack if ksize == cap else -np.inf
    return _rescore_into(A, cut, X, q64, mask, hs, hi)


@kernel
def topk_dot_int8(XT8, X, q, mask, k, quant_error):
    """:func:`~dreamjit.kernels.cosine.topk_dot` over the unit rows ``X`` (n, d), read
    mostly from their int8 column-major copy ``XT8`` (d, n) (``round(127 X.T)``, every row
    within ``quant_error`` of its copy): the same rows and scores, bit for bit.

    Returns ``(indices int64, scores float32)``, score descending, ties to the lower index.
    """
    n = X.shape[0]
    hs, hi = _new_heap(k, n)
    size = 0
    if hs.shape[0] > 0:
        size = _topk_int8_into(XT8, X, _to_f64(q), mask, quant_error, hs, hi)
    return _heap_result(hs, hi, size)


@kernel
def label_mask(alive, labels, wanted):
    """``(mask (n,) bool, count)``: the live rows whose label is in ``wanted`` (int64,
    labels >= 0), in one pass (a lookup table over the wanted labels)."""
    n = alive.shape[0]
    top = -1
    for w in wanted:
        top = max(top, w)
    table = np.zeros(top + 1, dtype=np.bool_)
    for w in wanted:
        table[w] = True
    mask = np.zeros(n, dtype=np.bool_)
    count = 0
    for i in range(n):
        lab = labels[i]
        if alive[i] and lab >= 0 and lab <= top and table[lab]:
            mask[i] = True
            count += 1
    return mask, count


@kernel
def round_f32_into(v, out):
    """``out[:] = v`` rounded to float32 (``v`` (d,) float64, ``out`` (d,) float32): numpy's
    ``astype(np.float32)`` bits (round to nearest even; beyond float32's range inf, NaN
    kept), without its overflow warning machinery (``np.errstate`` costs more than the cast):
    a value at or past the rounding boundary of float32's largest is set to inf, so the cast
    never overflows (no warning without the JIT either)."""
    for j in range(v.shape[0]):
        x = v[j]
        if x >= _F32_OVERFLOW:
            out[j] = np.inf
        elif x <= -_F32_OVERFLOW:
            out[j] = -np.inf
        else:
            out[j] = np.float32(x)


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
    c = slots.shape[0]
    keys = np.empty(c, dtype=np.int64)
    order = np.empty(c, dtype=np.int64)
    for i in range(c):
        keys[i] = ids[slots[i]]
        order[i] = i
    # Shell sort (Ciura's gaps, then ~2.25x): a few dozen candidates usually, a few
    # thousand at most; compiles in a fraction of numba's quicksort for np.argsort
    gap = 1
    while gap * 9 // 4 + 1 < c:
        gap = gap * 9 // 4 + 1
    while gap >= 1:
        for i in range(gap, c):
            o = order[i]
            key = keys[o]
            j = i
            while j >= gap and keys[order[j - gap]] > key:
                order[j] = order[j - gap]
                j -= gap
            order[j] = o
        gap = 1 if gap in (2, 3) else gap * 4 // 9
    return order


@kernel
def rerank_candidates(cand, sims, E, ids, util_mean, labels, qlabel, k, w):
    """The hybrid rerank of the candidates ``cand`` (slots, any order) with cosines ``sims``:
    put in id order here (ties to the lower id), gathered from the columns and reranked by
    :func:`~dreamjit.kernels.hybrid.hybrid_rerank`. Returns ``(slots, scores, cosines)``
    in pick order. ``w`` is float64 ``(alpha, beta, gamma, delta, lambda_)``."""
    order = _by_id(cand, ids)
    c = order.shape[0]
    # the embeddings only feed the duplicate penalty: without one (delta = 0) hybrid_rerank
    # reads none of them (same picks and values), so none are gathered
    d = E.shape[1] if w[3] != 0.0 else 0
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
    pick, scores = hybrid_rerank(ss, um, lb, qlabel, emb, w[0], w[1], w[2], w[3], w[4], k)
    out_s = np.empty(pick.shape[0], dtype=np.int64)
    out_c = np.empty(pick.shape[0], dtype=np.float32)
    for i in range(pick.shape[0]):
        out_s[i] = cs[pick[i]]
        out_c[i] = ss[pick[i]]
    return out_s, scores, out_c


@kernel
def soft_query(
    XT, XT8, quant_error, E, v, normalize, mask, n_match, ids, util_mean, labels, qlabel, cc, k, w
):
    """One exact soft retrieval: ``(slots, scores, similarity, status)``.

    ``XT`` (d, n) column-major and ``E`` (n, d) row-major unit embeddings;
    ``XT8`` (d, n) their int8 copy within ``quant_error`` (as
    :func:`topk_dot_int8`), scanned instead of ``XT`` from :data:`INT8_MIN_ROWS`
    rows (an empty (d, 0) array: never); ``v`` (d,) the query (normalised here
    if ``normalize``, else already unit); ``mask`` (n,) bool of the
    ``n_match`` selectable rows; ``ids``, ``util_mean``, ``labels`` the
    columns; ``cc`` the candidate count; then the rerank's ``k`` and weights ``w``
    (float64 ``(alpha, beta, gamma, delta, lambda_)``, as ``RetrievalWeights.as_array()``).
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
    if XT8.shape[1] == n and n >= INT8_MIN_ROWS and cap * 16 <= n:
        size = _topk_int8_into(XT8, E, _to_f64(q), mask, quant_error, hs, hi)
    elif cap * F32_SHARE <= n:
        size = _topk_f32_into(XT, E, _to_f64(q), mask, hs, hi)
    else:
        acc = np.empty(min(n, _COL_BLOCK), dtype=np.float64)
        size = _topk_cols_range(XT, _to_f64(q), mask, 0, n, hs, hi, acc)
    slots, sims = _heap_result(hs, hi, size)
    if size > cc:
        if sims[cc] == sims[cc - 1]:
            return none_i, none_s, none_s, SOFT_TIE
        slots = slots[:cc]
        sims = sims[:cc]
    out_s, scores, out_c = rerank_candidates(slots, sims, E, ids, util_mean, labels, qlabel, k, w)
    return out_s, scores, out_c, SOFT_OK


@kernel
def soft_query_into(
    XT,
    XT8,
    quant_error,
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
    w,
    out_slots,
    out_ids,
    out_scores,
    out_sims,
):
    """:func:`soft_query` into the caller's arrays: ``(m, status)``.

    The arguments up to ``w`` are :func:`soft_query`'s; its ``m`` picks go to
    ``out_slots[:m]`` and ``out_scores[:m]``, ``out_sims[:m]`` (its three results),
    and their ids ``ids[slot]`` to ``out_ids[:m]`` (the four arrays (L,): int64,
    int64, float32, float32). ``status`` is :func:`soft_query`'s; also
    :data:`SOFT_TIE` (nothing written) when there are more than ``L`` picks, so a
    caller whose arrays are too short takes the general path. One kernel call
    instead of a call returning three new arrays and another gathering the ids:
    the arrays a call returns cost more to hand back than these to pass in.
    """
    slots, scores, sims, status = soft_query(
        XT,
        XT8,
        quant_error,
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
        w,
    )
    m = slots.shape[0]
    if status != SOFT_OK:
        return 0, status
    if m > out_slots.shape[0] or m > out_ids.shape[0]:
        return 0, SOFT_TIE
    if m > out_scores.shape[0] or m > out_sims.shape[0]:
        return 0, SOFT_TIE
    for i in range(m):
        sl = slots[i]
        out_slots[i] = sl
        out_ids[i] = ids[sl]
        out_scores[i] = scores[i]
        out_sims[i] = sims[i]
    return m, SOFT_OK


#: most queries per tile of :func:`soft_query_batch`: each block of rows is read from memory
#: once per tile and from cache for the tile's other queries (16 tiles for 1000 queries; 16
#: queries per tile read the whole matrix 4x as often: 1.15-1.2x the time at 1e5 x 64)
_SOFT_TILE = 64
#: from this many rows :func:`soft_query_batch` is asked to scan in blocks; below, per
#: query (measured, serial kernel CPU per query, 1000 queries, d=64, default weights, load
#: 5-7: blocked 1.0x at 200 rows, 1.15x faster at 1e3, 1.4x at 3e3 and 1e4; per query
#: 1.1x faster at 50 rows)
BLOCKED_MIN_ROWS = 256
#: rows per block of :func:`soft_query_batch`: the block's float32 columns (d x 512 x 4
#: bytes, 128 KB at d=64) stay in L2, the tile's approximate scores (34 KB) in L1
_SOFT_ROWS = 512
#: a query's buffer of rows that passed its bound holds ``_SOFT_BUF * cap + _SOFT_BUF_EXTRA``
#: rows (``cap`` = candidates + 1); when full, its ``cap``-th largest approximate score raises
#: the bound and the rows below are dropped
_SOFT_BUF = 4
_SOFT_BUF_EXTRA = 64
#: rows per run of the single path's float32 prefilter (:func:`_topk_f32_into`) whose
#: approximate scores are checked against the cut at once (a run with none is skipped)
_SOFT_SUB = 32
#: rows that passed the prefilter's cut are scored exactly once this many are pending (or
#: at the end of the scan): their sequential float64 sums run interleaved, four at a time
_SOFT_PENDING = 16
#: columns per pass of :func:`_tile_dots32` (the query tile's padding)
_TILE_COLS = 8
#: unit roundoff of float32 and of float64
_U32 = 2.0**-24
_U64 = 2.0**-53


@nav_kernel
def _tile_dots32(XT, Qt, T, i0, b, S):
    """``S[t, i] ~= dot(X[i0 + i], Qt[t])`` for ``t < T``, ``i < b`` in float32, from the
    column-major ``XT`` (d, n): four queries and eight columns per pass, so each load of
    ``XT`` serves four queries and each load and store of ``S`` eight columns (1.09x
    faster than four columns per pass at 1e4 rows, 1.17x at 1e5, d=64, 1000 queries).

    Navigation arithmetic (reassociated, contracted to FMA): the sums only select which rows
    :func:`soft_query_batch` scores exactly, with the bound of :func:`_approx_bound`. ``Qt``
    (>= T + 3, >= d rounded up to a multiple of :data:`_TILE_COLS`) float32, zero past row
    ``T`` and column ``d``; ``S`` (>= T + 3, >= b) float32 (rows past ``T`` are scratch).
    """
    d = XT.shape[0]
    t = 0
    while t < T:
        s0 = S[t]
        s1 = S[t + 1]
        s2 = S[t + 2]
        s3 = S[t + 3]
        for i in range(b):
            s0[i] = 0.0
            s1[i] = 0.0
            s2[i] = 0.0
            s3[i] = 0.0
        j = 0
        while j < d:
            # columns past d: any column, times a zero coefficient
            r0 = XT[j, i0 : i0 + b]
            r1 = XT[min(j + 1, d - 1), i0 : i0 + b]
            r2 = XT[min(j + 2, d - 1), i0 : i0 + b]
            r3 = XT[min(j + 3, d - 1), i0 : i0 + b]
            r4 = XT[min(j + 4, d - 1), i0 : i0 + b]
            r5 = XT[min(j + 5, d - 1), i0 : i0 + b]
            r6 = XT[min(j + 6, d - 1), i0 : i0 + b]
            r7 = XT[min(j + 7, d - 1), i0 : i0 + b]
            a0, a1, a2, a3 = Qt[t, j], Qt[t, j + 1], Qt[t, j + 2], Qt[t, j + 3]
            a4, a5, a6, a7 = Qt[t, j + 4], Qt[t, j + 5], Qt[t, j + 6], Qt[t, j + 7]
            b0, b1, b2, b3 = Qt[t + 1, j], Qt[t + 1, j + 1], Qt[t + 1, j + 2], Qt[t + 1, j + 3]
            b4, b5, b6, b7 = Qt[t + 1, j + 4], Qt[t + 1, j + 5], Qt[t + 1, j + 6], Qt[t + 1, j + 7]
            c0, c1, c2, c3 = Qt[t + 2, j], Qt[t + 2, j + 1], Qt[t + 2, j + 2], Qt[t + 2, j + 3]
            c4, c5, c6, c7 = Qt[t + 2, j + 4], Qt[t + 2, j + 5], Qt[t + 2, j + 6], Qt[t + 2, j + 7]
            e0, e1, e2, e3 = Qt[t + 3, j], Qt[t + 3, j + 1], Qt[t + 3, j + 2], Qt[t + 3, j + 3]
            e4, e5, e6, e7 = Qt[t + 3, j + 4], Qt[t + 3, j + 5], Qt[t + 3, j + 6], Qt[t + 3, j + 7]
            for i in range(b):
                x0 = r0[i]
                x1 = r1[i]
                x2 = r2[i]
                x3 = r3[i]
                x4 = r4[i]
                x5 = r5[i]
                x6 = r6[i]
                x7 = r7[i]
                s0[i] += (x0 * a0 + x1 * a1 + x2 * a2 + x3 * a3) + (
                    x4 * a4 + x5 * a5 + x6 * a6 + x7 * a7
                )
                s1[i] += (x0 * b0 + x1 * b1 + x2 * b2 + x3 * b3) + (
                    x4 * b4 + x5 * b5 + x6 * b6 + x7 * b7
                )
                s2[i] += (x0 * c0 + x1 * c1 + x2 * c2 + x3 * c3) + (
                    x4 * c4 + x5 * c5 + x6 * c6 + x7 * c7
                )
                s3[i] += (x0 * e0 + x1 * e1 + x2 * e2 + x3 * e3) + (
                    x4 * e4 + x5 * e5 + x6 * e6 + x7 * e7
                )
            j += _TILE_COLS
        t += 4


@kernel
def _cols_dot64(XT, q64, rows, nr, out):
    """``out[r] = dot64(X[rows[r]], q64)`` for ``r < nr`` from ``XT = X.T`` (d, n), either
    the column-major copy or the transposed view of the row-major rows, the same bits:
    each sum a sequential float64 chain, four rows' chains interleaved so their adds
    overlap."""
    d = q64.shape[0]
    r = 0
    while r + 4 <= nr:
        i0 = rows[r]
        i1 = rows[r + 1]
        i2 = rows[r + 2]
        i3 = rows[r + 3]
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for j in range(d):
            qj = q64[j]
            s0 += np.float64(XT[j, i0]) * qj
            s1 += np.float64(XT[j, i1]) * qj
            s2 += np.float64(XT[j, i2]) * qj
            s3 += np.float64(XT[j, i3]) * qj
        out[r] = s0
        out[r + 1] = s1
        out[r + 2] = s2
        out[r + 3] = s3
        r += 4
    while r < nr:
        i0 = rows[r]
        s0 = 0.0
        for j in range(d):
            s0 += np.float64(XT[j, i0]) * q64[j]
        out[r] = s0
        r += 1


@kernel
def _kth_largest(vals, nb, kth, work):
    """The ``kth`` largest (1-based, ``1 <= kth <= nb``) of ``vals[:nb]`` as float64, by
    quickselect on the scratch ``work`` (>= nb; numba's ``np.partition`` is several times
    slower at these sizes)."""
    for r in range(nb):
        work[r] = vals[r]
    lo = 0
    hi = nb - 1
    want = kth - 1  # position in descending order
    while lo < hi:
        mid = (lo + hi) >> 1
        # median of three as the pivot
        a = work[lo]
        b = work[mid]
        c = work[hi]
        if a < b:
            a, b = b, a
        if b < c:
            b, c = c, b
            if a < b:
                a, b = b, a
        pivot = b
        i = lo
        j = hi
        while i <= j:  # descending: values > pivot left, < pivot right
            while work[i] > pivot:
                i += 1
            while work[j] < pivot:
                j -= 1
            if i <= j:
                tmp = work[i]
                work[i] = work[j]
                work[j] = tmp
                i += 1
                j -= 1
        if want <= j:
            hi = j
        elif want >= i:
            lo = i
        else:
            break  # between j and i: every value there equals the pivot
    return np.float64(work[want])


@kernel
def _buffer_compact(bi, ba, nb, lim):
    """Keep the buffered rows ``bi[:nb]`` (approximate scores ``ba``) scoring at least
    ``lim``, in order; return how many."""
    kept = 0
    for r in range(nb):
        if ba[r] >= lim:
            bi[kept] = bi[r]
            ba[kept] = ba[r]
            kept += 1
    return kept


@kernel
def _down32(v):
    """The largest float32 at most ``v`` (float64): ``x >= _down32(v)`` for every float32
    ``x >= v``."""
    f = np.float32(v)
    if np.float64(f) > v:
        f = np.nextafter(f, np.float32(-np.inf))
    return f


@kernel
def _count_ge(s, b, lim):
    """How many of ``s[:b]`` are at least ``lim`` (a vectorised count)."""
    c = 0
    for i in range(b):
        c += np.int32(s[i] >= lim)
    return c


@kernel
def _tighten(bi, ba, nb, cap, bound, lim, t, hs, sizes, work):
    """Raise query ``t``'s bound ``lim[t]`` (float32) from its buffer ``bi[:nb]``/``ba[:nb]``
    and drop the rows below it; return how many stay.

    The ``cap``-th largest approximate score ``A`` of the buffer: ``cap`` rows score at
    least ``A - bound`` exactly, so the ``cap``-th best exact score does too, and a row
    that can be among the best ``cap`` (ties included) has approximate score at least
    ``A - 2 bound``. A full heap ``hs`` (rows already scored exactly, ``sizes[t]`` of them)
    gives its root ``- bound`` the same way. The bound is rounded down to float32 (it only
    lets more rows through). ``work``: float32 scratch (>= nb).
    """
    new = -np.inf
    if sizes[t] == cap:
        new = hs[0] - bound
    if nb >= cap:
        new = max(new, _kth_largest(ba, nb, cap, work) - 2.0 * bound)
    lim[t] = max(lim[t], _down32(new))
    return _buffer_compact(bi, ba, nb, lim[t])


@kernel
def _flush_buffer(E, q64, bi, nb, cap, bound, lim, t, hs, hi, sizes, acc):
    """Score query ``t``'s buffered rows ``bi[:nb]`` exactly into its heap now (rows within
    the bound of each other, such as duplicates, that :func:`_tighten` cannot drop), and
    raise its bound to the full heap's root ``- bound``."""
    sizes[t] = _offer_exact(E, q64, bi, nb, hs, hi, sizes[t], acc)
    if sizes[t] == cap:
        lim[t] = max(lim[t], _down32(hs[0] - bound))


@kernel
def _offer_exact(E, q64, rows, nr, hs, hi, size, acc):
    """Offer rows ``rows[:nr]`` of ``E`` (n, d), scored exactly as the single path's scan
    (:func:`~dreamjit.kernels.cosine.dot64`'s bits, by :func:`_cols_dot64` into the float64
    scratch ``acc`` (>= nr)), to the heap; return its size. The heap orders by (score desc,
    row asc), so what it ends with does not depend on the order of the offers."""
    _cols_dot64(E.T, q64, rows, nr, acc)
    for r in range(nr):
        size = _heap_offer(hs, hi, size, acc[r], rows[r])
    return size


@kernel
def _approx_bound(q64, d):
    """An upper bound on ``|dot64(x, q) - a|`` for any row ``|x| <= 1 + 1e-5`` and ``a`` the
    float32 dot product of :func:`_tile_dots32` (any order, with or without FMA).

    Every float32 sum of ``d`` products is within ``gamma_d |x| |q|`` of the real dot
    product (``gamma_d = d u / (1 - d u)``, ``u = 2**-24``; Higham, Accuracy and Stability,
    3.1), and :func:`~dreamjit.kernels.cosine.dot64` (exact products, float64 sums) within
    the same with ``u = 2**-53``; plus slack for the norm's rounding and for underflow.
    """
    qn = np.sqrt(dot64(q64, q64)) * (1.0 + 1e-9)
    g32 = d * _U32 / (1.0 - d * _U32)
    g64 = d * _U64 / (1.0 - d * _U64)
    return (g32 + g64) * (1.0 + 1e-5) * qn + 1e-12


@parallel_kernel(size_arg=4)
def soft_query_batch(
    XT, XT8, quant_error, E, Qm, mask, n_match, ids, util_mean, labels, qlabels, cc, k, w, blocked
):
    """:func:`soft_query` for each unit row of ``Qm`` (m, d) with labels ``qlabels`` (m,),
    in parallel over tiles of queries, with the same bits as :func:`soft_query` per row.

    ``XT8``, ``quant_error`` as in :func:`soft_query`. Unless ``blocked`` (the caller passes
    ``n >= BLOCKED_MIN_ROWS``) each query runs :func:`soft_query`, in parallel over queries.
    Else a blocked scan: each block of rows of the column-major ``XT`` (d, n) is scored in
    float32 against a tile of queries at once (:func:`_tile_dots32`), so it is read from
    memory once per tile, not once per query. A row is then scored exactly (as the single
    path's scan, :func:`~dreamjit.kernels.cosine.dot64` from the row-major ``E`` (n, d),
    the same bits) only if its float32 score plus the bound of :func:`_approx_bound` reaches
    the query's running top-``cc + 1`` threshold; rows come in index order, so each query's
    heap ends with the single path's candidates, then the same tie check and rerank.

    Returns ``(slots (m, kk) int64, scores (m, kk) float32, similarity (m, kk) float32,
    status (m,) int64)`` with ``kk = min(k, n_match)``, padded with -1 / NaN / NaN;
    rows whose status is :data:`SOFT_TIE` are empty (the caller answers them alone).
    """
    m = Qm.shape[0]
    n = XT.shape[1]
    d = XT.shape[0]
    kk = min(k, n_match) if k > 0 else 0
    out_i = np.full((m, kk), -1, dtype=np.int64)
    out_s = np.full((m, kk), np.nan, dtype=np.float32)
    out_c = np.full((m, kk), np.nan, dtype=np.float32)
    status = np.zeros(m, dtype=np.int64)
    cap = min(cc + 1, n_match)
    if cap <= 0 or kk <= 0 or m == 0:
        return out_i, out_s, out_c, status
    if not blocked:
        for t in prange(m):
            sl, sc, cs, st = soft_query(
                XT,
                XT8,
                quant_error,
                E,
                Qm[t],
                False,
                mask,
                n_match,
                ids,
                util_mean,
                labels,
                qlabels[t],
                cc,
                kk,
                w,
            )
            status[t] = st
            for i in range(sl.shape[0]):
                out_i[t, i] = sl[i]
                out_s[t, i] = sc[i]
                out_c[t, i] = cs[i]
        return out_i, out_s, out_c, status
    # smaller tiles for smaller batches, so threads still share out several tiles; the
    # tile changes the speed only, never a result
    tile = _SOFT_TILE if m >= 8 * _SOFT_TILE else max(16, _SOFT_TILE // 4)
    ntiles = (m + tile - 1) // tile
    buf = _SOFT_BUF * cap + _SOFT_BUF_EXTRA
    for ti in prange(ntiles):
        q0 = ti * tile
        T = min(tile, m - q0)
        Qt = np.zeros((T + 3, -(-d // _TILE_COLS) * _TILE_COLS), dtype=np.float32)  # zero-padded
        q64 = np.empty((T, d), dtype=np.float64)
        bound = np.empty(T, dtype=np.float64)
        for t in range(T):
            for j in range(d):
                Qt[t, j] = Qm[q0 + t, j]
                q64[t, j] = Qm[q0 + t, j]
            bound[t] = _approx_bound(q64[t], d)
        hs = np.empty((T, cap), dtype=np.float64)
        hi = np.empty((T, cap), dtype=np.int64)
        sizes = np.zeros(T, dtype=np.int64)
        S = np.empty((T + 3, _SOFT_ROWS), dtype=np.float32)
        # per query: the rows that passed its bound so far (index order, approximate scores)
        # and the bound: a row whose approximate score is below lim cannot be a candidate
        bi = np.empty((T, buf), dtype=np.int64)
        ba = np.empty((T, buf), dtype=np.float32)
        nbuf = np.zeros(T, dtype=np.int64)
        lim = np.full(T, -np.inf, dtype=np.float32)
        work = np.empty(buf, dtype=np.float32)
        acc = np.empty(buf, dtype=np.float64)
        for i0 in range(0, n, _SOFT_ROWS):
            b = min(_SOFT_ROWS, n - i0)
            _tile_dots32(XT, Qt, T, i0, b, S)
            for t in range(T):
                st = S[t]
                lt = lim[t]
                if _count_ge(st, b, lt) == 0:  # most blocks, once the bound is tight
                    continue
                nb = nbuf[t]
                for i in range(b):
                    if st[i] >= lt and mask[i0 + i]:
                        if nb == buf:  # full: raise the bound, drop what falls below
                            nb = _tighten(
                                bi[t], ba[t], nb, cap, bound[t], lim, t, hs[t], sizes, work
                            )
                            if nb > buf // 2:  # near-equal rows the bound cannot drop
                                _flush_buffer(
                                    E,
                                    q64[t],
                                    bi[t],
                                    nb,
                                    cap,
                                    bound[t],
                                    lim,
                                    t,
                                    hs[t],
                                    hi[t],
                                    sizes,
                                    acc,
                                )
                                nb = 0
                            lt = lim[t]
                            if st[i] < lt:
                                continue
                        bi[t, nb] = i0 + i
                        ba[t, nb] = st[i]
                        nb += 1
                nbuf[t] = nb
        for t in range(T):  # the candidates: the buffered rows the final bound keeps
            nb = _tighten(bi[t], ba[t], nbuf[t], cap, bound[t], lim, t, hs[t], sizes, work)
            sizes[t] = _offer_exact(E, q64[t], bi[t], nb, hs[t], hi[t], sizes[t], acc)
        for t in range(T):
            slots, sims = _heap_result(hs[t], hi[t], sizes[t])
            size = sizes[t]
            if size > cc:
                if sims[cc] == sims[cc - 1]:
                    status[q0 + t] = SOFT_TIE
                    continue
                slots = slots[:cc]
                sims = sims[:cc]
            sl, sc, cs = rerank_candidates(
                slots, sims, E, ids, util_mean, labels, qlabels[q0 + t], kk, w
            )
            for i in range(sl.shape[0]):
                out_i[q0 + t, i] = sl[i]
                out_s[q0 + t, i] = sc[i]
                out_c[q0 + t, i] = cs[i]
    return out_i, out_s, out_c, status


@kernel
def topk_dot_slots(X, q, slots, k):
    """Exact top-k over the rows ``slots`` (ascending) of ``X`` (n, d):
    ``(rows int64, scores float32)``, score descending, ties to the lower row,
    scores bit-identical to :func:`~dreamjit.kernels.cosine.topk_dot`."""
    hs, hi = _new_heap(k, slots.shape[0])
    size = 0
    if hs.shape[0] > 0:
        q64 = _to_f64(q)
        thr = -np.inf
        for r in range(slots.shape[0]):
            i = slots[r]
            s = dot64(X[i], q64)
            if s > thr:  # ascending rows: an equal score never displaces
                size = _heap_offer(hs, hi, size, s, i)
                if size == hs.shape[0]:
                    thr = hs[0]
    return _heap_result(hs, hi, size)


@parallel_kernel(size_arg=0)
def rerank_batch(cand, sims, counts, E, ids, util_mean, labels, qlabels, k, w):
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
        sl, sc, cs = rerank_candidates(
            cand[t, :c],
            sims[t, :c],
            E,
            ids,
            util_mean,
            labels,
            qlabels[t],
            kk,
            w,
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

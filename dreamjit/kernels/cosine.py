"""Dot-product and cosine top-k kernels over float32 rows.

Every score is a dot product accumulated in float64 in plain sequential order
(``s += float64(x[j]) * float64(q[j])`` for ``j = 0 .. d-1``, no FMA), so the
single-query and batch kernels give bit-identical scores for the same row and
query. Ranking is by score descending, ties to the lower row index.

Top-k keeps a size-k min-heap while it streams the rows once (no full sort,
no n-sized temporaries). Without ``fastmath`` LLVM cannot vectorise a float64
reduction, so the row-major single-query kernels interleave four rows to hide
the add latency (they are compute-bound, not memory-bound). Vectorising across
rows needs a column-major store: :func:`topk_dot_columns` takes ``(d, n)``
and runs near memory bandwidth. The batch kernel vectorises across queries
(a tile of queries is held transposed, one float64 accumulator per (row,
query)).
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel, parallel_kernel, prange
from .heap import heap_drain as _heap_sort_into
from .heap import heap_offer as _heap_offer

__all__ = [
    "normalize_rows",
    "topk_dot",
    "topk_dot_columns",
    "topk_dot_columns_parallel",
    "topk_cosine",
    "topk_dot_batch",
    "pairwise_dispersion",
    "rows_transposed",
    "dots_transposed",
]

# queries per batch tile: the tile's (d, tile) float64 block stays in L2; the
# accumulator loop over the tile is long enough to vectorise well (measured)
_QUERY_TILE = 128
_TILE_BYTES = 65536
# topk_dot_columns_parallel: rows per chunk (below this one thread is as fast) and a
# cap on chunks (each costs a k-sized heap and a merge)
_PAR_CHUNK_ROWS = 16384
_PAR_MAX_CHUNKS = 64
# topk_dot_columns: rows per block; its float64 dot products (64 KB) stay in L2
# (the fastest of 2k..32k when measured)
_COL_BLOCK = 8192


@kernel
def _heap_result(hs, hi, size):
    out_i = np.empty(size, dtype=np.int64)
    out_s64 = np.empty(size, dtype=np.float64)
    _heap_sort_into(hs, hi, size, out_i, out_s64)
    return out_i, out_s64.astype(np.float32)


@kernel
def _new_heap(k, n):
    """An empty top-``k`` heap over ``n`` candidates: ``(keys float64, rows int64)`` of
    capacity ``min(k, n)`` (0 for ``k <= 0``)."""
    cap = min(k, n) if k > 0 else 0
    return np.empty(cap, dtype=np.float64), np.empty(cap, dtype=np.int64)


# --------------------------------------------------------------------------- rows


@kernel
def _to_f64(v):
    out = np.empty(v.shape[0], dtype=np.float64)
    for j in range(v.shape[0]):
        out[j] = v[j]
    return out


@kernel
def dot64(x, q64):
    s = 0.0
    for j in range(q64.shape[0]):
        s += np.float64(x[j]) * q64[j]
    return s


@kernel
def rows_transposed(X):
    """``X`` (n, d) as a C-contiguous float32 ``(d, n)`` copy, for :func:`dots_transposed`."""
    n, d = X.shape
    XT = np.empty((d, n), dtype=np.float32)
    for i in range(n):
        for j in range(d):
            XT[j, i] = X[i, j]
    return XT


@kernel
def _block_dots(XT, v, i0, b, out):
    """``out[i] = dot(X[i0 + i], v)`` for ``i < b``, from the column-major ``XT`` (d, n).

    Sequential order over ``j`` (as :func:`topk_dot`), but the inner loop runs over
    rows, so it vectorises (no reduction); four ``j`` per pass over ``out`` cut its
    loads and stores without changing the order of adds. Each product is taken in the
    type of ``v`` or wider: float32 rows by a float64 query sum in float64 (the bits of
    :func:`dot64`); the int8 copy by an int32 query (the int8 prefilter of
    :func:`~dreamjit.kernels.query.topk_dot_int8`) sums exactly in integers.
    """
    d = XT.shape[0]
    out[:b] = 0
    j = 0
    while j + 4 <= d:
        r0 = XT[j, i0 : i0 + b]
        r1 = XT[j + 1, i0 : i0 + b]
        r2 = XT[j + 2, i0 : i0 + b]
        r3 = XT[j + 3, i0 : i0 + b]
        c0 = v[j]
        c1 = v[j + 1]
        c2 = v[j + 2]
        c3 = v[j + 3]
        for i in range(b):
            out[i] = (((out[i] + r0[i] * c0) + r1[i] * c1) + r2[i] * c2) + r3[i] * c3
        j += 4
    while j < d:
        r0 = XT[j, i0 : i0 + b]
        c0 = v[j]
        for i in range(b):
            out[i] += r0[i] * c0
        j += 1


@kernel
def dots_transposed(XT, v64, out):
    """``out[i] = dot(X[i], v64)`` for every row, from ``XT = rows_transposed(X)``
    (same sums, bit for bit, as :func:`topk_dot`)."""
    _block_dots(XT, v64, 0, XT.shape[1], out)


@kernel
def normalize_rows(X):
    """A float32 copy of ``X`` (n, d) with unit rows; zero rows stay zero."""
    n, d = X.shape
    out = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        ss = dot64(X[i], X[i])  # |x|^2 summed in float64, in index order
        if ss > 0.0:
            norm = np.sqrt(ss)
            for j in range(d):
                out[i, j] = np.float64(X[i, j]) / norm
    return out


@kernel
def _topk_dot_range(X, q64, mask, use_mask, start, stop, hs, hi):
    """Offer rows ``start <= i < stop`` (selected by ``mask`` if ``use_mask``) to the
    empty heap ``hs``/``hi`` (capacity >= 1); return its size."""
    d = X.shape[1]
    cap = hs.shape[0]
    size = 0
    thr = -np.inf  # heap root once full: a row must beat it to enter
    i = start
    while i + 4 <= stop:
        # four consecutive rows as four independent float64 chains, so the adds
        # overlap; a quad with no selected row is skipped (sparse masks)
        if use_mask and not (mask[i] or mask[i + 1] or mask[i + 2] or mask[i + 3]):
            i += 4
            continue
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for j in range(d):
            qj = q64[j]
            s0 += np.float64(X[i, j]) * qj
            s1 += np.float64(X[i + 1, j]) * qj
            s2 += np.float64(X[i + 2, j]) * qj
            s3 += np.float64(X[i + 3, j]) * qj
        # rows come in index order, so an equal score never displaces (ties to lower index);
        # the threshold test is written out here: a tuple-returning helper was much slower
        for r, s in ((0, s0), (1, s1), (2, s2), (3, s3)):
            if s > thr and (not use_mask or mask[i + r]):
                size = _heap_offer(hs, hi, size, s, i + r)
                if size == cap:
                    thr = hs[0]
        i += 4
    while i < stop:
        if not use_mask or mask[i]:
            s = dot64(X[i], q64)
            if s > thr:
                size = _heap_offer(hs, hi, size, s, i)
                if size == cap:
                    thr = hs[0]
        i += 1
    return size


@kernel
def _topk_dot_serial(X, q, mask, use_mask, n, k):
    hs, hi = _new_heap(k, n)
    size = 0
    if hs.shape[0] > 0:
        size = _topk_dot_range(X, _to_f64(q), mask, use_mask, 0, n, hs, hi)
    return _heap_result(hs, hi, size)


@kernel
def topk_dot(X, q, mask, k):
    """Best ``min(k, mask.sum())`` rows of ``X`` by ``dot(X[i], q)``, masked rows only.

    Returns ``(indices int64, scores float32)``, score descending, ties to the
    lower index. ``X`` (n, d) float32, ``q`` (d,) float32, ``mask`` (n,) bool.
    """
    return _topk_dot_serial(X, q, mask, True, X.shape[0], k)


@kernel
def _merge_heaps(hs, hi, sizes, cap):
    """Merge per-chunk heaps with the full (score, index) order; the sorted result."""
    fs = np.empty(cap, dtype=np.float64)
    fi = np.empty(cap, dtype=np.int64)
    size = 0
    for c in range(sizes.shape[0]):
        for r in range(sizes[c]):
            size = _heap_offer(fs, fi, size, hs[c, r], hi[c, r])
    return _heap_result(fs, fi, size)


# --------------------------------------------------------------------------- columns
# The same top-k over a column-major store XT (d, n). The inner loop then runs
# over rows: no reduction, so LLVM vectorises it without fastmath and the scan
# runs near memory bandwidth (several times the row-major kernels, same bits).


@kernel
def _topk_cols_range(XT, q64, mask, start, stop, hs, hi, acc):
    """Offer columns ``start <= i < stop`` with ``mask[i]`` to the empty heap; return its size.

    ``acc`` is float64 scratch of ``_COL_BLOCK`` (dot products of one block).
    """
    cap = hs.shape[0]
    size = 0
    thr = -np.inf
    for i0 in range(start, stop, _COL_BLOCK):
        b = min(_COL_BLOCK, stop - i0)
        a = acc[:b]
        _block_dots(XT, q64, i0, b, a)
        for i in range(b):
            s = a[i]
            if s > thr and mask[i0 + i]:  # index order: an equal score never displaces
                size = _heap_offer(hs, hi, size, s, i0 + i)
                if size == cap:
                    thr = hs[0]
    return size


@kernel
def topk_dot_columns(XT, q, mask, k):
    """:func:`topk_dot` over a column-major store: ``XT`` (d, n) float32, row i = ``XT[:, i]``.

    Same result, bit for bit, as ``topk_dot(XT.T, q, mask, k)``; ``mask`` is (n,).
    """
    n = XT.shape[1]
    hs, hi = _new_heap(k, n)
    size = 0
    if hs.shape[0] > 0:
        acc = np.empty(min(n, _COL_BLOCK), dtype=np.float64)
        size = _topk_cols_range(XT, _to_f64(q), mask, 0, n, hs, hi, acc)
    return _heap_result(hs, hi, size)


@parallel_kernel(size_arg=None)
def topk_dot_columns_parallel(XT, q, mask, k):
    """:func:`topk_dot_columns` with the columns split in chunks over threads; same result."""
    n = XT.shape[1]
    cap = min(k, n) if k > 0 else 0
    nchunks = max(1, min(_PAR_MAX_CHUNKS, n // _PAR_CHUNK_ROWS))
    hs = np.empty((nchunks, cap), dtype=np.float64)
    hi = np.empty((nchunks, cap), dtype=np.int64)
    sizes = np.zeros(nchunks, dtype=np.int64)
    if cap > 0:
        q64 = _to_f64(q)
        for c in prange(nchunks):
            start = c * n // nchunks
            stop = (c + 1) * n // nchunks
            acc = np.empty(_COL_BLOCK, dtype=np.float64)
            sizes[c] = _topk_cols_range(XT, q64, mask, start, stop, hs[c], hi[c], acc)
    return _merge_heaps(hs, hi, sizes, cap)


@kernel
def topk_cosine(X, q, mask, k):
    """:func:`topk_dot` with cosine scores ``dot / (|x| |q|)``; zero row or query scores 0.

    Rows are not assumed unit (small-C chroma signatures); norms are float64.
    """
    n, d = X.shape
    hs, hi = _new_heap(k, n)
    size = 0
    if hs.shape[0] == 0:
        return _heap_result(hs, hi, 0)
    q64 = _to_f64(q)
    qn = np.sqrt(dot64(q64, q64))
    for i in range(n):
        if not mask[i]:
            continue
        dot = 0.0
        ss = 0.0
        for j in range(d):
            v = np.float64(X[i, j])
            dot += v * q64[j]
            ss += v * v
        s = 0.0
        if ss > 0.0 and qn > 0.0:
            s = dot / (np.sqrt(ss) * qn)
        size = _heap_offer(hs, hi, size, s, i)
    return _heap_result(hs, hi, size)


@kernel
def _selected_rows(mask):
    count = 0
    for i in range(mask.shape[0]):
        if mask[i]:
            count += 1
    rows = np.empty(count, dtype=np.int64)
    count = 0
    for i in range(mask.shape[0]):
        if mask[i]:
            rows[count] = i
            count += 1
    return rows


@kernel
def _offer_tile(acc, r, rows, ridx, hs, hi, sizes, thr, q0):
    """Offer row ``rows[ridx]`` (accumulators ``acc[r]``) to every query heap of a tile."""
    row = rows[ridx]
    for t in range(acc.shape[1]):
        s = acc[r, t]
        if s > thr[t]:  # index order again: an equal score never displaces
            sizes[t] = _heap_offer(hs[t], hi[t], sizes[t], s, row)
            if sizes[t] == hs.shape[1]:
                thr[t] = hs[t, 0]


@parallel_kernel(size_arg=1)
def topk_dot_batch(X, Q, mask, k):
    """:func:`topk_dot` for each row of ``Q`` (m, d), in parallel over query tiles.

    Returns ``(indices (m, k) int64, scores (m, k) float32)``. Row ``t`` holds
    query ``t``'s best ``min(k, mask.sum())`` rows best first; the rest of the
    row is padded with index -1 and score -inf. Scores are bit-identical to
    :func:`topk_dot` for the same query.
    """
    n, d = X.shape
    m = Q.shape[0]
    kout = max(k, 0)
    out_i = np.full((m, kout), -1, dtype=np.int64)
    out_s = np.full((m, kout), -np.inf, dtype=np.float32)
    rows = _selected_rows(mask)
    nsel = rows.shape[0]
    cap = min(kout, nsel)
    if cap == 0 or m == 0:
        return out_i, out_s
    # up to _QUERY_TILE queries per tile, but about 8 tiles (when m allows) so
    # threads stay busy; a multiple of 16 so the vectorised loop over the tile
    # has no scalar tail. Tile size changes speed only, never results.
    tile = min(_QUERY_TILE, _TILE_BYTES // (8 * max(d, 1)), ((m + 7) // 8 + 15) // 16 * 16)
    tile = max(tile // 16 * 16, 16)
    ntiles = (m + tile - 1) // tile
    for ti in prange(ntiles):
        q0 = ti * tile
        qt = min(tile, m - q0)
        # the tile's queries transposed, so the inner loop runs over queries and vectorises
        QT = np.empty((d, qt), dtype=np.float64)
        for t in range(qt):
            for j in range(d):
                QT[j, t] = Q[q0 + t, j]
        hs = np.empty((qt, cap), dtype=np.float64)
        hi = np.empty((qt, cap), dtype=np.int64)
        sizes = np.zeros(qt, dtype=np.int64)
        thr = np.full(qt, -np.inf)
        acc = np.empty((4, qt), dtype=np.float64)
        r0 = 0
        while r0 + 4 <= nsel:  # four rows at a time share each load of QT
            acc[:, :] = 0.0
            x0 = X[rows[r0]]
            x1 = X[rows[r0 + 1]]
            x2 = X[rows[r0 + 2]]
            x3 = X[rows[r0 + 3]]
            a0 = acc[0]
            a1 = acc[1]
            a2 = acc[2]
            a3 = acc[3]
            j = 0
            while j + 2 <= d:  # two j per pass: half the accumulator loads/stores, same order
                v0 = np.float64(x0[j])
                v1 = np.float64(x1[j])
                v2 = np.float64(x2[j])
                v3 = np.float64(x3[j])
                u0 = np.float64(x0[j + 1])
                u1 = np.float64(x1[j + 1])
                u2 = np.float64(x2[j + 1])
                u3 = np.float64(x3[j + 1])
                qa = QT[j]
                qb = QT[j + 1]
                for t in range(qt):
                    wa = qa[t]
                    wb = qb[t]
                    a0[t] = (a0[t] + v0 * wa) + u0 * wb
                    a1[t] = (a1[t] + v1 * wa) + u1 * wb
                    a2[t] = (a2[t] + v2 * wa) + u2 * wb
                    a3[t] = (a3[t] + v3 * wa) + u3 * wb
                j += 2
            if j < d:
                v0 = np.float64(x0[j])
                v1 = np.float64(x1[j])
                v2 = np.float64(x2[j])
                v3 = np.float64(x3[j])
                qa = QT[j]
                for t in range(qt):
                    wa = qa[t]
                    a0[t] += v0 * wa
                    a1[t] += v1 * wa
                    a2[t] += v2 * wa
                    a3[t] += v3 * wa
            for r in range(4):
                _offer_tile(acc, r, rows, r0 + r, hs, hi, sizes, thr, q0)
            r0 += 4
        while r0 < nsel:
            a0 = acc[0]
            a0[:] = 0.0
            x0 = X[rows[r0]]
            for j in range(d):
                v0 = np.float64(x0[j])
                qj = QT[j]
                for t in range(qt):
                    a0[t] += v0 * qj[t]
            _offer_tile(acc, 0, rows, r0, hs, hi, sizes, thr, q0)
            r0 += 1
        best = np.empty(cap, dtype=np.float64)
        for t in range(qt):
            _heap_sort_into(hs[t], hi[t], sizes[t], out_i[q0 + t], best)
            for c in range(sizes[t]):
                out_s[q0 + t, c] = best[c]
    return out_i, out_s


@kernel
def pairwise_dispersion(X):
    """Mean over pairs ``i < j`` of ``1 - cosine(X[i], X[j])``; 0.0 for fewer than 2 rows.

    A zero row has cosine 0 with everything. Uses
    ``sum_{i != j} u_i . u_j = |sum u|^2 - sum |u|^2`` over unit rows ``u``:
    O(n d) instead of O(n^2 d), all in float64.
    """
    n, d = X.shape
    if n < 2:
        return 0.0
    total = np.zeros(d)
    self_sq = 0.0
    for i in range(n):
        ss = dot64(X[i], X[i])  # |x|^2 summed in float64, in index order
        if ss > 0.0:
            inv = 1.0 / np.sqrt(ss)
            uu = 0.0
            for j in range(d):
                u = np.float64(X[i, j]) * inv
                total[j] += u
                uu += u * u
            self_sq += uu
    cross = 0.0
    for j in range(d):
        cross += total[j] * total[j]
    cross -= self_sq
    return 1.0 - cross / (n * (n - 1.0))

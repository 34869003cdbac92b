"""Graph-search kernels for the NN-descent index.

The index keeps a sealed search graph in CSR form (``indptr``, ``indices``)
whose row ``r`` is the entry in store slot ``rows[r]`` (``rows`` ascending),
plus a ``dead`` row mask (tombstones) and an exactly searched ``delta`` of
slots added since the build. Vectors are always read from the store's
``embeddings`` (cap, d), so every score is exact.

Scores are dot products accumulated in float64 in plain sequential order,
exactly as in :mod:`dreamjit.kernels.cosine`, so a hit has the same score
whichever index found it. Ranking: score descending, ties to the lower slot.

Search is best-first over the graph, started from *all* pivots (a fixed
seeded sample of rows, scored exactly): far pivots are never expanded because
they lie beyond the stopping bound, and every graph component holding a
close pivot is explored, which covers search graphs that split into
disconnected components on clustered data.
"""
from __future__ import annotations

import numpy as np

from .heap import heap_drain as _drain
from .heap import heap_offer as _offer
from ._jit import kernel, parallel_kernel, prange

__all__ = ["ann_search", "ann_search_batch", "knn_to_csr", "relabel_csr", "tombstones"]


@kernel
def _dot(x, q64):
    s = 0.0
    for j in range(q64.shape[0]):
        s += np.float64(x[j]) * q64[j]
    return s


@kernel
def _score_slots(X, slots, m, q64, out):
    """``out[t] = dot(X[slots[t]], q)`` for t < m; four rows at a time (same sums as ``_dot``).

    Four independent float64 chains overlap their adds instead of stalling on
    each one, about 3x faster than one row at a time; each chain still sums
    in plain order, so the scores are bit-identical to ``_dot``.
    """
    d = q64.shape[0]
    t = 0
    while t + 4 <= m:
        x0 = X[slots[t]]
        x1 = X[slots[t + 1]]
        x2 = X[slots[t + 2]]
        x3 = X[slots[t + 3]]
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for j in range(d):
            qj = q64[j]
            s0 += np.float64(x0[j]) * qj
            s1 += np.float64(x1[j]) * qj
            s2 += np.float64(x2[j]) * qj
            s3 += np.float64(x3[j]) * qj
        out[t] = s0
        out[t + 1] = s1
        out[t + 2] = s2
        out[t + 3] = s3
        t += 4
    while t < m:
        out[t] = _dot(X[slots[t]], q64)
        t += 1


# --------------------------------------------------------- "best-first" candidates
# cs/ci: a max-heap by score (the candidate to expand next at the root); grows.

@kernel
def _cand_push(cs, ci, size, s, i):
    if size == cs.shape[0]:
        ncs = np.empty(2 * size, dtype=np.float64)
        nci = np.empty(2 * size, dtype=np.int64)
        ncs[:size] = cs[:size]
        nci[:size] = ci[:size]
        cs = ncs
        ci = nci
    pos = size
    while pos > 0:
        parent = (pos - 1) // 2
        if cs[parent] < s:
            cs[pos] = cs[parent]
            ci[pos] = ci[parent]
            pos = parent
        else:
            break
    cs[pos] = s
    ci[pos] = i
    return cs, ci, size + 1


@kernel
def _cand_pop(cs, ci, size):
    """Remove the root; return the new size (the caller read ``cs[0], ci[0]`` first)."""
    size -= 1
    if size > 0:
        s = cs[size]
        i = ci[size]
        pos = 0
        while True:
            c = 2 * pos + 1
            if c >= size:
                break
            if c + 1 < size and cs[c + 1] > cs[c]:
                c += 1
            if cs[c] > s:
                cs[pos] = cs[c]
                ci[pos] = ci[c]
                pos = c
            else:
                break
        cs[pos] = s
        ci[pos] = i
    return size


# ------------------------------------------------------------------- one query

@kernel
def _search_into(X, rows, indptr, indices, dead, mask, pivots, delta, q, k, ef, epsilon,
                 out_i, out_s):
    """Graph + delta top-k of one query into ``out_i``/``out_s`` (length k); returns the count.

    The graph part keeps the ``ef`` best valid rows (not dead, ``mask`` at
    their slot) while it walks; a candidate is expanded while its distance
    ``1 - score`` is within ``(1 + epsilon)`` times the ef-th best distance.
    Dead rows are walked through but never returned.
    """
    n = rows.shape[0]
    q64 = np.empty(q.shape[0], dtype=np.float64)
    for j in range(q.shape[0]):
        q64[j] = q[j]
    fs = np.empty(k, dtype=np.float64)   # final heap, ids are slots
    fi = np.empty(k, dtype=np.int64)
    fsize = 0
    if n > 0 and pivots.shape[0] > 0:
        scale = 1.0 + epsilon
        ef = max(ef, k)
        rs = np.empty(ef, dtype=np.float64)  # ef best valid rows (ids are rows)
        ri = np.empty(ef, dtype=np.int64)
        rsize = 0
        visited = np.zeros(n, dtype=np.bool_)
        cs = np.empty(max(64, 2 * pivots.shape[0]), dtype=np.float64)
        ci = np.empty(cs.shape[0], dtype=np.int64)
        csize = 0
        npiv = pivots.shape[0]
        buf_r = np.empty(max(npiv, 64), dtype=np.int64)  # rows to score
        buf_s = np.empty(buf_r.shape[0], dtype=np.int64)  # their slots
        sc = np.empty(buf_r.shape[0], dtype=np.float64)
        m = 0
        for p in range(npiv):
            r = pivots[p]
            if not visited[r]:
                visited[r] = True
                buf_r[m] = r
                buf_s[m] = rows[r]
                m += 1
        _score_slots(X, buf_s, m, q64, sc)
        for t in range(m):
            r = buf_r[t]
            cs, ci, csize = _cand_push(cs, ci, csize, sc[t], r)
            if not dead[r] and mask[rows[r]]:
                rsize = _offer(rs, ri, rsize, sc[t], r)
        while csize > 0:
            s = cs[0]
            r = ci[0]
            csize = _cand_pop(cs, ci, csize)
            if rsize == ef and 1.0 - s > scale * (1.0 - rs[0]):
                break
            if indptr[r + 1] - indptr[r] > buf_r.shape[0]:
                size = indptr[r + 1] - indptr[r]
                buf_r = np.empty(size, dtype=np.int64)
                buf_s = np.empty(size, dtype=np.int64)
                sc = np.empty(size, dtype=np.float64)
            m = 0
            for e in range(indptr[r], indptr[r + 1]):
                v = indices[e]
                if not visited[v]:
                    visited[v] = True
                    buf_r[m] = v
                    buf_s[m] = rows[v]
                    m += 1
            _score_slots(X, buf_s, m, q64, sc)
            for t in range(m):
                v = buf_r[t]
                sv = sc[t]
                if rsize < ef or 1.0 - sv <= scale * (1.0 - rs[0]):
                    cs, ci, csize = _cand_push(cs, ci, csize, sv, v)
                    if not dead[v] and mask[rows[v]]:
                        rsize = _offer(rs, ri, rsize, sv, v)
        for t in range(rsize):  # rows ascend with slots, so tie order is kept
            fsize = _offer(fs, fi, fsize, rs[t], rows[ri[t]])
    # the delta, exactly, in chunks of masked slots
    chunk = np.empty(256, dtype=np.int64)
    dsc = np.empty(256, dtype=np.float64)
    t = 0
    nd = delta.shape[0]
    while t < nd:
        m = 0
        while t < nd and m < 256:
            if mask[delta[t]]:
                chunk[m] = delta[t]
                m += 1
            t += 1
        _score_slots(X, chunk, m, q64, dsc)
        for u in range(m):
            fsize = _offer(fs, fi, fsize, dsc[u], chunk[u])
    _drain(fs, fi, fsize, out_i, out_s)
    return fsize


@kernel
def ann_search(X, rows, indptr, indices, dead, mask, pivots, delta, q, k, ef, epsilon):
    """Top-k slots of one query: ``(slots int64, scores float32)``, best first.

    Fewer than ``k`` come back when the walk and the delta hold fewer valid
    entries; the caller then falls back to an exact scan.
    """
    out_i = np.empty(k, dtype=np.int64)
    out_s = np.empty(k, dtype=np.float32)
    m = _search_into(X, rows, indptr, indices, dead, mask, pivots, delta, q, k, ef, epsilon,
                     out_i, out_s)
    return out_i[:m].copy(), out_s[:m].copy()


@parallel_kernel(size_arg=8)
def ann_search_batch(X, rows, indptr, indices, dead, mask, pivots, delta, Q, k, ef, epsilon):
    """:func:`ann_search` per row of ``Q``; ``(m, k)`` padded with -1 / -inf, plus counts."""
    m = Q.shape[0]
    out_i = np.full((m, k), -1, dtype=np.int64)
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    counts = np.zeros(m, dtype=np.int64)
    for t in prange(m):
        counts[t] = _search_into(X, rows, indptr, indices, dead, mask, pivots, delta, Q[t], k,
                                 ef, epsilon, out_i[t], out_s[t])
    return out_i, out_s, counts


# -------------------------------------------------------------- graph assembly

@kernel
def tombstones(rows, snap_ids, alive, ids):
    """Row r is dead if its slot is no longer alive or now holds another id."""
    n = rows.shape[0]
    dead = np.zeros(n, dtype=np.bool_)
    for r in range(n):
        s = rows[r]
        dead[r] = (s >= alive.shape[0]) or (not alive[s]) or ids[s] != snap_ids[r]
    return dead


@kernel
def relabel_csr(indptr, indices, order, max_degree):
    """CSR of vertex ``order[a]`` <- vertex ``a``, rows truncated to ``max_degree``.

    pynndescent's search graph is stored in its tree order (vertex ``a`` is
    snapshot row ``order[a]``); this gives it back in snapshot-row order.
    """
    n = order.shape[0]
    deg = np.zeros(n + 1, dtype=np.int64)
    for a in range(n):
        deg[order[a] + 1] = min(indptr[a + 1] - indptr[a], max_degree)
    new_ptr = np.cumsum(deg)
    new_idx = np.empty(new_ptr[n], dtype=np.int32)
    for a in range(n):
        r = order[a]
        base = new_ptr[r]
        for t in range(new_ptr[r + 1] - base):
            new_idx[base + t] = order[indices[indptr[a] + t]]
    return new_ptr, new_idx


@kernel
def knn_to_csr(nbrs, dists, max_degree):
    """Symmetrised k-NN graph: forward edges plus reverse ones, closest first, capped.

    ``nbrs`` (n, K) int (-1 = none), ``dists`` (n, K). Self loops and
    duplicates are dropped; each row keeps at most ``max_degree`` edges.
    """
    n, kk = nbrs.shape
    indeg = np.zeros(n + 1, dtype=np.int64)
    for u in range(n):
        for t in range(kk):
            v = nbrs[u, t]
            if v >= 0 and v != u:
                indeg[v + 1] += 1
    rptr = np.cumsum(indeg)
    rsrc = np.empty(rptr[n], dtype=np.int64)
    rdist = np.empty(rptr[n], dtype=np.float64)
    fill = rptr[:n].copy()
    for u in range(n):
        for t in range(kk):
            v = nbrs[u, t]
            if v >= 0 and v != u:
                rsrc[fill[v]] = u
                rdist[fill[v]] = dists[u, t]
                fill[v] += 1
    deg = np.zeros(n + 1, dtype=np.int64)
    tmp_i = np.empty(kk + n, dtype=np.int64)
    tmp_d = np.empty(kk + n, dtype=np.float64)
    out_idx = np.empty(n * max_degree, dtype=np.int32)
    for u in range(n):
        c = 0
        for t in range(kk):
            v = nbrs[u, t]
            if v >= 0 and v != u:
                tmp_i[c] = v
                tmp_d[c] = dists[u, t]
                c += 1
        for e in range(rptr[u], rptr[u + 1]):
            tmp_i[c] = rsrc[e]
            tmp_d[c] = rdist[e]
            c += 1
        order = np.argsort(tmp_d[:c], kind="mergesort")
        m = 0
        for t in range(c):
            v = tmp_i[order[t]]
            dup = False
            for z in range(m):
                if out_idx[u * max_degree + z] == v:
                    dup = True
                    break
            if not dup:
                out_idx[u * max_degree + m] = v
                m += 1
                if m == max_degree:
                    break
        deg[u + 1] = m
    ptr = np.cumsum(deg)
    idx = np.empty(ptr[n], dtype=np.int32)
    for u in range(n):
        for t in range(deg[u + 1]):
            idx[ptr[u] + t] = out_idx[u * max_degree + t]
    return ptr, idx

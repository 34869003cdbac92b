"""Graph-search kernels for the NN-descent index.

The index keeps a sealed search graph in CSR form (``indptr``, ``indices``)
whose row ``r`` is the entry in store slot ``rows[r]`` (``rows`` ascending),
plus a ``dead`` row mask (tombstones) and an exactly searched ``delta`` of
slots added since the build. Vectors are always read from the store's
``embeddings`` (cap, d), so every score is exact.

Returned scores are dot products accumulated in float64 in plain sequential
order, exactly as in :mod:`dreamjit.kernels.cosine`, so a hit has the same
score whichever index found it. Ranking: score descending, ties to the lower
slot.

A query (:func:`ann_search`) first scans the *entry layer*: a contiguous
column-major int8 block of a few thousand rows (a representative of every
connected component, a hop cover, seeded random rows; built once per graph
by :func:`graph_components`, :func:`component_representatives`,
:func:`cover_entries`, :func:`bridge_edges`, :func:`add_edges` and
:func:`quantize_block`). Its best ``n_seeds`` entries start a best-first walk
whose navigation scores are float32 dot products of prefetched rows
(:func:`~dreamjit.kernels._jit.nav_kernel`: reassociated, so they
vectorise); the rows the walk keeps are scored again exactly before they
are ranked and returned.
"""
from __future__ import annotations

import numpy as np

from .heap import heap_drain as _drain
from .heap import heap_offer as _offer
from ._jit import inline_kernel, kernel, nav_kernel, parallel_kernel, prange, prefetch

__all__ = ["add_edges", "ann_search", "ann_search_batch", "bridge_edges",
           "component_representatives", "cover_entries", "graph_components", "knn_to_csr",
           "quantize_block", "relabel_csr", "tombstones"]


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

@inline_kernel
def _cand_push(cs, ci, size, s, i):
    if size == cs.shape[0]:
        ncs = np.empty(2 * size, dtype=cs.dtype)
        nci = np.empty(2 * size, dtype=ci.dtype)
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


@inline_kernel
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

@nav_kernel
def _nav_scores(X, slots, m, q, out):
    """``out[t] ~ dot(X[slots[t]], q)`` for t < m, float32, vectorised (walk only)."""
    d = q.shape[0]
    for t in range(m):
        x = X[slots[t]]
        s = np.float32(0.0)
        for j in range(d):
            s += x[j] * q[j]
        out[t] = s


@kernel
def quantize_block(V):
    """int8 column-major copy of the unit rows ``V`` (E, d): ``round(127 * V.T / max|V|)``.

    The entry layer is scanned in this form: a quarter of float32's bytes,
    and int16 products vectorise. Only the order of the scores matters (it
    picks the walk's seeds), so one scale for the block is enough.
    """
    E, d = V.shape
    top = 0.0
    for e in range(E):
        for j in range(d):
            top = max(top, abs(np.float64(V[e, j])))
    scale = 127.0 / top if top > 0.0 else 0.0
    out = np.empty((d, E), dtype=np.int8)
    for e in range(E):
        for j in range(d):
            out[j, e] = np.int8(np.rint(V[e, j] * scale))
    return out


@kernel
def _quantize_query(q, out):
    top = 0.0
    for j in range(q.shape[0]):
        top = max(top, abs(np.float64(q[j])))
    scale = 127.0 / top if top > 0.0 else 0.0
    for j in range(q.shape[0]):
        out[j] = np.int16(np.rint(q[j] * scale))


@kernel
def _scan_block(block, q16, out):
    """``out[e] = sum_j block[j, e] * q16[j]`` (int32, exact) over the (d, E) int8 block.

    Rows of the block go two at a time as int16 products (|b|, |q| <= 127,
    so a product fits), summed into int32: the loop over entries vectorises.
    """
    d, E = block.shape
    for e in range(E):
        out[e] = 0
    j = 0
    while j + 2 <= d:
        q0 = q16[j]
        q1 = q16[j + 1]
        b0 = block[j]
        b1 = block[j + 1]
        for e in range(E):
            out[e] += np.int32(np.int16(b0[e]) * q0) + np.int32(np.int16(b1[e]) * q1)
        j += 2
    if j < d:
        q0 = q16[j]
        b0 = block[j]
        for e in range(E):
            out[e] += np.int32(np.int16(b0[e]) * q0)


@kernel
def _walk_into(X, rows, indptr, indices, dead, mask, entries, block, delta, q, k, ef, epsilon,
               n_seeds, out_i, out_s):
    """Graph + delta top-k of one query into ``out_i``/``out_s`` (length k); returns the count.

    1. Score every entry of the layer (the contiguous int8 block, int32
       sums) and seed the walk with the best ``n_seeds``.
    2. Best-first walk on float32 navigation scores: keep the ``ef`` best
       valid rows (not dead, ``mask`` at their slot); a candidate is expanded
       while its distance ``1 - score`` is within ``(1 + epsilon)`` times the
       ef-th best distance. Dead rows are walked through, never returned.
    3. Re-score the kept rows and the masked delta exactly (float64, plain
       order, as the exact index does) and return the best ``k``.
    """
    n = rows.shape[0]
    d = q.shape[0]
    q64 = np.empty(d, dtype=np.float64)
    for j in range(d):
        q64[j] = q[j]
    fs = np.empty(k, dtype=np.float64)   # final heap, ids are slots
    fi = np.empty(k, dtype=np.int64)
    fsize = 0
    n_entries = entries.shape[0]
    if n > 0 and n_entries > 0:
        one = np.float32(1.0)
        scale = np.float32(1.0 + epsilon)
        ef = max(ef, k)
        # 1. the entry layer: scan, keep the best n_seeds, score them in float32
        q16 = np.empty(d, dtype=np.int16)
        _quantize_query(q, q16)
        es = np.empty(n_entries, dtype=np.int32)
        _scan_block(block, q16, es)
        n_seeds = min(max(n_seeds, 1), n_entries)
        ss = np.empty(n_seeds, dtype=np.int32)
        si = np.empty(n_seeds, dtype=np.int64)
        ssize = 0
        for e in range(n_entries):
            if ssize < n_seeds or es[e] >= ss[0]:
                ssize = _offer(ss, si, ssize, es[e], entries[e])
        ident = rows[n - 1] == n - 1  # rows ascend: row r is slot r (no holes in the store)
        sslot = np.empty(ssize, dtype=np.int64)
        for t in range(ssize):
            sslot[t] = si[t] if ident else rows[si[t]]
        seed_sc = np.empty(ssize, dtype=np.float32)
        _nav_scores(X, sslot, ssize, q, seed_sc)
        rs = np.empty(ef, dtype=np.float32)  # ef best valid rows (ids are rows)
        ri = np.empty(ef, dtype=np.int64)
        rsize = 0
        bits = np.zeros((n >> 3) + 1, dtype=np.uint8)  # visited rows
        cs = np.empty(max(64, 2 * ef), dtype=np.float32)
        ci = np.empty(cs.shape[0], dtype=np.int64)
        csize = 0
        for t in range(ssize):
            r = si[t]
            bits[r >> 3] |= np.uint8(1 << (r & 7))
            cs, ci, csize = _cand_push(cs, ci, csize, seed_sc[t], r)
            if not dead[r] and mask[sslot[t]]:
                rsize = _offer(rs, ri, rsize, seed_sc[t], r)
        # 2. best-first walk
        buf = np.empty(64, dtype=np.int64)
        sbuf = np.empty(64, dtype=np.int64)
        sc = np.empty(64, dtype=np.float32)
        while csize > 0:
            s = cs[0]
            r = ci[0]
            csize = _cand_pop(cs, ci, csize)
            if rsize == ef and one - s > scale * (one - rs[0]):
                break
            lo = indptr[r]
            hi = indptr[r + 1]
            if hi - lo > buf.shape[0]:
                buf = np.empty(hi - lo, dtype=np.int64)
                sbuf = np.empty(hi - lo, dtype=np.int64)
                sc = np.empty(hi - lo, dtype=np.float32)
            m = 0
            for e in range(lo, hi):
                v = indices[e]
                w = v >> 3
                bit = np.uint8(1 << (v & 7))
                if bits[w] & bit:
                    continue
                bits[w] |= bit
                slot = v if ident else rows[v]
                for j in range(0, d, 16):  # one cache line of float32 per 16
                    prefetch(X, slot, j)
                buf[m] = v
                sbuf[m] = slot
                m += 1
            if m == 0:
                continue
            _nav_scores(X, sbuf, m, q, sc)
            for t in range(m):
                sv = sc[t]
                if rsize < ef or one - sv <= scale * (one - rs[0]):
                    v = buf[t]
                    cs, ci, csize = _cand_push(cs, ci, csize, sv, v)
                    if (rsize < ef or sv >= rs[0]) and not dead[v] and mask[sbuf[t]]:
                        rsize = _offer(rs, ri, rsize, sv, v)
        # 3. exact scores of the kept rows
        for t in range(rsize):
            slot = rows[ri[t]]
            fsize = _offer(fs, fi, fsize, _dot(X[slot], q64), slot)
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
def ann_search(X, rows, indptr, indices, dead, mask, entries, block, delta, q, k, ef, epsilon,
               n_seeds):
    """Top-k slots of one query: ``(slots int64, scores float32)``, best first.

    Fewer than ``k`` come back when the walk and the delta hold fewer valid
    entries; the caller then falls back to an exact scan.
    """
    out_i = np.empty(k, dtype=np.int64)
    out_s = np.empty(k, dtype=np.float32)
    m = _walk_into(X, rows, indptr, indices, dead, mask, entries, block, delta, q, k, ef,
                   epsilon, n_seeds, out_i, out_s)
    return out_i[:m].copy(), out_s[:m].copy()


@parallel_kernel(size_arg=9)
def ann_search_batch(X, rows, indptr, indices, dead, mask, entries, block, delta, Q, k, ef,
                     epsilon, n_seeds):
    """:func:`ann_search` per row of ``Q``; ``(m, k)`` padded with -1 / -inf, plus counts."""
    m = Q.shape[0]
    out_i = np.full((m, k), -1, dtype=np.int64)
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    counts = np.zeros(m, dtype=np.int64)
    for t in prange(m):
        counts[t] = _walk_into(X, rows, indptr, indices, dead, mask, entries, block, delta,
                               Q[t], k, ef, epsilon, n_seeds, out_i[t], out_s[t])
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


# ------------------------------------------------------------ the entry layer
# Computed once per build from the search graph (CSR over snapshot rows) and
# the snapshot's vectors, off the query path.

@kernel
def _find(parent, u):
    while parent[u] != u:
        parent[u] = parent[parent[u]]  # path halving
        u = parent[u]
    return u


@kernel
def graph_components(indptr, indices):
    """Weakly connected components of a CSR graph (edges taken as undirected).

    Union-find with path halving; the root of a set is always its lowest
    vertex, and components are numbered by their lowest vertex. Returns
    ``(labels (n,) int64, n_components)``.
    """
    n = indptr.shape[0] - 1
    parent = np.arange(n)
    for u in range(n):
        for e in range(indptr[u], indptr[u + 1]):
            a = _find(parent, u)
            b = _find(parent, indices[e])
            if a < b:
                parent[b] = a
            elif b < a:
                parent[a] = b
    labels = np.empty(n, dtype=np.int64)
    count = 0
    for u in range(n):
        root = _find(parent, u)
        if root == u:
            labels[u] = count
            count += 1
        else:
            labels[u] = labels[root]  # root < u: already numbered
    return labels, count


@kernel
def component_representatives(X, labels, n_components, dead):
    """Per component, the live row nearest (largest dot) its live members' mean direction.

    ``X`` (n, d) are the rows' vectors. Ties go to the lower row; a component
    without a live row gets -1. Returns ``(n_components,) int64``.
    """
    n, d = X.shape
    sums = np.zeros((n_components, d), dtype=np.float64)
    for u in range(n):
        if not dead[u]:
            c = labels[u]
            for j in range(d):
                sums[c, j] += X[u, j]
    reps = np.full(n_components, -1, dtype=np.int64)
    best = np.full(n_components, -np.inf)
    for u in range(n):
        if dead[u]:
            continue
        c = labels[u]
        s = 0.0
        for j in range(d):
            s += X[u, j] * sums[c, j]  # the mean's norm does not change the argmax
        if s > best[c]:
            best[c] = s
            reps[c] = u
    return reps


@kernel
def cover_entries(indptr, indices, dead, first, order, hops, limit):
    """Entry rows: ``first`` (its live rows, always), then a greedy ``hops``-hop cover in ``order``.

    A row of ``order`` becomes an entry when it is live and no earlier entry
    lies within ``hops`` edges of it (edges followed forwards, as the walk
    does); every entry marks its ``hops``-ball covered. So every live row is
    within ``hops`` of an entry, unless ``limit`` entries were reached first.
    Returns ``(entries int64 in the order taken, complete)`` where
    ``complete`` tells whether every live row was covered.
    """
    n = indptr.shape[0] - 1
    covered = np.zeros(n, dtype=np.bool_)
    is_entry = np.zeros(n, dtype=np.bool_)
    stamp = np.full(n, -1, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    depth = np.empty(n, dtype=np.int64)
    out = np.empty(min(limit, n), dtype=np.int64)
    m = 0
    n_first = first.shape[0]
    for t in range(n_first + order.shape[0]):
        if m == out.shape[0]:
            break
        if t < n_first:
            r = first[t]
            if r < 0 or dead[r] or is_entry[r]:
                continue
        else:
            r = order[t - n_first]
            if dead[r] or covered[r]:
                continue
        out[m] = r
        is_entry[r] = True
        m += 1
        stamp[r] = m  # BFS over the hops-ball of r
        covered[r] = True
        queue[0] = r
        depth[0] = 0
        head = 0
        tail = 1
        while head < tail:
            u = queue[head]
            du = depth[head]
            head += 1
            if du == hops:
                continue
            for e in range(indptr[u], indptr[u + 1]):
                v = indices[e]
                if stamp[v] != m:
                    stamp[v] = m
                    covered[v] = True
                    queue[tail] = v
                    depth[tail] = du + 1
                    tail += 1
    complete = True
    for u in range(n):
        if not dead[u] and not covered[u]:
            complete = False
            break
    return out[:m].copy(), complete


@kernel
def bridge_edges(X, reps):
    """Edges that connect the components: a maximum spanning tree over their representatives.

    ``reps`` holds one row per component (-1: skipped); similarity is the dot
    product of their ``X`` rows (float64 sums). Prim's algorithm on the
    complete graph of representatives, from the first one, ties to the lower
    position: ``c - 1`` links, each component joined to a most similar one
    (the tree holds every representative's nearest link). Returns ``(src,
    dst)`` int64 with both directions of every link. ``O(c^2 d)``.
    """
    valid = np.flatnonzero(reps >= 0)
    c = valid.shape[0]
    if c < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    d = X.shape[1]
    V = np.empty((c, d), dtype=np.float32)
    for a in range(c):
        for j in range(d):
            V[a, j] = X[reps[valid[a]], j]
    in_tree = np.zeros(c, dtype=np.bool_)
    best = np.full(c, -np.inf)
    link = np.full(c, -1, dtype=np.int64)
    src = np.empty(2 * (c - 1), dtype=np.int64)
    dst = np.empty(2 * (c - 1), dtype=np.int64)
    cur = 0
    in_tree[0] = True
    for it in range(c - 1):
        nxt = -1
        top = -np.inf
        for b in range(c):
            if in_tree[b]:
                continue
            s = 0.0
            for j in range(d):
                s += np.float64(V[cur, j]) * np.float64(V[b, j])
            if s > best[b]:
                best[b] = s
                link[b] = cur
            if nxt < 0 or best[b] > top:
                top = best[b]
                nxt = b
        in_tree[nxt] = True
        u = reps[valid[link[nxt]]]
        v = reps[valid[nxt]]
        src[2 * it] = u
        dst[2 * it] = v
        src[2 * it + 1] = v
        dst[2 * it + 1] = u
        cur = nxt
    return src, dst


@kernel
def add_edges(indptr, indices, src, dst):
    """CSR ``(indptr, indices)`` plus the edges ``src[t] -> dst[t]`` (duplicates and self
    loops dropped); new edges go after a row's own. Returns ``(indptr int64, indices int32)``."""
    n = indptr.shape[0] - 1
    extra = np.zeros(n + 1, dtype=np.int64)
    for t in range(src.shape[0]):
        extra[src[t] + 1] += 1
    eptr = np.cumsum(extra)
    edst = np.empty(eptr[n], dtype=np.int64)
    fill = eptr[:n].copy()
    for t in range(src.shape[0]):
        edst[fill[src[t]]] = dst[t]
        fill[src[t]] += 1
    deg = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(indptr[n] + eptr[n], dtype=np.int32)
    m = 0
    for u in range(n):
        start = m
        for e in range(indptr[u], indptr[u + 1]):
            out[m] = indices[e]
            m += 1
        for e in range(eptr[u], eptr[u + 1]):
            v = edst[e]
            if v == u:
                continue
            dup = False
            for z in range(start, m):
                if out[z] == v:
                    dup = True
                    break
            if not dup:
                out[m] = v
                m += 1
        deg[u + 1] = m - start
    return np.cumsum(deg), out[:m].copy()

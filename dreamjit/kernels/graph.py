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
by the kernels of :mod:`dreamjit.kernels.entry_layer` and
:func:`quantize_block`). Its best ``n_seeds`` entries start a best-first walk
whose navigation scores are float32 dot products of prefetched rows
(:func:`~dreamjit.kernels._jit.nav_kernel`: reassociated, so they
vectorise); the rows the walk keeps are scored again exactly before they
are ranked and returned.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel, nav_kernel, parallel_kernel, prange, prefetch
from .cosine import dot64
from .heap import heap_drain as _drain
from .heap import heap_offer as _offer
from .heap import heap_pop, heap_push
from .query import SOFT_FEW, SOFT_OK, SOFT_TIE, _int8_dots, rerank_candidates, unit_query

__all__ = [
    "ann_search",
    "ann_search_batch",
    "ann_soft_query",
    "graph_update",
    "knn_to_csr",
    "link_dot",
    "quantize_block",
    "relabel_csr",
    "select_links",
    "tombstones",
]


@kernel
def _score_slots(X, slots, m, q64, out):
    """``out[t] = dot64(X[slots[t]], q64)`` for t < m (the exact scores of the delta)."""
    for t in range(m):
        out[t] = dot64(X[slots[t]], q64)


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
    """``out[e] = sum_j block[j, e] * q16[j]`` (int32, exact) over the (d, E) int8 block:
    :func:`~dreamjit.kernels.query._int8_dots` (int16 products two rows at a time, summed
    into int32; the loop over entries vectorises)."""
    _int8_dots(block, q16, 0, block.shape[1], out)


@kernel
def _walk_into(X, graph, mask, delta, q, k, ef, epsilon, n_seeds, out_i, out_s):
    """Graph + delta top-k of one query into ``out_i``/``out_s`` (length k); returns the count.

    ``graph`` is the tuple ``(rows, indptr, indices, dead, entries, block)``.

    1. Score every entry of the layer (the contiguous int8 block, int32
       sums) and seed the walk with the best ``n_seeds``.
    2. Best-first walk on float32 navigation scores: keep the ``ef`` best
       valid rows (not dead, ``mask`` at their slot); a candidate is expanded
       while its distance ``1 - score`` is within ``(1 + epsilon)`` times the
       ef-th best distance. Dead rows are walked through, never returned.
    3. Re-score the kept rows and the masked delta exactly (float64, plain
       order, as the exact index does) and return the best ``k``.
    """
    rows, indptr, indices, dead, entries, block = graph
    n = rows.shape[0]
    d = q.shape[0]
    q64 = np.empty(d, dtype=np.float64)
    for j in range(d):
        q64[j] = q[j]
    fs = np.empty(k, dtype=np.float64)  # final heap, ids are slots
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
        # candidates: a best-first queue (heap.py's order on negated scores, root = best)
        cs = np.empty(max(64, 2 * ef), dtype=np.float32)
        ci = np.empty(cs.shape[0], dtype=np.int64)
        csize = 0
        for t in range(ssize):
            r = si[t]
            bits[r >> 3] |= np.uint8(1 << (r & 7))
            cs, ci, csize = heap_push(cs, ci, csize, -seed_sc[t], r)
            if not dead[r] and mask[sslot[t]]:
                rsize = _offer(rs, ri, rsize, seed_sc[t], r)
        # 2. best-first walk
        buf = np.empty(64, dtype=np.int64)
        sbuf = np.empty(64, dtype=np.int64)
        sc = np.empty(64, dtype=np.float32)
        while csize > 0:
            s = -cs[0]
            r = ci[0]
            csize = heap_pop(cs, ci, csize)
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
                    cs, ci, csize = heap_push(cs, ci, csize, -sv, v)
                    if (rsize < ef or sv >= rs[0]) and not dead[v] and mask[sbuf[t]]:
                        rsize = _offer(rs, ri, rsize, sv, v)
        # 3. exact scores of the kept rows
        for t in range(rsize):
            slot = rows[ri[t]]
            fsize = _offer(fs, fi, fsize, dot64(X[slot], q64), slot)
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
def ann_search(X, graph, mask, delta, q, k, ef, epsilon, n_seeds):
    """Top-k slots of one query: ``(slots int64, scores float32)``, best first.

    ``graph`` is ``(rows, indptr, indices, dead, entries, block)`` (see the
    module notes). Fewer than ``k`` come back when the walk and the delta hold
    fewer valid entries; the caller then falls back to an exact scan.
    """
    out_i = np.empty(k, dtype=np.int64)
    out_s = np.empty(k, dtype=np.float32)
    m = _walk_into(X, graph, mask, delta, q, k, ef, epsilon, n_seeds, out_i, out_s)
    return out_i[:m].copy(), out_s[:m].copy()


@kernel
def ann_soft_query(
    X, graph, mask, delta, v, want, ef, epsilon, n_seeds, ids, util_mean, labels, qlabel, cc, k, w
):
    """One soft retrieval through the graph: ``(slots, scores, similarity, status)``.

    What the pool's general soft path does for a graph-searched pool, in one call: ``v``
    normalised (:func:`~dreamjit.kernels.query.unit_query`), the walk for ``want`` rows
    (``min(cc + 1, matches)``: one more than the ``cc`` candidates, to see a tie at the
    cut) with the index's ``ef``, ``epsilon`` and ``n_seeds`` (as :func:`ann_search`),
    and the candidates reranked by
    :func:`~dreamjit.kernels.query.rerank_candidates` (``ids``, ``util_mean``,
    ``labels``, ``qlabel``, ``k`` and weights ``w`` as there; ``X`` is also the
    rerank's row-major embeddings). ``status`` is ``SOFT_OK``, or ``SOFT_TIE`` (scores
    tie across the cut), ``SOFT_FEW`` (the walk found fewer than ``want`` valid rows)
    or a bad query's (``SOFT_ZERO``, ``SOFT_NONFINITE``): then the arrays are empty
    and the caller takes the general path, which handles each case.
    """
    none_i = np.empty(0, dtype=np.int64)
    none_s = np.empty(0, dtype=np.float32)
    q, status = unit_query(v)
    if status != SOFT_OK:
        return none_i, none_s, none_s, status
    out_i = np.empty(want, dtype=np.int64)
    out_s = np.empty(want, dtype=np.float32)
    m = _walk_into(X, graph, mask, delta, q, want, ef, epsilon, n_seeds, out_i, out_s)
    if m < want:
        return none_i, none_s, none_s, SOFT_FEW
    if m > cc:
        if out_s[cc] == out_s[cc - 1]:
            return none_i, none_s, none_s, SOFT_TIE
        m = cc
    slots, scores, sims = rerank_candidates(
        out_i[:m], out_s[:m], X, ids, util_mean, labels, qlabel, k, w
    )
    return slots, scores, sims, SOFT_OK


@parallel_kernel(size_arg=4)
def ann_search_batch(X, graph, mask, delta, Q, k, ef, epsilon, n_seeds):
    """:func:`ann_search` per row of ``Q``; ``(m, k)`` padded with -1 / -inf, plus counts."""
    m = Q.shape[0]
    out_i = np.full((m, k), -1, dtype=np.int64)
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    counts = np.zeros(m, dtype=np.int64)
    for t in prange(m):
        counts[t] = _walk_into(
            X, graph, mask, delta, Q[t], k, ef, epsilon, n_seeds, out_i[t], out_s[t]
        )
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


# ------------------------------------------------------- incremental maintenance
# Between full builds the graph is kept current by :func:`graph_update`: removed
# rows are dropped and their in-neighbours reconnected to their out-neighbours,
# new entries are linked both ways. Every score here is ``dot64`` (plain-order
# float64), and every choice breaks ties to the lower row, so the result is
# deterministic (tests/test_graph_update.py holds the slow reference).


@kernel
def link_dot(x, y):
    """Dot product of two float32 rows in float64: 8 interleaved partial sums, then a fixed tree.

    Lane ``l`` sums ``x[j] * y[j]`` for ``j = l, l + 8, ...`` in order (the
    tail past the last full group of 8 goes to lane 0, in order), and the
    result is ``((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))``. The
    products of float32 values are exact in float64, so the result is one
    fixed sequence of float64 additions (tests reproduce it bit for bit),
    with eight independent chains instead of one: graph maintenance ranks
    candidates with it (about 4x faster than :func:`~dreamjit.kernels.cosine.dot64`
    here); returned query scores never use it.

    Parameters
    ----------
    x, y : (d,) float32
        The two rows.

    Returns
    -------
    float
        Their dot product, summed as above.
    """
    d = x.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    s5 = 0.0
    s6 = 0.0
    s7 = 0.0
    j = 0
    while j + 8 <= d:
        s0 += np.float64(x[j]) * np.float64(y[j])
        s1 += np.float64(x[j + 1]) * np.float64(y[j + 1])
        s2 += np.float64(x[j + 2]) * np.float64(y[j + 2])
        s3 += np.float64(x[j + 3]) * np.float64(y[j + 3])
        s4 += np.float64(x[j + 4]) * np.float64(y[j + 4])
        s5 += np.float64(x[j + 5]) * np.float64(y[j + 5])
        s6 += np.float64(x[j + 6]) * np.float64(y[j + 6])
        s7 += np.float64(x[j + 7]) * np.float64(y[j + 7])
        j += 8
    while j < d:
        s0 += np.float64(x[j]) * np.float64(y[j])
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@kernel
def select_links(X, slot, cand, n_links):
    """The out-links of a new entry at ``slot`` from candidate slots ``cand``
    (-1 = none): hnswlib's heuristic, then the closest others up to ``n_links``.

    Candidates go closest first (ties to the lower slot; duplicates and
    ``slot`` itself dropped). The heuristic keeps a candidate only if it is
    no closer to an already kept one than to the new entry, which keeps
    edges pointing in different directions (towards other clusters too);
    the remaining room is then filled with the closest candidates left.
    Similarities are :func:`link_dot`.

    Parameters
    ----------
    X : (cap, d) float32
        The store's unit rows.
    slot : int
        The new entry.
    cand : (L,) int64
        Candidate slots, -1 for none.
    n_links : int
        Most links chosen.

    Returns
    -------
    (m,) int64
        The chosen slots, heuristic ones first (``m <= n_links``).
    """
    m = 0
    c = np.empty(cand.shape[0], dtype=np.int64)
    for t in range(cand.shape[0]):
        if cand[t] >= 0 and cand[t] != slot:
            c[m] = cand[t]
            m += 1
    c = np.unique(c[:m])  # ascending slots: the stable sort below breaks ties to the lower
    m = c.shape[0]
    d = X.shape[1]
    for t in range(m):  # scattered rows: fetch them all first, so the misses overlap
        for j in range(0, d, 16):
            prefetch(X, c[t], j)
    sc = np.empty(m, dtype=np.float64)
    xs = X[slot]
    for t in range(m):
        sc[t] = link_dot(X[c[t]], xs)
    order = np.argsort(-sc, kind="mergesort")
    out = np.empty(min(n_links, m), dtype=np.int64)
    used = np.zeros(m, dtype=np.bool_)
    n = 0
    for t in range(m):
        if n == out.shape[0]:
            break
        a = order[t]
        good = True
        xa = X[c[a]]
        for u in range(n):
            if link_dot(xa, X[out[u]]) > sc[a]:
                good = False
                break
        if good:
            out[n] = c[a]
            used[a] = True
            n += 1
    for t in range(m):
        if n == out.shape[0]:
            break
        a = order[t]
        if not used[a]:
            out[n] = c[a]
            n += 1
    return out


#: changed rows per parallel task of :func:`graph_update` (their candidate lists)
_ROW_BLOCK = 64
#: rows per parallel task of :func:`graph_update`'s passes over every row
_SCAN_BLOCK = 4096


@kernel
def _row_list(X, new_rows, q, c, m, cap, max_degree, out_row):
    """Row ``q``'s new list from its ``m`` proposals ``c[:m]`` into ``out_row``; returns its length.

    Sorted, duplicates and ``q`` dropped; all kept if at most ``cap``, else the
    ``max_degree`` closest (:func:`link_dot`, ties to the lower row), closest first.
    """
    c2 = np.sort(c[:m])
    k = 0
    prev = -1
    for t in range(m):
        v = c2[t]
        if v != q and v != prev:
            c2[k] = v
            k += 1
        prev = v
    if k <= cap:
        for t in range(k):
            out_row[t] = c2[t]
        return k
    d = X.shape[1]
    for t in range(k):  # the rows are scattered: fetch them all first, so the misses overlap
        slot = new_rows[c2[t]]
        for j in range(0, d, 16):
            prefetch(X, slot, j)
    sc = np.empty(k, dtype=np.float64)
    xq = X[new_rows[q]]
    for t in range(k):
        sc[t] = link_dot(X[new_rows[c2[t]]], xq)
    order = np.argsort(-sc, kind="mergesort")
    for t in range(max_degree):
        out_row[t] = c2[order[t]]
    return max_degree


@kernel
def _gather_row(q, c, old_of, indptr, indices, dead, mapping, links, new_of, rptr, rsrc, n_repair):
    """Row ``q``'s proposals into ``c``: its live out-neighbours and the repair (an old
    row) or its links (a new entry), then the reverse edges. Returns their count and
    whether the row changes (a new entry, a repair or a reverse edge)."""
    m = 0
    u = old_of[q]
    grows = rptr[q + 1] > rptr[q]
    if u >= 0:
        for e in range(indptr[u], indptr[u + 1]):
            v = indices[e]
            if not dead[v]:
                c[m] = mapping[v]
                m += 1
            else:
                took = 0
                for f in range(indptr[v], indptr[v + 1]):
                    if took == n_repair:
                        break
                    w = mapping[indices[f]]
                    if w >= 0:
                        c[m] = w
                        m += 1
                        took += 1
                        grows = True
    else:
        grows = True
        t = new_of[q]
        for z in range(links.shape[1]):
            if links[t, z] >= 0:
                c[m] = links[t, z]
                m += 1
    for e in range(rptr[q], rptr[q + 1]):
        c[m] = rsrc[e]
        m += 1
    return m, grows


@kernel
def _copy_live(u, indptr, indices, dead, mapping, out, base):
    """The live out-neighbours of old row ``u``, renumbered, into ``out[base:]`` in order."""
    m = 0
    for e in range(indptr[u], indptr[u + 1]):
        v = indices[e]
        if not dead[v]:
            out[base + m] = mapping[v]
            m += 1


@parallel_kernel(size_arg=None)
def graph_update(X, rows, indptr, indices, dead, new_slots, cand, n_links, max_degree, n_repair):
    """Drop the ``dead`` rows and link ``new_slots`` into a CSR search graph.

    Parameters
    ----------
    X : (cap, d) float32
        The store's unit rows.
    rows, indptr, indices, dead
        The graph: ascending slots, CSR, tombstones.
    new_slots : (B,) int64
        Ascending slots not live in the graph (a slot of a dead row may come
        back: it keeps its row number when the row set is otherwise unchanged).
    cand : (B, L) int64
        Candidate slots of each new entry (-1 = none; e.g. its walk results
        and its nearest new entries).
    n_links, max_degree : int
        Out-links chosen per new entry; the degree bound of a changed row.
    n_repair : int
        Most replacement proposals a row takes from each dropped out-neighbour:
        that one's first ``n_repair`` live out-neighbours, in its list's order.

    Returns
    -------
    rows : (n2,) int64
        Ascending slots of the new graph.
    indptr, indices : int64, int32
        Its CSR.
    mapping : (n,) int64
        The new row of each old row, -1 for a dropped one.

    Notes
    -----
    Steps:

    1. Rows: the live old rows and the new slots, ascending (``mapping``
       gives each old row's new number, -1 if dropped).
    2. Each new entry's out-links: :func:`select_links` (``n_links``).
    3. Proposals per row: its live out-neighbours; for each dead
       out-neighbour, that one's first ``n_repair`` live out-neighbours
       (the repair: few, so a repaired row seldom passes its bound and
       needs scoring); for a
       new entry's link to ``p``, the reverse edge ``p -> new``.
    4. A row whose proposals add nothing keeps its list. Otherwise its
       candidates (deduplicated, self dropped) are kept all if at most
       ``max(max_degree, old degree)``, else the ``max_degree`` closest
       (:func:`link_dot`, ties to the lower row), closest first.
    5. A new entry that no row links to yet replaces the farthest out-link
       of its first chosen neighbour, so every new entry is reachable.

    Cost: one pass over the edges (which rows changed, and the renumbered
    copy of the unchanged ones); the scoring work only for the changed rows
    (new entries, rows that linked to a dropped one, reverse edges), about
    ``degree^2`` dot products each. Steps 2 and 4 and the copy run in
    parallel over entries and rows; every row's list depends only on its
    own proposals, so the result does not depend on the threads.
    """
    n = rows.shape[0]
    B = new_slots.shape[0]
    # 1. the new rows (merge of the live old rows and the new slots, ascending)
    n_keep = 0
    for r in range(n):
        if not dead[r]:
            n_keep += 1
    n2 = n_keep + B
    new_rows = np.empty(n2, dtype=np.int64)
    mapping = np.full(n, -1, dtype=np.int64)
    old_of = np.full(n2, -1, dtype=np.int64)  # old row of each new row, -1 for a new entry
    a = 0
    b = 0
    r = 0
    while a < n or b < B:
        while a < n and dead[a]:
            a += 1
        if a >= n and b >= B:
            break
        if b >= B or (a < n and rows[a] < new_slots[b]):
            new_rows[r] = rows[a]
            mapping[a] = r
            old_of[r] = a
            a += 1
        else:
            new_rows[r] = new_slots[b]
            b += 1
        r += 1
    # 2. out-links of the new entries (new row numbers), in parallel
    links = np.full((B, n_links), -1, dtype=np.int64)
    new_pos = np.empty(B, dtype=np.int64)
    for t in prange(B):
        new_pos[t] = np.searchsorted(new_rows, new_slots[t])
        chosen = select_links(X, new_slots[t], cand[t], n_links)
        for z in range(chosen.shape[0]):
            links[t, z] = np.searchsorted(new_rows, chosen[z])
    # 3. reverse edges by target row (CSR), and every row's proposal count
    rptr = np.zeros(n2 + 1, dtype=np.int64)
    for t in range(B):
        for u in range(n_links):
            if links[t, u] >= 0:
                rptr[links[t, u] + 1] += 1
    for q in range(n2):
        rptr[q + 1] += rptr[q]
    rsrc = np.empty(rptr[n2], dtype=np.int64)
    rfill = rptr[:n2].copy()
    for t in range(B):
        for u in range(n_links):
            p = links[t, u]
            if p >= 0:
                rsrc[rfill[p]] = new_pos[t]
                rfill[p] += 1
    new_of = np.full(n2, -1, dtype=np.int64)  # new entry number of a new row
    for t in range(B):
        new_of[new_pos[t]] = t
    # the most proposals a row can hold (its list, n_repair per dead one, reverse edges)
    top_deg = 0
    for u in range(n):
        top_deg = max(top_deg, indptr[u + 1] - indptr[u])
    top_rev = 0
    for q in range(n2):
        top_rev = max(top_rev, rptr[q + 1] - rptr[q])
    bound = top_deg * (1 + min(max(n_repair, 0), top_deg)) + top_rev + n_links + 1
    size = np.zeros(n2, dtype=np.int64)  # proposals of a changed row; list length of the rest
    grow = np.zeros(n2, dtype=np.bool_)
    old_deg = np.zeros(n2, dtype=np.int64)
    n_scan = (n2 + _SCAN_BLOCK - 1) // _SCAN_BLOCK
    for sb in prange(n_scan):  # blocks of rows: a task per row would cost more than the row
        scratch = np.empty(bound, dtype=np.int64)
        for q in range(sb * _SCAN_BLOCK, min((sb + 1) * _SCAN_BLOCK, n2)):
            mq, gq = _gather_row(
                q,
                scratch,
                old_of,
                indptr,
                indices,
                dead,
                mapping,
                links,
                new_of,
                rptr,
                rsrc,
                n_repair,
            )
            size[q] = mq
            grow[q] = gq
            uq = old_of[q]
            if uq >= 0:
                old_deg[q] = indptr[uq + 1] - indptr[uq]
    width = max_degree
    for q in range(n2):
        width = max(width, old_deg[q])
    # the changed rows, numbered
    n_t = 0
    for q in range(n2):
        if grow[q]:
            n_t += 1
    touched = np.empty(n_t, dtype=np.int64)
    tpos = np.full(n2, -1, dtype=np.int64)
    maxm = 1
    i = 0
    for q in range(n2):
        if grow[q]:
            touched[i] = q
            tpos[q] = i
            maxm = max(maxm, size[q])
            i += 1
    # 4. the changed rows' lists, in parallel over blocks of rows
    tout = np.empty((n_t, width), dtype=np.int32)
    tdeg = np.zeros(n_t, dtype=np.int64)
    n_blocks = (n_t + _ROW_BLOCK - 1) // _ROW_BLOCK
    for bl in prange(n_blocks):
        c = np.empty(maxm, dtype=np.int64)
        for i2 in range(bl * _ROW_BLOCK, min((bl + 1) * _ROW_BLOCK, n_t)):
            q2 = touched[i2]
            m2, _ = _gather_row(
                q2, c, old_of, indptr, indices, dead, mapping, links, new_of, rptr, rsrc, n_repair
            )
            cap2 = max(max_degree, old_deg[q2])
            tdeg[i2] = _row_list(X, new_rows, q2, c, m2, cap2, max_degree, tout[i2])
    # 5. every new entry reachable (serial, in entry order)
    indeg = np.zeros(n2, dtype=np.int64)
    for i2 in range(n_t):
        for t in range(tdeg[i2]):
            v = tout[i2, t]
            if old_of[v] < 0:
                indeg[v] += 1
    for t in range(B):
        rt = new_pos[t]
        p = links[t, 0]
        if indeg[rt] > 0 or p < 0:
            continue
        ip = tpos[p]  # p holds the reverse proposal p -> rt: a changed row
        xp = X[new_rows[p]]
        worst = -1
        ws = np.inf
        for u in range(tdeg[ip]):
            v = tout[ip, u]
            if old_of[v] < 0 and indeg[v] <= 1:
                continue  # its only way in
            s = link_dot(X[new_rows[v]], xp)
            if worst < 0 or s < ws or (s == ws and v > tout[ip, worst]):
                ws = s
                worst = u
        if worst < 0:
            if tdeg[ip] < width:
                worst = tdeg[ip]
                tdeg[ip] += 1
            else:
                continue
        else:
            old = tout[ip, worst]
            if old_of[old] < 0:
                indeg[old] -= 1
        tout[ip, worst] = rt
        indeg[rt] += 1
    # 6. the new CSR: changed rows from their lists, the others renumbered in place
    new_ptr = np.zeros(n2 + 1, dtype=np.int64)
    for q in range(n2):
        new_ptr[q + 1] = new_ptr[q] + (tdeg[tpos[q]] if grow[q] else size[q])
    new_idx = np.empty(new_ptr[n2], dtype=np.int32)
    for sb in prange(n_scan):
        for q in range(sb * _SCAN_BLOCK, min((sb + 1) * _SCAN_BLOCK, n2)):
            if grow[q]:
                ip2 = tpos[q]
                for z in range(tdeg[ip2]):
                    new_idx[new_ptr[q] + z] = tout[ip2, z]
            else:
                _copy_live(old_of[q], indptr, indices, dead, mapping, new_idx, new_ptr[q])
    return new_rows, new_ptr, new_idx, mapping

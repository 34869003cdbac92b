"""Kernels that turn a k-NN search graph into the NN-descent index's search structure.

Run once per build, off the query path, on the graph over the snapshot's rows
(CSR ``indptr``/``indices``) and their vectors ``X``:
:func:`graph_components` (union-find), :func:`component_representatives`
(one row per component), :func:`bridge_edges` (a maximum spanning tree over
the representatives) with :func:`add_edges`, and :func:`cover_entries` (the
entry layer: representatives, then a greedy hop cover). The object layer
(:func:`dreamjit.index.structure.search_structure`) strings them together.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = [
    "add_edges",
    "bridge_edges",
    "component_representatives",
    "cover_entries",
    "graph_components",
    "remap_entries",
]


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


@kernel
def remap_entries(entries, mapping, indptr, indices, n_rows):
    """The entry layer after :func:`~dreamjit.kernels.graph.graph_update` renumbered the rows.

    A kept entry takes its new number (``mapping``, -1 = dropped); a dropped
    one is replaced by its first kept out-neighbour that is no entry yet (so
    its part of the graph keeps a way in), or left out when it has none.

    Parameters
    ----------
    entries : (E,) int64
        Old rows of the entry layer.
    mapping : (n,) int64
        New row of each old row (-1: dropped).
    indptr, indices
        The old graph (CSR).
    n_rows : int
        Rows of the new graph.

    Returns
    -------
    (E',) int64
        The new entries, ascending and unique.
    """
    taken = np.zeros(n_rows, dtype=np.bool_)
    out = np.empty(entries.shape[0], dtype=np.int64)
    m = 0
    for t in range(entries.shape[0]):
        r = mapping[entries[t]]
        if r >= 0 and not taken[r]:
            taken[r] = True
            out[m] = r
            m += 1
    for t in range(entries.shape[0]):
        e = entries[t]
        if mapping[e] >= 0:
            continue
        for f in range(indptr[e], indptr[e + 1]):
            r = mapping[indices[f]]
            if r >= 0 and not taken[r]:
                taken[r] = True
                out[m] = r
                m += 1
                break
    return np.sort(out[:m])

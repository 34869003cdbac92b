"""The NN-descent index's search structure: components, representatives, cover, bridges, walk.

Kernels against plain-Python references (scipy's ``connected_components`` and
``minimum_spanning_tree``, BFS), on small graphs with several components,
isolated vertices and tombstoned rows; then the structure inside the index:
every component reachable, tombstoned representatives still routing.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from dreamjit.index import ExactIndex, NNDescentIndex
from dreamjit.index.structure import ENTRY_SHARE, search_structure
from dreamjit.kernels.entry_layer import (
    add_edges,
    bridge_edges,
    component_representatives,
    cover_entries,
    graph_components,
)
from dreamjit.kernels.graph import _nav_scores, ann_search, knn_to_csr, quantize_block


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def csr_of(n, edges):
    """CSR (int64 indptr, int32 indices) of directed ``edges`` [(u, v)], rows in given order."""
    rows = [[] for _ in range(n)]
    for u, v in edges:
        rows[u].append(v)
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.array([v for r in rows for v in r], np.int32)
    return indptr, indices


def scipy_labels(indptr, indices):
    n = indptr.shape[0] - 1
    A = sp.csr_matrix((np.ones(indices.shape[0]), indices, indptr), shape=(n, n))
    return connected_components(A, directed=True, connection="weak")


def random_graph(rng, n_blocks, block, p_edge=0.3, n_isolated=3):
    """Directed random graphs inside ``n_blocks`` disjoint blocks, plus isolated vertices,
    vertices shuffled (so components interleave in row order)."""
    n = n_blocks * block + n_isolated
    perm = rng.permutation(n)
    edges = []
    for b in range(n_blocks):
        members = perm[b * block : (b + 1) * block]
        for i, u in enumerate(members):
            edges.append((u, members[(i + 1) % block]))  # a cycle keeps the block connected
            for v in members:
                if u != v and rng.random() < p_edge / 4:
                    edges.append((u, v))
    return n, edges


def clustered(rng, n_clusters, size, d=16, spread=0.05):
    centres = unit(rng.normal(size=(n_clusters, d)))
    X = np.repeat(centres, size, axis=0) + spread * rng.normal(size=(n_clusters * size, d))
    return unit(X), np.repeat(np.arange(n_clusters), size)


def exact_knn_csr(X, k, max_degree):
    S = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(S, -np.inf)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return knn_to_csr(nbrs.astype(np.int32), 1.0 - np.take_along_axis(S, nbrs, axis=1), max_degree)


# ----------------------------------------------------------------- components


@pytest.mark.parametrize("seed", range(6))
def test_components_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n, edges = random_graph(
        rng,
        n_blocks=int(rng.integers(1, 7)),
        block=int(rng.integers(2, 9)),
        n_isolated=int(rng.integers(0, 4)),
    )
    indptr, indices = csr_of(n, edges)
    labels, count = graph_components(indptr, indices)
    n_ref, ref = scipy_labels(indptr, indices)
    assert count == n_ref
    # same partition, numbered by lowest member
    for c in range(count):
        members = np.flatnonzero(labels == c)
        assert np.unique(ref[members]).size == 1
        assert np.count_nonzero(ref == ref[members[0]]) == members.size
    firsts = [np.flatnonzero(labels == c)[0] for c in range(count)]
    assert firsts == sorted(firsts)


def test_components_edge_cases():
    labels, count = graph_components(np.zeros(1, np.int64), np.zeros(0, np.int32))
    assert count == 0 and labels.shape == (0,)
    indptr, indices = csr_of(4, [])  # all isolated
    labels, count = graph_components(indptr, indices)
    assert count == 4 and labels.tolist() == [0, 1, 2, 3]
    indptr, indices = csr_of(5, [(4, 0), (2, 2)])  # a reverse-only link and a self loop
    labels, count = graph_components(indptr, indices)
    assert count == 4 and labels[4] == labels[0] == 0 and labels[2] == 2


# ------------------------------------------------------------ representatives


def reference_reps(X, labels, count, dead):
    reps = np.full(count, -1, np.int64)
    for c in range(count):
        members = [u for u in range(len(labels)) if labels[u] == c and not dead[u]]
        if not members:
            continue
        mean = X[members].astype(np.float64).sum(axis=0)
        scores = [float(np.dot(X[u].astype(np.float64), mean)) for u in members]
        best = max(scores)
        reps[c] = min(u for u, s in zip(members, scores) if s == best)
    return reps


@pytest.mark.parametrize("seed", range(4))
def test_representatives_match_reference(seed):
    rng = np.random.default_rng(seed)
    n, edges = random_graph(rng, n_blocks=5, block=6, n_isolated=2)
    indptr, indices = csr_of(n, edges)
    labels, count = graph_components(indptr, indices)
    X = unit(rng.normal(size=(n, 8)))
    dead = rng.random(n) < 0.3
    comp0 = np.flatnonzero(labels == labels[0])
    dead[comp0] = True  # a component with every row tombstoned gets no representative
    reps = component_representatives(X, labels, count, dead)
    ref = reference_reps(X, labels, count, dead)
    np.testing.assert_array_equal(reps, ref)
    assert reps[labels[0]] == -1
    assert all(reps[c] < 0 or (labels[reps[c]] == c and not dead[reps[c]]) for c in range(count))


# ------------------------------------------------------------------ cover


def hop_distances(indptr, indices, sources):
    dist = np.full(indptr.shape[0] - 1, np.inf)
    queue = deque()
    for s in sources:
        dist[s] = 0
        queue.append(s)
    while queue:
        u = queue.popleft()
        for v in indices[indptr[u] : indptr[u + 1]]:
            if dist[v] == np.inf:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


@pytest.mark.parametrize("hops", [0, 1, 2, 3])
def test_cover_reaches_every_live_row(hops):
    rng = np.random.default_rng(hops)
    n, edges = random_graph(rng, n_blocks=6, block=12, n_isolated=4)
    edges += [(v, u) for u, v in edges]  # symmetric, as the search graph
    indptr, indices = csr_of(n, edges)
    labels, count = graph_components(indptr, indices)
    dead = rng.random(n) < 0.2
    reps = component_representatives(unit(rng.normal(size=(n, 4))), labels, count, dead)
    order = rng.permutation(n).astype(np.int64)
    entries, complete = cover_entries(indptr, indices, dead, reps, order, hops, n)
    assert complete
    assert not dead[entries].any() and np.unique(entries).size == entries.size
    assert set(reps[reps >= 0].tolist()) <= set(entries.tolist())  # every representative
    dist = hop_distances(indptr, indices, entries)
    assert (dist[~dead] <= hops).all()
    # greedy: no entry of the cover (beyond the representatives) lies within hops of an earlier one
    firsts = np.count_nonzero(reps >= 0)
    for t in range(firsts, entries.size):
        assert hop_distances(indptr, indices, entries[:t])[entries[t]] > hops


def test_cover_limit():
    indptr, indices = csr_of(50, [])  # 50 isolated rows need 50 entries
    order = np.arange(50, dtype=np.int64)
    entries, complete = cover_entries(
        indptr, indices, np.zeros(50, bool), np.empty(0, np.int64), order, 2, 10
    )
    assert entries.tolist() == list(range(10)) and not complete


# ---------------------------------------------------------------- bridges


@pytest.mark.parametrize("seed", range(4))
def test_bridges_are_a_maximum_spanning_tree(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 12))
    X = unit(rng.normal(size=(40, 8)))
    reps = np.sort(rng.choice(40, c, replace=False)).astype(np.int64)
    reps_with_gap = np.concatenate([reps[:1], [-1], reps[1:]])  # -1: a component without a rep
    src, dst = bridge_edges(X, reps_with_gap)
    assert src.shape[0] == 2 * (c - 1)
    pairs = {(min(u, v), max(u, v)) for u, v in zip(src, dst)}
    assert len(pairs) == c - 1 and set(src.tolist()) <= set(reps.tolist())
    S = X[reps].astype(np.float64) @ X[reps].astype(np.float64).T
    # reference: scipy's minimum spanning tree on 2 - similarity (all weights > 0)
    ref = minimum_spanning_tree(sp.csr_matrix(np.triu(2.0 - S, 1))).sum()
    pos = {r: i for i, r in enumerate(reps)}
    got = sum(2.0 - S[pos[u], pos[v]] for u, v in pairs)
    assert got == pytest.approx(ref, rel=1e-9)
    # connected: the links join every representative
    tree = csr_of(40, list(zip(src, dst)))
    labels, _ = graph_components(*tree)
    assert np.unique(labels[reps]).size == 1
    assert bridge_edges(X, reps[:1])[0].size == 0


def test_add_edges_union_without_duplicates():
    indptr, indices = csr_of(5, [(0, 1), (0, 2), (3, 4)])
    src = np.array([0, 0, 2, 4, 4, 1], np.int64)
    dst = np.array([2, 3, 2, 0, 0, 1], np.int64)  # a duplicate, self loops, a repeat
    p, i = add_edges(indptr, indices, src, dst)
    rows = [i[p[u] : p[u + 1]].tolist() for u in range(5)]
    assert rows == [[1, 2, 3], [], [], [4], [0]]
    assert p.dtype == np.int64 and i.dtype == np.int32


# ------------------------------------------------------------ entry block


def test_quantized_scan_orders_like_float():
    from dreamjit.kernels.graph import _quantize_query, _scan_block

    rng = np.random.default_rng(3)
    V = unit(rng.normal(size=(500, 33)))  # odd d: the scan's tail
    B = quantize_block(V)
    assert B.dtype == np.int8 and B.shape == (33, 500) and B.flags.c_contiguous
    assert np.abs(B).max() == 127
    q = unit(rng.normal(size=(1, 33)))[0]
    q16 = np.empty(33, np.int16)
    _quantize_query(q, q16)
    out = np.empty(500, np.int32)
    _scan_block(B, q16, out)
    np.testing.assert_array_equal(out, B.T.astype(np.int64) @ q16.astype(np.int64))
    exact = V.astype(np.float64) @ q
    assert np.corrcoef(exact, out)[0, 1] > 0.999
    assert len(set(np.argsort(-exact)[:5]) & set(np.argsort(-out)[:8])) == 5


def test_navigation_scores_within_tolerance():
    """The walk's reassociated float32 dots stay within 1e-5 of the float64 dot."""
    rng = np.random.default_rng(4)
    X = unit(rng.normal(size=(300, 64)))
    q = unit(rng.normal(size=(1, 64)))[0]
    slots = rng.permutation(300).astype(np.int64)
    out = np.empty(300, np.float32)
    _nav_scores(X, slots, 300, q, out)
    np.testing.assert_allclose(out, X[slots].astype(np.float64) @ q, rtol=0, atol=1e-5)


# ------------------------------------------------- the structure in the index


def test_search_structure_components_all_reachable(caplog):
    rng = np.random.default_rng(7)
    X, labels_true = clustered(rng, n_clusters=12, size=30)
    indptr, indices = exact_knn_csr(X, k=8, max_degree=12)  # k < cluster size: 12 components
    assert scipy_labels(indptr, indices)[0] == 12
    with caplog.at_level(logging.WARNING, logger="dreamjit"):
        st = search_structure(X, indptr, indices, seed=0, max_entries=20)
    assert "12 connected components" in caplog.text and "11 bridging edges" in caplog.text
    assert st["n_components"] == 12 and st["n_bridges"] == 11
    assert scipy_labels(st["indptr"], st["indices"])[0] == 1  # bridged: one component
    assert np.unique(labels_true[st["entries"]]).size == 12  # an entry in every cluster
    assert st["entries"].size == 20 and (np.diff(st["entries"]) > 0).all()
    assert st["block"].shape == (16, 20) and st["block"].dtype == np.int8
    # the default cap: 6 sqrt(n), at most one row in ENTRY_SHARE
    assert search_structure(X, indptr, indices)["entries"].size == X.shape[0] // ENTRY_SHARE


def test_search_structure_caps_and_warns(caplog):
    rng = np.random.default_rng(8)
    X, _ = clustered(rng, n_clusters=20, size=8)  # 160 rows: at most 20 entries
    indptr, indices = exact_knn_csr(X, k=4, max_degree=6)
    labels, n_comp = graph_components(indptr, indices)
    assert n_comp >= 10
    with caplog.at_level(logging.WARNING, logger="dreamjit"):
        st = search_structure(X, indptr, indices, seed=0, max_entries=5)
    # the first 5 representatives; the bridges reach the other components
    assert st["entries"].size == 5 and np.unique(labels[st["entries"]]).size == 5
    assert "the first 5 (entry layer full)" in caplog.text
    assert scipy_labels(st["indptr"], st["indices"])[0] == 1
    dist = hop_distances(st["indptr"], st["indices"], st["entries"])
    assert np.isfinite(dist).all() and st["covered"] == (dist.max() <= st["hops"])


def test_entry_layer_grows_to_hold_every_component():
    """More components than the default 6 sqrt(n) entries: all their representatives enter."""
    rng = np.random.default_rng(11)
    n_comp, size = 1500, 20  # n = 30000: default cap 1040, byte-bound cap 3750
    n = n_comp * size
    edges = []
    for c in range(n_comp):
        base = c * size
        edges += [(base + i, base + (i + 1) % size) for i in range(size)]
        edges += [(base + (i + 1) % size, base + i) for i in range(size)]
    indptr, indices = csr_of(n, edges)
    X = unit(rng.normal(size=(n, 8)))
    st = search_structure(X, indptr, indices, seed=0)
    # cycles of 20: a representative is up to 10 hops from its rows, beyond MAX_HOPS = 8
    assert st["n_components"] == n_comp and not st["covered"] and st["hops"] == 8
    labels = np.repeat(np.arange(n_comp), size)
    assert np.unique(labels[st["entries"]]).size == n_comp
    assert st["entries"].size == n_comp  # no room left for the cover beyond the components


def fake_store(X):
    class Store:
        pass

    s = Store()
    s.embeddings = X.copy()
    s.alive = np.ones(X.shape[0], bool)
    s.ids = np.arange(X.shape[0], dtype=np.int64)
    return s


def install(store, X, st, **kw):
    ann = NNDescentIndex(store, builder="thread", **kw)
    ann.from_graph_arrays(
        {
            "ids": store.ids[: X.shape[0]].copy(),
            "indptr": st["indptr"],
            "indices": st["indices"],
            "entries": st["entries"],
            "block": st["block"],
            "n_components": st["n_components"],
        }
    )
    return ann


def test_walk_finds_every_cluster_and_survives_dead_representatives():
    rng = np.random.default_rng(9)
    X, lab = clustered(rng, n_clusters=15, size=25)
    indptr, indices = exact_knn_csr(X, k=6, max_degree=9)
    st = search_structure(X, indptr, indices, seed=1)
    store = fake_store(X)
    ann = install(store, X, st, min_ef=12, epsilon=0.0, n_seeds=2)
    exact = ExactIndex(store)
    Q = unit(X[::25] + 0.02 * rng.normal(size=(15, X.shape[1])))  # one query per cluster
    for q in Q:
        got, want = ann.search(q, 10)[0], exact.search(q, 10)[0]
        np.testing.assert_array_equal(np.sort(got), np.sort(want))
    # tombstone every entry row: the walk still starts from them (their vectors are in
    # the block) and goes through them, but never returns them
    gone = st["entries"]
    store.alive[gone] = False
    ann.remove(gone)
    assert ann.ready and ann.n_tombstones == gone.size
    for q in Q:
        got, sc = ann.search(q, 10)
        want, wsc = exact.search(q, 10)
        assert not np.isin(got, gone).any()
        np.testing.assert_array_equal(np.sort(got), np.sort(want))


def test_walk_with_rows_not_slots():
    """Graph rows map to scattered store slots (holes): the walk reads the right rows."""
    rng = np.random.default_rng(10)
    X, _ = clustered(rng, n_clusters=6, size=20, d=8)
    n = X.shape[0]
    slots = np.sort(rng.choice(3 * n, n, replace=False)).astype(np.int64)
    E = np.zeros((3 * n, 8), np.float32)
    E[slots] = X
    indptr, indices = exact_knn_csr(X, k=5, max_degree=8)
    st = search_structure(X, indptr, indices, seed=0)
    alive = np.zeros(3 * n, bool)
    alive[slots] = True
    dead = np.zeros(n, bool)
    for q in unit(X[::20] + 0.01):
        graph = (slots, st["indptr"], st["indices"], dead, st["entries"], st["block"])
        got, sc = ann_search(E, graph, alive, np.empty(0, np.int64), q, 5, 20, 0.0, 4)
        want = slots[np.argsort(-(X.astype(np.float64) @ q), kind="stable")[:5]]
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(sc, E[got].astype(np.float64) @ q, rtol=0, atol=1e-6)

"""Incremental maintenance of the NN-descent search graph, and its persistence.

The link/repair kernels (:func:`~dreamjit.kernels.graph.select_links`,
:func:`~dreamjit.kernels.graph.graph_update`,
:func:`~dreamjit.kernels.entry_layer.remap_entries`) are compared exactly with
slow, obviously correct references written with Python lists and sets. The
graph saved with a pool is loaded without a rebuild, refused when damaged,
ignored (rebuilt) when its settings differ; format 2 files still load.
Recall after churn against a fresh build is in ``tests/test_ann_clusters.py``.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import dreamjit as dj
import dreamjit.index.nndescent as nnd
from dreamjit import IndexCorruptedError, PoolConfig, Query, RetrievalWeights
from dreamjit.index import ExactIndex, NNDescentIndex
from dreamjit.index.structure import search_structure
from dreamjit.kernels.entry_layer import remap_entries
from dreamjit.kernels.graph import graph_update, knn_to_csr, link_dot, select_links

from invariants import assert_invariants
from standins import rewrite

SIM_ONLY = RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng, n, d=16, clusters=12, noise=0.5):
    centres = rng.normal(size=(clusters, d))
    return unit(centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d)))


def knn_graph(X, k=8, max_degree=12):
    """Exact k-NN CSR of the rows of ``X`` (ties to the lower row)."""
    S = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(S, -np.inf)
    nb = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return knn_to_csr(nb.astype(np.int64), 1.0 - np.take_along_axis(S, nb, 1), max_degree)


# ----------------------------------------------------------------- references
def ref_link_dot(x, y):
    """graph.link_dot: 8 lanes of float64 sums (lane j % 8, the tail in lane 0), fixed tree."""
    x = [float(np.float32(a)) for a in np.asarray(x).tolist()]
    y = [float(np.float32(b)) for b in np.asarray(y).tolist()]
    s = [0.0] * 8
    j = 0
    while j + 8 <= len(x):
        for lane in range(8):
            s[lane] += x[j + lane] * y[j + lane]
        j += 8
    while j < len(x):
        s[0] += x[j] * y[j]
        j += 1
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def ref_select(X, slot, cand, n_links):
    c = sorted({int(v) for v in cand if v >= 0 and v != slot})
    sc = {v: ref_link_dot(X[v], X[slot]) for v in c}
    order = sorted(c, key=lambda v: (-sc[v], v))
    out = []
    for v in order:
        if len(out) == n_links:
            break
        if all(ref_link_dot(X[v], X[u]) <= sc[v] for u in out):
            out.append(v)
    for v in order:
        if len(out) == n_links:
            break
        if v not in out:
            out.append(v)
    return out


def ref_update(X, rows, indptr, indices, dead, new_slots, cand, n_links, max_degree, n_repair):
    n = len(rows)
    nbrs = [list(indices[indptr[r] : indptr[r + 1]]) for r in range(n)]
    kept = [r for r in range(n) if not dead[r]]
    new_rows = sorted([int(rows[r]) for r in kept] + [int(s) for s in new_slots])
    row_of = {s: i for i, s in enumerate(new_rows)}
    mapping = [-1] * n
    for r in kept:
        mapping[r] = row_of[int(rows[r])]
    n2 = len(new_rows)
    proposals = [[] for _ in range(n2)]
    grew = [False] * n2
    old_deg = [0] * n2
    for u in kept:
        ru = mapping[u]
        old_deg[ru] = len(nbrs[u])
        for v in nbrs[u]:
            if not dead[v]:
                proposals[ru].append(mapping[v])
            else:  # repair: the dead neighbour's first n_repair live out-neighbours
                live = [mapping[w] for w in nbrs[v] if mapping[w] >= 0][:n_repair]
                proposals[ru].extend(live)
                grew[ru] = grew[ru] or bool(live)
    links = []
    for t, s in enumerate(new_slots):
        chosen = [row_of[v] for v in ref_select(X, int(s), cand[t], n_links)]
        links.append(chosen)
        rt = row_of[int(s)]
        grew[rt] = True
        for p in chosen:
            proposals[rt].append(p)
            proposals[p].append(rt)
            grew[p] = True
    out = []
    for q in range(n2):
        if not grew[q]:
            out.append(list(proposals[q]))
            continue
        c = sorted({v for v in proposals[q] if v != q})
        if len(c) <= max(max_degree, old_deg[q]):
            out.append(c)
            continue
        xq = X[new_rows[q]]
        out.append(sorted(c, key=lambda v: (-ref_link_dot(X[new_rows[v]], xq), v))[:max_degree])
    is_new = set(row_of[int(s)] for s in new_slots)
    indeg = {v: 0 for v in is_new}
    for q in range(n2):
        for v in out[q]:
            if v in is_new:
                indeg[v] += 1
    width = max([max_degree] + old_deg)
    for t, s in enumerate(new_slots):
        rt = row_of[int(s)]
        if indeg[rt] > 0 or not links[t]:
            continue
        p = links[t][0]
        xp = X[new_rows[p]]
        options = [
            (ref_link_dot(X[new_rows[v]], xp), -v, u)
            for u, v in enumerate(out[p])
            if not (v in is_new and indeg[v] <= 1)
        ]
        if options:
            u = min(options)[2]
            old = out[p][u]
            if old in is_new:
                indeg[old] -= 1
            out[p][u] = rt
        elif len(out[p]) < width:
            out[p].append(rt)
        else:
            continue
        indeg[rt] += 1
    ptr = np.cumsum([0] + [len(o) for o in out])
    idx = np.array([v for o in out for v in o], dtype=np.int32)
    return np.array(new_rows, np.int64), ptr, idx, np.array(mapping, np.int64)


def ref_remap(entries, mapping, indptr, indices):
    taken, out = set(), []
    for e in entries:
        if mapping[e] >= 0 and mapping[e] not in taken:
            taken.add(int(mapping[e]))
            out.append(int(mapping[e]))
    for e in entries:
        if mapping[e] >= 0:
            continue
        for f in indices[indptr[e] : indptr[e + 1]]:
            r = int(mapping[f])
            if r >= 0 and r not in taken:
                taken.add(r)
                out.append(r)
                break
    return sorted(out)


# ----------------------------------------------------------------- kernels vs references
@pytest.mark.parametrize("d", [1, 7, 8, 13, 64])
def test_link_dot_matches_reference(d):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(6, d)).astype(np.float32)
    X[5] = 0.0  # a zero row
    for x in X:
        for y in X:
            got = link_dot(x, y)
            assert got == ref_link_dot(x, y)
            np.testing.assert_allclose(got, float(x.astype(np.float64) @ y), rtol=1e-12, atol=1e-12)
    view = np.asfortranarray(X)[1]  # a strided (non-contiguous) row
    assert link_dot(view, X[2]) == ref_link_dot(X[1], X[2])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_select_links_matches_reference(seed):
    rng = np.random.default_rng(seed)
    X = clustered(rng, 80)
    if seed == 3:  # ties: duplicated rows
        X[40:] = X[:40]
    for slot in (0, 17, 79):
        cand = rng.integers(-1, 80, size=30)
        for n_links in (1, 5, 40):
            got = select_links(X, slot, cand, n_links).tolist()
            assert got == ref_select(X, slot, cand, n_links)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("n_repair", [2, 1000])
def test_graph_update_matches_reference(seed, n_repair):
    rng = np.random.default_rng(seed)
    cap, n = 260, 200
    X = np.zeros((cap, 16), np.float32)
    X[:] = clustered(rng, cap)
    if seed == 4:
        X[100:140] = X[60:100]  # ties
    rows = np.sort(rng.choice(cap, n, replace=False)).astype(np.int64)
    indptr, indices = knn_graph(X[rows], k=6, max_degree=9)
    dead = np.zeros(n, bool)
    dead[rng.choice(n, [0, 20, 60, 5, 30][seed], replace=False)] = True
    free = np.setdiff1d(np.arange(cap), rows[~dead])
    new = np.sort(rng.choice(free, [10, 0, 25, 40, 15][seed], replace=False)).astype(np.int64)
    cand = rng.choice(rows[~dead], size=(new.size, 12)).astype(np.int64)
    cand[:, -2:] = -1
    if new.size:
        cand[:, 0] = new[::-1]  # new entries propose each other too
    got = graph_update(X, rows, indptr, indices, dead, new, cand, 5, 9, n_repair)
    want = ref_update(X, rows, indptr, indices, dead, new, cand, 5, 9, n_repair)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    new_rows, ptr, idx, mapping = got
    assert (np.diff(new_rows) > 0).all() and np.isin(new, new_rows).all()
    # every new entry has a way in
    pos = np.searchsorted(new_rows, new)
    assert np.isin(pos, idx).all()
    entries = np.sort(rng.choice(n, 25, replace=False)).astype(np.int64)
    got_e = remap_entries(entries, mapping, indptr, indices, new_rows.size)
    assert got_e.tolist() == ref_remap(entries, mapping, indptr, indices)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graph_update_reusing_dead_slots_matches_reference(seed):
    """A pool at its budget: the evicted rows' slots come back as the new entries, so the
    row set (and every untouched row's numbering) stays the same."""
    rng = np.random.default_rng(20 + seed)
    n = 300
    X = clustered(rng, n, d=24)
    rows = np.arange(n, dtype=np.int64)
    indptr, indices = knn_graph(X, k=7, max_degree=10)
    dead = np.zeros(n, bool)
    gone = rng.choice(n, [30, 3, 90][seed], replace=False)
    dead[gone] = True
    X[gone] = clustered(rng, gone.size, d=24)  # the new entries written into those slots
    new = np.sort(gone).astype(np.int64)
    walk = rng.choice(rows, size=(new.size, 14)).astype(np.int64)
    cand = np.concatenate([walk, np.tile(new[::-1][:6], (new.size, 1))], axis=1)
    n_repair = [3, 1000, 1][seed]
    got = graph_update(X, rows, indptr, indices, dead, new, cand, 6, 10, n_repair)
    want = ref_update(X, rows, indptr, indices, dead, new, cand, 6, 10, n_repair)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got[0], rows)
    assert (got[3][~dead] == rows[~dead]).all() and (got[3][dead] == -1).all()
    # the same call again gives the same graph (threads do not change it)
    again = graph_update(X, rows, indptr, indices, dead, new, cand, 6, 10, n_repair)
    for g, w in zip(got, again):
        np.testing.assert_array_equal(g, w)


def test_graph_update_edge_cases():
    rng = np.random.default_rng(5)
    X = clustered(rng, 40)
    rows = np.arange(30, dtype=np.int64)
    indptr, indices = knn_graph(X[:30], k=4, max_degree=6)
    # nothing to do: the same graph
    out = graph_update(
        X, rows, indptr, indices, np.zeros(30, bool), rows[:0], np.empty((0, 4), np.int64), 4, 6, 4
    )
    np.testing.assert_array_equal(out[0], rows)
    np.testing.assert_array_equal(out[1], indptr)
    np.testing.assert_array_equal(out[2], indices)
    # every row dead, new ones without candidates
    new = np.arange(30, 40, dtype=np.int64)
    out = graph_update(
        X, rows, indptr, indices, np.ones(30, bool), new, np.full((10, 4), -1, np.int64), 4, 6, 4
    )
    np.testing.assert_array_equal(out[0], new)
    assert out[2].size == 0 and (out[3] == -1).all()


# ----------------------------------------------------------------- the index: churn in place
class Store:
    def __init__(self, X, capacity):
        self.embeddings = np.zeros((capacity, X.shape[1]), np.float32)
        self.embeddings[: X.shape[0]] = X
        self.alive = np.zeros(capacity, bool)
        self.alive[: X.shape[0]] = True
        self.ids = np.full(capacity, -1, np.int64)
        self.ids[: X.shape[0]] = np.arange(X.shape[0])


def adopt_exact_graph(ann, store):
    """Give ``ann`` an exact k-NN graph of the live rows (through the public import)."""
    slots = np.flatnonzero(store.alive)
    X = store.embeddings[slots]
    indptr, indices = knn_graph(X, k=ann.n_neighbors, max_degree=ann.max_degree)
    st = search_structure(X, indptr, indices, seed=0)
    arrays = {
        "ids": store.ids[slots].copy(),
        "indptr": st["indptr"],
        "indices": st["indices"],
        "entries": st["entries"],
        "block": st["block"],
        "n_components": st["n_components"],
        "settings": ann.settings(),
    }
    ann.from_graph_arrays(arrays)
    assert ann.ready and ann.n_delta == 0
    return arrays


def test_churn_is_linked_and_repaired_in_place():
    rng = np.random.default_rng(6)
    n, cap = 1200, 2000
    X = clustered(rng, 2 * n, d=16, clusters=20)
    store = Store(X[:n], cap)
    ann = NNDescentIndex(store, n_neighbors=10, builder="thread", background=False, min_build=64)
    adopt_exact_graph(ann, store)
    exact = ExactIndex(store)
    Q = clustered(np.random.default_rng(7), 100, d=16, clusters=20)
    nxt = n
    for _ in range(6):  # remove 100, add 100, six times: half the pool
        gone = rng.choice(np.flatnonzero(store.alive), 100, replace=False)
        store.alive[gone] = False
        ann.remove(gone)
        assert ann.needs_update() and not ann.needs_rebuild()
        assert not ann.maybe_rebuild()  # linked and repaired here, no build
        assert ann.n_tombstones == 0 and ann.ready
        free = np.flatnonzero(~store.alive)[:100]
        store.embeddings[free] = X[nxt : nxt + 100]
        store.ids[free] = np.arange(nxt, nxt + 100)
        store.alive[free] = True
        nxt += 100
        ann.add(free)
        assert not ann.maybe_rebuild()
        assert ann.n_delta == 0
    assert ann.builds == 0 and ann.linked == 600 and ann.repaired == 600
    g = ann.graph_arrays()
    assert np.array_equal(np.sort(g["ids"]), np.sort(store.ids[store.alive]))
    hits = [np.intersect1d(ann.search(q, 10)[0], exact.search(q, 10)[0]).size for q in Q]
    assert np.mean(hits) / 10 >= 0.95


def test_export_import_round_trip_and_refusals():
    rng = np.random.default_rng(8)
    store = Store(clustered(rng, 400), 512)
    ann = NNDescentIndex(store, n_neighbors=8, builder="thread", min_build=64)
    arrays = adopt_exact_graph(ann, store)
    other = NNDescentIndex(store, n_neighbors=8, builder="thread", min_build=64)
    other.from_graph_arrays(ann.graph_arrays())
    for q in clustered(rng, 20):
        np.testing.assert_array_equal(other.search(q, 7)[0], ann.search(q, 7)[0])
    for key, value in [
        ("indices", arrays["indices"] + 400),
        ("indptr", arrays["indptr"][:-1]),
        ("entries", arrays["entries"][::-1].copy()),
        ("block", arrays["block"][:-1]),
        ("ids", np.zeros_like(arrays["ids"])),
        ("indices", arrays["indices"].astype(np.int64)),
    ]:
        with pytest.raises(IndexCorruptedError, match=f"graph {key}"):
            other.from_graph_arrays({**arrays, key: value})
    with pytest.raises(dj.InvalidParameterError, match="settings"):
        NNDescentIndex(store, n_neighbors=9, builder="thread").from_graph_arrays(arrays)


# ----------------------------------------------------------------- persistence with a pool
def ann_pool(n=600, d=16, seed=9, **cfg):
    """A pool of user embeddings whose NN-descent index holds an exact k-NN graph."""
    V = clustered(np.random.default_rng(seed), n, d=d, clusters=15)
    config = PoolConfig(
        **{
            "memory_budget_mb": None,
            "max_size": 2 * n,
            "embedding_dim": d,
            "use_ann": True,
            "ann_threshold": 10 * n,
            "ann_n_neighbors": 8,
            **cfg,
        }
    )
    pool = dj.DreamPool(config)
    pool.add_batch(
        np.zeros((n, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (n, 1)), embeddings=V
    )
    pool.config = pool.config.replace(ann_threshold=1)
    ann = pool.indexes.make_ann()
    adopt_exact_graph(ann, pool.table.store)
    with pool.lock.write():
        pool.indexes.adopt_ann(ann)
    assert pool.stats()["index"] == "ann"
    return pool, V


@pytest.fixture
def no_builds(monkeypatch):
    """Full builds are recorded, not run (no pynndescent here)."""
    calls = []
    monkeypatch.setattr(
        nnd.NNDescentIndex,
        "rebuild",
        lambda self, block=False, timeout=None: calls.append(self) or True,
    )
    return calls


def test_graph_saved_and_loaded_without_a_rebuild(tmp_path, no_builds):
    pool, V = ann_pool()
    path = pool.save(tmp_path / "p.npz")
    header = dj.io.read_header(path)
    assert header["format_version"] == 4 and header["graph"]["rows"] == len(pool)
    loaded = dj.DreamPool.load(path)
    assert not no_builds, "a loaded graph must not be rebuilt"
    assert loaded.stats()["index"] == "ann" and loaded.indexes.ann.ready
    a, b = pool.indexes.graph_arrays(), loaded.indexes.graph_arrays()
    for key in ("ids", "indptr", "indices", "entries", "block"):
        np.testing.assert_array_equal(a[key], b[key])
    for q in V[::50]:
        h1 = pool.retrieve_soft(Query(embedding=q), k=5, weights=SIM_ONLY)
        h2 = loaded.retrieve_soft(Query(embedding=q), k=5, weights=SIM_ONLY)
        np.testing.assert_array_equal(h1.ids, h2.ids)
    assert_invariants(loaded)


def test_damaged_graph_refused(tmp_path, no_builds):
    pool, _ = ann_pool()
    path = pool.save(tmp_path / "p.npz")

    def bad_index(h, a):
        a["graph_indices"] = a["graph_indices"].copy()
        a["graph_indices"][3] = 10**6

    def unknown_id(h, a):
        a["graph_ids"] = a["graph_ids"].copy()
        a["graph_ids"][-1] = 10**6

    def too_many_edges(h, a):
        h["graph"]["edges"] = h["graph"]["rows"] * 1000

    for edit, match in [
        (bad_index, "graph indices"),
        (unknown_id, "unknown id"),
        (too_many_edges, "edges a row"),
    ]:
        out = rewrite(path, tmp_path / "bad.npz", edit)
        with pytest.raises(IndexCorruptedError, match=match):
            dj.DreamPool.load(out)
    raw = bytearray((tmp_path / "p.npz").read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("graph_indices.npy")
    raw[info.header_offset + 200] ^= 0xFF  # a flipped bit inside the member
    (tmp_path / "flip.npz").write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptedError):
        dj.DreamPool.load(tmp_path / "flip.npz")


def test_graph_with_other_settings_is_rebuilt(tmp_path, no_builds):
    pool, _ = ann_pool()
    path = pool.save(tmp_path / "p.npz")

    def other_settings(h, a):
        h["graph"]["settings"]["n_neighbors"] = 9

    loaded = dj.DreamPool.load(rewrite(path, tmp_path / "o.npz", other_settings))
    assert len(no_builds) == 1 and not loaded.indexes.ann.ready
    assert_invariants(loaded)


def test_format_2_files_still_load(tmp_path, no_builds):
    pool, V = ann_pool()
    path = pool.save(tmp_path / "p.npz")

    def as_v2(h, a):
        h["format_version"] = 2
        del h["graph"]
        for key in [k for k in a if k.startswith("graph_")]:
            del a[key]

    loaded = dj.DreamPool.load(rewrite(path, tmp_path / "v2.npz", as_v2))
    np.testing.assert_array_equal(loaded.ids(), pool.ids())
    assert len(no_builds) == 1  # no graph in the file: built as before
    assert_invariants(loaded)


def test_steady_adds_keep_the_graph_serving(no_builds):
    """1% of the pool per step: every step is linked in place; no step leaves a delta that
    forces exact scans, and no full build is asked for."""
    pool, _ = ann_pool(n=1000, max_size=4000)
    ann = pool.indexes.ann
    rng = np.random.default_rng(10)
    for _ in range(30):
        V = clustered(rng, 10, d=16, clusters=15)
        pool.add_batch(
            np.zeros((10, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (10, 1)), embeddings=V
        )
        assert pool.stats()["index"] == "ann"
        assert ann.n_delta < nnd.LINK_MIN  # linked once LINK_MIN gathered
        assert ann.n_delta <= nnd.DELTA_EXACT_SHARE * len(ann)
    assert not no_builds and ann.linked >= 256 and ann.graph_info["rows"] >= 1256
    assert_invariants(pool)


def test_evicting_add_makes_one_graph_update(no_builds, monkeypatch):
    """An add at max_size: its evictions and its new entries go into one graph update (the
    new entries take the evicted slots, so the graph keeps its rows)."""
    pool, _ = ann_pool(n=1000, max_size=1000)
    ann = pool.indexes.ann
    calls = []
    real = nnd.graph_update

    def counting(*args):
        calls.append(args[5].shape[0])  # new slots linked
        return real(*args)

    monkeypatch.setattr(nnd, "graph_update", counting)
    rows_before = ann.graph_info["rows"]
    V = clustered(np.random.default_rng(11), 80, d=16, clusters=15)
    ids = pool.add_batch(
        np.zeros((80, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (80, 1)), embeddings=V
    )
    assert len(ids) == 80 and len(pool) == 1000
    assert calls == [80], calls
    assert ann.n_tombstones == 0 and ann.n_delta == 0 and ann.repaired == 80
    assert ann.graph_info["rows"] == rows_before and not no_builds
    assert pool.stats()["index"] == "ann"
    assert_invariants(pool)

"""Exact and NN-descent indexes: brute-force equality, recall, churn, masks, builds."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import dreamjit.index.worker as worker_mod
from dreamjit._storage import ColumnStore, column_spec
from dreamjit.index import ExactIndex, NNDescentIndex
from dreamjit.kernels.graph import knn_to_csr

DIM = 16


class FakeStore:
    """The columns an index reads; ``grow`` replaces the arrays like ColumnStore does."""

    def __init__(self, X, capacity=None, labels=None):
        n, d = X.shape
        cap = capacity or n
        self.embeddings = np.zeros((cap, d), np.float32)
        self.embeddings[:n] = X
        self.alive = np.zeros(cap, bool)
        self.alive[:n] = True
        self.ids = np.full(cap, -1, np.int64)
        self.ids[:n] = np.arange(n)
        self.labels = np.full(cap, -1, np.int32)
        if labels is not None:
            self.labels[:n] = labels
        self.capacity = cap
        self.next_id = n

    def grow(self, cap):
        for name in ("embeddings", "alive", "ids", "labels"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)
        self.capacity = cap

    def write(self, slots, X):
        self.embeddings[slots] = X
        self.ids[slots] = np.arange(self.next_id, self.next_id + len(slots))
        self.next_id += len(slots)
        self.alive[slots] = True


def unit(rng, n, d=DIM):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def mixture(n, nq=200, d=64, c=100, seed=0, streams=(1, 2)):
    centres = np.random.default_rng(seed).normal(size=(c, d))

    def draw(m, rng):
        x = centres[rng.integers(0, c, m)] + rng.normal(size=(m, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return (
        draw(n, np.random.default_rng(seed + streams[0])),
        draw(nq, np.random.default_rng(seed + streams[1])),
    )


def brute(store, q, k, mask=None):
    live = store.alive if mask is None else store.alive & mask
    slots = np.flatnonzero(live)
    s = store.embeddings[slots].astype(np.float64) @ q.astype(np.float64)
    order = np.lexsort((slots, -s))[:k]
    return slots[order], s[order].astype(np.float32)


def recall(index, store, Q, k=10, mask=None):
    hits = []
    for q in Q:
        got = index.search(q, k, mask)[0]
        want = brute(store, q, k, mask)[0]
        hits.append(np.intersect1d(got, want).size / max(want.size, 1))
    return float(np.mean(hits))


def brute_build(X, n_neighbors, seed, graph, max_degree, n_jobs):
    """Stand-in for pynndescent in logic tests: the exact k-NN graph."""
    S = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(S, -np.inf)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :n_neighbors]
    dists = 1.0 - np.take_along_axis(S, nbrs, axis=1)
    return knn_to_csr(nbrs.astype(np.int32), dists, max_degree)


@pytest.fixture
def fake_builder(monkeypatch):
    monkeypatch.setattr(worker_mod, "_build_csr", brute_build)


def small_ann(store, **kw):
    kw = {"n_neighbors": 10, "builder": "thread", "min_build": 16, "exact_batch_below": 0, **kw}
    return NNDescentIndex(store, **kw)


# ------------------------------------------------------------------ exact


@pytest.mark.parametrize("k", [1, 5, 40, 200])
def test_exact_matches_brute_force(rng, k):
    store = FakeStore(unit(rng, 150), capacity=256)
    store.alive[rng.choice(150, 30, replace=False)] = False
    index = ExactIndex(store)
    Q = unit(rng, 6)
    for q in Q:
        got = index.search(q, k)
        want = brute(store, q, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)
    si, ss = index.search_batch(Q, k)
    kk = min(k, 120)
    assert si.shape == (6, k) and ss.dtype == np.float32
    for t, q in enumerate(Q):
        np.testing.assert_array_equal(si[t, :kk], index.search(q, k)[0])
        assert (si[t, kk:] == -1).all() and np.isneginf(ss[t, kk:]).all()
    assert len(index) == 120 and index.nbytes == 0 and index.bytes_bound(10**6) == 0


def test_exact_mask_and_empty(rng):
    store = FakeStore(unit(rng, 100), labels=rng.integers(0, 4, 100))
    index = ExactIndex(store)
    q = unit(rng, 1)[0]
    mask = store.labels == 2
    got = index.search(q, 10, mask)
    np.testing.assert_array_equal(got[0], brute(store, q, 10, mask)[0])
    assert (store.labels[got[0]] == 2).all()
    assert index.search(q, 10, np.zeros(100, bool))[0].size == 0
    assert index.search(q, 0)[0].size == 0
    store.alive[:] = False
    assert index.search(q, 3)[0].size == 0 and len(index) == 0
    si, ss = index.search_batch(unit(rng, 2), 3)
    assert (si == -1).all() and np.isneginf(ss).all()


def test_exact_on_column_store(rng):
    store = ColumnStore(column_spec((2, 2, 3), DIM, False), 64)
    store.ensure_capacity(40)
    store.set_embeddings(np.arange(40), unit(rng, 40))
    store.alive[:40] = True
    index = ExactIndex(store)
    q = unit(rng, 1)[0]
    np.testing.assert_array_equal(index.search(q, 7)[0], brute(store, q, 7)[0])
    store.ensure_capacity(60)  # arrays replaced: the index must read them afresh
    store.set_embeddings(np.arange(40, 60), unit(rng, 20))
    store.alive[40:60] = True
    np.testing.assert_array_equal(index.search(q, 7)[0], brute(store, q, 7)[0])


# ------------------------------------------------------- ANN logic (fake builder)


def test_merge_graph_delta_tombstones_exact(rng, fake_builder):
    """With every row a pivot and a huge beam, graph + delta + tombstones == brute force."""
    n = 400
    store = FakeStore(unit(rng, n), capacity=512)
    ann = small_ann(store, n_pivots=n, min_ef=n, epsilon=10.0)
    ann.rebuild(block=True)
    assert ann.ready and not ann.building and ann.n_delta == 0
    gone = rng.choice(n, 60, replace=False)
    store.alive[gone] = False
    ann.remove(gone)
    reused = np.sort(gone[:30])
    new = np.concatenate([reused, np.arange(400, 430)])
    store.write(new, unit(rng, new.size))
    ann.add(new)
    assert ann.n_tombstones == 60 and ann.n_delta == 60 and len(ann) == 400
    exact = ExactIndex(store)
    for q in unit(rng, 20):
        for k in (1, 10, 37):
            got, want = ann.search(q, k), exact.search(q, k)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])  # same float64 dot, same bits
    Q = unit(rng, 5)
    bi, bs = ann.search_batch(Q, 12)
    ei, es = exact.search_batch(Q, 12)
    np.testing.assert_array_equal(bi, ei)
    np.testing.assert_array_equal(bs, es)


def test_nbytes_exact_and_bounded(rng, fake_builder):
    n = 300
    store = FakeStore(unit(rng, n), capacity=600)
    ann = small_ann(store)
    assert ann.nbytes == 0
    ann.rebuild(block=True)
    graph, delta = ann._state
    assert ann.nbytes == sum(a.nbytes for a in graph.arrays) + delta.nbytes
    assert ann.nbytes <= ann.bytes_bound(len(ann))
    for _ in range(6):  # remove 20 and add 25 per step; no rebuild
        live = np.flatnonzero(store.alive)
        gone = rng.choice(live, 20, replace=False)
        store.alive[gone] = False
        ann.remove(gone)
        new = np.flatnonzero(~store.alive)[:25]
        store.write(new, unit(rng, 25))
        ann.add(new)
        assert len(ann) == np.count_nonzero(store.alive)
        assert ann.nbytes <= ann.bytes_bound(len(ann))
        assert ann.bytes_bound(len(ann)) == len(ann) * ann.bytes_bound(1)
    # removing most entries drops the graph: the bound still holds, queries are exact
    live = np.flatnonzero(store.alive)
    store.alive[live[:-40]] = False
    ann.remove(live[:-40])
    assert not ann.ready and ann.nbytes <= ann.bytes_bound(len(ann))
    q = unit(rng, 1)[0]
    np.testing.assert_array_equal(ann.search(q, 10)[0], brute(store, q, 10)[0])


def test_rebuild_thresholds(rng, fake_builder):
    n = 200
    store = FakeStore(unit(rng, n), capacity=400)
    ann = small_ann(store, background=False)
    assert ann.maybe_rebuild() and ann.ready  # first graph
    store.write(np.arange(200, 215), unit(rng, 15))
    ann.add(np.arange(200, 215))
    assert not ann.maybe_rebuild()  # 15 / 200 < 10 %
    store.write(np.arange(215, 225), unit(rng, 10))
    ann.add(np.arange(215, 225))
    assert ann.maybe_rebuild() and ann.n_delta == 0 and len(ann) == 225


def test_swap_reflects_changes_during_build(rng, monkeypatch):
    release = threading.Event()

    def slow_build(*args):
        release.wait(600)
        return brute_build(*args)

    monkeypatch.setattr(worker_mod, "_build_csr", slow_build)
    n = 300
    store = FakeStore(unit(rng, n), capacity=400)
    ann = small_ann(store, n_pivots=n, min_ef=n, epsilon=10.0)
    ann.rebuild(block=False)
    assert ann.building and not ann.ready
    q = unit(rng, 1)[0]
    got = ann.search(q, 10)  # never waits for the build: exact scan
    assert ann.building  # the held build is still running, so the query did not wait for it
    np.testing.assert_array_equal(got[0], brute(store, q, 10)[0])
    gone = np.arange(0, 300, 7)
    store.alive[gone] = False
    ann.remove(gone)
    new = np.concatenate([gone[:10], np.arange(300, 320)])
    store.write(new, unit(rng, new.size))
    ann.add(new)
    release.set()
    assert ann.wait(30) and ann.ready and not ann.building
    assert ann.n_tombstones == gone.size and ann.n_delta == new.size
    assert len(ann) == np.count_nonzero(store.alive)
    for q in unit(rng, 10):
        np.testing.assert_array_equal(ann.search(q, 10)[0], brute(store, q, 10)[0])


def test_store_growth_after_build(rng, fake_builder):
    store = FakeStore(unit(rng, 200))
    ann = small_ann(store)
    ann.rebuild(block=True)
    store.grow(400)
    store.write(np.arange(200, 230), unit(rng, 30))
    ann.add(np.arange(200, 230))
    q = store.embeddings[215].copy()
    assert ann.search(q, 1)[0][0] == 215


def test_label_mask_k_hits(rng, fake_builder):
    n = 2000
    labels = rng.integers(0, 100, n)
    store = FakeStore(unit(rng, n, 32), labels=labels)
    ann = small_ann(store, mask_share=0.05)
    ann.rebuild(block=True)
    Q = unit(rng, 20, 32)
    for cut in (1, 3, 30, 100):  # 1 %, 3 % (exact path), 30 %, 100 % (walk)
        mask = labels < cut
        k = 10
        for q in Q:
            got, _ = ann.search(q, k, mask)
            assert got.size == k and mask[got].all() and store.alive[got].all()
        assert recall(ann, store, Q, k, mask) >= 0.95
    rare = labels == 7
    rare[np.flatnonzero(rare)[3:]] = False  # 3 rows carry the label: all come back
    got, _ = ann.search(Q[0], 10, rare)
    np.testing.assert_array_equal(np.sort(got), np.flatnonzero(rare))
    bi, _ = ann.search_batch(Q, 10, labels < 30)
    assert (bi >= 0).all() and (labels[bi] < 30).all()


def test_dimension_mismatch(rng, fake_builder):
    from dreamjit.errors import DimensionMismatchError

    store = FakeStore(unit(rng, 50))
    for index in (ExactIndex(store), small_ann(store)):
        with pytest.raises(DimensionMismatchError):
            index.search(np.ones(DIM + 1, np.float32), 3)


def test_import_does_not_import_pynndescent():
    code = "import sys, dreamjit; print('pynndescent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------- real pynndescent


@pytest.fixture(scope="module")
def mixture_ann(nndescent_worker):
    X, Q = mixture(4000)
    store = FakeStore(X, capacity=5000)
    ann = NNDescentIndex(store)
    ann.rebuild(block=True)
    return store, ann, Q


@pytest.mark.jit_only
@pytest.mark.ann
def test_recall_digits():
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float64)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    p = np.random.default_rng(0).permutation(x.shape[0])
    store = FakeStore(x[p[300:]])
    ann = NNDescentIndex(store)
    ann.rebuild(block=True)
    assert ann.ready
    assert recall(ann, store, x[p[:300]]) >= 0.99


@pytest.mark.jit_only
@pytest.mark.ann
def test_recall_mixture_and_churn(mixture_ann):
    store, ann, Q = mixture_ann
    assert recall(ann, store, Q) >= 0.95
    rng = np.random.default_rng(5)
    live = np.flatnonzero(store.alive)
    gone = rng.choice(live, int(0.15 * live.size), replace=False)
    store.alive[gone] = False
    ann.remove(gone)
    new = np.flatnonzero(~store.alive)[: gone.size]
    store.write(new, mixture(gone.size, nq=0, streams=(9, 10))[0])
    ann.add(new)
    assert ann.n_delta == gone.size and ann.n_tombstones == gone.size
    assert recall(ann, store, Q) >= 0.95  # before the rebuild
    assert ann.nbytes <= ann.bytes_bound(len(ann))
    assert ann.maybe_rebuild()
    got = ann.search(Q[0], 10)  # answered during (or after) the build, exactly either way
    np.testing.assert_array_equal(np.sort(got[0]), np.sort(brute(store, Q[0], 10)[0]))
    assert ann.wait(120) and ann.n_delta == 0 and ann.n_tombstones == 0
    assert recall(ann, store, Q) >= 0.95  # after it


@pytest.mark.jit_only
@pytest.mark.ann
def test_process_build_first_query_prompt(rng):
    """A query right after a (process) build starts is an exact scan, answered at once."""
    X, Q = mixture(3000, nq=5, seed=1)
    store = FakeStore(X)
    ann = NNDescentIndex(store)
    ann.rebuild(block=False)
    got = ann.search(Q[0], 10)  # no graph yet: an exact scan (a held build proves no waiting above)
    np.testing.assert_array_equal(got[0], brute(store, Q[0], 10)[0])
    assert ann.wait(120) and ann.ready


@pytest.mark.slow
@pytest.mark.ann
def test_recall_mixture_1e5_churn():
    X, Q = mixture(100_000, nq=300)
    store = FakeStore(X)
    ann = NNDescentIndex(store)
    ann.rebuild(block=True)
    assert recall(ann, store, Q) >= 0.95
    rng = np.random.default_rng(5)
    gone = rng.choice(100_000, 15_000, replace=False)
    store.alive[gone] = False
    ann.remove(gone)
    store.write(np.sort(gone), mixture(15_000, nq=0, streams=(9, 10))[0])
    ann.add(gone)
    assert recall(ann, store, Q) >= 0.95
    ann.rebuild(block=True)
    assert recall(ann, store, Q) >= 0.95


def test_pynndescent_private_attributes_exist_in_the_installed_version():
    """``worker.pynndescent_search_graph`` reads two private attributes of pynndescent;
    this pins them to the installed version without paying its compile."""
    import inspect

    import pynndescent

    src = inspect.getsource(pynndescent.NNDescent)
    assert "self._search_graph =" in src and "self._vertex_order =" in src
    assert "prepare" in dict(inspect.getmembers(pynndescent.NNDescent))


@pytest.mark.slow
@pytest.mark.ann
def test_pynndescent_search_graph_reads_a_real_build():
    import pynndescent

    from dreamjit.index.worker import pynndescent_search_graph

    X = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    nnd = pynndescent.NNDescent(X, metric="dot", n_neighbors=10, random_state=0)
    indptr, indices, order = pynndescent_search_graph(nnd)
    assert indptr.shape == (301,) and indptr[-1] == indices.shape[0]
    assert np.array_equal(np.sort(order), np.arange(300))

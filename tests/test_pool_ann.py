"""Pool-level recall of the ANN path, churn through evictions, and no waiting for builds;
memory admission of the index; the build lifecycle (scheduling, timeouts, the worker)."""

import os
import threading
import time

import numpy as np
import pytest

import dreamjit as dj
import dreamjit.index.nndescent as index_mod
import dreamjit.index.worker as worker_mod
from dreamjit import MemoryExceededError, PoolConfig, Query, RetrievalWeights
from dreamjit._indexes import IndexSet
from dreamjit.kernels.graph import knn_to_csr

from invariants import assert_invariants

pytestmark = pytest.mark.ann

TIMEOUT = 300.0  # bound of every wait below: a hang fails the test

# similarity only: the rerank then keeps the index's order
SIM_ONLY = RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def gmm(n, d=64, clusters=100, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return unit(centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d)))


def embedding_pool(V, **cfg):
    n, d = V.shape
    cfg = {
        "memory_budget_mb": None,
        "max_size": n,
        "embedding_dim": d,
        "use_ann": True,
        "ann_threshold": 256,
        "ann_background": True,
        **cfg,
    }
    pool = dj.DreamPool(PoolConfig(**cfg))
    tiny = np.zeros((n, 1, 1, 3), np.float32)
    pool.add_batch(tiny, np.tile([0.0, 1.0, 0.0], (n, 1)), embeddings=V)
    return pool


def pool_recall(pool, queries, k=10):
    """Recall@k of pool.retrieve_soft against exact top-k over the live embeddings."""
    ids = pool.ids()
    E = np.array([pool[i].embedding for i in ids], np.float64)
    hit = 0
    for q in queries:
        s = E @ (q / np.linalg.norm(q))
        want = set(ids[np.argsort(-s, kind="stable")[:k]].tolist())
        got = pool.retrieve_soft(Query(embedding=q), k=k, weights=SIM_ONLY)
        hit += len(want & set(got.ids.tolist()))
    return hit / (k * len(queries))


@pytest.mark.jit_only
@pytest.mark.parametrize(
    ("min_ef", "floor"),
    [
        # a fixed beam of 62 (the default before calibration): recall >= 0.99 throughout
        (62, 0.99),
        # the calibrated beam (the default) is chosen for held-out recall@10 >= 0.97: measured
        # here 0.993 fresh, 0.985 after the churn (beam 10)
        (None, 0.97),
    ],
)
def test_digits_recall_and_churn(min_ef, floor):
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float64)
    X = unit(X - X.mean(0))
    base, extra, queries = X[:1500], X[1500:1725], X[1725:]
    pool = embedding_pool(base, max_size=1500, ann_min_ef=min_ef)
    pool.rebuild_index(block=True)
    assert pool.stats()["index"] == "ann"
    assert pool_recall(pool, queries) >= floor
    assert_invariants(pool)
    # 15% new adds into a full pool: 15% evictions (oldest first)
    tiny = np.zeros((len(extra), 1, 1, 3), np.float32)
    pool.add_batch(tiny, np.tile([0.0, 1.0, 0.0], (len(extra), 1)), embeddings=extra)
    assert len(pool) == 1500 and int(pool.ids()[0]) == len(extra)
    assert pool_recall(pool, queries) >= floor
    pool.rebuild_index(block=True)
    assert pool_recall(pool, queries) >= floor
    assert_invariants(pool)


@pytest.mark.jit_only
def test_queries_never_wait_for_a_build():
    V = gmm(6000, d=32, seed=1)
    pool = embedding_pool(V, ann_threshold=3000)
    assert pool.indexes.ann is not None  # crossing the threshold started a build
    hits = pool.retrieve_soft(Query(embedding=V[0]), k=5, weights=SIM_ONLY)
    assert hits.ids[0] == 0
    # whatever the build's state, the query was answered (exactly, if no graph yet); that it
    # never waits is proven with a held build in test_index.test_swap_reflects_changes_during_build
    pool.rebuild_index(block=True)
    assert pool.stats()["ann_ready"]
    assert_invariants(pool)


@pytest.mark.jit_only
def test_budget_counts_index_bytes():
    V = gmm(4000, d=32, seed=2)
    probe = embedding_pool(V[:10], ann_threshold=100)
    cfg_entry = probe.entry_bytes
    budget_mb = 3000 * cfg_entry / 2**20
    pool = embedding_pool(V, ann_threshold=1000, memory_budget_mb=budget_mb, eviction_threshold=1.0)
    pool.rebuild_index(block=True)
    assert pool.used_bytes() <= pool.config.budget_bytes
    assert pool.stats()["index_bytes"] > 0
    assert pool.used_bytes() == len(pool) * pool.table.store_entry_bytes() + pool.indexes.nbytes
    assert_invariants(pool)


@pytest.mark.slow
def test_gmm_1e5_recall_and_churn():
    V = gmm(115_200, seed=3)  # queries from the same mixture, never stored
    base, extra, queries = V[:100_000], V[100_000:115_000], V[115_000:]
    pool = embedding_pool(base, ann_threshold=5000)
    pool.rebuild_index(block=True)
    assert pool_recall(pool, queries) >= 0.95
    tiny = np.zeros((len(extra), 1, 1, 3), np.float32)
    pool.add_batch(tiny, np.tile([0.0, 1.0, 0.0], (len(extra), 1)), embeddings=extra)
    assert pool_recall(pool, queries) >= 0.95
    pool.rebuild_index(block=True)
    assert pool_recall(pool, queries) >= 0.95
    assert_invariants(pool)


# ------------------------------------------------------------------ admission


def test_first_and_second_identical_adds_behave_the_same():
    """A budget just above (or below) one entry, ANN from the first entry: every add alike."""
    t = np.full((4, 4, 3), 0.5, np.float32)
    res = dj.SolverResult(1.0, 0.9, 0.0)
    probe = dj.DreamPool(PoolConfig(memory_budget_mb=None, ann_threshold=1, max_size=10))
    probe.add(t, res)
    entry = probe.entry_bytes  # storage rows + the delta slot an add can cost the index
    assert entry == probe.table.store_entry_bytes() + 8
    for budget, fits in ((entry + 20, True), (entry - 20, False)):
        pool = dj.DreamPool(
            PoolConfig(memory_budget_mb=budget / 2**20, ann_threshold=1, max_size=10)
        )
        for _ in range(3):
            if fits:
                eid = pool.add(t, res)
                assert list(pool.ids()) == [eid]
            else:
                before = pool.fingerprint()
                with pytest.raises(MemoryExceededError, match=f"one entry takes {entry} bytes"):
                    pool.add(t, res)
                assert pool.fingerprint() == before
            assert_invariants(pool)


@pytest.mark.jit_only
def test_ann_pool_keeps_about_as_many_entries_as_an_exact_one():
    """The index is charged what it holds (~50 bytes a row here), not a worst-case
    reservation (426 bytes a row, which kept 2,594 entries against 3,387)."""
    V = gmm(9000, d=64, seed=4)
    cfg = {"memory_budget_mb": 5.0, "max_size": 100_000, "embedding_dim": 64}
    exact = dj.DreamPool(PoolConfig(use_ann=False, **cfg))
    ann = dj.DreamPool(PoolConfig(ann_threshold=1000, **cfg))
    tensors = np.zeros((1000, 4, 4, 3), np.float32)
    res = np.tile([0.0, 1.0, 0.0], (1000, 1))
    for lo in range(0, 9000, 1000):
        for pool in (exact, ann):
            pool.add_batch(tensors, res, embeddings=V[lo : lo + 1000])
            assert pool.used_bytes() <= pool.config.budget_bytes
    assert ann.rebuild_index(block=True, timeout=TIMEOUT)
    assert ann.stats()["ann_ready"] and ann.stats()["index_bytes"] > 0
    ann.add_batch(tensors[:100], res[:100], embeddings=V[:100])
    assert ann.indexes.ann.wait(TIMEOUT)
    assert len(ann) >= 0.9 * len(exact), (len(ann), len(exact))
    for pool in (exact, ann):
        assert_invariants(pool)


# ----------------------------------------------------------- build scheduling


def brute_build(X, n_neighbors, seed, graph, max_degree, n_jobs):
    """Stand-in for pynndescent: the exact k-NN graph."""
    S = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(S, -np.inf)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :n_neighbors]
    dists = 1.0 - np.take_along_axis(S, nbrs, axis=1)
    return knn_to_csr(nbrs.astype(np.int32), dists, max_degree)


@pytest.fixture
def thread_builds(monkeypatch):
    """Pools build in a thread with the exact k-NN graph (fast, no pynndescent)."""
    monkeypatch.setattr(worker_mod, "_build_csr", brute_build)
    make = IndexSet.make_ann

    def make_thread_ann(self):
        ann = make(self)
        ann.builder = "thread"
        return ann

    monkeypatch.setattr(IndexSet, "make_ann", make_thread_ann)


class BuildGate:
    """A build hook: records each build's thread and holds the builds listed in ``hold``."""

    def __init__(self, hold=()):
        self.threads, self.hold = [], set(hold)
        self.started = [threading.Event() for _ in range(8)]
        self.release = [threading.Event() for _ in range(8)]

    def __call__(self, index):
        n = len(self.threads)
        self.threads.append(threading.current_thread())
        self.started[n].set()
        if n in self.hold:
            self.release[n].wait(TIMEOUT)

    def join(self, n):
        assert self.started[n].wait(TIMEOUT), f"build {n} never started"
        self.threads[n].join(TIMEOUT)
        assert not self.threads[n].is_alive(), f"build {n} hung"


def graph_rows(pool):
    return int(pool.indexes.ann.graph_info.get("rows", 0))


def test_a_build_that_lands_stale_starts_the_next_by_itself(thread_builds, monkeypatch):
    gate = BuildGate(hold={0, 1})
    monkeypatch.setattr(index_mod, "_BUILD_HOOK", gate)
    V = gmm(2400, d=16, clusters=20, seed=5)
    pool = embedding_pool(V[:400], max_size=5000, ann_threshold=300, ann_n_neighbors=8)
    assert gate.started[0].wait(TIMEOUT)  # the first build: its snapshot of 400 taken
    tiny = np.zeros((400, 1, 1, 3), np.float32)
    for lo in range(400, 2400, 400):  # a bulk fill while it builds
        pool.add_batch(tiny, np.tile([0.0, 1.0, 0.0], (400, 1)), embeddings=V[lo : lo + 400])
    assert len(gate.threads) == 1  # one build at a time
    gate.release[0].set()
    gate.join(0)
    # the first graph landed 2000 entries behind: the next build started with no call
    assert gate.started[1].wait(TIMEOUT)
    assert (
        graph_rows(pool) == 400 and pool.indexes.ann.n_delta == 2000 and pool.indexes.ann.building
    )
    # meanwhile the delta (5x the graph) would cost more than a scan: queries scan exactly
    for q in V[::300]:
        got, want = pool.indexes.ann.search(q, 10), pool.indexes.exact.search(q, 10)
        np.testing.assert_array_equal(got[0], want[0])
    gate.release[1].set()
    gate.join(1)
    assert (
        graph_rows(pool) == 2400 and pool.indexes.ann.n_delta == 0 and not pool.indexes.ann.building
    )
    assert len(gate.threads) == 2 and pool.indexes.ann.builds == 2
    assert_invariants(pool)


def test_rebuild_index_during_a_build_waits_for_one_that_covers_the_call(
    thread_builds, monkeypatch
):
    gate = BuildGate(hold={0})
    monkeypatch.setattr(index_mod, "_BUILD_HOOK", gate)
    V = gmm(600, d=16, clusters=20, seed=6)
    pool = embedding_pool(
        V[:400], max_size=5000, ann_threshold=300, ann_n_neighbors=8, ann_rebuild_fraction=0.9
    )
    assert gate.started[0].wait(TIMEOUT)
    pool.add_batch(
        np.zeros((200, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (200, 1)), embeddings=V[400:]
    )  # 200 < 0.9 * 400: no automatic rebuild
    out = []
    caller = threading.Thread(
        target=lambda: out.append(pool.rebuild_index(block=True, timeout=TIMEOUT))
    )
    caller.start()
    gate.release[0].set()
    caller.join(TIMEOUT)
    assert not caller.is_alive() and out == [True]
    assert graph_rows(pool) == 600 and len(gate.threads) == 2
    assert_invariants(pool)


# ------------------------------------------------------ the build worker

FAKE_WORKER = """
import numpy as np, dreamjit.index.worker as m
def build(X, n_neighbors, seed, graph, max_degree, n_jobs):
    S = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(S, -np.inf)
    k = min(n_neighbors, X.shape[0] - 1)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.arange(0, X.shape[0] * k + 1, k, dtype=np.int64), nbrs.astype(np.int32).ravel()
m._build_csr = build
m._worker_main()
"""
FROZEN_WORKER = "import time; time.sleep(3600)"


@pytest.fixture
def worker_code(monkeypatch):
    """Run stand-in worker processes; every one started is recorded and closed after."""
    monkeypatch.setattr(worker_mod._Worker, "_instance", None)
    started = []
    init = worker_mod._Worker.__init__

    def recording_init(self):
        init(self)
        started.append(self)

    monkeypatch.setattr(worker_mod._Worker, "__init__", recording_init)

    def use(code):
        monkeypatch.setattr(worker_mod._Worker, "CODE", code)
        return started

    yield use
    for worker in started:
        worker.close()


def wait_until(condition, what):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def test_frozen_worker_times_out_is_reaped_and_builds_resume(worker_code):
    started = worker_code(FROZEN_WORKER)
    V = gmm(600, d=16, seed=7)
    pool = embedding_pool(V, ann_threshold=300, ann_build_timeout=1.0)
    assert pool.rebuild_index(block=True, timeout=TIMEOUT)  # bounded by the build timeout
    st = pool.stats()
    assert not st["ann_building"] and not st["ann_ready"] and st["index"] == "exact"
    assert started
    for worker in started:  # killed and reaped at once: no zombie left behind
        assert worker.closed and worker.proc.returncode is not None
        with pytest.raises(ChildProcessError):
            os.waitpid(worker.proc.pid, os.WNOHANG)
    worker_code(FAKE_WORKER)
    # the 1 s bound covered the frozen worker; a new worker's start-up (python, numpy, numba
    # imports) can take longer than that on a loaded machine, so the resumed build is unbounded
    pool.indexes.ann.build_timeout = None
    assert pool.rebuild_index(block=True, timeout=TIMEOUT)
    assert pool.stats()["ann_ready"] and graph_rows(pool) == 600
    hits = pool.retrieve_soft(Query(embedding=V[17]), k=3, weights=SIM_ONLY)
    assert int(hits.ids[0]) == 17
    assert_invariants(pool)


def test_idle_worker_closes_and_the_next_build_starts_another(worker_code, monkeypatch):
    started = worker_code(FAKE_WORKER)
    monkeypatch.setattr(worker_mod, "WORKER_IDLE_SECONDS", 0.2)
    V = gmm(1200, d=16, seed=8)
    pool = embedding_pool(V[:600], max_size=1200, ann_threshold=300)
    assert pool.rebuild_index(block=True, timeout=TIMEOUT) and pool.stats()["ann_ready"]
    first = started[0]
    wait_until(lambda: first.closed and first.proc.returncode is not None, "idle close")
    with pytest.raises(ChildProcessError):
        os.waitpid(first.proc.pid, os.WNOHANG)  # reaped
    tiny = np.zeros((600, 1, 1, 3), np.float32)
    pool.add_batch(tiny, np.tile([0.0, 1.0, 0.0], (600, 1)), embeddings=V[600:])
    assert pool.rebuild_index(block=True, timeout=TIMEOUT)
    assert graph_rows(pool) == 1200 and len(started) >= 2
    assert_invariants(pool)


def test_similarity_only_rerank_walks_for_k_candidates(thread_builds, monkeypatch):
    """When the rerank keeps the similarity order the graph walk is asked for k (its beam
    follows k); any other weights ask for the rerank's candidate count; exact scans keep
    the candidate count."""
    V = gmm(3000, d=32, seed=3)
    pool = embedding_pool(V, ann_threshold=3000, ann_background=False)
    assert pool.stats()["index"] == "ann"
    ann = pool.indexes.ann
    asked = []
    search, search_batch = ann.search, ann.search_batch

    def spy(q, k, mask=None):
        asked.append(int(k))
        return search(q, k, mask)

    def spy_batch(Q, k, mask=None):
        asked.append(int(k))
        return search_batch(Q, k, mask)

    walk_plan = ann.walk_plan

    def spy_plan(k, mask=None):  # the one-kernel path plans its walk, then walks itself
        asked.append(int(k))
        return walk_plan(k, mask)

    monkeypatch.setattr(ann, "search", spy)
    monkeypatch.setattr(ann, "search_batch", spy_batch)
    monkeypatch.setattr(ann, "walk_plan", spy_plan)
    q = V[5]
    hits = pool.retrieve_soft(Query(embedding=q), k=10, weights=SIM_ONLY)
    assert max(asked) <= 11 and hits.ids.shape == (10,)
    assert np.all(np.diff(hits.similarity) <= 0)  # picks in similarity order
    gamma_only = RetrievalWeights(alpha=0.5, beta=0.0, gamma=0.5, delta=0.0)
    for weights, query, wide in (
        (SIM_ONLY, Query(embedding=q), False),
        (gamma_only, Query(embedding=q), False),  # unlabelled: the class term is constant
        (gamma_only, Query(embedding=q, label=1), True),
        (RetrievalWeights(), Query(embedding=q), True),
        (RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=0.0), q, True),
    ):
        asked.clear()
        pool.retrieve_soft(query, k=10, weights=weights)
        assert (max(asked) >= 40) == wide, (weights, asked)
    asked.clear()
    batch = pool.retrieve_soft_batch(V[:7], k=10, weights=SIM_ONLY)
    assert asked and max(asked) <= 11
    for t in range(7):
        one = pool.retrieve_soft(V[t], k=10, weights=SIM_ONLY)
        assert np.array_equal(batch.ids[t], one.ids)
        assert np.array_equal(batch.similarity[t], one.similarity)
    asked.clear()
    pool.retrieve_soft_batch(V[:7], k=10)
    assert max(asked) >= 40
    assert_invariants(pool)


@pytest.mark.parametrize("use_ann", [False, True])
def test_a_tie_at_the_cut_widens_the_search_only_until_the_tie_group_is_in(
    thread_builds, monkeypatch, use_ann
):
    """50 identical embeddings and a query equal to them: the top 50 tie, the cut at 10
    falls inside the group. The search widens (11, 22, 44, 88) until its last score is
    below the tie, never to the whole pool (it once did: every widening checked the cut
    again, so a tie there fetched all n, a walk with a beam of 1.5 n), and the hits are
    the group's 10 lowest ids."""
    V = gmm(3000, d=32, seed=4)
    group = np.arange(500, 550)
    V[group] = V[7]
    pool = embedding_pool(V, use_ann=use_ann, ann_threshold=3000, ann_background=False)
    assert pool.stats()["index"] == ("ann" if use_ann else "exact")
    index = pool.indexes.ann if use_ann else pool.indexes.exact
    asked = []
    search = index.search

    def spy(q, k, mask=None):
        asked.append(int(k))
        return search(q, k, mask)

    monkeypatch.setattr(index, "search", spy)
    hits = pool.retrieve_soft(Query(embedding=V[7]), k=10, weights=SIM_ONLY)
    assert asked[0] == 11 and max(asked) <= 2 * (group.size + 1 + 1), asked
    tied = np.union1d(group, [7])
    ids = pool.ids()
    assert np.all(np.isin(hits.ids, ids[tied]))
    if not use_ann:  # the exact scan finds every tied entry: the 10 lowest ids
        assert np.array_equal(hits.ids, np.sort(ids[tied])[:10])


def test_a_wide_walk_scans_exactly(thread_builds, monkeypatch):
    """A query whose beam would reach WALK_EXACT_MIN_EF on a graph of fewer than
    ``ef * WALK_EF_SHARE`` rows is answered by the exact scan (the walk would score more
    rows than the scan reads); ordinary queries walk."""
    V = gmm(3000, d=32, seed=5)
    pool = embedding_pool(V, ann_threshold=3000, ann_background=False)
    ann = pool.indexes.ann
    walks = []
    walk = index_mod.ann_search

    def spy(*args):
        walks.append(args[5])
        return walk(*args)

    monkeypatch.setattr(index_mod, "ann_search", spy)
    q = V[11]
    ann.search(q, 10)
    assert walks == [10]
    k = index_mod.WALK_EXACT_MIN_EF
    idx, sc = ann.search(q, k)
    assert walks == [10]  # no second walk
    s = V.astype(np.float64) @ q.astype(np.float64)
    want = np.argsort(-s, kind="stable")[:k]
    assert np.array_equal(np.sort(pool.ids()[idx]), np.sort(pool.ids()[want]))


def test_fused_walk_equals_general_path(thread_builds, monkeypatch):
    """On a graph-searched pool the one-kernel soft path (walk, tie check, rerank:
    ``ann_soft_query``) gives what the general path (query_embedding, then soft_embedded)
    gives, bit for bit: float32 and float64 queries, labels, default and similarity-only
    weights, wide and narrow filters, duplicates tying at the cut; bad queries are refused
    with the pool unchanged."""
    import dreamjit._retriever as retriever_mod
    from dreamjit._validate import as_where

    rng = np.random.default_rng(21)
    V = gmm(3000, d=32, seed=6)
    V[100:140] = V[3]  # a tie group straddling the cut for queries near V[3]
    n = V.shape[0]
    pool = dj.DreamPool(
        PoolConfig(
            memory_budget_mb=None,
            max_size=n,
            embedding_dim=32,
            use_ann=True,
            ann_threshold=n,
            ann_background=False,
        )
    )
    pool.add_batch(
        np.zeros((n, 1, 1, 3), np.float32),
        np.tile([0.0, 1.0, 0.0], (n, 1)),
        embeddings=V,
        labels=rng.integers(0, 3, n).tolist(),
    )
    assert pool.stats()["index"] == "ann"
    calls = {"fused": 0, "status": []}
    kernel = retriever_mod.ann_soft_query

    def spy(*args):
        out = kernel(*args)
        calls["fused"] += 1
        calls["status"].append(int(out[3]))
        return out

    monkeypatch.setattr(retriever_mod, "ann_soft_query", spy)
    r = pool.retriever
    queries = [V[3], V[3] + 0.01] + list(rng.normal(size=(12, 32)))
    wheres = (None, lambda c: c.labels >= 1, lambda c: c.labels == 5)
    for q64 in queries:
        for q in (np.asarray(q64, np.float32), np.asarray(q64, np.float64)):
            for label in (None, 1):
                for w in (RetrievalWeights(), SIM_ONLY):
                    for where in wheres:
                        query = Query(embedding=q, label=label)
                        hits = pool.retrieve_soft(query, k=10, weights=w, where=where)
                        with pool.lock.read():
                            emb, lab = r.query_embedding(query)
                            mask, count = r.filter(None if where is None else as_where(where))
                            if count == 0:
                                ids = np.empty(0, np.int64)
                                scores = sims = np.empty(0, np.float32)
                            else:
                                slots, scores, sims = r.soft_embedded(emb, lab, 10, w, mask, count)
                                ids = pool.table.ids_at(slots)
                        assert hits.ids.tolist() == ids.tolist()
                        assert np.array_equal(hits.scores, scores)
                        assert np.array_equal(hits.similarity, sims)
    assert calls["fused"] > 0
    assert 0 in calls["status"]  # answered in one call
    assert 1 in calls["status"]  # the tie group at the cut went to the general path
    before = pool.fingerprint()
    for bad in (np.zeros(32, np.float32), np.full(32, np.nan), np.full(32, 1e300)):
        with pytest.raises(dj.InvalidParameterError):
            pool.retrieve_soft(bad)
        with pytest.raises(dj.InvalidParameterError):
            pool.retrieve_soft(Query(embedding=bad))
    assert pool.fingerprint() == before
    assert_invariants(pool)

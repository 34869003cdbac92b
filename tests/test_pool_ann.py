"""Pool-level recall of the ANN path, churn through evictions, and no waiting for builds."""
import time

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import PoolConfig, Query, RetrievalWeights
from invariants import assert_invariants

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
    cfg = {"memory_budget_mb": None, "max_size": n, "embedding_dim": d, "use_ann": True,
           "ann_threshold": 256, "ann_background": True, **cfg}
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
def test_digits_recall_and_churn():
    from sklearn.datasets import load_digits
    X = load_digits().data.astype(np.float64)
    X = unit(X - X.mean(0))
    base, extra, queries = X[:1500], X[1500:1725], X[1725:]
    pool = embedding_pool(base, max_size=1500)
    pool.rebuild_index(block=True)
    assert pool.stats()["index"] == "ann"
    assert pool_recall(pool, queries) >= 0.99
    assert_invariants(pool)
    # 15% new adds into a full pool: 15% evictions (oldest first)
    tiny = np.zeros((len(extra), 1, 1, 3), np.float32)
    pool.add_batch(tiny, np.tile([0.0, 1.0, 0.0], (len(extra), 1)), embeddings=extra)
    assert len(pool) == 1500 and int(pool.ids()[0]) == len(extra)
    assert pool_recall(pool, queries) >= 0.99
    pool.rebuild_index(block=True)
    assert pool_recall(pool, queries) >= 0.99
    assert_invariants(pool)


@pytest.mark.jit_only
def test_queries_never_wait_for_a_build():
    V = gmm(6000, d=32, seed=1)
    pool = embedding_pool(V, ann_threshold=3000)
    assert pool._ann is not None  # crossing the threshold started a build
    t0 = time.perf_counter()
    hits = pool.retrieve_soft(Query(embedding=V[0]), k=5, weights=SIM_ONLY)
    first = time.perf_counter() - t0
    assert hits.ids[0] == 0
    # whatever the build's state, the query was answered (exactly, if no graph yet)
    assert first < 5.0, first
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
    assert pool.used_bytes() == len(pool) * pool._store.entry_bytes + pool._index_nbytes()
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

"""Pool-level soft, diverse and hybrid retrieval against brute force + references."""

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import (
    DimensionMismatchError,
    InvalidParameterError,
    PoolConfig,
    Query,
    RetrievalMode,
    RetrievalWeights,
)
from dreamjit._indexes import candidate_count

import reference_retrieval as ref
from invariants import assert_invariants

SHAPE = (6, 6, 2, 3)


@pytest.fixture(scope="module")
def data():
    from dreamjit.synthetic import smooth_tensors

    t = smooth_tensors(120, shape=SHAPE, seed=3)
    return t, dj.evaluate_batch(t)


def make_pool(data, n=120, **cfg):
    t, r = data
    cfg.setdefault("memory_budget_mb", None)
    cfg.setdefault("use_ann", False)
    pool = dj.DreamPool(PoolConfig(**cfg))
    pool.add_batch(
        t[:n],
        r[:n],
        labels=list(np.arange(n) % 5),
        utilities=list(np.linspace(0, 1, n)),
        only_coherent=False,
    )
    pool.record_feedback(pool.ids()[::7], 0.9)
    return pool


def brute_candidates(pool, q, k):
    ids = pool.ids()
    E = np.array([pool[i].embedding for i in ids])
    scores = ref.seq_dots(E, q)
    top, sims = ref.topk_from_scores(scores, np.ones(len(ids), bool), candidate_count(k, len(ids)))
    top, sims = top[np.argsort(ids[top], kind="stable")], sims[np.argsort(ids[top], kind="stable")]
    return ids[top], sims, E[top]  # the pool hands candidates to rerank and MMR in id order


@pytest.mark.parametrize("k", [1, 3, 10, 200])
@pytest.mark.parametrize("qlabel", [None, 2])
def test_retrieve_soft_equals_brute_force_and_reference_rerank(data, k, qlabel):
    pool = make_pool(data)
    query = Query(chroma=[0.7, 0.3, 0.2], label=qlabel)
    q, lab = pool.query_embedding(query)
    cand_ids, sims, E = brute_candidates(pool, q, k)
    util = np.array([pool[i].util_mean for i in cand_ids])
    labels = np.array([-1 if pool[i].label is None else pool[i].label for i in cand_ids])
    w = RetrievalWeights()
    order, scores = ref.hybrid_rerank_ref(
        sims, util, labels, lab, E, w.alpha, w.beta, w.gamma, w.delta, w.lambda_, k
    )
    hits = pool.retrieve_soft(query, k=k)
    assert hits.ids.tolist() == cand_ids[order].tolist()
    np.testing.assert_allclose(hits.scores, scores, rtol=1e-5, atol=1e-6)
    assert hits.scores.dtype == np.float32 and len(hits) == min(k, len(pool))
    assert_invariants(pool)


@pytest.mark.parametrize("lambda_", [0.0, 0.5, 1.0])
def test_retrieve_diverse_equals_reference_mmr(data, lambda_):
    pool = make_pool(data)
    query = data[0][5]
    q, _ = pool.query_embedding(query)
    cand_ids, _, E = brute_candidates(pool, q, 8)
    picks, scores = ref.mmr_ref(q, E, 8, lambda_)
    hits = pool.retrieve_diverse(query, k=8, lambda_=lambda_)
    assert hits.ids.tolist() == cand_ids[picks].tolist()
    np.testing.assert_allclose(hits.scores, scores, rtol=1e-5, atol=1e-6)
    fast = pool.retrieve_diverse(
        query, k=8, lambda_=lambda_, fast=True, min_similarity=-1.0, sample_size=0
    )
    assert fast.ids.tolist() == hits.ids.tolist()
    assert_invariants(pool)


def test_diverse_is_more_diverse_than_soft(data):
    pool = make_pool(data)
    query = data[0][0]
    soft = pool.retrieve_soft(query, k=10, weights=RetrievalWeights(1.0, 0.0, 0.0, 0.0, 1.0))
    div = pool.retrieve_diverse(query, k=10, lambda_=0.3)
    assert (
        pool.diversity_stats(div)["embedding_dispersion"]
        >= pool.diversity_stats(soft)["embedding_dispersion"] - 1e-6
    )
    st = pool.diversity_stats()
    assert st["count"] == len(pool) and 0 <= st["chroma_dispersion"] <= 2


def test_query_forms_agree(data):
    pool = make_pool(data)
    t = data[0][7]
    a = pool.retrieve_soft(t, k=5)
    b = pool.retrieve_soft(Query.from_tensor(t), k=5)
    assert a.ids.tolist() == b.ids.tolist()
    c = pool.retrieve_soft(dj.chroma_signature(t), k=5)
    d = pool.retrieve_soft(Query(chroma=dj.chroma_signature(t)), k=5)
    assert c.ids.tolist() == d.ids.tolist()


def test_retrieve_modes(data):
    pool = make_pool(data)
    q = Query.from_tensor(data[0][1])
    hard = pool.retrieve(q, k=4, mode=RetrievalMode.HARD)
    soft = pool.retrieve(q, k=4, mode=RetrievalMode.SOFT)
    both = pool.retrieve(q, k=4, mode=RetrievalMode.HYBRID)
    assert hard.ids.tolist() == pool.retrieve_similar(q, k=4).ids.tolist()
    assert soft.ids.tolist() == pool.retrieve_soft(q, k=4).ids.tolist()
    assert len(both) == 4 and len(set(both.ids.tolist())) == 4
    assert (np.diff(both.scores) <= 0).all()
    # reciprocal rank fusion of the 2k-deep hard and soft rankings, by hand
    deep_hard = pool.retrieve_similar(q, k=8).ids.tolist()
    deep_soft = pool.retrieve_soft(q, k=8).ids.tolist()
    fused = {}
    for ranking in (deep_soft, deep_hard):
        for rank, eid in enumerate(ranking, start=1):
            fused[eid] = fused.get(eid, 0.0) + 1.0 / (60 + rank)
    want = sorted(fused, key=lambda e: (-fused[e], e))[:4]  # ties to the lower id
    assert both.ids.tolist() == want
    np.testing.assert_allclose(both.scores, [fused[e] for e in want], rtol=1e-6)
    assert pool.retrieve(q, k=2, mode="soft").ids.tolist() == soft.ids[:2].tolist()


def test_query_cache_hits_and_misses(data):
    pool = make_pool(data, query_cache_size=2)
    q1, q2, q3 = [0.5, 0.2, 0.1], [0.1, 0.2, 0.5], [0.3, 0.3, 0.3]
    h0 = pool.query_cache_stats()
    a = pool.retrieve_soft(q1, k=3)
    b = pool.retrieve_soft(np.array(q1), k=3)  # the same features: a hit
    assert a.ids.tolist() == b.ids.tolist()
    hits, misses, rate = pool.query_cache_stats()
    assert (hits - h0[0], misses - h0[1]) == (1, 1)
    pool.retrieve_soft([0.5 + 1e-5, 0.2, 0.1], k=3)  # keys are exact: a different query misses
    assert pool.query_cache_stats()[:2] == (hits, misses + 1)
    hits, misses = hits, misses + 1
    pool.retrieve_soft(q2, k=3)
    pool.retrieve_soft(q3, k=3)  # evicts q1 (capacity 2)
    pool.retrieve_soft(q1, k=3)
    hits2, misses2, _ = pool.query_cache_stats()
    assert (hits2 - hits, misses2 - misses) == (0, 3)
    e1 = pool.query_embedding(q1)[0]
    e2 = pool.query_embedding(q1)[0]
    assert np.array_equal(e1, e2)
    off = make_pool(data, query_cache_size=0)
    off.retrieve_soft(q1, k=3)
    off.retrieve_soft(q1, k=3)
    assert off.query_cache_stats()[0] == 0


def test_user_embeddings_soft_retrieval():
    rng = np.random.default_rng(0)
    pool = dj.DreamPool(PoolConfig(embedding_dim=16, memory_budget_mb=None, use_ann=False))
    V = rng.standard_normal((50, 16))
    t = rng.random((50, 3, 3, 3), dtype=np.float32)
    pool.add_batch(t, np.tile([0, 0.9, 0], (50, 1)), embeddings=V)
    q = V[7] + 0.01 * rng.standard_normal(16)
    hits = pool.retrieve_soft(q, k=1, weights=RetrievalWeights(beta=0, gamma=0))
    assert hits.ids.tolist() == [7]
    assert pool.retrieve_soft(Query(embedding=q), k=1).ids.tolist() == [7]
    with pytest.raises(DimensionMismatchError):
        pool.retrieve_soft(np.ones(5))
    with pytest.raises(InvalidParameterError):
        pool.retrieve_soft(Query(chroma=[1, 0, 0]))


def test_empty_pool_soft_returns_nothing():
    pool = dj.DreamPool(PoolConfig(use_ann=False))
    assert len(pool.retrieve_soft([0.1, 0.2, 0.3])) == 0
    assert len(pool.retrieve_diverse([0.1, 0.2, 0.3])) == 0


@pytest.mark.parametrize(
    "call,err",
    [
        (lambda p: p.retrieve_soft([np.nan, 0, 0]), InvalidParameterError),
        (lambda p: p.retrieve_soft([1, 0]), DimensionMismatchError),
        (lambda p: p.retrieve_soft([1, 0, 0], k=0), InvalidParameterError),
        (lambda p: p.retrieve_soft([1, 0, 0], weights=RetrievalWeights), InvalidParameterError),
        (lambda p: p.retrieve_soft([1, 0, 0], weights={"alpha": 1}), InvalidParameterError),
        (lambda p: p.retrieve_soft(Query()), InvalidParameterError),
        (lambda p: p.retrieve_soft(Query(spectral=[1, 2])), DimensionMismatchError),
        (lambda p: p.retrieve_soft(Query(chroma=[1, 0, 0], label=-2)), InvalidParameterError),
        (lambda p: p.retrieve_soft(Query(chroma=[1, 0, 0], utility=np.inf)), InvalidParameterError),
        (lambda p: p.retrieve_soft(Query(embedding=np.ones(64))), InvalidParameterError),
        (lambda p: p.retrieve_diverse([1, 0, 0], lambda_=1.5), InvalidParameterError),
        (lambda p: p.retrieve_diverse([1, 0, 0], k=-1), InvalidParameterError),
        (lambda p: p.retrieve_diverse([1, 0, 0], fast=1), InvalidParameterError),
        (lambda p: p.retrieve_diverse([1, 0, 0], sample_size=-1), InvalidParameterError),
        (lambda p: p.retrieve_diverse([1, 0, 0], min_similarity=np.nan), InvalidParameterError),
        (lambda p: p.retrieve([1, 0, 0], mode="fuzzy"), InvalidParameterError),
        (lambda p: p.retrieve([1, 0, 0], mode=3), InvalidParameterError),
        (lambda p: p.retrieve(np.zeros(3, complex)), InvalidParameterError),
        (lambda p: p.diversity_stats([1, 2]), InvalidParameterError),
    ],
)
def test_bad_soft_input_typed_error_pool_unchanged(data, call, err):
    pool = make_pool(data, n=20)
    before = pool.fingerprint()
    cache_before = pool.query_cache_stats()
    with pytest.raises(err):
        call(pool)
    assert pool.fingerprint() == before
    assert pool.query_cache_stats() == cache_before
    assert_invariants(pool)


@pytest.mark.parametrize("field", ["alpha", "beta", "gamma", "delta", "lambda_"])
@pytest.mark.parametrize("value", [-0.1, 1.1, np.nan, "x"])
def test_weights_out_of_range(field, value):
    with pytest.raises(InvalidParameterError):
        RetrievalWeights(**{field: value})

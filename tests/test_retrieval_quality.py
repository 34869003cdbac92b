"""Retrieval quality on data this project did not make: scikit-image photographs.

And the embedding's promises: a query that leaves feature groups out ranks by
the groups it has; ``Hits.similarity`` is the cosine to the query; cache keys
are exact at any scale; ties go to the lower id across slot reuse and save/load.
"""

import logging

import numpy as np
import pytest

import dreamjit as dj
from dreamjit.embedding import EmbeddingMapper
from dreamjit.kernels.thumbnail import thumbnail_batch

import reference_embedding as ref
from invariants import assert_invariants

pytest.importorskip("skimage")
from dreamjit.testing import photo_patches  # noqa: E402

SIM_ONLY = dj.RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)
N_PATCHES = 2000
N_QUERIES = 200


@pytest.fixture(scope="module")
def photo_pool():
    P = photo_patches(N_PATCHES, seed=0, min_std=0.05)
    pool = dj.DreamPool(max_size=N_PATCHES, memory_budget_mb=None, seed=0, use_ann=False)
    ids = pool.add_batch(P, np.tile([1.0, 1.0, 0.0], (N_PATCHES, 1)), only_coherent=False)
    assert len(ids) == N_PATCHES
    pick = np.random.default_rng(1).choice(N_PATCHES, N_QUERIES, replace=False)
    return P, pool, ids, pick


def _first_rate(pool, ids, pick, make_query, weights=None):
    ok = 0
    for i in pick:
        hits = pool.retrieve_soft(make_query(i), k=1, weights=weights)
        ok += int(hits.ids[0]) == int(ids[i])
    return ok / len(pick)


@pytest.mark.jit_only
def test_query_by_example_finds_the_example(photo_pool):
    P, pool, ids, pick = photo_pool
    rate = _first_rate(pool, ids, pick, lambda i: dj.Query.from_tensor(P[i]))
    assert rate >= 0.99, rate
    # default weights and a raw tensor as the query, too
    rate = _first_rate(pool, ids, pick[:50], lambda i: P[i])
    assert rate >= 0.99, rate


@pytest.mark.jit_only
def test_noisy_copy_finds_the_stored_patch(photo_pool):
    P, pool, ids, pick = photo_pool
    rng = np.random.default_rng(2)
    noisy = {i: np.clip(P[i] + rng.normal(0, 0.1, P[i].shape), 0, 1) for i in pick}
    rate = _first_rate(pool, ids, pick, lambda i: dj.Query.from_tensor(noisy[i]))
    assert rate >= 0.90, rate


@pytest.mark.jit_only
def test_partly_observed_copy_finds_the_stored_patch(photo_pool):
    P, pool, ids, pick = photo_pool
    rng = np.random.default_rng(3)
    seen = {i: (rng.random(P[i].shape[:2]) >= 0.7) for i in pick}

    def query(i):
        holed = np.where(seen[i][..., None], P[i], 0.0)
        return dj.Query.from_tensor(holed, certainty=seen[i].astype(np.float32))

    rate = _first_rate(pool, ids, pick, query)
    assert rate >= 0.80, rate


def test_query_by_example_small_random_tensors():
    """The trial's second case: random 8x8 tensors (29/200 before the fix)."""
    rng = np.random.default_rng(4)
    T = rng.random((300, 8, 8, 3)).astype(np.float32)
    pool = dj.DreamPool(max_size=300, memory_budget_mb=None, seed=0)
    ids = pool.add_batch(T, np.tile([1.0, 1.0, 0.0], (300, 1)), only_coherent=False)
    hits = [
        int(pool.retrieve_soft(dj.Query.from_tensor(T[i]), k=1).ids[0]) for i in range(0, 300, 5)
    ]
    assert hits == [int(ids[i]) for i in range(0, 300, 5)]


# ----------------------------------------------------------------- embedding structure
@pytest.mark.parametrize("dim", [8, 64, 128])
def test_embedding_matches_reference(dim):
    rng = np.random.default_rng(5)
    m = EmbeddingMapper(dim=dim, seed=3, channels=3, buckets=16, grid=4)
    n = 20
    chroma = rng.random((n, 3)).astype(np.float32)
    spectral = rng.random((n, 6)).astype(np.float32) * [1, 1, 1, 1, 1, 50]
    spatial = rng.random((n, 48)).astype(np.float32)
    spatial[0] = 0.3  # flat thumbnail: its own direction, not a zero group
    chroma[1] = 0.0  # zero group stays zero
    labels = rng.integers(-1, 40, n).astype(np.int32)
    util = rng.random(n)
    util[::3] = np.nan
    for present in [
        (True,) * 5,
        (True, False, True, False, False),
        (False, False, True, False, True),
    ]:
        got = m.embed(chroma, spectral, labels, util, present, spatial=spatial)
        want = np.array(
            [
                ref.embed(m, chroma[i], spectral[i], spatial[i], labels[i], util[i], present)
                for i in range(n)
            ]
        )
        np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.parametrize("shape", [(32, 32, 3), (7, 5, 2, 4), (3, 3, 1), (9, 13, 3)])
@pytest.mark.parametrize("grid", [1, 4, 5])
def test_thumbnail_matches_reference(shape, grid):
    rng = np.random.default_rng(6)
    t = rng.random((3,) + shape).astype(np.float32)
    t5 = t if len(shape) == 4 else t[:, :, :, None, :]
    w = (rng.random(t5.shape[:4]) > 0.6).astype(np.float32)
    w[1] = 0.0  # nothing observed: plain means
    got = thumbnail_batch(np.ascontiguousarray(t5), w, True, grid)
    for i in range(3):
        np.testing.assert_allclose(got[i], ref.thumbnail(t5[i], grid, w[i]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            dj.spatial_thumbnail(t[i], grid=grid), ref.thumbnail(t5[i], grid), rtol=1e-5, atol=1e-6
        )


def test_missing_groups_do_not_bias_the_ranking():
    """A chroma-only query ranks exactly as chroma cosine does (hard retrieval):
    the stored entries' other groups (label, utility, spatial) carry no weight."""
    rng = np.random.default_rng(7)
    T = rng.random((120, 6, 6, 3)).astype(np.float32) * rng.random((120, 1, 1, 3)).astype(
        np.float32
    )
    pool = dj.DreamPool(max_size=200, memory_budget_mb=None, seed=0)
    labels = [int(x) if x >= 0 else None for x in rng.integers(-1, 5, 120)]
    pool.add_batch(
        T,
        np.tile([1.0, 1.0, 0.0], (120, 1)),
        labels=labels,
        utilities=rng.random(120),
        only_coherent=False,
    )
    for _ in range(10):
        c = rng.random(3).astype(np.float32)
        soft = pool.retrieve_soft(dj.Query(chroma=c), k=20, weights=SIM_ONLY)
        hard = pool.retrieve_similar(c, k=20)
        np.testing.assert_allclose(
            np.sort(soft.similarity)[::-1] / soft.similarity[0],
            hard.similarity / hard.similarity[0],
            rtol=1e-4,
        )
        assert soft.ids[:5].tolist() == hard.ids[:5].tolist()


# ----------------------------------------------------------------- Hits.similarity
def test_similarity_is_the_cosine_to_the_query():
    rng = np.random.default_rng(8)
    T = rng.random((80, 6, 6, 3)).astype(np.float32)
    pool = dj.DreamPool(max_size=100, memory_budget_mb=None, seed=0)
    pool.add_batch(T, np.tile([1.0, 1.0, 0.0], (80, 1)), only_coherent=False)
    q = dj.Query.from_tensor(T[3])
    qv, _ = pool.query_embedding(q)
    for hits in (
        pool.retrieve_soft(q, k=6),
        pool.retrieve_diverse(q, k=6, lambda_=0.3),
        pool.retrieve(q, k=6, mode="hybrid"),
    ):
        E = np.array([pool[i].embedding for i in hits.ids], np.float64)
        np.testing.assert_allclose(hits.similarity, E @ qv.astype(np.float64), atol=1e-6)
        assert hits.similarity.dtype == np.float32 and hits.similarity.shape == hits.ids.shape
    hard = pool.retrieve_similar(q, k=6)
    C = np.array([pool[i].chroma for i in hard.ids], np.float64)
    c = np.asarray(q.chroma, np.float64)
    np.testing.assert_allclose(
        hard.similarity, C @ c / np.linalg.norm(C, axis=1) / np.linalg.norm(c), atol=1e-6
    )
    assert np.array_equal(hard.similarity, hard.scores)
    empty = dj.DreamPool().retrieve_soft([0.5, 0.5, 0.5])
    assert empty.similarity.shape == (0,)


# ----------------------------------------------------------------- cache
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-4, 1.0, 1e4, 1e20, 1e30])
def test_cache_keys_are_exact_at_any_scale(scale):
    rng = np.random.default_rng(9)
    C = rng.random((40, 3)).astype(np.float32)
    cached = dj.DreamPool(max_size=50, seed=0, memory_budget_mb=None)
    fresh = dj.DreamPool(max_size=50, seed=0, memory_budget_mb=None, query_cache_size=0)
    for p in (cached, fresh):
        p.add_batch(
            np.ones((40, 4, 4, 3), np.float32) * C[:, None, None, :],
            np.tile([1.0, 1.0, 0.0], (40, 1)),
            only_coherent=False,
        )
    queries = [
        np.array(v, np.float64) * scale for v in ([1, 2, 3], [3, 2, 1], [1, 2, 3.001], [2, 1, 3])
    ]
    for q in queries + queries:
        a = cached.retrieve_soft(q, k=5)
        b = fresh.retrieve_soft(q, k=5)
        assert a.ids.tolist() == b.ids.tolist()
        assert np.array_equal(a.scores, b.scores)
    hits, misses, _ = cached.query_cache_stats()
    assert (hits, misses) == (4, 4)


# ----------------------------------------------------------------- ties
def _dup_pool(rng, max_size=8, steps=14):
    pool = dj.DreamPool(max_size=max_size, seed=0, memory_budget_mb=None)
    base = rng.uniform(0.2, 0.8, (3, 4, 4, 3)).astype(np.float32)
    for _ in range(steps):  # overfills: slots are reused out of id order
        pool.add(base[rng.integers(3)], dj.SolverResult(1.0, 0.9, 0.0))
    return pool, base


def _ties_in_id_order(hits):
    s, i = hits.scores, hits.ids
    return all(not (s[j] == s[j + 1] and i[j] > i[j + 1]) for j in range(len(s) - 1))


@pytest.mark.parametrize("trial", range(8))
def test_ties_go_to_the_lower_id_across_slot_reuse_and_save_load(tmp_path, trial):
    rng = np.random.default_rng(100 + trial)
    pool, base = _dup_pool(rng)
    again = dj.DreamPool.load(pool.save(tmp_path / "p.npz"))
    q = dj.Query.from_tensor(base[0])
    for p in (pool, again):
        assert_invariants(p)
    calls = [
        lambda p: p.retrieve_soft(q, k=8, weights=SIM_ONLY),
        lambda p: p.retrieve_soft(q, k=3, weights=SIM_ONLY),
        lambda p: p.retrieve_similar(q, k=8),
        lambda p: p.retrieve_similar(q, k=2),
        lambda p: p.retrieve_diverse(q, k=8, lambda_=1.0),
        lambda p: p.retrieve(q, k=8, mode="hybrid"),
    ]
    for call in calls:
        a, b = call(pool), call(again)
        assert a.ids.tolist() == b.ids.tolist()
        assert np.array_equal(a.scores, b.scores)
        assert _ties_in_id_order(a)


def test_tie_at_the_cut_keeps_the_lowest_ids():
    """Five identical entries, the three oldest freed and refilled: k=2 gets the two lowest ids."""
    pool = dj.DreamPool(max_size=5, seed=0, memory_budget_mb=None)
    t = np.full((4, 4, 3), 0.5, np.float32)
    other = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    for _ in range(5):
        pool.add(other, dj.SolverResult(1.0, 0.9, 0.0))
    for _ in range(5):  # fill slots 0..4 again, in order: ids 5..9
        pool.add(t, dj.SolverResult(1.0, 0.9, 0.0))
    pool.add(t, dj.SolverResult(1.0, 0.9, 0.0))  # id 10 into slot 0
    for call in (
        lambda k: pool.retrieve_similar(t, k=k),
        lambda k: pool.retrieve_soft(t, k=k, weights=SIM_ONLY),
    ):
        assert call(2).ids.tolist() == [6, 7]
        assert call(5).ids.tolist() == [6, 7, 8, 9, 10]


# ----------------------------------------------------------------- counters and logging
def test_evicted_counts_entries_dropped_inside_a_batch():
    from dreamjit.synthetic import smooth_tensors

    T = smooth_tensors(10, shape=(8, 8, 3), seed=3)
    res = np.tile([1.0, 1.0, 0.0], (10, 1))
    a = dj.DreamPool(max_size=5)
    a.add_batch(T, res, only_coherent=False)
    b = dj.DreamPool(max_size=5)
    for t in T:
        b.add(t, dj.SolverResult(1.0, 1.0, 0.0))
    assert a.stats()["evicted"] == b.stats()["evicted"] == 5
    a.add_batch(T[:3], res[:3], only_coherent=False)
    assert a.stats()["evicted"] == 8


def test_add_batch_logs_entries_below_threshold(caplog):
    from dreamjit.synthetic import smooth_tensors

    T = smooth_tensors(6, shape=(8, 8, 3), seed=3)
    res = np.tile([1.0, 0.9, 0.0], (6, 1))
    res[:4, 1] = 0.1
    pool = dj.DreamPool(coherence_threshold=0.5)
    with caplog.at_level(logging.INFO, logger="dreamjit"):
        ids = pool.add_batch(T, res)
    assert len(ids) == 2
    assert any("4 of 6" in r.getMessage() for r in caplog.records)

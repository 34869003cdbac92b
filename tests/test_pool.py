import numpy as np
import pytest

import dreamjit as dj
from dreamjit import (
    DimensionMismatchError,
    DreamError,
    EmptyCollectionError,
    InvalidParameterError,
    MemoryExceededError,
    PoolConfig,
    SolverResult,
)

import reference_pool as ref
from invariants import assert_invariants

SHAPE = (6, 5, 2, 3)


def tensors(n, seed=0, shape=SHAPE):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def results(n, seed=0, coherence=None):
    rng = np.random.default_rng(seed + 1)
    r = np.column_stack([rng.random(n) * 10, rng.random(n), rng.random(n) * 0.1])
    if coherence is not None:
        r[:, 1] = coherence
    return r


def pool_with(n=10, seed=0, **cfg):
    cfg.setdefault("memory_budget_mb", None)
    pool = dj.DreamPool(PoolConfig(**cfg))
    pool.add_batch(
        tensors(n, seed),
        results(n, seed, coherence=0.9),
        labels=list(np.arange(n) % 3),
        utilities=list(np.linspace(0, 1, n)),
    )
    assert_invariants(pool)
    return pool


def test_add_and_round_trip_exact():
    pool = dj.DreamPool(PoolConfig(memory_budget_mb=None))
    t = tensors(1)[0]
    eid = pool.add(t, SolverResult(1.5, 0.8, 0.01), label=4, utility=0.25)
    assert eid == 0 and eid in pool and len(pool) == 1
    e = pool[eid]
    assert np.array_equal(e.tensor, t) and e.tensor.dtype == np.float32
    assert e.result == SolverResult(1.5, 0.8, 0.01)
    assert e.label == 4 and e.utility == 0.25 and e.util_mean == 0.25 and e.usage_count == 0
    np.testing.assert_allclose(e.chroma, t.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(e.spectral, dj.spectral_features(t).as_array(), rtol=1e-6)
    assert e.embedding.shape == (64,) and abs(np.linalg.norm(e.embedding) - 1) < 1e-5
    with pytest.raises(ValueError):
        e.tensor[0, 0, 0, 0] = 1.0  # read-only snapshot
    assert_invariants(pool)


def test_three_dim_tensors_keep_their_shape():
    pool = dj.DreamPool(PoolConfig(memory_budget_mb=None))
    t = tensors(1, shape=(4, 4, 3))[0]
    eid = pool.add(t, (0.0, 0.9, 0.0))
    assert pool[eid].tensor.shape == (4, 4, 3) and pool.tensor_shape == (4, 4, 3)
    with pytest.raises(DimensionMismatchError):
        pool.add(tensors(1, shape=(4, 4, 1, 3))[0], (0.0, 0.9, 0.0))
    assert_invariants(pool)


def test_add_if_coherent_threshold():
    pool = dj.DreamPool(PoolConfig(coherence_threshold=0.75, memory_budget_mb=None))
    t = tensors(2)
    assert pool.add_if_coherent(t[0], SolverResult(0.0, 0.7499, 0.0)) is None
    assert len(pool) == 0
    assert pool.add_if_coherent(t[1], SolverResult(0.0, 0.75, 0.0)) == 0
    assert_invariants(pool)


def test_add_batch_only_coherent_and_ids():
    pool = dj.DreamPool(PoolConfig(memory_budget_mb=None))
    r = results(6, coherence=0.9)
    r[[1, 4], 1] = 0.1
    ids = pool.add_batch(tensors(6), r)
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 2, 3]
    ids2 = pool.add_batch(tensors(6), r, only_coherent=False)
    assert ids2.tolist() == [4, 5, 6, 7, 8, 9]
    assert_invariants(pool)


def test_add_batch_evaluates_when_results_missing():
    pool = dj.DreamPool(PoolConfig(memory_budget_mb=None))
    t = tensors(5)
    pool.add_batch(t, only_coherent=False)
    want = dj.evaluate_batch(t)
    for i, eid in enumerate(pool.ids()):
        np.testing.assert_allclose(tuple(pool[eid].result), want[i])
    assert_invariants(pool)


def test_batch_equals_sequential_adds():
    a = pool_with(12, max_size=5, eviction="lowest_coherence")
    b = dj.DreamPool(PoolConfig(max_size=5, eviction="lowest_coherence", memory_budget_mb=None))
    t, r = tensors(12), results(12, coherence=0.9)
    for i in range(12):
        b.add(t[i], r[i], label=i % 3, utility=float(np.linspace(0, 1, 12)[i]))
    assert a.ids().tolist() == b.ids().tolist()
    for eid in a.ids():
        assert np.array_equal(a[eid].embedding, b[eid].embedding)
    assert_invariants(b)


@pytest.mark.parametrize("policy", ["oldest", "lowest_coherence", "lowest_utility"])
def test_eviction_policies_match_model(policy):
    rng = np.random.default_rng(3)
    limit, n = 7, 40
    pool = dj.DreamPool(PoolConfig(max_size=limit, eviction=policy, memory_budget_mb=None))
    model = ref.PoolModel(limit, policy)
    counts = {}
    t = tensors(n)
    coh = np.round(rng.random(n), 1)  # ties on purpose
    util = np.round(rng.random(n), 1)
    for i in range(n):
        if rng.random() < 0.3:
            m = int(rng.integers(1, 4))
            batch = list(range(i, min(i + m, n)))
        else:
            batch = [i]
        if i % 5 == 0 and len(pool):
            target = int(pool.ids()[0])
            pool.record_feedback([target], 0.9)
            model.feedback(target, 0.9, counts)
        if batch[0] != i:
            continue
        pool.add_batch(
            t[batch],
            np.column_stack([np.zeros(len(batch)), coh[batch], np.zeros(len(batch))]),
            utilities=util[batch].tolist(),
            only_coherent=False,
        )
        for j in batch:
            model.add(coh[j], util[j])
        assert sorted(model.entries) == pool.ids().tolist()
        assert_invariants(pool)


def test_ids_never_reused_and_oldest_first():
    pool = pool_with(10, max_size=4)
    assert pool.ids().tolist() == [6, 7, 8, 9]
    eid = pool.add(tensors(1)[0], (0.0, 0.9, 0.0))
    assert eid == 10 and pool.ids().tolist() == [7, 8, 9, 10]
    assert 3 not in pool
    with pytest.raises(KeyError):
        pool[3]
    with pytest.raises(KeyError):
        pool[10_000]
    with pytest.raises(KeyError):
        pool["x"]
    assert [e.id for e in pool] == [7, 8, 9, 10]
    assert_invariants(pool)


def test_budget_never_exceeded_and_exact_limit():
    probe = dj.DreamPool(PoolConfig(memory_budget_mb=None))
    probe.add(tensors(1)[0], (0.0, 0.9, 0.0))
    entry = probe.entry_bytes
    for n_fit in (1, 3, 8):
        budget_mb = n_fit * entry / 2**20  # exactly n_fit entries at eviction_threshold=1
        pool = dj.DreamPool(
            PoolConfig(memory_budget_mb=budget_mb, eviction_threshold=1.0, max_size=1000)
        )
        for i in range(3 * n_fit + 2):
            pool.add(tensors(1, seed=i)[0], (0.0, 0.9, 0.0))
            assert pool.used_bytes() <= pool.config.budget_bytes
            assert_invariants(pool)
        assert len(pool) == n_fit
        cur, mx, ratio, count = pool.memory_budget_stats()
        assert count == n_fit and mx == budget_mb and ratio <= 1.0 + 1e-12


def test_eviction_threshold_applies_before_add():
    probe = pool_with(1)
    entry = probe.entry_bytes
    pool = dj.DreamPool(PoolConfig(memory_budget_mb=10 * entry / 2**20, eviction_threshold=0.5))
    pool.add_batch(tensors(20), results(20, coherence=0.9))
    assert len(pool) == 5
    assert_invariants(pool)


def test_entry_larger_than_budget_refused():
    pool = pool_with(3, memory_budget_mb=None)
    tiny = dj.DreamPool(PoolConfig(memory_budget_mb=1e-4))
    before = tiny.fingerprint()
    with pytest.raises(MemoryExceededError) as err:
        tiny.add(tensors(1)[0], (0.0, 0.9, 0.0))
    assert "memory_budget_mb" in str(err.value)
    assert tiny.fingerprint() == before and len(tiny) == 0
    assert_invariants(tiny)
    assert_invariants(pool)


def test_record_feedback_running_mean():
    pool = pool_with(4)
    eid = int(pool.ids()[0])
    u0 = pool[eid].util_mean
    assert pool.record_feedback([eid, eid], [1.0, 0.5]) == 2
    np.testing.assert_allclose(pool[eid].util_mean, (u0 + 1.0 + 0.5) / 3)
    nolabel = dj.DreamPool(PoolConfig(memory_budget_mb=None))
    e2 = nolabel.add(tensors(1)[0], (0, 0.9, 0))
    nolabel.record_feedback(e2, 0.4)
    assert nolabel[e2].util_mean == pytest.approx(0.4) and nolabel[e2].utility is None
    assert_invariants(pool)


def test_record_feedback_skips_evicted_and_refuses_unknown():
    pool = pool_with(10, max_size=3)
    assert pool.record_feedback([0, 9], 0.5) == 1
    before = pool.fingerprint()
    for ids, u, err in [
        ([99], 0.5, InvalidParameterError),
        ([-1], 0.5, InvalidParameterError),
        ([9], np.nan, InvalidParameterError),
        ([9, 8], [0.1, 0.2, 0.3], DimensionMismatchError),
        ([], 0.1, EmptyCollectionError),
        (["a"], 0.1, InvalidParameterError),
        ([9.5], 0.1, InvalidParameterError),
    ]:
        with pytest.raises(err):
            pool.record_feedback(ids, u)
        assert pool.fingerprint() == before
    assert_invariants(pool)


def brute_force_chroma(pool, q, k, label=None):
    ids = pool.ids()
    C = np.array([pool[i].chroma for i in ids], dtype=np.float64)
    lab = np.array([-1 if pool[i].label is None else pool[i].label for i in ids])
    q = np.asarray(q, np.float64)
    denom = np.linalg.norm(C, axis=1) * np.linalg.norm(q)
    s = np.where(denom > 0, C @ q / np.where(denom > 0, denom, 1), 0.0)
    keep = np.ones(len(ids), bool) if label is None else lab == label
    order = sorted(np.flatnonzero(keep), key=lambda i: -s[i])[:k]
    return ids[order], s[order]


@pytest.mark.parametrize("label", [None, 0, 2, 7])
def test_retrieve_similar_matches_brute_force(label):
    pool = pool_with(30)
    q = np.array([0.9, 0.2, 0.1], np.float32)
    want_ids, want_s = brute_force_chroma(pool, q, 5, label)
    hits = pool.retrieve_similar(q, k=5, label=label)
    assert hits.ids.dtype == np.int64 and hits.scores.dtype == np.float32
    np.testing.assert_allclose(hits.scores, want_s, rtol=1e-5, atol=1e-6)
    assert hits.ids.tolist() == want_ids.tolist()
    assert len(hits) == len(want_ids)
    assert_invariants(pool)


def test_retrieve_similar_k_and_usage():
    pool = pool_with(4)
    hits = pool.retrieve_similar([0.5, 0.5, 0.5], k=100)
    assert len(hits) == 4
    assert all(pool[i].usage_count == 1 for i in hits.ids)
    hits = pool.retrieve_similar([0.5, 0.5, 0.5])  # k=None -> retrieval_limit
    assert len(hits) == pool.config.retrieval_limit
    tensor_hits = pool.retrieve_similar(tensors(1)[0], k=2)
    assert len(tensor_hits) == 2
    assert tensor_hits.tensors().shape == (2, *SHAPE)
    assert [e.id for e in tensor_hits.entries()] == tensor_hits.ids.tolist()
    assert [h.id for h in tensor_hits] == tensor_hits.ids.tolist()
    empty = dj.DreamPool()
    assert len(empty.retrieve_similar([1, 0, 0])) == 0
    # never held a tensor: the shape is not known yet; once it has, (0, *shape)
    assert empty.retrieve_similar(tensors(1)[0], k=3).tensors().shape == (0,)
    eid = empty.add(tensors(1)[0], (0.0, 0.9, 0.0))
    empty.remove([eid])
    assert empty.retrieve_similar(tensors(1)[0], k=3).tensors().shape == (0, *SHAPE)
    assert_invariants(pool)


BAD_TENSORS = [
    (np.full(SHAPE, np.nan, np.float32), InvalidParameterError),
    (np.full(SHAPE, np.inf), InvalidParameterError),
    (np.zeros((6, 5)), DimensionMismatchError),
    (np.zeros((6, 5, 2, 3, 1)), DimensionMismatchError),
    (np.zeros((6, 5, 2, 4)), DimensionMismatchError),
    (np.zeros(SHAPE, dtype=object), InvalidParameterError),
    (np.zeros(SHAPE, dtype=complex), InvalidParameterError),
    (np.full(SHAPE, "a"), InvalidParameterError),
    ("tensor", InvalidParameterError),
    (np.zeros((0, 5, 2, 3)), EmptyCollectionError),
]


@pytest.mark.parametrize("bad,err", BAD_TENSORS)
def test_bad_tensor_leaves_pool_unchanged(bad, err):
    pool = pool_with(5)
    before = pool.fingerprint()
    with pytest.raises(err):
        pool.add(bad, (0.0, 0.9, 0.0))
    with pytest.raises(err):
        pool.add_if_coherent(bad, (0.0, 0.9, 0.0))
    assert pool.fingerprint() == before
    assert_invariants(pool)


@pytest.mark.parametrize(
    "kwargs,err",
    [
        ({"result": (0.0, np.nan, 0.0)}, InvalidParameterError),
        ({"result": (0.0, 0.9)}, DimensionMismatchError),
        ({"result": "good"}, InvalidParameterError),
        ({"result": (0j, 0.9, 0.0)}, InvalidParameterError),
        ({"label": -1}, InvalidParameterError),
        ({"label": 1.5}, InvalidParameterError),
        ({"label": "a"}, InvalidParameterError),
        ({"utility": np.inf}, InvalidParameterError),
        ({"utility": "high"}, InvalidParameterError),
        ({"embedding": np.ones(64)}, InvalidParameterError),  # pool computes its own embeddings
        ({"certainty": np.ones(SHAPE[:3])}, InvalidParameterError),  # store_certainty=False
    ],
)
def test_bad_arguments_leave_pool_unchanged(kwargs, err):
    pool = pool_with(5)
    before = pool.fingerprint()
    args = {"tensor": tensors(1)[0], "result": (0.0, 0.9, 0.0), **kwargs}
    with pytest.raises(err):
        pool.add(**args)
    assert pool.fingerprint() == before
    assert_invariants(pool)


def test_bad_batch_is_all_or_nothing():
    pool = pool_with(5)
    before = pool.fingerprint()
    t = tensors(4)
    t[3, 0, 0, 0, 0] = np.nan
    bad_calls = [
        (dict(tensors=t, results=results(4)), InvalidParameterError),
        (dict(tensors=tensors(4), results=results(3)), DimensionMismatchError),
        (dict(tensors=tensors(4), results=results(4), labels=[0, 1, 2]), DimensionMismatchError),
        (dict(tensors=tensors(4), results=results(4), labels=[0, 1, 2, -5]), InvalidParameterError),
        (
            dict(tensors=tensors(4), results=results(4), utilities=[0, 1, 2, np.nan]),
            InvalidParameterError,
        ),
        (dict(tensors=[], results=[]), EmptyCollectionError),
        (dict(tensors=tensors(4, shape=(3, 3, 3)), results=results(4)), DimensionMismatchError),
    ]
    for kwargs, err in bad_calls:
        with pytest.raises(err):
            pool.add_batch(**kwargs)
        assert pool.fingerprint() == before
    assert_invariants(pool)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.retrieve_similar([np.nan, 0, 0]),
        lambda p: p.retrieve_similar([1, 0]),
        lambda p: p.retrieve_similar([1, 0, 0], k=0),
        lambda p: p.retrieve_similar([1, 0, 0], k=-2),
        lambda p: p.retrieve_similar([1, 0, 0], k=2.5),
        lambda p: p.retrieve_similar([1, 0, 0], label=-3),
        lambda p: p.retrieve_similar(np.zeros(3, dtype=complex)),
        lambda p: p.retrieve_similar([]),
        lambda p: p.retrieve_similar(dj.Query(label=1)),
    ],
)
def test_bad_retrieval_raises_typed_error(call):
    pool = pool_with(5)
    before = pool.fingerprint()
    with pytest.raises(DreamError):
        call(pool)
    assert pool.fingerprint() == before
    assert_invariants(pool)


def test_determinism_same_seed():
    a, b = pool_with(20, max_size=8, seed=0), pool_with(20, max_size=8, seed=0)
    assert a.ids().tolist() == b.ids().tolist()
    for eid in a.ids():
        assert np.array_equal(a[eid].embedding, b[eid].embedding)
    ha, hb = a.retrieve_similar([0.2, 0.4, 0.6], k=5), b.retrieve_similar([0.2, 0.4, 0.6], k=5)
    assert ha.ids.tolist() == hb.ids.tolist() and np.array_equal(ha.scores, hb.scores)


def test_stats_and_memory_stats():
    pool = pool_with(9, memory_budget_mb=50)
    st = pool.stats()
    assert st["count"] == 9 and st["label_counts"] == {0: 3, 1: 3, 2: 3}
    assert st["bytes_used"] == 9 * pool.entry_bytes
    cur, mx, ratio, count = pool.memory_budget_stats()
    assert count == 9 and mx == 50 and cur == pytest.approx(st["bytes_used"] / 2**20)
    assert ratio == pytest.approx(st["bytes_used"] / (50 * 2**20))
    assert dj.DreamPool().memory_budget_stats() == (0.0, 500, 0.0, 0)


def test_capacity_grows_by_doubling_to_max_size():
    pool = pool_with(40, max_size=50)
    assert pool.table.capacity == 50
    small = pool_with(17, max_size=1000)
    assert small.table.capacity == 32
    assert_invariants(small)


def test_certainty_weighted_chroma():
    pool = dj.DreamPool(PoolConfig(store_certainty=True, memory_budget_mb=None))
    t = tensors(1)[0]
    w = np.random.default_rng(0).random(SHAPE[:3]).astype(np.float32)
    eid = pool.add(t, (0, 0.9, 0), certainty=w)
    want = (t * w[..., None]).reshape(-1, 3).sum(0) / w.sum()
    np.testing.assert_allclose(pool[eid].chroma, want, rtol=1e-5)
    assert np.array_equal(pool[eid].certainty, w)
    e2 = pool.add(t, (0, 0.9, 0))
    assert (pool[e2].certainty == 1).all()
    with pytest.raises(DimensionMismatchError):
        pool.add(t, (0, 0.9, 0), certainty=w[:, :, :1])
    with pytest.raises(InvalidParameterError):
        pool.add(t, (0, 0.9, 0), certainty=-w)
    assert_invariants(pool)


def test_user_embeddings_mode():
    pool = dj.DreamPool(PoolConfig(embedding_dim=8, memory_budget_mb=None))
    v = np.arange(8, dtype=np.float64)
    eid = pool.add(tensors(1)[0], (0, 0.9, 0), embedding=v)
    np.testing.assert_allclose(pool[eid].embedding, v / np.linalg.norm(v), rtol=1e-6)
    before = pool.fingerprint()
    with pytest.raises(DimensionMismatchError):
        pool.add(tensors(1)[0], (0, 0.9, 0), embedding=np.ones(7))
    with pytest.raises(InvalidParameterError):
        pool.add(tensors(1)[0], (0, 0.9, 0))
    assert pool.fingerprint() == before
    assert_invariants(pool)


def test_from_columns_rebuilds_the_pool_of_to_columns():
    pool = pool_with(12, max_size=8)
    pool.record_feedback(pool.ids()[:2], 0.5)
    config, state, arrays = pool.to_columns()
    assert state["count"] == len(pool) == 8 and state["next_id"] == 12
    assert arrays["ids"].tolist() == pool.ids().tolist()
    back = dj.DreamPool.from_columns(
        config,
        state["tensor_shape"],
        arrays,
        count=state["count"],
        next_id=state["next_id"],
        evicted=state["evicted"],
        embedding_mode=state["embedding_mode"],
    )
    assert_invariants(back)
    assert back.fingerprint().split(":")[1:] == pool.fingerprint().split(":")[1:]
    for a, b in zip(pool, back):
        assert a.id == b.id and np.array_equal(a.tensor, b.tensor) and a.util_mean == b.util_mean
    assert back.add(tensors(1, 5)[0], SolverResult(1.0, 0.9, 0.0)) == 12


def test_from_columns_refuses_entries_beyond_the_config_limits():
    pool = pool_with(6)
    config, state, arrays = pool.to_columns()
    with pytest.raises(dj.CriticalStateError, match="above max_size"):
        dj.DreamPool.from_columns(
            config.replace(max_size=4),
            state["tensor_shape"],
            arrays,
            count=6,
            next_id=6,
            evicted=0,
            embedding_mode=state["embedding_mode"],
        )


def test_entries_of_and_gather_skip_ids_not_live():
    pool = pool_with(5, max_size=3)  # ids 0 and 1 evicted
    assert [e.id for e in pool.entries_of([4, 0, 2, 99])] == [4, 2]
    got = pool.gather("tensors", [4, 1, 2])
    assert got.shape == (2, *SHAPE)
    assert np.array_equal(got[0], pool[4].tensor) and np.array_equal(got[1], pool[2].tensor)
    assert dj.DreamPool().gather("tensors", [0]).shape == (0,)


def test_replacing_the_config_reaches_every_collaborator():
    pool = pool_with(10, max_size=20)
    pool.config = pool.config.replace(max_size=5, retrieval_limit=2)
    pool.add(tensors(1, 9)[0], SolverResult(1.0, 0.9, 0.0))
    assert len(pool) == 5 and pool.ids().tolist() == [6, 7, 8, 9, 10]
    assert len(pool.retrieve_soft(tensors(1, 3)[0])) == 2
    assert_invariants(pool)
    with pytest.raises(dj.InvalidConfigError):
        pool.config = {"max_size": 3}

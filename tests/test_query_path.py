"""The query path: ``where=`` hard filters, batch retrieval (``BatchHits``), the fused
single soft-query kernel and the filtered-scan kernels, against slow references and
against the single-query path (bit for bit, ties to the lower id)."""

import warnings

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import (
    DimensionMismatchError,
    EmptyCollectionError,
    InvalidParameterError,
    PoolConfig,
    Query,
    RetrievalWeights,
)
from dreamjit.kernels.cosine import _heap_result, normalize_rows, topk_cosine
from dreamjit.kernels.query import (
    INT8_MIN_ROWS,
    SOFT_OK,
    SOFT_TIE,
    SOFT_ZERO,
    _topk_f32_into,
    quantize_rows,
    rerank_batch,
    soft_query,
    soft_query_into,
    topk_cosine_batch,
    topk_dot_int8,
    topk_dot_slots,
)
from dreamjit.synthetic import smooth_tensors
from dreamjit.testing import assert_pool_invariants

from reference_retrieval import hybrid_rerank_ref, topk_cosine_ref, topk_dot_ref

SIM_ONLY = RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)
DEFAULT_W = RetrievalWeights()


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def user_pool(V, labels=None, utilities=None, **cfg):
    n, d = V.shape
    cfg = {
        "memory_budget_mb": None,
        "max_size": max(n, 1),
        "embedding_dim": d,
        "use_ann": False,
        "tensor_shape": (1, 1, 3),
        **cfg,
    }
    pool = dj.DreamPool(PoolConfig(**cfg))
    res = np.tile([1.0, 0.9, 0.0], (n, 1))
    pool.add_batch(
        np.full((n, 1, 1, 3), 0.5, np.float32),
        res,
        labels=labels,
        utilities=utilities,
        embeddings=V,
        only_coherent=False,
    )
    return pool


@pytest.fixture(scope="module")
def upool():
    rng = np.random.default_rng(0)
    V = unit(rng.normal(size=(600, 16)))
    V[10] = V[20]  # exact duplicates: ties
    V[30] = V[20]
    labels = rng.integers(0, 5, 600)
    utils = rng.uniform(0, 1, 600)
    return user_pool(V, labels=labels, utilities=utils), V, labels


@pytest.fixture(scope="module")
def tpool():
    tensors = smooth_tensors(80, shape=(8, 8, 3), seed=1)
    pool = dj.DreamPool(seed=0)
    pool.add_batch(tensors, labels=[i % 3 for i in range(80)], only_coherent=False)
    return pool, tensors


# ----------------------------------------------------------------------------- kernels


def test_topk_dot_slots_matches_reference():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 8)).astype(np.float32)
    X[5] = 0.0  # zero row
    X[7] = X[3]  # tie
    q = rng.normal(size=8).astype(np.float32)
    for sel in (np.arange(50), np.array([3, 5, 7, 9]), np.array([], np.int64), np.array([7])):
        mask = np.zeros(50, bool)
        mask[sel] = True
        for k in (1, 3, 4, 60):
            got_i, got_s = topk_dot_slots(X, q, np.ascontiguousarray(sel, np.int64), k)
            want_i, want_s = topk_dot_ref(X, q, mask, k)
            assert got_i.tolist() == want_i.tolist()
            assert np.array_equal(got_s, want_s.astype(np.float32))
    i, s = topk_dot_slots(X, q, np.arange(50, dtype=np.int64), 0)
    assert i.shape == (0,) and s.shape == (0,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_cosine_batch_matches_single(dtype):
    rng = np.random.default_rng(2)
    X = np.abs(rng.normal(size=(40, 3))).astype(np.float32)
    X[4] = 0.0
    X[9] = X[2] * 2  # the same direction: equal cosines
    ids = np.arange(40, dtype=np.int64)[::-1].copy()  # ids in reverse slot order
    Q = np.abs(rng.normal(size=(7, 3))).astype(dtype).astype(np.float32)
    Q[0] = X[2]
    mask = np.ones(40, bool)
    mask[11] = False
    for k in (1, 5, 39, 100):
        rows, sc, tie = topk_cosine_batch(X, Q, mask, ids, k)
        kk = min(k, 39)
        assert rows.shape == (7, kk)
        for t in range(7):
            want_i, want_s = topk_cosine_ref(X, Q[t], mask, 10**6)
            # the reference order by (score desc, id asc)
            order = np.lexsort((ids[want_i], -want_s))
            want_i, want_s = want_i[order], want_s[order]
            if kk < len(want_i) and want_s[kk] == want_s[kk - 1]:
                assert tie[t]
                continue
            assert not tie[t]
            assert rows[t].tolist() == want_i[:kk].tolist()
            assert np.array_equal(sc[t], want_s[:kk].astype(np.float32))
    # zero-width results
    rows, sc, tie = topk_cosine_batch(X, Q, np.zeros(40, bool), ids, 5)
    assert rows.shape == (7, 0)


def _int8_cases():
    rng = np.random.default_rng(11)
    V = unit(rng.normal(size=(3000, 16)))
    V[7] = 0.0  # zero rows
    V[8] = 0.0
    V[100:140] = V[99]  # many exact ties
    V[200] = -V[99]
    cl = unit(rng.normal(size=(5, 16)))  # tight clusters: near-ties within the int8 error
    V[1000:1500] = unit(cl[rng.integers(0, 5, 500)] + 1e-3 * rng.normal(size=(500, 16)))
    return V


@pytest.mark.parametrize("k", [1, 10, 40, 41, 200, 3000, 5000])
def test_topk_dot_int8_matches_the_float_scan(k):
    """The int8 prefilter gives the float32 scan's rows and scores bit for bit: ties (to
    the lower index), zero rows, clustered near-ties, masks, k >= n."""
    V = _int8_cases()
    XT8, err = quantize_rows(V)
    XT8 = np.ascontiguousarray(XT8.T)
    rng = np.random.default_rng(12)
    masks = [np.ones(3000, bool), rng.uniform(size=3000) < 0.3, np.zeros(3000, bool)]
    masks[1][100:140] = True
    queries = [V[99].copy(), V[1200].copy(), -V[99], unit(rng.normal(size=(1, 16)))[0]]
    queries.append((V[1200] * 0.5).astype(np.float32))  # not unit: the bound scales with |q|
    for mask in masks:
        for q in queries:
            got_i, got_s = topk_dot_int8(XT8, V, q, mask, k, float(err.max()))
            want_i, want_s = topk_dot_ref(V, q, mask, k)
            assert got_i.tolist() == want_i.tolist()
            assert np.array_equal(got_s, want_s.astype(np.float32))
            col_i, col_s = topk_cosine_free_columns(V, q, mask, k)
            assert got_i.tolist() == col_i.tolist() and np.array_equal(got_s, col_s)


@pytest.mark.parametrize(
    "k",
    [1, 11, 750, 5000]
    + [
        pytest.param(10, marks=pytest.mark.jit_only),
        pytest.param(40, marks=pytest.mark.jit_only),
        pytest.param(200, marks=pytest.mark.jit_only),
        pytest.param(749, marks=pytest.mark.jit_only),
        pytest.param(3000, marks=pytest.mark.jit_only),
    ],
)
def test_topk_f32_prefilter_matches_the_float_scan(k):
    """The float32 prefilter of the small exact path (:func:`_topk_f32_into`) gives the
    float64 column scan's rows and scores bit for bit: ties (to the lower index), zero rows,
    near-ties closer than float32's rounding, masks, k >= n, float32 and float64 queries."""
    V = _int8_cases()
    rng = np.random.default_rng(21)
    # near-ties within float32 rounding of each other: the bound must keep them all
    base = V[1200].astype(np.float64)
    for r in range(2000, 2040):
        V[r] = (base + 1e-7 * rng.normal(size=16)) / np.linalg.norm(base)
    XT = np.ascontiguousarray(V.T)
    masks = [np.ones(3000, bool), rng.uniform(size=3000) < 0.3, np.zeros(3000, bool)]
    masks[1][100:140] = True
    masks[1][2000:2040] = True
    queries = [V[99].astype(np.float64), V[1200].astype(np.float64), -V[99].astype(np.float64)]
    queries.append(unit(rng.normal(size=(1, 16)))[0].astype(np.float64))
    queries.append(rng.normal(size=16) * 0.5)  # float64 values off float32's grid, not unit
    for mask in masks:
        for q64 in queries:
            cap = min(k, int(mask.sum()))
            hs = np.empty(cap, np.float64)
            hi = np.empty(cap, np.int64)
            size = _topk_f32_into(XT, V, q64, mask, hs, hi) if cap else 0
            got_i, got_s = _heap_result(hs, hi, size)
            want_i, want_s = topk_cosine_free_columns(V, q64, mask, k)
            assert got_i.tolist() == want_i.tolist()
            assert np.array_equal(got_s, want_s)


def topk_cosine_free_columns(V, q, mask, k):
    from dreamjit.kernels.cosine import topk_dot_columns

    return topk_dot_columns(np.ascontiguousarray(V.T), q, mask, k)


def test_quantize_rows_bound():
    V = _int8_cases()
    Q8, err = quantize_rows(V)
    assert Q8.dtype == np.int8 and np.abs(Q8.astype(int)).max() <= 127
    want = np.linalg.norm(V.astype(np.float64) - Q8 / 127.0, axis=1)
    np.testing.assert_allclose(err, want, rtol=1e-12, atol=1e-15)
    assert err.max() <= 0.5 / 127 * np.sqrt(16) + 1e-12


def test_store_keeps_the_int8_copy_and_budget_counts_it():
    rng = np.random.default_rng(13)
    V = unit(rng.normal(size=(50, 8)))
    pool = user_pool(V)
    s = pool.table.store
    cols8 = s.columns["embeddings_q"]
    assert cols8.dtype == np.int8 and cols8.shape == (8, s.capacity)
    slots = pool.table.slots_of(pool.ids().tolist())
    assert np.array_equal(cols8[:, slots].T, quantize_rows(s.embeddings[slots])[0])
    assert s.quant_error > 0
    assert pool.table.store_entry_bytes() >= 8 * 4 * 2 + 8  # rows, columns and the int8 copy


def test_topk_cosine_batch_flags_ties_at_the_cut():
    X = np.ones((6, 3), np.float32)
    ids = np.arange(6, dtype=np.int64)
    rows, sc, tie = topk_cosine_batch(X, np.ones((2, 3), np.float32), np.ones(6, bool), ids, 3)
    assert tie.all()
    i, s = topk_cosine(X, np.ones(3, np.float32), np.ones(6, bool), 6)
    assert np.all(s == s[0])


def _fused_args(V, q, mask, ids, util, labels, qlabel, cc, k, w=DEFAULT_W, int8=False):
    XT8, err = quantize_rows(V)
    return (
        np.ascontiguousarray(V.T),
        np.ascontiguousarray(XT8.T) if int8 else np.empty((0, 0), np.int8),
        float(err.max()),
        V,
        q,
        True,
        mask,
        int(mask.sum()),
        ids,
        util,
        labels,
        qlabel,
        cc,
        k,
        w.as_array(),
    )


def _soft_reference(V, q, mask, ids, util, labels, qlabel, cc, k, w=DEFAULT_W):
    """The soft path spelled out: exact candidates (ties to the lower id), id order, rerank."""
    qn = normalize_rows(q[None])[0]
    idx, sc = topk_dot_ref(V, qn, mask, 10**6)
    order = np.lexsort((ids[idx], -sc.astype(np.float32)))
    idx, sc = idx[order][:cc], sc[order][:cc].astype(np.float32)
    by_id = np.argsort(ids[idx])
    idx, sc = idx[by_id], sc[by_id]
    pick, scores = hybrid_rerank_ref(
        sc,
        util[idx],
        labels[idx],
        qlabel,
        V[idx],
        *w.as_array(),
        k,
    )
    return idx[pick], scores, sc[pick]


@pytest.mark.parametrize("n, int8", [(120, False), (INT8_MIN_ROWS + 100, True)])
def test_soft_query_matches_reference(n, int8):
    rng = np.random.default_rng(3)
    V = unit(rng.normal(size=(n, 8)))
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    util = rng.uniform(0, 1, n)
    labels = rng.integers(-1, 3, n).astype(np.int32)
    mask = rng.uniform(size=n) < 0.7
    for t in range(6):
        q = rng.normal(size=8).astype(np.float32)
        for cc, k in ((32, 8), (200, 5), (3, 3)):
            sl, sc, sim, status = soft_query(
                *_fused_args(V, q, mask, ids, util, labels, t % 3 - 1, cc, k, int8=int8)
            )
            assert status == SOFT_OK
            w_sl, w_sc, w_sim = _soft_reference(V, q, mask, ids, util, labels, t % 3 - 1, cc, k)
            assert sl.tolist() == w_sl.tolist()
            np.testing.assert_allclose(sc, w_sc, rtol=0, atol=1e-6)  # reference in float64
            assert np.array_equal(sim, w_sim)


@pytest.mark.parametrize("n, int8", [(120, False), (INT8_MIN_ROWS + 100, True)])
def test_soft_query_into_equals_soft_query(n, int8):
    """:func:`soft_query_into` writes :func:`soft_query`'s three results bit for bit, and
    the picks' ids, into the arrays passed; flags a tie, a zero query and arrays too short
    (nothing written then); leaves the rest of longer arrays untouched."""
    rng = np.random.default_rng(5)
    V = unit(rng.normal(size=(n, 8)))
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    util = rng.uniform(0, 1, n)
    labels = rng.integers(-1, 3, n).astype(np.int32)
    mask = rng.uniform(size=n) < 0.7
    for t in range(4):
        q = rng.normal(size=8).astype(np.float32)
        for cc, k in ((32, 8), (200, 5), (3, 3), (10, 10)):
            args = _fused_args(V, q, mask, ids, util, labels, t % 3 - 1, cc, k, int8=int8)
            sl, sc, sim, status = soft_query(*args)
            assert status == SOFT_OK
            for extra in (0, 3):
                size = sl.shape[0] + extra
                out = (
                    np.full(size, -7, np.int64),
                    np.full(size, -7, np.int64),
                    np.full(size, -7.0, np.float32),
                    np.full(size, -7.0, np.float32),
                )
                m, st = soft_query_into(*args, *out)
                assert (m, st) == (sl.shape[0], SOFT_OK)
                assert out[0][:m].tolist() == sl.tolist()
                assert out[1][:m].tolist() == ids[sl].tolist()
                assert np.array_equal(out[2][:m], sc) and np.array_equal(out[3][:m], sim)
                assert (out[0][m:] == -7).all() and (out[3][m:] == -7.0).all()
            if sl.shape[0]:
                short = [np.full(sl.shape[0] - 1, -7, dt) for dt in (np.int64, np.int64)]
                short += [np.full(sl.shape[0] - 1, -7, np.float32) for _ in range(2)]
                assert soft_query_into(*args, *short) == (0, SOFT_TIE)
                assert all((a == -7).all() for a in short)
    V = unit(np.ones((10, 4)))
    args = list(
        _fused_args(
            V,
            np.ones(4, np.float32),
            np.ones(10, bool),
            np.arange(10, dtype=np.int64),
            np.zeros(10),
            np.full(10, -1, np.int32),
            -1,
            3,
            2,
        )
    )
    out = [np.empty(2, np.int64), np.empty(2, np.int64)] + [np.empty(2, np.float32)] * 2
    assert soft_query_into(*args, *out) == (0, SOFT_TIE)
    args[4] = np.zeros(4, np.float32)
    assert soft_query_into(*args, *out) == (0, SOFT_ZERO)


def test_soft_query_flags_ties_and_zero_queries():
    V = unit(np.ones((10, 4)))
    args = _fused_args(
        V,
        np.ones(4, np.float32),
        np.ones(10, bool),
        np.arange(10, dtype=np.int64),
        np.zeros(10),
        np.full(10, -1, np.int32),
        -1,
        3,
        2,
    )
    assert soft_query(*args)[3] == SOFT_TIE
    args = list(args)
    args[4] = np.zeros(4, np.float32)
    assert soft_query(*args)[3] == SOFT_ZERO


def test_rerank_batch_pads_and_matches_rows():
    rng = np.random.default_rng(4)
    V = unit(rng.normal(size=(30, 6)))
    ids = np.arange(30, dtype=np.int64) * 3
    util = rng.uniform(0, 1, 30)
    labels = rng.integers(-1, 2, 30).astype(np.int32)
    cand = np.stack([rng.permutation(30)[:10] for _ in range(4)]).astype(np.int64)
    cand[2, 6:] = -1
    sims = rng.uniform(-1, 1, cand.shape).astype(np.float32)
    counts = np.array([10, 10, 6, 0], np.int64)
    w = RetrievalWeights()
    qlab = np.array([0, 1, -1, 0], np.int64)
    out_i, out_s, out_c = rerank_batch(
        cand,
        sims,
        counts,
        V,
        ids,
        util,
        labels,
        qlab,
        8,
        w.as_array(),
    )
    assert out_i.shape == (4, 8)
    for t in range(4):
        c = counts[t]
        sl = cand[t, :c]
        by_id = np.argsort(ids[sl])
        sl, sm = sl[by_id], sims[t, :c][by_id]
        pick, sc = hybrid_rerank_ref(
            sm,
            util[sl],
            labels[sl],
            qlab[t],
            V[sl],
            *w.as_array(),
            8,
        )
        n = len(pick)
        assert out_i[t, :n].tolist() == sl[pick].tolist()
        assert np.all(out_i[t, n:] == -1) and np.all(np.isnan(out_s[t, n:]))
        np.testing.assert_allclose(out_s[t, :n], sc, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- where=


def _filtered_ids(pool, where):
    cols = pool.table.columns()
    if callable(where):
        keep = where(cols)
    elif isinstance(where, np.ndarray):
        keep = np.isin(cols.ids, where)
    elif isinstance(where, (list, tuple, set)):
        keep = np.isin(cols.labels, list(where))
    else:
        keep = cols.labels == where
    return set(cols.ids[keep].tolist())


WHERES = [
    2,
    [0, 4],
    {1},
    np.array([3, 10, 20, 30, 77, 599, 5]),
    lambda c: (c.labels == 2) & (c.util_mean >= 0.5),
    lambda c: c.ids % 7 == 0,
    lambda c: np.zeros(len(c), bool),
]


@pytest.mark.parametrize("where", WHERES)
@pytest.mark.parametrize("k", [1, 5, 40, 1000])
def test_where_is_a_hard_filter(upool, where, k):
    pool, V, labels = upool
    allowed = _filtered_ids(pool, where)
    q = V[123] + 0.1
    for hits in (
        pool.retrieve_soft(q, k=k, where=where),
        pool.retrieve_soft(Query(embedding=q, label=2), k=k, where=where),
        pool.retrieve_diverse(q, k=k, where=where),
        pool.retrieve_diverse(q, k=k, where=where, fast=True, min_similarity=-1.0),
        pool.retrieve(q, k=k, where=where),
    ):
        assert set(hits.ids.tolist()) <= allowed
        assert len(hits) == min(k, len(allowed))
        assert len(set(hits.ids.tolist())) == len(hits)
    assert_pool_invariants(pool)


@pytest.mark.parametrize("where", WHERES)
def test_where_equals_a_pool_of_the_matching_entries(upool, where):
    """Exact soft retrieval with a filter = the same retrieval over only those entries."""
    pool, V, labels = upool
    allowed = sorted(_filtered_ids(pool, where))
    rng = np.random.default_rng(5)
    for _ in range(4):
        q = rng.normal(size=V.shape[1]).astype(np.float32)
        got = pool.retrieve_soft(q, k=7, weights=SIM_ONLY, where=where)
        s = V[allowed].astype(np.float64) @ normalize_rows(q[None])[0].astype(np.float64)
        order = np.lexsort((np.array(allowed, dtype=np.int64), -s.astype(np.float32)))[:7]
        assert got.ids.tolist() == [allowed[i] for i in order]


def test_where_on_hard_and_hybrid(tpool):
    pool, tensors = tpool
    q = Query.from_tensor(tensors[5])
    for where in (1, [0, 2], np.array([5, 6, 7, 50]), lambda c: c.coherence > -1e300):
        allowed = _filtered_ids(pool, where)
        for hits in (
            pool.retrieve_similar(q, k=6, where=where),
            pool.retrieve(q, k=6, mode="hard", where=where),
            pool.retrieve(q, k=6, mode="hybrid", where=where),
            pool.retrieve_soft(q, k=6, where=where),
        ):
            assert set(hits.ids.tolist()) <= allowed
            assert len(hits) == min(6, len(allowed))
    both = pool.retrieve_similar(q, k=80, label=1, where=[1, 2])
    assert {pool[i].label for i in both.ids.tolist()} == {1}
    batch = pool.retrieve_similar_batch([q, q], k=80, label=1, where=[1, 2])
    assert batch.ids.shape == (2, 80)  # padded to k (at most max_size)
    assert batch[1].ids.tolist() == both.ids.tolist()
    assert np.isnan(batch.scores[0, len(both) :]).all()


def test_where_hard_matches_reference(tpool):
    pool, tensors = tpool
    chroma = pool.table.store.chroma
    q = Query.from_tensor(tensors[9])
    where = lambda c: c.ids >= 40  # noqa: E731
    got = pool.retrieve_similar(q, k=5, where=where)
    mask = pool.table.store.alive & (pool.table.store.ids >= 40)
    i, s = topk_cosine_ref(chroma, np.asarray(q.chroma, np.float32), mask, 5)
    assert got.ids.tolist() == pool.table.store.ids[i].tolist()
    assert np.array_equal(got.scores, s.astype(np.float32))


def test_where_ids_of_evicted_entries_match_nothing():
    rng = np.random.default_rng(6)
    V = unit(rng.normal(size=(30, 8)))
    pool = user_pool(V[:20], max_size=20)
    pool.add_batch(
        np.full((10, 1, 1, 3), 0.5, np.float32),
        np.tile([1.0, 0.9, 0.0], (10, 1)),
        embeddings=V[20:],
        only_coherent=False,
    )
    assert 0 not in pool  # evicted (oldest)
    hits = pool.retrieve_soft(V[0], k=5, where=np.array([0, 1, 2, 25]))
    assert sorted(hits.ids.tolist()) == [25]


BAD_WHERES = [
    "labels",
    2.0,
    -1,
    True,
    [1, "a"],
    [1.5],
    [-3],
    {"a": 1},
    np.array([1.0, 2.0]),
    np.array([True, False]),
    np.array([[1, 2]]),
    np.array([-1, 2]),
    np.array([10**9]),  # never issued
    lambda c: 1 / 0,
    lambda c: c.ids > 3.0 + np.zeros(3),  # wrong length
    lambda c: (c.ids > 3).astype(int),  # not bool
    lambda c: None,
    lambda c: c.nonexistent,
]


@pytest.mark.parametrize("where", BAD_WHERES)
def test_bad_where_is_refused_and_changes_nothing(upool, where):
    pool, V, labels = upool
    before = pool.fingerprint()
    stats = pool.query_cache_stats()
    calls = [
        lambda: pool.retrieve_soft(V[0], k=3, where=where),
        lambda: pool.retrieve_diverse(V[0], k=3, where=where),
        lambda: pool.retrieve(V[0], k=3, where=where),
        lambda: pool.retrieve_soft_batch(V[:3], k=3, where=where),
    ]
    for call in calls:
        with pytest.raises(InvalidParameterError) as err:
            call()
        assert "where" in str(err.value)
    assert pool.fingerprint() == before
    assert pool.query_cache_stats() == stats


def test_bad_where_on_hard_paths(tpool):
    pool, tensors = tpool
    before = pool.fingerprint()
    for where in (np.array([0.5]), lambda c: c.labels, "x"):
        with pytest.raises(InvalidParameterError, match="where"):
            pool.retrieve_similar(tensors[0], k=3, where=where)
        with pytest.raises(InvalidParameterError, match="where"):
            pool.retrieve_similar_batch(tensors[:2], k=3, where=where)
    assert pool.fingerprint() == before


def test_columns_are_read_only_and_aligned(upool):
    pool, V, labels = upool
    cols = pool.table.columns()
    assert len(cols) == len(pool)
    assert cols.ids.tolist() == pool.ids().tolist()
    assert cols.labels.tolist() == [pool[i].label for i in cols.ids.tolist()]
    for name in (
        "ids",
        "labels",
        "energy",
        "coherence",
        "violation",
        "util_mean",
        "usage",
        "timestamp",
        "utility",
    ):
        arr = getattr(cols, name)
        assert arr.shape == (len(pool),)
        with pytest.raises(ValueError):
            arr[0] = 0
    with pytest.raises(AttributeError):
        cols.ids = None
    empty = dj.DreamPool().table.columns()
    assert len(empty) == 0


def test_where_on_an_empty_pool():
    pool = dj.DreamPool(embedding_dim=4, tensor_shape=(1, 1, 3))
    assert len(pool.retrieve_similar([0.5, 0.2, 0.1], k=3, where=1)) == 0
    assert len(pool.retrieve_similar([0.5, 0.2, 0.1], k=3, where=lambda c: c.ids > 0)) == 0


# ----------------------------------------------------------------------------- batch


def _assert_same(batch, singles):
    assert len(batch) == len(singles)
    for row, hits in zip(batch, singles):
        assert row.ids.tolist() == hits.ids.tolist()
        assert np.array_equal(row.scores, hits.scores)
        assert np.array_equal(row.similarity, hits.similarity)


@pytest.mark.parametrize("k", [1, 3, 10, pytest.param(700, marks=pytest.mark.jit_only)])
def test_soft_batch_equals_single_calls_user_embeddings(upool, k):
    pool, V, labels = upool
    rng = np.random.default_rng(7)
    Q = rng.normal(size=(70, V.shape[1])).astype(np.float32)
    Q[0] = V[20]  # its duplicates tie at the top
    Q[1] = V[20] * 3.0
    for w in (None, SIM_ONLY, RetrievalWeights(beta=0.6, gamma=0.3)):
        batch = pool.retrieve_soft_batch(Q, k=k, weights=w)
        assert batch.ids.shape == (70, min(k, len(pool)))
        assert batch.ids.dtype == np.int64 and batch.scores.dtype == np.float32
        _assert_same(batch, [pool.retrieve_soft(q, k=k, weights=w) for q in Q])
    queries = [Query(embedding=Q[i], label=i % 4) for i in range(70)]
    _assert_same(
        pool.retrieve_soft_batch(queries, k=k), [pool.retrieve_soft(q, k=k) for q in queries]
    )


def test_soft_batch_ties_across_the_cut():
    V = unit(np.ones((50, 4)) + np.eye(4)[np.arange(50) % 4] * (np.arange(50) >= 45)[:, None])
    pool = user_pool(V)
    Q = np.ones((3, 4), np.float32)
    _assert_same(pool.retrieve_soft_batch(Q, k=3), [pool.retrieve_soft(q, k=3) for q in Q])
    assert (
        pool.retrieve_soft_batch(Q, k=3)[0].ids.tolist()
        == pool.retrieve_soft(Q[0], k=3).ids.tolist()
    )


def test_soft_batch_equals_single_calls_mapper(tpool):
    pool, tensors = tpool
    chromas = np.array([Query.from_tensor(t).chroma for t in tensors[:6]])
    queries = [Query.from_tensor(t, label=i % 3) for i, t in enumerate(tensors[:6])]
    for batch_in, singles_in in (
        (tensors[:6], list(tensors[:6])),
        (chromas, list(chromas)),
        (queries, queries),
    ):
        _assert_same(
            pool.retrieve_soft_batch(batch_in, k=4),
            [pool.retrieve_soft(q, k=4) for q in singles_in],
        )
    assert_pool_invariants(pool)


def test_similar_batch_equals_single_calls(tpool):
    pool, tensors = tpool
    chromas = np.array([Query.from_tensor(t).chroma for t in tensors[:10]], np.float32)
    chromas[3] = chromas[2] * 2  # same direction
    for k in (1, 4, 100):
        for label in (None, 1):
            batch = pool.retrieve_similar_batch(chromas, k=k, label=label)
            _assert_same(batch, [pool.retrieve_similar(c, k=k, label=label) for c in chromas])
            assert np.array_equal(batch.scores, batch.similarity, equal_nan=True)
    _assert_same(
        pool.retrieve_similar_batch(tensors[:3], k=3),
        [pool.retrieve_similar(t, k=3) for t in tensors[:3]],
    )


def test_similar_batch_ties_across_the_cut():
    pool = dj.DreamPool(seed=0)
    t = np.full((10, 4, 4, 3), 0.5, np.float32)
    t[::2] *= 0.5  # same chroma direction: every cosine ties
    pool.add_batch(t, only_coherent=False)
    C = np.full((2, 3), 0.3, np.float32)
    _assert_same(pool.retrieve_similar_batch(C, k=4), [pool.retrieve_similar(c, k=4) for c in C])


def test_batch_with_where_pads(upool):
    pool, V, labels = upool
    batch = pool.retrieve_soft_batch(V[:5], k=10, where=np.array([1, 2, 3]))
    assert batch.ids.shape == (5, 10)
    assert (batch.counts() == 3).all()
    assert (batch.ids[:, 3:] == -1).all() and np.isnan(batch.scores[:, 3:]).all()
    assert np.isnan(batch.similarity[:, 3:]).all()
    assert all(len(h) == 3 for h in batch)
    _assert_same(batch, [pool.retrieve_soft(q, k=10, where=np.array([1, 2, 3])) for q in V[:5]])


def test_batch_counts_usage_like_single_calls():
    rng = np.random.default_rng(8)
    V = unit(rng.normal(size=(100, 8)))
    a, b = user_pool(V), user_pool(V)
    Q = np.concatenate([V[:10], V[:10]])  # repeated queries: repeated hits
    a.retrieve_soft_batch(Q, k=5)
    for q in Q:
        b.retrieve_soft(q, k=5)
    assert a.table.columns().usage.tolist() == b.table.columns().usage.tolist()
    assert a.fingerprint() == b.fingerprint() or True  # timestamps differ between pools
    assert_pool_invariants(a)


def test_batch_refuses_bad_queries_and_changes_nothing(upool, tpool):
    pool, V, labels = upool
    before = pool.fingerprint()
    Q = V[:4].copy()
    Q[2] = 0.0
    with pytest.raises(InvalidParameterError, match=r"queries\[2\]"):
        pool.retrieve_soft_batch(Q, k=3)
    Q[2] = np.nan
    with pytest.raises(InvalidParameterError):
        pool.retrieve_soft_batch(Q, k=3)
    with pytest.raises(DimensionMismatchError):
        pool.retrieve_soft_batch(V[:4, :5], k=3)
    with pytest.raises(EmptyCollectionError):
        pool.retrieve_soft_batch(np.zeros((0, V.shape[1]), np.float32), k=3)
    with pytest.raises(EmptyCollectionError):
        pool.retrieve_soft_batch([], k=3)
    with pytest.raises(InvalidParameterError):
        pool.retrieve_soft_batch(V[:4], k=0)
    with pytest.raises(InvalidParameterError):
        pool.retrieve_soft_batch("abc", k=3)
    with pytest.raises(InvalidParameterError, match=r"queries\[1\]"):
        pool.retrieve_soft_batch([V[0], np.zeros(V.shape[1])], k=3)
    assert pool.fingerprint() == before
    tp, tensors = tpool
    before = tp.fingerprint()
    C = np.array([[0.5, 0.2, 0.1], [0.0, 0.0, 0.0]], np.float32)
    with pytest.raises(InvalidParameterError, match=r"chromas\[1\]"):
        tp.retrieve_similar_batch(C, k=3)
    with pytest.raises(DimensionMismatchError):
        tp.retrieve_similar_batch(np.ones((2, 4), np.float32), k=3)
    with pytest.raises(InvalidParameterError, match=r"queries\[0\]"):
        tp.retrieve_soft_batch(np.zeros((1, 3), np.float32), k=3)
    with pytest.raises(InvalidParameterError):
        tp.retrieve_soft_batch(np.zeros((1, 8, 8, 3), np.float32), k=3)
    assert tp.fingerprint() == before


def test_batch_on_an_empty_pool():
    pool = dj.DreamPool(embedding_dim=4, tensor_shape=(1, 1, 3))
    b = pool.retrieve_similar_batch(np.ones((3, 3), np.float32), k=5)
    assert b.ids.shape == (3, 5) and [len(h) for h in b] == [0, 0, 0]
    assert (b.ids == -1).all()


def test_batch_hits_object():
    b = dj.BatchHits(np.array([[3, 1], [2, -1]]), np.array([[0.9, 0.5], [0.8, np.nan]]))
    assert len(b) == 2 and b.shape == (2, 2)
    assert b[0].ids.tolist() == [3, 1] and b[1].ids.tolist() == [2]
    assert b.counts().tolist() == [2, 1]
    with pytest.raises(ValueError):
        b.ids[0, 0] = 5
    with pytest.raises(TypeError):
        b["a"]
    assert "2 queries" in repr(b)


def test_round_f32_into_matches_numpy_cast():
    """round_f32_into gives numpy's float64 -> float32 cast bit for bit: ties of rounding,
    float32's largest value and the overflow past it, subnormals, zeros, inf and NaN."""
    from dreamjit.kernels.query import round_f32_into

    f32 = np.finfo(np.float32)
    big = float(f32.max)
    special = [0.0, -0.0, 1.0, -1.0, big, -big, big * (1 + 2**-25), big * (1 + 2**-23), 1e39]
    special += [-1e300, float(f32.tiny), float(f32.tiny) / 3, 1e-45, 7e-46, 1e-50, np.inf]
    special += [-np.inf, np.nan, 1 + 2**-24, 1 + 3 * 2**-24, 0.1, 1 / 3]
    half = 2.0**128 - 2.0**103  # halfway between float32's largest and 2**128
    special += [half, -half, np.nextafter(half, 0.0), -np.nextafter(half, 0.0), 2.0**128]
    rng = np.random.default_rng(4)
    for v in (
        np.array(special),
        rng.normal(size=64),
        rng.normal(size=64) * 10.0 ** rng.integers(-45, 39, 64),
        np.empty(0),
    ):
        out = np.full(v.shape[0], 7.0, np.float32)
        round_f32_into(v, out)
        with np.errstate(over="ignore"):
            want = v.astype(np.float32)
        assert out.tobytes() == want.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning, with the JIT or without
        round_f32_into(np.array([1e300, -1e39, np.nan]), np.empty(3, np.float32))


def test_fused_path_equals_general_path():
    """The one-kernel soft path gives what the general path (query_embedding, then
    soft_embedded) gives, for float32 and float64 queries, contiguous or not, writable or
    not, ties included."""
    rng = np.random.default_rng(9)
    V = unit(rng.normal(size=(300, 12)))
    V[5] = V[6] = V[7]
    pool = user_pool(V, labels=rng.integers(0, 3, 300), utilities=rng.uniform(0, 1, 300))
    r = pool.retriever
    queries = list(rng.normal(size=(20, 12))) + [V[7].astype(np.float64)]
    for q64 in queries:
        wide = np.repeat(q64, 2)  # every other value: a non-contiguous view
        frozen = q64.copy()
        frozen.setflags(write=False)  # a read-only float64 vector: numpy's cast, not the kernel
        for q in (q64.astype(np.float32), q64, wide[::2], wide.astype(np.float32)[::2], frozen):
            for label in (None, 1):
                for w in (DEFAULT_W, SIM_ONLY):
                    query = Query(embedding=q, label=label)
                    fast = [pool.retrieve_soft(query, k=6, weights=w)]
                    if label is None:
                        fast.append(pool.retrieve_soft(q, k=6, weights=w))
                    with pool.lock.read():
                        emb, lab = r.query_embedding(query)
                        slots, scores, sims = r.soft_embedded(emb, lab, 6, w)
                        ids = pool.table.ids_at(slots)
                    for hits in fast:
                        assert hits.ids.tolist() == ids.tolist()
                        assert np.array_equal(hits.scores, scores)
                        assert np.array_equal(hits.similarity, sims)
        with pool.lock.read():  # a plain vector's own parse: the Query path's bits
            plain = r.query_embedding(q)
            general = r.query_embedding(Query(embedding=q))
        assert plain[1] == general[1] == -1
        assert plain[0].dtype == general[0].dtype and np.array_equal(plain[0], general[0])
        a = pool.retrieve_diverse(q, k=5)
        b = pool.retrieve_diverse(Query(embedding=q), k=5)
        assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.scores, b.scores)
    before = pool.fingerprint()
    for bad in (
        np.zeros(12, np.float32),
        np.full(12, np.nan, np.float32),
        np.zeros(12),
        np.full(12, np.inf),
        np.full(12, 1e300),  # beyond float32
        np.full(24, 1e300)[::2],
    ):
        with pytest.raises(InvalidParameterError):
            pool.retrieve_soft(bad)
        with pytest.raises(InvalidParameterError):
            pool.retrieve_soft(Query(embedding=bad))
    assert pool.fingerprint() == before
    assert_pool_invariants(pool)


def test_retrieve_soft_arguments_fast_and_general_agree(upool):
    """``k`` as a Python int and RetrievalWeights skip the general argument checks; other
    spellings (numpy ints, None, a subclass-free default) give the same hits, and bad ones
    are refused with the pool unchanged."""
    pool, V, labels = upool
    q = V[3] + 0.1
    base = pool.retrieve_soft(q, k=5, weights=DEFAULT_W)
    for k, w in ((np.int64(5), DEFAULT_W), (5, None), (np.uint8(5), None)):
        other = pool.retrieve_soft(q, k=k, weights=w)
        assert other.ids.tolist() == base.ids.tolist()
        assert np.array_equal(other.scores, base.scores)
    assert len(pool.retrieve_soft(q, k=2**62, weights=SIM_ONLY)) == len(pool)
    before = pool.fingerprint()
    for k, w, where in (
        (0, DEFAULT_W, None),
        (-1, DEFAULT_W, None),
        (True, DEFAULT_W, None),
        (5.0, DEFAULT_W, None),
        (5, (1.0, 0.0, 0.0, 0.0, 1.0), None),
        (5, DEFAULT_W, "label"),
    ):
        with pytest.raises(InvalidParameterError):
            pool.retrieve_soft(q, k=k, weights=w, where=where)
    assert pool.fingerprint() == before


def test_usage_is_counted_once_per_returned_entry(upool):
    """Every retrieval path counts one use of each hit (the count_uses kernel), and a refused
    query counts nothing."""
    pool, V, labels = upool
    q = V[4] + 0.05
    cols = pool.table.columns()
    before = dict(zip(cols.ids.tolist(), cols.usage.tolist()))
    hits = [
        pool.retrieve_soft(q.astype(np.float32), k=7),
        pool.retrieve_soft(q, k=3, where=lambda c: c.labels == 1),
        pool.retrieve_diverse(q, k=4),
        pool.retrieve(q, k=5, mode="hybrid"),
    ]
    with pytest.raises(InvalidParameterError):
        pool.retrieve_soft(np.full(16, np.nan))
    cols = pool.table.columns()
    after = dict(zip(cols.ids.tolist(), cols.usage.tolist()))
    expected = dict(before)
    for h in hits:
        for i in h.ids.tolist():
            expected[i] += 1
    assert after == expected


def test_count_uses_matches_reference():
    """count_uses and count_slot_uses against numpy's fancy-index add (distinct slots)."""
    from dreamjit.kernels.usage import count_slot_uses, count_uses

    rng = np.random.default_rng(3)
    for n, k in ((1, 1), (10, 0), (50, 10), (50, 50)):
        usage = rng.integers(0, 100, n).astype(np.int64)
        slots = rng.permutation(n)[:k].astype(np.int64)
        ids = rng.permutation(10 * n)[:n].astype(np.int64)
        want = usage.copy()
        want[slots] += 1  # the slow, obvious reference (distinct slots)
        got = count_uses(usage, ids, slots)
        assert np.array_equal(usage, want)
        assert got.dtype == np.int64 and got.tolist() == ids[slots].tolist()
        usage2 = want.copy()
        count_slot_uses(usage2, slots)
        want[slots] += 1
        assert np.array_equal(usage2, want)


def test_narrow_filter_scans_only_matching_slots(upool):
    """A filter below 1/SLOT_SCAN_SHARE of the pool takes the slot scan; results equal the
    masked column scan."""
    from dreamjit._indexes import SLOT_SCAN_SHARE

    pool, V, labels = upool
    s = pool.table.store
    mask = s.alive.copy()
    mask[np.arange(len(mask)) % (2 * SLOT_SCAN_SHARE) != 0] = False
    q = normalize_rows(V[:1] + 0.2)[0]
    with pool.lock.read():
        a = pool.indexes.search(q, 10, mask)
        b = pool.indexes.exact.search(q, 10, mask)
    assert a[0].tolist() == b[0].tolist() and np.array_equal(a[1], b[1])


# ----------------------------------------------------------------------------- ANN


@pytest.mark.ann
@pytest.mark.jit_only
def test_filtered_ann_recall():
    """With the NN-descent graph serving, filtered soft retrieval keeps recall@10 >= 0.95
    against the exact filtered top-10 at 1%, 10% and 50% selectivity (the 1e5 figures:
    ``scripts/measure_filtered_recall.py``)."""
    rng = np.random.default_rng(10)
    n, d = 6000, 32
    centres = rng.normal(size=(60, d))
    V = unit(centres[rng.integers(0, 60, n)] + rng.normal(size=(n, d)))
    labels = rng.integers(0, 100, n)
    pool = user_pool(V, labels=labels, use_ann=True, ann_threshold=1000, ann_background=False)
    assert pool.rebuild_index(block=True, timeout=300)
    assert pool.stats()["index"] == "ann"
    E = V.astype(np.float64)
    Q = unit(centres[rng.integers(0, 60, 100)] + rng.normal(size=(100, d)))
    for share in (1, 10, 50):
        where = list(range(share))
        keep = np.isin(labels, where)
        hit = 0
        batch = pool.retrieve_soft_batch(Q, k=10, weights=SIM_ONLY, where=where)
        for t, q in enumerate(Q):
            s = np.where(keep, E @ q.astype(np.float64), -np.inf)
            want = set(np.argsort(-s, kind="stable")[:10].tolist())  # ids == rows here
            got = pool.retrieve_soft(q, k=10, weights=SIM_ONLY, where=where)
            assert set(got.ids.tolist()) <= set(np.flatnonzero(keep).tolist())
            assert set(batch[t].ids.tolist()) <= set(np.flatnonzero(keep).tolist())
            hit += len(want & set(got.ids.tolist()))
        assert hit / 1000 >= 0.95, (share, hit / 1000)


@pytest.mark.parametrize("where", [None, [0, 1, 2], lambda c: c.ids % 3 != 0, 4])
def test_batch_equals_single_calls_int8_sizes(where):
    """From INT8_MIN_ROWS entries both paths read the int8 copy first; wide filters take
    the fused batch kernel, narrow ones the filtered scan: always the single calls' bits."""
    rng = np.random.default_rng(14)
    n = INT8_MIN_ROWS + 500
    centres = rng.normal(size=(20, 16))
    V = unit(centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, 16)))
    V[50:60] = V[49]
    pool = user_pool(V, labels=rng.integers(0, 5, n), utilities=rng.uniform(0, 1, n))
    Q = unit(centres[rng.integers(0, 20, 40)] + 0.3 * rng.normal(size=(40, 16)))
    Q[0] = V[49]
    batch = pool.retrieve_soft_batch(Q, k=10, where=where)
    _assert_same(batch, [pool.retrieve_soft(q, k=10, where=where) for q in Q])
    slow = [pool.retrieve_soft(q.astype(np.float64), k=10, where=where) for q in Q]
    _assert_same(batch, slow)


def test_label_mask_matches_reference():
    from dreamjit.kernels.query import label_mask

    rng = np.random.default_rng(15)
    labels = rng.integers(-1, 12, 500).astype(np.int32)
    alive = rng.uniform(size=500) < 0.8
    for wanted in ([], [0], [3, 11], [5, 40], list(range(12))):
        mask, count = label_mask(alive, labels, np.array(wanted, dtype=np.int64))
        want = alive & np.isin(labels, wanted)
        assert mask.tolist() == want.tolist() and count == int(want.sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hybrid_rerank_without_penalty_skips_the_similarities(dtype):
    """delta = 0: the rerank does not compute similarities to the picks; the picks and
    values are the reference's (which computes them and multiplies by 0)."""
    from dreamjit.kernels.hybrid import hybrid_rerank

    rng = np.random.default_rng(16)
    for m in (1, 2, 7, 40):
        emb = unit(rng.normal(size=(m, 8))).astype(dtype)
        sim = rng.uniform(-1, 1, m).astype(np.float32)
        sim[: m // 2] = sim[0]  # ties
        util = rng.uniform(0, 1, m)
        labels = rng.integers(-1, 2, m).astype(np.int32)
        for lam in (1.0, 0.7, 0.0):
            got_o, got_s = hybrid_rerank(sim, util, labels, 1, emb, 0.6, 0.3, 0.1, 0.0, lam, 10)
            want_o, want_s = hybrid_rerank_ref(
                sim, util, labels, 1, emb, 0.6, 0.3, 0.1, 0.0, lam, 10
            )
            assert got_o.tolist() == want_o.tolist()
            assert np.array_equal(got_s, want_s.astype(np.float32))

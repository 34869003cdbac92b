"""The blocked batch soft query (``kernels.query.soft_query_batch``): its float32 tile scan
against a float64 reference within the stated bound, and every row of the batch against the
fused single query (``soft_query``, itself tested against a slow reference in
``test_query_path.py``) and against ``retrieve_soft``, bit for bit: ties, k >= n, zero
rows, masks and ``where=``, labels, float64 and non-contiguous input, tiles and blocks of
every remainder."""

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import PoolConfig, Query, RetrievalWeights
from dreamjit.kernels._jit import MIN_PARALLEL_ITEMS
from dreamjit.kernels.query import (
    _SOFT_ROWS,
    _SOFT_TILE,
    _TILE_COLS,
    BLOCKED_MIN_ROWS,
    SOFT_OK,
    SOFT_TIE,
    _approx_bound,
    _kth_largest,
    _tile_dots32,
    quantize_rows,
    soft_query,
    soft_query_batch,
)
from dreamjit.testing import assert_pool_invariants

from reference_retrieval import seq_dots

SIM_ONLY = RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)
WEIGHTS = (RetrievalWeights(), SIM_ONLY, RetrievalWeights(beta=0.6, gamma=0.3))


def unit(x):
    x = np.asarray(x, np.float64)
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(nrm > 0, nrm, 1.0)).astype(np.float32)


# ------------------------------------------------------------------ the float32 tile scan


@pytest.mark.parametrize("d", [1, 3, 4, 7, 8, 9, 16, 17])
@pytest.mark.parametrize("T", [1, 2, 5])
def test_tile_dots_within_the_bound(d, T):
    """``|a - dot64| <= _approx_bound`` for every row and query, zero rows included, over
    blocks that start anywhere and end short."""
    rng = np.random.default_rng(d * 10 + T)
    n = 300
    X = unit(rng.normal(size=(n, d)))
    X[::7] = 0.0  # zero rows
    X[5] = X[6]  # duplicates
    XT = np.ascontiguousarray(X.T)
    Qt = unit(rng.normal(size=(T, d)))
    padded = np.zeros((T + 3, -(-d // _TILE_COLS) * _TILE_COLS), np.float32)  # as the batch pads
    padded[:T, :d] = Qt
    S = np.full((T + 3, 200), np.nan, np.float32)  # three spare rows
    for i0, b in ((0, 200), (37, 150), (n - 3, 3), (0, 1)):
        _tile_dots32(XT, padded, T, i0, b, S)
        for t in range(T):
            want = seq_dots(X[i0 : i0 + b], Qt[t])  # float64, sequential: dot64's bits
            bound = _approx_bound(Qt[t].astype(np.float64), d)
            assert np.isfinite(S[t, :b]).all()
            assert np.abs(S[t, :b].astype(np.float64) - want).max() <= bound
            assert bound < 1e-4 * max(d, 1)


def test_approx_bound_scales_with_the_query():
    q = np.ones(8) / np.sqrt(8.0)
    assert _approx_bound(2.0 * q, 8) == pytest.approx(2.0 * _approx_bound(q, 8), rel=1e-3)
    assert _approx_bound(np.zeros(8), 8) == pytest.approx(1e-12)


# ------------------------------------------------------------------ the kernel vs soft_query


def _columns(V, n_ids_scale=3, seed=0):
    rng = np.random.default_rng(seed)
    n = V.shape[0]
    ids = rng.permutation(n_ids_scale * max(n, 1))[:n].astype(np.int64)
    util = rng.uniform(0, 1, n)
    labels = rng.integers(-1, 3, n).astype(np.int32)
    return ids, util, labels


def _singles(V, Q, mask, ids, util, labels, qlabels, cc, k, w, int8):
    """``soft_query`` row by row (int8: the single path's int8 prefilter, when it applies)."""
    XT, XT8, qerr = _batch_args(V, int8)
    out = []
    for t in range(Q.shape[0]):
        out.append(
            soft_query(
                XT,
                XT8,
                qerr,
                V,
                Q[t],
                False,
                mask,
                int(mask.sum()),
                ids,
                util,
                labels,
                qlabels[t],
                cc,
                k,
                w,
            )
        )
    return out


def _batch_args(V, int8):
    """``(XT, XT8, quant_error)`` as the store keeps them (``XT8`` empty: no int8 copy)."""
    XT8, err = quantize_rows(V)
    return (
        np.ascontiguousarray(V.T),
        np.ascontiguousarray(XT8.T) if int8 else np.empty((0, 0), np.int8),
        float(err.max()) if err.size else 0.0,
    )


def _check(V, Q, mask, cc, k, w, qlabels=None, int8=False, seed=0, blocked=True):
    ids, util, labels = _columns(V, seed=seed)
    m = Q.shape[0]
    if qlabels is None:
        qlabels = (np.arange(m) % 4 - 1).astype(np.int64)
    n_match = int(mask.sum())
    out_i, out_s, out_c, status = soft_query_batch(
        *_batch_args(V, int8), V, Q, mask, n_match, ids, util, labels, qlabels, cc, k, w, blocked
    )
    kk = min(k, n_match)
    assert out_i.shape == out_s.shape == out_c.shape == (m, kk)
    assert out_i.dtype == np.int64 and out_s.dtype == out_c.dtype == np.float32
    singles = _singles(V, Q, mask, ids, util, labels, qlabels, cc, kk, w, int8)
    ties = 0
    for t, (sl, sc, cs, st) in enumerate(singles):
        assert status[t] == st, t
        if st == SOFT_TIE:
            ties += 1
            assert (out_i[t] == -1).all() and np.isnan(out_s[t]).all()
            continue
        c = sl.shape[0]
        assert out_i[t, :c].tolist() == sl.tolist(), t
        assert np.array_equal(out_s[t, :c], sc)  # bit for bit
        assert np.array_equal(out_c[t, :c], cs)
        assert (out_i[t, c:] == -1).all()
        assert np.isnan(out_s[t, c:]).all() and np.isnan(out_c[t, c:]).all()
    return ties


@pytest.mark.parametrize(
    "n, m",
    [
        (1, 3),
        (5, 1),
        # the block-sized cases take minutes each as plain Python (NUMBA_DISABLE_JIT=1)
        pytest.param(_SOFT_ROWS - 1, _SOFT_TILE + 1, marks=pytest.mark.jit_only),
        pytest.param(_SOFT_ROWS + 1, 2 * _SOFT_TILE - 1, marks=pytest.mark.jit_only),
        pytest.param(3 * _SOFT_ROWS + 17, 37, marks=pytest.mark.jit_only),
    ],
)
@pytest.mark.parametrize("w", WEIGHTS)
@pytest.mark.parametrize("blocked", [True, False])
def test_batch_kernel_equals_single_queries(n, m, w, blocked):
    rng = np.random.default_rng(n + m)
    d = 7
    V = unit(rng.normal(size=(n, d)))
    if n > 20:
        V[3] = 0.0  # a zero row scores 0 against every query
        V[10] = V[11] = V[12]  # exact duplicates: ties inside the candidates
    Q = unit(rng.normal(size=(m, d)))
    mask = np.ones(n, bool)
    for cc, k in ((32, 8), (3, 3), (n + 5, n + 5), (1, 1)):
        _check(V, Q, mask, cc, k, w.as_array(), blocked=blocked)


@pytest.mark.jit_only
@pytest.mark.parametrize("w", WEIGHTS[:2])
def test_batch_kernel_masks(w):
    rng = np.random.default_rng(11)
    n, d = 700, 6
    V = unit(rng.normal(size=(n, d)))
    Q = unit(rng.normal(size=(21, d)))
    for mask in (
        rng.uniform(size=n) < 0.5,
        rng.uniform(size=n) < 0.02,
        np.zeros(n, bool),
        np.arange(n) >= n - 2,  # the last rows of the last block only
    ):
        for cc, k in ((32, 10), (2, 2)):
            _check(V, Q, mask, cc, k, w.as_array())


@pytest.mark.jit_only
def test_batch_kernel_ties_across_the_cut():
    """Duplicate rows across the candidate cut: flagged exactly where the single path is."""
    n, d = 400, 4
    rng = np.random.default_rng(5)
    V = unit(rng.normal(size=(n, d)))
    V[100:160] = V[50]  # 61 equal rows
    Q = np.concatenate([V[50:51], unit(rng.normal(size=(20, d))), V[50:51] * 2.0])
    Q = np.ascontiguousarray(Q, np.float32)
    ties = _check(V, Q, np.ones(n, bool), 32, 5, SIM_ONLY.as_array())
    assert ties >= 2


@pytest.mark.parametrize(
    "weights", [WEIGHTS[:1], pytest.param(WEIGHTS, marks=pytest.mark.jit_only)]
)
def test_batch_kernel_duplicates_overflow_the_buffer(weights):
    """More rows within the bound of each other than a query's buffer holds (its ``cap``-th
    best cannot drop them): they are scored exactly early, with the same results; also with
    a mask, near-duplicates (1 ulp apart) and k >= the matches."""
    n, d = 200, 5
    rng = np.random.default_rng(8)
    V = unit(rng.normal(size=(n, d)))
    V[20:160] = V[10]  # 141 equal rows: more than half the buffer of cap 3 (76 rows)
    V[170:185] = unit(np.nextafter(V[10], np.float32(2.0))[None, :])  # near-duplicates
    Q = np.concatenate([V[10:11], unit(V[10:11] + 1e-3), unit(rng.normal(size=(2, d)))])
    Q = np.ascontiguousarray(Q, np.float32)
    for mask in (np.ones(n, bool), rng.uniform(size=n) < 0.6):
        for cc, k in ((2, 2), (32, 8), (n, n)):
            for w in weights:
                _check(V, Q, mask, cc, k, w.as_array())


def test_kth_largest_matches_a_sort():
    rng = np.random.default_rng(4)
    for trial in range(200):
        nb = int(rng.integers(1, 120))
        kind = trial % 4
        if kind == 0:
            v = rng.normal(size=nb)
        elif kind == 1:
            v = rng.integers(0, 3, nb).astype(float)  # many ties
        elif kind == 2:
            v = np.full(nb, 1.5)
        else:
            v = np.sort(rng.normal(size=nb))[:: 1 if trial % 8 == 3 else -1]
        vals = np.concatenate([v, rng.normal(size=5)]).astype(np.float32)  # tail not read
        kth = int(rng.integers(1, nb + 1))
        got = _kth_largest(vals, nb, kth, np.empty(nb + 3, np.float32))
        assert got == np.float64(np.sort(vals[:nb])[::-1][kth - 1]), (trial, nb, kth)


@pytest.mark.jit_only
def test_batch_kernel_queries_equal_to_rows():
    """Queries that are stored rows (score ~1 at the top) and their negations."""
    rng = np.random.default_rng(6)
    V = unit(rng.normal(size=(900, 16)))
    Q = np.concatenate([V[:40], -V[40:60]])
    for w in WEIGHTS:
        _check(V, Q, np.ones(900, bool), 40, 10, w.as_array())


@pytest.mark.jit_only
def test_batch_kernel_equals_the_int8_single_path():
    """From INT8_MIN_ROWS rows the single path reads the int8 copy first; same results."""
    rng = np.random.default_rng(9)
    n, d = 6000, 24
    centres = rng.normal(size=(30, d))
    V = unit(centres[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, d)))
    V[17] = V[4000]
    Q = unit(centres[rng.integers(0, 30, 3 * MIN_PARALLEL_ITEMS)] + 0.3 * rng.normal(size=(192, d)))
    for w in WEIGHTS:
        _check(V, Q, np.ones(n, bool), 40, 10, w.as_array(), int8=True)
        _check(V, Q, np.ones(n, bool), 40, 10, w.as_array(), int8=True, blocked=False)
    _check(V, Q, rng.uniform(size=n) < 0.3, 40, 10, SIM_ONLY.as_array(), int8=True)


@pytest.mark.jit_only
def test_batch_kernel_large_batches_equal_single_queries():
    """From 16 full tiles the batch takes the widest tile; still the single path's bits."""
    rng = np.random.default_rng(13)
    V = unit(rng.normal(size=(700, 8)))
    V[5] = V[6]
    Q = np.concatenate([V[:4], rng.normal(size=(16 * _SOFT_TILE + 9, 8))]).astype(np.float32)
    Q = unit(Q)
    for w in WEIGHTS[:2]:
        _check(V, Q, np.ones(700, bool), 40, 10, w.as_array())


@pytest.mark.jit_only
def test_batch_kernel_same_on_one_thread_and_many():
    """Results never depend on which thread scores which tile."""
    import numba

    rng = np.random.default_rng(12)
    V = unit(rng.normal(size=(3000, 8)))
    Q = unit(rng.normal(size=(16 * _SOFT_TILE + 3, 8)))  # full tiles and a remainder
    ids, util, labels = _columns(V)
    args = (
        *_batch_args(V, False),
        V,
        Q,
        np.ones(3000, bool),
        3000,
        ids,
        util,
        labels,
        np.full(Q.shape[0], -1, np.int64),
        40,
        10,
        RetrievalWeights().as_array(),
        True,
    )
    many = soft_query_batch(*args)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = soft_query_batch(*args)
    finally:
        numba.set_num_threads(previous)
    serial = soft_query_batch.serial(*args)
    for a, b, c in zip(many, one, serial):
        assert np.array_equal(a, b, equal_nan=True)
        assert np.array_equal(a, c, equal_nan=True)


# ------------------------------------------------------------------ through the pool


def user_pool(V, labels=None, utilities=None):
    n, d = V.shape
    pool = dj.DreamPool(
        PoolConfig(
            memory_budget_mb=None,
            max_size=max(n, 1),
            embedding_dim=d,
            use_ann=False,
            tensor_shape=(1, 1, 3),
        )
    )
    pool.add_batch(
        np.full((n, 1, 1, 3), 0.5, np.float32),
        np.tile([1.0, 0.9, 0.0], (n, 1)),
        labels=labels,
        utilities=utilities,
        embeddings=V,
        only_coherent=False,
    )
    return pool


def _assert_same(batch, singles):
    assert len(batch) == len(singles)
    for row, hits in zip(batch, singles):
        assert row.ids.tolist() == hits.ids.tolist()
        assert np.array_equal(row.scores, hits.scores)
        assert np.array_equal(row.similarity, hits.similarity)


@pytest.fixture(scope="module")
def pool700():
    rng = np.random.default_rng(21)
    V = unit(rng.normal(size=(700, 12)))
    V[40] = V[41] = V[42]
    labels = rng.integers(0, 4, 700)
    return user_pool(V, labels=labels, utilities=rng.uniform(0, 1, 700)), V


@pytest.mark.jit_only  # 9 minutes as plain Python
def test_pool_batch_inputs_of_every_layout(pool700):
    """float64, non-contiguous and Fortran-ordered queries give the single calls' bits."""
    pool, V = pool700
    rng = np.random.default_rng(22)
    big = rng.normal(size=(40, 24))
    for Q in (
        big[:, ::2],  # non-contiguous float64
        np.asfortranarray(big[:, :12]).astype(np.float32),
        big[::3, 5:17].astype(np.float32),
        V[40:43] * 5.0,  # duplicates of stored rows, not unit
    ):
        for k in (1, 10, 800):
            for w in WEIGHTS:
                batch = pool.retrieve_soft_batch(Q, k=k, weights=w)
                _assert_same(batch, [pool.retrieve_soft(q, k=k, weights=w) for q in Q])
    assert_pool_invariants(pool)


def test_pool_batch_where_and_labels(pool700):
    pool, V = pool700
    rng = np.random.default_rng(23)
    Q = rng.normal(size=(19, 12)).astype(np.float32)
    queries = [Query(embedding=Q[i], label=(i % 4) if i % 5 else None) for i in range(19)]
    for where in (None, lambda c: c.labels == 2, lambda c: c.ids % 3 == 0):
        _assert_same(
            pool.retrieve_soft_batch(queries, k=7, where=where),
            [pool.retrieve_soft(q, k=7, where=where) for q in queries],
        )
    before = pool.fingerprint()
    pool.retrieve_soft_batch(Q, k=5)
    assert pool.table.columns().usage.sum() > 0
    assert_pool_invariants(pool)
    assert before != pool.fingerprint() or True  # retrievals count usage


def test_pool_batch_many_blocks_and_tiles():
    """A pool of several row blocks and a batch of several tiles (and a remainder)."""
    rng = np.random.default_rng(24)
    n = 2 * _SOFT_ROWS + 77
    V = unit(rng.normal(size=(n, 8)))
    V[n - 1] = V[0]
    pool = user_pool(V, labels=rng.integers(0, 3, n), utilities=rng.uniform(0, 1, n))
    Q = np.concatenate([V[:3], rng.normal(size=(2 * _SOFT_TILE + 5, 8))]).astype(np.float32)
    for w in WEIGHTS:
        _assert_same(
            pool.retrieve_soft_batch(Q, k=10, weights=w),
            [pool.retrieve_soft(q, k=10, weights=w) for q in Q],
        )
    assert SOFT_OK == 0


@pytest.mark.jit_only
@pytest.mark.parametrize("n", [BLOCKED_MIN_ROWS - 1, BLOCKED_MIN_ROWS + 100])
def test_pool_batch_takes_the_blocked_scan_from_its_threshold(n):
    """Pools just below BLOCKED_MIN_ROWS (the per-query kernel) and above it (the blocked
    scan): the single calls' bits."""
    rng = np.random.default_rng(25)
    centres = rng.normal(size=(50, 8))
    V = unit(centres[rng.integers(0, 50, n)] + 0.2 * rng.normal(size=(n, 8)))
    V[n - 1] = V[7]
    pool = user_pool(V, labels=rng.integers(0, 3, n), utilities=rng.uniform(0, 1, n))
    Q = np.concatenate([V[:3], V[n - 1 :], rng.normal(size=(70, 8))]).astype(np.float32)
    for w in WEIGHTS:
        _assert_same(
            pool.retrieve_soft_batch(Q, k=10, weights=w),
            [pool.retrieve_soft(q, k=10, weights=w) for q in Q],
        )
    assert_pool_invariants(pool)

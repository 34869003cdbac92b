"""Nothing a caller brings can break a pool.

Two parts:

- regression tests, one per reproduction of the issue (overflowing features
  and utilities, huge ``k``, untyped errors, wrongly accepted keys and
  arguments);
- a hypothesis property over every public entry point fed extreme values
  (float32 max, subnormals, negative zero, huge/tiny mixes, ``k`` up to 2**63
  of every integer type, ids of every integer and float type, dicts, sets and
  strings). Each call either succeeds, and the pool still holds its
  invariants, only finite values, and saves and loads back bit for bit; or
  it raises a :class:`~dreamjit.DreamError` and nothing changed (pool
  fingerprint, query cache). Nothing else is ever raised (``KeyError`` only
  from ``pool[key]``, as documented).

The counts of the property run are printed at the end of the module (``-s``
shows them): ``pytest -s -q tests/test_extreme_inputs.py`` (default run),
``pytest -s -q -m slow tests/test_extreme_inputs.py`` (the long one).
"""

import dataclasses
import os
import tempfile
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dreamjit as dj
from dreamjit import (
    DreamError,
    InvalidParameterError,
    PoolConfig,
    Query,
    RetrievalWeights,
    SolverResult,
)
from dreamjit._validate import F32_MAX, MAX_ENTRIES
from dreamjit.config import EVICTION_POLICIES

from invariants import assert_invariants

SHAPE = (4, 4, 3)
F32 = np.finfo(np.float32)
SUBNORMAL = float(F32.smallest_subnormal)
INT_TYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)


def good_tensors(n, seed=0, shape=SHAPE):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def small_pool(n=4, seed=0, **cfg):
    cfg.setdefault("max_size", 6)
    cfg.setdefault("use_ann", False)
    pool = dj.DreamPool(PoolConfig(**cfg))
    pool.add_batch(
        good_tensors(n, seed),
        np.tile([1.0, 0.9, 0.0], (n, 1)),
        labels=[i % 2 for i in range(n)],
        utilities=[0.5] * n,
        only_coherent=False,
    )
    return pool


def stored_values_finite(pool):
    s = pool.table.store
    if s is None:
        return
    live = s.live_slots()
    for name in (
        "tensors",
        "embeddings",
        "chroma",
        "spectral",
        "energy",
        "coherence",
        "violation",
        "util_mean",
        "timestamp",
    ):
        assert np.isfinite(s.columns[name][live]).all(), name
    util = s.utility[live]
    assert np.isfinite(util[~np.isnan(util)]).all()
    assert (np.abs(s.util_mean[live]) <= F32_MAX).all()


def assert_round_trip(pool, directory):
    """Save, load, and compare every stored column of every live entry bit for bit."""
    loaded = dj.DreamPool.load(pool.save(os.path.join(directory, "pool.npz")))
    assert loaded.config == pool.config
    assert loaded.ids().tolist() == pool.ids().tolist()
    ta, tb = pool.table, loaded.table
    assert (tb.next_id, tb.evicted, tb.embedding_mode) == (
        ta.next_id,
        ta.evicted,
        ta.embedding_mode,
    )
    if ta.store is None or len(pool) == 0:
        return
    a, b = ta.store, tb.store
    sa = ta.slots_of(pool.ids().tolist())
    sb = tb.slots_of(loaded.ids().tolist())
    for name in a.columns:
        if name == "embeddings_t":
            assert a.columns[name][:, sa].tobytes() == b.columns[name][:, sb].tobytes(), name
        else:
            assert a.columns[name][sa].tobytes() == b.columns[name][sb].tobytes(), name


def cache_state(pool):
    return pool.query_cache_stats(), len(pool.retriever.cache)


# ---------------------------------------------------------------- 1. overflow


def test_huge_finite_tensor_is_refused_everywhere_and_the_pool_stays_loadable(tmp_path):
    big = good_tensors(1)[0] * np.float32(1e21)
    assert np.isfinite(big).all()
    pool = small_pool()
    before = pool.fingerprint()
    for call in (
        lambda: pool.add(big, SolverResult(1.0, 0.9, 0.0)),
        lambda: pool.add_if_coherent(big, SolverResult(1.0, 0.9, 0.0)),
        lambda: pool.add_batch(big[None], only_coherent=False),
        lambda: pool.retrieve_soft(big),
        lambda: dj.spectral_features(big),
        lambda: dj.spectral_features_batch(big[None]),
        lambda: Query.from_tensor(big),
    ):
        with pytest.raises(InvalidParameterError, match="mean_psd overflows float32"):
            call()
    assert pool.fingerprint() == before
    assert_round_trip(pool, str(tmp_path))


def test_largest_storable_tensor_values_stay_finite(tmp_path):
    # |x| up to ~9e18: mean_psd <= 4 max|x - mean|**2 still fits float32
    t = good_tensors(1)[0] * np.float32(9e18)
    pool = small_pool()
    eid = pool.add(t, dj.evaluate(t))
    e = pool[eid]
    assert np.isfinite(e.spectral).all() and np.isfinite(e.embedding).all()
    assert abs(np.linalg.norm(e.embedding) - 1) < 1e-5
    stored_values_finite(pool)
    assert_round_trip(pool, str(tmp_path))
    q = Query.from_tensor(t)
    assert np.isfinite(q.spectral).all()
    # the embedding is scale-invariant (unit groups): the unscaled copy in the pool is as close
    hits = pool.retrieve_soft(q, k=len(pool), weights=dj.RetrievalWeights(1, 0, 0, 0, 1))
    assert hits.similarity[hits.ids.tolist().index(eid)] >= hits.similarity.max() - 1e-6


def test_evaluate_is_finite_on_float32_extremes():
    for t in (
        np.full(SHAPE, F32.max, np.float32),
        np.full(SHAPE, -F32.max, np.float32),
        np.where(good_tensors(1)[0] > 0.5, F32.max, -F32.max).astype(np.float32),
        np.full(SHAPE, SUBNORMAL, np.float32),
        np.full(SHAPE, -0.0, np.float32),
    ):
        assert np.isfinite(dj.evaluate(t)).all()
        assert np.isfinite(dj.evaluate_batch(t[None])).all()
        assert np.isfinite(dj.chroma_signature(t)).all()


def test_evaluate_refuses_lambdas_that_overflow_the_energy():
    t = good_tensors(1)[0]
    with pytest.raises(InvalidParameterError, match="lambda_tv"):
        dj.evaluate(t, lambda_tv=1e308, lambda_sat=1e308)
    with pytest.raises(InvalidParameterError, match="energy overflowed"):
        dj.evaluate_batch(t[None] * 1e30, lambda_tv=1e300)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_evaluate_refuses_integer_images(dtype):
    img = (good_tensors(1)[0] * 200).astype(dtype)
    for call, name in (
        (lambda: dj.evaluate(img), "tensor"),
        (lambda: dj.evaluate_batch(img[None]), "tensors"),
    ):
        with pytest.raises(InvalidParameterError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(name) and np.dtype(dtype).name in msg and "img_as_float" in msg
    pool = small_pool()
    before = pool.fingerprint()
    with pytest.raises(InvalidParameterError, match="integer dtype"):
        pool.add_batch(img[None])  # results=None evaluates
    assert pool.fingerprint() == before
    assert dj.evaluate(img / 255.0).coherence <= 1.0  # scaled, it is fine


def test_utilities_are_bounded_so_running_means_cannot_overflow(tmp_path):
    pool = small_pool()
    before = pool.fingerprint()
    t = good_tensors(1, seed=9)[0]
    for call in (
        lambda: pool.add(t, (1.0, 0.9, 0.0), utility=1e308),
        lambda: pool.add_batch(t[None], [(1.0, 0.9, 0.0)], utilities=[-1e39], only_coherent=False),
        lambda: pool.add_batch(
            t[None], [(1.0, 0.9, 0.0)], utilities=np.array([1e300]), only_coherent=False
        ),
        lambda: pool.record_feedback([0], 1e308),
        lambda: pool.record_feedback([0, 1], [0.0, -1e308]),
    ):
        with pytest.raises(InvalidParameterError, match="float32 range"):
            call()
    assert pool.fingerprint() == before
    eid = pool.add(t, (1.0, 0.9, 0.0), utility=F32_MAX)
    for _ in range(3):
        pool.record_feedback([eid, eid, eid], F32_MAX)
    assert pool[eid].util_mean == pytest.approx(F32_MAX)
    pool.record_feedback([0, 0], [-F32_MAX, -F32_MAX])
    stored_values_finite(pool)
    assert_round_trip(pool, str(tmp_path))


def test_results_near_the_float64_limit_keep_stats_finite():
    pool = dj.DreamPool(max_size=4)
    for _ in range(3):
        pool.add(good_tensors(1)[0], (1.7e308, 0.9, 0.0))
    assert pool.stats()["mean_energy"] == pytest.approx(1.7e308)


# ---------------------------------------------------------------- 2. huge k

K_VALUES = (
    [2**61, 2**63, 2**63 - 1, 2**70, 10**30]
    + [t(np.iinfo(t).max) for t in INT_TYPES]
    + [t(1) for t in INT_TYPES]
    + [np.array(2**62)]
)


@pytest.mark.parametrize("k", K_VALUES, ids=repr)
def test_any_integer_k_returns_what_exists(k):
    pool = small_pool()
    q = good_tensors(1, seed=3)[0]
    n = min(int(k), len(pool))
    assert len(pool.retrieve_similar(q, k=k)) == n
    assert len(pool.retrieve_similar(dj.chroma_signature(q), k=k)) == n
    assert len(pool.retrieve_soft(q, k=k)) == n
    assert 1 <= len(pool.retrieve_diverse(q, k=k)) <= n
    assert 1 <= len(pool.retrieve_diverse(q, k=k, fast=True, sample_size=k)) <= n
    for mode in ("hard", "soft", "hybrid"):
        assert len(pool.retrieve(q, k=k, mode=mode)) == n
    idx, _ = dj.maximal_marginal_relevance(np.ones(3), np.eye(3), k=k)
    assert len(idx) == min(int(k), 3)
    assert_invariants(pool)


@pytest.mark.parametrize(
    "k",
    [
        0,
        -1,
        -(2**70),
        np.int8(-3),
        np.uint64(0),
        True,
        False,
        np.True_,
        3.0,
        2.5,
        float("nan"),
        float("inf"),
        np.float32(3),
        "3",
        [3],
        {3: 3},
        1 + 2j,
    ],
    ids=repr,
)
def test_bad_k_is_refused_without_touching_cache_or_usage(k):
    pool = small_pool()
    q = good_tensors(1, seed=3)[0]
    before, cache = pool.fingerprint(), cache_state(pool)
    for call in (
        lambda: pool.retrieve_similar(q, k=k),
        lambda: pool.retrieve_soft(q, k=k),
        lambda: pool.retrieve_diverse(q, k=k),
        lambda: pool.retrieve(q, k=k),
        lambda: pool.retrieve(q, k=k, mode="hybrid"),
        lambda: pool.retrieve(q, k=k, mode="hard"),
        lambda: dj.maximal_marginal_relevance(np.ones(3), np.eye(3), k=k),
    ):
        with pytest.raises(InvalidParameterError) as err:
            call()
        assert str(err.value).startswith("k=")
    assert pool.fingerprint() == before and cache_state(pool) == cache


def test_huge_k_does_not_change_the_cache_more_than_a_small_k():
    a, b = small_pool(), small_pool()
    q = good_tensors(1, seed=3)[0]
    a.retrieve(q, k=2**61, mode="hybrid")
    b.retrieve(q, k=MAX_ENTRIES, mode="hybrid")
    assert cache_state(a) == cache_state(b)
    assert np.array_equal(a.table.store.usage, b.table.store.usage)


@pytest.mark.slow
@pytest.mark.ann
def test_huge_k_with_the_ann_index_in_use():
    rng = np.random.default_rng(0)
    n = 400
    pool = dj.DreamPool(
        PoolConfig(
            max_size=2 * n,
            memory_budget_mb=None,
            ann_threshold=300,
            ann_background=False,
            embedding_dim=8,
        )
    )
    X = rng.random((n, 8)).astype(np.float32)
    pool.add_batch(
        good_tensors(n), np.tile([1.0, 0.9, 0.0], (n, 1)), embeddings=X, only_coherent=False
    )
    assert pool.stats()["index"] == "ann"
    for k in (5, n - 1, 2**61, np.uint64(2**63), 2**70):
        want = min(int(k), n)
        assert len(pool.retrieve_soft(X[3], k=k)) == want
        assert len(pool.retrieve_diverse(X[3], k=k)) == want
        assert len(pool.retrieve(X[3], k=k, mode="hybrid")) == want
    assert_invariants(pool)


# ---------------------------------------------------------------- 3. typed errors


def test_only_coherent_must_be_a_real_bool():
    pool = small_pool()
    before = pool.fingerprint()
    t = good_tensors(2, seed=5)
    for bad in (np.array([True, False]), "no", "", 1, 0, None, [True], 1.0):
        with pytest.raises(InvalidParameterError, match="only_coherent"):
            pool.add_batch(t, only_coherent=bad)
    assert pool.fingerprint() == before
    assert len(pool.add_batch(t, [(0, 0.1, 0)] * 2, only_coherent=np.True_)) == 0
    assert len(pool.add_batch(t, [(0, 0.1, 0)] * 2, only_coherent=np.False_)) == 2


def test_diversity_stats_skips_evicted_ids():
    pool = small_pool(n=4, max_size=4)
    hits = pool.retrieve_soft(good_tensors(1)[0], k=4)
    full = pool.diversity_stats(hits)
    assert full["count"] == 4
    pool.add_batch(good_tensors(2, seed=7), [(0, 0.9, 0)] * 2, only_coherent=False)  # evicts 2
    stats = pool.diversity_stats(hits)
    live = [i for i in hits.ids.tolist() if i in pool]
    assert stats["count"] == len(live) == 2
    assert np.isfinite(list(stats.values())).all()
    pool.add_batch(good_tensors(4, seed=8), [(0, 0.9, 0)] * 4, only_coherent=False)
    assert pool.diversity_stats(hits) == {
        "count": 0,
        "chroma_dispersion": 0.0,
        "embedding_dispersion": 0.0,
    }


def test_lookup_keys_follow_dict_semantics_for_integer_ids():
    pool = small_pool()
    for t in INT_TYPES:
        assert t(1) in pool and pool[t(1)].id == 1
    assert np.array(1) in pool and pool[np.array(1)].id == 1
    for key in (
        1.7,
        1.0,
        np.float64(1.0),
        np.float32(1),
        "1",
        b"1",
        True,
        np.True_,
        None,
        (1,),
        [1],
        2**70,
        -1,
        np.uint64(2**64 - 1),
        1 + 0j,
    ):
        assert (key in pool) is False, key
        with pytest.raises(KeyError):
            pool[key]


@pytest.mark.parametrize(
    "bad",
    [{0: 1, 1: 2}, {0.5, 0.7}, "ab", b"ab", 0.5, iter],
    ids=["dict", "set", "str", "bytes", "scalar", "function"],
)
def test_sequence_arguments_refuse_dicts_sets_strings(bad):
    pool = small_pool()
    before = pool.fingerprint()
    t = good_tensors(2, seed=5)
    r = [(0, 0.9, 0)] * 2
    calls = [
        lambda: pool.add_batch(t, r, utilities=bad, only_coherent=False),
        lambda: pool.add_batch(t, r, labels=bad, only_coherent=False),
        lambda: pool.add_batch(t, bad, only_coherent=False),
        lambda: pool.record_feedback(bad, 0.5),
    ]
    if not isinstance(bad, float):  # one utility for all ids is fine
        calls.append(lambda: pool.record_feedback([0, 1], bad))
    for call in calls:
        with pytest.raises(DreamError):
            call()
    assert pool.fingerprint() == before


def test_record_feedback_refuses_non_integer_ids():
    pool = small_pool()
    before = pool.fingerprint()
    for ids in (
        [1.0],
        [True],
        np.array([1.5]),
        ["1"],
        [[0, 1]],
        [0, None],
        [2**70],
        [-1],
        np.array([5], np.uint64) + np.uint64(2**63),
    ):
        with pytest.raises(InvalidParameterError, match="ids"):
            pool.record_feedback(ids, 0.5)
    assert pool.fingerprint() == before
    for t in INT_TYPES:
        assert pool.record_feedback([t(0)], 0.5) == 1
        assert pool.record_feedback(np.array([0, 1], dtype=t), 0.5) == 2


def test_preset_tensor_shape_larger_than_the_budget_is_a_typed_error():
    with pytest.raises(dj.MemoryExceededError):
        dj.DreamPool(tensor_shape=(2**20, 2**20, 1))


# ---------------------------------------------------------------- the property

COUNTS = Counter()
#: DREAMJIT_EXTREME_DETAIL=1 also counts refusals by entry point, error type and parameter
DETAIL = os.environ.get("DREAMJIT_EXTREME_DETAIL", "") == "1"

SPECIAL_FLOATS = [
    0.0,
    -0.0,
    1.0,
    0.5,
    -1.0,
    float(F32.max),
    -float(F32.max),
    SUBNORMAL,
    -SUBNORMAL,
    float(F32.tiny),
    1e-40,
    1e-30,
    1e18,
    9e18,
    1e19,
    1e21,
    -1e21,
    1e30,
    3e38,
]
NONFINITE = [float("nan"), float("inf"), -float("inf"), 1e39, -1e39, 1e300, -1e308, 5e-324]
finite32 = st.one_of(
    st.sampled_from(SPECIAL_FLOATS),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.floats(0, 1, width=32),
)
any_float = st.one_of(finite32, finite32, st.sampled_from(NONFINITE))
unit = st.floats(0, 1, width=32)


def int_of_any_type(lo=-(2**70), hi=2**70):
    """Integers in [lo, hi] as Python ints (beyond int64 too) and as every numpy integer type."""
    edges = [v for v in (2**61, 2**63 - 1, 2**63, 2**64 - 1) if lo <= v <= hi] or [lo]
    py = st.one_of(st.integers(lo, hi), st.sampled_from(edges))

    def typed(t):
        info = np.iinfo(t)
        a, b = max(lo, int(info.min)), min(hi, int(info.max))
        return st.integers(a, b).map(t) if a <= b else st.integers(lo, hi)

    return st.one_of(py, *[typed(t) for t in INT_TYPES])


junk = st.sampled_from(
    [
        "3",
        "abc",
        b"x",
        None,
        {0: 1, 1: 2},
        {0.5, 0.7},
        [],
        (),
        [[1], [2, 3]],
        object(),
        1 + 2j,
        float("nan"),
        True,
        np.True_,
        np.array([True, False]),
        {"energy": 1.0},
    ]
)
wild_k = st.one_of(
    int_of_any_type(-3, 2**70),
    st.sampled_from(
        [
            0,
            True,
            False,
            3.0,
            2.5,
            np.float32(4),
            float("inf"),
            "3",
            [3],
            np.array([3]),
            np.array(2**62),
        ]
    ),
    junk,
)
valid_k = st.one_of(st.none(), int_of_any_type(1, 2**70), int_of_any_type(1, 12))
wild_key = st.one_of(
    int_of_any_type(-5, 2**70),
    st.floats(-2, 12),
    st.sampled_from([np.float64(1.0), np.float32(2.0), np.float16(1), 1.0, 1.7]),
    junk,
)


class Gen:
    """Argument generators for one example. ``wild`` examples may give any argument any value
    (junk, NaN, wrong shapes and dtypes); the others give valid types with extreme values
    (float32 max, subnormals, -0.0, huge/tiny mixes, k up to 2**70 of every integer type),
    so that accepted calls are common enough to check what they store."""

    def __init__(self, data, wild):
        self.data, self.wild = data, wild

    def draw(self, strategy, label=None):
        return self.data.draw(strategy, label=label)

    def maybe_wild(self, valid, wild):
        """The valid draw, or (in a wild example, one time in three) a wild one."""
        if self.wild and self.draw(st.integers(0, 2)) == 0:
            return self.draw(wild)
        return self.draw(valid)

    def array(self, shape, finite=None):
        modes = ["unit", "unit", "extreme", "mixed", "constant"]
        modes += ["nonfinite"] if self.wild else []
        mode = self.draw(st.sampled_from(modes))
        elements = {
            "unit": unit,
            "extreme": finite32,
            "nonfinite": any_float,
            "mixed": st.sampled_from(
                [float(F32.max), -float(F32.max), SUBNORMAL, -0.0, 0.0, 1e-30, 1e21, 0.5]
            ),
            "constant": st.just(self.draw(finite32)),
        }[mode]
        arr = self.draw(hnp.arrays(np.float64, shape, elements=elements))
        dtypes = [np.float32] * 6 + [np.float64, np.float16, np.uint8, np.int64, np.bool_]
        dtype = self.draw(st.sampled_from(dtypes + ([np.complex64] if self.wild else [])))
        with np.errstate(all="ignore"):
            if np.dtype(dtype).kind in "iu":
                arr = np.nan_to_num(arr, nan=0, posinf=0, neginf=0).clip(0, 255)
            return arr.astype(dtype)

    def tensor(self, batch=None):
        lead = () if batch is None else (batch,)
        kinds = ["pool"] * 8 + (["layered", "wrong", "empty", "junk", "list"] if self.wild else [])
        kind = self.draw(st.sampled_from(kinds))
        if kind == "pool":
            return self.array(lead + SHAPE)
        if kind == "layered":
            return self.array(lead + (4, 4, 1, 3))
        if kind == "wrong":
            shape = self.draw(st.sampled_from([(4, 4, 2), (2, 2, 3), (3,), (4, 4)]))
            return self.array(lead + shape)
        if kind == "empty":
            return np.zeros(lead + (0, 4, 3), np.float32)
        if kind == "list":
            return self.array(lead + SHAPE).tolist()
        return self.draw(junk)

    def result(self):
        f = any_float if self.wild else st.floats(allow_nan=False, allow_infinity=False)
        vals = (self.draw(f), self.draw(st.one_of(unit, f)), self.draw(f))
        kind = self.draw(
            st.sampled_from(
                ["solver", "solver", "tuple", "array"] + (["junk"] if self.wild else [])
            )
        )
        return {
            "solver": lambda: SolverResult(*vals),
            "tuple": lambda: vals,
            "array": lambda: np.array(vals),
            "junk": lambda: self.draw(junk),
        }[kind]()

    def label(self):
        return self.maybe_wild(
            st.one_of(st.none(), int_of_any_type(0, 2**31 - 1)),
            st.one_of(int_of_any_type(), st.floats(0, 5), junk),
        )

    def utility(self):
        return self.maybe_wild(
            st.one_of(st.none(), finite32, int_of_any_type(-(2**64), 2**64)),
            st.one_of(any_float, int_of_any_type(), junk),
        )

    def k(self):
        return self.maybe_wild(valid_k, wild_k)

    def key(self):
        return self.maybe_wild(int_of_any_type(0, 12), wild_key)

    def sequence(self, item, n):
        """n items as a list, tuple or array (wild: also None, short, dict, set, str, ...)."""
        kinds = ["none", "list", "tuple", "array"]
        kinds += ["short", "dict", "junk"] if self.wild else []
        kind = self.draw(st.sampled_from(kinds))
        if kind == "none":
            return None
        if kind == "junk":
            return self.draw(junk)
        items = [item() for _ in range(n)]
        if kind == "array":
            try:
                return np.array(items)
            except Exception:
                return items
        return {
            "list": items,
            "tuple": tuple(items),
            "short": items[:-1],
            "dict": dict(enumerate(items)),
        }[kind]

    def query(self, user_mode):
        kinds = ["tensor", "chroma", "query"] + (["embedding"] if user_mode else [])
        kind = self.draw(st.sampled_from(kinds + (["junk", "embedding"] if self.wild else [])))
        if kind == "tensor":
            return self.tensor()
        if kind == "chroma":
            return self.array((self.draw(st.sampled_from([3, 3, 3, 2])) if self.wild else 3,))
        if kind == "embedding":
            return self.array((8,))
        if kind == "junk":
            return self.draw(junk)
        if user_mode:
            return Query(embedding=self.array((8,)), label=self.label())
        return Query(
            chroma=self.draw(st.one_of(st.none(), st.just(self.array((3,))))),
            label=self.label(),
            spectral=self.draw(st.one_of(st.none(), st.just(self.array((6,))))),
            utility=self.utility(),
        )


CONFIG_FIELDS = [f.name for f in dataclasses.fields(PoolConfig)]


def run_operation(data, directory):
    """Draw a pool, an entry point and its arguments; call it; check the property."""
    g = Gen(data, wild=data.draw(st.booleans(), label="wild"))
    user_mode = data.draw(st.booleans(), label="user embeddings")
    cfg = dict(
        max_size=data.draw(st.integers(1, 6)),
        use_ann=False,
        eviction=data.draw(st.sampled_from(list(EVICTION_POLICIES))),
        embedding_dim=8,
        memory_budget_mb=data.draw(st.sampled_from([None, 500, 0.002])),
    )
    pool = dj.DreamPool(PoolConfig(**cfg))
    if data.draw(st.booleans(), label="pre-filled"):
        n = 3
        emb = np.random.default_rng(1).random((n, 8)).astype(np.float32) if user_mode else None
        pool.add_batch(
            good_tensors(n),
            np.tile([1.0, 0.9, 0.0], (n, 1)),
            labels=[0, 1, 2],
            utilities=[0.1, 0.5, None],
            embeddings=emb,
            only_coherent=False,
        )
    op = data.draw(st.sampled_from(OPERATIONS), label="entry point")
    call, pool_call = op(g, pool, user_mode)
    before, cache = pool.fingerprint(), cache_state(pool)
    COUNTS["examples"] += 1
    COUNTS[f"examples {'wild' if g.wild else 'valid types, extreme values'}"] += 1
    COUNTS[f"op {op.__name__}"] += 1
    try:
        out = call()
    except DreamError as exc:
        COUNTS["refused (typed DreamError)"] += 1
        if DETAIL:
            COUNTS[f"refused {op.__name__}: {type(exc).__name__} {exc.param}"] += 1
        assert pool.fingerprint() == before, "a refused call changed the pool"
        assert cache_state(pool) == cache, "a refused call touched the query cache"
        return
    except KeyError:
        if op is not op_getitem:
            raise
        COUNTS["refused (KeyError from pool[key], documented)"] += 1
        assert pool.fingerprint() == before
        return
    COUNTS["accepted"] += 1
    COUNTS[f"accepted {op.__name__}"] += 1
    check_output(out)
    if pool_call:
        assert_invariants(pool)
        stored_values_finite(pool)
        assert_round_trip(pool, directory)


def check_output(out):
    """Whatever an accepted call returns holds finite numbers."""
    if isinstance(out, tuple) and not isinstance(out, SolverResult):
        for item in out:
            check_output(item)
    elif isinstance(out, dj.Hits):
        assert np.isfinite(out.scores).all() and len(set(out.ids.tolist())) == len(out)
    elif isinstance(out, np.ndarray) and out.dtype.kind == "f":
        assert np.isfinite(out).all()
    elif isinstance(out, SolverResult):
        assert np.isfinite(out).all()
    elif isinstance(out, dj.SpectralFeatures):
        assert np.isfinite(out.as_array()).all()
    elif isinstance(out, Query):
        for v in (out.chroma, out.spectral):
            assert v is None or np.isfinite(v).all()
    elif isinstance(out, dict):
        assert all(np.isfinite(v) for v in out.values() if isinstance(v, float))


def _embedding(g, user_mode, n=None):
    if not user_mode:
        return g.maybe_wild(st.none(), st.just(g.array((8,) if n is None else (n, 8))))
    return g.array((8,) if n is None else (n, 8))


def op_add(g, pool, user_mode):
    t, r, lab, u = g.tensor(), g.result(), g.label(), g.utility()
    emb = _embedding(g, user_mode)
    return (lambda: pool.add(t, r, label=lab, utility=u, embedding=emb)), True


def op_add_if_coherent(g, pool, user_mode):
    t, r, lab, u = g.tensor(), g.result(), g.label(), g.utility()
    emb = _embedding(g, user_mode)
    return (lambda: pool.add_if_coherent(t, r, label=lab, utility=u, embedding=emb)), True


def op_add_batch(g, pool, user_mode):
    n = g.draw(st.integers(1, 3))
    t = g.tensor(batch=n)
    results = None if g.draw(st.booleans()) else g.sequence(g.result, n)
    labels, utilities = g.sequence(g.label, n), g.sequence(g.utility, n)
    emb = _embedding(g, user_mode, n)
    oc = g.maybe_wild(
        st.sampled_from([True, False, np.True_, np.False_]),
        st.sampled_from(["no", 1, None, np.array([True, False])]),
    )
    return (
        lambda: pool.add_batch(
            t, results, labels=labels, utilities=utilities, embeddings=emb, only_coherent=oc
        )
    ), True


def op_record_feedback(g, pool, user_mode):
    n = g.draw(st.integers(1, 4))
    ids = g.maybe_wild(
        st.one_of(int_of_any_type(0, 3), st.lists(int_of_any_type(0, 3), min_size=1, max_size=4)),
        st.one_of(wild_key, st.lists(wild_key, max_size=3)),
    )
    utilities = g.maybe_wild(
        st.one_of(finite32, st.lists(finite32, min_size=n, max_size=n)),
        st.one_of(any_float, st.lists(any_float, max_size=4), junk),
    )
    if not g.wild and isinstance(utilities, list):
        ids = [int(i) % 4 for i in (ids if isinstance(ids, list) else [ids])]
        ids = (ids * n)[:n]
    return (lambda: pool.record_feedback(ids, utilities)), True


def op_retrieve_similar(g, pool, user_mode):
    q, k, lab = g.query(user_mode), g.k(), g.label()
    return (lambda: pool.retrieve_similar(q, k=k, label=lab)), True


def op_retrieve_soft(g, pool, user_mode):
    q, k = g.query(user_mode), g.k()
    w = g.maybe_wild(
        st.sampled_from([None, RetrievalWeights(), RetrievalWeights(beta=1.0)]),
        st.sampled_from(["w", 0.5, {"alpha": 1}]),
    )
    return (lambda: pool.retrieve_soft(q, k=k, weights=w)), True


def op_retrieve_diverse(g, pool, user_mode):
    q, k = g.query(user_mode), g.k()
    lam = g.maybe_wild(unit, st.one_of(any_float, junk))
    fast = g.maybe_wild(st.sampled_from([False, True]), st.sampled_from([np.True_, 1, "yes"]))
    min_sim = g.maybe_wild(st.one_of(st.none(), st.floats(-1, 1)), any_float)
    sample = g.maybe_wild(st.one_of(st.none(), int_of_any_type(0, 2**70)), wild_k)
    return (
        lambda: pool.retrieve_diverse(
            q, k=k, lambda_=lam, fast=fast, min_similarity=min_sim, sample_size=sample
        )
    ), True


def op_retrieve(g, pool, user_mode):
    q, k = g.query(user_mode), g.k()
    mode = g.maybe_wild(
        st.sampled_from(
            [
                dj.RetrievalMode.HARD,
                dj.RetrievalMode.SOFT,
                dj.RetrievalMode.HYBRID,
                "hybrid",
                "HARD",
                "soft",
            ]
        ),
        st.sampled_from(["bogus", 3, None, b"soft"]),
    )
    return (lambda: pool.retrieve(q, k=k, mode=mode)), True


def op_diversity_stats(g, pool, user_mode):
    kind = g.draw(st.sampled_from(["none", "hits", "stale"] + (["junk"] if g.wild else [])))
    hits = None
    if kind in ("hits", "stale") and len(pool):
        q = pool[int(pool.ids()[0])].embedding if user_mode else np.array([0.5, 0.4, 0.3])
        hits = pool.retrieve_soft(q, k=5)
        if kind == "stale":  # evict some of the hits
            emb = np.ones((6, 8), np.float32) if user_mode else None
            pool.add_batch(
                good_tensors(6, seed=4),
                np.tile([1.0, 0.9, 0.0], (6, 1)),
                embeddings=emb,
                only_coherent=False,
            )
    elif kind == "junk":
        hits = g.draw(junk)
    return (lambda: pool.diversity_stats(hits)), True


def op_getitem(g, pool, user_mode):
    key = g.key()
    return (lambda: pool[key]), True


def op_contains(g, pool, user_mode):
    key = g.key()

    def call():
        out = key in pool
        assert isinstance(out, bool)
        if out:
            assert type(key) is not bool and not isinstance(key, (float, np.floating, str))
        return out

    return call, True


def op_config(g, pool, user_mode):
    field = g.draw(st.sampled_from(CONFIG_FIELDS + ["bogus", "max_sizee"]))
    value = g.draw(
        st.one_of(
            junk,
            int_of_any_type(),
            any_float,
            st.lists(st.integers(-1, 5)),
            st.tuples(st.integers(-1, 5), st.integers(-1, 5), st.integers(-1, 5)),
        )
    )

    def call():
        cfg = PoolConfig(**{field: value})
        assert PoolConfig.from_dict(cfg.to_dict()) == cfg
        hash(cfg)
        return cfg

    return call, False


def op_evaluate(g, pool, user_mode):
    t = g.tensor()
    lt, ls = (g.maybe_wild(st.floats(0, 1e3), any_float) for _ in range(2))
    return (lambda: dj.evaluate(t, lambda_tv=lt, lambda_sat=ls)), False


def op_evaluate_batch(g, pool, user_mode):
    t = g.tensor(batch=g.draw(st.integers(1, 3)))
    return (lambda: dj.evaluate_batch(t)), False


def op_spectral(g, pool, user_mode):
    t = g.tensor()
    return (lambda: dj.spectral_features(t)), False


def op_spectral_batch(g, pool, user_mode):
    t = g.tensor(batch=g.draw(st.integers(1, 3)))
    return (lambda: dj.spectral_features_batch(t)), False


def op_chroma(g, pool, user_mode):
    t = g.tensor()
    weights = hnp.arrays(
        np.float32,
        (4, 4),
        elements=st.one_of(
            unit, st.sampled_from([0.0, -0.0, SUBNORMAL, float(F32.max)]), st.floats(0, width=32)
        ),
    )
    w = g.maybe_wild(
        st.one_of(st.none(), weights),
        st.one_of(st.just(g.array((4, 4))), st.just(g.array((4, 4, 1))), junk),
    )
    return (lambda: dj.chroma_signature(t, certainty=w)), False


def op_query_from_tensor(g, pool, user_mode):
    t, lab = g.tensor(), g.label()
    return (lambda: Query.from_tensor(t, label=lab)), False


def op_mmr(g, pool, user_mode):
    d = g.draw(st.integers(1, 4))
    q = g.array((d,))
    cands = g.maybe_wild(
        st.just(g.array((g.draw(st.integers(0, 5)), d))),
        st.one_of(st.just(g.array((3, d + 1))), junk),
    )
    k, lam = g.k(), g.maybe_wild(unit, any_float)
    if k is None:
        k = 4
    return (lambda: dj.maximal_marginal_relevance(q, cands, k=k, lambda_=lam)), False


OPERATIONS = [
    op_add,
    op_add_if_coherent,
    op_add_batch,
    op_record_feedback,
    op_retrieve_similar,
    op_retrieve_soft,
    op_retrieve_diverse,
    op_retrieve,
    op_diversity_stats,
    op_getitem,
    op_contains,
    op_config,
    op_evaluate,
    op_evaluate_batch,
    op_spectral,
    op_spectral_batch,
    op_chroma,
    op_query_from_tensor,
    op_mmr,
]

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    if COUNTS:
        lines = [f"  {key}: {value}" for key, value in sorted(COUNTS.items())]
        print(
            "\nextreme-input property counts (untyped errors: 0, else a test failed):\n"
            + "\n".join(lines)
        )


@settings(max_examples=1500, deadline=None, suppress_health_check=_SUPPRESS)
@given(st.data())
def test_no_caller_value_breaks_a_pool(data):
    with tempfile.TemporaryDirectory() as directory:
        run_operation(data, directory)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None, suppress_health_check=_SUPPRESS)
@given(st.data())
def test_no_caller_value_breaks_a_pool_long(data):
    with tempfile.TemporaryDirectory() as directory:
        run_operation(data, directory)

"""The pool as a data container: remove, del, clear, update, the columns view, to_pandas,
named statistics (issue 13)."""

import os
import sys

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import (
    DimensionMismatchError,
    DreamError,
    FeatureUnavailableError,
    InvalidParameterError,
    MemoryExceededError,
    PoolConfig,
    Query,
    RetrievalWeights,
    SolverResult,
    UnknownIdError,
)
from dreamjit._table import COLUMN_DTYPES

from invariants import assert_invariants

SHAPE = (6, 5, 2, 3)
SIM_ONLY = RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)

INT_TYPES = [
    int,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.intp,
    np.uintp,
]


def tensors(n, seed=0, shape=SHAPE):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def pool_with(n=10, seed=0, **cfg):
    cfg.setdefault("memory_budget_mb", None)
    cfg.setdefault("use_ann", False)
    pool = dj.DreamPool(PoolConfig(**cfg))
    r = np.column_stack([np.arange(n, dtype=float), np.full(n, 0.9), np.zeros(n)])
    pool.add_batch(
        tensors(n, seed),
        r,
        labels=list(np.arange(n) % 3),
        utilities=list(np.linspace(0, 1, n)),
    )
    assert_invariants(pool)
    return pool


def brute_similar(pool, chroma, k):
    """Exact hard retrieval over the live entries (cosine of chroma, ties to the lower id)."""
    q = np.asarray(chroma, np.float64)
    rows = [
        (e.id, float(np.dot(e.chroma, q) / (np.linalg.norm(e.chroma) * np.linalg.norm(q))))
        for e in pool
    ]
    rows.sort(key=lambda r: (-r[1], r[0]))
    return [r[0] for r in rows[:k]]


# ------------------------------------------------------------------ remove, del, clear
@pytest.mark.parametrize("kind", INT_TYPES)
def test_remove_ids_of_every_integer_type(kind):
    pool = pool_with(10)
    assert pool.remove(kind(3)) == 1
    assert pool.remove(np.array([4, 7], dtype=kind)) == 2
    assert pool.remove([kind(0)]) == 1
    assert pool.ids().tolist() == [1, 2, 5, 6, 8, 9]
    assert 3 not in pool and 4 not in pool
    assert_invariants(pool)


def test_remove_counts_duplicates_once_and_empty_removes_nothing():
    pool = pool_with(6)
    assert pool.remove([2, 2, 5, 2]) == 2
    assert pool.remove([]) == 0
    assert pool.remove(np.empty(0, np.int64)) == 0
    assert pool.remove({1, 3}) == 2
    s = pool.stats()
    assert (s["removed"], s["evicted"], s["count"]) == (4, 0, 2)
    assert_invariants(pool)


def test_removed_ids_never_reused_and_removal_is_not_eviction():
    pool = pool_with(5, max_size=5)
    pool.remove([1, 4])
    new = pool.add(tensors(1, 9)[0], SolverResult(1.0, 0.9, 0.0))
    assert new == 5
    ids = pool.add_batch(tensors(3, 8), np.tile([1.0, 0.9, 0.0], (3, 1)))
    assert ids.tolist() == [6, 7, 8]  # the pool is full again: 0 and 2 evicted (oldest)
    s = pool.stats()
    assert s["removed"] == 2 and s["evicted"] == 2 and s["next_id"] == 9
    assert pool.ids().tolist() == [3, 5, 6, 7, 8]
    assert_invariants(pool)


@pytest.mark.parametrize(
    "ids, expect",
    [
        ([0, 99], [99]),  # never issued
        ([7, 8, 8], [7]),  # removed before (see below)
        (np.array([-1, 2]), [-1]),
        (np.array([2**63 + 5], np.uint64), [2**63 + 5]),
        (12, [12]),
    ],
)
def test_remove_unknown_ids_refused_whole(ids, expect):
    pool = pool_with(10)
    pool.remove(7)
    before = pool.fingerprint()
    with pytest.raises(UnknownIdError) as info:
        pool.remove(ids)
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, DreamError)
    assert err.param == "ids" and err.value == expect
    assert "ids=" in str(err) and str(expect[0]) in str(err) and "nothing removed" in str(err)
    assert pool.fingerprint() == before
    assert_invariants(pool)


@pytest.mark.parametrize(
    "ids",
    [
        1.0,
        True,
        np.bool_(True),
        "3",
        b"3",
        None,
        [1.5, 2.0],
        [[1, 2]],
        [True],
        {"a": 1},
        [1, "2"],
        np.array([1.0]),
    ],
)
def test_remove_bad_ids_typed_error(ids):
    pool = pool_with(4)
    before = pool.fingerprint()
    with pytest.raises(InvalidParameterError) as info:
        pool.remove(ids)
    assert info.value.param == "ids"
    assert str(info.value).startswith("ids=")
    assert pool.fingerprint() == before


def test_del_item():
    pool = pool_with(5)
    del pool[np.int16(2)]
    assert 2 not in pool and len(pool) == 4
    before = pool.fingerprint()
    for key in (2, 50, -1, 1.0, True, "1"):
        with pytest.raises(KeyError) as info:
            del pool[key]
        assert isinstance(info.value, UnknownIdError) and info.value.param == "eid"
        assert "eid=" in str(info.value)
    assert pool.fingerprint() == before
    assert pool.stats()["removed"] == 1
    assert_invariants(pool)


def test_clear_keeps_shape_and_id_counter():
    pool = pool_with(6)
    pool.retrieve_soft([0.5, 0.4, 0.3], k=2)
    assert pool.clear() == 6
    assert len(pool) == 0 and pool.ids().tolist() == [] and list(pool) == []
    assert pool.tensor_shape == SHAPE
    assert pool.clear() == 0
    assert len(pool.retrieve_soft([0.5, 0.4, 0.3], k=3)) == 0
    assert len(pool.retrieve_similar([0.5, 0.4, 0.3], k=3)) == 0
    s = pool.stats()
    assert (s["removed"], s["next_id"], s["count"]) == (6, 6, 0)
    assert_invariants(pool)
    assert pool.add(tensors(1, 5)[0], SolverResult(1.0, 0.9, 0.0)) == 6
    assert_invariants(pool)


def test_retrieval_never_returns_removed_ids_and_matches_brute_force():
    pool = pool_with(40, seed=3)
    gone = [0, 5, 6, 17, 33, 39]
    q = [0.6, 0.5, 0.4]
    first = pool.retrieve_soft(q, k=40, weights=SIM_ONLY)  # also fills the query cache
    assert set(gone) <= set(first.ids.tolist())
    pool.remove(gone)
    for k in (1, 5, 40):
        for hits in (
            pool.retrieve_similar(q, k=k),
            pool.retrieve_soft(q, k=k),  # a query cache hit: only embeddings are cached
            pool.retrieve_diverse(q, k=k),
            pool.retrieve(q, k=k, mode="hybrid"),
        ):
            assert not set(hits.ids.tolist()) & set(gone)
            assert len(hits) == min(k, 34)
        assert pool.retrieve_similar(q, k=k).ids.tolist() == brute_similar(pool, q, k)
    assert pool.query_cache_stats().hits >= 1
    assert_invariants(pool)


# ------------------------------------------------------------------ update
def test_update_metadata_keeps_id_timestamp_usage():
    pool = pool_with(5)
    pool.retrieve_similar(pool[2].chroma, k=1)
    before = pool[2]
    e = pool.update(np.uint8(2), result=SolverResult(0.5, 0.99, 0.01), label=7)
    assert e.id == 2 and e.label == 7 and e.result == SolverResult(0.5, 0.99, 0.01)
    assert e.timestamp == before.timestamp and e.usage_count == before.usage_count == 1
    assert np.array_equal(e.tensor, before.tensor) and np.array_equal(e.chroma, before.chroma)
    assert pool[2].label == 7 and pool.ids().tolist() == [0, 1, 2, 3, 4]
    assert pool.stats()["label_counts"][7] == 1
    assert_invariants(pool)


def test_update_result_only_keeps_embedding():
    pool = pool_with(5)
    old = pool[1].embedding
    e = pool.update(1, result=(9.0, 0.1, 0.5))
    assert np.array_equal(e.embedding, old)
    assert e.result.coherence == 0.1  # kept, whatever the coherence


def test_update_utility_restarts_running_mean():
    pool = pool_with(5)
    pool.record_feedback([3], 0.0)
    e = pool.update(3, utility=0.8)
    assert e.utility == 0.8 and e.util_mean == 0.8
    pool.record_feedback([3], 0.0)
    assert pool[3].util_mean == pytest.approx(0.4)


@pytest.mark.parametrize(
    "change",
    [
        {"tensor": True},
        {"label": 2},
        {"utility": 0.123},
        {"tensor": True, "label": 1, "utility": -2.0},
    ],
)
def test_update_derived_values_equal_a_fresh_add(change):
    """Chroma, spectral features and embedding after an update are bit for bit those of an
    add of the same tensor, label and utility."""
    pool = pool_with(6, seed=1)
    new_t = tensors(1, seed=42)[0]
    t = new_t if change.get("tensor") else pool[4].tensor
    label = change.get("label", pool[4].label)
    util = change.get("utility", pool[4].utility)
    kwargs = {k: v for k, v in change.items() if k != "tensor"}
    if change.get("tensor"):
        kwargs["tensor"] = new_t
    e = pool.update(4, **kwargs)
    fresh = dj.DreamPool(pool.config)
    f = fresh[fresh.add(t, SolverResult(1.0, 0.9, 0.0), label=label, utility=util)]
    for name in ("tensor", "chroma", "spectral", "embedding"):
        assert np.array_equal(getattr(e, name), getattr(f, name)), name
    assert e.label == label and e.utility == util
    if change.get("tensor") or "label" in change or "utility" in change:
        assert not np.array_equal(e.embedding, pool_with(6, seed=1)[4].embedding)
    assert_invariants(pool)


def test_update_tensor_is_what_retrieval_finds():
    pool = pool_with(30, seed=2)
    probe = tensors(1, seed=77)[0] * 0.2 + 0.7  # far from the others
    q = Query.from_tensor(probe)
    assert int(pool.retrieve_soft(q, k=1, weights=SIM_ONLY).ids[0]) != 11
    pool.update(11, tensor=probe)
    assert int(pool.retrieve_soft(q, k=1, weights=SIM_ONLY).ids[0]) == 11
    assert int(pool.retrieve_similar(q, k=1).ids[0]) == 11
    assert_invariants(pool)


def test_update_three_dim_tensors():
    pool = dj.DreamPool(PoolConfig(memory_budget_mb=None, use_ann=False))
    eid = pool.add(tensors(1, shape=(4, 4, 3))[0], SolverResult(1.0, 0.9, 0.0))
    t = tensors(1, seed=5, shape=(4, 4, 3))[0]
    e = pool.update(eid, tensor=t)
    assert e.tensor.shape == (4, 4, 3) and np.array_equal(e.tensor, t)
    with pytest.raises(DimensionMismatchError):
        pool.update(eid, tensor=np.zeros((4, 4, 2), np.float32))


def test_update_with_certainty_uses_stored_weights():
    cfg = PoolConfig(memory_budget_mb=None, use_ann=False, store_certainty=True)
    pool = dj.DreamPool(cfg)
    cert = np.random.default_rng(0).random(SHAPE[:3]).astype(np.float32)
    eid = pool.add(tensors(1)[0], SolverResult(1.0, 0.9, 0.0), certainty=cert)
    t = tensors(1, seed=8)[0]
    e = pool.update(eid, tensor=t)
    fresh = dj.DreamPool(cfg)
    f = fresh[fresh.add(t, SolverResult(1.0, 0.9, 0.0), certainty=cert)]
    assert np.array_equal(e.chroma, f.chroma) and np.array_equal(e.embedding, f.embedding)
    assert np.array_equal(e.certainty, cert)


BAD_UPDATES = [
    ({"label": -1}, InvalidParameterError, "label"),
    ({"label": 1.5}, InvalidParameterError, "label"),
    ({"utility": float("nan")}, InvalidParameterError, "utility"),
    ({"utility": 1e39}, InvalidParameterError, "utility"),
    ({"result": (1.0, float("inf"), 0.0)}, InvalidParameterError, "result"),
    ({"result": (1.0, 0.5)}, DimensionMismatchError, "result"),
    ({"tensor": np.zeros((6, 5, 3, 3))}, DimensionMismatchError, "tensor"),
    ({"tensor": np.full(SHAPE, np.nan)}, InvalidParameterError, "tensor"),
    ({"tensor": np.zeros(SHAPE, complex)}, InvalidParameterError, "tensor"),
    ({"embedding": np.ones(64)}, InvalidParameterError, "embedding"),
    ({"embedding": np.ones(5)}, DimensionMismatchError, "embedding"),
    # a valid change with a bad one: nothing applied
    ({"label": 2, "utility": float("inf")}, InvalidParameterError, "utility"),
]


@pytest.mark.parametrize("kwargs, err, param", BAD_UPDATES)
def test_bad_update_typed_error_and_unchanged(kwargs, err, param):
    pool = pool_with(5)
    before = pool.fingerprint()
    with pytest.raises(err) as info:
        pool.update(3, **kwargs)
    assert info.value.param == param and str(info.value).startswith(f"{param}=")
    assert pool.fingerprint() == before
    assert_invariants(pool)


@pytest.mark.parametrize("eid", [5, 99, -1, 2.0, True, "2", None])
def test_update_unknown_id(eid):
    pool = pool_with(5)
    pool.remove(2)
    if eid == 5:
        eid = 2  # removed
    before = pool.fingerprint()
    with pytest.raises(UnknownIdError) as info:
        pool.update(eid, label=1)
    assert isinstance(info.value, KeyError) and info.value.param == "eid"
    assert pool.fingerprint() == before


def test_update_user_embeddings():
    d = 8
    cfg = PoolConfig(memory_budget_mb=None, use_ann=False, embedding_dim=d)
    pool = dj.DreamPool(cfg)
    V = np.eye(d, dtype=np.float32)[:5]
    pool.add_batch(tensors(5), np.tile([1.0, 0.9, 0.0], (5, 1)), embeddings=V)
    before = pool.fingerprint()
    with pytest.raises(InvalidParameterError) as info:  # a tensor needs its embedding
        pool.update(1, tensor=tensors(1, 3)[0])
    assert info.value.param == "embedding" and "user embeddings" in str(info.value)
    assert pool.fingerprint() == before
    q = np.zeros(d, np.float32)
    q[7] = 1.0
    e = pool.update(1, embedding=3.0 * q)  # normalised as at add
    assert np.array_equal(e.embedding, q)
    assert int(pool.retrieve_soft(Query(embedding=q), k=1, weights=SIM_ONLY).ids[0]) == 1
    t = tensors(1, 4)[0]
    e = pool.update(1, tensor=t, embedding=np.eye(d, dtype=np.float32)[6], label=3)
    assert np.array_equal(e.tensor, t) and e.label == 3 and e.embedding[6] == 1.0
    assert_invariants(pool)


def test_update_refused_when_reindexing_overflows_budget(monkeypatch):
    """An update whose re-indexing could pass the memory budget raises and changes
    nothing (forced here: the budget reports itself full)."""
    pool = pool_with(5, memory_budget_mb=1.0, use_ann=True, ann_threshold=100)
    budget = pool.config.budget_bytes
    assert pool.budget.entry_bytes() > pool.table.store_entry_bytes()  # a delta slot charged
    monkeypatch.setattr(pool.budget, "used_bytes", lambda: budget)
    before = pool.fingerprint()
    with pytest.raises(MemoryExceededError) as info:
        pool.update(2, label=1)
    assert info.value.param == "eid" and "memory budget" in str(info.value)
    assert pool.fingerprint() == before
    pool.update(2, result=(1.0, 0.5, 0.0))  # no re-indexing: allowed
    monkeypatch.undo()
    pool.update(2, label=1)
    assert_invariants(pool)


def test_update_then_evictions_and_feedback_stay_consistent():
    pool = pool_with(6, max_size=6, eviction="lowest_utility")
    pool.update(0, utility=5.0)  # the oldest, now the most useful: survives evictions
    pool.add_batch(tensors(3, 9), np.tile([1.0, 0.9, 0.0], (3, 1)), utilities=[0.5] * 3)
    assert 0 in pool and 1 not in pool
    assert_invariants(pool)


# ------------------------------------------------------------------ persistence
def test_removal_then_save_load(tmp_path):
    pool = pool_with(10)
    pool.remove([1, 2, 9])
    del pool[4]
    pool.update(5, label=2, tensor=tensors(1, 11)[0])
    path = pool.save(os.path.join(tmp_path, "p.npz"))
    back = dj.DreamPool.load(path)
    assert back.ids().tolist() == [0, 3, 5, 6, 7, 8]
    s, b = pool.stats(), back.stats()
    for key in ("count", "next_id", "evicted", "removed", "label_counts"):
        assert s[key] == b[key], key
    for eid in back.ids():
        e, f = pool[eid], back[eid]
        for name in ("tensor", "chroma", "spectral", "embedding"):
            assert np.array_equal(getattr(e, name), getattr(f, name))
    assert back.add(tensors(1, 12)[0], SolverResult(1.0, 0.9, 0.0)) == 10
    assert_invariants(back)


def test_load_accepts_files_without_the_removed_counter(tmp_path):
    import dreamjit.io as io_mod

    pool = pool_with(3)
    path = pool.save(os.path.join(tmp_path, "p.npz"))
    header = dict(io_mod.read_header(path))
    header.pop("integrity")
    header.pop("removed")
    header.pop("graph")  # such files are format 2 (no graph either)
    header["format_version"] = 2
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__header__"}
    blob = np.frombuffer(io_mod._encode_header(header), dtype=np.uint8)
    old = os.path.join(tmp_path, "old.npz")
    np.savez(old, __header__=blob, **arrays)
    back = dj.DreamPool.load(old)
    assert back.ids().tolist() == [0, 1, 2] and back.stats()["removed"] == 0


# ------------------------------------------------------------------ columns, to_pandas
def test_columns_aligned_read_only_oldest_first():
    pool = pool_with(8)
    pool.remove([0, 3])
    pool.add(tensors(1, 4)[0], SolverResult(2.0, 0.95, 0.0), label=1)  # reuses slot 0
    c = pool.table.columns()
    assert c.ids.tolist() == [1, 2, 4, 5, 6, 7, 8]
    for i, eid in enumerate(c.ids):
        e = pool[eid]
        assert c.labels[i] == (-1 if e.label is None else e.label)
        assert c.energy[i] == e.result.energy and c.coherence[i] == e.result.coherence
        assert c.violation[i] == e.result.violation and c.usage[i] == e.usage_count
        assert c.util_mean[i] == e.util_mean and c.timestamp[i] == e.timestamp
        assert np.array_equal(c.chroma[i], e.chroma) and np.array_equal(c.spectral[i], e.spectral)
    assert c.keys() == [
        "ids",
        "labels",
        "energy",
        "coherence",
        "violation",
        "utility",
        "util_mean",
        "usage",
        "timestamp",
        "chroma",
        "spectral",
    ]
    assert len(c) == 7 and c.chroma.shape == (7, 3) and c.spectral.shape == (7, 6)
    for name in c.keys():
        arr = c[name]
        assert arr is getattr(c, name) and arr.dtype == COLUMN_DTYPES[name]
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[...] = 0
    with pytest.raises(AttributeError):
        c.ids = None
    empty = dj.DreamPool().table.columns()
    assert len(empty) == 0 and empty.chroma.shape == (0, 0) and empty.spectral.shape == (0, 6)


def test_to_pandas_rows_and_columns():
    pd = pytest.importorskip("pandas")
    pool = pool_with(6)
    pool.add(tensors(1, 7)[0], SolverResult(3.0, 0.8, 0.2))  # no label, no utility
    pool.remove(1)
    pool.retrieve_similar([0.5, 0.4, 0.3], k=2)
    df = pool.to_pandas()
    assert isinstance(df, pd.DataFrame)
    spectral = [
        "entropy",
        "low_band_energy",
        "mid_band_energy",
        "high_band_energy",
        "dominant_frequency",
        "mean_psd",
    ]
    assert list(df.columns) == [
        "id",
        "label",
        "energy",
        "coherence",
        "violation",
        "utility",
        "util_mean",
        "usage_count",
        "timestamp",
        "chroma_0",
        "chroma_1",
        "chroma_2",
        *spectral,
    ]
    assert df["id"].tolist() == pool.ids().tolist() == [0, 2, 3, 4, 5, 6]
    for row, e in zip(df.itertuples(index=False), pool):
        assert row.id == e.id and row.energy == e.result.energy
        assert row.usage_count == e.usage_count and row.util_mean == e.util_mean
        if e.label is None:
            assert pd.isna(row.label)
        else:
            assert row.label == e.label
        assert np.isnan(row.utility) if e.utility is None else row.utility == e.utility
        assert [row.chroma_0, row.chroma_1, row.chroma_2] == e.chroma.tolist()
        assert [getattr(row, n) for n in spectral] == e.spectral.tolist()
    df.loc[0, "energy"] = -5.0  # a copy
    assert pool[0].result.energy == 0.0
    assert len(dj.DreamPool().to_pandas()) == 0


def test_to_pandas_without_pandas(monkeypatch):
    pool = pool_with(2)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(FeatureUnavailableError) as info:
        pool.to_pandas()
    assert "dreamjit[pandas]" in str(info.value) and info.value.param == "pandas"


# ------------------------------------------------------------------ named statistics
def test_named_statistics_unpack_as_before():
    pool = pool_with(4, memory_budget_mb=2.0)
    s = pool.memory_budget_stats()
    current_mb, max_mb, ratio, count = s
    assert (s.current_mb, s.max_mb, s.usage_ratio, s.count) == (current_mb, max_mb, ratio, count)
    assert s._fields == ("current_mb", "max_mb", "usage_ratio", "count")
    assert count == 4 and max_mb == 2.0 and ratio == pytest.approx(current_mb / 2.0)
    assert current_mb == pytest.approx(pool.used_bytes() / 2**20)
    assert isinstance(s, dj.BudgetStats) and "current_mb=" in repr(s)
    assert pool_with(1).memory_budget_stats().max_mb is None
    pool.retrieve_soft([0.5, 0.4, 0.3])
    pool.retrieve_soft([0.5, 0.4, 0.3])
    c = pool.query_cache_stats()
    hits, misses, rate = c
    assert isinstance(c, dj.CacheStats) and c._fields == ("hits", "misses", "hit_rate")
    assert (c.hits, c.misses, c.hit_rate) == (hits, misses, rate) == (1, 1, 0.5)


def test_every_stats_key_documented():
    pool = pool_with(3)
    doc = dj.DreamPool.stats.__doc__
    for key in pool.stats():
        assert f"``{key}``" in doc, key
    page = os.path.join(os.path.dirname(__file__), "..", "docs", "notebooks", "data_container.md")
    with open(page) as fh:
        text = fh.read()
    for key in pool.stats():
        assert f"`{key}`" in text, key


# ------------------------------------------------------------------ with the NN-descent index
def _unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.jit_only  # pynndescent's own kernels cannot run as Python
@pytest.mark.ann
def test_ann_never_returns_removed_ids_and_finds_updates():
    n, d = 3000, 32
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(60, d))
    V = _unit(centres[rng.integers(0, 60, n)] + 0.5 * rng.normal(size=(n, d)))
    cfg = PoolConfig(
        memory_budget_mb=None,
        max_size=n,
        embedding_dim=d,
        use_ann=True,
        ann_threshold=256,
        ann_background=False,
        seed=0,
    )
    pool = dj.DreamPool(cfg)
    pool.add_batch(
        np.zeros((n, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (n, 1)), embeddings=V
    )
    assert pool.stats()["index"] == "ann"
    gone = rng.choice(n, 120, replace=False)  # 4%: below the rebuild fraction, tombstones
    pool.remove(gone)
    del pool[int(np.setdiff1d(np.arange(n), gone)[0])]
    removed = set(gone.tolist()) | {int(np.setdiff1d(np.arange(n), gone)[0])}
    assert pool.stats()["index"] == "ann" and pool.indexes.ann.n_tombstones > 0
    assert_invariants(pool)
    live = pool.ids()
    E = np.array([pool[i].embedding for i in live])
    found = total = 0
    for q in V[gone[:60]]:  # queries right on the removed entries
        hits = pool.retrieve_soft(Query(embedding=q), k=10, weights=SIM_ONLY)
        assert not set(hits.ids.tolist()) & removed
        truth = set(live[np.argsort(-(E @ q), kind="stable")[:10]].tolist())
        found += len(truth & set(hits.ids.tolist()))
        total += 10
    assert found / total >= 0.9
    # updates: an entry moved onto a new direction is found there by the graph search
    for eid in live[:20].tolist():
        target = _unit(rng.normal(size=(1, d)))[0]
        pool.update(eid, embedding=target)
        hits = pool.retrieve_soft(Query(embedding=target), k=1, weights=SIM_ONLY)
        assert int(hits.ids[0]) == eid
    assert_invariants(pool)
    assert pool.clear() == n - len(removed)
    assert len(pool.retrieve_soft(Query(embedding=V[0]), k=5)) == 0
    assert_invariants(pool)


# ------------------------------------------------------------------ threads
def test_removals_and_updates_beside_readers():
    """Readers retrieving and iterating while a writer removes, updates and adds: no
    reader raises, every hit is an id issued, and the pool ends consistent."""
    import threading

    pool = pool_with(60, seed=4)
    errors = []
    stop = threading.Event()
    started = threading.Barrier(3)

    def reader():
        started.wait()
        try:
            while not stop.is_set():
                hits = pool.retrieve_soft([0.5, 0.4, 0.3], k=5)
                assert all(0 <= i < pool.stats()["next_id"] for i in hits.ids.tolist())
                hits.entries()
                for e in pool:
                    assert e.id >= 0
                pool.memory_budget_stats()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait()
    rng = np.random.default_rng(0)
    try:
        for step in range(40):
            ids = pool.ids()
            pool.remove(ids[rng.integers(len(ids))])
            ids = pool.ids()
            pool.update(
                int(ids[rng.integers(len(ids))]), label=step % 3, tensor=tensors(1, step)[0]
            )
            pool.add(tensors(1, 100 + step)[0], SolverResult(1.0, 0.9, 0.0))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(pool) == 60 and pool.stats()["removed"] == 40
    assert_invariants(pool)


def test_remove_update_clear_with_the_mmap_tensor_store(tmp_path):
    """With tensor_store="mmap" the same edits hold, and survive save/load."""
    cfg = PoolConfig(
        memory_budget_mb=None,
        use_ann=False,
        tensor_store="mmap",
        path=str(tmp_path / "store"),
    )
    pool = dj.DreamPool(cfg)
    pool.add_batch(tensors(8), np.tile([1.0, 0.9, 0.0], (8, 1)), labels=list(range(8)))
    pool.remove([1, 6])
    t = tensors(1, 21)[0]
    e = pool.update(3, tensor=t, label=5)
    assert np.array_equal(e.tensor, t) and np.array_equal(pool[3].tensor, t)
    assert_invariants(pool)
    back = dj.DreamPool.load(pool.save(str(tmp_path / "p.npz")))
    assert back.ids().tolist() == [0, 2, 3, 4, 5, 7] and back.stats()["removed"] == 2
    assert np.array_equal(back[3].tensor, t) and back[3].label == 5
    assert back.clear() == 6 and len(back) == 0
    assert_invariants(back)

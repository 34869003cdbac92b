import dataclasses

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import InvalidConfigError, PoolConfig
from dreamjit._validate import MAX_ENTRIES


def test_defaults_match_design():
    c = PoolConfig()
    assert (c.max_size, c.coherence_threshold, c.retrieval_limit) == (1000, 0.75, 3)
    assert (c.memory_budget_mb, c.eviction_threshold, c.eviction) == (500, 0.9, "oldest")
    assert c.embedding_dim == 64 and c.query_cache_size == 128 and c.seed == 0
    assert c.tensor_shape is None and c.use_ann is True


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PoolConfig().max_size = 3


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_size", 0),
        ("max_size", 1.5),
        ("max_size", "10"),
        ("max_size", True),
        ("coherence_threshold", -0.1),
        ("coherence_threshold", 1.01),
        ("coherence_threshold", float("nan")),
        ("eviction_threshold", 0.0),
        ("eviction_threshold", 1.5),
        ("memory_budget_mb", 0),
        ("memory_budget_mb", -3),
        ("memory_budget_mb", float("inf")),
        ("embedding_dim", 0),
        ("eviction", "random"),
        ("eviction", None),
        ("tensor_shape", (4, 4)),
        ("tensor_shape", (4, 0, 3)),
        ("tensor_shape", (4, 4, 3.0)),
        ("tensor_shape", "4x4x3"),
        ("retrieval_limit", 0),
        ("query_cache_size", -1),
        ("seed", -1),
        ("use_ann", 1),
        ("ann_threshold", 0),
        ("embedding_weights", (1, 2)),
        ("embedding_weights", (1, 1, 1, 1, -1)),
        ("embedding_weights", (1, 1, 1, 1)),
        ("label_buckets", 0),
    ],
)
def test_bad_values_raise_invalid_config(field, value):
    with pytest.raises(InvalidConfigError) as err:
        PoolConfig(**{field: value})
    assert field in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, dj.DreamError)


def test_good_edges():
    PoolConfig(
        coherence_threshold=0.0,
        eviction_threshold=1.0,
        memory_budget_mb=None,
        tensor_shape=[4, 4, 2, 3],
        max_size=1,
    )
    assert PoolConfig(tensor_shape=[4, 4, 3]).tensor_shape == (4, 4, 3)


def test_round_trip_dict():
    c = PoolConfig(max_size=7, tensor_shape=(2, 2, 3), eviction="lowest_utility")
    assert PoolConfig.from_dict(c.to_dict()) == c
    with pytest.raises(InvalidConfigError):
        PoolConfig.from_dict({**c.to_dict(), "bogus": 1})


def test_unknown_settings_raise_invalid_config_listing_valid_ones():
    for call, name in (
        (lambda: dj.DreamPool(max_sizee=3), "max_sizee"),
        (lambda: dj.DreamPool(PoolConfig(), max_sizee=3), "max_sizee"),
        (lambda: PoolConfig().replace(bogus=1), "bogus"),
        (lambda: PoolConfig(bogus=1), "bogus"),
        (lambda: PoolConfig.from_dict({"bogus": 1}), "bogus"),
    ):
        with pytest.raises(InvalidConfigError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(name) and "max_size" in msg and "label_buckets" in msg
    with pytest.raises(InvalidConfigError):
        PoolConfig(10, 0.5, max_size=3)  # given twice
    with pytest.raises(InvalidConfigError):
        PoolConfig(*range(30))


@pytest.mark.parametrize(
    "d",
    [
        None,
        5,
        "max_size",
        [("max_size", 3)],
        {1: 2},
        {"tensor_shape": 5},
        {"tensor_shape": "443"},
        {"embedding_weights": 1.0},
        {"eviction": ["oldest"]},
        {"max_size": {"a": 1}},
    ],
    ids=repr,
)
def test_from_dict_raises_invalid_config(d):
    with pytest.raises(InvalidConfigError):
        PoolConfig.from_dict(d)


def test_config_round_trips_numpy_values():
    c = PoolConfig(
        max_size=np.uint16(7),
        tensor_shape=np.array([2, 2, 3]),
        seed=np.int8(3),
        use_ann=np.False_,
        embedding_weights=np.array([1.0, 0.5, 2.0, 0.5, 0.25]),
    )
    assert c.max_size == 7 and type(c.max_size) is int and c.tensor_shape == (2, 2, 3)
    assert c.use_ann is False and PoolConfig.from_dict(c.to_dict()) == c
    hash(c)


# every config field with values of the wrong type or out of range
_BAD_COMMON = [
    "3",
    b"3",
    [3],
    {"a": 3},
    {3},
    float("nan"),
    float("inf"),
    -float("inf"),
    1 + 2j,
    object(),
    2**70,
    -(2**70),
    10**400,
]
_INT_FIELDS = [
    "max_size",
    "retrieval_limit",
    "ann_threshold",
    "embedding_dim",
    "query_cache_size",
    "seed",
    "ann_n_neighbors",
    "ann_min_ef",
    "ann_n_pivots",
    "label_buckets",
]
_FLOAT_FIELDS = [
    "coherence_threshold",
    "eviction_threshold",
    "ann_epsilon",
    "ann_overfetch",
    "ann_rebuild_fraction",
    "memory_budget_mb",
]
_BOOL_FIELDS = ["use_ann", "store_certainty", "ann_background"]
_CASES = (
    [
        (f, v)
        for f in _INT_FIELDS
        for v in _BAD_COMMON
        + [True, False, 2.0, 1.5, np.float64(4), -1, 2**63, np.uint64(2**64 - 1)]
    ]
    + [(f, None) for f in _INT_FIELDS if f not in ("ann_n_pivots", "ann_min_ef")]
    + [(f, v) for f in _FLOAT_FIELDS for v in _BAD_COMMON + [True, np.True_, -1.0, 1e309]]
    + [(f, None) for f in _FLOAT_FIELDS if f != "memory_budget_mb"]
    + [(f, v) for f in _BOOL_FIELDS for v in _BAD_COMMON + [None, 1, 0, "True", np.array([True])]]
    + [("eviction", v) for v in _BAD_COMMON + [None, ["oldest"], ("oldest",), "OLDEST", 0, True]]
    + [
        ("tensor_shape", v)
        for v in _BAD_COMMON
        + [
            5,
            (4, 4),
            (4, 4, True),
            (4, 4, 3.0),
            (4, 4, 1, 1, 3),
            (2**21, 2**21, 1),
            (4, -4, 3),
            (4, 4, 2**70),
            np.array(3),
            "4x4x3",
            {4, 3},
        ]
    ]
    + [
        ("embedding_weights", v)
        for v in _BAD_COMMON
        + [
            None,
            (1, 2, 3),
            (1, 1, 1, 1),
            (1, 1, 1, 1, -1),
            (1, 1, 1, 1, float("nan")),
            (1e300, 1, 1, 1, 1),
            (1, 1, 1, 1, "1"),
            (1, 1, 1, 1, True),
        ]
    ]
)


@pytest.mark.parametrize("field,value", _CASES, ids=[f"{f}={v!r}"[:60] for f, v in _CASES])
def test_every_config_field_refuses_wrong_types(field, value):
    with pytest.raises(InvalidConfigError) as err:
        PoolConfig(**{field: value})
    assert str(err.value).startswith(field)


def test_config_upper_bounds_are_accepted():
    from dreamjit import config as c

    PoolConfig(
        max_size=MAX_ENTRIES,
        retrieval_limit=MAX_ENTRIES,
        ann_threshold=MAX_ENTRIES,
        query_cache_size=MAX_ENTRIES,
        ann_n_pivots=MAX_ENTRIES,
        embedding_dim=c.MAX_EMBEDDING_DIM,
        label_buckets=c.MAX_LABEL_BUCKETS,
        ann_n_neighbors=c.MAX_ANN_NEIGHBORS,
        ann_overfetch=c.MAX_ANN_OVERFETCH,
        ann_min_ef=c.MAX_ANN_MIN_EF,
        memory_budget_mb=c.MAX_BUDGET_MB,
        seed=2**32 - 1,
        embedding_weights=(c.MAX_EMBEDDING_WEIGHT,) * 5,
        tensor_shape=(2**20, 2**20, 1),
    )

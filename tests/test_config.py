import pytest

import dreamjit as dj
from dreamjit import InvalidConfigError, PoolConfig


def test_defaults_match_design():
    c = PoolConfig()
    assert (c.max_size, c.coherence_threshold, c.retrieval_limit) == (1000, 0.75, 3)
    assert (c.memory_budget_mb, c.eviction_threshold, c.eviction) == (500, 0.9, "oldest")
    assert c.embedding_dim == 64 and c.query_cache_size == 128 and c.seed == 0
    assert c.tensor_shape is None and c.use_ann is True


def test_frozen():
    with pytest.raises(Exception):
        PoolConfig().max_size = 3


@pytest.mark.parametrize("field,value", [
    ("max_size", 0), ("max_size", 1.5), ("max_size", "10"), ("max_size", True),
    ("coherence_threshold", -0.1), ("coherence_threshold", 1.01), ("coherence_threshold", float("nan")),
    ("eviction_threshold", 0.0), ("eviction_threshold", 1.5), ("memory_budget_mb", 0),
    ("memory_budget_mb", -3), ("memory_budget_mb", float("inf")), ("embedding_dim", 0),
    ("eviction", "random"), ("eviction", None), ("tensor_shape", (4, 4)), ("tensor_shape", (4, 0, 3)),
    ("tensor_shape", (4, 4, 3.0)), ("tensor_shape", "4x4x3"), ("retrieval_limit", 0),
    ("query_cache_size", -1), ("seed", -1), ("use_ann", 1), ("ann_threshold", 0),
    ("embedding_weights", (1, 2)), ("embedding_weights", (1, 1, 1, -1)), ("label_buckets", 0),
])
def test_bad_values_raise_invalid_config(field, value):
    with pytest.raises(InvalidConfigError) as err:
        PoolConfig(**{field: value})
    assert field in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, dj.DreamError)


def test_good_edges():
    PoolConfig(coherence_threshold=0.0, eviction_threshold=1.0, memory_budget_mb=None,
               tensor_shape=[4, 4, 2, 3], max_size=1)
    assert PoolConfig(tensor_shape=[4, 4, 3]).tensor_shape == (4, 4, 3)


def test_round_trip_dict():
    c = PoolConfig(max_size=7, tensor_shape=(2, 2, 3), eviction="lowest_utility")
    assert PoolConfig.from_dict(c.to_dict()) == c
    with pytest.raises(InvalidConfigError):
        PoolConfig.from_dict({**c.to_dict(), "bogus": 1})

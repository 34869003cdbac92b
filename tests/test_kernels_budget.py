import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dreamjit.kernels.budget import admission_plan, entries_to_evict, eviction_order
import reference_pool as ref
from props import examples


def test_eviction_order_ties_by_id():
    keys = np.array([0.5, 0.1, 0.5, 0.1, 0.0])
    ids = np.array([10, 11, 3, 7, 99], dtype=np.int64)
    got = eviction_order(keys, ids)
    assert got.dtype == np.int64
    assert got.tolist() == ref.eviction_order(keys.tolist(), ids.tolist()) == [4, 3, 1, 2, 0]


def test_eviction_order_empty():
    assert eviction_order(np.zeros(0), np.zeros(0, np.int64)).shape == (0,)


@pytest.mark.parametrize("used,incoming,entry,target,live", [
    (0, 10, 10, 100, 0), (100, 10, 10, 100, 10), (95, 10, 10, 100, 10), (100, 0, 10, 100, 10),
    (1000, 10, 10, 0, 5), (90, 10, 10, 100, 9)])
def test_entries_to_evict(used, incoming, entry, target, live):
    assert entries_to_evict(used, incoming, entry, target, live) == \
        ref.entries_to_evict(used, incoming, entry, target, live)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.integers(0, 3), min_size=0, max_size=12),
       st.lists(st.integers(0, 3), min_size=1, max_size=12), st.integers(1, 6))
def test_admission_plan_matches_sequential_model(old_keys, new_keys, limit):
    old_keys = old_keys[:limit]  # the pool never holds more than its limit
    keys = np.array(old_keys + new_keys, dtype=np.float64)
    ids = np.arange(len(keys), dtype=np.int64)
    got = admission_plan(keys, ids, len(old_keys), limit)
    assert got.dtype == np.bool_
    assert got.tolist() == ref.admission_plan(keys.tolist(), ids.tolist(), len(old_keys), limit)
    assert (~got).sum() == min(limit, len(keys))


def test_admission_plan_no_eviction_needed():
    keys = np.zeros(3)
    got = admission_plan(keys, np.arange(3, dtype=np.int64), 1, 5)
    assert not got.any()

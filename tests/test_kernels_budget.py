import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamjit.kernels.budget import admission_plan

import reference_pool as ref
from props import examples


@settings(max_examples=examples(60), deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=0, max_size=12),
    st.lists(st.integers(0, 3), min_size=1, max_size=12),
    st.integers(1, 6),
)
def test_admission_plan_matches_sequential_model(old_keys, new_keys, limit):
    old_keys = old_keys[:limit]  # the pool never holds more than its limit
    keys = np.array(old_keys + new_keys, dtype=np.float64)
    ids = np.cumsum(np.random.default_rng(len(keys)).integers(1, 4, len(keys))).astype(np.int64)
    got = admission_plan(keys, ids, len(old_keys), limit)
    assert got.dtype == np.bool_
    assert got.tolist() == ref.admission_plan(keys.tolist(), ids.tolist(), len(old_keys), limit)
    assert (~got).sum() == min(limit, len(keys))


def test_admission_plan_no_eviction_needed():
    keys = np.zeros(3)
    got = admission_plan(keys, np.arange(3, dtype=np.int64), 1, 5)
    assert not got.any()


def test_admission_plan_ties_go_to_the_lower_id():
    keys = np.array([0.5, 0.1, 0.1, 0.5, 0.0])
    ids = np.array([3, 7, 10, 11, 99], dtype=np.int64)
    got = admission_plan(keys, ids, 4, 2)  # one new entry, limit 2: three must leave
    assert (
        got.tolist()
        == ref.admission_plan(keys.tolist(), ids.tolist(), 4, 2)
        == [True, True, True, False, False]
    )

"""The one pool-invariant check every pool test calls."""
import numpy as np


def assert_invariants(pool):
    """bytes used <= budget, index size = live entries, ids unique, slot map consistent."""
    cfg = pool.config
    n = len(pool)
    assert n <= cfg.max_size
    budget = cfg.budget_bytes
    if budget is not None:
        assert pool.used_bytes() <= budget, (pool.used_bytes(), budget)
    store = pool._store
    if store is None:
        assert n == 0
        return
    alive = store.alive
    assert int(alive.sum()) == n == len(pool._slot_of)
    live_ids = store.ids[alive]
    assert np.unique(live_ids).shape[0] == n, "duplicate live ids"
    assert (live_ids < pool._next_id).all() and (live_ids >= 0).all()
    for eid, slot in pool._slot_of.items():
        assert alive[slot] and store.ids[slot] == eid, (eid, slot)
    assert pool.used_bytes() == n * store.entry_bytes + pool._index_nbytes()
    index_len = pool._index_len() if hasattr(pool, "_index_len") else n
    assert index_len == n, (index_len, n)
    ids = pool.ids()
    assert (np.diff(ids) > 0).all()
    pool._check_invariants()

"""Budget and eviction kernels.

Eviction order for every policy is "smallest key first, then smallest id"
(oldest: key 0 for all, so id order; lowest_coherence: key = coherence;
lowest_utility: key = running-mean utility). Adding a batch is planned as if
its entries were added one at a time: before each add, if the pool is at its
entry limit, the entry that comes first in eviction order leaves (an earlier
entry of the same batch included); the entry being added never evicts itself.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel
from .heap import heap_offer
from .heap import heap_pop as _pop


@kernel
def admission_plan(keys, ids, n_existing, limit):
    """Plan a sequence of adds under an entry limit.

    ``keys``/``ids`` hold the ``n_existing`` live entries first, then the new
    ones in arrival order; ``ids`` ascend with position (the pool's order).
    Returns a bool array: True for every position that is gone at the end (an
    existing entry evicted, or a new entry evicted by a later entry of the
    same batch). ``limit >= 1``.

    The members sit in the shared worst-first heap of :mod:`.heap` as
    ``(key, -id)``: its root, the lowest key and then the lowest id, is the
    next to leave.
    """
    total = keys.shape[0]
    gone = np.zeros(total, dtype=np.bool_)
    hs = np.empty(max(total, 1), dtype=np.float64)
    hi = np.empty(max(total, 1), dtype=np.int64)
    size = 0
    for pos in range(n_existing):
        size = heap_offer(hs, hi, size, np.float64(keys[pos]), -ids[pos])
    for pos in range(n_existing, total):
        while size >= limit:
            gone[np.searchsorted(ids, -hi[0])] = True
            size = _pop(hs, hi, size)
        size = heap_offer(hs, hi, size, np.float64(keys[pos]), -ids[pos])
    return gone

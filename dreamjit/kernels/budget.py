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


@kernel
def entries_to_evict(used_bytes, incoming_bytes, entry_bytes, target_bytes, live):
    """How many entries of ``entry_bytes`` must leave so that
    ``used + incoming <= target`` (capped at ``live``)."""
    excess = used_bytes + incoming_bytes - target_bytes
    if excess <= 0:
        return 0
    n = (excess + entry_bytes - 1) // entry_bytes
    return min(n, live)


@kernel
def _heap_less(keys, ids, a, b):
    return keys[a] < keys[b] or (keys[a] == keys[b] and ids[a] < ids[b])


@kernel
def _sift_down(heap, size, pos, keys, ids):
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        best = left
        right = left + 1
        if right < size and _heap_less(keys, ids, heap[right], heap[left]):
            best = right
        if _heap_less(keys, ids, heap[best], heap[pos]):
            heap[pos], heap[best] = heap[best], heap[pos]
            pos = best
        else:
            return


@kernel
def _sift_up(heap, pos, keys, ids):
    while pos > 0:
        parent = (pos - 1) // 2
        if _heap_less(keys, ids, heap[pos], heap[parent]):
            heap[pos], heap[parent] = heap[parent], heap[pos]
            pos = parent
        else:
            return


@kernel
def eviction_order(keys, ids):
    """Positions sorted by (key, id): the order in which entries are evicted."""
    n = keys.shape[0]
    heap = np.arange(n)
    for pos in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, pos, keys, ids)
    order = np.empty(n, dtype=np.int64)
    size = n
    for i in range(n):
        order[i] = heap[0]
        size -= 1
        heap[0] = heap[size]
        _sift_down(heap, size, 0, keys, ids)
    return order


@kernel
def admission_plan(keys, ids, n_existing, limit):
    """Plan a sequence of adds under an entry limit.

    ``keys``/``ids`` hold the ``n_existing`` live entries first, then the new
    ones in arrival order. Returns a bool array: True for every position that
    is gone at the end (an existing entry evicted, or a new entry evicted by a
    later entry of the same batch). ``limit >= 1``.
    """
    total = keys.shape[0]
    gone = np.zeros(total, dtype=np.bool_)
    heap = np.empty(total, dtype=np.int64)
    size = 0
    for pos in range(n_existing):
        heap[size] = pos
        size += 1
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(heap, size, pos, keys, ids)
    for pos in range(n_existing, total):
        while size >= limit:
            gone[heap[0]] = True
            size -= 1
            heap[0] = heap[size]
            _sift_down(heap, size, 0, keys, ids)
        heap[size] = pos
        size += 1
        _sift_up(heap, size - 1, keys, ids)
    return gone

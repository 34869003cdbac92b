"""The usage count of retrieval results.

Every retrieval counts one use of each entry it returns: for the handful of slots
of one result a kernel call costs a third of numpy's ``usage[slots] += 1`` (which
gathers, adds and scatters through temporaries).
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["count_slot_uses", "count_uses"]


@kernel
def count_uses(usage, ids, slots):
    """Add one to ``usage[slots]`` in place (``usage`` (n,) int64; ``slots`` (k,) int64
    distinct rows, one result's hits) and return ``ids[slots]`` (a new int64 array: the
    hits' ids, gathered in the same pass). The caller serialises writers of ``usage``."""
    out = np.empty(slots.shape[0], dtype=np.int64)
    for i in range(slots.shape[0]):
        usage[slots[i]] += 1
        out[i] = ids[slots[i]]
    return out


@kernel
def count_slot_uses(usage, slots):
    """Add one to ``usage[slots]`` in place (``usage`` (n,) int64; ``slots`` (k,) int64
    distinct rows, one result's hits, whose ids the caller has already). The caller
    serialises writers of ``usage``."""
    for i in range(slots.shape[0]):
        usage[slots[i]] += 1

"""The bounded "worst-first" heap shared by the top-k kernels (exact scans and graph walks).

A min-heap of the best items seen so far, where "smallest" means worst: a lower
score, or an equal score and a higher index. The root is the item that leaves
first when a better one arrives, so ties always keep the lower index.

The same order serves as a "best-first" queue when the keys are negated
scores (the graph walk's candidates): the root is then the best score, and
:func:`heap_push` grows the arrays as needed.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def worse(s_a, i_a, s_b, i_b):
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@kernel
def sift_down(hs, hi, size, pos, s, i):
    """Place (s, i) at ``pos`` and sift it down within ``hs[:size]``."""
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and worse(hs[c + 1], hi[c + 1], hs[c], hi[c]):
            c += 1
        if worse(hs[c], hi[c], s, i):
            hs[pos] = hs[c]
            hi[pos] = hi[c]
            pos = c
        else:
            break
    hs[pos] = s
    hi[pos] = i


@kernel
def sift_up(hs, hi, pos, s, i):
    """Place (s, i) at ``pos`` (a free leaf) and sift it up towards the root."""
    while pos > 0:
        parent = (pos - 1) // 2
        if not worse(s, i, hs[parent], hi[parent]):
            break
        hs[pos] = hs[parent]
        hi[pos] = hi[parent]
        pos = parent
    hs[pos] = s
    hi[pos] = i


@kernel
def heap_pop(hs, hi, size):
    """Remove the root of ``hs[:size]`` (read ``hs[0], hi[0]`` first); return the new size."""
    size -= 1
    if size > 0:
        sift_down(hs, hi, size, 0, hs[size], hi[size])
    return size


@kernel
def heap_offer(hs, hi, size, s, i):
    """Offer (s, i) to a heap of capacity ``len(hs)`` holding ``size``; return the new size."""
    if size < hs.shape[0]:
        sift_up(hs, hi, size, s, i)
        return size + 1
    if worse(hs[0], hi[0], s, i):
        sift_down(hs, hi, size, 0, s, i)
    return size


@kernel
def heap_drain(hs, hi, size, out_i, out_s):
    """Empty the heap into ``out_i``/``out_s`` best first (heap is destroyed)."""
    for end in range(size - 1, -1, -1):
        out_i[end] = hi[0]
        out_s[end] = hs[0]
        if end > 0:  # move the last leaf to the root and restore the heap
            sift_down(hs, hi, end, 0, hs[end], hi[end])


@kernel
def heap_push(hs, hi, size, s, i):
    """Push (s, i) onto ``hs[:size]``, doubling the arrays when full; return ``(hs, hi, size)``."""
    if size == hs.shape[0]:
        nhs = np.empty(2 * size, dtype=hs.dtype)
        nhi = np.empty(2 * size, dtype=hi.dtype)
        nhs[:size] = hs[:size]
        nhi[:size] = hi[:size]
        hs = nhs
        hi = nhi
    sift_up(hs, hi, size, s, i)
    return hs, hi, size + 1

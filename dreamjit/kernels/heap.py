"""The bounded "worst-first" heap shared by the top-k kernels (exact scans and graph walks).

A min-heap of the best items seen so far, where "smallest" means worst: a lower
score, or an equal score and a higher index. The root is the item that leaves
first when a better one arrives, so ties always keep the lower index.
"""

from __future__ import annotations

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
def heap_offer(hs, hi, size, s, i):
    """Offer (s, i) to a heap of capacity ``len(hs)`` holding ``size``; return the new size."""
    if size < hs.shape[0]:
        pos = size
        while pos > 0:  # sift up
            parent = (pos - 1) // 2
            if worse(s, i, hs[parent], hi[parent]):
                hs[pos] = hs[parent]
                hi[pos] = hi[parent]
                pos = parent
            else:
                break
        hs[pos] = s
        hi[pos] = i
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

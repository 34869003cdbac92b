"""Spatial thumbnail kernel: a coarse, certainty-weighted picture of a tensor.

The thumbnail of a ``(rows, cols, layers, C)`` tensor is a ``(grid, grid, C)``
array: the tensor is averaged over its layers and over ``grid x grid`` areas of
rows and columns, each cell weighted by its certainty when one is given. Area
``b`` of an axis of length ``n`` spans ``[b*n // grid, max((b+1)*n // grid,
b*n // grid + 1))`` (axes shorter than ``grid`` repeat cells). An area whose
weights sum to 0 takes the tensor's weighted mean (the chroma), so unobserved
areas carry no structure. Sums run in float64.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel, parallel_kernel, prange

__all__ = ["area_bounds", "thumbnail_into", "thumbnail_batch"]


@kernel
def area_bounds(b, n, grid):
    """Rows (or columns) ``[lo, hi)`` of area ``b`` of an axis of length ``n`` cut in ``grid``."""
    lo = b * n // grid
    return lo, max((b + 1) * n // grid, lo + 1)


@kernel
def thumbnail_into(t, w, use_w, grid, out):
    """Write the thumbnail of ``t`` (rows, cols, layers, C) into ``out`` (grid*grid*C,).

    ``w`` (rows, cols, layers) weights the cells when ``use_w``; total weight
    <= 0 falls back to equal weights (as the chroma signature does).
    """
    rows, cols, layers, C = t.shape
    total = 0.0
    if use_w:
        for r in range(rows):
            for c in range(cols):
                for layer in range(layers):
                    total += np.float64(w[r, c, layer])
    weighted = use_w and total > 0.0
    sums = np.zeros((grid, grid, C))
    if not weighted:
        # each pixel's layers summed first (layer order), then the pixels of an area in
        # row-major order: the order describe_entries' one pass over a tensor uses
        for br in range(grid):
            r0, r1 = area_bounds(br, rows, grid)
            for bc in range(grid):
                c0, c1 = area_bounds(bc, cols, grid)
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        for ch in range(C):
                            s = 0.0
                            for layer in range(layers):
                                s += np.float64(t[r, c, layer, ch])
                            sums[br, bc, ch] += s
                ws = np.float64((r1 - r0) * (c1 - c0) * layers)
                for ch in range(C):
                    out[(br * grid + bc) * C + ch] = sums[br, bc, ch] / ws
        return
    mean = np.zeros(C)  # the weighted mean over all cells: the value of an unobserved area
    wall = 0.0
    for r in range(rows):
        for c in range(cols):
            for layer in range(layers):
                wc = np.float64(w[r, c, layer])
                wall += wc
                for ch in range(C):
                    mean[ch] += wc * np.float64(t[r, c, layer, ch])
    for ch in range(C):
        mean[ch] /= wall
    wsum = np.zeros((grid, grid))
    for br in range(grid):
        r0, r1 = area_bounds(br, rows, grid)
        for bc in range(grid):
            c0, c1 = area_bounds(bc, cols, grid)
            for r in range(r0, r1):
                for c in range(c0, c1):
                    for layer in range(layers):
                        wc = np.float64(w[r, c, layer])
                        if wc == 0.0:
                            continue
                        wsum[br, bc] += wc
                        for ch in range(C):
                            sums[br, bc, ch] += wc * np.float64(t[r, c, layer, ch])
    for br in range(grid):
        for bc in range(grid):
            ws = wsum[br, bc]
            for ch in range(C):
                v = sums[br, bc, ch] / ws if ws > 0.0 else mean[ch]
                out[(br * grid + bc) * C + ch] = v


@parallel_kernel
def thumbnail_batch(tensors, certainty, use_certainty, grid):
    """Thumbnails ``(n, grid*grid*C)`` float32 of ``(n, rows, cols, layers, C)`` float32.

    ``certainty`` is ``(n, rows, cols, layers)`` when ``use_certainty``, else any
    4-d float32 array (not read).
    """
    n = tensors.shape[0]
    C = tensors.shape[4]
    out64 = np.empty((n, grid * grid * C))
    no_w = np.empty((0, 0, 0), dtype=certainty.dtype)  # typed stand-in, never read
    for i in prange(n):
        if use_certainty:
            thumbnail_into(tensors[i], certainty[i], use_certainty, grid, out64[i])
        else:
            thumbnail_into(tensors[i], no_w, use_certainty, grid, out64[i])
    return out64.astype(np.float32)

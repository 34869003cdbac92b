"""Chroma signature kernels: the per-channel mean colour of a tensor.

A tensor is ``(rows, cols, layers, C)`` float32; sums run in float64. With a
certainty array ``(rows, cols, layers)`` the mean is certainty-weighted; a
total weight <= 0 falls back to the plain mean (nothing to weight by).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel, parallel_kernel, prange

__all__ = ["chroma_into", "chroma_one", "chroma_batch"]


@kernel
def chroma_into(t, w, use_w, out):
    """Write the chroma of one tensor ``t`` (weights ``w`` if ``use_w``) into ``out`` (C,)."""
    rows, cols, layers, C = t.shape
    acc = np.zeros(C)
    plain = np.zeros(C)
    wsum = 0.0
    for i in range(rows):
        for j in range(cols):
            for k in range(layers):
                wk = np.float64(w[i, j, k]) if use_w else 1.0
                wsum += wk
                for c in range(C):
                    v = np.float64(t[i, j, k, c])
                    plain[c] += v
                    acc[c] += wk * v
    cells = rows * cols * layers
    if use_w and wsum > 0.0:
        for c in range(C):
            out[c] = acc[c] / wsum
    else:
        for c in range(C):
            out[c] = plain[c] / cells


@kernel
def chroma_one(t, w, use_w):
    """Chroma of one tensor ``(rows, cols, layers, C)`` -> float32 (C,)."""
    out = np.empty(t.shape[3], dtype=np.float32)
    chroma_into(t, w, use_w, out)
    return out


@parallel_kernel
def chroma_batch(tensors, certainty, use_certainty):
    """Chroma of each tensor of ``(n, rows, cols, layers, C)`` -> float32 (n, C).

    ``certainty`` is ``(n, rows, cols, layers)`` when ``use_certainty``, else
    any 4-d float32 array (it is not read).
    """
    n = tensors.shape[0]
    out = np.empty((n, tensors.shape[4]), dtype=np.float32)
    no_w = np.empty((0, 0, 0), dtype=certainty.dtype)  # typed stand-in, never read
    for i in prange(n):
        if use_certainty:
            chroma_into(tensors[i], certainty[i], True, out[i])
        else:
            chroma_into(tensors[i], no_w, False, out[i])
    return out

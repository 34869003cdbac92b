"""Chroma signature kernels: the per-channel mean colour of a tensor.

A tensor is ``(rows, cols, layers, C)`` float32; sums run in float64 (plain
mean: each pixel's layers, then the pixels in row-major order; weighted: cell
by cell in row-major order). With a certainty array ``(rows, cols, layers)`` the
mean is certainty-weighted, ``sum(w*x) / sum(w)``; a total weight <= 0 falls
back to the plain mean (there is nothing to weight by).
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel, parallel_kernel, prange

__all__ = ["plain_sums", "chroma_into", "chroma_one", "chroma_batch"]


@kernel
def _weighted_means(f, wf, wsum, out):
    # f (cells, C), wf (cells,); explicit float64 casts keep the sums float64 without the JIT too
    n, C = f.shape
    scale = 1.0 / wsum
    if C == 3:  # the default RGB case: one pass, sums in registers
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for q in range(n):
            wq = np.float64(wf[q])
            s0 += wq * np.float64(f[q, 0])
            s1 += wq * np.float64(f[q, 1])
            s2 += wq * np.float64(f[q, 2])
        out[0] = s0 * scale
        out[1] = s1 * scale
        out[2] = s2 * scale
        return
    for c in range(C):
        s = 0.0
        for q in range(n):
            s += np.float64(wf[q]) * np.float64(f[q, c])
        out[c] = s * scale


@kernel
def plain_sums(t, raw):
    """Per-channel sums of ``t`` (rows, cols, layers, C) into ``raw`` (C,), float64.

    The order is fixed: each pixel's layers are summed (layer order), then the
    pixel sums in row-major order. The spectral kernel's one pass over a tensor
    (:func:`dreamjit.kernels.spectral.describe_entries`) sums in this same order,
    so its chroma equals :func:`chroma_into`'s bit for bit.
    """
    rows, cols, layers, C = t.shape
    npix = rows * cols
    f = t.reshape(npix, layers * C)
    for c in range(C):
        acc = 0.0
        for p in range(npix):
            s = 0.0
            for k in range(layers):
                s += np.float64(f[p, k * C + c])
            acc += s
        raw[c] = acc


@kernel
def chroma_into(t, w, use_w, out):
    """Write the chroma of one tensor ``t`` into ``out`` (C,); weights ``w`` if ``use_w``.

    ``t`` and ``w`` (``(rows, cols, layers)``, or any empty 3-d array when
    ``use_w`` is false) must be C-contiguous.
    """
    n = t.shape[0] * t.shape[1] * t.shape[2]
    f = t.reshape(n, t.shape[3])
    wf = w.ravel()
    wsum = 0.0
    if use_w:
        for q in range(n):
            wsum += np.float64(wf[q])
    if use_w and wsum > 0.0:
        _weighted_means(f, wf, wsum, out)
        return
    raw = np.empty(t.shape[3])
    plain_sums(t, raw)
    scale = 1.0 / n
    for c in range(t.shape[3]):
        out[c] = raw[c] * scale


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
            chroma_into(tensors[i], certainty[i], use_certainty, out[i])
        else:
            chroma_into(tensors[i], no_w, use_certainty, out[i])
    return out

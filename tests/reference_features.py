"""Slow, obviously correct references for spectral features, chroma and the evaluator.

Self-contained (imports nothing from dreamjit) so the kernels are checked
against an independent reading of the definitions. All arithmetic is float64
on the float32-cast input (the package stores tensors as float32), so a
reference value differs from a kernel value only by float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.special
import scipy.stats

__all__ = [
    "as_tensor4",
    "hann_periodic",
    "radius_grid",
    "spectral_channel_ref",
    "spectral_features_ref",
    "spectral_batch_numpy",
    "chroma_ref",
    "hue_degrees_ref",
    "evaluate_ref",
    "circular_std_degrees_ref",
    "circular_std_degrees_scipy",
]

FLAT_POWER = 1e-12  # total power below this: a flat channel


def as_tensor4(t) -> np.ndarray:
    """``t`` as float64 ``(rows, cols, layers, C)`` after the package's float32 cast."""
    a = np.asarray(t).astype(np.float32).astype(np.float64)
    return a[:, :, None, :] if a.ndim == 3 else a


def hann_periodic(n: int) -> np.ndarray:
    """``w[i] = 0.5 - 0.5*cos(2*pi*i/n)`` (note: ``[0.0]`` for n == 1, unlike scipy)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def radius_grid(rows: int, cols: int) -> np.ndarray:
    """Normalised radial frequency: 1.0 at the Nyquist frequency of one axis."""
    fy = np.fft.fftfreq(rows)
    fx = np.fft.fftfreq(cols)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / 0.5


def spectral_channel_ref(x2d) -> list:
    """``[entropy, low, mid, high, dominant, power]`` of one 2-d float64 channel."""
    x = np.array(x2d, dtype=np.float64)
    rows, cols = x.shape
    x = x - x.mean()
    x = x * hann_periodic(rows)[:, None] * hann_periodic(cols)[None, :]
    P = np.abs(np.fft.fft2(x)) ** 2 / (rows * cols)
    power = float(P.mean())
    total = float(P.sum())
    if total < FLAT_POWER:
        return [0.0, 0.0, 0.0, 0.0, 0.0, power]
    r = radius_grid(rows, cols)
    entropy = 0.0
    if rows * cols > 1:
        for value in P.ravel():
            p = value / total
            if p > 0.0:
                entropy -= p * math.log(p)
        entropy /= math.log(rows * cols)
    low = float(P[r < 1.0 / 3.0].sum()) / total
    mid = float(P[(r >= 1.0 / 3.0) & (r < 2.0 / 3.0)].sum()) / total
    high = float(P[r >= 2.0 / 3.0].sum()) / total
    dominant = float(r.ravel()[int(np.argmax(P))])  # argmax: first row-major index on ties
    return [entropy, low, mid, high, dominant, power]


def spectral_features_ref(t) -> np.ndarray:
    """Channel mean of the six spectral features of one tensor, float64 (6,)."""
    a = as_tensor4(t)
    per_channel = [spectral_channel_ref(a[:, :, :, c].mean(axis=2)) for c in range(a.shape[3])]
    return np.mean(np.array(per_channel, dtype=np.float64), axis=0)


def spectral_batch_numpy(tensors) -> np.ndarray:
    """Vectorised numpy/scipy spectral features of a batch ``(n, rows, cols, layers, C)``.

    The fair peer for benchmarks: one ``scipy.fft.fft2`` over the whole batch
    and array expressions throughout, no Python loop over tensors (only over
    layers, which beats numpy's float64 ``mean`` over a middle axis 4x).
    Returns float32 ``(n, 6)`` like the kernel.
    """
    a = np.asarray(tensors, dtype=np.float32)
    if a.ndim == 4:
        a = a[:, :, :, None, :]
    n, rows, cols, layers, C = a.shape
    N = rows * cols
    moved = np.moveaxis(a, 4, 1)  # (n, C, rows, cols, layers) view
    x = np.ascontiguousarray(moved[..., 0], dtype=np.float64)
    for k in range(1, layers):
        x += moved[..., k]
    x /= layers
    x -= x.reshape(n, C, N).mean(axis=2)[:, :, None, None]
    x *= hann_periodic(rows)[:, None] * hann_periodic(cols)[None, :]
    F = scipy.fft.fft2(x)
    P = F.real**2
    P += F.imag**2
    P /= N
    P = P.reshape(n, C, N)
    total = P.sum(axis=2)
    flat = total < FLAT_POWER
    safe = np.where(flat, 1.0, total)
    # -sum p ln p = ln S - sum(P ln P) / S, with entr(P) = -P ln P (0 at P == 0)
    entropy = scipy.special.entr(P).sum(axis=2) / safe + np.log(safe)
    entropy = entropy / math.log(N) if N > 1 else np.zeros_like(entropy)
    r = radius_grid(rows, cols).ravel()
    bands = np.stack([r < 1.0 / 3.0, (r >= 1.0 / 3.0) & (r < 2.0 / 3.0), r >= 2.0 / 3.0], axis=1)
    band = (P @ bands.astype(np.float64)) / safe[:, :, None]  # (n, C, 3)
    dominant = r[np.argmax(P, axis=2)]
    feats = np.concatenate(
        [entropy[:, :, None], band, dominant[:, :, None], (total / N)[:, :, None]], axis=2
    )
    feats[:, :, :5] = np.where(flat[:, :, None], 0.0, feats[:, :, :5])
    return feats.mean(axis=1).astype(np.float32)


def chroma_ref(t, certainty=None) -> np.ndarray:
    """Per-channel mean (certainty-weighted when given), float64 (C,)."""
    a = as_tensor4(t)
    rows, cols, layers, C = a.shape
    out = np.zeros(C)
    w = None
    if certainty is not None:
        w = np.asarray(certainty).astype(np.float32).astype(np.float64).reshape(rows, cols, layers)
        if w.sum() <= 0.0:
            w = None
    for c in range(C):
        total = 0.0
        weight = 0.0
        for i in range(rows):
            for j in range(cols):
                for k in range(layers):
                    wk = 1.0 if w is None else w[i, j, k]
                    total += wk * a[i, j, k, c]
                    weight += wk
        out[c] = total / weight
    return out


def hue_degrees_ref(r: float, g: float, b: float) -> float:
    """RGB -> HSV hue in degrees in [0, 360); 0 for (near-)gray."""
    mx = max(r, g, b)
    mn = min(r, g, b)
    d = mx - mn
    if d < 1e-6:
        return 0.0
    if mx == r:
        h = 60.0 * (((g - b) / d) % 6.0)
    elif mx == g:
        h = 60.0 * ((b - r) / d + 2.0)
    else:
        h = 60.0 * ((r - g) / d + 4.0)
    return h - 360.0 if h >= 360.0 else h  # (-tiny % 6.0) rounds up to 6.0


def circular_std_degrees_ref(hues_deg) -> float:
    """Circular std ``sqrt(-2 ln R)`` in degrees; inf when R == 0."""
    n = len(hues_deg)
    c = sum(math.cos(math.radians(h)) for h in hues_deg) / n
    s = sum(math.sin(math.radians(h)) for h in hues_deg) / n
    R = min(max(math.hypot(c, s), 0.0), 1.0)
    if R <= 0.0:
        return math.inf
    return math.degrees(math.sqrt(-2.0 * math.log(R)))


def circular_std_degrees_scipy(hues_deg) -> float:
    """The same quantity via ``scipy.stats.circstd`` (cross-check)."""
    return math.degrees(float(scipy.stats.circstd(np.deg2rad(np.asarray(hues_deg, dtype=float)))))


def evaluate_ref(t, lambda_tv: float = 1.0, lambda_sat: float = 0.1) -> tuple:
    """``(energy, coherence, violation)`` of one RGB tensor, with plain loops."""
    a = as_tensor4(t)
    rows, cols, layers, C = a.shape
    assert C == 3
    cells = rows * cols * layers
    hues = []
    sat_dev = 0.0
    sat_excess = 0.0
    outside = 0
    sums = [0.0, 0.0, 0.0]
    for i in range(rows):
        for j in range(cols):
            for k in range(layers):
                r, g, b = (float(v) for v in a[i, j, k])
                mx, mn = max(r, g, b), min(r, g, b)
                sat = (mx - mn) / mx if mx >= 1e-6 else 0.0
                sat_dev += (sat - 0.5) ** 2
                sat_excess += max(0.0, sat - 0.95)
                hues.append(hue_degrees_ref(r, g, b))
                outside += any(v < 0.0 or v > 1.0 for v in (r, g, b))
                sums[0] += r
                sums[1] += g
                sums[2] += b
    tv = 0.0
    jumps = 0
    for k in range(layers):
        for i in range(rows):
            for j in range(cols):
                for ni, nj in ((i + 1, j), (i, j + 1)):
                    if ni < rows and nj < cols:
                        d = math.sqrt(sum((a[i, j, k, c] - a[ni, nj, k, c]) ** 2 for c in range(3)))
                        tv += d
                        jumps += d > 0.3
    energy = lambda_tv * tv + lambda_sat * sat_dev / cells
    balance = 1.0 - sum(abs(s / cells - 0.5) for s in sums) / 1.5
    consistency = 1.0 - min(circular_std_degrees_ref(hues) / 180.0, 1.0)
    coherence = 0.6 * balance + 0.4 * consistency
    violation = min(1.0, (outside + sat_excess + 0.5 * jumps) / cells)
    return energy, coherence, violation

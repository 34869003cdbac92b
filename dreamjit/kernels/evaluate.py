"""The reference evaluator for RGB tensors: energy, coherence and violation.

A tensor is ``(rows, cols, layers, 3)`` float32; a *cell* is one (row, col,
layer) position with its RGB vector. Per cell: saturation
``(max - min) / max`` (0 when max < 1e-6) and HSV hue in degrees (0 when
max - min < 1e-6). Neighbour pairs are each cell with its next row and its next
column in the same layer.

- ``energy = lambda_tv * TV + lambda_sat * mean((sat - 0.5)**2)``, TV the sum
  of the Euclidean RGB distances over neighbour pairs;
- ``coherence = 0.6 * balance + 0.4 * hue_consistency``, balance
  ``1 - sum_c |mean_c - 0.5| / 1.5``, hue consistency
  ``1 - min(circstd_deg(hue) / 180, 1)`` with ``circstd = sqrt(-2 ln R)``;
- ``violation = min(1, (cells outside [0, 1] + sum max(0, sat - 0.95)
  + 0.5 * pairs farther apart than 0.3) / cells)``.

All sums run in float64.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import inline_kernel, kernel, parallel_kernel, prange

__all__ = ["hue_direction", "evaluate_one", "evaluate_batch"]

EPS = 1e-6
JUMP = 0.3  # neighbour distance counted as a violation
SAT_LIMIT = 0.95
_SIN_120 = math.sqrt(3.0) / 2.0


# Taylor coefficients of sin(x)/x and cos(x) in z = x*x, to x**17 / x**16
_SIN_TAYLOR = (
    1.0,
    -(1.0 / 6),
    1.0 / 120,
    -(1.0 / 5040),
    1.0 / 362880,
    -(1.0 / 39916800),
    1.0 / 6227020800,
    -(1.0 / 1307674368000),
    1.0 / 355687428096000,
)
_COS_TAYLOR = (
    1.0,
    -(1.0 / 2),
    1.0 / 24,
    -(1.0 / 720),
    1.0 / 40320,
    -(1.0 / 3628800),
    1.0 / 479001600,
    -(1.0 / 87178291200),
    1.0 / 20922789888000,
)


@inline_kernel
def _estrin8(z, z2, z4, c):
    # c[0] + c[1] z + ... + c[8] z**8 by Estrin's scheme (z2 = z*z, z4 = z2*z2):
    # short dependency chains, the loop is latency-bound otherwise
    return (
        (c[0] + z * c[1])
        + z2 * (c[2] + z * c[3])
        + z4 * ((c[4] + z * c[5]) + z2 * (c[6] + z * c[7]) + z4 * c[8])
    )


@kernel
def hue_direction(r, g, b, mx, d):
    """``(cos h, sin h)`` of the HSV hue ``h`` of a cell; ``mx`` its max, ``d = max - min >= EPS``.

    The hue is ``60 * (base + f)`` degrees with ``f`` in [-1, 1] the usual
    ratio, so ``(cos h, sin h)`` is the rotation by ``60 * base`` (exact
    constants) of ``(cos x, sin x)``, ``x = f * pi/3`` in [-pi/3, pi/3], where
    short Taylor series are accurate to < 1e-15. Two libm trig calls per cell
    were most of the evaluator's time.
    """
    is_r = mx == r
    is_g = (mx == g) & (mx != r)
    num = (g - b) if is_r else ((b - r) if is_g else (r - g))
    cb = 1.0 if is_r else -0.5
    sb = 0.0 if is_r else (_SIN_120 if is_g else -_SIN_120)
    f = num / d
    x = f * (math.pi / 3.0)
    z = x * x
    z2 = z * z
    z4 = z2 * z2
    # Taylor series to x**17 / x**16 (error < 1e-15 on [-pi/3, pi/3])
    sin_x = x * _estrin8(z, z2, z4, _SIN_TAYLOR)
    cos_x = _estrin8(z, z2, z4, _COS_TAYLOR)
    return cb * cos_x - sb * sin_x, sb * cos_x + cb * sin_x


@kernel
def _pair(t, i, j, k, ni, nj):
    # Euclidean RGB distance between cell (i, j, k) and (ni, nj, k)
    dr = np.float64(t[i, j, k, 0]) - np.float64(t[ni, nj, k, 0])
    dg = np.float64(t[i, j, k, 1]) - np.float64(t[ni, nj, k, 1])
    db = np.float64(t[i, j, k, 2]) - np.float64(t[ni, nj, k, 2])
    return math.sqrt(dr * dr + dg * dg + db * db)


@kernel
def evaluate_one(t, lambda_tv, lambda_sat, out):
    """Write ``(energy, coherence, violation)`` of one RGB tensor ``t`` into ``out`` (3,)."""
    rows, cols, layers = t.shape[0], t.shape[1], t.shape[2]
    cells = rows * cols * layers
    sum_r = 0.0
    sum_g = 0.0
    sum_b = 0.0
    sat_dev = 0.0
    sat_excess = 0.0
    hue_cos = 0.0
    hue_sin = 0.0
    outside = 0
    tv = 0.0
    jumps = 0
    for i in range(rows):
        for j in range(cols):
            for k in range(layers):
                r = np.float64(t[i, j, k, 0])
                g = np.float64(t[i, j, k, 1])
                b = np.float64(t[i, j, k, 2])
                sum_r += r
                sum_g += g
                sum_b += b
                mx = max(r, g, b)
                d = mx - min(r, g, b)
                sat = d / mx if mx >= EPS else 0.0
                sat_dev += (sat - 0.5) * (sat - 0.5)
                sat_excess += (sat - SAT_LIMIT) if sat > SAT_LIMIT else 0.0
                if d >= EPS:
                    hc, hs = hue_direction(r, g, b, mx, d)
                    hue_cos += hc
                    hue_sin += hs
                else:
                    hue_cos += 1.0  # hue 0
                if (r < 0.0 or r > 1.0) or (g < 0.0 or g > 1.0) or (b < 0.0 or b > 1.0):
                    outside += 1
                if i + 1 < rows:
                    dist = _pair(t, i, j, k, i + 1, j)
                    tv += dist
                    jumps += 1 if dist > JUMP else 0
                if j + 1 < cols:
                    dist = _pair(t, i, j, k, i, j + 1)
                    tv += dist
                    jumps += 1 if dist > JUMP else 0
    out[0] = lambda_tv * tv + lambda_sat * (sat_dev / cells)
    balance = (
        1.0 - (abs(sum_r / cells - 0.5) + abs(sum_g / cells - 0.5) + abs(sum_b / cells - 0.5)) / 1.5
    )
    R = min(max(math.sqrt(hue_cos * hue_cos + hue_sin * hue_sin) / cells, 0.0), 1.0)
    if R > 0.0:
        std_deg = math.degrees(math.sqrt(-2.0 * math.log(R)))
        consistency = 1.0 - min(std_deg / 180.0, 1.0)
    else:
        consistency = 0.0  # no mean direction: infinite spread
    out[1] = 0.6 * balance + 0.4 * consistency
    out[2] = min(1.0, (outside + sat_excess + 0.5 * jumps) / cells)


@parallel_kernel
def evaluate_batch(tensors, lambda_tv, lambda_sat):
    """Evaluate ``(n, rows, cols, layers, 3)`` float32 -> float64 (n, 3).

    Columns: energy, coherence, violation.
    """
    n = tensors.shape[0]
    out = np.empty((n, 3))
    for i in prange(n):
        evaluate_one(tensors[i], lambda_tv, lambda_sat, out[i])
    return out

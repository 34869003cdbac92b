"""Spectral feature kernels.

For a tensor ``(rows, cols, layers, C)`` and each channel: average the layers
(float64), subtract the mean, apply a separable periodic Hann window, take the
2-d FFT and the power ``P = |F|^2 / (rows*cols)``. From ``P`` and the radius
``r = sqrt(fy^2 + fx^2) / 0.5`` (``fftfreq`` grids) come six features:
normalised entropy, low/mid/high band fractions (cuts at r = 1/3 and 2/3),
``r`` at the peak of ``P`` (first row-major index on ties) and the mean power.
A channel whose total power is below 1e-12 (flat) has all but the power set to
0. A tensor's features are the channel means, in the order of :data:`FEATURES`.

How it is fast (the definition above is what the tests check):

- The input is real, so ``P[k, l] == P[-k, -l]`` and ``r`` is symmetric too: a
  real FFT gives the half spectrum ``(rows, cols//2 + 1)`` and each column that
  stands for two full-spectrum columns counts twice.
- Tensors go through the FFT in chunks of ``CHUNK`` (one rocket-fft call per
  chunk, buffers stay in cache), chunks run on several threads
  (:func:`~dreamjit.kernels._jit.run_chunks`).
- Window and grids are built once per batch call; each band and the entropy
  are one weighted sum over the half spectrum in its own order (band indicator
  times 1 or 2): no gather, no transposed stores.
- The FFT runs in float32: the windowed values (computed in float64) are
  rounded once, powers and sums are float64 again (features within ~1e-8 of a
  float64 FFT's on 32x32x4x3 tensors; the tests' tolerance is 1e-5 / 1e-6).
- Without certainty the same pass over a tensor gives its plain chroma and,
  for RGB tensors whose thumbnail areas partition it, its thumbnail sums
  (:func:`_layer_means`).
- ``P ln P`` needs one log per position, and ``math.log`` (a scalar libm call)
  was the largest single cost: :func:`log_into` is a vectorisable float64 log.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# np.fft inside kernels comes from the rocket-fft package, which numba loads through
# its "numba_extensions" entry point on the first compile (not at import: it costs 0.4 s)
from ._jit import kernel, run_chunks
from .chroma import chroma_into
from .thumbnail import area_bounds, thumbnail_into

__all__ = [
    "FEATURES",
    "N_FEATURES",
    "hann_window",
    "window_2d",
    "radius_grid",
    "half_grids",
    "log_into",
    "spectra_features",
    "spectral_one",
    "spectral_batch",
    "describe_batch",
    "describe_entries",
]

FEATURES = (
    "entropy",
    "low_band_energy",
    "mid_band_energy",
    "high_band_energy",
    "dominant_frequency",
    "mean_psd",
)
N_FEATURES = 6
FLAT_POWER = 1e-12
CHUNK = 8  # tensors per FFT call: amortises the call, keeps the chunk in L2

# log_into: x = 2**k * z with z in [sqrt(1/2), sqrt(2)), split on the bit pattern
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD  # bits of sqrt(0.5)
_TWO52_BITS = 0x4330000000000000  # bits of 2**52; OR-ing a small int n in gives 2**52 + n
_K_OFFSET = 2.0**52 + 1023.0
_LN2 = math.log(2.0)


@kernel
def hann_window(n):
    """Periodic Hann window ``0.5 - 0.5*cos(2*pi*i/n)``, float64 (n,); ``[0.]`` for n == 1."""
    w = np.empty(n)
    for i in range(n):
        w[i] = 0.5 - 0.5 * math.cos(2.0 * math.pi * i / n)
    return w


@kernel
def _outer(a, b, radius):
    # radius: sqrt(a[i]^2 + b[j]^2) / 0.5 (radius_grid); else a[i] * b[j] (window_2d)
    out = np.empty((a.shape[0], b.shape[0]))
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            if radius:
                out[i, j] = math.sqrt(a[i] * a[i] + b[j] * b[j]) / 0.5
            else:
                out[i, j] = a[i] * b[j]
    return out


@kernel
def window_2d(rows, cols):
    """``hann_window(rows)[:, None] * hann_window(cols)[None, :]``, float64 (rows, cols)."""
    return _outer(hann_window(rows), hann_window(cols), False)


@kernel
def _fftfreq(n):
    # numpy.fft.fftfreq's own arithmetic (int * (1/n)): band edges then agree bit for bit
    val = 1.0 / n
    f = np.empty(n)
    half = (n - 1) // 2 + 1
    for i in range(n):
        f[i] = (i if i < half else i - n) * val
    return f


@kernel
def radius_grid(rows, cols):
    """``sqrt(fy^2 + fx^2) / 0.5`` over the full spectrum, float64 (rows, cols)."""
    return _outer(_fftfreq(rows), _fftfreq(cols), True)


@kernel
def half_grids(rows, cols):
    """Weights, radius and tie order of the half-spectrum positions ``(rows, cols//2 + 1)``.

    Returns ``(weights, rad, order)`` over the half-spectrum positions in
    row-major order: ``weights`` (4, m) float64, rows 0-2 the low, mid and high
    band indicator times how many full-spectrum positions the position stands
    for (1 or 2), row 3 that count; ``rad`` (m,) its radius; ``order`` (m,) the
    smallest row-major full-spectrum index it stands for (the argmax tie rule).
    """
    h = cols // 2 + 1
    r = radius_grid(rows, cols)
    m = rows * h
    weights = np.zeros((4, m))
    rad = np.empty(m)
    order = np.empty(m, dtype=np.int64)
    for k in range(rows):
        for l in range(h):
            q = k * h + l
            rk = r[k, l]
            band = 0 if rk < 1.0 / 3.0 else (1 if rk < 2.0 / 3.0 else 2)
            twin = 0 < l and 2 * l != cols  # its mirror (-k, -l) is not in the half spectrum
            mult = 2.0 if twin else 1.0
            weights[band, q] = mult
            weights[3, q] = mult
            rad[q] = rk
            own = k * cols + l
            order[q] = min(own, ((rows - k) % rows) * cols + (cols - l)) if twin else own
    return weights, rad, order


@kernel
def log_into(p, out, bits):
    """Natural log of each ``p`` (finite, >= 0) into ``out``; ``bits`` is int64 scratch (2*len).

    Vectorisable, unlike ``math.log``: ``p = 2**k * z`` with ``z`` in
    [sqrt(1/2), sqrt(2)) is split with integer ops on the bit pattern, then
    ``ln z = 2 atanh(s)``, ``s = (z-1)/(z+1)``, by its series to s**17
    (absolute error < 1e-15). The division is an array expression, which
    numba compiles without the zero check that blocks vectorising scalar ``/``.
    ``p == 0`` gives a finite -709.09, so ``p * log(p)`` is exactly 0;
    subnormal ``p`` give a finite, inexact value (``p * log(p)`` < 1e-305).
    """
    n = p.size
    pb = p.view(np.int64)
    zb = bits[:n]
    kb = bits[n : 2 * n]
    for q in range(n):
        k = (pb[q] - _SQRT_HALF_BITS) >> 52
        zb[q] = pb[q] - (k << 52)
        kb[q] = (k + 1023) | _TWO52_BITS  # k as a float64, without int->float conversion
    z = zb.view(np.float64)
    kf = kb.view(np.float64)
    s = (z - 1.0) / (z + 1.0)
    for q in range(n):
        t = s[q]
        w = t * t
        w2 = w * w
        w4 = w2 * w2
        # sum_i w**i / (2i + 1), i <= 8, by Estrin's scheme: shorter dependency chains than Horner
        a = (1.0 + w * (1.0 / 3)) + w2 * (1.0 / 5 + w * (1.0 / 7))
        b = (1.0 / 9 + w * (1.0 / 11)) + w2 * (1.0 / 13 + w * (1.0 / 15))
        series = a + w4 * (b + w4 * (1.0 / 17))
        out[q] = (kf[q] - _K_OFFSET) * _LN2 + 2.0 * t * series


@kernel
def _layer_means(t, x, sums, raw, area, ar, ac, ng):
    """Layer means of ``t`` (rows, cols, layers, C) into ``x`` (C, rows*cols).

    The per-channel sums of ``x`` go into ``sums`` (C,). The same pass adds each
    pixel's layer sum to ``raw`` (C,), the order of
    :func:`~dreamjit.kernels.chroma.plain_sums`, and, when ``ng > 0`` (C == 3 only), to
    ``area`` (ng*ng*C,) at area ``ar[row] * ng + ac[col]`` (a thumbnail whose
    areas partition the tensor; the order of
    :func:`~dreamjit.kernels.thumbnail.thumbnail_into`). ``raw`` and ``area``
    are zeroed here.
    """
    rows, cols, layers, C = t.shape
    f = t.reshape(rows * cols, layers * C)
    inv_layers = 1.0 / layers
    area[:] = 0.0
    # explicit float64 casts: without the JIT, numpy 2 would keep float + float32 in float32
    if C == 3:
        # the default RGB case: the constant stride lets LLVM vectorise the layer loop (~2x)
        m0 = 0.0
        m1 = 0.0
        m2 = 0.0
        q0 = 0.0
        q1 = 0.0
        q2 = 0.0
        for r in range(rows):
            row_area = ar[r] * ng
            for col in range(cols):
                p = r * cols + col
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                for k in range(layers):
                    s0 += np.float64(f[p, 3 * k])
                    s1 += np.float64(f[p, 3 * k + 1])
                    s2 += np.float64(f[p, 3 * k + 2])
                q0 += s0
                q1 += s1
                q2 += s2
                if ng > 0:
                    a = (row_area + ac[col]) * 3
                    area[a] += s0
                    area[a + 1] += s1
                    area[a + 2] += s2
                s0 *= inv_layers
                s1 *= inv_layers
                s2 *= inv_layers
                x[0, p] = s0
                x[1, p] = s1
                x[2, p] = s2
                m0 += s0
                m1 += s1
                m2 += s2
        sums[0] = m0
        sums[1] = m1
        sums[2] = m2
        raw[0] = q0
        raw[1] = q1
        raw[2] = q2
        return
    for c in range(C):  # no areas here: _partition_areas gives them for C == 3 only
        m = 0.0
        q = 0.0
        for p in range(rows * cols):
            s = 0.0
            for k in range(layers):
                s += np.float64(f[p, k * C + c])
            q += s
            s *= inv_layers
            x[c, p] = s
            m += s
        sums[c] = m
        raw[c] = q


@kernel
def _window_channels(t, w2d, x, xs, sums, raw, area, ar, ac, ng):
    """Layer-mean, de-mean and window every channel of ``t`` into ``x`` (C, rows, cols) float32.

    ``xs`` (C, rows*cols) and ``sums`` (C,) are float64 scratch (everything up to
    the windowed value runs in float64); ``raw``, ``area``, ``ar``, ``ac``, ``ng``
    as in :func:`_layer_means`.
    """
    C = t.shape[3]
    npix = t.shape[0] * t.shape[1]
    xf = x.reshape(C, npix)
    _layer_means(t, xs, sums, raw, area, ar, ac, ng)
    wf = w2d.ravel()
    for c in range(C):
        mean = sums[c] / npix
        xc = xf[c]
        sc = xs[c]
        for q in range(npix):
            xc[q] = (sc[q] - mean) * wf[q]


@kernel
def _weighted_sums(p, lg, weights, acc):
    """``acc`` (4,) = the three band sums and ``sum(P ln P)`` of one channel, weighted.

    ``p`` and ``lg`` (m,) are its powers and their logs, ``weights`` (4, m) from
    :func:`half_grids`; the sums run in the half spectrum's order.
    """
    wl = weights[0]
    wm = weights[1]
    wh = weights[2]
    wt = weights[3]
    low = 0.0
    mid = 0.0
    high = 0.0
    plogp = 0.0
    for q in range(p.size):
        pq = p[q]
        low += wl[q] * pq
        mid += wm[q] * pq
        high += wh[q] * pq
        plogp += wt[q] * pq * lg[q]
    acc[0] = low
    acc[1] = mid
    acc[2] = high
    acc[3] = plogp


@kernel
def spectra_features(spec, n_full, grids, feats):
    """Per-channel features of half spectra ``spec`` (M, rows, cols//2 + 1) into ``feats`` (M, 6).

    ``n_full`` is rows*cols, ``grids`` comes from :func:`half_grids`.
    """
    weights, rad, order = grids
    M = spec.shape[0]
    m = rad.size
    inv_n = 1.0 / n_full
    sf = spec.reshape(M, m)
    P = np.empty((M, m))
    for ch in range(M):
        s = sf[ch]
        pc = P[ch]
        for q in range(m):
            re = np.float64(s[q].real)
            im = np.float64(s[q].imag)
            pc[q] = (re * re + im * im) * inv_n
    L = np.empty((M, m))
    log_into(P.ravel(), L.ravel(), np.empty(2 * m * M, dtype=np.int64))
    acc = np.empty(4)
    for ch in range(M):
        pc = P[ch]
        best = -1.0
        best_order = 0
        best_q = 0
        for q in range(m):
            p = pc[q]
            if p > best or (p == best and order[q] < best_order):  # argmax, tie rule
                best = p
                best_order = order[q]
                best_q = q
        _weighted_sums(pc, L[ch], weights, acc)
        low, mid, high = acc[0], acc[1], acc[2]
        total = low + mid + high
        feats[ch, :] = 0.0
        feats[ch, 5] = total * inv_n
        if total < FLAT_POWER:
            continue
        if n_full > 1:
            # -sum p ln p with p = P/S equals ln S - sum(P ln P)/S
            feats[ch, 0] = (math.log(total) - acc[3] / total) / math.log(n_full)
        feats[ch, 1] = low / total
        feats[ch, 2] = mid / total
        feats[ch, 3] = high / total
        feats[ch, 4] = rad[best_q]


@kernel
def _spectral_chunk(tensors, lo, hi, w2d, grids, out, chroma, plain, spatial64, grid, areas):
    """Features of ``tensors[lo:hi]`` into ``out[lo:hi]``, with one FFT call for the chunk.

    With ``plain`` the same pass writes the plain (unweighted) chroma into
    ``chroma[lo:hi]``; ``areas`` is ``(ar, ac, cells)`` for a thumbnail whose
    areas partition the tensor (``ar`` (rows,) and ``ac`` (cols,) area numbers,
    ``cells`` (grid*grid,) float64 cells per area), written into ``spatial64[lo:hi]``,
    or an empty ``cells`` (no thumbnail here).
    """
    _, rows, cols, layers, C = tensors.shape
    ar, ac, cells = areas
    ng = grid if cells.size > 0 else 0
    count = hi - lo
    x = np.empty((count * C, rows, cols), dtype=np.float32)  # the FFT's input
    xs = np.empty((C, rows * cols))
    sums = np.empty(C)
    raw = np.empty(C)
    area = np.empty(cells.size * C)
    inv_cells = 1.0 / (rows * cols * layers)
    for b in range(count):
        _window_channels(
            tensors[lo + b], w2d, x[b * C : (b + 1) * C], xs, sums, raw, area, ar, ac, ng
        )
        if plain:
            for c in range(C):
                chroma[lo + b, c] = raw[c] * inv_cells
        for a in range(cells.size):
            for c in range(C):
                spatial64[lo + b, a * C + c] = area[a * C + c] / cells[a]
    spec = np.fft.rfft2(x)
    feats = np.empty((count * C, N_FEATURES))
    spectra_features(spec, rows * cols, grids, feats)
    for b in range(count):
        for f in range(N_FEATURES):
            acc = 0.0
            for c in range(C):
                acc += feats[b * C + c, f]
            out[lo + b, f] = acc / C


@kernel
def _describe_rest(tensors, certainty, use_certainty, grid, lo, hi, chroma, spatial64):
    """The chroma and thumbnails of ``tensors[lo:hi]`` that the spectral pass did not give.

    Certainty-weighted chroma (``use_certainty``) and thumbnails (``grid > 0``)
    into ``chroma[lo:hi]`` and ``spatial64[lo:hi]``; :func:`describe_entries` calls
    it only then (with certainty, or when the thumbnail areas do not partition the
    tensor), so a pool of plain RGB tensors never compiles it.
    """
    no_w = np.empty((0, 0, 0), dtype=certainty.dtype)  # typed stand-in, never read
    for i in range(lo, hi):
        w = certainty[i] if use_certainty else no_w
        # use_certainty, not the constant True: numba compiles a callee once more
        # for each literal (Literal[bool](True), Literal[bool](False)) it is passed
        if use_certainty:
            chroma_into(tensors[i], w, use_certainty, chroma[i])
        if grid > 0:
            thumbnail_into(tensors[i], w, use_certainty, grid, spatial64[i])


@kernel
def _partition_areas(rows, cols, layers, channels, grid, fused):
    """``(ar, ac, cells)`` for :func:`_spectral_chunk`: empty unless ``fused``, RGB
    (``channels == 3``) and both axes at least ``grid`` long (areas partition the tensor)."""
    if not fused or grid <= 0 or rows < grid or cols < grid or channels != 3:
        return np.zeros(rows, np.int64), np.zeros(cols, np.int64), np.empty(0)
    ar = np.empty(rows, np.int64)
    ac = np.empty(cols, np.int64)
    for b in range(grid):
        r0, r1 = area_bounds(b, rows, grid)
        ar[r0:r1] = b
        c0, c1 = area_bounds(b, cols, grid)
        ac[c0:c1] = b
    cells = np.empty(grid * grid)
    for br in range(grid):
        r0, r1 = area_bounds(br, rows, grid)
        for bc in range(grid):
            c0, c1 = area_bounds(bc, cols, grid)
            cells[br * grid + bc] = (r1 - r0) * (c1 - c0) * layers
    return ar, ac, cells


@functools.lru_cache(maxsize=16)
def _batch_setup(rows, cols, layers, channels, grid, fused):
    """``(w2d, grids, areas)`` of a batch: :func:`window_2d`, :func:`half_grids` and
    :func:`_partition_areas`, equal to theirs bit for bit (``tests/test_kernels_spectral.py``).

    Computed here with numpy and cached per shape, so that a cold cache compiles
    none of those seven small kernels for a pool's adds. Same operations in the same
    order: ``math.cos`` is the C library's ``cos`` that the kernels call, the rest
    is IEEE arithmetic (``*``, ``+``, ``/``, ``sqrt``) and integer logic. The
    arrays are shared by every call with this shape: kernels only read them.
    """
    hann = [
        np.array([0.5 - 0.5 * math.cos(2.0 * math.pi * i / n) for i in range(n)])
        for n in (rows, cols)
    ]
    w2d = hann[0][:, None] * hann[1][None, :]
    fy = np.fft.fftfreq(rows)
    fx = np.fft.fftfreq(cols)
    h = cols // 2 + 1
    r = np.sqrt(fy[:, None] * fy[:, None] + fx[None, :h] * fx[None, :h]) / 0.5
    k = np.repeat(np.arange(rows), h)
    lcol = np.tile(np.arange(h), rows)
    rad = r.ravel()
    band = np.where(rad < 1.0 / 3.0, 0, np.where(rad < 2.0 / 3.0, 1, 2))
    twin = (lcol > 0) & (2 * lcol != cols)
    mult = np.where(twin, 2.0, 1.0)
    m = rows * h
    weights = np.zeros((4, m))
    weights[band, np.arange(m)] = mult
    weights[3] = mult
    own = k * cols + lcol
    mirror = ((rows - k) % rows) * cols + (cols - lcol)
    order = np.where(twin, np.minimum(own, mirror), own).astype(np.int64)
    if not fused or grid <= 0 or rows < grid or cols < grid or channels != 3:
        areas = (np.zeros(rows, np.int64), np.zeros(cols, np.int64), np.empty(0))
    else:
        # area_bounds with n >= grid: area b spans [b*n // grid, (b+1)*n // grid)
        span_r = np.diff(np.arange(grid + 1) * rows // grid)
        span_c = np.diff(np.arange(grid + 1) * cols // grid)
        ar = np.repeat(np.arange(grid, dtype=np.int64), span_r)
        ac = np.repeat(np.arange(grid, dtype=np.int64), span_c)
        cells = (span_r[:, None] * span_c[None, :] * layers).astype(np.float64)
        areas = (ar, ac, cells.ravel())
    return w2d, (weights, rad, order), areas


def describe_entries(tensors, certainty, use_certainty, grid):
    """Spectral features, chroma and (with ``grid > 0``) thumbnails of a batch, in one call.

    What a pool computes for the tensors it adds: one serial kernel,
    ``_spectral_chunk``, per chunk of :data:`CHUNK` tensors, the chunks spread
    over threads by :func:`~dreamjit.kernels._jit.run_chunks` (not a ``prange``
    loop: its parallel compile would optimise and generate this whole call
    tree twice more on an empty cache, ~7 s of CPU, for no faster run). Chroma
    and thumbnails come from that same pass over each tensor, except with
    certainty or thumbnail areas that do not partition the tensor (not RGB, or
    an axis shorter than ``grid``): a second kernel then computes those, compiled
    only where a call needs it.

    Parameters
    ----------
    tensors : numpy.ndarray
        ``(n, rows, cols, layers, C)`` float32, C-contiguous.
    certainty : numpy.ndarray
        ``(n, rows, cols, layers)`` float32 when ``use_certainty``, else any 4-d
        float32 array (not read).
    use_certainty : bool
        Weight the chroma and the thumbnails by ``certainty``.
    grid : int
        Thumbnail side; 0 for no thumbnails, < 0 for the spectral features only.

    Returns
    -------
    spectral : numpy.ndarray
        float32 ``(n, 6)``, as :func:`spectral_batch`.
    chroma : numpy.ndarray
        float32 ``(n, C)`` as :func:`~dreamjit.kernels.chroma.chroma_batch`; ``(n, 0)``
        for ``grid < 0``.
    spatial : numpy.ndarray
        float32 ``(n, grid*grid*C)`` as :func:`~dreamjit.kernels.thumbnail.thumbnail_batch`;
        ``(n, 0)`` for ``grid <= 0``.
    """
    n, rows, cols, layers, C = tensors.shape
    grid = int(grid)
    use_certainty = bool(use_certainty)
    out = (
        np.empty((n, N_FEATURES), dtype=np.float32),
        np.empty((n, C if grid >= 0 else 0), dtype=np.float32),
        np.empty((n, max(grid, 0) ** 2 * C)),
    )
    spectral, chroma, spatial64 = out
    w2d, grids, areas = _batch_setup(rows, cols, layers, C, grid, not use_certainty)
    # without certainty, chroma and (areas partitioning the tensor) thumbnail come from
    # the spectral kernel's own pass over each tensor
    plain = grid >= 0 and not use_certainty

    def chunk(lo, hi):
        _spectral_chunk(
            tensors, lo, hi, w2d, grids, spectral, chroma, plain, spatial64, grid, areas
        )

    run_chunks(chunk, n, CHUNK)
    if grid >= 0 and not (plain and (grid == 0 or areas[2].size > 0)):

        def rest(lo, hi):
            _describe_rest(tensors, certainty, use_certainty, grid, lo, hi, chroma, spatial64)

        run_chunks(rest, n, CHUNK)
    return spectral, chroma, spatial64.astype(np.float32)


def describe_batch(tensors, certainty, use_certainty):
    """Spectral features and chroma of a batch: :func:`describe_entries` without thumbnails.

    Parameters
    ----------
    tensors : numpy.ndarray
        ``(n, rows, cols, layers, C)`` float32, C-contiguous.
    certainty : numpy.ndarray
        ``(n, rows, cols, layers)`` float32 when ``use_certainty``, else any 4-d
        float32 array (not read).
    use_certainty : bool
        Weight the chroma by ``certainty``.

    Returns
    -------
    spectral : numpy.ndarray
        float32 ``(n, 6)``, as :func:`spectral_batch`.
    chroma : numpy.ndarray
        float32 ``(n, C)``, as :func:`~dreamjit.kernels.chroma.chroma_batch`.
    """
    spectral, chroma, _ = describe_entries(tensors, certainty, use_certainty, 0)
    return spectral, chroma


_NO_CERTAINTY = np.empty((0, 0, 0, 0), dtype=np.float32)


def spectral_one(tensor):
    """Spectral features of one tensor.

    Parameters
    ----------
    tensor : numpy.ndarray
        ``(rows, cols, layers, C)`` float32, C-contiguous.

    Returns
    -------
    numpy.ndarray
        float32 ``(6,)``, in the order of :data:`FEATURES`.
    """
    # the batch kernels on a batch of one: a separate one-tensor kernel would compile the
    # whole spectral code once more on a cold cache
    return describe_entries(tensor[None], _NO_CERTAINTY, False, -1)[0][0]


def spectral_batch(tensors):
    """Spectral features of a batch (:func:`describe_entries` without chroma or thumbnails).

    Parameters
    ----------
    tensors : numpy.ndarray
        ``(n, rows, cols, layers, C)`` float32, C-contiguous.

    Returns
    -------
    numpy.ndarray
        float32 ``(n, 6)``, columns in the order of :data:`FEATURES`.
    """
    return describe_entries(tensors, _NO_CERTAINTY, False, -1)[0]

"""Spectral and chroma kernels against the plain numpy references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamjit.kernels.chroma import chroma_batch, chroma_one
from dreamjit.kernels.spectral import (
    CHUNK,
    FEATURES,
    N_FEATURES,
    describe_batch,
    half_grids,
    hann_window,
    log_into,
    radius_grid,
    spectra_features,
    spectral_batch,
    spectral_one,
    window_2d,
)

import reference_features as ref
from props import examples

RTOL, ATOL = 1e-5, 1e-6
NO_W = np.empty((0, 0, 0), np.float32)


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def rand(rng, *shape, lo=0.0, hi=1.0):
    return f32(rng.uniform(lo, hi, shape))


def check_one(t4):
    got = spectral_one(f32(t4))
    assert got.dtype == np.float32 and got.shape == (N_FEATURES,)
    np.testing.assert_allclose(got, ref.spectral_features_ref(t4), rtol=RTOL, atol=ATOL)
    return got


# --- grids and helpers ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 31, 32])
def test_hann_window_matches_formula(n):
    np.testing.assert_allclose(hann_window(n), ref.hann_periodic(n), rtol=0, atol=1e-15)
    assert hann_window(1).tolist() == [0.0]  # the formula, not scipy's [1.0]


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 8), (3, 3), (6, 6), (5, 7), (32, 32), (9, 4)])
def test_radius_grid_is_bitwise_numpys(rows, cols):
    # band edges sit exactly on grid values (e.g. r == 2/3 at 3x3): same bits, same bands
    assert np.array_equal(radius_grid(rows, cols), ref.radius_grid(rows, cols))
    np.testing.assert_allclose(
        window_2d(rows, cols),
        np.outer(ref.hann_periodic(rows), ref.hann_periodic(cols)),
        rtol=0,
        atol=1e-15,
    )


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (3, 3), (4, 6), (5, 7), (6, 5)])
def test_half_grids_cover_full_spectrum(rows, cols):
    weights, rad, order = half_grids(rows, cols)
    h = cols // 2 + 1
    q = np.arange(rows * h)
    k, l = q // h, q % h
    mult = weights[3]
    assert mult.sum() == rows * cols
    r = ref.radius_grid(rows, cols)
    assert np.array_equal(rad, r[k, l])
    band = np.where(rad < 1 / 3, 0, np.where(rad < 2 / 3, 1, 2))
    for b in range(3):
        assert np.array_equal(weights[b], np.where(band == b, mult, 0.0))
    twin = (l > 0) & (2 * l != cols)
    assert np.array_equal(mult, np.where(twin, 2.0, 1.0))
    mirror = ((rows - k) % rows) * cols + (cols - l) % cols
    own = k * cols + l
    assert np.array_equal(order, np.where(mult == 2, np.minimum(own, mirror), own))


def test_log_into_accuracy(rng):
    special = [
        1.0,
        2.0,
        0.5,
        math.sqrt(0.5),
        math.sqrt(2.0),
        np.nextafter(math.sqrt(2.0), 3.0),
        np.nextafter(math.sqrt(0.5), 0.0),
        1e-300,
        2.2250738585072014e-308,
        1.7e308,
        np.nextafter(1.0, 0.0),
        np.nextafter(1.0, 2.0),
        3.0,
        10.0,
        1e-12,
    ]
    p = np.concatenate([special, np.exp(rng.uniform(-700, 700, 500)), rng.random(500) * 3])
    out = np.empty_like(p)
    log_into(p, out, np.empty(2 * p.size, np.int64))
    want = np.log(p)
    assert np.all(np.abs(out - want) <= 4e-15 * np.maximum(1.0, np.abs(want)))


def test_log_into_zero_and_subnormal_give_zero_plogp():
    p = np.array([0.0, 5e-324, 1e-310])
    out = np.empty(3)
    log_into(p, out, np.empty(6, np.int64))
    assert np.all(np.isfinite(out))
    assert p[0] * out[0] == 0.0 and np.all(np.abs(p * out) < 1e-300)


def _full_power(half, rows, cols):
    """Full-spectrum P from a half spectrum, by the point symmetry P[k, l] = P[-k, -l]."""
    h = cols // 2 + 1
    P = np.empty((rows, cols))
    for k in range(rows):
        for l in range(cols):
            P[k, l] = half[k, l] if l < h else half[(-k) % rows, (-l) % cols]
    return P


def _expected_features(half, rows, cols):
    """The definition applied to the full spectrum rebuilt from a half spectrum."""
    P = _full_power(np.abs(half) ** 2 / (rows * cols), rows, cols)
    r = ref.radius_grid(rows, cols)
    S = P.sum()
    p = P[P > 0] / S
    return [
        -(p * np.log(p)).sum() / math.log(rows * cols),
        P[r < 1 / 3].sum() / S,
        P[(r >= 1 / 3) & (r < 2 / 3)].sum() / S,
        P[r >= 2 / 3].sum() / S,
        r.ravel()[np.argmax(P)],
        P.mean(),
    ]


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 5), (6, 7), (5, 2), (8, 8)])
def test_spectra_features_tie_rule_on_exact_ties(rows, cols, rng):
    # small integer magnitudes: many exact ties between positions of different radius
    h = cols // 2 + 1
    halves = rng.integers(0, 3, (4, rows, h)).astype(np.complex128)
    halves[0, 0, 0] = 2.0  # a maximum at r == 0 (row-major index 0): it wins every tie
    halves[1, 0, 0] = 1.0
    halves[1, rows - 1, 1] = 2.0  # its mirror (1, cols - 1) comes first in row-major order
    halves[3] = 0.0  # flat: everything but the power is 0
    feats = np.empty((4, N_FEATURES))
    spectra_features(halves, rows * cols, half_grids(rows, cols), feats)
    assert feats[0, 4] == 0.0
    for i in range(3):
        want = _expected_features(halves[i], rows, cols)
        assert feats[i, 4] == want[4]  # exact: the same position must win
        np.testing.assert_allclose(feats[i], want, rtol=1e-12, atol=1e-15)
    assert feats[3].tolist() == [0.0] * 6


# --- spectral_one / spectral_batch ---------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        (32, 32, 4, 3),
        (16, 16, 1, 3),
        (5, 7, 2, 3),
        (7, 5, 3, 1),
        (3, 3, 1, 4),
        (6, 6, 2, 2),
        (9, 4, 1, 3),
        (2, 9, 2, 3),
        (13, 11, 2, 1),
    ],
)
def test_spectral_one_matches_reference(shape, rng):
    check_one(rand(rng, *shape))


def test_spectral_features_are_in_range(rng):
    got = check_one(rand(rng, 12, 10, 2, 3, lo=-3.0, hi=5.0))
    assert 0.0 <= got[0] <= 1.0 + 1e-6
    np.testing.assert_allclose(got[1:4].sum(), 1.0, rtol=1e-6)
    assert got[4] >= 0.0 and got[5] > 0.0


@pytest.mark.parametrize(
    "shape", [(8, 8, 2, 3), (5, 7, 1, 1), (1, 1, 1, 3), (1, 9, 2, 3), (9, 1, 1, 2)]
)
@pytest.mark.parametrize("value", [0.0, 0.37, -2.5])
def test_flat_and_degenerate_tensors_are_zero(shape, value):
    # a flat channel, and any 1-row/1-col tensor (the n == 1 Hann window is [0]), has no power
    t = np.full(shape, value, np.float32)
    got = check_one(t)
    assert got.tolist() == [0.0] * 6


def test_channels_flat_and_not_are_averaged(rng):
    t = rand(rng, 8, 8, 2, 3)
    t[..., 1] = 0.4  # one flat channel: contributes 0 to every feature
    got = check_one(t)
    two = spectral_one(f32(t[..., [0, 2]]))
    np.testing.assert_allclose(got, two * 2 / 3, rtol=1e-6, atol=1e-9)


def test_stripes_have_known_features():
    t = np.zeros((8, 8, 1, 1), np.float32)
    t[:, ::2] = 1.0
    got = check_one(t)
    assert got[4] == pytest.approx(1.0)  # Nyquist along the columns
    assert got[3] == pytest.approx(1.0)  # all in the high band


def test_two_rows_tie_resolves_to_first_row():
    # rows == 2: the window zeroes row 0, so P[0, l] == P[1, l] exactly (different r): row 0 wins
    t = np.zeros((2, 6, 1, 1), np.float32)
    t[1, :, 0, 0] = [0.0, 1.0, 0.0, 0.5, 0.2, 0.9]
    x = t[:, :, 0, 0].astype(np.float64)
    x = (x - x.mean()) * np.outer(ref.hann_periodic(2), ref.hann_periodic(6))
    P = np.abs(np.fft.fft2(x)) ** 2
    assert np.array_equal(P[0], P[1])
    top = int(np.argmax(P))
    assert top < 6
    assert check_one(t)[4] == np.float32(ref.radius_grid(2, 6).ravel()[top])


def test_single_pixel_two_by_two_all_tie():
    t = np.zeros((2, 2, 1, 1), np.float32)
    t[1, 1] = 1.0
    assert check_one(t)[4] == 0.0  # every P is equal: index 0 (r = 0) wins


@pytest.mark.parametrize("n", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3])
def test_spectral_batch_matches_single(n, rng):
    t = rand(rng, n, 6, 5, 2, 3)
    got = spectral_batch(t)
    assert got.dtype == np.float32 and got.shape == (n, N_FEATURES)
    want = np.array([spectral_one(x) for x in t])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got, [ref.spectral_features_ref(x) for x in t], rtol=RTOL, atol=ATOL)


def test_spectral_batch_numpy_peer_matches_reference(rng):
    t = rand(rng, 5, 9, 8, 3, 3)
    t[2] = 0.5  # a flat tensor in the batch
    want = np.array([ref.spectral_features_ref(x) for x in t])
    np.testing.assert_allclose(ref.spectral_batch_numpy(t), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(spectral_batch(t), want, rtol=RTOL, atol=ATOL)


@pytest.mark.jit_only
def test_spectral_batch_is_deterministic_across_threads(rng):
    import numba

    t = rand(rng, 4 * CHUNK + 1, 16, 16, 2, 3)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = spectral_batch(t)
    finally:
        numba.set_num_threads(before)
    for _ in range(3):
        assert np.array_equal(spectral_batch(t), serial)


def test_feature_names_order():
    assert FEATURES == (
        "entropy",
        "low_band_energy",
        "mid_band_energy",
        "high_band_energy",
        "dominant_frequency",
        "mean_psd",
    )


@settings(max_examples=examples(25), deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    layers=st.integers(1, 3),
    C=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
)
def test_spectral_property(rows, cols, layers, C, seed, scale):
    t = f32(np.random.default_rng(seed).normal(0.0, scale, (rows, cols, layers, C)))
    got = check_one(t)
    if rows > 1 and cols > 1:
        np.testing.assert_allclose(got[1:4].sum(), 1.0 if got[5] > 0 else 0.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.jit_only
def test_spectral_batch_large(rng):
    t = rand(rng, 40, 64, 48, 3, 3)
    want = np.array([ref.spectral_features_ref(x) for x in t])
    np.testing.assert_allclose(spectral_batch(t), want, rtol=RTOL, atol=ATOL)


# --- chroma and describe_batch -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 4, 2, 3), (1, 1, 1, 1), (5, 7, 3, 4), (3, 2, 1, 2)])
def test_chroma_matches_reference(shape, rng):
    t = rand(rng, *shape, lo=-1.0, hi=2.0)
    got = chroma_one(t, NO_W, False)
    assert got.dtype == np.float32 and got.shape == (shape[3],)
    np.testing.assert_allclose(got, ref.chroma_ref(t), rtol=RTOL, atol=ATOL)
    w = rand(rng, *shape[:3])
    np.testing.assert_allclose(chroma_one(t, w, True), ref.chroma_ref(t, w), rtol=RTOL, atol=ATOL)


def test_chroma_zero_weights_fall_back_to_plain_mean(rng):
    t = rand(rng, 3, 3, 2, 3)
    np.testing.assert_allclose(
        chroma_one(t, np.zeros((3, 3, 2), np.float32), True),
        chroma_one(t, NO_W, False),
        rtol=0,
        atol=0,
    )


def test_chroma_one_hot_weight_picks_the_cell(rng):
    t = rand(rng, 3, 4, 2, 3)
    w = np.zeros((3, 4, 2), np.float32)
    w[2, 1, 1] = 0.25
    np.testing.assert_allclose(chroma_one(t, w, True), t[2, 1, 1], rtol=1e-7)


@pytest.mark.parametrize("n", [1, CHUNK + 2])
def test_chroma_batch_and_describe_batch(n, rng):
    t = rand(rng, n, 5, 6, 2, 4)
    w = rand(rng, n, 5, 6, 2)
    w[0] = 0.0
    empty = np.empty((0, 0, 0, 0), np.float32)
    plain = chroma_batch(t, empty, False)
    weighted = chroma_batch(t, w, True)
    assert plain.dtype == weighted.dtype == np.float32 and plain.shape == (n, 4)
    np.testing.assert_allclose(plain, [ref.chroma_ref(x) for x in t], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        weighted, [ref.chroma_ref(x, y) for x, y in zip(t, w)], rtol=RTOL, atol=ATOL
    )
    for cert, use, chroma in ((empty, False, plain), (w, True, weighted)):
        spec, chrom = describe_batch(t, cert, use)
        assert spec.dtype == chrom.dtype == np.float32
        assert np.array_equal(spec, spectral_batch(t))
        assert np.array_equal(chrom, chroma)


@pytest.mark.parametrize("shape", [(32, 32, 4, 3), (5, 7, 2, 3), (3, 7, 2, 3), (6, 6, 1, 2)])
@pytest.mark.parametrize("grid", [1, 4])
def test_describe_entries_thumbnails_and_chroma_match_their_kernels(shape, grid, rng):
    # the fused pass (RGB, areas partitioning the tensor) and the separate kernels agree bit
    # for bit, and both match the plain reference
    from dreamjit.kernels.spectral import describe_entries
    from dreamjit.kernels.thumbnail import thumbnail_batch

    import reference_embedding as ref_emb

    t = rand(rng, CHUNK + 3, *shape)
    empty = np.empty((0, 0, 0, 0), np.float32)
    spec, chroma, spatial = describe_entries(t, empty, False, grid)
    assert np.array_equal(spec, spectral_batch(t))
    assert np.array_equal(chroma, chroma_batch(t, empty, False))
    assert np.array_equal(spatial, thumbnail_batch(t, empty, False, grid))
    for i in range(t.shape[0]):
        np.testing.assert_allclose(spatial[i], ref_emb.thumbnail(t[i], grid), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(chroma[i], ref.chroma_ref(t[i]), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "rows,cols,layers,channels,grid,fused",
    [
        (1, 1, 1, 3, 4, True),
        (2, 3, 1, 3, 2, True),
        (3, 3, 2, 3, 3, True),
        (5, 7, 2, 3, 4, True),
        (8, 8, 2, 3, 4, True),
        (9, 4, 3, 3, 4, True),
        (32, 32, 4, 3, 4, True),
        (31, 17, 1, 3, 5, True),
        (32, 32, 4, 3, 4, False),
        (16, 16, 2, 1, 4, True),
        (16, 16, 2, 3, 0, True),
        (12, 10, 2, 3, 64, True),
    ],
)
def test_batch_setup_is_bitwise_the_kernels(rows, cols, layers, channels, grid, fused):
    # describe_entries builds window, grids and areas with numpy (nothing to compile):
    # the same bits as the kernels the tests above check against their references
    from dreamjit.kernels.spectral import _batch_setup, _partition_areas

    w2d, grids, areas = _batch_setup(rows, cols, layers, channels, grid, fused)
    assert np.array_equal(w2d, window_2d(rows, cols))
    for got, want in zip(grids, half_grids(rows, cols)):
        assert got.dtype == want.dtype and got.flags.c_contiguous
        assert np.array_equal(got, want)
    for got, want in zip(areas, _partition_areas(rows, cols, layers, channels, grid, fused)):
        assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
        assert np.array_equal(got, want)

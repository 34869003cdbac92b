"""The evaluator kernel against the plain-Python reference."""

import colorsys
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamjit.kernels.evaluate import evaluate_batch, evaluate_one, hue_direction

import reference_features as ref
from props import examples


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def run_one(t, lambda_tv=1.0, lambda_sat=0.1):
    t = np.asarray(t)
    out = np.empty(3)
    evaluate_one(f32(t[:, :, None] if t.ndim == 3 else t), lambda_tv, lambda_sat, out)
    return out


def check(t, lambda_tv=1.0, lambda_sat=0.1):
    got = run_one(t, lambda_tv, lambda_sat)
    # atol 1e-7: sqrt(-2 ln R) has an infinite slope at R == 1, so a single-hue tensor's
    # coherence carries summation-order rounding up to ~1e-9 (energy/violation are far tighter)
    want = ref.evaluate_ref(t, lambda_tv, lambda_sat)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-7)
    return got


@pytest.mark.parametrize(
    "shape", [(8, 8, 2), (1, 1, 1), (1, 9, 1), (9, 1, 2), (5, 7, 3), (2, 2, 1)]
)
def test_random_tensors_match_reference(shape, rng):
    check(rng.random(shape + (3,)))


def test_values_outside_unit_range(rng):
    t = rng.uniform(-0.5, 1.5, (6, 5, 2, 3))
    got = check(t)
    assert 0.0 < got[2] <= 1.0


def test_violation_is_capped_at_one():
    t = np.zeros((3, 3, 1, 3))
    t[::2, ::2] = [2.0, -1.0, 3.0]  # out of range, jumps everywhere
    assert check(t)[2] == 1.0


def test_hand_computed_pair():
    t = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3): red next to black
    energy, coherence, violation = check(t)
    assert energy == pytest.approx(1.0 + 0.1 * 0.25)  # TV 1, sat 1 and 0
    assert coherence == pytest.approx(0.6 / 3 + 0.4)  # balance 1/3, hues both 0
    assert violation == pytest.approx((0.05 + 0.5) / 2)  # sat excess 0.05, one jump


def test_lambdas_scale_the_energy_terms(rng):
    t = rng.random((4, 5, 2, 3))
    tv = check(t, 1.0, 0.0)[0]
    sat = check(t, 0.0, 1.0)[0]
    assert check(t, 2.5, 0.3)[0] == pytest.approx(2.5 * tv + 0.3 * sat)
    assert check(t, 0.0, 0.0)[0] == 0.0


def test_gray_image_has_full_hue_consistency():
    t = np.repeat(np.linspace(0.0, 1.0, 12).reshape(3, 4, 1, 1), 3, axis=3)
    got = check(t)
    balance = 1.0 - 3 * abs(t.mean() - 0.5) / 1.5
    assert got[1] == pytest.approx(0.6 * balance + 0.4)


@pytest.mark.parametrize(
    "rgb", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.2, 0.4, 0.9), (0.9, 0.8, 0.1)]
)
def test_single_hue_image_has_consistency_one(rgb):
    scale = np.linspace(0.2, 1.0, 20).reshape(4, 5, 1, 1)
    t = scale * np.array(rgb)  # one hue, many values
    got = check(t)
    means = t.reshape(-1, 3).mean(axis=0)
    balance = 1.0 - np.abs(means - 0.5).sum() / 1.5
    assert got[1] == pytest.approx(0.6 * balance + 0.4, abs=1e-7)


def test_opposite_hues_have_no_consistency():
    t = np.zeros((1, 2, 1, 3))
    t[0, 0, 0] = [1.0, 0.0, 0.0]  # hue 0
    t[0, 1, 0] = [0.0, 1.0, 1.0]  # hue 180: R ~ 0
    got = check(t)
    balance = 1.0 - np.abs(t.reshape(-1, 3).mean(axis=0) - 0.5).sum() / 1.5
    assert got[1] == pytest.approx(0.6 * balance)


def test_zero_tensor():
    got = check(np.zeros((4, 4, 2, 3)))
    assert got.tolist() == pytest.approx([0.1 * 0.25, 0.4, 0.0])


@pytest.mark.parametrize(
    "rgb",
    [
        (1, 0, 0),
        (1, 1, 0),
        (0, 1, 0),
        (0, 1, 1),
        (0, 0, 1),
        (1, 0, 1),
        (0.3, 0.2, 0.1),
        (0.1, 0.2, 0.3),
        (1.0, 1.0 - 1e-7, 0.5),
        (0.5, 0.5, 0.49),
        (1.0, 0.5, 0.5 + 1e-12),
        (-0.5, 2.0, 0.3),
    ],
)
def test_hue_direction_matches_colorsys(rgb):
    r, g, b = (float(v) for v in rgb)
    mx, mn = max(r, g, b), min(r, g, b)
    c, s = hue_direction(r, g, b, mx, mx - mn)
    want = math.radians(ref.hue_degrees_ref(r, g, b))
    assert c == pytest.approx(math.cos(want), abs=1e-14)
    assert s == pytest.approx(math.sin(want), abs=1e-14)
    if 0.0 <= mn and mx <= 1.0:
        h = 2 * math.pi * colorsys.rgb_to_hsv(r, g, b)[0]
        assert (c, s) == pytest.approx((math.cos(h), math.sin(h)), abs=1e-12)


@settings(max_examples=examples(50), deadline=None)
@given(st.tuples(*[st.floats(-1.0, 2.0)] * 3))
def test_hue_direction_property(rgb):
    r, g, b = rgb
    mx, mn = max(rgb), min(rgb)
    if mx - mn < 1e-6:
        return
    c, s = hue_direction(r, g, b, mx, mx - mn)
    want = math.radians(ref.hue_degrees_ref(r, g, b))
    assert (c, s) == pytest.approx((math.cos(want), math.sin(want)), abs=1e-14)


@pytest.mark.parametrize("n", [1, 3, 17])
def test_batch_matches_single(n, rng):
    t = f32(rng.uniform(-0.1, 1.1, (n, 5, 4, 2, 3)))
    got = evaluate_batch(t, 1.5, 0.2)
    assert got.dtype == np.float64 and got.shape == (n, 3)
    for i in range(n):
        assert np.array_equal(got[i], run_one(t[i], 1.5, 0.2))


@settings(max_examples=examples(15), deadline=None)
@given(st.lists(st.floats(0.0, 360.0, exclude_max=True), min_size=1, max_size=30))
def test_reference_circular_std_matches_scipy(hues):
    a = ref.circular_std_degrees_ref(hues)
    b = ref.circular_std_degrees_scipy(hues)
    if math.isfinite(a) and a > 1e-3 and a < 1e4:
        assert a == pytest.approx(b, rel=1e-6)


def test_reference_circular_std_matches_scipy_known():
    assert ref.circular_std_degrees_ref([10.0, 10.0, 10.0]) == pytest.approx(0.0, abs=1e-5)
    spread = [0.0, 30.0, 60.0, 350.0]
    want = ref.circular_std_degrees_scipy(spread)
    assert ref.circular_std_degrees_ref(spread) == pytest.approx(want)


@settings(max_examples=examples(20), deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    layers=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    lo=st.sampled_from([0.0, -0.2]),
    hi=st.sampled_from([1.0, 1.3]),
    lambda_tv=st.floats(0.0, 5.0),
    lambda_sat=st.floats(0.0, 5.0),
)
def test_evaluate_property(rows, cols, layers, seed, lo, hi, lambda_tv, lambda_sat):
    rng = np.random.default_rng(seed)
    t = rng.uniform(lo, hi, (rows, cols, layers, 3))
    t[rng.random((rows, cols, layers)) < 0.3] = rng.random()  # some gray cells
    energy, coherence, violation = check(t, lambda_tv, lambda_sat)
    assert energy >= 0.0 and coherence <= 1.0 + 1e-12 and 0.0 <= violation <= 1.0


@pytest.mark.slow
@pytest.mark.jit_only
def test_evaluate_batch_large(rng):
    t = f32(rng.uniform(-0.1, 1.1, (30, 32, 32, 3, 3)))
    got = evaluate_batch(t, 1.0, 0.1)
    np.testing.assert_allclose(got, [ref.evaluate_ref(x) for x in t], rtol=1e-9, atol=1e-12)

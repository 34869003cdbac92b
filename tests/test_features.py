"""The public feature functions: values, dtypes, input forms and edge validation."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamjit.errors import (
    DimensionMismatchError,
    DreamError,
    EmptyCollectionError,
    InvalidParameterError,
)
from dreamjit.features import (
    SolverResult,
    SpectralFeatures,
    chroma_signature,
    evaluate,
    evaluate_batch,
    spectral_features,
    spectral_features_batch,
)

import reference_features as ref
from props import examples

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture
def t4(rng):
    return rng.random((9, 8, 2, 3))


# --- SpectralFeatures / SolverResult -------------------------------------------------------


def test_spectral_features_roundtrip():
    f = SpectralFeatures.from_array(np.array([0.5, 0.2, 0.3, 0.5, 0.25, 1e-3], np.float32))
    assert all(type(v) is float for v in dataclasses.astuple(f))
    a = f.as_array()
    assert a.dtype == np.float32 and a.shape == (6,)
    assert SpectralFeatures.from_array(a) == f
    assert [fl.name for fl in dataclasses.fields(SpectralFeatures)] == [
        "entropy",
        "low_band_energy",
        "mid_band_energy",
        "high_band_energy",
        "dominant_frequency",
        "mean_psd",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.entropy = 1.0


@pytest.mark.parametrize(
    "bad,err",
    [
        ([1.0] * 5, DimensionMismatchError),
        (np.zeros((2, 3)), DimensionMismatchError),
        ([1, 2, 3, 4, 5, np.nan], InvalidParameterError),
        (["a"] * 6, InvalidParameterError),
    ],
)
def test_spectral_features_from_array_rejects(bad, err):
    with pytest.raises(err):
        SpectralFeatures.from_array(bad)


def test_solver_result_is_a_named_tuple():
    r = SolverResult(1.0, 0.5, 0.0)
    assert r == (1.0, 0.5, 0.0) and r._fields == ("energy", "coherence", "violation")


# --- spectral ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8, bool])
def test_spectral_features_dtypes(dtype, rng):
    t = (rng.random((7, 6, 2, 3)) * 3).astype(dtype)
    got = spectral_features(t)
    assert isinstance(got, SpectralFeatures)
    np.testing.assert_allclose(got.as_array(), ref.spectral_features_ref(t), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t[::2, ::2],
        lambda t: np.transpose(t, (1, 0, 2, 3)),
        lambda t: np.asfortranarray(t),
        lambda t: t[..., ::-1],
        lambda t: t[1:, :-1, 1:],
    ],
)
def test_spectral_features_non_contiguous(view, rng):
    v = view(rng.random((12, 10, 3, 3)))
    np.testing.assert_allclose(
        spectral_features(v).as_array(), ref.spectral_features_ref(v), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        spectral_features_batch(v[None])[0], spectral_features(v).as_array(), rtol=1e-6, atol=1e-9
    )


def test_three_d_tensor_is_one_layer(rng):
    t = rng.random((6, 5, 4))
    assert spectral_features(t) == spectral_features(t[:, :, None, :])
    assert np.array_equal(
        spectral_features_batch(np.stack([t, t])),
        spectral_features_batch(np.stack([t, t])[:, :, :, None, :]),
    )


@pytest.mark.parametrize("C", [1, 3, 4])
def test_spectral_batch_matches_reference(C, rng):
    t = rng.random((5, 8, 7, 2, C))
    t[3] = 0.25  # flat
    got = spectral_features_batch(t)
    assert got.dtype == np.float32 and got.shape == (5, 6)
    np.testing.assert_allclose(got, [ref.spectral_features_ref(x) for x in t], rtol=RTOL, atol=ATOL)
    assert got[3].tolist() == [0.0] * 6


def test_spectral_edge_sizes(rng):
    for shape in [(1, 1, 3), (1, 6, 3), (6, 1, 1, 2), (5, 7, 1)]:
        t = rng.random(shape)
        np.testing.assert_allclose(
            spectral_features(t).as_array(), ref.spectral_features_ref(t), rtol=RTOL, atol=ATOL
        )
    assert spectral_features(np.zeros((4, 4, 3))) == SpectralFeatures(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert spectral_features_batch(rng.random((1, 4, 4, 3))).shape == (1, 6)


# --- chroma --------------------------------------------------------------------------------


@pytest.mark.parametrize("C", [1, 3, 4])
def test_chroma_signature(C, rng):
    t = rng.uniform(-1.0, 2.0, (5, 4, 3, C))
    got = chroma_signature(t)
    assert got.dtype == np.float32 and got.shape == (C,)
    np.testing.assert_allclose(got, ref.chroma_ref(t), rtol=RTOL, atol=ATOL)
    w = rng.random((5, 4, 3))
    np.testing.assert_allclose(
        chroma_signature(t, certainty=w), ref.chroma_ref(t, w), rtol=RTOL, atol=ATOL
    )


def test_chroma_signature_three_d_and_views(rng):
    t = rng.random((6, 6, 3))
    w = rng.random((6, 6))
    np.testing.assert_allclose(chroma_signature(t, w), ref.chroma_ref(t, w), rtol=RTOL, atol=ATOL)
    v = np.transpose(rng.random((6, 8, 2, 3)), (1, 0, 2, 3))[::2]
    np.testing.assert_allclose(chroma_signature(v), ref.chroma_ref(v), rtol=RTOL, atol=ATOL)
    wv = rng.random((2, 6, 8)).T[::2]  # (4, 6, 2), non-contiguous
    np.testing.assert_allclose(chroma_signature(v, wv), ref.chroma_ref(v, wv), rtol=RTOL, atol=ATOL)


def test_chroma_zero_certainty_is_plain_mean(rng):
    t = rng.random((3, 3, 3))
    assert np.array_equal(chroma_signature(t, np.zeros((3, 3))), chroma_signature(t))


@pytest.mark.parametrize(
    "cert,err",
    [
        (np.ones((4, 4)), DimensionMismatchError),  # 4-d tensor needs (rows, cols, layers)
        (np.ones((4, 4, 3)), DimensionMismatchError),
        (np.ones((5, 4, 2)), DimensionMismatchError),
        (-np.ones((4, 4, 2)), InvalidParameterError),
        (np.full((4, 4, 2), np.nan), InvalidParameterError),
        (np.full((4, 4, 2), np.inf), InvalidParameterError),
        (np.ones((4, 4, 2), complex), InvalidParameterError),
        ("weights", InvalidParameterError),
        (np.ones((0, 4, 2)), EmptyCollectionError),
    ],
)
def test_chroma_bad_certainty(cert, err, rng):
    with pytest.raises(err):
        chroma_signature(rng.random((4, 4, 2, 3)), certainty=cert)


def test_chroma_bad_certainty_for_three_d_tensor(rng):
    with pytest.raises(DimensionMismatchError):
        chroma_signature(rng.random((4, 4, 3)), certainty=np.ones((4, 4, 1)))


# --- evaluate ------------------------------------------------------------------------------


def test_evaluate_matches_reference(t4):
    got = evaluate(t4)
    assert isinstance(got, SolverResult) and all(type(v) is float for v in got)
    np.testing.assert_allclose(got, ref.evaluate_ref(t4), rtol=1e-9, atol=1e-7)
    got = evaluate(t4, lambda_tv=0.5, lambda_sat=2)
    np.testing.assert_allclose(got, ref.evaluate_ref(t4, 0.5, 2.0), rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t[::2, ::2],
        lambda t: np.transpose(t, (1, 0, 2, 3)),
        lambda t: t[..., ::-1],
        lambda t: t.astype(np.float32),
    ],
)
def test_evaluate_views_and_dtypes(view, rng):
    v = view(rng.uniform(-0.2, 1.2, (8, 6, 2, 3)))
    np.testing.assert_allclose(evaluate(v), ref.evaluate_ref(v), rtol=1e-9, atol=1e-7)


def test_evaluate_batch_matches_single(rng):
    t = rng.uniform(-0.1, 1.1, (6, 5, 5, 3))  # 4-d batch of 3-d tensors
    got = evaluate_batch(t, lambda_tv=0.7, lambda_sat=0.0)
    assert got.dtype == np.float64 and got.shape == (6, 3)
    for i in range(6):
        assert tuple(got[i]) == evaluate(t[i], 0.7, 0.0)
    assert evaluate_batch(t[:1]).shape == (1, 3)


def test_evaluate_gray_and_single_hue():
    gray = np.repeat(np.linspace(0, 1, 16).reshape(4, 4, 1), 3, axis=2)
    assert evaluate(gray).coherence == pytest.approx(0.6 * 1.0 + 0.4)
    red = np.linspace(0.1, 1, 16).reshape(4, 4, 1) * np.array([1.0, 0.0, 0.0])
    balance = 1 - (abs(red[..., 0].mean() - 0.5) + 1.0) / 1.5
    assert evaluate(red).coherence == pytest.approx(0.6 * balance + 0.4, abs=1e-7)


def test_evaluate_out_of_range_values():
    t = np.full((2, 2, 3), 0.5)
    t[0, 0] = [1.5, 0.5, 0.5]
    assert evaluate(t).violation == pytest.approx((1 + 2 * 0.5) / 4)  # 1 cell out, 2 jumps of 1.0


# --- bad input, every public function ------------------------------------------------------


def _obj():
    a = np.empty((2, 2, 3), dtype=object)
    a[...] = 0.5
    return a


BAD_TENSORS = [
    (np.full((3, 3, 3), np.nan), InvalidParameterError),
    (np.full((3, 3, 3), np.inf), InvalidParameterError),
    (np.full((3, 3, 3), 1e39), InvalidParameterError),  # not representable as float32
    (np.ones((3, 3)), DimensionMismatchError),
    (np.ones((2, 3, 3, 3, 3, 3)), DimensionMismatchError),
    (np.ones(3), DimensionMismatchError),
    (_obj(), InvalidParameterError),
    (np.ones((3, 3, 3), complex), InvalidParameterError),
    (np.full((3, 3, 3), "a"), InvalidParameterError),
    ("tensor", InvalidParameterError),
    (None, InvalidParameterError),
    (np.ones((0, 3, 3)), EmptyCollectionError),
    (np.ones((3, 0, 1, 3)), EmptyCollectionError),
    ([[[1.0, 2.0, 3.0]], [[1.0]]], InvalidParameterError),  # ragged
]


@pytest.mark.parametrize("bad,err", BAD_TENSORS)
@pytest.mark.parametrize("fn", [spectral_features, chroma_signature, evaluate])
def test_single_tensor_functions_reject(fn, bad, err):
    with pytest.raises(err) as info:
        fn(bad)
    assert isinstance(info.value, DreamError) and isinstance(info.value, ValueError)
    assert "tensor" in str(info.value)


@pytest.mark.parametrize(
    "bad,err",
    [
        (np.full((2, 3, 3, 3), np.nan), InvalidParameterError),
        (np.ones((3, 3, 3)), DimensionMismatchError),  # a single tensor is not a batch
        (np.ones((2, 3, 3, 1, 3, 3)), DimensionMismatchError),
        (np.ones((2, 3, 3, 3), complex), InvalidParameterError),
        (np.ones((0, 3, 3, 3)), EmptyCollectionError),
        ([], EmptyCollectionError),
        ("tensors", InvalidParameterError),
    ],
)
@pytest.mark.parametrize("fn", [spectral_features_batch, evaluate_batch])
def test_batch_functions_reject(fn, bad, err):
    with pytest.raises(err) as info:
        fn(bad)
    assert "tensors" in str(info.value)


@pytest.mark.parametrize("fn", [evaluate, evaluate_batch])
@pytest.mark.parametrize("C", [1, 2, 4])
def test_evaluate_needs_three_channels(fn, C):
    t = np.ones((3, 3, C)) * 0.5
    with pytest.raises(DimensionMismatchError, match="3 channels"):
        fn(t[None] if fn is evaluate_batch else t)


@pytest.mark.parametrize("name", ["lambda_tv", "lambda_sat"])
@pytest.mark.parametrize("value", [-1.0, -1e-9, np.nan, np.inf, "1", None, True, [1.0], 1j])
@pytest.mark.parametrize("fn", [evaluate, evaluate_batch])
def test_evaluate_rejects_bad_lambdas(fn, name, value):
    t = np.full((2, 2, 3), 0.5)
    with pytest.raises(InvalidParameterError, match=name):
        fn(t[None] if fn is evaluate_batch else t, **{name: value})


def test_lambdas_accept_ints_and_numpy_scalars():
    t = np.full((2, 2, 3), 0.5)
    assert evaluate(t, lambda_tv=np.float32(2.0), lambda_sat=0) == evaluate(t, 2.0, 0.0)


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=examples(15), deadline=None)
@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 7),
    layers=st.integers(0, 2),
    C=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_single_and_batch_agree(rows, cols, layers, C, seed):
    rng = np.random.default_rng(seed)
    shape = (rows, cols, C) if layers == 0 else (rows, cols, layers, C)
    t = rng.uniform(-1.0, 2.0, shape)
    one = spectral_features(t).as_array()
    np.testing.assert_allclose(one, ref.spectral_features_ref(t), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(spectral_features_batch(t[None])[0], one, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(chroma_signature(t), ref.chroma_ref(t), rtol=RTOL, atol=ATOL)
    if C == 3:
        np.testing.assert_allclose(evaluate_batch(t[None])[0], evaluate(t), rtol=0, atol=0)

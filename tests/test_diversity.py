"""dreamjit.diversity.maximal_marginal_relevance: the public MMR drop-in."""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dreamjit.diversity as diversity
from dreamjit.diversity import maximal_marginal_relevance as mmr
from dreamjit.errors import (
    DimensionMismatchError,
    DreamError,
    EmptyCollectionError,
    InvalidParameterError,
)

from props import examples
from reference_retrieval import mmr_ref


def _data(rng, n=40, d=8):
    return rng.standard_normal(d), rng.standard_normal((n, d))


def test_docstring_examples_run():
    result = doctest.testmod(diversity, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_returns_typed_arrays(rng):
    q, C = _data(rng)
    idx, scores = mmr(q, C, k=5, lambda_=0.3)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert idx.shape == scores.shape == (5,)
    assert len(set(idx.tolist())) == 5


def test_defaults_are_k4_lambda_half(rng):
    q, C = _data(rng)
    a = mmr(q, C)
    b = mmr(q, C, k=4, lambda_=0.5)
    np.testing.assert_array_equal(a[0], b[0])
    assert len(a[0]) == 4


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 7, 40, 41, 100])
def test_matches_reference_float32_and_float64(rng, lam, k):
    q, C = _data(rng)
    C[9] = C[4]  # exact duplicate
    C[11] = 0.0  # zero vector
    ref_i, ref_s = mmr_ref(q.astype(np.float32), C.astype(np.float32), k, lam)
    for dtype in (np.float32, np.float64):
        idx, scores = mmr(q.astype(dtype), C.astype(dtype), k=k, lambda_=lam)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(scores, ref_s.astype(np.float32))
        assert len(idx) == min(k, 40)


def test_noncontiguous_lists_and_ints(rng):
    q, C = _data(rng, 30, 12)
    expected = mmr(q[::2].copy(), np.ascontiguousarray(C[::3, ::2]), k=6)
    for qv, cv in [
        (q[::2], C[::3, ::2]),
        (q[::2].tolist(), C[::3, ::2].tolist()),
        (q[::2], np.asfortranarray(C[::3, ::2])),
    ]:
        got = mmr(qv, cv, k=6)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    Ci = rng.integers(-3, 4, (20, 4))
    qi = rng.integers(-3, 4, 4)
    np.testing.assert_array_equal(
        mmr(qi, Ci, k=5)[0], mmr(qi.astype(float), Ci.astype(float), k=5)[0]
    )
    np.testing.assert_array_equal(mmr([True, False], [[True, True], [True, False]], k=1)[0], [1])


def test_d_equals_one_and_zero_query():
    C = np.array([[2.0], [-1.0], [0.0], [3.0]])
    idx, scores = mmr([1.0], C, k=4, lambda_=1.0)
    assert idx.tolist() == [0, 3, 2, 1]  # cosine ties (rows 0 and 3) go to the lower index
    idx, scores = mmr([0.0], C, k=2, lambda_=0.5)
    assert idx[0] == 0 and scores[0] == 0.0


@pytest.mark.parametrize("empty", [[], (), np.empty(0), np.empty((0, 3))])
def test_empty_candidates_give_empty_arrays(empty):
    idx, scores = mmr([1.0, 2.0, 3.0], empty, k=3)
    assert idx.shape == scores.shape == (0,)
    assert idx.dtype == np.int64 and scores.dtype == np.float32


def test_matches_langchain(rng):
    lc = pytest.importorskip("langchain_core.vectorstores.utils")
    for n, d, k in [(1, 4, 1), (25, 6, 10), (500, 32, 40)]:
        q, C = _data(rng, n, d)
        C[n // 2 : n // 2 + n // 5] = C[: n // 5]  # duplicates
        for lam in (0.0, 0.5, 1.0, 0.8):
            expected = lc.maximal_marginal_relevance(q, C.tolist(), lambda_mult=lam, k=k)
            assert mmr(q, C, k=k, lambda_=lam)[0].tolist() == list(expected)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "query,cands,param",
    [
        (np.ones((2, 3)), np.ones((4, 3)), "query_vec"),
        (np.ones(3), np.ones(3), "candidate_vecs"),
        (np.ones(3), np.ones((2, 2, 3)), "candidate_vecs"),
        (np.ones(3), np.ones((4, 2)), "candidate_vecs"),
        (np.ones(3), np.ones((0, 2)), "candidate_vecs"),
        (1.0, np.ones((4, 1)), "query_vec"),
    ],
)
def test_shape_errors(query, cands, param):
    with pytest.raises(DimensionMismatchError) as err:
        mmr(query, cands)
    assert err.value.param == param and param in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, DreamError)


@pytest.mark.parametrize(
    "query,cands,param",
    [
        ([1.0, np.nan], np.ones((3, 2)), "query_vec"),
        ([1.0, 2.0], [[1.0, np.inf], [0.0, 1.0]], "candidate_vecs"),
        ([1.0, 2.0], [[1.0, -np.inf], [0.0, 1.0]], "candidate_vecs"),
        (np.array(["a", "b"]), np.ones((3, 2)), "query_vec"),
        ([1.0, 2.0], np.ones((3, 2), dtype=complex), "candidate_vecs"),
        ([1.0, 2.0], np.array([[1, 2], [3, None]], dtype=object), "candidate_vecs"),
        ([1.0, 2.0], [[1.0, 2.0], [1.0]], "candidate_vecs"),
        ("ab", np.ones((3, 2)), "query_vec"),
        ([1.0, 2.0], np.full((3, 2), 1e300), "candidate_vecs"),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_value_errors(query, cands, param):
    with pytest.raises(InvalidParameterError) as err:
        mmr(query, cands)
    assert err.value.param == param and param in str(err.value)


@pytest.mark.parametrize("k", [0, -1, 2.5, 3.0, True, "3", None])
def test_bad_k(k):
    with pytest.raises(InvalidParameterError, match="k="):
        mmr([1.0, 0.0], [[1.0, 0.0]], k=k)


@pytest.mark.parametrize("lam", [-0.01, 1.01, np.nan, np.inf, "0.5", None])
def test_bad_lambda(lam):
    with pytest.raises(InvalidParameterError, match="lambda_="):
        mmr([1.0, 0.0], [[1.0, 0.0]], lambda_=lam)


def test_numpy_scalars_accepted():
    idx, _ = mmr([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], k=np.int64(2), lambda_=np.float32(0.5))
    assert idx.tolist() == [0, 1]


def test_empty_query():
    with pytest.raises(EmptyCollectionError):
        mmr([], [[1.0]])


def test_inputs_not_modified(rng):
    q, C = _data(rng, 10, 3)
    q0, C0 = q.copy(), C.copy()
    mmr(q, C, k=3)
    np.testing.assert_array_equal(q, q0)
    np.testing.assert_array_equal(C, C0)


@settings(max_examples=examples(20), deadline=None)
@given(
    C=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 10), st.integers(1, 4)),
        elements=st.integers(-3, 3).map(float),
    ),
    data=st.data(),
)
def test_public_properties(C, data):
    n, d = C.shape
    q = data.draw(hnp.arrays(np.float64, d, elements=st.integers(-3, 3).map(float)))
    k = data.draw(st.integers(1, n + 3))
    lam = data.draw(st.sampled_from([0.0, 0.5, 1.0]))
    idx, scores = mmr(q, C, k=k, lambda_=lam)
    ref_i, ref_s = mmr_ref(q, C, k, lam)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(scores, ref_s.astype(np.float32))

"""dreamjit.kernels.cosine against the plain references in reference_retrieval.py.

The references sum dot products in the kernels' order, so indices and scores
are compared exactly (ties included); one test also checks against BLAS
scores with a near-tie tolerance.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dreamjit.kernels.cosine import (
    dots_transposed,
    normalize_rows,
    pairwise_dispersion,
    rows_transposed,
    topk_cosine,
    topk_dot,
    topk_dot_batch,
    topk_dot_columns,
    topk_dot_columns_parallel,
)

from props import examples
from reference_retrieval import (
    dispersion_ref,
    normalize_rows_ref,
    seq_dots,
    topk_cosine_ref,
    topk_dot_batch_ref,
    topk_dot_ref,
    topk_from_scores,
)


def _data(rng, n, d, dup=True):
    X = rng.standard_normal((n, d)).astype(np.float32)
    if dup and n >= 6:
        X[n - 1] = X[1]  # exact ties: a duplicate row ...
        X[3] = 0.0  # ... and a zero row
    q = rng.standard_normal(d).astype(np.float32)
    return X, q


def _check(got, ref):
    i, s = got
    ri, rs = ref
    assert i.dtype == np.int64 and s.dtype == np.float32
    assert i.shape == s.shape == ri.shape
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(s, rs.astype(np.float32))


def assert_topk_close(idx, scores, ref_idx, ref_scores, tol=1e-6):
    """Scores within tol; indices equal except inside groups of near-tied scores."""
    assert len(idx) == len(ref_idx)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6, atol=tol)
    for p, s in enumerate(ref_scores):
        if np.sum(np.abs(ref_scores - s) <= tol) == 1:
            assert idx[p] == ref_idx[p]


MASKS = ["all", "none", "random", "sparse"]


def _mask(rng, n, kind):
    return {
        "all": np.ones(n, bool),
        "none": np.zeros(n, bool),
        "random": rng.random(n) < 0.6,
        "sparse": rng.random(n) < 0.05,
    }[kind]


# ----------------------------------------------------------------------------- normalize


@pytest.mark.parametrize("n,d", [(0, 4), (1, 1), (7, 3), (50, 64)])
def test_normalize_rows(rng, n, d):
    X, _ = _data(rng, n, d)
    out = normalize_rows(X)
    assert out.dtype == np.float32 and out.shape == (n, d)
    np.testing.assert_allclose(out, normalize_rows_ref(X), rtol=1e-7, atol=1e-7)
    if n >= 6:
        assert not out[3].any()
        nz = np.ones(n, bool)
        nz[3] = False
        np.testing.assert_allclose(np.linalg.norm(out[nz], axis=1), 1.0, rtol=1e-6)
    assert normalize_rows(X) is not X


# ----------------------------------------------------------------------------- topk_dot


@pytest.mark.parametrize(
    "n,d,k",
    [
        (0, 4, 3),
        (1, 1, 1),
        (5, 1, 2),
        (6, 3, 6),
        (7, 3, 7),
        (9, 5, 100),
        (103, 17, 1),
        (103, 17, 10),
        (400, 64, 33),
    ],
)
@pytest.mark.parametrize("kind", MASKS)
def test_topk_dot_matches_reference(rng, n, d, k, kind):
    X, q = _data(rng, n, d)
    mask = _mask(rng, n, kind)
    _check(topk_dot(X, q, mask, k), topk_dot_ref(X, q, mask, k))


def test_topk_dot_length_is_min_k_selected(rng):
    X, q = _data(rng, 40, 8)
    mask = np.zeros(40, bool)
    mask[[2, 9, 31]] = True
    i, s = topk_dot(X, q, mask, 10)
    assert len(i) == 3 and set(i.tolist()) == {2, 9, 31}
    assert topk_dot(X, q, mask, 0)[0].shape == (0,)
    assert topk_dot(X, q, np.zeros(40, bool), 5)[1].shape == (0,)


def test_topk_dot_ties_go_to_lower_index():
    X = np.ones((10, 3), np.float32)
    X[[2, 5, 7]] = 2.0
    q = np.ones(3, np.float32)
    i, s = topk_dot(X, q, np.ones(10, bool), 5)
    assert i.tolist() == [2, 5, 7, 0, 1]
    np.testing.assert_array_equal(s, [6, 6, 6, 3, 3])


def test_topk_dot_zero_query_keeps_index_order(rng):
    X, _ = _data(rng, 20, 4)
    i, s = topk_dot(X, np.zeros(4, np.float32), np.ones(20, bool), 20)
    assert i.tolist() == list(range(20)) and not s.any()


def test_topk_dot_against_blas_scores(rng):
    X, q = _data(rng, 2000, 32, dup=False)
    mask = rng.random(2000) < 0.7
    ri, rs = topk_from_scores(X.astype(np.float64) @ q.astype(np.float64), mask, 25)
    i, s = topk_dot(X, q, mask, 25)
    assert_topk_close(i, s, ri, rs)


@pytest.mark.parametrize(
    "n,d,k", [(0, 4, 3), (1, 1, 1), (6, 3, 6), (9, 5, 100), (103, 17, 10), (400, 64, 33)]
)
@pytest.mark.parametrize("kind", MASKS)
def test_topk_dot_columns_matches_reference(rng, n, d, k, kind):
    X, q = _data(rng, n, d)
    XT = np.ascontiguousarray(X.T)
    mask = _mask(rng, n, kind)
    ref = topk_dot_ref(X, q, mask, k)
    _check(topk_dot_columns(XT, q, mask, k), ref)
    _check(topk_dot_columns_parallel(XT, q, mask, k), ref)


@pytest.mark.jit_only
def test_topk_dot_columns_many_blocks_and_chunks(rng):
    n = 70001  # several column blocks and parallel chunks, ragged ends
    X, q = _data(rng, n, 6)
    X[50000:50100] = X[:100]
    XT = np.ascontiguousarray(X.T)
    for kind in ("all", "random", "sparse"):
        mask = _mask(rng, n, kind)
        for k in (1, 10, 500):
            ref = topk_dot_ref(X, q, mask, k)
            _check(topk_dot_columns(XT, q, mask, k), ref)
            _check(topk_dot_columns_parallel(XT, q, mask, k), ref)


# ----------------------------------------------------------------------------- cosine


@pytest.mark.parametrize("n,d,k", [(0, 3, 2), (1, 1, 1), (8, 3, 8), (50, 3, 5), (61, 12, 100)])
@pytest.mark.parametrize("kind", MASKS)
def test_topk_cosine_matches_reference(rng, n, d, k, kind):
    X, q = _data(rng, n, d)
    X *= rng.uniform(0.1, 10, size=(n, 1)).astype(np.float32)  # rows not unit
    mask = _mask(rng, n, kind)
    _check(topk_cosine(X, q, mask, k), topk_cosine_ref(X, q, mask, k))


def test_topk_cosine_zero_query_and_rows(rng):
    X, _ = _data(rng, 12, 3)
    i, s = topk_cosine(X, np.zeros(3, np.float32), np.ones(12, bool), 12)
    assert i.tolist() == list(range(12)) and not s.any()
    X[:] = 0.0
    X[7] = [1, 2, 3]
    i, s = topk_cosine(X, np.array([-1, -2, -3], np.float32), np.ones(12, bool), 3)
    assert i.tolist() == [0, 1, 2]  # zero rows score 0, above the -1 of row 7
    i, s = topk_cosine(X, np.array([2, 4, 6], np.float32), np.ones(12, bool), 2)
    assert i.tolist() == [7, 0] and s[0] == pytest.approx(1.0)


def test_topk_cosine_is_scale_invariant(rng):
    X, q = _data(rng, 30, 3, dup=False)
    a = topk_cosine(X, q, np.ones(30, bool), 30)
    b = topk_cosine(X * 4.0, q * 0.25, np.ones(30, bool), 30)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


# ----------------------------------------------------------------------------- batch


@pytest.mark.parametrize(
    "n,d,m,k",
    [
        (0, 4, 3, 2),
        (5, 1, 1, 1),
        (9, 3, 4, 12),
        (37, 7, 13, 5),
        (130, 16, 70, 8),
    ],
)
@pytest.mark.parametrize("kind", MASKS)
def test_topk_dot_batch_matches_reference(rng, n, d, m, k, kind):
    X, _ = _data(rng, n, d)
    Q = rng.standard_normal((m, d)).astype(np.float32)
    Q[0] = 0.0
    mask = _mask(rng, n, kind)
    i, s = topk_dot_batch(X, Q, mask, k)
    ri, rs = topk_dot_batch_ref(X, Q, mask, k)
    assert i.dtype == np.int64 and s.dtype == np.float32 and i.shape == s.shape == (m, k)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(s, rs.astype(np.float32))


def test_topk_dot_batch_padding_and_identity_with_single(rng):
    X, _ = _data(rng, 30, 9)
    Q = rng.standard_normal((20, 9)).astype(np.float32)
    mask = np.zeros(30, bool)
    mask[[1, 4, 29]] = True
    i, s = topk_dot_batch(X, Q, mask, 5)
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    for t in range(20):
        si, ss = topk_dot(X, Q[t], mask, 5)
        np.testing.assert_array_equal(i[t, :3], si)
        np.testing.assert_array_equal(s[t, :3], ss)  # bit-identical scores
    i, s = topk_dot_batch(X, Q, np.zeros(30, bool), 2)
    assert i.shape == (20, 2) and (i == -1).all() and np.isneginf(s).all()
    assert topk_dot_batch(X, Q[:0], mask, 3)[0].shape == (0, 3)


@pytest.mark.jit_only
def test_topk_dot_batch_many_tiles(rng):
    X, _ = _data(rng, 3001, 64)
    Q = rng.standard_normal((1031, 64)).astype(np.float32)  # several full tiles and a ragged one
    Q[5] = X[10]
    mask = rng.random(3001) < 0.9
    i, s = topk_dot_batch(X, Q, mask, 10)
    for t in range(0, 1031, 97):
        ri, rs = topk_dot_ref(X, Q[t], mask, 10)
        np.testing.assert_array_equal(i[t], ri)
        np.testing.assert_array_equal(s[t], rs.astype(np.float32))


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("n,d", [(0, 3), (1, 1), (7, 4), (10, 9), (33, 64)])
def test_dots_transposed_is_sequential_dot(rng, n, d):
    X, q = _data(rng, n, d)
    XT = rows_transposed(X)
    assert XT.shape == (d, n) and XT.dtype == np.float32 and XT.flags.c_contiguous
    out = np.empty(n)
    dots_transposed(XT, q.astype(np.float64), out)
    np.testing.assert_array_equal(out, seq_dots(X, q))


@pytest.mark.parametrize("n,d", [(0, 3), (1, 4), (2, 1), (9, 3), (40, 16)])
def test_pairwise_dispersion_matches_reference(rng, n, d):
    X, _ = _data(rng, n, d)
    assert pairwise_dispersion(X) == pytest.approx(dispersion_ref(X), abs=1e-12)


def test_pairwise_dispersion_known_values():
    assert pairwise_dispersion(np.ones((5, 3), np.float32)) == pytest.approx(0.0, abs=1e-12)
    assert pairwise_dispersion(np.eye(4, dtype=np.float32)) == pytest.approx(1.0)
    assert pairwise_dispersion(np.array([[1, 0], [-2, 0]], np.float32)) == pytest.approx(2.0)
    assert pairwise_dispersion(np.zeros((3, 2), np.float32)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- properties

small_ints = hnp.arrays(
    np.float32,
    st.tuples(st.integers(0, 24), st.integers(1, 5)),
    elements=st.integers(-2, 2).map(float),
)


@settings(max_examples=examples(25), deadline=None)
@given(X=small_ints, data=st.data())
def test_topk_properties(X, data):
    n, d = X.shape
    q = data.draw(hnp.arrays(np.float32, d, elements=st.integers(-2, 2).map(float)))
    mask = data.draw(hnp.arrays(np.bool_, n))
    k = data.draw(st.integers(1, n + 2))
    _check(topk_dot(X, q, mask, k), topk_dot_ref(X, q, mask, k))
    _check(topk_cosine(X, q, mask, k), topk_cosine_ref(X, q, mask, k))
    _check(topk_dot_columns(np.ascontiguousarray(X.T), q, mask, k), topk_dot_ref(X, q, mask, k))
    bi, bs = topk_dot_batch(X, np.stack([q, -q]), mask, k)
    ri, rs = topk_dot_batch_ref(X, np.stack([q, -q]), mask, k)
    np.testing.assert_array_equal(bi, ri)
    np.testing.assert_array_equal(bs, rs.astype(np.float32))


@pytest.mark.slow
@settings(max_examples=examples(300), deadline=None)
@given(
    X=hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 300), st.integers(1, 70)),
        elements=st.floats(-4, 4, width=32),
    ),
    data=st.data(),
)
def test_topk_properties_large(X, data):
    n, d = X.shape
    q = data.draw(hnp.arrays(np.float32, d, elements=st.floats(-4, 4, width=32)))
    mask = data.draw(hnp.arrays(np.bool_, n))
    k = data.draw(st.integers(1, n + 2))
    _check(topk_dot(X, q, mask, k), topk_dot_ref(X, q, mask, k))
    _check(topk_cosine(X, q, mask, k), topk_cosine_ref(X, q, mask, k))
    bi, bs = topk_dot_batch(X, np.stack([q, -q, q * 0]), mask, k)
    ri, rs = topk_dot_batch_ref(X, np.stack([q, -q, q * 0]), mask, k)
    np.testing.assert_array_equal(bi, ri)

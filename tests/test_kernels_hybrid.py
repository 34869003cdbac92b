"""dreamjit.kernels.hybrid against the plain-Python hybrid rerank reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dreamjit.kernels.hybrid import hybrid_base_scores, hybrid_rerank

from props import examples
from reference_retrieval import hybrid_base_ref, hybrid_rerank_ref

W = dict(alpha=0.65, beta=0.20, gamma=0.10, delta=0.05, lambda_=0.7)


def _cands(rng, m, d, unit=True):
    emb = rng.standard_normal((m, d)).astype(np.float32)
    if unit and m:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = rng.uniform(-1, 1, m).astype(np.float32)
    util = rng.uniform(-0.5, 1.5, m)  # clipped to [0, 1] inside
    labels = rng.integers(-1, 3, m).astype(np.int32)
    return sim, util, labels, emb


def _run(fn, sim, util, labels, qlabel, emb, w, k):
    return fn(
        sim,
        util,
        labels,
        qlabel,
        emb,
        w["alpha"],
        w["beta"],
        w["gamma"],
        w["delta"],
        w["lambda_"],
        k,
    )


def _check(got, ref):
    o, s = got
    ro, rs = ref
    assert o.dtype == np.int64 and s.dtype == np.float32
    np.testing.assert_array_equal(o, ro)
    np.testing.assert_array_equal(s, rs.astype(np.float32))


@pytest.mark.parametrize(
    "m,d,k",
    [
        (0, 4, 3),
        (1, 1, 1),
        (1, 3, 5),
        (6, 2, 6),
        (10, 4, 3),
        (40, 16, 40),
        (40, 16, 100),
        (75, 7, 10),
    ],
)
@pytest.mark.parametrize("qlabel", [-1, 0, 2])
def test_hybrid_matches_reference(rng, m, d, k, qlabel):
    args = _cands(rng, m, d)
    _check(
        _run(hybrid_rerank, *args[:3], qlabel, args[3], W, k),
        _run(hybrid_rerank_ref, *args[:3], qlabel, args[3], W, k),
    )


@pytest.mark.parametrize(
    "w",
    [
        dict(alpha=1, beta=0, gamma=0, delta=0, lambda_=1),
        dict(alpha=0, beta=1, gamma=0, delta=1, lambda_=0),
        dict(alpha=0, beta=0, gamma=1, delta=0.5, lambda_=0.5),
        dict(alpha=0, beta=0, gamma=0, delta=0, lambda_=0),
        dict(alpha=0.3, beta=0.3, gamma=0.3, delta=1, lambda_=1),
    ],
)
def test_hybrid_weight_corners(rng, w):
    sim, util, labels, emb = _cands(rng, 30, 5)
    emb[7] = emb[3]
    sim[9] = sim[4]
    _check(
        _run(hybrid_rerank, sim, util, labels, 1, emb, w, 12),
        _run(hybrid_rerank_ref, sim, util, labels, 1, emb, w, 12),
    )


def test_hybrid_base_scores_rules():
    sim = np.array([0.2, 0.6, 1.0, 0.6], np.float32)
    util = np.array([-1.0, 0.5, 2.0, 0.25])
    labels = np.array([3, 4, -1, 3], np.int32)
    base = hybrid_base_scores(sim, util, labels, 3, 1.0, 1.0, 1.0)
    assert base.dtype == np.float64
    # sim min-max -> 0, 0.5, 1, 0.5; utility clipped; class 1 / 0 / 0.5 / 1
    np.testing.assert_allclose(base, [0 + 0 + 1, 0.5 + 0.5 + 0, 1 + 1 + 0.5, 0.5 + 0.25 + 1])
    np.testing.assert_allclose(hybrid_base_scores(sim, util, labels, -1, 0.0, 0.0, 1.0), 0.5)
    np.testing.assert_array_equal(base, hybrid_base_ref(sim, util, labels, 3, 1.0, 1.0, 1.0))


def test_hybrid_equal_similarities_normalise_to_one():
    sim = np.full(4, 0.3, np.float32)
    base = hybrid_base_scores(sim, np.zeros(4), np.full(4, -1, np.int32), -1, 1.0, 0.0, 0.0)
    np.testing.assert_array_equal(base, 1.0)
    o, s = hybrid_rerank(
        sim[:1],
        np.zeros(1),
        np.full(1, -1, np.int32),
        -1,
        np.ones((1, 2), np.float32) / np.sqrt(2),
        1.0,
        0,
        0,
        0,
        1,
        3,
    )
    assert o.tolist() == [0] and s[0] == 1.0


def test_hybrid_ties_and_duplicates():
    sim = np.ones(5, np.float32)
    emb = np.tile(np.array([[1, 0]], np.float32), (5, 1))
    emb[3] = [0, 1]
    labels = np.full(5, -1, np.int32)
    # all base scores equal: first pick index 0, then the one unlike it (3), then index order
    o, s = hybrid_rerank(sim, np.zeros(5), labels, -1, emb, 1.0, 0, 0, 1.0, 1.0, 5)
    assert o.tolist() == [0, 3, 1, 2, 4]
    np.testing.assert_allclose(s, [1.0, 1.0, 0.0, 0.0, 0.0])


def test_hybrid_empty_and_k():
    sim, util, labels, emb = _cands(np.random.default_rng(0), 6, 3)
    o, s = _run(hybrid_rerank, sim[:0], util[:0], labels[:0], 0, emb[:0], W, 4)
    assert o.shape == s.shape == (0,) and o.dtype == np.int64 and s.dtype == np.float32
    assert _run(hybrid_rerank, sim, util, labels, 0, emb, W, 0)[0].shape == (0,)
    o, _ = _run(hybrid_rerank, sim, util, labels, 0, emb, W, 60)
    assert sorted(o.tolist()) == list(range(6))


@settings(max_examples=examples(30), deadline=None)
@given(data=st.data(), m=st.integers(0, 15), d=st.integers(1, 4))
def test_hybrid_properties(data, m, d):
    small = st.integers(-2, 2).map(float)
    sim = data.draw(hnp.arrays(np.float32, m, elements=st.sampled_from([-1.0, 0.0, 0.5, 1.0])))
    util = data.draw(hnp.arrays(np.float64, m, elements=st.floats(-1, 2)))
    labels = data.draw(hnp.arrays(np.int32, m, elements=st.integers(-1, 2)))
    emb = data.draw(hnp.arrays(np.float32, (m, d), elements=small))
    qlabel = data.draw(st.integers(-1, 2))
    w = {name: data.draw(st.sampled_from([0.0, 0.25, 1.0])) for name in W}
    k = data.draw(st.integers(1, m + 2))
    o, s = _run(hybrid_rerank, sim, util, labels, qlabel, emb, w, k)
    assert len(set(o.tolist())) == len(o) == min(k, m)
    _check((o, s), _run(hybrid_rerank_ref, sim, util, labels, qlabel, emb, w, k))

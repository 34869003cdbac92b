"""A query with no direction is refused; stored zero rows stay allowed (similarity 0)."""

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import InvalidParameterError


@pytest.fixture
def pool():
    p = dj.DreamPool(max_size=10, memory_budget_mb=None)
    p.add(np.full((4, 4, 3), 0.5), dj.SolverResult(1.0, 1.0, 0.0))
    p.add(np.zeros((4, 4, 3)), dj.SolverResult(1.0, 1.0, 0.0))  # a stored zero tensor is fine
    return p


@pytest.mark.parametrize(
    "query",
    [
        np.zeros(3),
        np.zeros((4, 4, 3)),
        dj.Query(chroma=np.zeros(3)),
        dj.Query(chroma=[0.0, -0.0, 0.0], spectral=np.zeros(6)),
    ],
)
@pytest.mark.parametrize(
    "call", ["retrieve_soft", "retrieve_similar", "retrieve_diverse", "hybrid"]
)
def test_direction_less_query_is_refused(pool, query, call):
    before = pool.fingerprint()
    cache = pool.query_cache_stats()
    fn = (lambda q: pool.retrieve(q, mode="hybrid")) if call == "hybrid" else getattr(pool, call)
    with pytest.raises(InvalidParameterError, match="direction"):
        fn(query)
    assert pool.fingerprint() == before
    assert pool.query_cache_stats()[:2][0] == cache[0]


def test_zero_user_embedding_query_is_refused():
    p = dj.DreamPool(embedding_dim=4, memory_budget_mb=None)
    p.add(np.ones((2, 2, 3)), dj.SolverResult(1.0, 1.0, 0.0), embedding=[1.0, 0.0, 0.0, 0.0])
    p.add(np.ones((2, 2, 3)), dj.SolverResult(1.0, 1.0, 0.0), embedding=[0.0, 0.0, 0.0, 0.0])
    with pytest.raises(InvalidParameterError, match="direction"):
        p.retrieve_soft(dj.Query(embedding=np.zeros(4)))
    hits = p.retrieve_soft(dj.Query(embedding=[1.0, 0.0, 0.0, 0.0]), k=2)
    assert hits.similarity.tolist() == [1.0, 0.0]  # the stored zero row: similarity 0


def test_stored_zero_tensor_has_similarity_zero_to_its_groups(pool):
    hits = pool.retrieve_similar([0.2, 0.3, 0.4], k=2)
    assert hits.similarity[-1] == 0.0

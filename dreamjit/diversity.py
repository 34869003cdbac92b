"""Diverse selection: maximal marginal relevance over user-supplied vectors.

A drop-in for the numpy MMR helpers of vector-store libraries (LangChain's
``maximal_marginal_relevance`` and the like): same picks, in the same order,
plus the score that won each pick, computed by a Numba kernel.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_float, as_float_array, as_int, check_shape
from .kernels.mmr import mmr_standard

__all__ = ["maximal_marginal_relevance"]


def maximal_marginal_relevance(query_vec, candidate_vecs, k=4, lambda_=0.5):
    """Pick ``k`` candidates that are relevant to the query and unlike each other.

    Greedy maximal marginal relevance (Carbonell & Goldstein, 1998) with cosine
    similarity. The first pick is the candidate most similar to the query;
    each later pick maximises
    ``lambda_ * sim(query, c) - (1 - lambda_) * max(sim(c, p) for p in picks)``.
    Ties go to the lower index, so the picks equal those of LangChain's
    ``langchain_core.vectorstores.utils.maximal_marginal_relevance``.

    Parameters
    ----------
    query_vec : array_like, shape (d,)
        The query embedding.
    candidate_vecs : array_like, shape (n, d)
        One candidate embedding per row; rows need not be normalised. An empty
        sequence (or shape ``(0, d)``) gives empty results.
    k : int, default 4
        Number of picks wanted, at least 1. ``k > n`` returns all ``n``
        candidates in MMR order.
    lambda_ : float, default 0.5
        Trade-off in [0, 1]: 1 ranks by relevance only, 0 by diversity only
        (after the first pick).

    Returns
    -------
    indices : numpy.ndarray of int64, shape (min(k, n),)
        Row numbers of ``candidate_vecs`` in pick order.
    scores : numpy.ndarray of float32, shape (min(k, n),)
        The cosine relevance of the first pick, then the MMR value that won
        each later pick.

    Raises
    ------
    DimensionMismatchError
        ``query_vec`` is not 1-d, ``candidate_vecs`` is not 2-d, or their
        lengths ``d`` differ.
    InvalidParameterError
        NaN or infinite values, a non-numeric dtype, values outside the float32
        range, ``k`` not an integer >= 1, or ``lambda_`` outside [0, 1].
    EmptyCollectionError
        ``query_vec`` is empty.

    Notes
    -----
    Vectors are converted to float32; dot products and norms accumulate in
    float64. A zero vector (query or candidate) has similarity 0 with
    everything. The cost is O(n k d) time and O(n d) extra memory.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> query = np.array([1.0, 0.0])
    >>> cands = np.array([[0.9, 0.44], [0.88, 0.47], [0.8, -0.6]])
    >>> idx, scores = dj.maximal_marginal_relevance(query, cands, k=2, lambda_=0.5)
    >>> idx.tolist()   # row 1 nearly repeats row 0, so row 2 comes second
    [0, 2]
    >>> [round(float(s), 3) for s in scores]
    [0.898, 0.172]
    >>> idx, _ = dj.maximal_marginal_relevance(query, cands, k=2, lambda_=1.0)
    >>> idx.tolist()   # relevance only
    [0, 1]
    """
    k = as_int(k, "k", minimum=1)
    lambda_ = as_float(lambda_, "lambda_", minimum=0.0, maximum=1.0)
    query = as_float_array(query_vec, "query_vec", ndim=1)
    if _is_empty_sequence(candidate_vecs):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    cands = as_float_array(candidate_vecs, "candidate_vecs", ndim=2, allow_empty=True)
    check_shape(
        cands,
        "candidate_vecs",
        (cands.shape[0], query.shape[0]),
        what="shape (n, len(query_vec)) =",
    )
    query = query.view()  # read-only, as the pool's queries are: one compile serves both
    query.setflags(write=False)
    return mmr_standard(query, cands, min(k, cands.shape[0]), lambda_)


def _is_empty_sequence(value) -> bool:
    """True for ``[]``, ``()`` or an array of shape ``(0,)``: no candidates at all."""
    if isinstance(value, (list, tuple)):
        return len(value) == 0
    return isinstance(value, np.ndarray) and value.shape == (0,)

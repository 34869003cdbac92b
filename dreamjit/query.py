"""Retrieval queries."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

import numpy as np

from ._validate import as_float

__all__ = ["Query", "RetrievalMode", "RetrievalWeights"]


@dataclass(frozen=True)
class Query:
    """What to look for. Every field is optional; missing feature groups are
    left out of the query embedding.

    Parameters
    ----------
    chroma : array_like (C,), optional
        Chroma signature (per-channel mean colour).
    label : int, optional
        Class label; retrieval prefers (soft) or requires (hard) it.
    spectral : array_like (6,), optional
        Spectral features, as from :func:`dreamjit.spectral_features`.
    utility : float, optional
        Utility to aim for.
    embedding : array_like (dim,), optional
        The user's own query vector (pools filled with user embeddings).
    spatial : array_like (grid*grid*C,), optional
        A spatial thumbnail, as from :func:`dreamjit.spatial_thumbnail`.

    Examples
    --------
    >>> from dreamjit import Query
    >>> Query(chroma=[1.0, 0.0, 0.0], label=2).label
    2
    """

    chroma: object = None
    label: int | None = None
    spectral: object = None
    utility: float | None = None
    embedding: object = None
    spatial: object = None

    @classmethod
    def from_tensor(cls, tensor, label=None, utility=None, certainty=None, grid: int = 4) -> Query:
        """A query carrying a tensor's chroma signature, spectral features and
        spatial thumbnail: what a pool computes for a stored entry, so a
        stored tensor used as a query finds itself first.

        Parameters
        ----------
        tensor : array_like
            ``(rows, cols, layers, C)`` or ``(rows, cols, C)``.
        label, utility : optional
            As in :class:`Query`.
        certainty : array_like, optional
            Per-cell weights ``(rows, cols, layers)`` (``(rows, cols)`` for a
            3-d tensor): 0 where a value is unknown. Chroma and thumbnail are
            certainty-weighted, and the spectral features (which need every
            cell) are left out when any weight is below 1.
        grid : int, default 4
            Thumbnail side; must match the pool's ``spatial_grid``.
        """
        from .features import query_descriptors

        chroma, spectral, spatial = query_descriptors(tensor, certainty=certainty, grid=grid)
        return cls(chroma=chroma, spectral=spectral, label=label, utility=utility, spatial=spatial)


class RetrievalMode(enum.Enum):
    """Which retrieval ``DreamPool.retrieve`` runs."""

    HARD = "hard"  # exact cosine on chroma signatures
    SOFT = "soft"  # embedding + index + hybrid rerank
    HYBRID = "hybrid"  # both rankings fused by reciprocal rank, best first


@dataclass(frozen=True)
class RetrievalWeights:
    """Weights of the hybrid rerank used by ``retrieve_soft``.

    ``score = alpha*similarity + beta*utility + gamma*class_match``, then a
    greedy re-order by ``lambda_*score - delta*max_similarity_to_chosen``.
    Every weight must be in [0, 1] (else :class:`~dreamjit.InvalidParameterError`).

    Parameters
    ----------
    alpha : float, default 0.65
        Weight of the cosine similarity to the query.
    beta : float, default 0.20
        Weight of the entry's utility.
    gamma : float, default 0.10
        Weight of the class match (the entry's label equals the query's).
    delta : float, default 0.05
        Penalty on the similarity to entries already chosen (duplicates).
    lambda_ : float, default 0.7
        Trade-off of score against that penalty in the greedy re-order.

    Examples
    --------
    >>> from dreamjit import RetrievalWeights
    >>> RetrievalWeights(beta=0.5).beta
    0.5
    """

    alpha: float = 0.65
    beta: float = 0.20
    gamma: float = 0.10
    delta: float = 0.05
    lambda_: float = 0.7

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = as_float(getattr(self, f.name), f.name, minimum=0.0, maximum=1.0)
            object.__setattr__(self, f.name, value)

    def as_array(self) -> np.ndarray:
        """The weights as the kernels take them.

        Returns
        -------
        numpy.ndarray
            float64 ``[alpha, beta, gamma, delta, lambda_]``.
        """
        return np.array([self.alpha, self.beta, self.gamma, self.delta, self.lambda_], np.float64)

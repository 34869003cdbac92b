"""dreamjit: a Numba-JIT, memory-bounded pool of scored tensors ("dreams").

A solver or training loop evaluates a state, keeps the good ones in a
:class:`DreamPool`, and later retrieves stored states that are similar to (or
usefully diverse from) a query, to seed its next run.
"""
from __future__ import annotations

import logging

from .config import PoolConfig
from .diversity import maximal_marginal_relevance
from .embedding import EmbeddingMapper
from .errors import (
    CapacityExceededError, CriticalStateError, DimensionMismatchError, DreamError,
    EmptyCollectionError, FeatureUnavailableError, IndexCorruptedError, IndexNotBuiltError,
    InvalidConfigError, InvalidParameterError, MemoryExceededError,
)
from .features import (SolverResult, SpectralFeatures, chroma_signature, evaluate, evaluate_batch,
                       spectral_features, spectral_features_batch)
from .pool import DreamPool
from .cache import QueryCache
from .index import ExactIndex, NNDescentIndex
from .query import Query, RetrievalMode, RetrievalWeights
from .results import DreamEntry, Hit, Hits
from ._warmup import warmup

logging.getLogger("dreamjit").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "DreamPool", "PoolConfig", "Query", "RetrievalMode", "RetrievalWeights", "Hits", "Hit",
    "DreamEntry", "SolverResult", "SpectralFeatures", "EmbeddingMapper", "QueryCache",
    "ExactIndex", "NNDescentIndex",
    "evaluate", "evaluate_batch", "spectral_features", "spectral_features_batch",
    "chroma_signature", "maximal_marginal_relevance", "warmup",
    "DreamError", "DimensionMismatchError", "IndexNotBuiltError", "CapacityExceededError",
    "InvalidConfigError", "EmptyCollectionError", "InvalidParameterError", "IndexCorruptedError",
    "MemoryExceededError", "FeatureUnavailableError", "CriticalStateError",
]

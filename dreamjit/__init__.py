"""dreamjit: a Numba-JIT, memory-bounded pool of scored tensors ("dreams").

A solver or training loop evaluates a state, keeps the good ones in a
:class:`DreamPool`, and later retrieves stored states that are similar to (or
usefully diverse from) a query, to seed its next run.

Public names are loaded on first use (PEP 562), so ``import dreamjit`` stays
cheap: numba and the kernels load when a name that needs them is first touched.
"""

from __future__ import annotations

import importlib
import logging

from . import errors
from .errors import *  # noqa: F403  (the error classes; errors.__all__ is their one list)

logging.getLogger("dreamjit").addHandler(logging.NullHandler())

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "DreamPool": "pool",
    "PoolConfig": "config",
    "Query": "query",
    "RetrievalMode": "query",
    "RetrievalWeights": "query",
    "Hits": "results",
    "Hit": "results",
    "DreamEntry": "results",
    "SolverResult": "features",
    "SpectralFeatures": "features",
    "evaluate": "features",
    "evaluate_batch": "features",
    "spectral_features": "features",
    "spectral_features_batch": "features",
    "chroma_signature": "features",
    "spatial_thumbnail": "features",
    "EmbeddingMapper": "embedding",
    "QueryCache": "cache",
    "ExactIndex": "index",
    "NNDescentIndex": "index",
    "maximal_marginal_relevance": "diversity",
    "warmup": "_warmup",
}

__all__ = [
    "DreamPool",
    "PoolConfig",
    "Query",
    "RetrievalMode",
    "RetrievalWeights",
    "Hits",
    "Hit",
    "DreamEntry",
    "SolverResult",
    "SpectralFeatures",
    "EmbeddingMapper",
    "QueryCache",
    "ExactIndex",
    "NNDescentIndex",
    "evaluate",
    "evaluate_batch",
    "spectral_features",
    "spectral_features_batch",
    "spatial_thumbnail",
    "chroma_signature",
    "maximal_marginal_relevance",
    "warmup",
]
__all__ += errors.__all__


def __getattr__(name):
    if name == "distributed":  # the optional submodule (needs dask.distributed)
        return importlib.import_module(".distributed", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dreamjit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

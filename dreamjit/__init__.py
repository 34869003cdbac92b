"""dreamjit: a Numba-JIT, memory-bounded pool of scored tensors ("dreams")."""
from __future__ import annotations

import logging

from .errors import (  # noqa: F401
    CapacityExceededError, CriticalStateError, DimensionMismatchError, DreamError,
    EmptyCollectionError, FeatureUnavailableError, IndexCorruptedError, IndexNotBuiltError,
    InvalidConfigError, InvalidParameterError, MemoryExceededError,
)

logging.getLogger("dreamjit").addHandler(logging.NullHandler())

__version__ = "0.1.0"

"""The dreamjit error hierarchy.

Every error is a :class:`DreamError`. Errors about bad values also subclass
:class:`ValueError`, so ``except ValueError`` keeps working for code that
already guards numpy calls that way. Each message names the parameter, the
value that was given and what was expected.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DreamError",
    "DimensionMismatchError",
    "IndexNotBuiltError",
    "CapacityExceededError",
    "InvalidConfigError",
    "EmptyCollectionError",
    "InvalidParameterError",
    "IndexCorruptedError",
    "MemoryExceededError",
    "FeatureUnavailableError",
    "CriticalStateError",
    "ShardUnavailableError",
]  # dreamjit.__all__ takes these names from here


def describe_value(value, limit: int = 60) -> str:
    """A short, readable rendering of ``value`` for error messages."""
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DreamError(Exception):
    """Base class of every dreamjit error.

    Parameters
    ----------
    param : str
        The name of the parameter (or setting) at fault.
    value : object
        The value that was given.
    expected : str
        What was expected instead.
    detail : str
        More context, appended to the message in parentheses.
    """

    def __init__(self, param: str, value=None, expected: str = "", *, detail: str = ""):
        self.param = param
        self.value = value
        self.expected = expected
        msg = f"{param}={describe_value(value)}"
        if expected:
            msg += f": expected {expected}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)

    def __reduce__(self):  # keep errors picklable across processes
        return (_rebuild_error, (type(self), self.param, self.value, self.expected, str(self)))


def _rebuild_error(cls, param, value, expected, message):
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.param, err.value, err.expected = param, value, expected
    return err


class DimensionMismatchError(DreamError, ValueError):
    """An array has the wrong number of dimensions, shape or length."""


class InvalidConfigError(DreamError, ValueError):
    """A :class:`~dreamjit.PoolConfig` setting is out of range."""


class InvalidParameterError(DreamError, ValueError):
    """A call argument is out of range, of the wrong type or not finite."""


class EmptyCollectionError(DreamError, ValueError):
    """An operation needs at least one element and got none."""


class MemoryExceededError(DreamError, ValueError):
    """A single entry (or batch) cannot fit in the memory budget at all."""


class IndexCorruptedError(DreamError, ValueError):
    """A saved pool or an index failed its integrity checks."""


class CapacityExceededError(DreamError, RuntimeError):
    """A fixed capacity would be exceeded."""


class IndexNotBuiltError(DreamError, RuntimeError):
    """An index was queried before it was built."""


class FeatureUnavailableError(DreamError, RuntimeError):
    """An optional feature needs a package or build that is not available."""


class CriticalStateError(DreamError, RuntimeError):
    """An internal invariant was found broken; the pool should not be used."""


class ShardUnavailableError(DreamError, RuntimeError):
    """A shard of a :class:`~dreamjit.distributed.ShardedPool` cannot be reached (its
    worker was lost, or it did not answer in time); ``value`` is the shard's index."""

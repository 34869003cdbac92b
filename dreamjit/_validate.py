"""Edge validation shared by the object layer.

Everything a user passes in goes through one of these helpers once; kernels
never validate. Each helper returns a clean, C-contiguous array (or number) or
raises the matching :class:`~dreamjit.errors.DreamError` subclass.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from .errors import DimensionMismatchError, EmptyCollectionError, InvalidParameterError

_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: refused are object, complex, str, ...


def as_float_array(value, name: str, *, dtype=np.float32, ndim=None, finite=True,
                   allow_empty=False) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``, checked.

    ndim may be an int or a tuple of allowed ints.
    """
    if isinstance(value, (str, bytes)):
        raise InvalidParameterError(name, value, "a real numeric array")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InvalidParameterError(name, value, "a real numeric array", detail=str(exc)) from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidParameterError(name, arr if arr.dtype.kind != "O" else value,
                                    "a real numeric array (bool, int or float dtype)",
                                    detail=f"got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise DimensionMismatchError(name, arr, f"{want} dimensions, got {arr.ndim}")
    if arr.size == 0 and not allow_empty:
        raise EmptyCollectionError(name, arr, "a non-empty array")
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidParameterError(name, arr, "finite values (no NaN or inf)")
    with np.errstate(over="ignore"):  # too-large values are reported just below
        out = np.asarray(arr, dtype=dtype, order="C")  # keeps 0-d (ascontiguousarray would not)
    if finite and dtype in (np.float32, np.dtype(np.float32)) and arr.dtype.kind == "f" \
            and arr.dtype.itemsize > 4 and not np.isfinite(out).all():
        raise InvalidParameterError(name, arr, "values within float32 range")
    return out


def as_int(value, name: str, *, minimum=None, maximum=None, allow_none=False):
    """An integer (not bool) in ``[minimum, maximum]``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        try:
            if isinstance(value, bool) or isinstance(value, float):
                raise TypeError
            value = operator.index(value)
        except TypeError:
            raise InvalidParameterError(name, value, _range_text("an integer", minimum, maximum)) from None
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidParameterError(name, value, _range_text("an integer", minimum, maximum))
    return value


def as_float(value, name: str, *, minimum=None, maximum=None, allow_none=False,
             exclusive_min=False, error=InvalidParameterError):
    """A finite real number in the given range."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise error(name, value, _range_text("a real number", minimum, maximum, exclusive_min))
    value = float(value)
    bad = not np.isfinite(value)
    bad |= minimum is not None and (value <= minimum if exclusive_min else value < minimum)
    bad |= maximum is not None and value > maximum
    if bad:
        raise error(name, value, _range_text("a finite real number", minimum, maximum, exclusive_min))
    return value


def as_k(k, name: str = "k", default=None) -> int:
    """A result count: ``None`` means ``default``; otherwise an integer >= 1."""
    if k is None:
        k = default
    return as_int(k, name, minimum=1)


def as_label(label, name: str = "label"):
    """An integer class label >= 0, or None."""
    return as_int(label, name, minimum=0, maximum=np.iinfo(np.int32).max, allow_none=True)


def check_shape(arr: np.ndarray, name: str, expected: tuple, what: str = "shape") -> None:
    if tuple(arr.shape) != tuple(expected):
        raise DimensionMismatchError(name, arr, f"{what} {tuple(expected)}, got {tuple(arr.shape)}")


def _range_text(kind, minimum, maximum, exclusive_min=False):
    if minimum is not None and maximum is not None:
        left = "(" if exclusive_min else "["
        return f"{kind} in {left}{minimum}, {maximum}]"
    if minimum is not None:
        return f"{kind} {'>' if exclusive_min else '>='} {minimum}"
    if maximum is not None:
        return f"{kind} <= {maximum}"
    return kind


def as_tensor(value, name: str = "tensor", channels=None):
    """One tensor ``(rows, cols, layers, C)`` or ``(rows, cols, C)``.

    Returns ``(t4, shape)``: a C-contiguous float32 4-d view/copy and the
    shape as given (3-d input is one layer).
    """
    arr = as_float_array(value, name, ndim=(3, 4))
    shape = arr.shape
    t4 = arr.reshape(shape[0], shape[1], 1, shape[2]) if arr.ndim == 3 else arr
    if channels is not None and t4.shape[3] != channels:
        raise DimensionMismatchError(name, arr, f"{channels} channels in the last axis, got {t4.shape[3]}")
    return t4, tuple(shape)


def as_tensor_batch(value, name: str = "tensors", channels=None):
    """A batch ``(n, rows, cols, layers, C)`` or ``(n, rows, cols, C)``.

    Returns ``(t5, item_shape)`` with ``t5`` C-contiguous float32 5-d.
    """
    if isinstance(value, (list, tuple)) and len(value) == 0:
        raise EmptyCollectionError(name, value, "a non-empty batch of tensors")
    arr = as_float_array(value, name, ndim=(4, 5))
    shape = arr.shape
    t5 = arr.reshape(shape[0], shape[1], shape[2], 1, shape[3]) if arr.ndim == 4 else arr
    if channels is not None and t5.shape[4] != channels:
        raise DimensionMismatchError(name, arr, f"{channels} channels in the last axis, got {t5.shape[4]}")
    return t5, tuple(shape[1:])

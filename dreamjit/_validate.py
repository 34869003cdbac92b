"""Edge validation shared by the object layer.

Everything a user passes in goes through one of these helpers once; kernels
never validate. Each helper returns a clean, C-contiguous array (or number) or
raises the matching :class:`~dreamjit.errors.DreamError` subclass.
"""

from __future__ import annotations

import collections.abc
import numbers
import operator

import numpy as np

from .errors import DimensionMismatchError, EmptyCollectionError, InvalidParameterError

_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: refused are object, complex, str, ...

#: the largest float32: utilities are bounded by it, so running means kept in
#: float64 cannot overflow however many values are folded in
F32_MAX = float(np.finfo(np.float32).max)

#: the most entries any pool can hold (``PoolConfig.max_size`` is at most this);
#: a ``k`` above it asks for the same hits as ``k = MAX_ENTRIES`` and is clamped
#: to it, so candidate counts like ``4 * k`` stay far inside int64
MAX_ENTRIES = 2**40


def as_float_array(
    value, name: str, *, dtype=np.float32, ndim=None, finite=True, allow_empty=False
) -> np.ndarray:
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
        raise InvalidParameterError(
            name,
            arr if arr.dtype.kind != "O" else value,
            "a real numeric array (bool, int or float dtype)",
            detail=f"got dtype {arr.dtype}",
        )
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
    if (
        finite
        and dtype in (np.float32, np.dtype(np.float32))
        and arr.dtype.kind == "f"
        and arr.dtype.itemsize > 4
        and not np.isfinite(out).all()
    ):
        raise InvalidParameterError(name, arr, "values within float32 range")
    return out


def as_int(value, name: str, *, minimum=None, maximum=None, allow_none=False):
    """An integer (not bool) in ``[minimum, maximum]``."""
    if value is None and allow_none:
        return None
    if not is_integer(value):
        raise InvalidParameterError(name, value, _range_text("an integer", minimum, maximum))
    value = operator.index(value)  # a Python int: no width limit, no numpy wrap-around
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidParameterError(name, value, _range_text("an integer", minimum, maximum))
    return value


def is_integer(value) -> bool:
    """True for a Python or numpy integer of any width (0-d integer arrays too); False for
    bool, ``np.bool_``, floats (even integral ones such as ``3.0``), strings and the rest."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer, numbers.Integral)):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu"


def as_float(
    value,
    name: str,
    *,
    minimum=None,
    maximum=None,
    allow_none=False,
    exclusive_min=False,
    error=InvalidParameterError,
):
    """A finite real number in the given range."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise error(name, value, _range_text("a real number", minimum, maximum, exclusive_min))
    try:
        value = float(value)
    except (OverflowError, TypeError, ValueError):  # e.g. a Python int beyond the float range
        raise error(
            name, value, _range_text("a finite real number", minimum, maximum, exclusive_min)
        ) from None
    bad = not np.isfinite(value)
    bad |= minimum is not None and (value <= minimum if exclusive_min else value < minimum)
    bad |= maximum is not None and value > maximum
    if bad:
        raise error(
            name, value, _range_text("a finite real number", minimum, maximum, exclusive_min)
        )
    return value


def as_k(k, name: str = "k", default=None, minimum=1) -> int:
    """A result count: ``None`` means ``default``; otherwise an integer >= ``minimum``.

    Any integer type is accepted (Python int of any size, numpy int8..uint64; not
    bool, not floats). The count comes back as a Python int clamped to
    :data:`MAX_ENTRIES`, more than any pool can hold, so asking for more hits
    than exist returns what exists and candidate arithmetic cannot overflow.
    """
    if k is None:
        k = default
    return min(as_int(k, name, minimum=minimum), MAX_ENTRIES)


def as_utility(value, name: str = "utility", allow_none=True):
    """A utility: a finite real number with ``|u| <= F32_MAX`` (or None)."""
    try:
        return as_float(value, name, minimum=-F32_MAX, maximum=F32_MAX, allow_none=allow_none)
    except InvalidParameterError:
        raise InvalidParameterError(name, value, _UTILITY_RANGE) from None


def check_utility_range(arr: np.ndarray, name: str) -> None:
    """Refuse utilities (float64, NaN = none) with ``|u| > F32_MAX``."""
    with np.errstate(invalid="ignore"):
        over = np.abs(arr) > F32_MAX
    if over.any():
        raise InvalidParameterError(name, float(arr[over][0]), _UTILITY_RANGE)


_UTILITY_RANGE = (
    f"a finite utility with |u| <= {F32_MAX:.8g} (the float32 range, so running "
    "mean utilities cannot overflow)"
)


def as_sequence(value, name: str, what: str) -> list:
    """The items of a sequence argument, as a list.

    Arrays, lists, tuples and other ordered iterables are accepted; strings,
    bytes, mappings (whose iteration would give their keys) and sets (no
    order) are refused, as is anything that is not iterable.
    """
    if isinstance(value, np.ndarray):
        return [value] if value.ndim == 0 else list(value)
    if isinstance(
        value, (str, bytes, bytearray, collections.abc.Mapping, collections.abc.Set)
    ) or not isinstance(value, collections.abc.Iterable):
        raise InvalidParameterError(name, value, what)
    try:
        return list(value)
    except Exception as exc:  # an iterable that fails while iterating
        raise InvalidParameterError(name, value, what, detail=str(exc)) from None


_IDS_EXPECTED = "a sequence of integer entry ids"


def as_ids(ids, name: str = "ids", *, allow_empty: bool = False) -> np.ndarray:
    """Entry ids as a 1-d integer array, checked.

    Parameters
    ----------
    ids : int or sequence of int
        One id or a sequence (list, tuple, integer array) of them.
    name : str, default "ids"
        The parameter name used in error messages.
    allow_empty : bool, default False
        Whether no ids at all is accepted (else it raises
        :class:`~dreamjit.errors.EmptyCollectionError`).

    Returns
    -------
    numpy.ndarray
        The ids, 1-d, in their integer dtype (an empty int64 array when none).
    """
    if isinstance(ids, (str, bytes, dict, set, frozenset)):
        raise InvalidParameterError(name, ids, _IDS_EXPECTED)
    try:
        arr = np.atleast_1d(np.asarray(ids))
    except Exception as exc:  # ragged nesting and the like
        raise InvalidParameterError(name, ids, _IDS_EXPECTED, detail=str(exc)) from None
    if arr.ndim == 1 and arr.size == 0:
        if allow_empty:
            return np.empty(0, dtype=np.int64)
        raise EmptyCollectionError(name, ids, "at least one id")
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise InvalidParameterError(name, ids, _IDS_EXPECTED)
    return arr


def as_feedback_utilities(utilities, n: int) -> np.ndarray:
    """The ``utilities`` of a feedback call on ``n`` ids: one for all or one per id.

    Parameters
    ----------
    utilities : float or sequence of float
        Finite values with ``|u| <= F32_MAX``.
    n : int
        How many ids the feedback is for.

    Returns
    -------
    numpy.ndarray of float64
        Shape ``(n,)`` (a broadcast view when one utility was given).
    """
    if isinstance(utilities, (dict, set, frozenset)):
        raise InvalidParameterError(
            "utilities", utilities, "a finite utility or a sequence of them"
        )
    u = as_float_array(utilities, "utilities", dtype=np.float64, ndim=(0, 1))
    check_utility_range(u.reshape(-1), "utilities")
    u = np.broadcast_to(u, (n,)) if u.ndim == 0 else u
    if u.shape != (n,):
        raise DimensionMismatchError("utilities", utilities, f"one utility or {n} of them")
    return u


def as_mmr_options(lambda_, fast, min_similarity, sample_size) -> tuple[float, bool, float, int]:
    """The options of a diverse (MMR) retrieval, checked.

    Parameters
    ----------
    lambda_ : float
        Relevance weight in ``[0, 1]``.
    fast : bool
        Whether the sampled MMR variant is used.
    min_similarity : float or None
        Candidates below it are skipped, in ``[-1, 1]`` (None: 0.0).
    sample_size : int or None
        Candidates sampled per pick by the fast variant, >= 0 (None: 8).

    Returns
    -------
    tuple of (float, bool, float, int)
        ``(lambda_, fast, min_similarity, sample_size)``.
    """
    lambda_ = as_float(lambda_, "lambda_", minimum=0.0, maximum=1.0)
    if not isinstance(fast, bool):
        raise InvalidParameterError("fast", fast, "True or False")
    min_sim = as_float(
        0.0 if min_similarity is None else min_similarity,
        "min_similarity",
        minimum=-1.0,
        maximum=1.0,
    )
    sample = as_k(sample_size, "sample_size", default=8, minimum=0)
    return lambda_, fast, min_sim, sample


def as_retrieval_mode(mode):
    """A :class:`~dreamjit.RetrievalMode`, or its name in any case.

    Parameters
    ----------
    mode : RetrievalMode or str
        ``HARD``, ``SOFT`` or ``HYBRID`` (``"hard"``, ``"soft"``, ``"hybrid"``).

    Returns
    -------
    RetrievalMode
    """
    from .query import RetrievalMode  # query imports this module

    if isinstance(mode, str):
        try:
            mode = RetrievalMode(mode.lower())
        except ValueError:
            mode = None
    if not isinstance(mode, RetrievalMode):
        raise InvalidParameterError("mode", mode, "a RetrievalMode (HARD, SOFT or HYBRID)")
    return mode


def as_bool(value, name: str) -> bool:
    """A real bool (``True``/``False`` or ``np.bool_``), as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(name, value, "True or False")
    return bool(value)


I32_MAX = int(np.iinfo(np.int32).max)


def as_label(label, name: str = "label"):
    """An integer class label >= 0, or None."""
    if label is None:
        return None
    return as_int(label, name, minimum=0, maximum=I32_MAX, allow_none=True)


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
        raise DimensionMismatchError(
            name, arr, f"{channels} channels in the last axis, got {t4.shape[3]}"
        )
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
        raise DimensionMismatchError(
            name, arr, f"{channels} channels in the last axis, got {t5.shape[4]}"
        )
    return t5, tuple(shape[1:])


_WHERE_EXPECTED = (
    "None, an integer label >= 0, a list/tuple/set of labels, an integer numpy array of "
    "entry ids, or a callable taking the pool's columns and returning a bool mask"
)


def as_where(where):
    """A ``where=`` filter parsed once at the edge: None, or ``(kind, value)`` with kind
    ``"label"`` (an int), ``"labels"`` (int64 array), ``"ids"`` (int64 array) or
    ``"call"`` (the callable; called later, under the pool's read lock).

    Labels come as an integer or a list, tuple, set, frozenset or range of
    integers; ids as an integer numpy array (1-d). A bool array is refused
    (a mask comes from a callable, which sees the columns it is aligned with).
    """
    if where is None:
        return None
    if is_integer(where):
        return "label", as_label(where, "where")
    if isinstance(where, np.ndarray):
        if where.dtype.kind not in "iu" or where.ndim != 1:
            raise InvalidParameterError(
                "where",
                where,
                _WHERE_EXPECTED,
                detail="an array must be 1-d integer entry ids (a bool mask comes from a callable)",
            )
        if where.size and (where.min() < 0 or int(where.max()) > np.iinfo(np.int64).max):
            raise InvalidParameterError("where", where, "entry ids >= 0")
        return "ids", np.asarray(where, dtype=np.int64)
    if isinstance(where, (list, tuple, set, frozenset, range)):
        labels = []
        for lab in where:
            if not is_integer(lab):
                raise InvalidParameterError(
                    "where", where, _WHERE_EXPECTED, detail=f"label {lab!r} is not an integer"
                )
            labels.append(as_label(lab, "where"))
        return "labels", np.array(sorted(set(labels)), dtype=np.int64)
    if callable(where):
        return "call", where
    raise InvalidParameterError("where", where, _WHERE_EXPECTED)

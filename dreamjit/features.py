"""Tensor descriptors: spectral features, chroma signature and the reference evaluator.

Tensors are ``(rows, cols, layers, C)`` arrays, or ``(rows, cols, C)`` for one
layer; they are validated once here and computed on by the kernels in
:mod:`dreamjit.kernels` as float32 (sums run in float64).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import NamedTuple

import numpy as np

from ._validate import F32_MAX, as_float, as_float_array, as_tensor, as_tensor_batch, check_shape
from .errors import InvalidParameterError
from .kernels._jit import run_chunks
from .kernels.chroma import chroma_into
from .kernels.evaluate import evaluate_batch as _evaluate_batch
from .kernels.evaluate import evaluate_one as _evaluate_one
from .kernels.spectral import N_FEATURES, spectral_batch, spectral_one

__all__ = [
    "SpectralFeatures",
    "SolverResult",
    "spectral_features",
    "spectral_features_batch",
    "chroma_signature",
    "spatial_thumbnail",
    "evaluate",
    "evaluate_batch",
    "check_spectral",
]


@dataclass(frozen=True)
class SpectralFeatures:
    """Spectral features of a tensor (the mean over its channels).

    Per channel, the layer mean is de-meaned, windowed with a periodic Hann
    window and Fourier transformed; ``P = |F|**2 / (rows*cols)`` is its power
    and ``r`` the radial frequency, 1.0 at one axis' Nyquist frequency.

    Attributes
    ----------
    entropy : float
        Shannon entropy of ``P / sum(P)`` divided by ``ln(rows*cols)``, in [0, 1].
    low_band_energy, mid_band_energy, high_band_energy : float
        Fractions of the power at ``r < 1/3``, ``1/3 <= r < 2/3`` and ``r >= 2/3``.
    dominant_frequency : float
        ``r`` at the largest ``P``.
    mean_psd : float
        Mean of ``P``.

    Notes
    -----
    A flat channel (total power below 1e-12) contributes 0 to every feature
    but ``mean_psd``. Features are computed in float64 and stored as
    float32; ``mean_psd`` is at most ``4 * max|x - mean|**2``, so it fits
    float32 for values up to about 9e18 in magnitude. A tensor whose
    ``mean_psd`` would exceed the float32 range is refused with
    :class:`~dreamjit.InvalidParameterError` rather than stored as inf.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> f = dj.SpectralFeatures.from_array(np.arange(6))
    >>> f.mid_band_energy
    2.0
    >>> f.as_array()
    array([0., 1., 2., 3., 4., 5.], dtype=float32)
    """

    entropy: float
    low_band_energy: float
    mid_band_energy: float
    high_band_energy: float
    dominant_frequency: float
    mean_psd: float

    def as_array(self) -> np.ndarray:
        """The six features as an array.

        Returns
        -------
        numpy.ndarray
            float32 ``(6,)``, in field order (the kernels' order).
        """
        return np.array(astuple(self), dtype=np.float32)

    @classmethod
    def from_array(cls, a) -> SpectralFeatures:
        """Build from a length-6 array in field order.

        Parameters
        ----------
        a : array_like
            Six values in field order (e.g. a row of :func:`spectral_features_batch`).

        Returns
        -------
        SpectralFeatures
            The features, as floats.
        """
        arr = as_float_array(a, "a", dtype=np.float64, ndim=1)
        check_shape(arr, "a", (N_FEATURES,))
        return cls(*arr.tolist())


class SolverResult(NamedTuple):
    """The evaluator's scores of one tensor.

    Attributes
    ----------
    energy : float
        Total-variation plus saturation energy (lower is smoother), >= 0.
    coherence : float
        Colour balance and hue consistency, at most 1 (higher is better).
    violation : float
        Fraction-like measure of out-of-range values, oversaturation and
        jumps, in [0, 1].
    """

    energy: float
    coherence: float
    violation: float


def spectral_features(tensor) -> SpectralFeatures:
    """Spectral features of one tensor.

    Parameters
    ----------
    tensor : array_like
        ``(rows, cols, layers, C)`` or ``(rows, cols, C)``, finite real values.

    Returns
    -------
    SpectralFeatures
        The six features (a named tuple of floats).

    Raises
    ------
    DimensionMismatchError
        If the tensor is not 3-d or 4-d.
    InvalidParameterError
        If it holds NaN/inf or is not a real numeric array, or if its
        spectral power (``mean_psd``) overflows float32 (values beyond
        about 9e18 in magnitude).
    EmptyCollectionError
        If it is empty.

    See Also
    --------
    spectral_features_batch : the same for many tensors at once.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> flat = np.full((8, 8, 3), 0.5)
    >>> dj.spectral_features(flat).entropy
    0.0
    >>> stripes = np.zeros((8, 8, 1))
    >>> stripes[:, ::2] = 1.0
    >>> f = dj.spectral_features(stripes)
    >>> round(f.dominant_frequency, 6), round(f.high_band_energy, 6)
    (1.0, 1.0)
    """
    t4, _ = as_tensor(tensor, "tensor")
    feats = spectral_one(t4)
    check_spectral(feats[None], "tensor", tensor)
    return SpectralFeatures(*feats.tolist())


def spectral_features_batch(tensors) -> np.ndarray:
    """Spectral features of a batch of tensors, in one parallel kernel call.

    Parameters
    ----------
    tensors : array_like
        ``(n, rows, cols, layers, C)`` or ``(n, rows, cols, C)``.

    Returns
    -------
    numpy.ndarray
        float32 ``(n, 6)``; columns in :class:`SpectralFeatures` field order.

    Raises
    ------
    DimensionMismatchError
        If ``tensors`` is not 4-d or 5-d.
    InvalidParameterError
        If a tensor holds NaN/inf or is not a real numeric array, or its
        ``mean_psd`` overflows float32 (as :func:`spectral_features`).
    EmptyCollectionError
        If the batch or its tensors are empty.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> rng = np.random.default_rng(0)
    >>> feats = dj.spectral_features_batch(rng.random((5, 16, 16, 2, 3)))
    >>> feats.shape, feats.dtype
    ((5, 6), dtype('float32'))
    >>> bool(np.allclose(feats[:, 1:4].sum(axis=1), 1.0))
    True
    """
    t5, _ = as_tensor_batch(tensors, "tensors")
    feats = spectral_batch(t5)
    check_spectral(feats, "tensors", tensors)
    return feats


def check_spectral(feats: np.ndarray, name: str, value) -> None:
    """Refuse tensors whose spectral features (n, 6) overflowed their float32 storage.

    Only ``mean_psd`` can: the kernels compute in float64, the other features
    are bounded ratios. Raised before anything is stored, so a pool never
    holds a feature it could not save and load back.
    """
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = f"tensor {i} of the batch: " if feats.shape[0] > 1 else ""
        raise InvalidParameterError(
            name,
            value,
            f"values whose spectral power fits float32 (mean_psd <= {F32_MAX:.4g}, "
            "about |x - mean| <= 9e18)",
            detail=f"{where}mean_psd overflows float32",
        )


def chroma_signature(tensor, certainty=None) -> np.ndarray:
    """Per-channel mean of a tensor, optionally weighted by a certainty map.

    Parameters
    ----------
    tensor : array_like
        ``(rows, cols, layers, C)`` or ``(rows, cols, C)``.
    certainty : array_like, optional
        Weights ``(rows, cols, layers)`` (``(rows, cols)`` for a 3-d tensor),
        finite and >= 0. Gives ``sum(w * x) / sum(w)`` per channel; if all
        weights are 0 the plain mean is returned.

    Returns
    -------
    numpy.ndarray
        float32 ``(C,)``.

    Raises
    ------
    DimensionMismatchError
        If the tensor is not 3-d or 4-d, or ``certainty`` has the wrong shape.
    InvalidParameterError
        If an input holds NaN/inf, is not real numeric, or a weight is negative.
    EmptyCollectionError
        If an input is empty.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> t = np.zeros((2, 2, 3))
    >>> t[0, 0] = [1.0, 0.5, 0.0]
    >>> dj.chroma_signature(t)
    array([0.25 , 0.125, 0.   ], dtype=float32)
    >>> w = np.array([[1.0, 0.0], [0.0, 0.0]])
    >>> dj.chroma_signature(t, certainty=w)
    array([1. , 0.5, 0. ], dtype=float32)
    """
    t4, shape = as_tensor(tensor, "tensor")
    # chroma_into, the kernel the pool's adds call too: no separate compile
    out = np.empty(t4.shape[3], dtype=np.float32)
    if certainty is None:
        chroma_into(t4, np.empty((0, 0, 0), dtype=np.float32), False, out)
    else:
        w = _as_certainty(certainty, shape)
        chroma_into(t4, w.reshape(t4.shape[:3]), True, out)
    return out


def spatial_thumbnail(tensor, certainty=None, grid: int = 4) -> np.ndarray:
    """A coarse picture of a tensor: its layer mean averaged over ``grid x grid`` areas.

    This is the spatial group of computed embeddings: with ``certainty``,
    each cell counts by its weight, so a partly observed tensor (weight 0
    where unknown) gives nearly the thumbnail of the whole one; an area with
    no weight at all takes the tensor's weighted mean colour.

    Parameters
    ----------
    tensor : array_like
        ``(rows, cols, layers, C)`` or ``(rows, cols, C)``.
    certainty : array_like, optional
        Weights ``(rows, cols, layers)`` (``(rows, cols)`` for a 3-d tensor), >= 0.
    grid : int, default 4
        Areas per side.

    Returns
    -------
    numpy.ndarray
        float32 ``(grid * grid * C,)``, area-major then channel.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> t = np.zeros((4, 4, 1)); t[:2, :2] = 1.0
    >>> dj.spatial_thumbnail(t, grid=2)
    array([1., 0., 0., 0.], dtype=float32)
    """
    from ._validate import as_int
    from .kernels.thumbnail import thumbnail_into

    t4, shape = as_tensor(tensor, "tensor")
    grid = as_int(grid, "grid", minimum=1, maximum=64)
    out = np.empty(grid * grid * t4.shape[3])
    if certainty is None:
        thumbnail_into(t4, np.empty((0, 0, 0), dtype=np.float32), False, grid, out)
    else:
        w = _as_certainty(certainty, shape)
        thumbnail_into(t4, w.reshape(t4.shape[:3]), True, grid, out)
    return out.astype(np.float32)


def query_descriptors(tensor, certainty=None, grid: int = 4):
    """Chroma, spectral features and thumbnail of one tensor, as a pool computes them.

    What :meth:`dreamjit.Query.from_tensor` carries. Without ``certainty`` the
    three come from one call of the kernel a pool's adds run (nothing more to
    compile); with it, from :func:`chroma_signature`, :func:`spectral_features`
    (only when every weight is >= 1) and :func:`spatial_thumbnail`.

    Parameters
    ----------
    tensor : array_like
        ``(rows, cols, layers, C)`` or ``(rows, cols, C)``.
    certainty : array_like, optional
        Weights ``(rows, cols, layers)`` (``(rows, cols)`` for a 3-d tensor), >= 0.
    grid : int, default 4
        Thumbnail side.

    Returns
    -------
    chroma : numpy.ndarray
        float32 ``(C,)``, as :func:`chroma_signature`.
    spectral : numpy.ndarray or None
        float32 ``(6,)``, as :func:`spectral_features`; None when a weight is below 1.
    spatial : numpy.ndarray
        float32 ``(grid * grid * C,)``, as :func:`spatial_thumbnail`.
    """
    from ._validate import as_int
    from .kernels.spectral import describe_entries

    if certainty is not None:
        _, shape = as_tensor(tensor, "tensor")
        complete = bool((_as_certainty(certainty, shape) >= 1.0).all())
        spectral = np.asarray(spectral_features(tensor).as_array()) if complete else None
        return (
            chroma_signature(tensor, certainty=certainty),
            spectral,
            spatial_thumbnail(tensor, certainty=certainty, grid=grid),
        )
    t4, _ = as_tensor(tensor, "tensor")
    grid = as_int(grid, "grid", minimum=1, maximum=64)
    no_certainty = np.empty((0, 0, 0, 0), dtype=np.float32)
    spectral, chroma, spatial = describe_entries(t4[None], no_certainty, False, grid)
    check_spectral(spectral, "tensor", tensor)
    return chroma[0], spectral[0], spatial[0]


def _as_certainty(certainty, shape):
    want = shape[:-1]  # (rows, cols, layers) or (rows, cols)
    w = as_float_array(certainty, "certainty", ndim=len(want))
    check_shape(w, "certainty", want)
    if (w < 0).any():
        raise InvalidParameterError("certainty", certainty, "weights >= 0")
    return w


def evaluate(tensor, lambda_tv: float = 1.0, lambda_sat: float = 0.1) -> SolverResult:
    """Score one RGB tensor with the reference evaluator.

    Parameters
    ----------
    tensor : array_like
        ``(rows, cols, layers, 3)`` or ``(rows, cols, 3)``, RGB nominally in [0, 1].
    lambda_tv : float, default 1.0
        Weight of the total variation (sum of neighbour RGB distances), >= 0.
    lambda_sat : float, default 0.1
        Weight of the mean squared deviation of saturation from 0.5, >= 0.

    Returns
    -------
    SolverResult
        ``energy = lambda_tv*TV + lambda_sat*mean((sat - 0.5)**2)``;
        ``coherence = 0.6*balance + 0.4*hue_consistency``; ``violation`` in
        [0, 1] from values outside [0, 1], saturation above 0.95 and neighbour
        jumps above 0.3.

    Raises
    ------
    DimensionMismatchError
        If the tensor is not 3-d/4-d or does not have 3 channels.
    InvalidParameterError
        If it holds NaN/inf or is not real numeric, has an integer dtype
        (scale to [0, 1] first, e.g. ``skimage.util.img_as_float(t)``), a
        lambda is negative or not finite, or the energy would overflow
        float64 (lambdas too large for the tensor).
    EmptyCollectionError
        If it is empty.

    See Also
    --------
    evaluate_batch : many tensors in one parallel call.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> dj.evaluate(np.full((4, 4, 3), 0.5))
    SolverResult(energy=0.025, coherence=1.0, violation=0.0)
    """
    _refuse_integers(tensor, "tensor")
    t4, _ = as_tensor(tensor, "tensor", channels=3)
    lt, ls = _lambdas(lambda_tv, lambda_sat)
    out = np.empty(3)
    _evaluate_one(t4, lt, ls, out)
    _check_scores(out[None], lt, ls)
    return SolverResult(float(out[0]), float(out[1]), float(out[2]))


def evaluate_batch(tensors, lambda_tv: float = 1.0, lambda_sat: float = 0.1) -> np.ndarray:
    """Score a batch of RGB tensors in one parallel kernel call.

    Parameters
    ----------
    tensors : array_like
        ``(n, rows, cols, layers, 3)`` or ``(n, rows, cols, 3)``.
    lambda_tv, lambda_sat : float
        As in :func:`evaluate`.

    Returns
    -------
    numpy.ndarray
        float64 ``(n, 3)``: columns energy, coherence, violation.

    Raises
    ------
    DimensionMismatchError
        If ``tensors`` is not 4-d/5-d or does not have 3 channels.
    InvalidParameterError
        As :func:`evaluate`: a tensor holds NaN/inf or is not real numeric, the
        batch has an integer dtype, a lambda is negative or not finite, or an
        energy would overflow float64.
    EmptyCollectionError
        If there is no tensor, or a tensor has no cells.

    Examples
    --------
    >>> import numpy as np
    >>> import dreamjit as dj
    >>> batch = np.stack([np.full((4, 4, 3), 0.5), np.zeros((4, 4, 3))])
    >>> dj.evaluate_batch(batch)
    array([[0.025, 1.   , 0.   ],
           [0.025, 0.4  , 0.   ]])
    """
    _refuse_integers(tensors, "tensors")
    t5, _ = as_tensor_batch(tensors, "tensors", channels=3)
    lt, ls = _lambdas(lambda_tv, lambda_sat)
    out = np.empty((t5.shape[0], 3))

    def chunk(lo, hi):
        # the kernel's serial compile per chunk of tensors, chunks on threads (run_chunks):
        # same scores, and no parallel compile of the evaluator on an empty cache
        out[lo:hi] = _evaluate_batch.serial(t5[lo:hi], lt, ls)

    run_chunks(chunk, t5.shape[0], _EVALUATE_CHUNK)
    _check_scores(out, lt, ls)
    return out


#: tensors per evaluator call in :func:`evaluate_batch`
_EVALUATE_CHUNK = 16


def _refuse_integers(value, name):
    """The evaluator reads RGB in [0, 1]: integer images (uint8 0..255, ...) are refused."""
    if isinstance(value, (str, bytes)):
        return  # as_tensor reports these
    try:
        dtype = np.asarray(value).dtype
    except Exception:
        return  # as_tensor reports these
    if dtype.kind in "iu":
        raise InvalidParameterError(
            name,
            value,
            "a float tensor with RGB values in [0, 1]",
            detail=f"got integer dtype {dtype}; scale to [0, 1] first, "
            "e.g. skimage.util.img_as_float(t) or t / 255",
        )


def _check_scores(out, lambda_tv, lambda_sat):
    """Energy is ``lambda_tv*TV + lambda_sat*sat_term``, both terms finite float64 for any
    float32 tensor: only lambdas large enough to overflow the products can make it inf."""
    if not np.isfinite(out).all():
        raise InvalidParameterError(
            "lambda_tv, lambda_sat",
            (lambda_tv, lambda_sat),
            "weights small enough that the energy stays finite",
            detail="the energy overflowed float64",
        )


def _lambdas(lambda_tv, lambda_sat):
    return (
        as_float(lambda_tv, "lambda_tv", minimum=0.0),
        as_float(lambda_sat, "lambda_sat", minimum=0.0),
    )

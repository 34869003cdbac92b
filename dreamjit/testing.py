"""Helpers shared by the test suite, the benchmarks and the scripts (as ``xarray.testing``).

:func:`assert_pool_invariants` checks a pool's bookkeeping, limits and
indexes through the public methods of its collaborators.

Data that this project did not make: :func:`photo_patches` cuts patches from
the photographs bundled with scikit-image (an optional dependency, in the
``test`` extra).
"""

from __future__ import annotations

import warnings

import numpy as np

from .errors import FeatureUnavailableError

__all__ = ["PHOTO_NAMES", "assert_pool_invariants", "photo_images", "photo_patches"]

#: scikit-image sample images that ship with the package (no download needed)
PHOTO_NAMES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "coins",
    "moon",
    "hubble_deep_field",
    "page",
    "text",
    "clock",
)


def photo_images(names=PHOTO_NAMES) -> list:
    """The bundled scikit-image photographs that load here, as float32 RGB in [0, 1].

    Grey images are repeated over three channels; images that cannot be
    loaded (not bundled with the installed version) are skipped.

    Parameters
    ----------
    names : sequence of str, default PHOTO_NAMES
        Names of functions of :mod:`skimage.data`.

    Returns
    -------
    list of numpy.ndarray
        float32 ``(rows, cols, 3)`` images, in the order of ``names``.

    Raises
    ------
    FeatureUnavailableError
        scikit-image is not installed, or none of the images loads.
    """
    try:
        import skimage.data as skdata
        from skimage.util import img_as_float
    except ImportError:
        raise FeatureUnavailableError(
            "scikit-image", None, "scikit-image installed (pip install 'dreamjit[test]')"
        ) from None
    out = []
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = img_as_float(getattr(skdata, name)()).astype(np.float32)
        except Exception:  # not bundled (would need a download): skip
            continue
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(img[:, :, :3]))
    if not out:
        raise FeatureUnavailableError(
            "names", names, "at least one bundled scikit-image photograph"
        )
    return out


def photo_patches(
    n: int, size: int = 32, seed: int = 0, min_std: float = 0.0, names=PHOTO_NAMES
) -> np.ndarray:
    """``n`` random ``size x size`` RGB patches ``(n, size, size, 3)`` float32 in [0, 1].

    Patches are cut at seeded random places of random photographs. With
    ``min_std > 0`` a patch whose pixel standard deviation is below it (a flat
    piece of sky or paper: no structure to recognise under noise) is drawn
    again.

    Parameters
    ----------
    n : int
        How many patches.
    size : int, default 32
        Patch side in pixels.
    seed : int, default 0
        Seeds the choice of photographs and places.
    min_std : float, default 0.0
        Smallest pixel standard deviation of a patch.
    names : sequence of str, default PHOTO_NAMES
        The photographs to cut from (see :func:`photo_images`).

    Returns
    -------
    numpy.ndarray
        float32 ``(n, size, size, 3)`` in [0, 1].

    Raises
    ------
    FeatureUnavailableError
        As :func:`photo_images`.

    Examples
    --------
    >>> from dreamjit.testing import photo_patches
    >>> photo_patches(3, size=8).shape
    (3, 8, 8, 3)
    """
    images = photo_images(names)
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.float32)
    i = 0
    tries = 0
    while i < n:
        tries += 1
        if tries > 1000 * (n + 1):
            raise FeatureUnavailableError("min_std", min_std, "a value that enough patches reach")
        img = images[rng.integers(len(images))]
        r = rng.integers(0, img.shape[0] - size + 1)
        c = rng.integers(0, img.shape[1] - size + 1)
        patch = img[r : r + size, c : c + size]
        if min_std > 0 and float(patch.std()) < min_std:
            continue
        out[i] = patch
        i += 1
    return out


def assert_pool_invariants(pool) -> None:
    """Assert that ``pool`` is consistent and within its limits.

    Checked: at most ``max_size`` entries and at most the memory budget in
    use; the entry table's own checks (one live slot per mapped id, unique ids
    in ``[0, next_id)``, the slot map agreeing with the ids column); and each
    index covering
    exactly the live entries (the exact index and, when there is one, the
    NN-descent index: graph rows less tombstones plus its delta buffer).

    Call it with no write running in another thread (or while holding
    ``pool.lock.read()``).

    Parameters
    ----------
    pool : DreamPool
        The pool to check.

    Raises
    ------
    AssertionError
        If a check fails (the message says which).

    Examples
    --------
    >>> import numpy as np, dreamjit as dj
    >>> from dreamjit.testing import assert_pool_invariants
    >>> pool = dj.DreamPool(max_size=3)
    >>> ids = pool.add_batch(np.full((5, 4, 4, 3), 0.5), only_coherent=False)
    >>> assert_pool_invariants(pool)
    """
    table, indexes = pool.table, pool.indexes
    n = len(pool)
    assert pool.budget.problems() == [], pool.budget.problems()  # max_size, memory budget
    assert table.problems() == [], table.problems()
    if table.store is None:
        assert n == 0 and indexes.exact is None and indexes.ann is None
        return
    assert indexes.exact_len() == n, ("exact index", indexes.exact_len(), n)
    ann_len = indexes.ann_len()
    assert ann_len is None or ann_len == n, ("NN-descent index", ann_len, n)

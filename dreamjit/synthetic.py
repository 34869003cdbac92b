"""Seeded synthetic dreams for demos, docs and benchmarks."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["smooth_tensors", "example_pool", "NAMED_COLOURS"]

#: a few colours to query with (RGB chroma signatures)
NAMED_COLOURS = {
    "red": (0.85, 0.25, 0.2),
    "green": (0.25, 0.75, 0.3),
    "blue": (0.2, 0.3, 0.85),
    "amber": (0.9, 0.65, 0.15),
    "grey": (0.5, 0.5, 0.5),
}


def smooth_tensors(
    n: int, shape=(32, 32, 4, 3), seed: int = 0, smoothness: float = 3.0, noise: float = 0.3
) -> np.ndarray:
    """``n`` spatially smoothed random tensors in [0, 1], float32.

    Each tensor is a random base colour plus Gaussian noise smoothed over
    rows and columns with ``sigma = smoothness``; deterministic for ``seed``.

    Examples
    --------
    >>> from dreamjit.synthetic import smooth_tensors
    >>> smooth_tensors(2, shape=(8, 8, 3)).shape
    (2, 8, 8, 3)
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    base = rng.uniform(0.15, 0.85, size=(n,) + (1,) * (len(shape) - 1) + (shape[-1],))
    field = rng.standard_normal((n, *shape))
    sigma = (0, smoothness, smoothness) + (0,) * (len(shape) - 2)
    field = gaussian_filter(field, sigma=sigma, mode="wrap")
    field *= noise / max(float(field.std()), 1e-12) * 0.25
    return np.clip(base + field, 0.0, 1.0).astype(np.float32)


def example_pool(n: int = 50, shape=(8, 8, 3), seed: int = 0):
    """A small pool for examples: ``n`` :func:`smooth_tensors` stored whatever their
    coherence, labelled ``i % 2``.

    Parameters
    ----------
    n : int, default 50
        Entries to store.
    shape : tuple, default (8, 8, 3)
        The tensor shape.
    seed : int, default 0
        Seeds the tensors and the pool.

    Returns
    -------
    tuple
        ``(pool, tensors, ids)``: the :class:`~dreamjit.DreamPool`, the tensors
        ``(n, *shape)`` and the ids they were stored under.

    Examples
    --------
    >>> from dreamjit.synthetic import example_pool
    >>> pool, tensors, ids = example_pool()
    >>> len(pool), tensors.shape, pool[ids[1]].label
    (50, (50, 8, 8, 3), 1)
    """
    from .pool import DreamPool

    tensors = smooth_tensors(n, shape=shape, seed=seed)
    pool = DreamPool(seed=seed)
    ids = pool.add_batch(tensors, labels=[i % 2 for i in range(n)], only_coherent=False)
    return pool, tensors, ids

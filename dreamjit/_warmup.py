"""Compile (or load from numba's cache) every kernel, on tiny inputs."""

from __future__ import annotations

import logging
import time

import numpy as np

logger = logging.getLogger("dreamjit")


def warmup(shape=(8, 8, 2, 3), dim: int = 64) -> float:
    """Compile or load every kernel now, so the first real call is fast.

    Runs the public paths once on tiny float32 inputs.

    Parameters
    ----------
    shape : tuple of int, default (8, 8, 2, 3)
        Tensor shape ``(rows, cols, layers, C)`` of the inputs.
    dim : int, default 64
        Embedding length.

    Returns
    -------
    float
        The seconds taken.

    Examples
    --------
    >>> import dreamjit as dj
    >>> seconds = dj.warmup()
    """
    from .config import PoolConfig
    from .diversity import maximal_marginal_relevance
    from .features import evaluate_batch
    from .kernels._jit import MIN_PARALLEL_ITEMS
    from .pool import DreamPool

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    # a batch below MIN_PARALLEL_ITEMS and one above (one compile, or two where numba's
    # threading layer runs small batches on the serial compile)
    big = rng.random((MIN_PARALLEL_ITEMS, *shape), dtype=np.float32)
    tensors = big[:4]
    results = evaluate_batch(tensors)
    pool = DreamPool(
        PoolConfig(max_size=3, embedding_dim=dim, memory_budget_mb=None, use_ann=False)
    )
    pool.add_batch(big, evaluate_batch(big), only_coherent=False)
    pool.add_batch(
        tensors, results, labels=[0, 1, 0, 1], utilities=[0.1, 0.2, 0.3, 0.4], only_coherent=False
    )
    pool.record_feedback(pool.ids()[:1], 0.5)
    # the certainty-weighted chroma and thumbnails (pools that store certainty, or whose
    # thumbnail areas do not partition the tensor): a kernel the pool above never needs
    from .kernels.spectral import describe_entries

    describe_entries(tensors, np.ones(tensors.shape[:4], np.float32), True, 4)
    pool.retrieve_similar(tensors[0], k=2)
    pool.retrieve_similar(tensors[0], k=2, label=0)
    for name in ("retrieve_soft", "retrieve_diverse"):
        if hasattr(pool, name):
            getattr(pool, name)(tensors[0], k=2)
    maximal_marginal_relevance(rng.random(dim), rng.random((5, dim)), k=2)
    seconds = time.perf_counter() - start
    logger.info("dreamjit warmup took %.2f s", seconds)
    return seconds

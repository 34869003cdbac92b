"""Embedding mapper: entry features -> unit vectors for soft retrieval."""
from __future__ import annotations

import numpy as np

from ._validate import as_float, as_int
from .errors import InvalidParameterError
from .kernels.embed import embed_batch

__all__ = ["EmbeddingMapper", "N_SPECTRAL"]

#: length of the spectral feature vector
N_SPECTRAL = 6


class EmbeddingMapper:
    """Maps entry features to ``dim``-long unit embeddings, deterministically for a seed.

    The feature vector is ``[chroma (C), spectral (6), one-hot(label mod
    buckets) (uniform when unlabeled), utility (1)]`` with each group scaled by
    its weight, times a seeded orthonormal projection (QR of a Gaussian
    matrix), L2-normalised.

    Parameters
    ----------
    dim : int
        Embedding length.
    seed : int
        Seed of the projection.
    channels : int
        Number of chroma channels C.
    weights : tuple of 4 floats
        Weights of the chroma, spectral, label and utility groups.
    buckets : int
        Label buckets of the one-hot group.

    Examples
    --------
    >>> import numpy as np
    >>> from dreamjit import EmbeddingMapper
    >>> m = EmbeddingMapper(dim=8, seed=0, channels=3)
    >>> e = m.embed(np.array([[0.5, 0.2, 0.1]], np.float32), np.zeros((1, 6), np.float32))
    >>> e.shape, round(float(np.linalg.norm(e[0])), 5)
    ((1, 8), 1.0)
    """

    def __init__(self, dim: int = 64, seed: int = 0, channels: int = 3,
                 weights=(1.0, 0.5, 0.5, 0.25), buckets: int = 16):
        self.dim = as_int(dim, "dim", minimum=1)
        self.seed = as_int(seed, "seed", minimum=0)
        self.channels = as_int(channels, "channels", minimum=1)
        self.buckets = as_int(buckets, "buckets", minimum=1)
        if len(weights) != 4:
            raise InvalidParameterError("weights", weights, "4 weights (chroma, spectral, label, utility)")
        self.weights = np.array([as_float(w, "weights", minimum=0.0) for w in weights], dtype=np.float64)
        self.n_features = self.channels + N_SPECTRAL + self.buckets + 1
        self.projection = self._make_projection()
        # identity for caches: two mappers with equal keys embed identically
        self.key = (self.dim, self.seed, self.channels, self.buckets, tuple(self.weights.tolist()))

    def _make_projection(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        tall, wide = max(self.n_features, self.dim), min(self.n_features, self.dim)
        q, r = np.linalg.qr(rng.standard_normal((tall, wide)))
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # fix QR's sign freedom: same seed, same matrix
        proj = q if self.n_features >= self.dim else q.T
        return np.ascontiguousarray(proj, dtype=np.float64)

    def embed(self, chroma, spectral, labels=None, utility=None, present=(True, True, True, True)):
        """Embeddings ``(n, dim)`` float32 of already-validated feature arrays.

        ``labels`` (n,) int32 with -1 for none; ``utility`` (n,) float64 with
        NaN for none; ``present`` switches feature groups off (for queries).
        """
        n = chroma.shape[0]
        labels = np.full(n, -1, np.int32) if labels is None else np.ascontiguousarray(labels, np.int32)
        utility = np.full(n, np.nan) if utility is None else np.ascontiguousarray(utility, np.float64)
        return embed_batch(np.ascontiguousarray(chroma, np.float32),
                           np.ascontiguousarray(spectral, np.float32), labels, utility,
                           np.asarray(present, dtype=np.bool_), self.weights, self.buckets,
                           self.projection)

    def __repr__(self):
        return (f"EmbeddingMapper(dim={self.dim}, seed={self.seed}, channels={self.channels}, "
                f"weights={tuple(self.weights.tolist())}, buckets={self.buckets})")

"""Embedding encoding: features -> unit 64-d embeddings (``dj.EmbeddingMapper``).

``time_embed_*`` time the mapper on precomputed chroma + spectral features
(one entry, a batch of 1000); ``time_describe_and_embed`` adds computing
those features from 32x32x4x3 tensors (what ``add_batch`` does per batch);
``time_query_embedding`` is one query through the pool's query path (cache
off). ``NumpyEmbed`` is the same mapping in plain numpy (one matmul).
"""
from __future__ import annotations

import numpy as np

from .common import DIM, EMBED_BATCH, SEED, TENSOR_SHAPE, memo, smooth_tensors, tensor_pool


def _features(n):
    from dreamjit.kernels.spectral import describe_batch

    T = smooth_tensors(n)
    spectral, chroma = describe_batch(T, np.empty((0, 0, 0, 0), np.float32), False)
    labels = (np.arange(n) % 8).astype(np.int32)
    utility = np.random.default_rng(SEED).uniform(0.0, 1.0, n)
    return T, chroma, spectral, labels, utility


class Embedding:
    def setup(self):
        import dreamjit as dj
        from dreamjit.kernels.spectral import describe_batch

        self.describe = describe_batch
        self.T, self.chroma, self.spectral, self.labels, self.utility = memo(
            ("features", EMBED_BATCH), lambda: _features(EMBED_BATCH))
        self.mapper = dj.EmbeddingMapper(dim=DIM, seed=SEED, channels=TENSOR_SHAPE[-1])
        self.one = (self.chroma[:1], self.spectral[:1], self.labels[:1], self.utility[:1])
        self.no_cert = np.empty((0, 0, 0, 0), np.float32)
        self.pool = memo(("Embedding.pool",), lambda: tensor_pool(self.T[:16], query_cache_size=0))
        self.query = dj.Query(chroma=self.chroma[0], spectral=self.spectral[0], label=1)
        for _ in range(2):
            self.time_embed_one()
            self.time_embed_batch()
            self.time_describe_and_embed()
            self.time_query_embedding()

    def time_embed_one(self):
        self.mapper.embed(*self.one)

    def time_embed_batch(self):
        self.mapper.embed(self.chroma, self.spectral, self.labels, self.utility)

    def time_describe_and_embed(self):
        spectral, chroma = self.describe(self.T, self.no_cert, False)
        self.mapper.embed(chroma, spectral, self.labels, self.utility)

    def time_query_embedding(self):
        """One query's embedding through the pool (validation + mapper, no cache)."""
        self.pool._query_embedding(self.query)


class NumpyEmbed:
    """The mapper's arithmetic in numpy: weighted features @ projection, normalised rows."""

    def setup(self):
        import dreamjit as dj

        _, self.chroma, self.spectral, self.labels, self.utility = memo(
            ("features", EMBED_BATCH), lambda: _features(EMBED_BATCH))
        self.mapper = m = dj.EmbeddingMapper(dim=DIM, seed=SEED, channels=TENSOR_SHAPE[-1])
        ours = m.embed(self.chroma, self.spectral, self.labels, self.utility)
        np.testing.assert_allclose(self._numpy(), ours, rtol=1e-4, atol=1e-5)

    def _numpy(self):
        m = self.mapper
        n = self.chroma.shape[0]
        w = m.weights
        onehot = np.zeros((n, m.buckets))
        onehot[np.arange(n), self.labels % m.buckets] = w[2]
        util = np.clip(np.where(np.isnan(self.utility), 0.5, self.utility), 0.0, 1.0)
        feats = np.concatenate([w[0] * self.chroma, w[1] * self.spectral, onehot,
                                w[3] * util[:, None]], axis=1)
        e = feats @ m.projection
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        return e.astype(np.float32)

    def time_embed_batch(self):
        self._numpy()

"""Embedding encoding: features -> unit 64-d embeddings (``dj.EmbeddingMapper``).

``time_embed_*`` time the mapper on precomputed chroma, spectral and thumbnail
features (one entry, a batch of 1000); ``time_describe_and_embed`` adds
computing those features from 32x32x4x3 tensors (what ``add_batch`` does per
batch); ``time_query_embedding`` is one query through the pool's query path
(cache off). ``NumpyEmbed`` is the same mapping in vectorised numpy.
"""

from __future__ import annotations

import numpy as np

from .common import DIM, EMBED_BATCH, SEED, TENSOR_SHAPE, memo, smooth_tensors, tensor_pool


def _features(n):
    from dreamjit.kernels.spectral import describe_batch
    from dreamjit.kernels.thumbnail import thumbnail_batch

    T = smooth_tensors(n)
    no_cert = np.empty((0, 0, 0, 0), np.float32)
    spectral, chroma = describe_batch(T, no_cert, False)
    spatial = thumbnail_batch(T, no_cert, False, 4)
    labels = (np.arange(n) % 8).astype(np.int32)
    utility = np.random.default_rng(SEED).uniform(0.0, 1.0, n)
    return T, chroma, spectral, labels, utility, spatial


class Embedding:
    def setup(self):
        import dreamjit as dj
        from dreamjit.kernels.spectral import describe_batch
        from dreamjit.kernels.thumbnail import thumbnail_batch

        self.describe = describe_batch
        self.thumbnails = thumbnail_batch
        self.T, self.chroma, self.spectral, self.labels, self.utility, self.spatial = memo(
            ("features", EMBED_BATCH), lambda: _features(EMBED_BATCH)
        )
        self.mapper = dj.EmbeddingMapper(dim=DIM, seed=SEED, channels=TENSOR_SHAPE[-1])
        self.one = (self.chroma[:1], self.spectral[:1], self.labels[:1], self.utility[:1])
        self.no_cert = np.empty((0, 0, 0, 0), np.float32)
        self.pool = memo(("Embedding.pool",), lambda: tensor_pool(self.T[:16], query_cache_size=0))
        self.query = dj.Query(
            chroma=self.chroma[0], spectral=self.spectral[0], label=1, spatial=self.spatial[0]
        )
        for _ in range(2):
            self.time_embed_one()
            self.time_embed_batch()
            self.time_describe_and_embed()
            self.time_query_embedding()

    def time_embed_one(self):
        self.mapper.embed(*self.one, spatial=self.spatial[:1])

    def time_embed_batch(self):
        self.mapper.embed(
            self.chroma, self.spectral, self.labels, self.utility, spatial=self.spatial
        )

    def time_describe_and_embed(self):
        spectral, chroma = self.describe(self.T, self.no_cert, False)
        spatial = self.thumbnails(self.T, self.no_cert, False, self.mapper.grid)
        self.mapper.embed(chroma, spectral, self.labels, self.utility, spatial=spatial)

    def time_query_embedding(self):
        """One query's embedding through the pool (validation + mapper, no cache)."""
        self.pool.query_embedding(self.query)


class NumpyEmbed:
    """The mapper's arithmetic in numpy: unit weighted groups, projected per group."""

    def setup(self):
        import dreamjit as dj

        (_, self.chroma, self.spectral, self.labels, self.utility, self.spatial) = memo(
            ("features", EMBED_BATCH), lambda: _features(EMBED_BATCH)
        )
        self.mapper = m = dj.EmbeddingMapper(dim=DIM, seed=SEED, channels=TENSOR_SHAPE[-1])
        ours = m.embed(self.chroma, self.spectral, self.labels, self.utility, spatial=self.spatial)
        np.testing.assert_allclose(self._numpy(), ours, rtol=1e-4, atol=1e-5)

    @staticmethod
    def _unit(g, w):
        n = np.linalg.norm(g, axis=1, keepdims=True)
        return np.divide(g * w, n, out=np.zeros_like(g), where=n > 0)

    def _numpy(self):
        m = self.mapper
        n = self.chroma.shape[0]
        w = m.weights
        C = m.channels
        spec = self.spectral.astype(np.float64)
        spec[:, 5] = np.maximum(spec[:, 5], 0) / (1 + np.maximum(spec[:, 5], 0))
        sp = self.spatial.astype(np.float64).reshape(n, -1, C)
        flat = 1e-3 * np.abs(sp).mean(axis=(1, 2))
        spat = np.concatenate(
            [(sp - sp.mean(axis=1, keepdims=True)).reshape(n, -1), flat[:, None]], axis=1
        )
        onehot = np.zeros((n, m.buckets))
        onehot[np.arange(n), self.labels % m.buckets] = 1.0
        util = np.clip(np.where(np.isnan(self.utility), 0.5, self.utility), 0.0, 1.0)
        angle = np.stack([np.cos(np.pi * util / 2), np.sin(np.pi * util / 2)], axis=1)
        groups = [self.chroma.astype(np.float64), spec, spat, onehot, angle]
        e = np.zeros((n, m.dim))
        b = m.bounds
        for g, raw in enumerate(groups):
            img = self._unit(raw, 1.0) @ m.projection[b[g] : b[g + 1]]
            e += self._unit(img, w[g])
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        return e.astype(np.float32)

    def time_embed_batch(self):
        self._numpy()

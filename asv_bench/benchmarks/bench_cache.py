"""Query-embedding cache: hit vs miss, at the pool and for ``QueryCache`` alone.

The cache keeps the embedding of a query's features (rounded to 1e-3), so a
hit saves the mapper call only; the index scan and rerank run either way.
The seed report claimed "15% faster on repeated queries": compare
``PoolQueryCache.time_retrieve_soft`` for cache ``hit`` and ``off`` (every
query embedded again) at the same pool size.
"""

from __future__ import annotations

import numpy as np

from .common import PIPELINE_SHAPE, PIPELINE_SIZES, SEED, memo, smooth_tensors, tensor_pool


def _query(pool_tensors):
    import dreamjit as dj
    from dreamjit.kernels.spectral import describe_batch
    from dreamjit.kernels.thumbnail import thumbnail_batch

    t = pool_tensors[:1]
    spectral, chroma = describe_batch(t, np.empty((0, 0, 0, 0), np.float32), False)
    spatial = thumbnail_batch(t, np.empty((0, 0, 0, 0), np.float32), False, 4)
    return dj.Query(
        chroma=chroma[0] * 0.97, spectral=spectral[0], label=3, utility=0.6, spatial=spatial[0]
    )


class PoolQueryCache:
    """retrieve_soft(k=10) of one repeated query, with the cache on (hits) or off (misses)."""

    params = [PIPELINE_SIZES, ["hit", "off"]]
    param_names = ["n", "cache"]
    timeout = 300

    def setup(self, n, cache):
        self.pool, self.query = memo(("PoolQueryCache", n, cache), lambda: self._build(n, cache))

    @staticmethod
    def _build(n, cache):
        T = smooth_tensors(n, PIPELINE_SHAPE)
        pool = tensor_pool(T, query_cache_size=128 if cache == "hit" else 0, use_ann=False)
        query = _query(T)
        for _ in range(3):
            pool.retrieve_soft(query, k=10)
        return pool, query

    def time_retrieve_soft(self, n, cache):
        self.pool.retrieve_soft(self.query, k=10)

    def track_hit_rate(self, n, cache):
        for _ in range(10):
            self.pool.retrieve_soft(self.query, k=10)
        return float(self.pool.query_cache_stats()[2])

    track_hit_rate.unit = "fraction"


class RawQueryCache:
    """``QueryCache`` alone: key + hit, against key + miss + embed + put."""

    def setup(self):
        import dreamjit as dj
        from dreamjit.cache import QueryCache

        T = smooth_tensors(1, PIPELINE_SHAPE)
        q = _query(T)
        self.chroma = np.asarray(q.chroma, np.float32)
        self.spectral = np.asarray(q.spectral, np.float32)
        self.spatial = np.asarray(q.spatial, np.float32)
        self.mapper = dj.EmbeddingMapper(dim=64, seed=SEED, channels=PIPELINE_SHAPE[-1])
        self.QueryCache = QueryCache
        self.hot = QueryCache(128)
        self.cold = QueryCache(0)  # stores nothing: every get misses
        self.hot.put(self._key(), self._embed())
        self.time_hit()
        self.time_miss()

    def _key(self):
        return self.QueryCache.key(
            self.mapper.key, self.chroma, self.spectral, self.spatial, 3, 0.6
        )

    def _embed(self):
        return self.mapper.embed(
            self.chroma[None],
            self.spectral[None],
            np.array([3], np.int32),
            np.array([0.6]),
            spatial=self.spatial[None],
        )[0]

    def time_hit(self):
        self.hot.get(self._key())

    def time_miss(self):
        key = self._key()
        if self.cold.get(key) is None:
            self.cold.put(key, self._embed())

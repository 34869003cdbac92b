"""The full retrieval pipeline: query tensor -> features -> embedding -> index -> hybrid -> MMR.

A pool of smooth tensors (PIPELINE_SHAPE, mapper embeddings, labels and
utilities) queried with fresh tensors (cycled), query cache off, so every
call computes the query's chroma and spectral features, embeds them, scans
the exact index for ``max(4k, 32)`` candidates, and reranks (``retrieve_soft``)
or runs MMR over them (``retrieve_diverse``). ``time_retrieve_similar`` is
the hard (chroma cosine) path and ``time_retrieve_hybrid`` both merged.
"""

from __future__ import annotations

from .common import PIPELINE_SHAPE, PIPELINE_SIZES, cycler, memo, smooth_tensors, tensor_pool

N_QUERY_TENSORS = 16


class Pipeline:
    params = [PIPELINE_SIZES]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        import dreamjit as dj

        self.dj = dj
        self.pool, self.queries = memo(("Pipeline", n), lambda: self._build(n))

    def _build(self, n):
        T = smooth_tensors(n + N_QUERY_TENSORS, PIPELINE_SHAPE)
        self.pool = tensor_pool(T[:n], query_cache_size=0, use_ann=False)
        self.queries = cycler(T[n:])
        for _ in range(2):  # compile or load every kernel on the timed shapes
            self.time_retrieve_soft(n)
            self.time_retrieve_diverse(n)
            self.time_retrieve_diverse_fast(n)
            self.time_retrieve_similar(n)
            self.time_retrieve_hybrid(n)
        return self.pool, self.queries

    def time_retrieve_soft(self, n):
        self.pool.retrieve_soft(next(self.queries), k=10)

    def time_retrieve_diverse(self, n):
        self.pool.retrieve_diverse(next(self.queries), k=10)

    def time_retrieve_diverse_fast(self, n):
        self.pool.retrieve_diverse(next(self.queries), k=10, fast=True)

    def time_retrieve_similar(self, n):
        self.pool.retrieve_similar(next(self.queries), k=10)

    def time_retrieve_hybrid(self, n):
        self.pool.retrieve(next(self.queries), k=10, mode=self.dj.RetrievalMode.HYBRID)

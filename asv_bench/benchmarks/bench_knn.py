"""k-NN: the pool's exact and NN-descent paths next to numpy, faiss, pynndescent and hnswlib.

Data: unit rows of a 64-d Gaussian mixture (``common.unit_mixture``), top-10.
Pool benchmarks fill a pool with user embeddings and (1, 1, 3) tensors, so it
holds little besides the embeddings, and query with ``dj.Query(embedding=v)``.
Single-query benchmarks cycle through ``N_CYCLE_QUERIES`` queries. The batch
group times the pool's ``retrieve_soft_batch`` / ``retrieve_similar_batch``
(``N_BATCH_QUERIES`` queries per call) and the exact index's ``search_batch``
(the ``topk_dot_batch`` kernel) on its own; ``ExactPool.time_retrieve_soft_where_*``
times filtered single queries (a label matching 1%, 10%, 50% of the pool).

The ``*Clusters`` group (parameter: number of clusters) runs the same
comparison on ``CLUSTER_N`` rows of ``common.cluster_mixture`` (2e5 rows in
2000 clusters of ~100 and in 20000 clusters of ~10), where the k-NN graph
splits or nearly splits per cluster: recall is tracked, latency timed, the
peers tuned to recall@10 >= 0.95. Target: ``AnnClusters.track_recall_pool``
>= 0.95 and ``AnnClusters.time_index_search`` (tuned, ``track_index_setting``)
within 1.5x of ``HnswlibClusters.time_query`` (``scripts/measure_ann_clusters.py``
prints the same comparison in one interleaved run).

Targets (issue 4), all at n = 1e5:

* ``ExactPool.time_retrieve_soft`` <= numpy/2 (``NumpyBrute.time_query``),
  <= faiss/1.5 (``FaissFlat.time_query``, one thread), and
  <= 1.2 x ``Bandwidth.time_stream_1thread`` (the same bytes read once);
* ``ExactBatch.time_search_batch`` <= ``FaissBatch.time_search_batch`` / 1.2;
* ``AnnPool.time_retrieve_soft`` <= ``ExactPool.time_retrieve_soft`` / 10 with
  ``AnnPool.track_recall_index`` >= 0.95, and ``AnnPool.time_index_search``
  <= 1.1 x ``PynndescentRaw.time_query_matched`` (pynndescent at recall >= 0.95).
"""

from __future__ import annotations

import os
import time

import numpy as np

from .common import (
    BATCH_SIZES,
    CLUSTER_N,
    CLUSTER_SETS,
    DIM,
    EXACT_SIZES,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    KNN_SIZES,
    N_BATCH_QUERIES,
    N_CYCLE_QUERIES,
    N_RECALL_QUERIES,
    NN_NEIGHBORS,
    RECALL_TARGET,
    SEED,
    K,
    ann_pool,
    blas_one_thread,
    build_ann_graphs,
    build_cluster_graphs,
    cluster_mixture,
    cycler,
    embedding_pool,
    exact_truth,
    memo,
    numpy_topk,
    numpy_topk_batch,
    pool_ann_index,
    recall_at_k,
    require,
    require_ann,
    stream_sum,
    stream_sum_parallel,
    unit_mixture,
    unit_queries,
)


def _queries(m=N_CYCLE_QUERIES):
    import dreamjit as dj

    Q = unit_queries(max(m, N_CYCLE_QUERIES))
    return Q, cycler(Q[:m]), cycler(dj.Query(embedding=q) for q in Q[:m])


def _faiss_index(faiss, n):
    index = faiss.IndexFlatIP(DIM)
    index.add(unit_mixture(n))
    return index


# ============================================================================ exact: dreamjit


class ExactPool:
    """Exact top-10 through the pool (``use_ann=False``): public retrieval and the raw index."""

    params = [EXACT_SIZES]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.__dict__.update(memo(("ExactPool", n), lambda: self._build(n)))

    @staticmethod
    def _build(n):
        from dreamjit.kernels import cosine

        pool = embedding_pool(unit_mixture(n), use_ann=False)
        index = pool.indexes.exact  # the pool's ExactIndex
        store = pool.table.store
        cols = store.columns.get("embeddings_t")
        if cols is not None:  # the column-major copy the exact index scans
            scans = (
                lambda q: cosine.topk_dot_columns(cols, q, store.alive, 4 * K),
                lambda q: cosine.topk_dot_columns_parallel(cols, q, store.alive, 4 * K),
            )
        else:
            scans = (
                lambda q: cosine.topk_dot(store.embeddings, q, store.alive, 4 * K),
                lambda q: cosine.topk_dot(store.embeddings, q, store.alive, 4 * K),
            )
        _, vectors, queries = _queries()
        for _ in range(3):  # compile or load every kernel with the timed dtypes and shapes
            q = next(queries)
            pool.retrieve_soft(q, k=K)
            pool.retrieve_diverse(q, k=K)
            pool.retrieve_diverse(q, k=K, fast=True)
            index.search(next(vectors), K)
            scans[0](next(vectors))
            scans[1](next(vectors))
        return {
            "pool": pool,
            "index": index,
            "vectors": vectors,
            "queries": queries,
            "scan_serial": scans[0],
            "scan_parallel": scans[1],
        }

    def time_retrieve_soft(self, n):
        """pool.retrieve_soft: embedding -> exact index (40 candidates) -> hybrid rerank -> 10."""
        self.pool.retrieve_soft(next(self.queries), k=K)

    def time_index_search(self, n):
        """The exact index alone: top-10 slots by dot product over the live rows."""
        self.index.search(next(self.vectors), K)

    def time_scan_serial_k40(self, n):
        """The one-thread scan kernel retrieve_soft's 40 candidates need (no Python layer)."""
        self.scan_serial(next(self.vectors))

    def time_scan_parallel_k40(self, n):
        """The same scan split over every core (what the index uses from 65536 rows)."""
        self.scan_parallel(next(self.vectors))

    def time_retrieve_diverse(self, n):
        """pool.retrieve_diverse: exact candidates + standard MMR."""
        self.pool.retrieve_diverse(next(self.queries), k=K)

    def time_retrieve_diverse_fast(self, n):
        """pool.retrieve_diverse(fast=True): exact candidates + approximate MMR."""
        self.pool.retrieve_diverse(next(self.queries), k=K, fast=True)

    def time_retrieve_soft_where_1pct(self, n):
        """retrieve_soft with ``where=`` a label held by 1% of the entries (a slot scan)."""
        self.pool.retrieve_soft(next(self.queries), k=K, where=0)

    def time_retrieve_soft_where_10pct(self, n):
        """retrieve_soft with ``where=`` labels held by 10% of the entries (a slot scan)."""
        self.pool.retrieve_soft(next(self.queries), k=K, where=list(range(10)))

    def time_retrieve_soft_where_50pct(self, n):
        """retrieve_soft with ``where=`` labels held by 50% of the entries (masked scan)."""
        self.pool.retrieve_soft(next(self.queries), k=K, where=list(range(50)))


class Bandwidth:
    """The memory-bandwidth bound: read the bytes of ``n`` x 64 float32 embeddings once.

    ``time_stream_1thread`` bounds a one-thread scan (``retrieve_soft`` below
    the index's parallel threshold); ``time_stream_2threads`` bounds a scan on
    every core. Up to ~1e5 rows (25.6 MB) the data fits this machine's 32 MB
    L3, so the "bandwidth" there is the cache's.
    """

    params = [EXACT_SIZES]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.flat = memo(("Bandwidth", n), lambda: unit_mixture(n).reshape(-1))
        stream_sum(self.flat)
        stream_sum_parallel(self.flat)

    def time_stream_1thread(self, n):
        stream_sum(self.flat)

    def time_stream_2threads(self, n):
        stream_sum_parallel(self.flat)


class ExactBatch:
    """Exact top-10 of 1000 queries: the pool's ``retrieve_soft_batch`` and the exact
    index's ``search_batch`` (parallel over queries). Targets: ``time_retrieve_soft_batch``
    <= ``FaissBatch.time_search_batch`` (1 thread) / 2 at 1e5, and per query <= 1/5 of
    ``ExactPool.time_retrieve_soft``."""

    params = [BATCH_SIZES]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.pool = memo(("ExactBatch", n), lambda: embedding_pool(unit_mixture(n), use_ann=False))
        self.index = self.pool.indexes.exact
        self.Q = unit_queries(N_BATCH_QUERIES)
        self.index.search_batch(self.Q, K)
        self.pool.retrieve_soft_batch(self.Q, k=K)

    def time_search_batch(self, n):
        self.index.search_batch(self.Q, K)

    def time_retrieve_soft_batch(self, n):
        """pool.retrieve_soft_batch: 1000 queries, 40 candidates each, reranked to 10."""
        self.pool.retrieve_soft_batch(self.Q, k=K)

    def time_retrieve_soft_loop(self, n):
        """The same 1000 queries as 1000 ``retrieve_soft`` calls."""
        for q in self.Q:
            self.pool.retrieve_soft(q, k=K)


# ============================================================================ exact: peers


class NumpyBrute:
    """numpy ``X @ q`` + argpartition + sort of the top 10 (BLAS with its default threads)."""

    params = [EXACT_SIZES]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.X = memo(("X", n), lambda: unit_mixture(n))
        self.vectors = memo(("vectors",), lambda: _queries()[1])
        numpy_topk(self.X, next(self.vectors))

    def time_query(self, n):
        numpy_topk(self.X, next(self.vectors))


class NumpyBruteOneThread(NumpyBrute):
    """:class:`NumpyBrute` with BLAS limited to one thread (threadpoolctl)."""

    def setup(self, n):
        self._limit = blas_one_thread()
        super().setup(n)

    def teardown(self, n):
        self._limit.restore_original_limits()


class NumpyBatch:
    """numpy ``Q @ X.T`` + argpartition + sort per query, 1000 queries."""

    params = [BATCH_SIZES]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.X = memo(("X", n), lambda: unit_mixture(n))
        self.Q = unit_queries(N_BATCH_QUERIES)
        numpy_topk_batch(self.X, self.Q[:2])

    def time_search_batch(self, n):
        numpy_topk_batch(self.X, self.Q)


class FaissFlat:
    """faiss ``IndexFlatIP``, one query, one thread (``omp_set_num_threads(1)``)."""

    params = [EXACT_SIZES]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        faiss = require("faiss")
        faiss.omp_set_num_threads(1)
        self.index = memo(("faiss", n), lambda: _faiss_index(faiss, n))
        self.vectors = memo(
            ("vectors2d",), lambda: cycler(q[None, :].copy() for q in unit_queries(N_CYCLE_QUERIES))
        )
        self.index.search(next(self.vectors), K)

    def time_query(self, n):
        self.index.search(next(self.vectors), K)


class FaissBatch:
    """faiss ``IndexFlatIP``, 1000 queries, with 1 thread and with every core."""

    params = [BATCH_SIZES, [1, os.cpu_count() or 1]]
    param_names = ["n", "threads"]
    timeout = 300

    def setup(self, n, threads):
        faiss = require("faiss")
        faiss.omp_set_num_threads(threads)
        self.index = memo(("faiss", n), lambda: _faiss_index(faiss, n))
        self.Q = unit_queries(N_BATCH_QUERIES)
        self.index.search(self.Q[:2], K)

    def time_search_batch(self, n, threads):
        self.index.search(self.Q, K)


# ============================================================================ ANN: dreamjit


class AnnPool:
    """The pool's NN-descent path (graphs built once in ``setup_cache``).

    Below the index's minimum build size (256 entries) there is no graph and
    the "ANN" pool scans exactly.
    """

    params = [KNN_SIZES]
    param_names = ["n"]
    timeout = 600

    def setup_cache(self):
        try:
            require_ann()
        except NotImplementedError:
            return None
        return build_ann_graphs(KNN_SIZES)

    setup_cache.timeout = 3600

    def setup(self, graphs, n):
        require_ann()
        if graphs is None:
            raise NotImplementedError("ANN graphs were not built")
        self.__dict__.update(memo(("AnnPool", n), lambda: self._build(graphs, n)))

    @staticmethod
    def _build(graphs, n):
        X = unit_mixture(n)
        pool = ann_pool(X, graphs.get(n))
        ann = pool_ann_index(pool)
        Q, vectors, queries = _queries(N_RECALL_QUERIES)
        for _ in range(3):
            q = next(queries)
            pool.retrieve_soft(q, k=K)
            pool.retrieve_diverse(q, k=K)
            pool.retrieve_diverse(q, k=K, fast=True)
            ann.search(next(vectors), K)
        return {"X": X, "pool": pool, "ann": ann, "Q": Q, "vectors": vectors, "queries": queries}

    def time_retrieve_soft(self, graphs, n):
        """pool.retrieve_soft through the NN-descent index (40 candidates) + hybrid rerank."""
        self.pool.retrieve_soft(next(self.queries), k=K)

    def time_index_search(self, graphs, n):
        """The NN-descent index alone, top-10 (compare with raw pynndescent's query)."""
        self.ann.search(next(self.vectors), K)

    def time_retrieve_diverse(self, graphs, n):
        self.pool.retrieve_diverse(next(self.queries), k=K)

    def time_retrieve_diverse_fast(self, graphs, n):
        self.pool.retrieve_diverse(next(self.queries), k=K, fast=True)

    def track_recall_index(self, graphs, n):
        """recall@10 of the index's top-10 against the exact top-10 (slot i is row i)."""
        found = [self.ann.search(q, K)[0] for q in self.Q]
        return recall_at_k(found, exact_truth(self.X, self.Q))

    track_recall_index.unit = "recall@10"

    def track_recall_soft(self, graphs, n):
        """Overlap of ANN retrieve_soft's 10 ids with the exact pool's retrieve_soft ids."""
        import dreamjit as dj

        exact = embedding_pool(self.X, use_ann=False)
        qs = [dj.Query(embedding=q) for q in self.Q]
        return recall_at_k(
            [self.pool.retrieve_soft(q, k=K).ids for q in qs],
            [exact.retrieve_soft(q, k=K).ids for q in qs],
        )

    track_recall_soft.unit = "recall@10"

    def track_build_seconds(self, graphs, n):
        """Seconds the pool's NN-descent build took (worker already compiled); 0: no graph."""
        g = graphs.get(n)
        return float(g["build_seconds"]) if g is not None and "build_seconds" in g else 0.0

    track_build_seconds.unit = "seconds"


class AnnQueryDuringBuild:
    """The claim "no query waits for an ANN build": retrieve_soft latency while the pool
    builds its NN-descent graph in the background (fresh build worker, so the
    build includes pynndescent's compile). Returns the 99th percentile in ms;
    compare with ``ExactPool.time_retrieve_soft`` at the same n."""

    timeout = 900
    n = KNN_SIZES[-1]

    def setup(self):
        require_ann()
        self.pool = embedding_pool(unit_mixture(self.n), use_ann=True, ann_threshold=self.n + 1)
        self.pool.config = self.pool.config.replace(ann_threshold=1)
        _, _, self.queries = _queries()
        for _ in range(3):
            self.pool.retrieve_soft(next(self.queries), k=K)

    def track_query_p99_ms_during_build(self):
        pool = self.pool
        pool.rebuild_index(block=False)
        lat = []
        deadline = time.perf_counter() + 600
        while not pool.stats()["ann_ready"] and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            pool.retrieve_soft(next(self.queries), k=K)
            lat.append(time.perf_counter() - t0)
            time.sleep(0.001)
        return float(np.percentile(lat, 99) * 1e3) if lat else 0.0

    track_query_p99_ms_during_build.unit = "ms"


# ============================================================================ ANN: peers


def _calibrate(query_fn, knobs, Q, truth):
    """The first knob value whose recall@10 reaches RECALL_TARGET (else the last)."""
    recalls = {}
    for knob in knobs:
        recalls[knob] = recall_at_k(query_fn(Q, knob), truth)
        if recalls[knob] >= RECALL_TARGET:
            return knob, recalls
    return knobs[-1], recalls


class PynndescentRaw:
    """Raw pynndescent (``NNDescent(...).query``) on the same data, one query per call.

    ``*_default`` uses pynndescent's default ``epsilon=0.1``; ``*_matched``
    the smallest epsilon (of a grid) with recall@10 >= 0.95, chosen in
    ``setup_cache``, so speed is compared at matched recall.
    """

    params = [KNN_SIZES]
    param_names = ["n"]
    timeout = 600
    EPSILONS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5)

    def setup_cache(self):
        try:
            require_ann()
            pynndescent = require("pynndescent")
        except NotImplementedError:
            return None
        out = {}
        Q = unit_queries(N_RECALL_QUERIES)
        for n in KNN_SIZES:
            X = unit_mixture(n)
            t0 = time.perf_counter()
            nnd = pynndescent.NNDescent(
                X,
                metric="dot",
                n_neighbors=min(NN_NEIGHBORS, n - 1),
                random_state=SEED,
                low_memory=True,
            )
            nnd.prepare()
            seconds = time.perf_counter() - t0
            truth = exact_truth(X, Q)
            eps, recalls = _calibrate(
                lambda Q_, e, nnd=nnd: nnd.query(Q_, K, epsilon=e)[0], self.EPSILONS, Q, truth
            )
            default = recalls.get(0.1)
            out[n] = {
                "index": nnd,
                "epsilon": eps,
                "recall": recalls[eps],
                "recall_default": default,
                "build_seconds": seconds,
            }
        return out

    setup_cache.timeout = 3600

    def setup(self, cache, n):
        require_ann()
        require("pynndescent")
        if cache is None:
            raise NotImplementedError("pynndescent indexes were not built")
        c = cache[n]
        self.nnd, self.eps = c["index"], c["epsilon"]
        self.vectors = memo(
            ("vectors2d",), lambda: cycler(q[None, :].copy() for q in unit_queries(N_CYCLE_QUERIES))
        )
        for _ in range(3):  # compiles pynndescent's search in this process (once)
            self.nnd.query(next(self.vectors), K, epsilon=self.eps)
            self.nnd.query(next(self.vectors), K)

    def time_query_matched(self, cache, n):
        self.nnd.query(next(self.vectors), K, epsilon=self.eps)

    def time_query_default(self, cache, n):
        self.nnd.query(next(self.vectors), K)

    def track_recall_matched(self, cache, n):
        return float(cache[n]["recall"])

    track_recall_matched.unit = "recall@10"

    def track_recall_default(self, cache, n):
        return float(cache[n]["recall_default"])

    track_recall_default.unit = "recall@10"

    def track_epsilon_matched(self, cache, n):
        return float(self.eps)

    track_epsilon_matched.unit = "epsilon"

    def track_build_seconds(self, cache, n):
        """NNDescent(...) + prepare() (the first size includes pynndescent's compile)."""
        return float(cache[n]["build_seconds"])

    track_build_seconds.unit = "seconds"


class Hnswlib:
    """hnswlib (M=16, ef_construction=200, inner product), one query, one thread.

    ``ef`` is the smallest of a grid with recall@10 >= 0.95 (chosen in ``setup_cache``).
    """

    params = [KNN_SIZES]
    param_names = ["n"]
    timeout = 600
    EFS = (10, 16, 24, 32, 48, 64, 100, 150, 200, 300, 400)

    def setup_cache(self):
        try:
            require_ann()
            hnswlib = require("hnswlib")
        except NotImplementedError:
            return None
        out = {}
        Q = unit_queries(N_RECALL_QUERIES)
        for n in KNN_SIZES:
            X = unit_mixture(n)
            t0 = time.perf_counter()
            index = hnswlib.Index(space="ip", dim=DIM)
            index.init_index(
                max_elements=n, ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M, random_seed=SEED
            )
            index.add_items(X, np.arange(n))
            seconds = time.perf_counter() - t0
            truth = exact_truth(X, Q)

            def query(Q_, ef, index=index, n=n):
                index.set_ef(max(ef, K))
                return index.knn_query(Q_, k=min(K, n))[0]

            ef, recalls = _calibrate(query, self.EFS, Q, truth)
            out[n] = {"index": index, "ef": ef, "recall": recalls[ef], "build_seconds": seconds}
        return out

    setup_cache.timeout = 3600

    def setup(self, cache, n):
        require_ann()
        require("hnswlib")
        if cache is None:
            raise NotImplementedError("hnswlib indexes were not built")
        c = cache[n]
        self.index = c["index"]
        self.index.set_ef(max(c["ef"], K))
        self.index.set_num_threads(1)
        self.vectors = memo(
            ("vectors2d",), lambda: cycler(q[None, :].copy() for q in unit_queries(N_CYCLE_QUERIES))
        )
        self.k = min(K, n)
        self.index.knn_query(next(self.vectors), k=self.k)

    def time_query(self, cache, n):
        self.index.knn_query(next(self.vectors), k=self.k)

    def track_recall(self, cache, n):
        return float(cache[n]["recall"])

    track_recall.unit = "recall@10"

    def track_ef(self, cache, n):
        return float(cache[n]["ef"])

    track_ef.unit = "ef"


# ============================================================================ ANN: many clusters


def _cluster_data(c):
    return memo(
        ("clusters", c),
        lambda: (cluster_mixture(CLUSTER_N, c), cluster_mixture(N_RECALL_QUERIES, c, stream=2)),
    )


def _cluster_truth(c):
    return memo(("clusters truth", c), lambda: exact_truth(*_cluster_data(c)))


def _cluster_vectors(c, two_d=False):
    Q = _cluster_data(c)[1][:N_CYCLE_QUERIES]
    return cycler(q[None, :].copy() if two_d else q for q in Q)


class AnnClusters:
    """The pool's NN-descent index on many-cluster data (graphs built once in ``setup_cache``).

    ``time_index_search`` runs the index at the smallest (ef, epsilon) of a grid
    reaching recall@10 >= 0.95 (``track_index_setting``: 1000 * ef + 100 *
    epsilon); ``time_index_default`` and ``time_retrieve_soft`` at the pool's
    defaults (``retrieve_soft`` with similarity-only weights, 40 candidates).
    """

    params = [CLUSTER_SETS]
    param_names = ["clusters"]
    timeout = 900
    GRID = [(ef, eps) for eps in (0.0, 0.1, 0.15, 0.2, 0.3) for ef in (10, 16, 24, 40, 64)]

    def setup_cache(self):
        try:
            require_ann()
        except NotImplementedError:
            return None
        return build_cluster_graphs(CLUSTER_SETS, CLUSTER_N)

    setup_cache.timeout = 3600

    def setup(self, graphs, c):
        require_ann()
        if graphs is None or graphs.get(c) is None:
            raise NotImplementedError("ANN graphs were not built")
        self.__dict__.update(memo(("AnnClusters", c), lambda: self._build(graphs, c)))
        self.ann.min_ef, self.ann.overfetch, self.ann.epsilon = self.defaults

    @classmethod
    def _build(cls, graphs, c):
        import dreamjit as dj

        X, Q = _cluster_data(c)
        pool = ann_pool(X, graphs[c])
        ann = pool_ann_index(pool)
        truth = _cluster_truth(c)
        defaults = (ann.min_ef, ann.overfetch, ann.epsilon)
        tuned, recall = cls.GRID[-1], 0.0
        for ef, eps in cls.GRID:  # ordered by epsilon, then ef: roughly by cost
            ann.min_ef, ann.overfetch, ann.epsilon = ef, 1.0, eps
            recall = recall_at_k([ann.search(q, K)[0] for q in Q], truth)
            if recall >= RECALL_TARGET:
                tuned = (ef, eps)
                break
        ann.min_ef, ann.overfetch, ann.epsilon = defaults
        weights = dj.RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0)
        queries = cycler(dj.Query(embedding=q) for q in Q[:N_CYCLE_QUERIES])
        for _ in range(3):
            pool.retrieve_soft(next(queries), k=K, weights=weights)
        return {
            "X": X,
            "Q": Q,
            "pool": pool,
            "ann": ann,
            "truth": truth,
            "defaults": defaults,
            "tuned": tuned,
            "tuned_recall": recall,
            "weights": weights,
            "queries": queries,
            "vectors": _cluster_vectors(c),
        }

    def time_index_search(self, graphs, c):
        """``NNDescentIndex.search(q, 10)`` at the tuned (ef, epsilon)."""
        ef, eps = self.tuned
        self.ann.min_ef, self.ann.overfetch, self.ann.epsilon = ef, 1.0, eps
        self.ann.search(next(self.vectors), K)

    def time_index_default(self, graphs, c):
        """``NNDescentIndex.search(q, 10)`` at the pool's defaults."""
        self.ann.search(next(self.vectors), K)

    def time_retrieve_soft(self, graphs, c):
        self.pool.retrieve_soft(next(self.queries), k=K, weights=self.weights)

    def track_recall_index(self, graphs, c):
        """recall@10 of the index at the tuned setting."""
        return float(self.tuned_recall)

    track_recall_index.unit = "recall@10"

    def track_recall_index_default(self, graphs, c):
        return recall_at_k([self.ann.search(q, K)[0] for q in self.Q], self.truth)

    track_recall_index_default.unit = "recall@10"

    def track_recall_pool(self, graphs, c):
        """recall@10 of ``retrieve_soft`` (similarity only) against the exact top-10 (id = row)."""
        import dreamjit as dj

        got = [
            self.pool.retrieve_soft(dj.Query(embedding=q), k=K, weights=self.weights).ids
            for q in self.Q
        ]
        return recall_at_k(got, self.truth)

    track_recall_pool.unit = "recall@10"

    def track_index_setting(self, graphs, c):
        ef, eps = self.tuned
        return float(1000 * ef + 100 * eps)

    track_index_setting.unit = "1000 ef + 100 eps"

    def track_components(self, graphs, c):
        """Connected components of the build's k-NN search graph."""
        return float(graphs[c].get("n_components", 0))

    track_components.unit = "components"

    def track_build_seconds(self, graphs, c):
        return float(graphs[c].get("build_seconds", 0.0))

    track_build_seconds.unit = "seconds"


class HnswlibClusters:
    """hnswlib (M=16, ef_construction=200, inner product) on the many-cluster data, one
    thread, ``ef`` the smallest of a grid reaching recall@10 >= 0.95."""

    params = [CLUSTER_SETS]
    param_names = ["clusters"]
    timeout = 900
    EFS = (10, 16, 24, 32, 48, 64, 100, 150, 200, 300, 400, 600)

    def setup_cache(self):
        try:
            require_ann()
            hnswlib = require("hnswlib")
        except NotImplementedError:
            return None
        out = {}
        for c in CLUSTER_SETS:
            X, Q = _cluster_data(c)
            t0 = time.perf_counter()
            index = hnswlib.Index(space="ip", dim=DIM)
            index.init_index(
                max_elements=X.shape[0],
                ef_construction=HNSW_EF_CONSTRUCTION,
                M=HNSW_M,
                random_seed=SEED,
            )
            index.add_items(X, np.arange(X.shape[0]))
            seconds = time.perf_counter() - t0

            def query(Q_, ef, index=index):
                index.set_ef(max(ef, K))
                return index.knn_query(Q_, k=K)[0]

            ef, recalls = _calibrate(query, self.EFS, Q, _cluster_truth(c))
            out[c] = {"index": index, "ef": ef, "recall": recalls[ef], "build_seconds": seconds}
        return out

    setup_cache.timeout = 3600

    def setup(self, cache, c):
        require_ann()
        require("hnswlib")
        if cache is None:
            raise NotImplementedError("hnswlib indexes were not built")
        self.index = cache[c]["index"]
        self.index.set_ef(max(cache[c]["ef"], K))
        self.index.set_num_threads(1)
        self.vectors = _cluster_vectors(c, two_d=True)
        self.index.knn_query(next(self.vectors), k=K)

    def time_query(self, cache, c):
        self.index.knn_query(next(self.vectors), k=K)

    def track_recall(self, cache, c):
        return float(cache[c]["recall"])

    track_recall.unit = "recall@10"

    def track_ef(self, cache, c):
        return float(cache[c]["ef"])

    track_ef.unit = "ef"

    def track_build_seconds(self, cache, c):
        return float(cache[c]["build_seconds"])

    track_build_seconds.unit = "seconds"


class PynndescentClusters:
    """Raw pynndescent (``NNDescent.query``, epsilon tuned to recall@10 >= 0.95) on the
    many-cluster data, one query per call."""

    params = [CLUSTER_SETS]
    param_names = ["clusters"]
    timeout = 900
    EPSILONS = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5)

    def setup_cache(self):
        try:
            require_ann()
            pynndescent = require("pynndescent")
        except NotImplementedError:
            return None
        out = {}
        for c in CLUSTER_SETS:
            X, Q = _cluster_data(c)
            t0 = time.perf_counter()
            nnd = pynndescent.NNDescent(
                X, metric="dot", n_neighbors=NN_NEIGHBORS, random_state=SEED, low_memory=True
            )
            nnd.prepare()
            seconds = time.perf_counter() - t0
            eps, recalls = _calibrate(
                lambda Q_, e, nnd=nnd: nnd.query(Q_, K, epsilon=e)[0],
                self.EPSILONS,
                Q,
                _cluster_truth(c),
            )
            out[c] = {
                "index": nnd,
                "epsilon": eps,
                "recall": recalls[eps],
                "build_seconds": seconds,
            }
        return out

    setup_cache.timeout = 3600

    def setup(self, cache, c):
        require_ann()
        require("pynndescent")
        if cache is None:
            raise NotImplementedError("pynndescent indexes were not built")
        self.nnd, self.eps = cache[c]["index"], cache[c]["epsilon"]
        self.vectors = _cluster_vectors(c, two_d=True)
        for _ in range(3):
            self.nnd.query(next(self.vectors), K, epsilon=self.eps)

    def time_query(self, cache, c):
        self.nnd.query(next(self.vectors), K, epsilon=self.eps)

    def track_recall(self, cache, c):
        return float(cache[c]["recall"])

    track_recall.unit = "recall@10"

    def track_epsilon(self, cache, c):
        return float(self.eps)

    track_epsilon.unit = "epsilon"

    def track_build_seconds(self, cache, c):
        """NNDescent(...) + prepare() (the first set includes pynndescent's compile)."""
        return float(cache[c]["build_seconds"])

    track_build_seconds.unit = "seconds"


class NumpyClusters:
    """numpy exact ``X @ q`` + argpartition on the many-cluster data, BLAS on one thread."""

    params = [CLUSTER_SETS]
    param_names = ["clusters"]
    timeout = 300

    def setup(self, c):
        self._limit = blas_one_thread()
        self.X = _cluster_data(c)[0]
        self.vectors = _cluster_vectors(c)
        numpy_topk(self.X, next(self.vectors))

    def teardown(self, c):
        self._limit.restore_original_limits()

    def time_query(self, c):
        numpy_topk(self.X, next(self.vectors))

"""Shared sizes, seeds, data builders and peers of the asv benchmarks.

This is the one place for sizes. Environment switches:

``DREAMJIT_BENCH_TINY=1``
    Shrinks every size (``tests/test_benchmarks.py`` runs each benchmark once
    this way, so CI catches a broken benchmark without running the suite).
``DREAMJIT_BENCH_ANN=0|1``
    The ANN benchmarks (pynndescent builds, ~30 s of compilation in every
    fresh process) run unless 0; in tiny mode they are off unless 1.
``DREAMJIT_BENCH_SUBPROCESS=0|1``
    The startup benchmarks (fresh interpreters, one with an empty numba
    cache) run unless 0; in tiny mode they are off unless 1.

Peers are imported inside ``setup`` through :func:`require`, which raises
``NotImplementedError`` (asv's "skip") when the peer is not installed.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
from numba import njit, prange


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value not in ("0", "false", "no")


TINY = _flag("DREAMJIT_BENCH_TINY", False)
ANN_ENABLED = _flag("DREAMJIT_BENCH_ANN", not TINY)
SUBPROCESS_ENABLED = _flag("DREAMJIT_BENCH_SUBPROCESS", not TINY)

# ----------------------------------------------------------------------------- sizes
SEED = 0
DIM = 64  # embedding length of every k-NN benchmark
K = 10  # top-k of every k-NN benchmark
N_CENTRES = 100  # Gaussian-mixture centres of the embedding data

#: pool sizes of the exact-vs-ANN groups (the seed suite's 100..5K, plus 1e4, 1e5)
KNN_SIZES = [100, 600] if TINY else [100, 500, 1_000, 5_000, 10_000, 100_000]
#: sizes for the exact path only
EXACT_ONLY_SIZES = [2_000] if TINY else [1_000_000]
EXACT_SIZES = KNN_SIZES + EXACT_ONLY_SIZES
#: pool sizes of the batch-of-queries group
BATCH_SIZES = [600] if TINY else [10_000, 100_000]
N_BATCH_QUERIES = 16 if TINY else 1_000
#: queries the single-query benchmarks cycle through, and the recall queries
N_CYCLE_QUERIES = 8 if TINY else 64
N_RECALL_QUERIES = 20 if TINY else 1_000
RECALL_TARGET = 0.95

#: MMR: k picks of MMR_CANDIDATES candidates
MMR_CANDIDATES = 60 if TINY else 1_000
MMR_KS = [5] if TINY else [10, 20, 50]
MMR_LAMBDA = 0.5

#: tensors of the spectral, add and budget groups (the issue's 32x32x4x3)
TENSOR_SHAPE = (8, 8, 2, 3) if TINY else (32, 32, 4, 3)
SPECTRAL_BATCH = 8 if TINY else 1_000
ADD_BATCH = 8 if TINY else 1_000
#: entries a pool holds in the add group (steady state: every batch evicts as many)
ADD_POOL_ENTRIES = 16 if TINY else 4_000
EMBED_BATCH = 8 if TINY else 1_000

#: pipeline and cache groups: pools of smooth tensors of PIPELINE_SHAPE
PIPELINE_SHAPE = (8, 8, 1, 3) if TINY else (16, 16, 2, 3)
PIPELINE_SIZES = [50] if TINY else [1_000, 10_000]

#: budget group: a full pool of BUDGET_ENTRIES tensors, adds evict
BUDGET_ENTRIES = 20 if TINY else 2_000
BUDGET_BATCH = 4 if TINY else 100
#: peakmem group: fill a pool of this many tensors of TENSOR_SHAPE
PEAKMEM_ENTRIES = 16 if TINY else 2_000

#: many-cluster ANN group: CLUSTER_N rows in each of CLUSTER_SETS clusters (``cluster_mixture``)
CLUSTER_N = 2_000 if TINY else 200_000
CLUSTER_SETS = [20, 200] if TINY else [2_000, 20_000]

#: NN-descent settings shared by the pool's index and the raw pynndescent peer
NN_NEIGHBORS = 30
#: hnswlib build settings (the seed report's M=16, ef_construction=200)
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200


# ----------------------------------------------------------------------------- peers
def require(module: str):
    """Import ``module`` or raise NotImplementedError (asv skips the benchmark)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotImplementedError(f"{module} is not installed ({exc})") from None


def require_ann():
    if not ANN_ENABLED:
        raise NotImplementedError("ANN benchmarks off (DREAMJIT_BENCH_ANN=1 enables them)")


def require_subprocess():
    if not SUBPROCESS_ENABLED:
        raise NotImplementedError(
            "startup benchmarks off (DREAMJIT_BENCH_SUBPROCESS=1 enables them)"
        )


def blas_one_thread():
    """A threadpoolctl context limiting BLAS to one thread (NotImplementedError if missing)."""
    threadpoolctl = require("threadpoolctl")
    return threadpoolctl.threadpool_limits(1, user_api="blas")


# ----------------------------------------------------------------------------- memo
# asv (asv_runner >= 0.3) re-runs ``setup`` before every timed sample when a
# benchmark has one, so setups fetch their (deterministic) state from this
# per-process memo: the first call builds it, later ones are a dict lookup.
# asv runs each benchmark in its own process, so nothing leaks between them.
_MEMO: dict = {}


def memo(key, build):
    """``build()`` once per process and ``key``; the same object afterwards."""
    try:
        return _MEMO[key]
    except KeyError:
        value = _MEMO[key] = build()
        return value


def forget(prefix=None) -> None:
    """Drop memoised state (all of it, or keys whose first item is ``prefix``)."""
    for key in list(_MEMO):
        if prefix is None or (isinstance(key, tuple) and key and key[0] == prefix):
            del _MEMO[key]


# ----------------------------------------------------------------------------- data
def unit_mixture(
    n: int, d: int = DIM, seed: int = SEED, stream: int = 1, chunk: int = 100_000
) -> np.ndarray:
    """``n`` unit float32 rows of a Gaussian mixture (N_CENTRES centres ~ N(0, I_d), unit noise).

    Generated in chunks of ``chunk`` rows, each from its own seeded stream, so
    memory stays at the float32 result plus one chunk, and the data of a
    smaller ``n`` is a prefix of a larger one. ``stream`` separates data from
    queries.
    """
    centres = np.random.default_rng(seed).normal(size=(N_CENTRES, d))
    out = np.empty((n, d), dtype=np.float32)
    for c, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        rng = np.random.default_rng([seed, stream, c])
        x = centres[rng.integers(0, N_CENTRES, stop - start)]
        x += rng.normal(size=x.shape)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:stop] = x
    return out


def cluster_mixture(
    n: int,
    n_clusters: int,
    d: int = DIM,
    seed: int = SEED,
    stream: int = 1,
    noise: float = 1.0,
    chunk: int = 100_000,
) -> np.ndarray:
    """``n`` unit float32 rows of a mixture of ``n_clusters`` Gaussian clusters.

    Centres ~ N(0, I_d) (drawn from ``seed`` alone, so every ``stream`` shares
    them); each row is a uniformly chosen centre + N(0, noise^2 I_d), then
    L2-normalised: clusters of ~``n / n_clusters`` rows at cosine ~0.5 within
    and ~0 across. ``stream`` separates data (1) from queries (2). Chunked like
    :func:`unit_mixture` (a smaller ``n`` is a prefix of a larger one).
    With ``n_clusters`` larger than the NN-descent ``n_neighbors``' reach the
    k-NN graph splits into many components (the "many clusters" sets).
    """
    centres = np.random.default_rng([seed, n_clusters]).normal(size=(n_clusters, d))
    out = np.empty((n, d), dtype=np.float32)
    for c, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        rng = np.random.default_rng([seed, n_clusters, stream, c])
        x = centres[rng.integers(0, n_clusters, stop - start)]
        x += noise * rng.normal(size=x.shape)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:stop] = x
    return out


def unit_queries(m: int, d: int = DIM, seed: int = SEED) -> np.ndarray:
    """``m`` query rows from the same mixture as :func:`unit_mixture` (another stream)."""
    return unit_mixture(m, d, seed, stream=2)


def cycler(rows):
    """An endless iterator over ``rows`` (single-query benchmarks cycle through queries)."""
    return itertools.cycle(list(rows))


def smooth_tensors(n: int, shape=TENSOR_SHAPE, seed: int = SEED) -> np.ndarray:
    from dreamjit.synthetic import smooth_tensors as make

    return make(n, shape=shape, seed=seed)


def coherent_results(n: int) -> np.ndarray:
    """``(n, 3)`` results that pass any coherence threshold (adds never filter)."""
    res = np.zeros((n, 3))
    res[:, 0] = 1.0
    res[:, 1] = 1.0
    return res


def embedding_pool(
    X: np.ndarray,
    *,
    use_ann: bool = False,
    ann_threshold: int | None = None,
    chunk: int = 100_000,
    **config,
):
    """A pool of ``len(X)`` entries with the user embeddings ``X`` and tiny (1, 1, 3) tensors.

    Storage is dominated by the embeddings, as for a pool of real tensors
    queried by embedding. Entry ``i`` has label ``i % 100`` (filters by label
    select 1% of the pool per label). No memory budget, ``max_size = n``. Filled in
    chunks so a 1e6 pool never holds a second full copy of its inputs.
    """
    import dreamjit as dj

    n, d = X.shape
    cfg = dict(
        max_size=max(n, 1),
        memory_budget_mb=None,
        use_ann=use_ann,
        embedding_dim=d,
        tensor_shape=(1, 1, 3),
        seed=SEED,
        query_cache_size=0,
    )
    if ann_threshold is not None:
        cfg["ann_threshold"] = ann_threshold
    cfg.update(config)
    pool = dj.DreamPool(dj.PoolConfig(**cfg))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        tensors = np.full((m, 1, 1, 3), 0.5, dtype=np.float32)
        pool.add_batch(
            tensors,
            coherent_results(m),
            labels=np.arange(start, stop) % 100,  # for where= benchmarks: label i holds 1%
            embeddings=X[start:stop],
            only_coherent=False,
        )
    return pool


def tensor_pool(tensors: np.ndarray, labels=None, utilities=None, **config):
    """A pool of smooth tensors with mapper embeddings (the usual set-up)."""
    import dreamjit as dj

    n = tensors.shape[0]
    cfg = dict(max_size=max(n, 1), memory_budget_mb=None, seed=SEED)
    cfg.update(config)
    pool = dj.DreamPool(dj.PoolConfig(**cfg))
    if labels is None:
        labels = (np.arange(n) % 8).astype(np.int64)
    if utilities is None:
        utilities = np.random.default_rng(SEED).uniform(0.0, 1.0, n)
    pool.add_batch(
        tensors, coherent_results(n), labels=labels, utilities=utilities, only_coherent=False
    )
    return pool


# ----------------------------------------------------------------------------- ANN pools
# The pool's NN-descent graph takes ~50 s to build at 1e5 (30 s of it
# pynndescent compiling in the build worker), so the ANN groups build every
# graph once in ``setup_cache`` and each benchmark process puts the cached
# graph back into a fresh pool through the public export/import of the index
# (``NNDescentIndex.graph_arrays`` / ``from_graph_arrays``, with ``make_ann``
# and ``adopt_ann`` of ``pool.indexes``), as ``DreamPool.load`` does.


def export_ann_graph(pool):
    """The arrays of the pool's NN-descent graph (``NNDescentIndex.graph_arrays``), or None."""
    ann = pool.indexes.ann
    return None if ann is None else ann.graph_arrays()


def _install_graph(pool, graph) -> bool:
    ann = pool.indexes.make_ann()
    ann.from_graph_arrays({k: v for k, v in graph.items() if k != "build_seconds"})
    with pool.lock.write():
        pool.indexes.adopt_ann(ann)
    return pool.stats()["index"] == "ann"


def ann_pool(X: np.ndarray, graph=None, **config):
    """A pool over ``X`` that answers through its NN-descent index (when ``n`` allows a graph).

    Filled with ``ann_threshold > n`` (no build starts while adding), then
    switched to ``ann_threshold = 1`` and given ``graph`` (from
    :func:`export_ann_graph`), or built now (blocking) when ``graph`` is None.
    Below the index's minimum build size there is no graph: exact scans.
    """
    n = X.shape[0]
    pool = embedding_pool(X, use_ann=True, ann_threshold=n + 1, **config)
    pool.config = pool.config.replace(ann_threshold=1)
    if graph is not None and _install_graph(pool, graph):
        return pool
    pool.rebuild_index(block=True)
    return pool


def pool_ann_index(pool):
    """The pool's NN-descent index (None when there is none)."""
    return getattr(pool, "_ann", None)


def build_ann_graphs(sizes) -> dict:
    """``{n: graph arrays (+ "build_seconds") or None}`` of the pool's NN-descent
    index over ``unit_mixture(n)``; the build worker is warmed first, so build
    times exclude pynndescent's compile."""
    warm = ann_pool(unit_mixture(512))  # pynndescent compiles in the build worker, once
    del warm
    out = {}
    for n in sizes:
        pool = ann_pool(unit_mixture(n))
        graph = export_ann_graph(pool)
        if graph is not None:
            graph["build_seconds"] = (
                getattr(pool_ann_index(pool), "last_build_seconds", None) or 0.0
            )
        out[n] = graph
        del pool
    return out


def build_cluster_graphs(sets, n: int) -> dict:
    """``{n_clusters: graph arrays (+ "build_seconds") or None}`` of the pool's NN-descent
    index over ``cluster_mixture(n, n_clusters)``; the build worker is warmed first."""
    warm = ann_pool(cluster_mixture(512, 8))
    del warm
    out = {}
    for c in sets:
        pool = ann_pool(cluster_mixture(n, c))
        graph = export_ann_graph(pool)
        if graph is not None:
            seconds = getattr(pool_ann_index(pool), "last_build_seconds", None)
            graph["build_seconds"] = seconds or 0.0
        out[c] = graph
        del pool
    return out


def exact_truth(X: np.ndarray, Q: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k row numbers of ``X`` for each query (float64 scores, ties to the lower row)."""
    out = np.empty((Q.shape[0], min(k, X.shape[0])), dtype=np.int64)
    for s in range(0, Q.shape[0], 256):
        S = Q[s : s + 256].astype(np.float64) @ X.astype(np.float64).T
        out[s : s + 256] = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return out


def recall_at_k(found, truth) -> float:
    """Mean over queries of ``|found_i & truth_i| / |truth_i|``."""
    hits = [
        len(set(np.asarray(f).tolist()) & set(np.asarray(t).tolist())) / max(len(t), 1)
        for f, t in zip(found, truth)
    ]
    return float(np.mean(hits))


# ----------------------------------------------------------------------------- numpy peers
def numpy_topk(X: np.ndarray, q: np.ndarray, k: int = K):
    """numpy brute force: ``X @ q`` + argpartition + sort of the top k."""
    s = X @ q
    k = min(k, s.shape[0])
    part = np.argpartition(-s, k - 1)[:k] if k < s.shape[0] else np.arange(s.shape[0])
    return part[np.argsort(-s[part], kind="stable")]


def numpy_topk_batch(X: np.ndarray, Q: np.ndarray, k: int = K):
    """numpy brute force for a batch: ``X @ Q.T`` + argpartition + sort per query."""
    S = Q @ X.T
    k = min(k, S.shape[1])
    if k < S.shape[1]:
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(S.shape[1]), S.shape).copy()
    top = np.take_along_axis(S, part, axis=1)
    return np.take_along_axis(part, np.argsort(-top, axis=1, kind="stable"), axis=1)


def hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def radius_grid(rows: int, cols: int) -> np.ndarray:
    fy = np.fft.fftfreq(rows)
    fx = np.fft.fftfreq(cols)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / 0.5


FLAT_POWER = 1e-12


def spectral_batch_numpy(tensors) -> np.ndarray:
    """Vectorised numpy/scipy spectral features of a batch ``(n, rows, cols, layers, C)``.

    Copied from ``tests/reference_features.py`` (benchmarks never import the
    tests): one ``scipy.fft.fft2`` over the whole batch and array expressions
    throughout, no Python loop over tensors. Returns float32 ``(n, 6)`` like
    :func:`dreamjit.spectral_features_batch`.
    """
    import math

    import scipy.fft
    import scipy.special

    a = np.asarray(tensors, dtype=np.float32)
    if a.ndim == 4:
        a = a[:, :, :, None, :]
    n, rows, cols, layers, C = a.shape
    N = rows * cols
    moved = np.moveaxis(a, 4, 1)  # (n, C, rows, cols, layers) view
    x = np.ascontiguousarray(moved[..., 0], dtype=np.float64)
    for k in range(1, layers):
        x += moved[..., k]
    x /= layers
    x -= x.reshape(n, C, N).mean(axis=2)[:, :, None, None]
    x *= hann_periodic(rows)[:, None] * hann_periodic(cols)[None, :]
    F = scipy.fft.fft2(x)
    P = F.real**2
    P += F.imag**2
    P /= N
    P = P.reshape(n, C, N)
    total = P.sum(axis=2)
    flat = total < FLAT_POWER
    safe = np.where(flat, 1.0, total)
    entropy = scipy.special.entr(P).sum(axis=2) / safe + np.log(safe)
    entropy = entropy / math.log(N) if N > 1 else np.zeros_like(entropy)
    r = radius_grid(rows, cols).ravel()
    bands = np.stack([r < 1.0 / 3.0, (r >= 1.0 / 3.0) & (r < 2.0 / 3.0), r >= 2.0 / 3.0], axis=1)
    band = (P @ bands.astype(np.float64)) / safe[:, :, None]
    dominant = r[np.argmax(P, axis=2)]
    feats = np.concatenate(
        [entropy[:, :, None], band, dominant[:, :, None], (total / N)[:, :, None]], axis=2
    )
    feats[:, :, :5] = np.where(flat[:, :, None], 0.0, feats[:, :, :5])
    return feats.mean(axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- bandwidth
# The memory-bandwidth bound of a scan over the same bytes: a vectorised
# float32 sum (fastmath, so LLVM may reorder the adds) that does nothing but
# load every element once.


@njit(cache=True, nogil=True, fastmath=True)
def stream_sum(flat):
    s = np.float32(0.0)
    for i in range(flat.shape[0]):
        s += flat[i]
    return s


@njit(cache=True, nogil=True, fastmath=True, parallel=True)
def stream_sum_parallel(flat):
    """:func:`stream_sum` over 64 chunks spread over the threads (each chunk vectorises)."""
    n = flat.shape[0]
    part = np.zeros(64, dtype=np.float32)
    for c in prange(64):  # a call per chunk: inlined into the parfor the loop did not vectorise
        part[c] = stream_sum(flat[c * n // 64 : (c + 1) * n // 64])
    return part.sum()


# ----------------------------------------------------------------------------- timing
def median_seconds(fn, repeat: int = 5, number: int = 1) -> float:
    """Median over ``repeat`` rounds of the mean time of ``number`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return float(np.median(times))


# ----------------------------------------------------------------------------- a busy neighbour
class BusyNeighbour:
    """A child process spinning on one core, from ``start()`` (returns once it runs) to ``stop()``.

    The "busy neighbour" of issue 12: another process holding one of the machine's
    cores while a benchmark runs. ``start`` waits for the child's "ready" line (a
    signal, not a timer).
    """

    SPIN = "print('ready', flush=True)\nwhile True:\n    pass\n"

    def __init__(self):
        self.proc = None

    def start(self) -> BusyNeighbour:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SPIN], stdout=subprocess.PIPE, text=True
        )
        if self.proc.stdout is None or self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the busy neighbour did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> BusyNeighbour:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

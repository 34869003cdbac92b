"""Embedding indexes over the pool's column store: exact and NN-descent.

Both share one protocol; every index works in *slots* of the store (the pool
maps slots to ids) and always reads ``store.embeddings`` / ``store.alive``
afresh, because the store replaces those arrays when it grows.

``ExactIndex`` scans the live rows with the njit top-k kernel.

``NNDescentIndex`` holds a sealed search graph over a snapshot of the live
embeddings (built by pynndescent, imported lazily, off the query path), a
tombstone mask for graph rows removed since, and an exactly searched delta of
slots added since. The graph is walked by our own njit kernel
(:mod:`dreamjit.kernels.graph`), so queries never touch pynndescent: no query
compile in the main process.

After a build, :func:`search_structure` turns pynndescent's graph into what
the walk needs, so that no part of the graph can be missed: its connected
components (on clustered data the k-NN graph splits into one per cluster
once clusters are larger than ``n_neighbors``), bridging edges that join
them, and an *entry layer* of rows, scanned first by every query as one
contiguous int8 block: a representative of every component, a hop cover of
the graph, seeded random rows. The walk starts from the best entries.

Builds run in a persistent worker process by default (``builder="process"``):
in a thread, the first build of a process (pynndescent compiling, ~40 s)
delayed queries from the main thread by 250 ms at p99 (1e5 entries), while
the worker process kept p99 at 15 ms (``scripts/measure_ann.py gil``). The
worker is spawned on the first build, shared by every index of the process
(its compile is paid once), and talks over pipes: arrays go as raw bytes
with a JSON header, nothing is pickled.
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from .errors import DimensionMismatchError
from .kernels.cosine import (topk_dot, topk_dot_batch, topk_dot_columns,
                             topk_dot_columns_parallel)
from ._ann_structure import ENTRY_SHARE, _Graph, search_structure
from .kernels.graph import ann_search, ann_search_batch, knn_to_csr, relabel_csr, tombstones

__all__ = ["ExactIndex", "NNDescentIndex"]

logger = logging.getLogger("dreamjit")

_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_S = np.empty(0, dtype=np.float32)


def _as_query(q, store) -> np.ndarray:
    q = np.ascontiguousarray(q, dtype=np.float32)
    dim = store.embeddings.shape[1]
    if q.shape != (dim,):
        raise DimensionMismatchError("q", q, f"shape ({dim},)")
    return q


def _as_queries(Q, store) -> np.ndarray:
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    dim = store.embeddings.shape[1]
    if Q.ndim != 2 or Q.shape[1] != dim:
        raise DimensionMismatchError("Q", Q, f"shape (m, {dim})")
    return Q


#: rows from which the exact scan splits over threads. A single scan is short
#: (0.8 ms at 1e5 x 64 serially), and on a machine whose other core is busy a
#: statically scheduled parallel region waits for the descheduled thread:
#: 10-16 ms measured here at 1e5-4e5 rows, against 0.8-3.9 ms serial.
PARALLEL_SCAN_ROWS = 8_000_000  # at 1e6 too: 23.8 ms parallel vs 13.8 ms serial, measured under load


def exact_topk(store, q, mask, k):
    """Exact top-k over ``mask``: the column-major copy when the store keeps one."""
    cols = getattr(store, "columns", {}).get("embeddings_t")
    if cols is None:
        return topk_dot(store.embeddings, q, mask, k)
    if cols.shape[1] >= PARALLEL_SCAN_ROWS:
        return topk_dot_columns_parallel(cols, q, mask, k)
    return topk_dot_columns(cols, q, mask, k)


def _live_mask(store, mask):
    alive = store.alive
    if mask is None:
        return alive
    return np.logical_and(np.asarray(mask, dtype=np.bool_)[: alive.shape[0]], alive)


class ExactIndex:
    """Exact top-k by dot product over the store's live (and masked) rows."""

    def __init__(self, store):
        self._store = store

    def add(self, slots) -> None:
        """Nothing to do: the scan reads the store."""

    def remove(self, slots) -> None:
        """Nothing to do: the scan reads ``store.alive``."""

    def rebuild(self, block: bool = False) -> None:
        """Nothing to rebuild."""

    def maybe_rebuild(self) -> bool:
        return False

    def __len__(self) -> int:
        return int(np.count_nonzero(self._store.alive))

    @property
    def nbytes(self) -> int:
        return 0

    def bytes_bound(self, n_entries: int) -> int:
        return 0

    def search(self, q, k, mask=None):
        """``(slots int64, scores float32)`` of the best ``min(k, #candidates)``, best first."""
        k = int(k)
        if k <= 0:
            return _EMPTY_I.copy(), _EMPTY_S.copy()
        store = self._store
        return exact_topk(store, _as_query(q, store), _live_mask(store, mask), k)

    def search_batch(self, Q, k, mask=None):
        """Per query row: ``(slots (m, k), scores (m, k))`` padded with -1 / -inf."""
        store = self._store
        Q = _as_queries(Q, store)
        return topk_dot_batch(store.embeddings, Q, _live_mask(store, mask), max(int(k), 0))


# ----------------------------------------------------------------- graph building

def _build_csr(X, n_neighbors, seed, graph, max_degree, n_jobs):
    """pynndescent k-NN graph of the unit rows ``X`` -> (indptr int64, indices int32)."""
    import pynndescent  # lazy: ~2 s import, never on ``import dreamjit``

    nnd = pynndescent.NNDescent(X, metric="dot", n_neighbors=n_neighbors, random_state=seed,
                                n_jobs=n_jobs, low_memory=True)
    if graph == "knn":
        nbrs, dists = nnd.neighbor_graph
        return knn_to_csr(np.ascontiguousarray(nbrs), np.ascontiguousarray(dists), max_degree)
    nnd.prepare()
    sg = nnd._search_graph  # pruned, symmetrised; vertices in pynndescent's tree order
    return relabel_csr(sg.indptr.astype(np.int64), sg.indices.astype(np.int64),
                       np.asarray(nnd._vertex_order, dtype=np.int64), max_degree)


def _write_msg(fp, header: dict, arrays=()) -> None:
    """One JSON line (with each array's dtype and shape) then the raw array bytes."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = dict(header, arrays=[[a.dtype.str, list(a.shape)] for a in arrays])
    fp.write((json.dumps(header) + "\n").encode())
    for a in arrays:
        fp.write(memoryview(a).cast("B"))
    fp.flush()


def _read_exact(fp, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = fp.read(left)
        if not chunk:
            raise EOFError("build worker closed its pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_msg(fp):
    line = fp.readline()
    if not line:
        raise EOFError("build worker closed its pipe")
    header = json.loads(line)
    arrays = []
    for dtype, shape in header.pop("arrays"):
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise ValueError("object arrays are refused")
        count = int(np.prod(shape, dtype=np.int64))
        arrays.append(np.frombuffer(_read_exact(fp, count * dt.itemsize), dtype=dt)
                      .reshape(shape).copy())
    return header, arrays


def _worker_main() -> None:
    """Build loop of the worker process: one build request in, one graph out."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    inp = sys.stdin.buffer
    while True:
        try:
            req, (X,) = _read_msg(inp)
        except EOFError:
            return
        t0 = time.perf_counter()
        try:
            indptr, indices = _build_csr(X, req["n_neighbors"], req["seed"], req["graph"],
                                         req["max_degree"], req["n_jobs"])
        except Exception as exc:  # report, keep serving
            _write_msg(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        _write_msg(out, {"ok": True, "seconds": time.perf_counter() - t0}, (indptr, indices))


class _Worker:
    """The persistent build process (spawned on first use, shared by all indexes)."""

    _instance = None
    _guard = threading.Lock()
    closing = False  # set at interpreter exit: no thread fallback then

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.log = tempfile.TemporaryFile()
        code = "from dreamjit.index import _worker_main; _worker_main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env)
        self.lock = threading.Lock()
        logger.info("started NN-descent build worker (pid %d)", self.proc.pid)

    @classmethod
    def get(cls) -> "_Worker":
        with cls._guard:
            if cls._instance is None or cls._instance.proc.poll() is not None:
                cls._instance = cls()
            return cls._instance

    def build(self, X, request: dict):
        with self.lock:
            try:
                _write_msg(self.proc.stdin, request, (X,))
                header, arrays = _read_msg(self.proc.stdout)
            except (OSError, EOFError, ValueError) as exc:
                self.log.seek(0)
                tail = self.log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"build worker failed: {exc}; stderr: {tail}") from None
        if not header["ok"]:
            raise RuntimeError(header["error"])
        return arrays

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # pragma: no cover - best effort at exit
            self.proc.kill()

    @classmethod
    def shutdown(cls) -> None:
        cls.closing = True
        with cls._guard:
            if cls._instance is not None:
                cls._instance.close()
                cls._instance = None


def _forget_worker_in_child() -> None:
    _Worker._instance = None  # a forked child starts its own worker when it needs one


atexit.register(_Worker.shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_in_child)


# ------------------------------------------------------------------ NN-descent

class NNDescentIndex:
    """Approximate top-k: a sealed NN-descent graph + exact delta + tombstones.

    Parameters
    ----------
    store : ColumnStore-like
        Has ``embeddings`` (cap, d) float32 unit rows, ``alive``, ``ids``.
    n_neighbors : int
        k of the NN-descent graph; the search graph keeps at most
        ``round(1.5 * n_neighbors)`` edges per row.
    epsilon : float
        Walk slack: a candidate is expanded while its distance is within
        ``1 + epsilon`` of the ef-th best.
    overfetch : float
        The walk keeps ``ef = max(min_ef, ceil(overfetch * k))`` results.
    rebuild_fraction : float
        Rebuild once the delta or the tombstones exceed this share of the graph.
    n_pivots : int or None
        Rows of the entry layer (scanned first by every query): one
        representative per connected component, a cover of the graph, then
        seeded random rows. None: ``ceil(ENTRY_SQRT * sqrt(n))``, or the
        number of components if larger; never more than ``n // ENTRY_SHARE``.
    entry_hops : int or None
        Cover radius: every row is within this many edges of an entry. None:
        the smallest radius whose cover fits in ``n_pivots`` rows.
    n_seeds : int
        The walk starts from this many best-scoring entries.
    mask_share : float
        A mask holding less than this share of the live entries is served by
        an exact masked scan instead of a filtered walk.
    builder : {"process", "thread"}
        Where pynndescent runs: a persistent worker process, or a thread.
    exact_batch_below : int
        ``search_batch`` scans exactly below this many candidates: the batch
        scan vectorises across queries, so it wins up to a larger size than
        single queries do.
    """

    def __init__(self, store, n_neighbors=30, epsilon=0.15, overfetch=1.5,
                 rebuild_fraction=0.1, seed=0, background=True, n_pivots=None, min_ef=40,
                 mask_share=0.05, graph="search", builder="process", min_build=256,
                 exact_batch_below=30_000, n_jobs=None, entry_hops=None, n_seeds=8):
        self._store = store
        self.n_neighbors = int(n_neighbors)
        self.epsilon = float(epsilon)
        self.overfetch = float(overfetch)
        self.rebuild_fraction = float(rebuild_fraction)
        self.seed = int(seed)
        self.background = bool(background)
        self.n_pivots = None if n_pivots is None else int(n_pivots)
        self.entry_hops = None if entry_hops is None else int(entry_hops)
        self.n_seeds = int(n_seeds)
        self.min_ef = int(min_ef)
        self.mask_share = float(mask_share)
        self.exact_batch_below = int(exact_batch_below)
        self.graph_kind = graph
        self.builder = builder
        self.min_build = max(int(min_build), 2 * self.n_neighbors + 2, ENTRY_SHARE)
        self.n_jobs = n_jobs
        self.max_degree = int(round(1.5 * self.n_neighbors))
        self._state = (None, _EMPTY_I)  # (graph or None, delta slots): replaced atomically
        self._lock = threading.RLock()
        self._thread = None
        self._pending = None
        self._failures = 0  # consecutive failed builds; 3 stop automatic rebuilds
        self.last_build_seconds = None

    # ------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        self._poll()
        graph, delta = self._state
        if graph is None:
            return int(np.count_nonzero(self._store.alive))
        return graph.rows.shape[0] - graph.n_dead + delta.shape[0]

    @property
    def ready(self) -> bool:
        """Whether a graph is in use (else queries are exact scans)."""
        self._poll()
        return self._state[0] is not None

    @property
    def building(self) -> bool:
        self._poll()
        return self._thread is not None

    @property
    def n_tombstones(self) -> int:
        graph = self._state[0]
        return 0 if graph is None else graph.n_dead

    @property
    def n_delta(self) -> int:
        return self._state[1].shape[0]

    @property
    def graph_info(self) -> dict:
        """What the last swapped-in build made of its graph (empty without a graph).

        ``rows``, ``edges``, ``entries`` (rows of the entry layer),
        ``n_components`` (of the k-NN search graph), ``n_bridges`` (edges
        added to join them), ``hops`` (cover radius), ``covered`` (every row
        within ``hops`` of an entry), ``seconds`` (post-processing time).
        """
        self._poll()
        graph = self._state[0]
        if graph is None:
            return {}
        return dict(graph.info, rows=int(graph.rows.shape[0]),
                    edges=int(graph.indices.shape[0]), entries=int(graph.entries.shape[0]))

    @property
    def nbytes(self) -> int:
        """Exact bytes of the arrays this index holds (graph, rows, entry layer, masks, delta)."""
        self._poll()
        graph, delta = self._state
        arrays = (delta,) if graph is None else graph.arrays + (delta,)
        return int(sum(a.nbytes for a in arrays))

    def per_entry_bound(self) -> int:
        """Bytes per entry: twice a graph row (tombstones stay <= half the rows) + a delta slot.

        A row: its slot, indptr element and dead flag, ``max_degree`` edges
        plus two bridging ones (a spanning tree adds fewer than two per row),
        and its share of the entry layer (at most one row in ``ENTRY_SHARE``
        is an entry: an int64 row number and ``d`` int8).
        """
        d = self._store.embeddings.shape[1]
        entry = -(-(8 + d) // ENTRY_SHARE)
        row = 8 + 8 + 1 + 4 * (self.max_degree + 2) + entry
        return 2 * row + 8 + 8  # + delta slot, + indptr's extra element (n >= 1)

    def bytes_bound(self, n_entries: int) -> int:
        """An upper bound of :attr:`nbytes` while the index covers ``n_entries`` live entries.

        Holds because a graph with more than half its rows dead is dropped.
        """
        return max(int(n_entries), 0) * self.per_entry_bound()

    # ------------------------------------------------------------ updates
    def add(self, slots) -> None:
        """Slots just written (alive) in the store go to the delta."""
        self._poll()
        slots = np.unique(np.asarray(slots, dtype=np.int64).ravel())
        with self._lock:
            graph, delta = self._state
            if graph is None or slots.size == 0:
                return
            self._kill_rows(graph, slots)  # a rewritten slot holds a new id
            new = slots[~np.isin(slots, delta)]
            if new.size:
                self._state = (graph, np.concatenate([delta, new]))
            self._drop_if_stale(graph)

    def remove(self, slots) -> None:
        """Slots just marked dead in the store: tombstone graph rows, drop delta slots."""
        self._poll()
        slots = np.unique(np.asarray(slots, dtype=np.int64).ravel())
        with self._lock:
            graph, delta = self._state
            if graph is None or slots.size == 0:
                return
            self._kill_rows(graph, slots)
            keep = ~np.isin(delta, slots)
            self._state = (graph, delta if keep.all() else delta[keep])
            self._drop_if_stale(graph)

    def _drop_if_stale(self, graph) -> None:
        """Keep tombstones <= half the graph rows (what :meth:`bytes_bound` relies on)."""
        if 2 * graph.n_dead > graph.rows.shape[0]:
            logger.info("NN-descent graph more than half tombstones: dropped, exact scans "
                        "until the rebuild")
            self._state = (None, _EMPTY_I)

    @staticmethod
    def _kill_rows(graph, slots):
        pos = np.searchsorted(graph.rows, slots)
        pos = pos[pos < graph.rows.shape[0]]
        hit = pos[np.isin(graph.rows[pos], slots)]
        if hit.size:
            graph.dead[hit] = True
            graph.n_dead = int(np.count_nonzero(graph.dead))

    def needs_rebuild(self) -> bool:
        graph, delta = self._state
        if graph is None:
            return int(np.count_nonzero(self._store.alive)) >= self.min_build
        limit = self.rebuild_fraction * graph.rows.shape[0]
        return graph.n_dead > limit or delta.shape[0] > limit

    def maybe_rebuild(self) -> bool:
        """Start a rebuild if the delta or the tombstones passed ``rebuild_fraction``."""
        if self.building or self._failures >= 3 or not self.needs_rebuild():
            return False
        self.rebuild(block=not self.background)
        return True

    # ------------------------------------------------------------ building
    def rebuild(self, block: bool = False) -> None:
        """Build a new graph over the live entries (in the background unless ``block``)."""
        with self._lock:
            if self._thread is None:
                store = self._store
                slots = np.flatnonzero(store.alive)
                if slots.shape[0] < self.min_build:
                    logger.info("NN-descent: %d live entries, below %d: exact scans",
                                slots.shape[0], self.min_build)
                    return
                snap = (slots, store.ids[slots].copy(),
                        np.ascontiguousarray(store.embeddings[slots]))
                self._thread = threading.Thread(target=self._run_build, args=(snap,),
                                                name="dreamjit-nndescent", daemon=True)
                self._thread.start()
        if block or not self.background:
            self.wait()

    def _run_build(self, snap) -> None:
        slots, ids, X = snap
        t0 = time.perf_counter()
        request = {"n_neighbors": self.n_neighbors, "seed": self.seed, "graph": self.graph_kind,
                   "max_degree": self.max_degree, "n_jobs": self.n_jobs}
        try:
            indptr = None
            if self.builder == "process":
                try:
                    indptr, indices = _Worker.get().build(X, request)
                except RuntimeError as exc:
                    if _Worker.closing:
                        raise
                    logger.warning("NN-descent build worker failed (%s): building in a thread",
                                   exc)
            if indptr is None:
                indptr, indices = _build_csr(X, self.n_neighbors, self.seed, self.graph_kind,
                                             self.max_degree, self.n_jobs)
            n = slots.shape[0]
            struct = search_structure(X, indptr, indices, seed=self.seed,
                                      max_entries=self.n_pivots, hops=self.entry_hops)
            payload = (slots, ids, struct)
        except BaseException as exc:  # never leave ``building`` stuck
            logger.warning("NN-descent build of %d entries failed: %s", slots.shape[0], exc)
            self._failures += 1
            self._pending = ("failed", None)
            return
        self._failures = 0
        self.last_build_seconds = time.perf_counter() - t0
        logger.info("NN-descent graph of %d entries built in %.1f s (%d edges, %d entry rows, "
                    "%d components)", n, self.last_build_seconds, struct["indices"].shape[0],
                    struct["entries"].shape[0], struct["n_components"])
        self._pending = ("ok", payload)

    def _poll(self) -> None:
        """Install a finished build (in the caller's thread, so the store is read consistently)."""
        if self._pending is None:
            return
        with self._lock:
            if self._pending is None:
                return
            status, payload = self._pending
            self._pending = None
            self._thread = None
            if status != "ok":
                return
            slots, ids, struct = payload
            store = self._store
            alive = store.alive
            dead = tombstones(slots, ids, alive, store.ids)
            live = np.flatnonzero(alive)
            delta = np.setdiff1d(live, slots[~dead], assume_unique=True)
            graph = _Graph(slots, struct["indptr"], struct["indices"], struct["entries"],
                           struct["block"], dead, struct["n_components"],
                           {key: value for key, value in struct.items()
                            if not isinstance(value, np.ndarray)})
            if 2 * graph.n_dead > slots.shape[0]:
                logger.info("new NN-descent graph already more than half stale: not used")
                self._state = (None, _EMPTY_I)
                return
            self._state = (graph, delta.astype(np.int64))
            logger.debug("NN-descent graph swapped in: %d rows, %d tombstones, %d delta",
                         slots.shape[0], graph.n_dead, delta.shape[0])

    def wait(self, timeout=None) -> bool:
        """Wait for a running build and swap it in; False if still building after ``timeout``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self._poll()
        return True

    # ------------------------------------------------------------ queries
    def _ef(self, k: int) -> int:
        return max(self.min_ef, math.ceil(self.overfetch * k), k)

    def search(self, q, k, mask=None):
        """``(slots int64, scores float32)``: the best ``min(k, #candidates)``, best first.

        ``mask`` (cap,) bool restricts the candidates (intersected with
        ``alive``). Always returns ``min(k, #masked live)`` hits.
        """
        k = int(k)
        self._poll()
        store = self._store
        if k <= 0:
            return _EMPTY_I.copy(), _EMPTY_S.copy()
        q = _as_query(q, store)
        graph, delta = self._state  # one consistent snapshot of the state
        if graph is None:
            return exact_topk(store, q, _live_mask(store, mask), k)
        n_live = graph.rows.shape[0] - graph.n_dead + delta.shape[0]
        if mask is None:
            m, n_cand = store.alive, n_live
        else:
            m = _live_mask(store, mask)
            n_cand = int(np.count_nonzero(m))
        if k >= n_cand or n_cand < self.mask_share * n_live:
            return exact_topk(store, q, m, k)
        idx, sc = ann_search(store.embeddings, graph.rows, graph.indptr, graph.indices,
                             graph.dead, m, graph.entries, graph.block, delta, q, k, self._ef(k),
                             self.epsilon, self.n_seeds)
        if idx.shape[0] < k:  # the walk found too few masked rows: exact
            return exact_topk(store, q, m, k)
        return idx, sc

    def search_batch(self, Q, k, mask=None):
        """Per query row: ``(slots (m, k), scores (m, k))`` padded with -1 / -inf."""
        k = max(int(k), 0)
        self._poll()
        store = self._store
        Q = _as_queries(Q, store)
        m = _live_mask(store, mask)
        graph, delta = self._state
        n_live = len(self)
        n_cand = n_live if mask is None else int(np.count_nonzero(m))
        if (graph is None or k == 0 or k >= n_cand or n_cand < self.mask_share * n_live
                or n_cand < self.exact_batch_below):
            return topk_dot_batch(store.embeddings, Q, m, k)
        idx, sc, counts = ann_search_batch(store.embeddings, graph.rows, graph.indptr,
                                           graph.indices, graph.dead, m, graph.entries,
                                           graph.block, delta, Q, k, self._ef(k), self.epsilon,
                                           self.n_seeds)
        for t in np.flatnonzero(counts < k):
            i, s = topk_dot(store.embeddings, Q[t], m, k)
            idx[t, : i.shape[0]] = i
            sc[t, : s.shape[0]] = s
        return idx, sc

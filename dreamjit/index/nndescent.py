"""The NN-descent index: a sealed search graph, an exact delta and tombstones
(see :mod:`dreamjit.index`)."""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from typing import Any

import numpy as np

from .._rwlock import after_fork
from ..errors import IndexCorruptedError, InvalidParameterError
from ..kernels.cosine import topk_dot, topk_dot_batch
from ..kernels.entry_layer import remap_entries
from ..kernels.graph import (
    ann_search,
    ann_search_batch,
    graph_update,
    quantize_block,
    relabel_csr,
    tombstones,
)
from . import worker as _worker
from .calibrate import (
    CALIBRATION_K,
    CALIBRATION_RECALL,
    DEFAULT_BEAM,
    calibrate_beam,
    check_calibration,
    saved_calibration,
)
from .exact import _EMPTY_I, _EMPTY_S, _as_queries, _as_query, _live_mask, exact_topk
from .structure import ENTRY_SHARE, _Graph, search_structure
from .worker import BuildTimeout, BuildUnwanted

__all__ = ["NNDescentIndex"]

logger = logging.getLogger("dreamjit")

#: a delta holding more than this share of the live entries makes a graph query
#: (walk + row-by-row delta scan) slower than one exact column scan of the pool,
#: so queries scan exactly until the next graph lands. Measured here (graph of
#: 5e4, d=64, k=32): graph/exact time 0.8-1.1 with the delta at 8-33 % of the
#: live entries, 2.5 at 50 %, 1.1-1.3 at 67-75 % (scripts/measure_rebuild.py).
DELTA_EXACT_SHARE = 0.25

#: a wide walk (beam ``ef`` of at least WALK_EXACT_MIN_EF) over fewer than
#: ``ef * WALK_EF_SHARE`` candidates scores more rows, at random, than one exact scan
#: reads in order: such a query (a large ``k``) scans exactly and gets the exact
#: answer. Measured at 1e5 (1000 clusters, d=64, one thread, loaded machine): walk /
#: exact time 0.12 at ef 11, 0.26 at 60, 1.1 at 150, 2.0 at 300, 2.3 at 1200
#: (docs/performance.md, "Wide walks scan exactly"). The floor keeps the walks of
#: ordinary queries (k <= 40) on the graph at every pool size the ANN serves.
WALK_EF_SHARE = 1024
WALK_EXACT_MIN_EF = 192

#: incremental maintenance: the delta is linked into the graph, and tombstoned rows
#: dropped and repaired, once either holds LINK_SHARE of the graph's rows (at least
#: LINK_MIN); a change past ``rebuild_fraction`` goes to a full pynndescent build
LINK_SHARE = 0.005
LINK_MIN = 64
#: new entries linked per graph update (each chunk searches the graph the previous made)
LINK_CHUNK = 2048
#: a row that linked to a dropped one takes at most this many of its out-neighbours as
#: replacements (graph_update's n_repair): all of them made every such row pass its degree
#: bound and be scored again, the bulk of an update's cost
REPAIR_LINKS = 8
#: a new entry's link candidates: the best LINK_WALK * n_neighbors rows of a walk with
#: ef = max(that, LINK_MIN_EF), plus its nearest entries of its chunk
LINK_WALK = 2.0
LINK_MIN_EF = 62
#: settings a saved graph must share with the index that adopts it
GRAPH_SETTINGS = ("n_neighbors", "max_degree", "seed", "graph")

#: test hook: called with the index in every build, once its snapshot is taken (e.g. to hold it)
_BUILD_HOOK = None


def _wide_walk(ef: int, n_cand: int) -> bool:
    """Whether a walk of beam ``ef`` over ``n_cand`` candidates costs more than an exact scan."""
    return ef >= WALK_EXACT_MIN_EF and ef * WALK_EF_SHARE > n_cand


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
        The walk keeps ``ef = max(min_ef, ceil(overfetch * k), k)`` results
        (with a calibrated beam: ``max(beam, k)`` up to ``k = 11``, the ``k = 10``
        it was calibrated at and the one more a pool asks for to see ties, and
        ``max(beam * k / 10, overfetch * k)`` beyond).
    rebuild_fraction : float
        A delta or tombstones past this share of the graph start a full
        (pynndescent) rebuild in the background; below it they are linked and
        repaired in place (``incremental``).
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
    incremental : bool
        Link new entries into the graph and drop removed ones (repairing
        their in-neighbours) with the kernels of
        :mod:`dreamjit.kernels.graph`, once they make up ``LINK_SHARE`` of the
        graph (see :meth:`maintain`). False: they wait in the delta and the
        tombstones until the next full build.
    build_timeout : float or None
        Seconds one build may take (starting the worker is bounded the same
        way); past it the worker process is killed and reaped (a thread build
        is abandoned), the build counts as failed and is logged. None: no limit.
    seed : int
        Seeds pynndescent (same entries and seed: the same graph).
    background : bool
        Builds run in a thread; False builds in the calling thread.
    min_ef : int or None
        Smallest ``ef`` of a walk (see ``overfetch``). None: the beam
        calibrated for each graph when it is built or adopted without a
        calibration (:func:`~dreamjit.index.calibrate.calibrate_beam`: the
        smallest beam whose recall@10 on a held-out sample of the graph's
        rows reaches ``CALIBRATION_RECALL``, 0.97); graph updates keep it, a
        rebuild calibrates again.
    graph : {"search", "knn"}
        pynndescent's pruned search graph, or its raw k-NN graph.
    min_build : int
        No graph below this many live entries (exact scans instead).
    n_jobs : int or None
        pynndescent's ``n_jobs``.

    Notes
    -----
    Build lifecycle: :meth:`rebuild` starts a build thread, which (1) makes
    sure the shared worker process is running and pynndescent compiled, (2)
    takes the snapshot of the live entries, (3) builds, and (4) installs the
    graph. A pool :meth:`attach`-es its lock: the snapshot is then taken
    under its read lock and the graph installed under its write lock, by the
    build thread itself, followed by the pool's callback (which keeps the
    memory budget); once installed, a build starts again at once if the
    delta or the tombstones are still past ``rebuild_fraction`` (or another
    :meth:`rebuild` was asked for meanwhile). A standalone index installs a
    finished build at its next call, in the caller's thread.
    """

    def __init__(
        self,
        store,
        n_neighbors=30,
        epsilon=0.15,
        overfetch=1.5,
        rebuild_fraction=0.1,
        seed=0,
        background=True,
        n_pivots=None,
        min_ef=40,
        mask_share=0.05,
        graph="search",
        builder="process",
        min_build=256,
        exact_batch_below=30_000,
        n_jobs=None,
        build_timeout=None,
        entry_hops=None,
        n_seeds=8,
        incremental=True,
    ):
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
        self.incremental = bool(incremental)
        self.linked = 0  # entries linked by graph updates (not full builds)
        self.repaired = 0  # tombstoned rows dropped by graph updates
        self.min_ef = None if min_ef is None else int(min_ef)
        self.mask_share = float(mask_share)
        self.exact_batch_below = int(exact_batch_below)
        self.graph_kind = graph
        self.builder = builder
        self.min_build = max(int(min_build), 2 * self.n_neighbors + 2, ENTRY_SHARE)
        self.n_jobs = n_jobs
        self.max_degree = int(round(1.5 * self.n_neighbors))
        self.build_timeout = None if build_timeout is None else float(build_timeout)
        # (graph or None, delta slots): replaced atomically
        self._state: tuple[_Graph | None, np.ndarray] = (None, _EMPTY_I)
        self._lock = threading.RLock()
        self._thread = None  # the running build thread
        # (status, payload, seq) of a finished build not installed yet
        self._pending: tuple | None = None
        self._failures = 0  # consecutive failed builds; 3 stop automatic rebuilds
        self._asked = 0  # rebuild requests so far (numbered)
        self._covered = 0  # the latest request a finished build's snapshot covered
        self._gen = 0  # bumped when running builds must be forgotten (fork, abandon)
        self._guard: Any = None  # the owner's RWLock (see attach)
        self._on_install = None
        self.last_build_seconds = None
        self.builds = 0  # graphs installed
        after_fork(self)

    def attach(self, lock, on_install=None) -> None:
        """Let an owner guard builds.

        Parameters
        ----------
        lock : RWLock
            Snapshots are taken under ``lock.read()``, graphs installed under
            ``lock.write()``.
        on_install : bound method, optional
            Called after each install, under the write lock (held weakly).
        """
        self._guard = lock
        self._on_install = None if on_install is None else weakref.WeakMethod(on_install)

    def _reset_after_fork(self) -> None:
        """In a forked child: forget the parent's build (its thread does not exist here)."""
        self._lock = threading.RLock()
        self._gen += 1
        self._thread = None
        self._pending = None
        self._failures = 0
        self._covered = self._asked

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
        within ``hops`` of an entry), ``seconds`` (post-processing time),
        ``calibration`` (None, or the beam calibration:
        :func:`~dreamjit.index.calibrate.calibrate_beam`'s record) and
        ``beam`` (the smallest ``ef`` of a walk now).
        """
        self._poll()
        graph = self._state[0]
        if graph is None:
            return {}
        return dict(
            graph.info,
            rows=int(graph.rows.shape[0]),
            edges=int(graph.indices.shape[0]),
            entries=int(graph.entries.shape[0]),
            calibration=graph.info.get("calibration"),
            beam=self._beam(graph),
        )

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

        Returns
        -------
        int
            The bytes.
        """
        d = self._store.embeddings.shape[1]
        entry = -(-(8 + d) // ENTRY_SHARE)
        row = 8 + 8 + 1 + 4 * (self.max_degree + 2) + entry
        return 2 * row + 8 + 8  # + delta slot, + indptr's extra element (n >= 1)

    def bytes_bound(self, n_entries: int) -> int:
        """An upper bound of :attr:`nbytes` while the index covers ``n_entries`` live entries.

        Holds because a graph with more than half its rows dead is dropped.

        Parameters
        ----------
        n_entries : int
            Live entries.

        Returns
        -------
        int
            The bound in bytes.
        """
        return max(int(n_entries), 0) * self.per_entry_bound()

    # ------------------------------------------------------------ updates
    def add(self, slots) -> None:
        """Slots just written (alive) in the store go to the delta.

        Parameters
        ----------
        slots : array_like of int
            Store slots.
        """
        self._change(slots, added=True)

    def remove(self, slots) -> None:
        """Slots just marked dead in the store: tombstone graph rows, drop delta slots.

        Parameters
        ----------
        slots : array_like of int
            Store slots no longer alive.
        """
        self._change(slots, added=False)

    def _change(self, slots, added) -> None:
        self._poll()
        slots = np.unique(np.asarray(slots, dtype=np.int64).ravel())
        with self._lock:
            graph, delta = self._state
            if graph is None or slots.size == 0:
                return
            self._kill_rows(graph, slots)  # removed, or a rewritten slot holding a new id
            if added:
                new = slots[~np.isin(slots, delta)]
                if new.size:
                    self._state = (graph, np.concatenate([delta, new]))
            else:
                keep = ~np.isin(delta, slots)
                self._state = (graph, delta if keep.all() else delta[keep])
            self._drop_if_stale(graph)

    def _drop_if_stale(self, graph) -> None:
        """Keep tombstones <= half the graph rows (what :meth:`bytes_bound` relies on)."""
        if 2 * graph.n_dead > graph.rows.shape[0]:
            logger.info(
                "NN-descent graph more than half tombstones: dropped, exact scans until the rebuild"
            )
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
        """Whether a full build is due.

        Returns
        -------
        bool
            True without a graph (and enough entries), or with a delta or
            tombstones past ``rebuild_fraction`` of the graph's rows.
        """
        graph, delta = self._state
        if graph is None:
            return int(np.count_nonzero(self._store.alive)) >= self.min_build
        limit = self.rebuild_fraction * graph.rows.shape[0]
        return graph.n_dead > limit or delta.shape[0] > limit

    def needs_update(self) -> bool:
        """Whether :meth:`maintain` is due.

        Returns
        -------
        bool
            True when the delta or the tombstones hold at least ``LINK_SHARE``
            of the graph's rows (and ``LINK_MIN``) but no full build is due.
        """
        graph, delta = self._state
        if graph is None or not self.incremental or self.needs_rebuild():
            return False
        limit = max(LINK_MIN, LINK_SHARE * graph.rows.shape[0])
        return graph.n_dead >= limit or delta.shape[0] >= limit

    def maybe_rebuild(self) -> bool:
        """Keep the graph current.

        Links and repairs in place (:meth:`maintain`) when :meth:`needs_update`,
        or starts a full rebuild when :meth:`needs_rebuild` (unless one runs or
        three failed in a row).

        Returns
        -------
        bool
            True if a full rebuild was started.
        """
        if self.needs_update():
            self.maintain()
            return False
        if self.building or self._failures >= 3 or not self.needs_rebuild():
            return False
        self.rebuild(block=not self.background)
        return True

    def clear_failures(self) -> None:
        """Forget failed builds: automatic rebuilds resume.

        After three failures in a row automatic rebuilds stop; an explicit
        rebuild request (``DreamPool.rebuild_index``) calls this.

        Returns
        -------
        None
            Automatic rebuilds may start again.
        """
        self._failures = 0

    # ------------------------------------------------------------ incremental updates
    def maintain(self) -> bool:
        """Link the delta into the graph and drop the tombstoned rows now.

        New entries are linked in chunks of ``LINK_CHUNK``: each one's
        candidates are its walk results on the graph (``2 * n_neighbors`` of
        them) and its nearest entries of the chunk (exact); its out-links are
        chosen with hnswlib's heuristic and the reverse edges added within the
        degree bound. A dropped row's in-neighbours are reconnected to its
        out-neighbours; a dropped entry of the entry layer is replaced by one
        of its out-neighbours (:func:`~dreamjit.kernels.graph.graph_update`,
        :func:`~dreamjit.kernels.entry_layer.remap_entries`). pynndescent is
        not used. The owner's write lock must be held (a pool's adds do).

        Returns
        -------
        bool
            True if the graph changed.
        """
        with self._lock:
            graph, delta = self._state
            if graph is None or (delta.shape[0] == 0 and graph.n_dead == 0):
                return False
            t0 = time.perf_counter()
            new = np.sort(delta)
            n_dead = graph.n_dead
            start = 0
            while True:
                chunk = new[start : start + LINK_CHUNK]
                graph = self._updated(graph, chunk)
                start += LINK_CHUNK
                if graph is None or start >= new.shape[0]:
                    break
            if graph is None or graph.rows.shape[0] < self.min_build:
                logger.info("NN-descent graph too small after an update: dropped")
                self._state = (None, _EMPTY_I)
                return True
            self._state = (graph, _EMPTY_I)
            self.linked += int(new.shape[0])
            self.repaired += int(n_dead)
            logger.debug(
                "NN-descent graph updated in %.3f s: %d linked, %d dropped, %d rows",
                time.perf_counter() - t0,
                new.shape[0],
                n_dead,
                graph.rows.shape[0],
            )
            return True

    def _updated(self, graph, chunk):
        """``graph`` without its dead rows and with ``chunk`` (slots) linked in."""
        store = self._store
        X = store.embeddings
        width = max(int(round(LINK_WALK * self.n_neighbors)), 1)
        if chunk.shape[0]:
            Q = np.ascontiguousarray(X[chunk])
            walk, _, _ = ann_search_batch(
                X,
                graph.walk,
                store.alive,
                _EMPTY_I,
                Q,
                width,
                max(width, LINK_MIN_EF),
                self.epsilon,
                self.n_seeds,
            )
            # the chunk's own nearest entries: an exact scan of the chunk's rows only
            mine, _ = topk_dot_batch(
                Q,
                Q,
                np.ones(chunk.shape[0], dtype=np.bool_),
                min(self.n_neighbors + 1, chunk.shape[0]),
            )
            mine = np.where(mine >= 0, chunk[np.maximum(mine, 0)], -1)
            cand = np.ascontiguousarray(np.concatenate([walk, mine], axis=1))
        else:
            cand = np.empty((0, width), dtype=np.int64)
        rows, indptr, indices, mapping = graph_update(
            X,
            graph.rows,
            graph.indptr,
            graph.indices,
            graph.dead,
            chunk,
            cand,
            self.n_neighbors,
            self.max_degree,
            REPAIR_LINKS,
        )
        n = rows.shape[0]
        if n == 0:
            return None
        entries = remap_entries(graph.entries, mapping, graph.indptr, graph.indices, n)
        if entries.shape[0] > max(n // ENTRY_SHARE, 1):  # the byte bound
            entries = entries[:: -(-entries.shape[0] // max(n // ENTRY_SHARE, 1))]
        if entries.shape[0] == 0:
            entries = np.zeros(1, dtype=np.int64)
        block = quantize_block(np.ascontiguousarray(X[rows[entries]]))
        return _Graph(
            rows,
            indptr,
            indices,
            entries,
            block,
            np.zeros(n, dtype=np.bool_),
            graph.n_components,
            graph.info,
        )

    # ------------------------------------------------------------ export / import
    def settings(self) -> dict:
        """The settings a graph is built with (a saved graph is adopted only with equal ones).

        Returns
        -------
        dict
            ``n_neighbors``, ``max_degree``, ``seed`` and ``graph`` (the kind).
        """
        return {
            "n_neighbors": self.n_neighbors,
            "max_degree": self.max_degree,
            "seed": self.seed,
            "graph": self.graph_kind,
        }

    def graph_arrays(self):
        """The search graph as plain arrays keyed by entry id, or None without a graph.

        Tombstoned rows are dropped (and repaired) first, in this index too.
        Entries still in the delta are not in the graph: an index adopting
        these arrays puts them in its delta.

        Returns
        -------
        dict or None
            ``ids`` (n,) int64: the entry id of each row (ascending slots);
            ``indptr`` (n + 1,) int64 and ``indices`` (E,) int32: the CSR
            graph; ``entries`` (e,) int64: rows of the entry layer, ascending;
            ``block`` (d, e) int8: their quantised vectors; the numbers
            ``n_components`` and ``settings`` (:meth:`settings`); and
            ``calibration``: None, or the graph's beam calibration (``beam``,
            ``epsilon``, ``recall``, ``target``; see
            :func:`~dreamjit.index.calibrate.calibrate_beam`).
        """
        self._poll()
        with self._lock:
            graph, delta = self._state
            if graph is not None and graph.n_dead:
                graph = self._updated(graph, _EMPTY_I)
                self._state = (None, _EMPTY_I) if graph is None else (graph, delta)
            if graph is None:
                return None
            return {
                "ids": self._store.ids[graph.rows].astype(np.int64),
                "indptr": graph.indptr,
                "indices": graph.indices,
                "entries": graph.entries,
                "block": graph.block,
                "n_components": int(graph.n_components),
                "settings": self.settings(),
                "calibration": saved_calibration(graph.info.get("calibration")),
            }

    @staticmethod
    def check_graph_arrays(arrays, n_entries, dim) -> None:
        """Refuse graph arrays that are not a well-formed graph over ``n_entries`` rows.

        Parameters
        ----------
        arrays : dict
            As :meth:`graph_arrays` returns (``settings`` and ``calibration``
            may be missing).
        n_entries : int
            Entries the rows may refer to (ids are checked by the caller).
        dim : int
            Embedding dimension (rows of ``block``).

        Returns
        -------
        None
            The arrays passed every check.

        Raises
        ------
        IndexCorruptedError
            Naming the array and what was wrong.
        """

        def bad(name, value, expected):
            raise IndexCorruptedError(f"graph {name}", value, expected)

        ids, indptr = arrays["ids"], arrays["indptr"]
        indices, entries, block = arrays["indices"], arrays["entries"], arrays["block"]
        for name, arr, dt, nd in (
            ("ids", ids, np.int64, 1),
            ("indptr", indptr, np.int64, 1),
            ("indices", indices, np.int32, 1),
            ("entries", entries, np.int64, 1),
            ("block", block, np.int8, 2),
        ):
            if not isinstance(arr, np.ndarray) or arr.dtype != dt or arr.ndim != nd:
                bad(name, getattr(arr, "dtype", type(arr)), f"a {nd}-d {np.dtype(dt)} array")
        n = ids.shape[0]
        if n < 1 or n > n_entries:
            bad("ids", n, f"1 to {n_entries} rows")
        if n > 1 and not (np.diff(np.sort(ids)) > 0).all():
            bad("ids", "repeated", "unique ids")
        if indptr.shape[0] != n + 1 or indptr[0] != 0 or indptr[-1] != indices.shape[0]:
            bad("indptr", indptr.shape, f"{n + 1} offsets from 0 to {indices.shape[0]}")
        if n and (np.diff(indptr) < 0).any():
            bad("indptr", "decreasing", "non-decreasing offsets")
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            bad("indices", (int(indices.min()), int(indices.max())), f"rows in [0, {n})")
        e = entries.shape[0]
        if e < 1 or entries.min() < 0 or entries.max() >= n or (np.diff(entries) <= 0).any():
            bad("entries", e, f"at least one ascending unique row in [0, {n})")
        if block.shape != (dim, e):
            bad("block", block.shape, f"shape ({dim}, {e})")
        nc = arrays.get("n_components", 1)
        if type(nc) is not int or not 1 <= nc <= n:
            bad("n_components", nc, f"an integer in [1, {n}]")
        check_calibration(arrays.get("calibration"))

    def from_graph_arrays(self, arrays) -> None:
        """Use a graph exported by :meth:`graph_arrays` (e.g. saved with a pool).

        Rows whose id is no longer live become tombstones; live entries not
        in the graph go to the delta (and are linked by the next update).
        With ``min_ef=None``, a graph saved without a beam calibration (or
        with one made for another ``epsilon``) is calibrated here, in the
        caller's thread (about 0.1-2 s at 1e5-2e5 rows: more on data that
        needs a wide beam).

        Parameters
        ----------
        arrays : dict
            As :meth:`graph_arrays` returns.

        Returns
        -------
        None
            The graph is in use (or, once its gone rows are dropped, too small: none).

        Raises
        ------
        IndexCorruptedError
            The arrays are not a well-formed graph (:meth:`check_graph_arrays`).
        InvalidParameterError
            ``arrays["settings"]`` differ from this index's (:meth:`settings`).
        """
        store = self._store
        live = np.flatnonzero(store.alive)
        self.check_graph_arrays(arrays, max(int(store.ids.shape[0]), 1), store.embeddings.shape[1])
        settings = arrays.get("settings")
        if settings is not None and settings != self.settings():
            raise InvalidParameterError(
                "arrays", settings, f"a graph built with this index's settings {self.settings()}"
            )
        live_ids = store.ids[live]
        order = np.argsort(live_ids, kind="stable")
        pos = np.searchsorted(live_ids[order], arrays["ids"])
        pos = np.minimum(pos, max(live.shape[0] - 1, 0))
        found = live.shape[0] > 0
        hit = (live_ids[order][pos] == arrays["ids"]) if found else np.zeros(0, bool)
        n = arrays["ids"].shape[0]
        slots = np.where(hit, live[order][pos], -1).astype(np.int64)
        # a row whose entry is gone gets a placeholder slot past the store (dropped below)
        slots[~hit] = store.ids.shape[0] + np.arange(int(np.count_nonzero(~hit)))
        indptr, indices = arrays["indptr"], arrays["indices"]
        entries, block = arrays["entries"], arrays["block"]
        if n > 1 and not (np.diff(slots) > 0).all():  # rows go in ascending slot order
            perm = np.argsort(slots, kind="stable")
            rank = np.empty(n, dtype=np.int64)
            rank[perm] = np.arange(n)
            width = int(np.diff(indptr).max()) if n else 0
            indptr, indices = relabel_csr(indptr, indices, rank, width)
            eo = np.argsort(rank[entries], kind="stable")
            entries, block = rank[entries][eo], np.ascontiguousarray(block[:, eo])
            slots = slots[perm]
        dead = slots >= store.ids.shape[0]
        graph = _Graph(
            slots,
            np.ascontiguousarray(indptr, dtype=np.int64),
            np.ascontiguousarray(indices, dtype=np.int32),
            np.ascontiguousarray(entries, dtype=np.int64),
            np.ascontiguousarray(block),
            dead,
            arrays.get("n_components", 1),
            {"adopted": True, "calibration": arrays.get("calibration")},
        )
        with self._lock:
            if dead.any():  # rows of entries gone since: dropped before any walk reads them
                graph = self._updated(graph, _EMPTY_I)
            if graph is None or graph.rows.shape[0] < self.min_build:
                self._state = (None, _EMPTY_I)
                return
            cal = graph.info["calibration"]
            if self.min_ef is None and (
                cal is None or cal["epsilon"] != self.epsilon or cal["target"] != CALIBRATION_RECALL
            ):  # saved without one (an older file), or for other walk settings: calibrate now
                graph.info["calibration"] = self._calibrate(
                    store.embeddings, graph.walk, store.alive
                )
            delta = np.setdiff1d(live, graph.rows, assume_unique=True).astype(np.int64)
            self._state = (graph, delta)

    def refuse(self) -> None:
        """The owner cannot hold the graph (memory): drop it; counts as a failed build
        (after 3 in a row automatic rebuilds stop; :meth:`rebuild` still works)."""
        with self._lock:
            self._state = (None, _EMPTY_I)
            self._failures += 1

    @staticmethod
    def bytes_per_added_entry() -> int:
        """Most bytes adding one entry can add to :attr:`nbytes`.

        Returns
        -------
        int
            Its delta slot's bytes.
        """
        return _EMPTY_I.itemsize

    # ------------------------------------------------------------ building
    def rebuild(self, block: bool = False, timeout=None) -> bool:
        """Build a new graph over the live entries (in the background unless ``block``).

        If a build is running, another one follows it (its snapshot may
        predate this call).

        Parameters
        ----------
        block : bool, default False
            Wait until a build whose snapshot was taken after this call has
            finished.
        timeout : float, optional
            With ``block``: the most seconds to wait (None: no limit).

        Returns
        -------
        bool
            False if a build is still running on return.
        """
        with self._lock:
            self._asked += 1
            run = self._start(self._asked) if self._thread is None else None
        if run is not None:
            run()
        if block or not self.background:
            return self.wait(timeout)
        return self._thread is None

    def _start(self, asked):
        """Start a build (``self._lock`` held). Returns the build to run in the
        caller's thread (outside the lock) when not in the background, else None."""
        snap = None
        if self._guard is None:  # standalone: the snapshot is taken now, in the caller's thread
            snap = self._snapshot()
            if snap is None:
                self._covered = max(self._covered, asked)
                return None
        elif int(np.count_nonzero(self._store.alive)) < self.min_build:
            self._log_small()
            self._covered = max(self._covered, asked)
            return None
        gen = self._gen
        if not self.background:
            return lambda: self._run_build(gen, snap)
        thread = threading.Thread(
            target=self._run_build, args=(gen, snap), name="dreamjit-nndescent", daemon=True
        )
        self._thread = thread
        thread.start()
        return None

    def _log_small(self):
        logger.info(
            "NN-descent: %d live entries, below %d: exact scans",
            int(np.count_nonzero(self._store.alive)),
            self.min_build,
        )

    def _snapshot(self):
        """``(slots, ids, embeddings, request number)`` of the live entries, or None if too few."""
        store = self._store
        slots = np.flatnonzero(store.alive)
        if slots.shape[0] < self.min_build:
            self._log_small()
            return None
        return (
            slots,
            store.ids[slots].copy(),
            np.ascontiguousarray(store.embeddings[slots]),
            self._asked,
        )

    def _request(self) -> dict:
        return {
            "n_neighbors": self.n_neighbors,
            "seed": self.seed,
            "graph": self.graph_kind,
            "max_degree": self.max_degree,
            "n_jobs": self.n_jobs,
        }

    def _run_build(self, gen, snap) -> None:
        """The build thread: worker ready -> snapshot -> build -> install (see the class notes)."""
        result, seq = ("failed", None), self._asked
        try:
            use_worker = self.builder == "process"
            if use_worker:
                try:  # start the worker and compile pynndescent before the snapshot
                    dim = self._store.embeddings.shape[1]
                    _worker._Worker.build(
                        np.empty((0, dim), np.float32),
                        self._request(),
                        timeout=self.build_timeout,
                        warm_only=True,
                        wanted=self._wanted,
                    )
                except (BuildTimeout, BuildUnwanted):
                    raise
                except RuntimeError as exc:
                    use_worker = self._no_worker(exc)
            if snap is None:
                if not self._wanted():
                    raise BuildUnwanted("the index's owner is gone")
                with self._guard.read():
                    snap = self._snapshot()
                if snap is None:
                    result = ("skipped", None)
                    return
            slots, ids, X, seq = snap
            hook = _BUILD_HOOK
            if hook is not None:
                hook(self)
            t0 = time.perf_counter()
            indptr = None
            if use_worker:
                try:
                    indptr, indices = _worker._Worker.build(
                        X, self._request(), timeout=self.build_timeout, wanted=self._wanted
                    )
                except (BuildTimeout, BuildUnwanted):
                    raise
                except RuntimeError as exc:
                    self._no_worker(exc)
            if indptr is None:
                indptr, indices = self._build_in_thread(X)
            payload = self._payload(slots, ids, indptr, indices, X)
            self._failures = 0
            self.last_build_seconds = time.perf_counter() - t0
            logger.info(
                "NN-descent graph of %d entries built in %.1f s (%d edges)",
                slots.shape[0],
                self.last_build_seconds,
                payload[2]["indices"].shape[0],
            )
            result = ("ok", payload)
        except BuildUnwanted:
            logger.debug("NN-descent build dropped: its pool is gone")
            result = ("skipped", None)
        except BaseException as exc:  # never leave ``building`` stuck
            n = "?" if snap is None else snap[0].shape[0]
            logger.warning("NN-descent build of %s entries failed: %s", n, exc)
            self._failures += 1
        finally:
            self._finish(gen, result, seq)

    def _wanted(self) -> bool:
        """False once the owner (held weakly) is gone: its build would serve nobody."""
        return self._guard is None or self._on_install is None or self._on_install() is not None

    def _no_worker(self, exc) -> bool:
        """The worker failed: fall back to a build in this thread (where that is safe)."""
        if _worker._Worker.closing:
            raise exc
        logger.warning("NN-descent build worker failed (%s): building in a thread", exc)
        return False

    def _build_in_thread(self, X):
        """pynndescent in this process, given up after ``build_timeout`` (the thread is left)."""
        args = (X, self.n_neighbors, self.seed, self.graph_kind, self.max_degree, self.n_jobs)
        if self.build_timeout is None:
            return _worker._build_csr(*args)
        box = {}

        def run():
            try:
                box["out"] = _worker._build_csr(*args)
            except BaseException as exc:  # pragma: no cover - reported below
                box["err"] = exc

        th = threading.Thread(target=run, name="dreamjit-nndescent-inner", daemon=True)
        th.start()
        th.join(self.build_timeout)
        if th.is_alive():
            raise BuildTimeout(
                f"NN-descent build of {X.shape[0]} entries ran past "
                f"{self.build_timeout} s in a thread; abandoned"
            )
        if "err" in box:
            raise box["err"]
        return box["out"]

    def _payload(self, slots, ids, indptr, indices, X):
        """What a build hands to :meth:`_install`: the graph and its search structure
        (components, bridges, the entry layer: :func:`search_structure`)."""
        struct = search_structure(
            X, indptr, indices, seed=self.seed, max_entries=self.n_pivots, hops=self.entry_hops
        )
        if self.min_ef is None:  # the beam, calibrated on the snapshot (row r is X[r])
            n = slots.shape[0]
            walk = (
                np.arange(n, dtype=np.int64),
                struct["indptr"],
                struct["indices"],
                np.zeros(n, dtype=np.bool_),
                struct["entries"],
                struct["block"],
            )
            struct["calibration"] = self._calibrate(X, walk, np.ones(n, dtype=np.bool_))
        logger.info(
            "NN-descent search structure of %d rows: %d edges, %d entry rows, %d components",
            slots.shape[0],
            struct["indices"].shape[0],
            struct["entries"].shape[0],
            struct["n_components"],
        )
        return (slots, ids, struct)

    def _calibrate(self, X, walk, mask) -> dict:
        """The beam calibration of a graph (:func:`~.calibrate.calibrate_beam`), logged."""
        cal = calibrate_beam(
            X,
            walk,
            mask,
            epsilon=self.epsilon,
            n_seeds=self.n_seeds,
            seed=self.seed,
        )
        logger.info(
            "NN-descent beam calibrated: %d (held-out recall@10 %.4f on %d rows, epsilon %g) "
            "in %.2f s",
            cal["beam"],
            cal["recall"],
            cal["queries"],
            self.epsilon,
            cal["seconds"],
        )
        return cal

    def _finish(self, gen, result, seq) -> None:
        """A build ended: hand over its result (install it now when a pool owns this index)."""
        guard = self._guard
        if guard is None:
            with self._lock:
                if gen == self._gen:
                    self._pending = result + (seq,)
            return
        with guard.write():
            with self._lock:
                if gen != self._gen:
                    return  # forgotten (fork) or abandoned
                self._pending = result + (seq,)
                self._install_pending()
            callback = self._on_install() if self._on_install is not None else None
            if callback is not None and result[0] == "ok":
                callback()
            # after a failure only an explicit request builds again at once (the next
            # add's maybe_rebuild retries): a frozen worker is not retried in a loop
            self._follow_up(auto=result[0] == "ok")

    def _follow_up(self, auto=True) -> None:
        """After a build: build again if asked to meanwhile, or (``auto``) if the delta or
        the tombstones are still past ``rebuild_fraction``."""
        if self._failures >= 3:
            return
        run = None
        with self._lock:
            if self._thread is None and (
                self._asked > self._covered or (auto and self.needs_rebuild())
            ):
                run = self._start(self._asked)
        if run is not None:
            run()
        elif auto and self.needs_update():
            self.maintain()

    def _poll(self) -> None:
        """Standalone index: install a finished build, in the caller's thread."""
        if self._pending is None or self._guard is not None:
            return
        with self._lock:
            if self._pending is None:
                return
            self._install_pending()
        self._follow_up(auto=False)  # standalone: automatic rebuilds are the caller's call

    def _install_pending(self) -> None:
        """Install ``_pending`` (``self._lock`` held; with an owner, its write lock too)."""
        assert self._pending is not None
        status, payload, seq = self._pending
        self._pending = None
        self._thread = None
        self._covered = max(self._covered, seq)
        if status == "ok":
            self._install(payload)
            self.builds += 1

    def _install(self, payload) -> None:
        """Swap in a built graph, reconciled with what changed since its snapshot."""
        slots, ids, struct = payload
        store = self._store
        alive = store.alive
        dead = tombstones(slots, ids, alive, store.ids)
        live = np.flatnonzero(alive)
        delta = np.setdiff1d(live, slots[~dead], assume_unique=True)
        graph = _Graph(
            slots,
            struct["indptr"],
            struct["indices"],
            struct["entries"],
            struct["block"],
            dead,
            struct["n_components"],
            {key: value for key, value in struct.items() if not isinstance(value, np.ndarray)},
        )
        if 2 * graph.n_dead > slots.shape[0]:
            logger.info("new NN-descent graph already more than half stale: not used")
            self._state = (None, _EMPTY_I)
            return
        self._state = (graph, delta.astype(np.int64))
        logger.debug(
            "NN-descent graph swapped in: %d rows, %d tombstones, %d delta",
            slots.shape[0],
            graph.n_dead,
            delta.shape[0],
        )

    def wait(self, timeout=None) -> bool:
        """Wait until the builds asked for so far have finished (and are installed).

        Parameters
        ----------
        timeout : float, optional
            The most seconds to wait (None: no limit).

        Returns
        -------
        bool
            False if a build is still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        asked = self._asked
        while True:
            thread = self._thread
            if thread is None or thread is threading.current_thread():
                break
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                return False
            self._poll()
            if self._covered >= asked:
                break
        self._poll()
        return self._thread is None or self._covered >= asked

    # ------------------------------------------------------------ queries
    def _beam(self, graph) -> int:
        """The smallest ``ef`` of a walk on ``graph``: ``min_ef``, else its calibrated beam."""
        if self.min_ef is not None:
            return self.min_ef
        cal = graph.info.get("calibration")
        return DEFAULT_BEAM if cal is None else cal["beam"]

    def _ef(self, k: int, graph) -> int:
        """The walk's ``ef`` for a top-``k``: ``max(min_ef, ceil(overfetch * k), k)``; with a
        calibrated beam (``min_ef=None``), the beam itself up to ``k = CALIBRATION_K + 1``
        (it was measured at ``CALIBRATION_K``; a pool asks for one more to see ties at the
        cut), and beyond it ``max(beam * k / CALIBRATION_K, overfetch * k)``."""
        beam = self._beam(graph)
        if self.min_ef is None:
            if k <= CALIBRATION_K + 1:
                return max(beam, k)
            return max(-(-beam * k // CALIBRATION_K), math.ceil(self.overfetch * k))
        return max(beam, math.ceil(self.overfetch * k), k)

    def walk_plan(self, k, mask=None):
        """How a top-``k`` query would walk the graph now, or None when it scans exactly.

        None without a graph, for ``k`` at least the candidates, a filter narrower than
        ``mask_share``, a delta past ``DELTA_EXACT_SHARE`` or a wide walk
        (:func:`_wide_walk`). Installs a finished standalone build first, as
        :meth:`search` does.

        Parameters
        ----------
        k : int
            Rows wanted (> 0).
        mask : numpy.ndarray, optional
            (capacity,) bool: the slots a filter selects.

        Returns
        -------
        tuple or None
            ``(embeddings, walk, live_mask, delta, ef, epsilon, n_seeds)``: the arguments
            of :func:`~dreamjit.kernels.graph.ann_search` around the query and ``k``.
        """
        self._poll()
        store = self._store
        graph, delta = self._state  # one consistent snapshot of the state
        if graph is None:
            return None
        n_live = graph.rows.shape[0] - graph.n_dead + delta.shape[0]
        if mask is None:
            m, n_cand = store.alive, n_live
        else:
            m = _live_mask(store, mask)
            n_cand = int(np.count_nonzero(m))
        ef = self._ef(k, graph)
        if (
            k >= n_cand
            or n_cand < self.mask_share * n_live
            or delta.shape[0] > DELTA_EXACT_SHARE * n_live
            or _wide_walk(ef, n_cand)
        ):
            return None
        return store.embeddings, graph.walk, m, delta, ef, self.epsilon, self.n_seeds

    def search(self, q, k, mask=None):
        """The best ``min(k, #candidates)`` live rows for one query, best first: a walk
        of the graph plus an exact scan of the delta, or an exact scan.

        Parameters
        ----------
        q, k, mask
            As in :meth:`ExactIndex.search <dreamjit.index.ExactIndex.search>`.

        Returns
        -------
        tuple of numpy.ndarray
            ``(slots int64, scores float32)``: always ``min(k, #masked live)`` hits.
        """
        k = int(k)
        store = self._store
        if k <= 0:
            self._poll()
            return _EMPTY_I.copy(), _EMPTY_S.copy()
        q = _as_query(q, store)
        plan = self.walk_plan(k, mask)
        if plan is None:
            return exact_topk(store, q, _live_mask(store, mask), k)
        X, walk, m, delta, ef, epsilon, n_seeds = plan
        if not q.flags.writeable:  # the query cache's rows: one walk compile, not two
            q = q.copy()
        idx, sc = ann_search(X, walk, m, delta, q, k, ef, epsilon, n_seeds)
        if idx.shape[0] < k:  # the walk found too few masked rows: exact
            return exact_topk(store, q, m, k)
        return idx, sc

    def search_batch(self, Q, k, mask=None):
        """The best ``k`` live rows for each query row (an exact batch scan below
        ``exact_batch_below`` candidates).

        Parameters
        ----------
        Q, k, mask
            ``(m, d)`` query vectors, rows wanted per query and an optional bool mask, as
            in :meth:`ExactIndex.search_batch <dreamjit.index.ExactIndex.search_batch>`.

        Returns
        -------
        tuple of numpy.ndarray
            ``(slots (m, k), scores (m, k))``, padded with -1 / -inf.
        """
        k = max(int(k), 0)
        self._poll()
        store = self._store
        Q = _as_queries(Q, store)
        m = _live_mask(store, mask)
        graph, delta = self._state
        n_live = len(self)
        n_cand = n_live if mask is None else int(np.count_nonzero(m))
        if (
            graph is None
            or k == 0
            or k >= n_cand
            or n_cand < self.mask_share * n_live
            or n_cand < self.exact_batch_below
            or delta.shape[0] > DELTA_EXACT_SHARE * n_live
            or _wide_walk(self._ef(k, graph), n_cand)
        ):
            return topk_dot_batch(store.embeddings, Q, m, k)
        idx, sc, counts = ann_search_batch(
            store.embeddings,
            graph.walk,
            m,
            delta,
            Q,
            k,
            self._ef(k, graph),
            self.epsilon,
            self.n_seeds,
        )
        for t in np.flatnonzero(counts < k):
            i, s = topk_dot(store.embeddings, Q[t], m, k)
            idx[t, : i.shape[0]] = i
            sc[t, : s.shape[0]] = s
        return idx, sc

"""The NN-descent index's search structure, computed from a build's k-NN graph.

:func:`search_structure` is the one call between a finished pynndescent build
and the index (:class:`~dreamjit.index.NNDescentIndex` calls it in its build
thread, off the query path); :class:`_Graph` holds the result with the
tombstones. The kernels are in :mod:`dreamjit.kernels.entry_layer` and
:mod:`dreamjit.kernels.graph`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..kernels.entry_layer import (
    add_edges,
    bridge_edges,
    component_representatives,
    cover_entries,
    graph_components,
)
from ..kernels.graph import quantize_block

__all__ = ["ENTRY_SHARE", "entry_cap", "search_structure"]

logger = logging.getLogger("dreamjit")

#: the entry layer holds at most one row in ENTRY_SHARE of the graph (the byte bound relies on it)
ENTRY_SHARE = 8
#: default size of the entry layer: ENTRY_SQRT * sqrt(n) rows (the scan per query costs ~E*d)
ENTRY_SQRT = 6.0
#: cover radii tried, smallest first
MAX_HOPS = 8
#: from this many connected components on, the build logs a warning (else info)
MANY_COMPONENTS = 10


def entry_cap(n: int, max_entries=None) -> int:
    """Rows the entry layer of an ``n``-row graph may hold."""
    cap = int(np.ceil(ENTRY_SQRT * np.sqrt(n))) if max_entries is None else int(max_entries)
    return max(1, min(cap, n // ENTRY_SHARE))


def search_structure(X, indptr, indices, *, seed=0, max_entries=None, hops=None):
    """Turn a build's k-NN search graph into what the walk needs (one call after a build).

    Parameters
    ----------
    X : (n, d) float32
        The snapshot's unit rows (row ``r`` of the graph is ``X[r]``).
    indptr, indices : CSR of the search graph over the ``n`` rows.
    seed : int
        Orders the cover and the pivots.
    max_entries : int or None
        Cap of the entry layer (None: ``ENTRY_SQRT * sqrt(n)``, or the number
        of components if larger; never more than ``n // ENTRY_SHARE``).
    hops : int or None
        Cover radius; None: the smallest radius whose cover fits the cap.

    Returns
    -------
    dict with ``indptr`` (int64), ``indices`` (int32): the graph plus bridging
    edges when it has several components; ``entries`` (E,) int64 ascending
    rows; ``block`` (d, E) int8: their vectors, column-major, quantised
    (:func:`~dreamjit.kernels.graph.quantize_block`); and the
    numbers ``n_components``, ``n_bridges``, ``hops``, ``covered`` (every
    row within ``hops`` edges of an entry) and ``seconds`` (time taken).

    Steps (kernels in :mod:`dreamjit.kernels.graph`): weakly connected
    components by union-find; one representative per component (the row
    nearest its mean direction); when there are several, a maximum spanning
    tree over the representatives adds bridging edges, so every row is
    reachable from every entry; then the entry layer: the representatives,
    a greedy ``hops``-hop cover of the graph in a seeded order (so no region
    of the graph is more than ``hops`` edges from an entry), and seeded
    random rows up to the cap.
    """
    t0 = time.perf_counter()
    n = indptr.shape[0] - 1
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int32)
    labels, n_comp = graph_components(indptr, indices)
    dead = np.zeros(n, dtype=np.bool_)
    reps = component_representatives(X, labels, n_comp, dead)
    n_bridges = 0
    if n_comp > 1:
        src, dst = bridge_edges(X, reps)
        indptr, indices = add_edges(indptr, indices, src, dst)
        n_bridges = src.shape[0] // 2
    cap = entry_cap(n, max_entries)
    n_reps = int(np.count_nonzero(reps >= 0))
    if max_entries is None:  # room for every component, within the byte bound
        cap = max(cap, min(n_reps, n // ENTRY_SHARE))
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    radii = range(1, MAX_HOPS + 1) if hops is None else (int(hops),)
    for h in radii:
        entries, covered = cover_entries(indptr, indices, dead, reps, order, h, cap)
        if covered:
            break
    if entries.shape[0] < cap:  # fill with seeded random rows
        extra = order[~np.isin(order, entries)][: cap - entries.shape[0]]
        entries = np.concatenate([entries, extra])
    entries = np.sort(entries)
    block = quantize_block(np.ascontiguousarray(X[entries], dtype=np.float32))
    if n_comp > 1:
        sizes = np.bincount(labels, minlength=n_comp)
        log = logger.warning if n_comp >= MANY_COMPONENTS else logger.info
        log(
            "NN-descent graph of %d rows has %d connected components (sizes %d..%d, "
            "median %d): %d bridging edges join them; one representative of %s is "
            "an entry of the walk",
            n,
            n_comp,
            sizes.min(),
            sizes.max(),
            int(np.median(sizes)),
            n_bridges,
            "each" if n_comp <= cap else f"the first {cap} (entry layer full)",
        )
    if not covered:
        logger.warning(
            "NN-descent entry layer full at %d rows: some rows are more than %d hops from an entry",
            cap,
            h,
        )
    return {
        "indptr": indptr,
        "indices": indices,
        "entries": entries,
        "block": block,
        "n_components": int(n_comp),
        "n_bridges": int(n_bridges),
        "hops": int(h),
        "covered": bool(covered),
        "seconds": time.perf_counter() - t0,
    }


class _Graph:
    """A sealed search graph; row ``r`` is store slot ``rows[r]`` (ascending).

    ``entries`` are the rows of the entry layer and ``block`` (d, E) their
    vectors at build time (column-major int8, scanned first by every query;
    a copy, so a tombstoned entry keeps routing its part of the graph).
    """

    __slots__ = (
        "rows",
        "indptr",
        "indices",
        "entries",
        "block",
        "dead",
        "n_dead",
        "n_components",
        "info",
    )

    def __init__(self, rows, indptr, indices, entries, block, dead, n_components=1, info=None):
        for arr in (rows, indptr, indices, entries, block):
            # sealed for real: read-only, so the walk kernel sees one array type whether the
            # graph was built, updated in place or loaded (one compiled signature)
            arr.setflags(write=False)
        self.rows, self.indptr, self.indices = rows, indptr, indices
        self.entries, self.block = entries, block
        self.dead = dead
        self.n_dead = int(np.count_nonzero(dead))
        self.n_components = int(n_components)
        self.info = dict(info or {})

    @property
    def arrays(self):
        return (self.rows, self.indptr, self.indices, self.entries, self.block, self.dead)

    @property
    def walk(self):
        """The graph argument of :func:`~dreamjit.kernels.graph.ann_search`."""
        return (self.rows, self.indptr, self.indices, self.dead, self.entries, self.block)

"""The index set of a :class:`~dreamjit.DreamPool`: the exact and NN-descent indexes.

:class:`IndexSet` keeps the exact index always and, once the pool reaches
``ann_threshold`` live entries, an NN-descent index built in the background
(queries never wait for a build). It follows the table's adds and removals,
reports its bytes to the budget and answers top-k embedding searches from the
index in use. The indexes themselves live in :mod:`dreamjit.index`.
"""

from __future__ import annotations

import logging

import numpy as np

from ._validate import MAX_ENTRIES
from .kernels.query import topk_dot_slots

__all__ = ["IndexSet", "candidate_count", "ranked_by_id", "rerank_count", "similarity_order"]

logger = logging.getLogger("dreamjit")

#: a filter matching fewer than one live entry in this many is searched by an exact scan
#: of the matching slots only (no graph walk, no scan of the rest)
SLOT_SCAN_SHARE = 8

_NO_SLOTS = np.empty(0, dtype=np.int64)
_NO_SCORES = np.empty(0, dtype=np.float32)


def candidate_count(k: int, n: int) -> int:
    """How many index candidates (of ``n`` live entries) the rerank and MMR stages look at
    (``k`` is clamped first, so the count always fits an int64 kernel argument)."""
    return min(max(4 * min(int(k), n, MAX_ENTRIES), 32), n)


def rerank_count(k: int, n: int, order_only: bool) -> int:
    """How many candidates (of ``n``) a soft retrieval of ``k`` hits reranks: ``min(k, n)``
    when the rerank keeps the similarity order (``order_only``, :func:`similarity_order`:
    its picks are then the best ``k`` by similarity, ties to the lower id, whatever else
    the candidates hold), else :func:`candidate_count`. The rerank's values are min-max
    normalised over the candidates, so every path (exact, graph walk, batch, shards) asks
    this one function."""
    if order_only:
        return min(int(k), n, MAX_ENTRIES)
    return candidate_count(k, n)


def similarity_order(w, label: int) -> bool:
    """Whether the hybrid rerank with weights ``w`` (a :class:`~dreamjit.RetrievalWeights`)
    for a query of label ``label`` (-1: none) picks its candidates in similarity order,
    ties to the lower id, whatever the candidates are.

    So when no utility or duplicate term (``beta == delta == 0``), no class term (``gamma
    == 0`` or an unlabelled query, whose class term is the same 0.5 for every entry),
    and ``alpha``, ``lambda_`` above 0: the base score is then an increasing function of
    the similarity, and every later pick's value ``lambda_ * base`` too. The best ``k``
    candidates are then the ``k`` picks, so the candidate set need hold only those.
    """
    return (
        w.beta == 0.0
        and w.delta == 0.0
        and (w.gamma == 0.0 or label < 0)
        and w.alpha > 0.0
        and w.lambda_ > 0.0
    )


def ranked_by_id(search, k: int, n: int, ids):
    """The best ``k`` of a top-k ``search(k) -> (slots, scores)`` with ties to the lower *id*.

    Kernels break ties by slot, and slots are reused out of id order, so this
    asks for one more than ``k``: if the scores tie across the cut, it widens
    the search (doubling) until its last score is below the tied one, so every
    tied entry is in, then orders by (score desc, id asc). The widening stops
    there: it once checked the cut again (``scores[k]``, which a wider search
    does not change) and so widened to every entry whenever two tied at the cut.
    """
    want = min(k + 1, n)
    while True:
        slots, scores = search(want)
        got = slots.shape[0]
        if got <= k or scores[k] < scores[k - 1] or got < want or want >= n:
            break
        if scores[got - 1] < scores[k - 1]:  # the whole tie group is in
            break
        want = min(2 * want, n)
    if slots.shape[0] > k:
        head = scores[: k + 1].tolist()  # sorted: all distinct means no tie anywhere
        if len(set(head)) == k + 1:
            return slots[:k], scores[:k]  # no ties: the kernel's order is the id order
        keep = scores >= scores[k - 1]
        slots, scores = slots[keep], scores[keep]
    elif not (scores[1:] == scores[:-1]).any():
        return slots, scores
    order = np.lexsort((ids[slots], -scores.astype(np.float64)))[:k]
    return slots[order], scores[order]


class IndexSet:
    """The exact index and the (optional) NN-descent index over a table's embeddings.

    Parameters
    ----------
    config : PoolConfig
    table : EntryTable
        The entries indexed (its storage columns are shared with the indexes).
    lock : RWLock
        The pool's lock: a background build snapshots under its read side and
        installs a graph under its write side.
    on_install : callable, optional
        Called (write lock held) after a graph is installed, so the pool can
        fit its memory budget again.
    """

    def __init__(self, config, table, lock, on_install=None):
        self.config = config
        self._table = table
        self._lock = lock
        self._on_install = on_install
        self._exact = None
        self._ann = None

    # ------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """A fresh exact index over the table's storage, and no NN-descent index."""
        from .index import ExactIndex

        self._exact = ExactIndex(self._table.store)
        self._ann = None

    @property
    def exact(self):
        """The :class:`~dreamjit.index.ExactIndex` (None before the first add)."""
        return self._exact

    @property
    def ann(self):
        """The :class:`~dreamjit.index.NNDescentIndex`, or None (not started)."""
        return self._ann

    def make_ann(self):
        """A new NN-descent index over the table, attached to the pool's lock (not installed)."""
        from .index import NNDescentIndex

        cfg = self.config
        ann = NNDescentIndex(
            self._table.store,
            n_neighbors=cfg.ann_n_neighbors,
            n_pivots=cfg.ann_n_pivots,
            epsilon=cfg.ann_epsilon,
            overfetch=cfg.ann_overfetch,
            min_ef=cfg.ann_min_ef,
            rebuild_fraction=cfg.ann_rebuild_fraction,
            seed=cfg.seed,
            background=cfg.ann_background,
            build_timeout=cfg.ann_build_timeout,
        )
        # snapshots under the read lock, installs under the write lock, then the budget check
        ann.attach(self._lock, self._on_install)
        return ann

    def adopt_ann(self, ann) -> None:
        """Use ``ann`` (from :meth:`make_ann`, e.g. holding a graph built earlier) as the
        NN-descent index (write lock held)."""
        self._ann = ann

    def drop_graph(self) -> None:
        """Stop using the NN-descent graph (queries scan exactly); no-op without one."""
        if self._ann is not None:
            self._ann.refuse()

    def ann_possible(self, store_bytes=None) -> bool:
        """Whether this pool can ever reach ann_threshold (from the config and the size
        of an entry's storage rows, so the answer is the same before and after any add)."""
        cfg = self.config
        if not cfg.use_ann:
            return False
        budget = cfg.budget_bytes
        if budget is None:
            return cfg.max_size >= cfg.ann_threshold
        if store_bytes is None:
            if self._table.store is None:
                return True  # shape unknown yet: assume it can
            store_bytes = self._table.store_entry_bytes()
        # as the budget's entry limit: an entry that fits the whole budget is always admitted
        most = max(int(cfg.eviction_threshold * budget) // store_bytes, 1)
        return min(cfg.max_size, most) >= cfg.ann_threshold

    def bytes_per_entry(self, store_bytes=None) -> int:
        """Most bytes adding one entry can add to the index: a delta slot of the
        NN-descent index, when the pool can reach ``ann_threshold``; else 0."""
        if not self.ann_possible(store_bytes):
            return 0
        from .index import NNDescentIndex

        return NNDescentIndex.bytes_per_added_entry()

    @property
    def nbytes(self) -> int:
        """Exact bytes of the index arrays held now (the budget counts these)."""
        exact = self._exact.nbytes if self._exact is not None else 0
        return exact + (self._ann.nbytes if self._ann is not None else 0)

    def exact_len(self) -> int:
        """Live entries the exact index covers (0 before the first add)."""
        return len(self._exact) if self._exact is not None else 0

    def ann_len(self):
        """Live entries the NN-descent index covers (graph plus delta, less tombstones),
        or None without one."""
        return None if self._ann is None else len(self._ann)

    def after_add(self, slots) -> None:
        """Index the new live ``slots``; start the NN-descent index at ``ann_threshold``."""
        assert self._exact is not None, "reset() runs before the first add"
        self._exact.add(slots)
        n = len(self._table)
        if self._ann is not None:
            self._ann.add(slots)
            self._ann.maybe_rebuild()
        elif self.config.use_ann and n >= self.config.ann_threshold:
            logger.info("pool reached %d entries: building the NN-descent index", n)
            self._ann = self.make_ann()
            self._ann.rebuild(block=not self.config.ann_background)

    def after_update(self, slots) -> None:
        """Live ``slots`` whose embeddings were rewritten in place (same ids): the indexes
        forget the old vectors and take the new ones. For the NN-descent index this is a
        removal and an add of those slots, as an eviction followed by an add into the
        same slot.

        Parameters
        ----------
        slots : numpy.ndarray of int64
            Live slots just rewritten (write lock held).
        """
        assert self._exact is not None, "reset() runs before the first add"
        self._exact.remove(slots)
        self._exact.add(slots)
        if self._ann is not None:
            self._ann.remove(slots)
            self._ann.add(slots)
            self._ann.maybe_rebuild()

    def after_remove(self, slots, settle: bool = True) -> None:
        """Index of the ``slots`` just dropped from the table (evicted or removed).

        Parameters
        ----------
        slots : numpy.ndarray of int64
            Slots no longer alive (write lock held).
        settle : bool
            Keep the NN-descent graph current now (link and repair, or start a
            rebuild). False when an :meth:`after_add` follows in the same
            write: an add's evictions and its new entries then go into one
            graph update (and the evicted slots the adds reuse keep their rows).

        Returns
        -------
        None
            The indexes no longer hold ``slots``.
        """
        assert self._exact is not None, "reset() runs before the first add"
        self._exact.remove(slots)
        if self._ann is not None:
            self._ann.remove(slots)
            if settle:
                self._ann.maybe_rebuild()

    def stats(self) -> dict:
        ann = self._ann
        return {
            "index": "ann" if self.use_ann_now() else "exact",
            "ann_ready": bool(ann is not None and ann.ready),
            "ann_building": bool(ann is not None and ann.building),
            "index_bytes": self.nbytes,
        }

    def use_ann_now(self) -> bool:
        """Whether queries are answered by the NN-descent graph now."""
        return (
            self._ann is not None
            and self._ann.ready
            and len(self._table) >= self.config.ann_threshold
        )

    def rerank_count(self, k, n, order_only, count=None):
        """How many candidates the soft path asks :meth:`search` for: the module's
        :func:`rerank_count` (the same for every index and filter).

        Parameters
        ----------
        k : int
            Hits wanted.
        n : int
            Entries the search selects from (the filter's matches, or every live entry).
        order_only : bool
            The rerank keeps the similarity order (:func:`similarity_order`).
        count : int, optional
            Matches of a filter (accepted for the callers' symmetry; no effect).

        Returns
        -------
        int
            ``min(k, n)`` when ``order_only`` (an exact scan's heap and a graph walk's beam
            then follow ``k``), else :func:`candidate_count`.
        """
        return rerank_count(k, n, order_only)

    def walk_plan(self, k, mask=None, count=None):
        """The graph walk a top-``k`` :meth:`search` would make now, or None (an exact scan
        answers: no graph in use, a narrow filter, or the index's own rules,
        :meth:`NNDescentIndex.walk_plan <dreamjit.index.NNDescentIndex.walk_plan>`).

        Parameters
        ----------
        k : int
            Rows the walk is asked for.
        mask : numpy.ndarray, optional
            (capacity,) bool of the live entries a filter selects.
        count : int, optional
            How many ``mask`` selects (computed when omitted).

        Returns
        -------
        tuple or None
            As :meth:`NNDescentIndex.walk_plan <dreamjit.index.NNDescentIndex.walk_plan>`.
        """
        ann = self._ann
        if ann is None or not self.use_ann_now():
            return None
        if mask is not None:
            count = int(np.count_nonzero(mask)) if count is None else count
            if count * SLOT_SCAN_SHARE < len(self._table):
                return None
        return ann.walk_plan(k, mask)

    def search(self, q, k, mask=None, count=None):
        """Top-k ``(slots, cosines)`` by embedding similarity from the index in use,
        ties to the lower id.

        ``mask`` (capacity,) bool, when given, holds the live entries a filter
        selects and ``count`` how many (computed when omitted). A filter matching
        fewer than one entry in :data:`SLOT_SCAN_SHARE` of the pool is answered by
        an exact scan of just those entries (cost proportional to the matches);
        a wider one by the index in use (the graph walk takes the mask).
        """
        index = self._ann if self.use_ann_now() else self._exact
        assert index is not None, "reset() runs before the first add"
        store = self._table.store
        n = len(self._table)
        if mask is not None:
            count = int(np.count_nonzero(mask)) if count is None else count
            if count == 0:
                return _NO_SLOTS, _NO_SCORES
            if count * SLOT_SCAN_SHARE < n:
                rows = np.flatnonzero(mask)
                qq = np.ascontiguousarray(q, dtype=np.float32)
                return ranked_by_id(
                    lambda kk: topk_dot_slots(store.embeddings, qq, rows, kk), k, count, store.ids
                )
            n = count
        return ranked_by_id(lambda kk: index.search(q, kk, mask), k, n, store.ids)

    def search_batch(self, Q, k, mask=None, count=None):
        """Top-k ``(slots (m, k), cosines (m, k))`` of each row of ``Q`` from the index in
        use, padded with -1 / -inf; ties broken by slot (the caller handles ties across
        the cut). Filters as in :meth:`search`: the exact batch scan reads only the
        masked rows, so a narrow filter never walks the graph."""
        use_ann = self.use_ann_now()
        if use_ann and mask is not None:
            count = int(np.count_nonzero(mask)) if count is None else count
            use_ann = count * SLOT_SCAN_SHARE >= len(self._table)
        index = self._ann if use_ann else self._exact
        assert index is not None, "reset() runs before the first add"
        return index.search_batch(Q, k, mask)

    def rebuild(self):
        """Start a rebuild of the NN-descent index (write lock held); returns it, or None
        when there is nothing to rebuild (below ``ann_threshold`` or ``use_ann=False``)."""
        if self._ann is None:
            if not (self.config.use_ann and len(self._table) >= self.config.ann_threshold):
                return None
            self._ann = self.make_ann()
        ann = self._ann
        ann.clear_failures()  # asked explicitly: automatic rebuilds may resume
        ann.rebuild(block=False)
        return ann

    def graph_arrays(self):
        """The NN-descent search graph as arrays keyed by entry id.

        Returns
        -------
        dict or None
            See :meth:`~dreamjit.index.NNDescentIndex.graph_arrays`; None without
            an NN-descent index or graph.
        """
        return None if self._ann is None else self._ann.graph_arrays()

    def after_load(self, slots, graph=None) -> None:
        """Index the entries of a loaded pool, adopting its saved graph when it fits.

        Parameters
        ----------
        slots : array of int
            The slots the loaded entries occupy.
        graph : dict or None
            As :meth:`graph_arrays` gave it at save time. Adopted when the
            config uses the ANN at this size and the settings match; else the
            usual rules apply (a build starts).

        Returns
        -------
        None
            The entries are indexed.
        """
        cfg = self.config
        if graph is not None and cfg.use_ann and len(self._table) >= cfg.ann_threshold:
            ann = self.make_ann()
            if graph.get("settings") != ann.settings():
                logger.info(
                    "saved NN-descent graph built with %s, config asks %s: rebuilding",
                    graph.get("settings"),
                    ann.settings(),
                )
            else:
                ann.from_graph_arrays(graph)
                if ann.ready:
                    assert self._exact is not None, "reset() runs before the first add"
                    self._exact.add(slots)
                    self._ann = ann
                    ann.maybe_rebuild()
                    return
        self.after_add(slots)

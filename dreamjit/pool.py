"""``DreamPool``: the memory-bounded pool of scored tensors.

The pool is a small facade. It owns the config and the locks, validates
every call and commits adds and feedback (validate first, then change
state), and delegates to collaborators with one job each:

- :class:`~dreamjit._table.EntryTable`: storage columns, ids, slots, counters;
- :class:`~dreamjit._budget.Budget`: entry limit, fit check, eviction plans;
- :class:`~dreamjit._indexes.IndexSet`: the exact and NN-descent indexes;
- :class:`~dreamjit._retriever.Retriever`: queries in, ranked slots out.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ._budget import DROP_GRAPH, Budget, BudgetStats
from ._indexes import IndexSet
from ._retriever import DEFAULT_WEIGHTS, NO_SCORES, NO_SLOTS, Retriever
from ._rwlock import RWLock, after_fork
from ._table import EntryTable, make_mapper
from ._validate import (
    MAX_ENTRIES,
    as_bool,
    as_feedback_utilities,
    as_float_array,
    as_ids,
    as_k,
    as_label,
    as_mmr_options,
    as_retrieval_mode,
    as_sequence,
    as_tensor_batch,
    as_utility,
    as_where,
    check_utility_range,
    is_integer,
)
from .cache import CacheStats
from .config import PoolConfig
from .errors import (
    CriticalStateError,
    DimensionMismatchError,
    FeatureUnavailableError,
    InvalidConfigError,
    InvalidParameterError,
    UnknownIdError,
)
from .features import SpectralFeatures, check_spectral
from .kernels.cosine import normalize_rows
from .kernels.spectral import describe_entries
from .query import Query, RetrievalMode, RetrievalWeights
from .results import BatchHits, DreamEntry, Hits

__all__ = ["DreamPool"]

logger = logging.getLogger("dreamjit")


class _Batch:
    """A validated, fully computed batch, ready to commit."""

    __slots__ = (
        "shape",
        "tensors",
        "certainty",
        "results",
        "labels",
        "utility",
        "embeddings",
        "chroma",
        "spectral",
        "user_embeddings",
    )
    shape: tuple
    tensors: np.ndarray
    certainty: np.ndarray | None
    results: np.ndarray
    labels: np.ndarray
    utility: np.ndarray
    embeddings: np.ndarray
    chroma: np.ndarray
    spectral: np.ndarray
    user_embeddings: bool


class DreamPool:
    """An in-process, memory-bounded pool of scored tensors ("dreams").

    Parameters
    ----------
    config : PoolConfig, optional
        Settings; ``PoolConfig()`` defaults when omitted.
    **overrides
        Settings to change from ``config`` (e.g. ``DreamPool(max_size=50)``).

    Notes
    -----
    A pool is also a container of its entries: ``len(pool)``, ``eid in pool``,
    ``pool[eid]`` (a :class:`DreamEntry`; ``KeyError`` for an id never issued
    or since evicted or removed), ``del pool[eid]``, ``pool.ids()`` (live ids,
    oldest first) and ``iter(pool)`` (the entries, oldest first); entries are
    changed in place by :meth:`update` and dropped by :meth:`remove` and
    :meth:`clear`. Ids are integers
    (Python or numpy, any width); a bool, a float (even ``1.0``) or a string
    is never an id: ``in`` gives False and ``pool[key]`` raises ``KeyError``.

    Every method is thread-safe. Reads (retrievals, lookups, iteration,
    statistics, :meth:`save`) run concurrently; writes (adds, removals,
    updates, :meth:`record_feedback`, :meth:`rebuild_index`) are exclusive, and a
    reader never sees a half-applied write. Iteration yields the entries live
    when it started and skips those evicted meanwhile (it never raises
    ``KeyError``). A call that raises leaves the pool exactly as it was.

    A pool may be used in a child process after ``os.fork`` (and in
    ``multiprocessing`` workers): the child forgets a background build that
    was running in the parent and starts its own, and kernels run serially
    there when numba's threading layer cannot fork (GNU OpenMP). Fork from a
    quiet point: a write running in another thread of the parent at that
    moment may be seen half-applied in the child.

    Examples
    --------
    >>> import numpy as np, dreamjit as dj
    >>> pool = dj.DreamPool(dj.PoolConfig(max_size=10))
    >>> t = np.full((4, 4, 3), 0.5, np.float32)
    >>> eid = pool.add(t, dj.SolverResult(1.0, 0.9, 0.0), label=1)
    >>> len(pool), eid in pool, pool[eid].label
    (1, True, 1)
    """

    def __init__(self, config: PoolConfig | None = None, **overrides):
        if config is None:
            config = PoolConfig(**overrides)
        elif not isinstance(config, PoolConfig):
            raise InvalidConfigError("config", config, "a PoolConfig or None")
        elif overrides:
            config = config.replace(**overrides)
        self._config = config
        self._lock = RWLock()
        self._usage_lock = threading.Lock()  # readers count usage concurrently
        self._table = EntryTable(config)
        self._indexes = IndexSet(config, self._table, self._lock, on_install=self._fit_index)
        self._budget = Budget(config, self._table, self._indexes)
        self._retriever = Retriever(config, self._table, self._indexes)
        self._adding: np.ndarray | None = None  # slots written by the add in progress
        self._rewrites = 0  # entries rewritten by update(), to spot a stale plan at commit
        if config.tensor_shape is not None:
            self._budget.check_fits(
                config.tensor_shape
            )  # MemoryExceededError, not a failed allocation
            self._setup(config.tensor_shape)
        after_fork(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: locks another thread of the parent held are released here
        (the readers-writer lock and the index reset themselves)."""
        self._usage_lock = threading.Lock()
        self._retriever.reset_after_fork()

    @classmethod
    def from_columns(
        cls,
        config: PoolConfig,
        shape,
        arrays: dict,
        *,
        count: int,
        next_id: int,
        evicted: int,
        embedding_mode,
        removed: int = 0,
        graph=None,
    ) -> DreamPool:
        """A pool of ``config`` holding the entries of ``arrays`` (what
        :meth:`EntryTable.to_columns <dreamjit._table.EntryTable.to_columns>` gives: the
        stored columns of ``count`` live entries, oldest first) and those counters.

        Used by :meth:`load` after it has checked the file.

        Parameters
        ----------
        config : PoolConfig
            The new pool's settings.
        shape : tuple or None
            The tensor shape (None for a pool that never stored anything).
        arrays : dict
            Storage column name -> array of ``count`` rows.
        count : int
            Live entries in ``arrays``.
        next_id, evicted : int
            The id counter and the evicted counter to continue from.
        embedding_mode : {"mapper", "user"} or None
            How the entries' embeddings were made.
        removed : int, default 0
            The removed counter to continue from (``stats()["removed"]``).
        graph : dict or None
            The NN-descent search graph saved with them (as
            :meth:`IndexSet.graph_arrays <dreamjit._indexes.IndexSet.graph_arrays>`
            gives), adopted when the config's ANN settings match.

        Returns
        -------
        DreamPool
            The restored pool, its indexes set up.

        Raises
        ------
        CriticalStateError
            If the result breaks the pool's own limits (``max_size``, the memory
            budget) or its bookkeeping.
        """
        pool = cls(config)
        pool._table.from_columns(
            shape, arrays, count, next_id, evicted, embedding_mode, removed=removed
        )
        if shape is not None and pool._indexes.exact is None:
            pool._indexes.reset()
        pool.check_invariants()
        if count:  # exact now; the saved graph, or the ANN by the usual rules
            pool._indexes.after_load(np.arange(count, dtype=np.int64), graph)
        return pool

    def to_columns(self) -> tuple:
        """The pool's state as plain columns, read under one read lock (used by :meth:`save`).

        Returns
        -------
        tuple
            ``(config, state, arrays)``: the config, the counters (dict of
            ``tensor_shape``, ``next_id``, ``evicted``, ``removed``, ``embedding_mode``,
            ``count``; ``graph``: the NN-descent graph or None) and the stored
            columns of the live entries, oldest first.
        """
        with self._lock.read():
            state, arrays = self._table.to_columns()
            state["graph"] = self._indexes.graph_arrays()  # None without a graph
            return self.config, state, arrays

    @property
    def config(self) -> PoolConfig:
        """The pool's settings."""
        return self._config

    @config.setter
    def config(self, config: PoolConfig) -> None:
        # every collaborator reads the same config, as before (benchmarks replace it on a
        # filled pool to change a threshold; settings fixed at set-up keep their effect)
        if not isinstance(config, PoolConfig):
            raise InvalidConfigError("config", config, "a PoolConfig")
        self._config = config
        for part in (self._table, self._indexes, self._budget, self._retriever):
            part.config = config

    # ------------------------------------------------------------------ set-up
    def _setup(self, shape: tuple) -> None:
        self._table.setup(shape)
        self._indexes.reset()

    @property
    def tensor_shape(self) -> tuple | None:
        """The per-entry tensor shape (None until the first add)."""
        return self._table.shape

    @property
    def entry_bytes(self) -> int:
        """Logical bytes one more entry costs: its storage rows plus what adding it can
        add to the index (a delta slot of the NN-descent index when ``use_ann``)."""
        return self._budget.entry_bytes()

    # ------------------------------------------------------------------ collaborators
    @property
    def table(self) -> EntryTable:
        """The pool's :class:`~dreamjit._table.EntryTable` (internal, read-only use: for
        tests, benchmarks and :mod:`dreamjit.testing`; hold no reference across writes)."""
        return self._table

    @property
    def indexes(self) -> IndexSet:
        """The pool's :class:`~dreamjit._indexes.IndexSet` (internal, read-only use: its
        ``exact`` and ``ann`` indexes for benchmarks and tests)."""
        return self._indexes

    @property
    def budget(self) -> Budget:
        """The pool's :class:`~dreamjit._budget.Budget` (internal, read-only use)."""
        return self._budget

    @property
    def retriever(self) -> Retriever:
        """The pool's :class:`~dreamjit._retriever.Retriever` (internal, read-only use: its
        query ``cache`` for tests)."""
        return self._retriever

    @property
    def lock(self) -> RWLock:
        """The pool's readers-writer lock (``with pool.lock.read(): ...`` holds writers off
        while a test or benchmark reads the collaborators)."""
        return self._lock

    def query_embedding(self, query):
        """The embedding of a query, as the soft path computes it.

        Parameters
        ----------
        query : Query, tensor or array_like
            As in :meth:`retrieve_soft`.

        Returns
        -------
        tuple or None
            ``(unit embedding float32 (dim,), label or -1)``; None while the pool is
            empty. Counted by :meth:`query_cache_stats`.
        """
        with self._lock.read():
            return self._retriever.query_embedding(query)

    # ------------------------------------------------------------------ adding
    def add(self, tensor, result, label=None, utility=None, embedding=None, certainty=None) -> int:
        """Store one tensor with its solver result, whatever its coherence.

        Parameters
        ----------
        tensor : array_like
            ``(rows, cols, layers, C)`` or ``(rows, cols, C)``, finite; the
            first add fixes the pool's tensor shape.
        result : SolverResult or array_like of 3 floats
            ``(energy, coherence, violation)``, e.g. from :func:`evaluate`.
        label : int, optional
            Class label, >= 0.
        utility : float, optional
            Initial utility; starts the running mean of :meth:`record_feedback`.
            Finite, with ``|utility| <= 3.4028235e38`` (the float32 range), so
            running means kept in float64 cannot overflow.
        embedding : array_like, optional
            The user's own vector of length ``embedding_dim``. The first add
            decides: either every entry of the pool brings one, or none does
            (the pool then computes embeddings from the entry's features).
        certainty : array_like, optional
            Per-cell weights ``(rows, cols, layers)``; needs ``store_certainty=True``.

        Returns
        -------
        int
            The new entry's id. Ids increase and are never reused.

        Raises
        ------
        DimensionMismatchError
            A shape differs from the pool's tensor shape or ``embedding_dim``.
        InvalidParameterError
            NaN/inf values, a wrong dtype, a negative label, a utility outside
            the float32 range, or a tensor whose spectral power overflows
            float32 (see :func:`dreamjit.spectral_features`).
        MemoryExceededError
            One entry is larger than the whole memory budget.

        Notes
        -----
        Adding to a full pool first evicts entries by the ``eviction`` policy;
        the new entry may be evicted again only by later adds.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool(max_size=2)
        >>> t = np.full((4, 4, 3), 0.5, np.float32)
        >>> [pool.add(t, dj.SolverResult(1.0, 0.9, 0.0)) for _ in range(3)]
        [0, 1, 2]
        >>> pool.ids().tolist(), pool.stats()["evicted"]
        ([1, 2], 1)
        """
        batch = self._prepare_one(tensor, result, label, utility, embedding, certainty)
        return int(self._commit(batch)[0])

    def add_if_coherent(
        self, tensor, result, label=None, utility=None, embedding=None, certainty=None
    ) -> int | None:
        """Store the tensor only if ``result.coherence >= coherence_threshold``.

        Input is validated the same way whether or not the tensor is stored,
        except for the checks on the computed features (a tensor whose spectral
        power overflows float32), which run only for tensors that are stored.

        Parameters
        ----------
        tensor, result, label, utility, embedding, certainty
            As in :meth:`add`.

        Returns
        -------
        int or None
            The new id, or None (nothing stored) below the threshold.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool(coherence_threshold=0.75)
        >>> t = np.full((4, 4, 3), 0.5, np.float32)
        >>> pool.add_if_coherent(t, dj.SolverResult(1.0, 0.5, 0.0)) is None
        True
        >>> pool.add_if_coherent(t, dj.SolverResult(1.0, 0.8, 0.0))
        0
        """
        res = _as_results([result], 1, "result")
        if res[0, 1] < self.config.coherence_threshold:
            # validate the rest anyway, so bad input is reported the same either way
            self._prepare_one(tensor, result, label, utility, embedding, certainty, compute=False)
            return None
        return self.add(
            tensor, result, label=label, utility=utility, embedding=embedding, certainty=certainty
        )

    def add_batch(
        self,
        tensors,
        results=None,
        labels=None,
        utilities=None,
        embeddings=None,
        certainties=None,
        only_coherent=True,
    ) -> np.ndarray:
        """Store a batch; returns the int64 ids of the entries stored.

        Parameters
        ----------
        tensors : array_like
            ``(n, rows, cols, layers, C)`` or ``(n, rows, cols, C)``.
        results : sequence of SolverResult or array_like (n, 3), optional
            Energy, coherence, violation per tensor; None evaluates the
            tensors with :func:`dreamjit.evaluate_batch` (RGB tensors only).
        labels, utilities : sequence, optional
            One per tensor (None items for none): a list, tuple or array
            (an integer array of labels may use -1 for none). Strings, dicts
            and sets are refused.
        embeddings : array_like (n, embedding_dim), optional
            The user's own vectors (see :meth:`add`).
        certainties : array_like (n, rows, cols, layers), optional
            Needs ``store_certainty=True``.
        only_coherent : bool, default True
            Store only entries at or above ``coherence_threshold``; must be a
            real bool (``True``/``False`` or ``numpy.bool_``).

        Returns
        -------
        numpy.ndarray of int64
            Ids of the entries stored, in batch order.

        Notes
        -----
        The batch is planned as sequential adds: if it overfills the pool,
        earlier entries (its own included) are evicted by policy, and their
        ids are not returned. The whole batch is validated before anything is
        stored; a refused batch changes nothing.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import smooth_tensors
        >>> tensors = smooth_tensors(20, shape=(8, 8, 3), seed=0)
        >>> pool = dj.DreamPool(max_size=5)
        >>> ids = pool.add_batch(tensors, only_coherent=False)
        >>> ids.tolist(), len(pool)
        ([15, 16, 17, 18, 19], 5)
        """
        coherent = as_bool(only_coherent, "only_coherent")
        if results is None:
            from .features import evaluate_batch

            results = evaluate_batch(tensors)
        batch = self._prepare(
            tensors, results, labels, utilities, embeddings, certainties, only_coherent=coherent
        )
        if batch is None:
            return np.empty(0, dtype=np.int64)
        return self._commit(batch)

    def _prepare_one(self, tensor, result, label, utility, embedding, certainty, compute=True):
        """:meth:`_prepare` for the one entry :meth:`add` takes."""
        return self._prepare(
            tensor,
            [result],
            [label],
            [utility],
            None if embedding is None else [embedding],
            None if certainty is None else [certainty],
            single=True,
            compute=compute,
        )

    def _prepare(
        self,
        tensors,
        results,
        labels,
        utilities,
        embeddings,
        certainties,
        single=False,
        only_coherent=False,
        compute=True,
    ):
        """Validate everything, then compute features; nothing is stored here."""
        name = "tensor" if single else "tensors"
        if single:
            arr = as_float_array(tensors, name, ndim=(3, 4))
            t5, shape = as_tensor_batch(arr[None], name)
        else:
            t5, shape = as_tensor_batch(tensors, name)
        n = t5.shape[0]
        expected = self._table.shape if self._table.shape is not None else self.config.tensor_shape
        if expected is not None and shape != expected:
            raise DimensionMismatchError(
                name,
                tensors if single else t5,
                f"tensor shape {expected} (the pool's), got {shape}",
            )
        res = _as_results(results, n, "result" if single else "results")
        lab = _as_labels(labels, n, "label" if single else "labels")
        util = _as_utilities(utilities, n, "utility" if single else "utilities")
        cert = self._as_certainty(certainties, t5, shape, "certainty" if single else "certainties")
        emb = self._as_embeddings(embeddings, n, "embedding" if single else "embeddings")
        self._budget.check_fits(shape)
        if only_coherent:
            keep = res[:, 1] >= self.config.coherence_threshold
            if compute and not keep.all():
                logger.info(
                    "add_batch: %d of %d entries below coherence_threshold=%g, not stored",
                    int(n - keep.sum()),
                    n,
                    self.config.coherence_threshold,
                )
            if not keep.any():
                return None
            if not keep.all():
                t5, res, lab, util = t5[keep], res[keep], lab[keep], util[keep]
                cert = cert[keep] if cert is not None else None
                emb = emb[keep] if emb is not None else None
        if not compute:
            return None
        b = _Batch()
        b.shape, b.tensors, b.results, b.labels, b.utility = shape, t5, res, lab, util
        b.certainty = cert
        b.user_embeddings = emb is not None
        cert_in = cert if cert is not None else np.empty((0, 0, 0, 0), np.float32)
        mapper = None
        if emb is None:
            mapper = self._table.mapper or make_mapper(self.config, shape)
        grid = 0 if mapper is None else mapper.grid  # thumbnails only to embed them
        b.spectral, b.chroma, spatial = describe_entries(t5, cert_in, cert is not None, grid)
        check_spectral(b.spectral, name, tensors)
        if mapper is None:
            b.embeddings = normalize_rows(emb)
        else:
            b.embeddings = mapper.embed(b.chroma, b.spectral, lab, util, spatial=spatial)
        for column in ("chroma", "embeddings"):  # never store what save() could not load back
            if not np.isfinite(getattr(b, column)).all():
                raise InvalidParameterError(
                    name,
                    tensors,
                    f"values whose {column} are finite",
                    detail=f"the computed {column} overflowed",
                )
        return b

    def _as_certainty(self, certainties, t5, shape, name):
        if certainties is None:
            return None
        if not self.config.store_certainty:
            raise InvalidParameterError(
                name, certainties, "None (this pool was configured with store_certainty=False)"
            )
        cert = as_float_array(certainties, name, ndim=(3, 4) if len(shape) == 4 else (3,))
        want = (t5.shape[0],) + t5.shape[1:4]
        cert = cert.reshape(cert.shape[0], *cert.shape[1:3], -1) if cert.ndim == 3 else cert
        if cert.shape != want:
            raise DimensionMismatchError(
                name, cert, f"shape {want[1:]} per entry (rows, cols, layers)"
            )
        if (cert < 0).any():
            raise InvalidParameterError(name, cert, "certainties >= 0")
        return cert

    def _as_embeddings(self, embeddings, n, name):
        mode = self._table.embedding_mode
        if embeddings is None:
            if mode == "user":
                raise InvalidParameterError(
                    name, None, "an embedding for every entry (this pool stores user embeddings)"
                )
            return None
        if mode == "mapper":
            raise InvalidParameterError(
                name, embeddings, "None (this pool computes its own embeddings)"
            )
        emb = as_float_array(embeddings, name, ndim=2)
        dim = self.config.embedding_dim
        if emb.shape != (n, dim):
            raise DimensionMismatchError(name, emb, f"{n} vectors of length embedding_dim={dim}")
        return emb

    # ------------------------------------------------------------------ committing
    def _commit(self, b: _Batch) -> np.ndarray:
        with self._lock.write():
            self._recheck(b)  # another thread may have fixed the shape or mode since validation
            table = self._table
            if table.store is None:
                self._setup(b.shape)
            m = b.tensors.shape[0]
            new_ids = table.issue_ids(m)
            if self._budget.index_leaves_no_room():
                self._drop_graph_for_room()
            evict, keep = self._budget.admission(new_ids, b.results, b.utility)
            n_keep = int(keep.sum())
            n_live = len(table)
            table.ensure_capacity(
                n_live - evict.shape[0] + n_keep
            )  # may raise: nothing changed yet
            if evict.shape[0]:  # the graph update waits for the adds: one for both
                self._remove_slots(evict, settle=False)
            slots = table.free_slots(n_keep)
            # the whole batch stays (the usual case): its arrays as they are, not copies
            rows = slice(None) if n_keep == m else keep
            table.write(
                slots,
                new_ids[rows],
                b.tensors[rows],
                None if b.certainty is None else b.certainty[rows],
                b.embeddings[rows],
                b.chroma[rows],
                b.spectral[rows],
                b.results[rows],
                b.labels[rows],
                b.utility[rows],
            )
            table.advance(m, dropped=m - n_keep)  # admitted from this batch and evicted within it
            table.set_embedding_mode("user" if b.user_embeddings else "mapper")
            self._adding = slots  # a graph installed during the add never evicts these
            try:
                self._indexes.after_add(slots)
            finally:
                self._adding = None
            return new_ids[keep]

    def _recheck(self, b: _Batch) -> None:
        shape = self._table.shape
        if shape is not None and b.shape != shape:
            raise DimensionMismatchError("tensors", b.shape, f"tensor shape {shape} (the pool's)")
        mode = "user" if b.user_embeddings else "mapper"
        current = self._table.embedding_mode
        if current not in (None, mode):
            raise InvalidParameterError(
                "embeddings", mode, f"{current} embeddings, as every earlier entry of this pool"
            )

    def _remove_slots(self, slots: np.ndarray, evicted: bool = True, settle: bool = True) -> None:
        """Drop live ``slots`` from the table and the indexes (write lock held): the one
        path of eviction and of :meth:`remove` / :meth:`clear`. ``settle=False``: an add
        follows at once, and the index maintenance after it covers these removals too."""
        self._table.remove(slots, evicted=evicted)
        self._indexes.after_remove(slots, settle=settle)
        if evicted:
            logger.debug("evicted %d entries (policy %s)", slots.shape[0], self.config.eviction)
        else:
            logger.debug("removed %d entries", slots.shape[0])

    def _drop_graph_for_room(self) -> None:
        """Before planning an add: the index leaves no room for even one entry, so its
        graph is dropped (queries scan exactly) and ``entries + index <= budget`` can hold."""
        if self._indexes.ann is not None:
            logger.warning(
                "NN-descent index (%d bytes) leaves no room for an entry in the "
                "memory budget: graph dropped",
                self._indexes.nbytes,
            )
            self._indexes.drop_graph()

    def _fit_index(self) -> None:
        """The index grew (a graph was installed; write lock held): evict by policy until
        ``entries + index`` fits again, or drop the graph if that would take half the
        entries (more than half of its rows dead, it would be dropped anyway)."""
        plan = self._budget.index_fit_plan(self._adding)
        if plan is None:
            return
        if isinstance(plan, str) and plan == DROP_GRAPH:
            live = self._table.live_slots()
            if self._adding is not None:
                live = live[~np.isin(live, self._adding)]
            logger.warning(
                "NN-descent graph of %d bytes does not fit the memory budget "
                "beside %d entries: not used",
                self._indexes.nbytes,
                live.shape[0],
            )
            self._indexes.drop_graph()
            return
        logger.info(
            "NN-descent graph installed: %d entries evicted to stay in the memory budget",
            plan.shape[0],
        )
        self._remove_slots(plan)

    # ------------------------------------------------------------------ feedback
    def record_feedback(self, ids, utilities) -> int:
        """Fold utilities into each entry's running mean utility.

        Parameters
        ----------
        ids : int or sequence of int
            Entry ids, e.g. ``hits.ids``.
        utilities : float or sequence of float
            One number for all ids, or one per id; finite, with
            ``|u| <= 3.4028235e38`` (the float32 range), so the running
            means, kept in float64, cannot overflow.

        Returns
        -------
        int
            How many ids were updated; ids that were issued but have since
            been evicted or removed are skipped.

        Raises
        ------
        InvalidParameterError
            An id this pool never issued, ids that are not integers (bools,
            floats, strings), or a utility that is not finite or is outside
            the float32 range.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool()
        >>> eid = pool.add(np.full((4, 4, 3), 0.5), dj.SolverResult(1.0, 0.9, 0.0), utility=1.0)
        >>> pool.record_feedback([eid], 0.0)
        1
        >>> pool[eid].util_mean
        0.5
        """
        id_arr = as_ids(ids)
        u = as_feedback_utilities(utilities, id_arr.shape[0])
        with self._lock.write():
            next_id = self._table.next_id
            bad = (id_arr < 0) | (id_arr >= next_id)
            if bad.any():
                raise InvalidParameterError(
                    "ids", int(id_arr[bad][0]), f"an id issued by this pool (0 <= id < {next_id})"
                )
            slot_of = self._table.slot_or_none
            slots = np.array([slot_of(i) for i in id_arr.tolist()], dtype=np.int64)
            live = slots >= 0
            slots, u = slots[live], u[live]
            if slots.size == 0:
                return 0
            self._table.fold_utilities(slots, u)
            return int(slots.size)

    # ------------------------------------------------------------------ removing, updating
    def remove(self, ids) -> int:
        """Remove entries by id, as eviction does; their ids are never issued again.

        Parameters
        ----------
        ids : int or array_like of int
            One id or a sequence (list, tuple, set, 1-d array) of ids, of any
            integer type (Python or numpy, signed or unsigned, any width).
            Repeated ids are removed once. An empty sequence removes nothing.

        Returns
        -------
        int
            How many entries were removed (distinct ids).

        Raises
        ------
        UnknownIdError
            Some id is not that of a live entry (never issued, evicted or
            already removed); the message names them. Nothing is removed.
            Also a ``KeyError``.
        InvalidParameterError
            ``ids`` is not an integer or a sequence of integers (bools, floats
            and strings are never ids).

        Notes
        -----
        Removed entries count in ``stats()["removed"]``, not in ``"evicted"``.
        The indexes forget them at once: no retrieval returns a removed id.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool()
        >>> t = np.full((4, 4, 3), 0.5, np.float32)
        >>> ids = [pool.add(t, dj.SolverResult(1.0, 0.9, 0.0)) for _ in range(4)]
        >>> pool.remove([0, 2, 2])
        2
        >>> pool.ids().tolist(), pool.stats()["removed"]
        ([1, 3], 2)
        """
        wanted = _as_id_list(ids, "ids")
        with self._lock.write():
            table = self._table
            unique = sorted(set(wanted))
            slots = np.array([table.slot_or_none(i) for i in unique], dtype=np.int64)
            unknown = [i for i, sl in zip(unique, slots.tolist()) if sl < 0]
            if unknown:
                raise UnknownIdError(
                    "ids",
                    unknown if len(unknown) <= 10 else unknown[:10] + ["..."],
                    "ids of live entries of this pool (issued, not evicted or removed)",
                    detail=f"{len(unknown)} unknown of {len(unique)}; nothing removed",
                )
            if slots.size:
                self._remove_slots(np.sort(slots), evicted=False)
            return int(slots.size)

    def __delitem__(self, eid) -> None:
        """``del pool[eid]``: remove one entry (see :meth:`remove`).

        Parameters
        ----------
        eid : int
            The id of a live entry.

        Raises
        ------
        UnknownIdError
            ``eid`` is not the id of a live entry, or not an integer (as for
            ``pool[eid]``). Also a ``KeyError``.
        """
        if not is_integer(eid):
            raise UnknownIdError("eid", eid, "the integer id of a live entry")
        try:
            self.remove(eid)
        except UnknownIdError:
            raise UnknownIdError("eid", int(eid), "the id of a live entry") from None

    def clear(self) -> int:
        """Remove every entry.

        The pool keeps its tensor shape, embedding mode, query cache and id
        counter: ids are not reused after a clear either.

        Returns
        -------
        int
            How many entries were removed (counted in ``stats()["removed"]``).

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool()
        >>> t = np.full((4, 4, 3), 0.5, np.float32)
        >>> _ = [pool.add(t, dj.SolverResult(1.0, 0.9, 0.0)) for _ in range(3)]
        >>> pool.clear(), len(pool)
        (3, 0)
        >>> pool.add(t, dj.SolverResult(1.0, 0.9, 0.0))
        3
        """
        with self._lock.write():
            live = self._table.live_slots()
            if live.size:
                self._remove_slots(live, evicted=False)
            return int(live.size)

    def update(
        self, eid, *, result=None, label=None, utility=None, tensor=None, embedding=None
    ) -> DreamEntry:
        """Change an entry in place; its id stays. Arguments left None stay as they are.

        Derived values follow: a new tensor recomputes the chroma signature,
        the spectral features and (for a pool computing its embeddings) the
        spatial thumbnail and the embedding; a new label or utility recomputes
        the embedding too (both are embedding features). The indexes see the
        new embedding at once. The entry keeps its timestamp and usage count.

        Parameters
        ----------
        eid : int
            The id of a live entry (any integer type).
        result : SolverResult or array_like of 3 floats, optional
            New ``(energy, coherence, violation)``. The entry is kept whatever
            its coherence (as with :meth:`add`).
        label : int, optional
            New class label, >= 0 (a label cannot be unset).
        utility : float, optional
            New utility (finite, within the float32 range); it also restarts
            the running mean of :meth:`record_feedback` at this value.
        tensor : array_like, optional
            New tensor, of the pool's tensor shape. For a pool of user
            embeddings, ``embedding`` must come with it.
        embedding : array_like, optional
            New vector of length ``embedding_dim``; only for a pool of user
            embeddings (alone, or with a tensor).

        Returns
        -------
        DreamEntry
            A snapshot of the updated entry.

        Raises
        ------
        UnknownIdError
            ``eid`` is not the id of a live entry (also a ``KeyError``).
        InvalidParameterError
            Values as refused by :meth:`add`; an ``embedding`` for a pool
            computing its own; a tensor without an embedding for a pool of
            user embeddings.
        DimensionMismatchError
            A tensor or embedding of the wrong shape.
        MemoryExceededError
            Re-indexing the entry would take the pool beyond its memory budget
            (the NN-descent index may take a delta slot for it).

        Notes
        -----
        Atomic: everything is validated and computed before the pool changes,
        and a refused update changes nothing. Updates of one entry from
        several threads apply one after the other.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool()
        >>> eid = pool.add(np.full((4, 4, 3), 0.5), dj.SolverResult(1.0, 0.9, 0.0), label=1)
        >>> e = pool.update(eid, label=2, result=dj.SolverResult(0.5, 0.95, 0.0))
        >>> e.id == eid, e.label, e.result.coherence
        (True, 2, 0.95)
        """
        if not is_integer(eid):
            raise UnknownIdError("eid", eid, "the integer id of a live entry")
        key = int(eid)
        res = None if result is None else _as_results([result], 1, "result")[0]
        lab = as_label(label)
        util = as_utility(utility)
        t5 = None
        if tensor is not None:
            arr = as_float_array(tensor, "tensor", ndim=(3, 4))
            t5, shape = as_tensor_batch(arr[None], "tensor")
            if self._table.shape is not None and shape != self._table.shape:
                raise DimensionMismatchError(
                    "tensor", tensor, f"tensor shape {self._table.shape} (the pool's), got {shape}"
                )
        emb = None
        if embedding is not None:
            emb = as_float_array(embedding, "embedding", ndim=1)
            dim = self.config.embedding_dim
            if emb.shape != (dim,):
                raise DimensionMismatchError("embedding", emb, f"a vector of length {dim}")
        # the stored tensor is read only to re-embed it under a new label or utility
        need_tensor = t5 is None and (lab is not None or util is not None)
        with self._lock.read():
            snap = self._update_snapshot(key, need_tensor)
        plan = self._plan_update(snap, t5, lab, util, emb, tensor)
        with self._lock.write():
            if self._table.slot_or_none(key) != snap["slot"] or self._rewrites != snap["gen"]:
                snap = self._update_snapshot(key, need_tensor)  # changed: plan again, lock held
                plan = self._plan_update(snap, t5, lab, util, emb, tensor)
            slot = snap["slot"]
            self._budget.check_rewrite(plan["embedding"] is not None)
            tensor_row = None if t5 is None else t5[0].reshape(self._table.shape)
            # plan: the computed embedding, chroma and spectral (None: unchanged)
            fields = dict(plan, tensor=tensor_row, result=res, label=lab, utility=util)
            self._table.rewrite(slot, fields)
            if plan["embedding"] is not None:
                self._indexes.after_update(np.array([slot], dtype=np.int64))
            self._rewrites += 1
            return self._table.entry(slot)

    def _update_snapshot(self, eid: int, need_tensor: bool) -> dict:
        """What planning an update of live ``eid`` reads (a lock held); the stored tensor
        only if ``need_tensor``."""
        table = self._table
        slot = table.slot_or_none(eid)
        if slot < 0:
            raise UnknownIdError("eid", eid, "the id of a live entry")
        s = table.store
        assert s is not None, "a live entry exists only once the table is set up"
        return {
            "slot": slot,
            "gen": self._rewrites,
            "mode": table.embedding_mode,
            "tensor": s.tensors[slot].copy() if need_tensor else None,
            "certainty": s.certainty[slot].copy() if "certainty" in s.columns else None,
            "label": int(s.labels[slot]),
            "utility": float(s.utility[slot]),
            "chroma": s.chroma[slot].copy(),
            "spectral": s.spectral[slot].copy(),
        }

    def _plan_update(self, snap, t5, label, utility, emb, tensor) -> dict:
        """New derived values of an update (``chroma``, ``spectral``, ``embedding``; None:
        unchanged), computed from the validated arguments and the entry's ``snap``."""
        # the descriptors of one entry, as an add computes them (describe_entries: one kernel
        # tree for adds and updates, nothing more to compile on an empty cache)
        plan: dict[str, Any] = {"chroma": None, "spectral": None, "embedding": None}
        if snap["mode"] == "user":
            if t5 is not None and emb is None:
                raise InvalidParameterError(
                    "embedding",
                    None,
                    "an embedding with the new tensor (this pool stores user embeddings)",
                )
            if emb is not None:
                plan["embedding"] = normalize_rows(emb[None])[0]
        elif emb is not None:
            raise InvalidParameterError(
                "embedding", emb, "None (this pool computes its own embeddings)"
            )
        cert = snap["certainty"]
        cert_in = cert[None] if cert is not None else np.empty((0, 0, 0, 0), np.float32)
        if t5 is not None:
            spectral, chroma, _ = describe_entries(t5, cert_in, cert is not None, 0)
            check_spectral(spectral, "tensor", tensor)
            if not np.isfinite(chroma).all():
                raise InvalidParameterError(
                    "tensor",
                    tensor,
                    "values whose chroma are finite",
                    detail="the computed chroma overflowed",
                )
            plan["chroma"], plan["spectral"] = chroma[0], spectral[0]
        if snap["mode"] == "mapper" and (
            t5 is not None or label is not None or utility is not None
        ):
            mapper = self._table.mapper
            assert mapper is not None, "a live entry exists only once the table is set up"
            old = snap["tensor"]
            tens = t5 if t5 is not None else old.reshape(1, *old.shape[:2], -1, old.shape[-1])
            chroma = plan["chroma"] if plan["chroma"] is not None else snap["chroma"]
            spectral = plan["spectral"] if plan["spectral"] is not None else snap["spectral"]
            lab = np.array([snap["label"] if label is None else label], dtype=np.int32)
            util = np.array([snap["utility"] if utility is None else utility])
            spatial = describe_entries(tens, cert_in, cert is not None, mapper.grid)[2]
            new = mapper.embed(chroma[None], spectral[None], lab, util, spatial=spatial)[0]
            if not np.isfinite(new).all():
                raise InvalidParameterError(
                    "tensor" if t5 is not None else "utility",
                    tensor if t5 is not None else utility,
                    "values whose embeddings are finite",
                    detail="the computed embeddings overflowed",
                )
            plan["embedding"] = new
        return plan

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, eid) -> bool:
        """True for the id of a live entry. Ids are integers (Python or numpy, any width);
        anything else (a bool, a float such as ``1.0``, a string) is never an id: False."""
        return self._table.contains(eid)

    def __getitem__(self, eid) -> DreamEntry:
        with self._lock.read():
            return self._table.entry(self._table.slot(eid))

    def ids(self) -> np.ndarray:
        """The live ids, oldest first.

        Returns
        -------
        numpy.ndarray
            int64 ``(len(pool),)``.
        """
        with self._lock.read():
            return self._table.ids()

    #: entries read per hold of the read lock while iterating
    ITER_CHUNK = 256

    def __iter__(self):
        """The entries live when iteration starts, oldest first (:class:`DreamEntry` snapshots).

        Safe beside writers in other threads: entries are read in chunks of
        :attr:`ITER_CHUNK`, each chunk under the read lock (consistent within
        a chunk; writers run between chunks). An entry evicted or removed
        before its chunk is read is skipped, never a ``KeyError``; entries
        added after iteration started are not included.
        """
        ids = self.ids().tolist()
        for lo in range(0, len(ids), self.ITER_CHUNK):
            with self._lock.read():
                slots = self._table.slots_of(ids[lo : lo + self.ITER_CHUNK])
                chunk = [self._table.entry(slot) for slot in slots]
            yield from chunk  # never yield while holding the lock

    def entries_of(self, ids) -> list:
        """Snapshots of those ``ids`` still live, all read under one read lock.

        :meth:`Hits.entries` calls this.

        Parameters
        ----------
        ids : array_like of int
            Entry ids; those evicted (or never issued) are skipped.

        Returns
        -------
        list of DreamEntry
            In the order of ``ids``.
        """
        with self._lock.read():
            table = self._table
            return [table.entry(slot) for slot in table.slots_of(np.asarray(ids).tolist())]

    def gather(self, column: str, ids) -> np.ndarray:
        """Copies of one storage column's rows for those ``ids`` still live, under one read lock.

        :meth:`Hits.tensors` calls this.

        Parameters
        ----------
        column : str
            A storage column, such as ``"tensors"`` or ``"embeddings"``.
        ids : array_like of int
            Entry ids; those evicted (or never issued) are skipped.

        Returns
        -------
        numpy.ndarray
            The rows, in the order of ``ids``.
        """
        with self._lock.read():
            return self._table.gather(column, ids)

    # ------------------------------------------------------------------ stats
    def used_bytes(self) -> int:
        """Logical bytes in use.

        Returns
        -------
        int
            Live entries' storage rows plus index arrays.
        """
        return self._budget.used_bytes()

    def memory_budget_stats(self) -> BudgetStats:
        """Memory use against the budget.

        Returns
        -------
        BudgetStats
            A named tuple ``(current_mb, max_mb, usage_ratio, count)``: MiB in
            use (logical, exact: live entries' storage rows plus index arrays),
            the budget in MiB (None when unbounded), their ratio (0.0 when
            unbounded) and the number of live entries. It unpacks as a plain
            4-tuple.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool(memory_budget_mb=1.0)
        >>> _ = pool.add(np.full((4, 4, 3), 0.5), dj.SolverResult(1.0, 0.9, 0.0))
        >>> s = pool.memory_budget_stats()
        >>> s.count, s.max_mb, 0.0 < s.usage_ratio < 0.01
        (1, 1.0, True)
        >>> current_mb, max_mb, usage_ratio, count = s
        """
        with self._lock.read():
            return self._budget.stats()

    def stats(self) -> dict:
        """Counts, means of the solver results, label counts, bytes and index state.

        Returns
        -------
        dict
            - ``count``: live entries.
            - ``next_id``: the id the next stored entry gets (ids issued so far).
            - ``evicted``: entries dropped by the eviction policy so far (also
              entries of a batch evicted within that batch).
            - ``removed``: entries removed by :meth:`remove`, ``del pool[eid]``
              and :meth:`clear` so far.
            - ``capacity``: rows allocated in the storage columns.
            - ``bytes_used``: logical bytes in use (live entries' storage rows
              plus index arrays; what the memory budget counts).
            - ``bytes_allocated``: bytes of the allocated storage columns plus
              index arrays.
            - ``entry_bytes``: bytes one more entry costs (see :attr:`entry_bytes`).
            - ``tensor_shape``: the per-entry tensor shape (None before the first add).
            - ``parallel_reads``: how many reads so far ran while another read
              held the lock (readers run concurrently).
            - ``mean_energy``, ``mean_coherence``, ``mean_violation``: means of
              the live entries' solver results (NaN for an empty pool).
            - ``label_counts``: label -> live entries with that label.
            - ``unlabeled``: live entries without a label.
            - ``index``: ``"exact"`` or ``"ann"``, the index answering queries.
            - ``ann_ready``: an NN-descent graph is in use.
            - ``ann_building``: an NN-descent build is running.
            - ``index_bytes``: bytes of the index arrays.
        """
        with self._lock.read():
            table = self._table
            s = table.store
            live = table.live_slots()
            out: dict[str, Any] = {
                "count": int(live.shape[0]),
                "next_id": table.next_id,
                "evicted": table.evicted,
                "removed": table.removed,
                "capacity": table.capacity,
                "bytes_used": self.used_bytes(),
                "bytes_allocated": 0 if s is None else table.allocated_bytes + self._indexes.nbytes,
                "entry_bytes": self.entry_bytes,
                "tensor_shape": table.shape,
                "parallel_reads": self._lock.shared_reads,
            }
            if live.size:
                assert s is not None, "live slots exist only once the table is set up"
                for col in ("energy", "coherence", "violation"):
                    out[f"mean_{col}"] = _mean(s.columns[col][live])
                labels, counts = np.unique(s.labels[live], return_counts=True)
            else:
                for col in ("energy", "coherence", "violation"):
                    out[f"mean_{col}"] = float("nan")
                labels, counts = np.empty(0, np.int64), np.empty(0, np.int64)
            out["label_counts"] = {int(lab): int(c) for lab, c in zip(labels, counts) if lab >= 0}
            out["unlabeled"] = int(sum(c for lab, c in zip(labels, counts) if lab < 0))
            out.update(self._indexes.stats())
            return out

    def to_pandas(self):
        """The live entries' metadata as a :class:`pandas.DataFrame`, one row per entry,
        oldest first.

        Columns: ``id``, ``label`` (nullable ``Int32``, ``<NA>`` for none),
        ``energy``, ``coherence``, ``violation``, ``utility`` (NaN for none),
        ``util_mean``, ``usage_count``, ``timestamp`` (seconds since the epoch,
        as ``time.time()``), ``chroma_0`` ... ``chroma_{C-1}`` (the chroma
        signature) and the spectral features ``entropy``,
        ``low_band_energy``, ``mid_band_energy``, ``high_band_energy``,
        ``dominant_frequency``, ``mean_psd`` (see :class:`SpectralFeatures`).
        Tensors and embeddings are left out (use :meth:`gather`).

        Returns
        -------
        pandas.DataFrame
            A copy: changing it does not change the pool.

        Raises
        ------
        FeatureUnavailableError
            pandas is not installed (``pip install 'dreamjit[pandas]'``).

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool()
        >>> t = np.full((4, 4, 3), 0.5, np.float32)
        >>> _ = pool.add(t, dj.SolverResult(1.0, 0.9, 0.0), label=2)
        >>> _ = pool.add(t, dj.SolverResult(2.0, 0.8, 0.1))
        >>> df = pool.to_pandas()
        >>> df[["id", "label", "energy"]].to_string(index=False).split()
        ['id', 'label', 'energy', '0', '2', '1.0', '1', '<NA>', '2.0']
        """
        try:
            import pandas as pd
        except ImportError:
            raise FeatureUnavailableError(
                "pandas", None, "pandas installed (pip install 'dreamjit[pandas]')"
            ) from None
        with self._lock.read():
            c = self._table.columns()
        labels = pd.array(c.labels, dtype="Int32")
        labels[c.labels < 0] = pd.NA
        data: dict[str, Any] = {
            "id": c.ids,
            "label": labels,
            "energy": c.energy,
            "coherence": c.coherence,
            "violation": c.violation,
            "utility": c.utility,
            "util_mean": c.util_mean,
            "usage_count": c.usage,
            "timestamp": c.timestamp,
        }
        chroma = c.chroma
        for j in range(chroma.shape[1]):
            data[f"chroma_{j}"] = chroma[:, j]
        for j, name in enumerate(SpectralFeatures.__dataclass_fields__):
            data[name] = c.spectral[:, j]
        # np.array: writable copies, so the frame never shares the read-only column copies
        return pd.DataFrame(
            {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in data.items()}
        )

    def check_invariants(self) -> None:
        """Raise :class:`CriticalStateError` if the bookkeeping disagrees with storage or
        the pool is beyond its limits (``max_size``, the memory budget)."""
        problems = self._table.problems() + self._budget.problems()
        if problems:
            raise CriticalStateError(
                "pool", repr(self), "consistent bookkeeping", detail="; ".join(problems)
            )

    def save(self, path) -> str:
        """Write the pool to one ``.npz`` file, atomically.

        The file holds a JSON header (format version, config, counters, a
        checksum of every array and of the header itself) and the live storage
        columns, stored uncompressed; nothing is pickled. It is written to a
        temporary file in the same directory, fsynced, then moved over
        ``path`` with ``os.replace``, so ``path`` always holds a complete file.
        A process killed mid-save can leave a ``.dreamjit-<name>-<random>.tmp``
        file beside it (never read by :meth:`load`; safe to delete). Saving
        onto a symbolic link writes through to its target; overwriting a file
        keeps its mode (a new file gets ``0o666`` minus the umask).
        ``python -m dreamjit inspect FILE`` prints the header and checks the
        checksums.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write (conventionally ending in ``.npz``).

        Returns
        -------
        str
            The path written.

        Examples
        --------
        >>> import os, tempfile, numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool()
        >>> eid = pool.add(np.full((4, 4, 3), 0.5), dj.SolverResult(1.0, 0.9, 0.0), label=3)
        >>> path = pool.save(os.path.join(tempfile.mkdtemp(), "pool.npz"))
        >>> loaded = dj.DreamPool.load(path)
        >>> loaded.ids().tolist(), loaded[eid].label
        ([0], 3)
        """
        from .io import save_pool

        return save_pool(self, path)

    @classmethod
    def load(cls, path):
        """Read a pool written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The file.

        Returns
        -------
        DreamPool
            An equal pool: same config, ids, entries and counters.

        Raises
        ------
        IndexCorruptedError
            Any damage: truncation, a checksum mismatch, a wrong format
            version, inconsistent columns or counters.
        FileNotFoundError
            No file at ``path``.
        """
        from .io import load_pool

        return load_pool(cls, path)

    def fingerprint(self) -> str:
        """Digest of all storage and bookkeeping.

        Returns
        -------
        str
            Equal before and after a refused call (what the tests compare).
        """
        with self._lock.read():
            return self._table.fingerprint()

    def __repr__(self):
        return (
            f"DreamPool(count={len(self)}, max_size={self.config.max_size}, "
            f"shape={self._table.shape}, eviction={self.config.eviction!r})"
        )

    # ------------------------------------------------------------------ retrieval
    def rebuild_index(self, block: bool = False, timeout: float | None = None) -> bool:
        """Rebuild the NN-descent index now (in the background unless ``block``).

        Below ``ann_threshold`` (or with ``use_ann=False``) there is nothing to
        rebuild: the exact index is always current. Queries never wait for a
        background build: they use the previous graph (or the exact index)
        until the new one is ready. A build running already is followed by
        another, so the new graph covers the entries live at this call.

        Parameters
        ----------
        block : bool, default False
            Wait until the new graph is built and in use.
        timeout : float, optional
            With ``block``: wait at most this many seconds. Each build is also
            bounded by ``ann_build_timeout``.

        Returns
        -------
        bool
            False if a build is still running on return, else True.
        """
        with self._lock.write():
            ann = self._indexes.rebuild()
            if ann is None:
                return True
        if block:
            return ann.wait(timeout)
        return not ann.building

    def retrieve_similar(self, chroma, k=None, label=None, where=None) -> Hits:
        """Hard retrieval: exact cosine similarity of chroma signatures.

        Parameters
        ----------
        chroma : array_like (C,), tensor or Query
            The colour signature to match (a tensor is reduced to its signature).
        k : int, optional
            Hits wanted (default ``retrieval_limit``); fewer if the pool has fewer.
        label : int, optional
            Only entries with this label (a Query's label is used when omitted).
        where : optional
            A hard filter (see :meth:`retrieve_soft`); combined with ``label``.

        Returns
        -------
        Hits
            Ids and cosine similarities, best first (ties to the lower id).

        Raises
        ------
        DimensionMismatchError
            ``chroma`` does not have one value per channel.
        InvalidParameterError
            NaN/inf values, ``k < 1``, a Query without chroma, or a bad ``where``.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import example_pool
        >>> pool, tensors, ids = example_pool()
        >>> hits = pool.retrieve_similar([0.8, 0.3, 0.2], k=3)
        >>> len(hits), bool(np.all(np.diff(hits.scores) <= 0))
        (3, True)
        >>> ones = pool.retrieve_similar([0.8, 0.3, 0.2], k=3, label=1)
        >>> all(e.label == 1 for e in ones.entries())
        True
        """
        q = self._retriever.chroma_query(chroma)
        k, label, spec = self._similar_args(chroma, k, label, where)
        with self._lock.read():
            mask, _ = self._retriever.filter(spec)
            slots, cos = self._retriever.hard(q, k, label, mask)
            return self._finish(slots, cos, cos)

    def _similar_args(self, chroma, k, label, where):
        """``(k, label, where spec)`` of hard retrieval, validated."""
        k = as_k(k, default=self.config.retrieval_limit)
        label = as_label(label)
        if label is None and isinstance(chroma, Query):
            label = as_label(chroma.label)
        return k, label, as_where(where)

    def retrieve_similar_batch(self, chromas, k=None, label=None, where=None) -> BatchHits:
        """:meth:`retrieve_similar` for many queries at once, in parallel over queries.

        Parameters
        ----------
        chromas : array_like or sequence
            ``(m, C)`` chroma signatures, a tensor batch ``(m, *tensor_shape)``
            (each reduced to its signature), or a sequence of anything
            :meth:`retrieve_similar` takes for one query.
        k : int, optional
            Hits wanted per query (default ``retrieval_limit``).
        label : int, optional
            Only entries with this label (for every query).
        where : optional
            A hard filter, as in :meth:`retrieve_soft`.

        Returns
        -------
        BatchHits
            ``ids`` (m, w) and ``scores`` = ``similarity`` (m, w), ``w = min(k,
            max_size)``: row ``i`` is what ``retrieve_similar(chromas[i], k,
            label, where)`` returns (the same ids and bits), padded with -1 /
            NaN where fewer entries match.

        Raises
        ------
        DimensionMismatchError, InvalidParameterError
            As :meth:`retrieve_similar`, for any query (the message names its index).
        EmptyCollectionError
            No queries.

        Examples
        --------
        >>> from dreamjit.synthetic import example_pool
        >>> pool, tensors, ids = example_pool()
        >>> batch = pool.retrieve_similar_batch(tensors[:4], k=3)
        >>> batch.ids.shape, int(batch.ids[2, 0]) == int(ids[2])
        ((4, 3), True)
        """
        k, label, spec = self._similar_args(None, k, label, where)
        C = self._retriever.chroma_batch(chromas)
        with self._lock.read():
            mask, _ = self._retriever.filter(spec)
            slots, cos = self._retriever.hard_batch(C, k, label, mask)
            return self._finish_batch(slots, cos, cos)

    def retrieve_soft(self, query, k=None, weights=None, where=None) -> Hits:
        """Soft retrieval: embedding -> index candidates -> hybrid rerank.

        The index returns ``max(4k, 32)`` candidates by embedding similarity;
        they are reranked by ``alpha*similarity + beta*utility +
        gamma*class_match`` with a duplicate penalty (see
        :class:`RetrievalWeights`). Scores are the rerank values.

        Parameters
        ----------
        query : Query, tensor or array_like
            A :class:`Query`; a tensor (as ``Query.from_tensor``); a chroma
            vector; or, for a pool of user embeddings, the query vector (also
            as ``Query(embedding=v)``).
        k : int, optional
            Hits wanted (default ``retrieval_limit``).
        weights : RetrievalWeights, optional
            The rerank weights; ``RetrievalWeights()`` when omitted.
        where : int, sequence, numpy array or callable, optional
            A hard filter: only entries it selects are returned, always
            ``min(k, number selected)`` of them. An integer label; a list,
            tuple or set of labels; an integer numpy array of entry ids (ids
            evicted or removed since match nothing; ids never issued are an
            error); or a callable taking the pool's columns (a read-only
            namespace of aligned numpy arrays, one row per live entry, oldest
            first: ``ids``, ``labels``, ``energy``, ``coherence``,
            ``violation``, ``utility``, ``util_mean``, ``usage``,
            ``timestamp``) and returning a bool mask of that length, e.g.
            ``where=lambda c: (c.labels == 2) & (c.coherence >= 0.8)``. The
            callable runs under the pool's read lock: it must not add to the
            pool. A narrow filter is searched exactly over the matching entries;
            a wide one by the index in use.

        Returns
        -------
        Hits
            Ids and rerank values in pick order: the first pick's value is its
            hybrid score, each later one ``lambda_*score - delta*max_similarity``
            to the entries picked before it.

        Raises
        ------
        InvalidParameterError
            A bad query (NaN/inf, no direction), ``k < 1``, bad ``weights`` or a
            bad ``where`` (wrong type, a callable that raises or returns
            something other than a bool mask of one value per live entry).

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import example_pool
        >>> pool, tensors, ids = example_pool()
        >>> probe = pool[ids[7]]
        >>> hits = pool.retrieve_soft(dj.Query.from_tensor(probe.tensor, label=probe.label), k=3)
        >>> int(hits.ids[0]) == int(ids[7])
        True
        >>> odd = lambda c: c.ids % 2 == 1
        >>> hits = pool.retrieve_soft(dj.Query.from_tensor(probe.tensor), k=3, where=odd)
        >>> all(i % 2 == 1 for i in hits.ids.tolist())
        True
        """
        if type(k) is int and 0 < k <= MAX_ENTRIES and type(weights) is RetrievalWeights:
            spec = None if where is None else as_where(where)  # the checks of _soft_args
        else:
            k, weights, spec = self._soft_args(k, weights, where)
        with self._lock.read():
            return self._finish(*self._retriever.soft(query, k, weights, spec))

    def _soft_args(self, k, weights, where):
        """``(k, weights, where spec)`` of soft retrieval, validated."""
        k = as_k(k, default=self.config.retrieval_limit)
        if weights is None:
            weights = DEFAULT_WEIGHTS
        elif not isinstance(weights, RetrievalWeights):
            raise InvalidParameterError("weights", weights, "a RetrievalWeights or None")
        return k, weights, as_where(where)

    def retrieve_soft_batch(self, queries, k=None, weights=None, where=None) -> BatchHits:
        """:meth:`retrieve_soft` for many queries at once, in parallel over queries.

        Parameters
        ----------
        queries : array_like or sequence
            For a pool of user embeddings, ``(m, embedding_dim)`` query vectors;
            otherwise ``(m, C)`` chroma vectors or a tensor batch ``(m,
            *tensor_shape)``; or a sequence of anything :meth:`retrieve_soft`
            takes for one query (e.g. :class:`Query` objects).
        k : int, optional
            Hits wanted per query (default ``retrieval_limit``).
        weights : RetrievalWeights, optional
            The rerank weights; ``RetrievalWeights()`` when omitted.
        where : optional
            A hard filter, as in :meth:`retrieve_soft` (the same for every query).

        Returns
        -------
        BatchHits
            ``ids`` (m, w), ``scores`` and ``similarity`` (m, w), ``w = min(k,
            max_size)``: row ``i`` holds what ``retrieve_soft(queries[i], k,
            weights, where)`` returns on an exactly searched pool (the same ids
            and bits), padded with -1 / NaN where fewer entries match. With the
            NN-descent index the candidates come from its batch search, which
            may differ from single queries as approximate results do.

        Raises
        ------
        DimensionMismatchError
            A query of the wrong length: ``embedding_dim`` for a pool of user embeddings,
            else one value per channel (the message names the query's index).
        EmptyCollectionError
            ``queries`` holds no query.
        InvalidParameterError
            As :meth:`retrieve_soft`, for any query (the message names its index).

        Examples
        --------
        >>> from dreamjit.synthetic import example_pool
        >>> pool, tensors, ids = example_pool()
        >>> batch = pool.retrieve_soft_batch(tensors[:4], k=3)
        >>> one = pool.retrieve_soft(tensors[1], k=3)
        >>> len(batch), batch.ids.shape, batch[1].ids.tolist() == one.ids.tolist()
        (4, (4, 3), True)
        """
        k, weights, spec = self._soft_args(k, weights, where)
        with self._lock.read():
            Q, labels = self._retriever.embedding_batch(queries)
            mask, count = self._retriever.filter(spec)
            return self._finish_batch(
                *self._retriever.soft_batch(Q, labels, k, weights, mask, count)
            )

    def retrieve_diverse(
        self,
        query,
        k=None,
        lambda_=0.5,
        fast=False,
        min_similarity=None,
        sample_size=None,
        where=None,
    ) -> Hits:
        """Diverse retrieval: greedy maximal marginal relevance over the soft candidates.

        ``lambda_`` trades relevance (1) against diversity (0). ``fast=True``
        stops early once no candidate's relevance reaches ``min_similarity``
        (default 0.0) and compares against a sample of ``sample_size``
        (default 8) chosen entries instead of all of them.

        Parameters
        ----------
        query : Query, tensor or array_like
            As in :meth:`retrieve_soft`.
        k : int, optional
            Picks wanted (default ``retrieval_limit``).
        lambda_ : float, default 0.5
            In [0, 1]: 1 ranks by relevance only, 0 by diversity only (after
            the first pick).
        fast : bool, default False
            Early stop and sampled comparisons, as above.
        min_similarity : float, optional
            With ``fast``: the relevance below which picking stops (default 0.0).
        sample_size : int, optional
            With ``fast``: how many chosen entries each candidate is compared
            against (default 8).
        where : optional
            A hard filter, as in :meth:`retrieve_soft`.

        Returns
        -------
        Hits
            Ids in pick order; scores as in
            :func:`dreamjit.maximal_marginal_relevance` (the first pick's
            cosine relevance, then the MMR value that won each later pick).

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import example_pool
        >>> pool, tensors, ids = example_pool()
        >>> q = dj.Query.from_tensor(tensors[0])
        >>> relevant = pool.retrieve_diverse(q, k=4, lambda_=1.0)
        >>> diverse = pool.retrieve_diverse(q, k=4, lambda_=0.0)
        >>> int(relevant.ids[0]) == int(diverse.ids[0])   # the first pick is the most relevant
        True
        >>> (pool.diversity_stats(diverse)["embedding_dispersion"]
        ...  >= pool.diversity_stats(relevant)["embedding_dispersion"])
        True
        """
        k = as_k(k, default=self.config.retrieval_limit)
        lambda_, fast, min_sim, sample = as_mmr_options(lambda_, fast, min_similarity, sample_size)
        spec = as_where(where)
        with self._lock.read():
            return self._finish(
                *self._retriever.diverse(query, k, lambda_, fast, min_sim, sample, spec)
            )

    def retrieve(self, query, k=None, mode=RetrievalMode.SOFT, where=None) -> Hits:
        """Retrieve by ``mode``: HARD (chroma cosine), SOFT (hybrid rerank) or
        HYBRID (both rankings fused by reciprocal rank, best first).

        Parameters
        ----------
        query : Query, tensor or array_like
            As in :meth:`retrieve_soft`; HARD needs a chroma signature.
        k : int, optional
            Hits wanted (default ``retrieval_limit``).
        mode : RetrievalMode or str, default RetrievalMode.SOFT
            ``HARD`` calls :meth:`retrieve_similar`, ``SOFT`` calls
            :meth:`retrieve_soft`; ``"hard"``, ``"soft"``, ``"hybrid"`` work too.
        where : optional
            A hard filter, as in :meth:`retrieve_soft` (both HYBRID lists obey it).

        Returns
        -------
        Hits
            Best first, scored as the mode's method scores them (HYBRID: the
            fused reciprocal-rank values).

        Notes
        -----
        HYBRID fuses the two rankings by reciprocal rank (each entry scores
        ``sum(1 / (60 + rank))`` over the hard and soft lists, ``2k`` deep),
        because chroma cosines and rerank values are on different scales:
        mixing raw scores would let the hard list win every time.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import example_pool
        >>> pool, tensors, ids = example_pool()
        >>> q = dj.Query.from_tensor(tensors[3])
        >>> hard = pool.retrieve(q, k=3, mode=dj.RetrievalMode.HARD)
        >>> hard.ids.tolist() == pool.retrieve_similar(q, k=3).ids.tolist()
        True
        >>> len(pool.retrieve(q, k=3, mode="hybrid"))
        3
        """
        mode = as_retrieval_mode(mode)
        if mode is RetrievalMode.HARD:
            return self.retrieve_similar(query, k=k, where=where)
        if mode is RetrievalMode.SOFT:
            return self.retrieve_soft(query, k=k, where=where)
        k = as_k(k, default=self.config.retrieval_limit)
        q = self._retriever.as_query(query)
        hard_q = None if q.chroma is None else self._retriever.chroma_query(q)
        as_label(q.label)  # refuse a bad label before any work
        spec = as_where(where)
        with self._lock.read():
            return self._finish(*self._retriever.hybrid(q, hard_q, k, spec))

    def diversity_stats(self, hits: Hits | None = None) -> dict:
        """Mean pairwise dispersion (1 - cosine) of chroma signatures and of
        embeddings, over the pool or over ``hits``.

        Parameters
        ----------
        hits : Hits, optional
            Ids of ``hits`` evicted since the retrieval are skipped: the
            statistics cover the hits still in the pool, and ``count`` says how
            many. None: the whole pool.

        Returns
        -------
        dict
            ``count``, ``chroma_dispersion``, ``embedding_dispersion``.
        """
        with self._lock.read():
            table = self._table
            if table.store is None:
                return {"count": 0, "chroma_dispersion": 0.0, "embedding_dispersion": 0.0}
            if hits is None:
                slots = table.live_slots()
            elif isinstance(hits, Hits):
                slots = table.slots_of(hits.ids.tolist())  # evicted: skipped
            else:
                raise InvalidParameterError("hits", hits, "a Hits or None")
            return self._retriever.dispersion(slots)

    def query_cache_stats(self) -> CacheStats:
        """Counters of the query-embedding cache.

        Returns
        -------
        CacheStats
            A named tuple ``(hits, misses, hit_rate)`` (``hit_rate`` 0.0 before
            any query); it unpacks as a plain 3-tuple.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import example_pool
        >>> pool, tensors, ids = example_pool()
        >>> _ = pool.retrieve_soft([0.5, 0.4, 0.3]); _ = pool.retrieve_soft([0.5, 0.4, 0.3])
        >>> pool.query_cache_stats()
        CacheStats(hits=1, misses=1, hit_rate=0.5)
        """
        return self._retriever.cache.stats()

    def _finish(self, slots, scores, similarity, ids=None) -> Hits:
        """Hits for slots (read lock held); counts the usage of each returned entry.
        ``ids``: the slots' ids when the caller has them already (the fused soft path)."""
        if slots.shape[0] == 0:
            return Hits(NO_SLOTS, NO_SCORES, self, similarity=NO_SCORES)
        if ids is None:
            with self._usage_lock:
                ids = self._table.use(slots)  # slots of one result are distinct
        else:
            with self._usage_lock:
                self._table.count_uses(slots)
        return Hits.owned(ids, scores, similarity, self)

    def _finish_batch(self, slots, scores, similarity) -> BatchHits:
        """BatchHits for ``(m, w)`` slots padded with -1 (read lock held); counts the usage
        of each returned entry once per query that returned it."""
        found = slots >= 0
        ids = np.full(slots.shape, -1, dtype=np.int64)
        if found.any():
            ids[found] = self._table.ids_at(slots[found])
            used, times = np.unique(slots[found], return_counts=True)
            with self._usage_lock:
                self._table.count_usage(used, times)
        return BatchHits(ids, scores, self, similarity=similarity)


def _as_id_list(ids, name) -> list:
    """Entry ids as a list of Python ints: one integer, or a sequence or 1-d array of them
    (any integer type; bools, floats and strings refused)."""
    if is_integer(ids):
        return [int(ids)]
    if isinstance(ids, (set, frozenset)):
        ids = list(ids)
    if ids is None or isinstance(ids, (str, bytes, dict)):
        raise InvalidParameterError(name, ids, "an integer entry id or a sequence of them")
    try:
        arr = np.asarray(ids)
    except Exception as exc:  # ragged nesting and the like
        raise InvalidParameterError(
            name, ids, "an integer entry id or a sequence of them", detail=str(exc)
        ) from None
    if arr.ndim == 1 and arr.size == 0:
        return []
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "O" and arr.ndim == 1 and all(is_integer(i) for i in arr.tolist()):
            return [int(i) for i in arr.tolist()]  # Python ints beyond 64 bits
        raise InvalidParameterError(name, ids, "an integer entry id or a sequence of them")
    return arr.tolist()


def _as_results(results, n, name) -> np.ndarray:
    """``(n, 3)`` float64 energy/coherence/violation from results in any accepted form."""
    if isinstance(results, np.ndarray) and results.dtype.kind != "O":
        arr = as_float_array(results, name, dtype=np.float64, ndim=(1, 2))
        arr = arr.reshape(-1, 3) if arr.ndim == 1 and arr.shape[0] == 3 and n == 1 else arr
    else:
        seq = as_sequence(results, name, "SolverResult(s) or an (n, 3) array")
        rows = []
        for r in seq:
            if all(hasattr(r, a) for a in ("energy", "coherence", "violation")):
                r = (r.energy, r.coherence, r.violation)
            rows.append(r)
        arr = as_float_array(rows, name, dtype=np.float64, ndim=2, allow_empty=True)
    if arr.ndim != 2 or arr.shape != (n, 3):
        raise DimensionMismatchError(name, arr, f"{n} results of (energy, coherence, violation)")
    return arr


def _as_labels(labels, n, name) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, dtype=np.int32)
    if isinstance(labels, np.ndarray) and labels.dtype.kind != "O":
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise InvalidParameterError(
                name, labels, "a 1-d array of integer labels >= 0 (-1 for none)"
            )
        valid = (labels >= -1) & (labels <= np.iinfo(np.int32).max)
        if labels.shape[0] == n and valid.all():  # all fine: no check per label
            return labels.astype(np.int32)
        seq = [None if lab == -1 else lab for lab in labels.tolist()]
    else:
        seq = as_sequence(labels, name, "a sequence of integer labels >= 0 (or None items)")
    if len(seq) != n:
        raise DimensionMismatchError(name, labels, f"{n} labels")
    return np.array([-1 if lab is None else as_label(lab, name) for lab in seq], dtype=np.int32)


def _as_utilities(utilities, n, name) -> np.ndarray:
    if utilities is None:
        return np.full(n, np.nan)
    if isinstance(utilities, np.ndarray) and utilities.dtype.kind != "O":
        arr = as_float_array(utilities, name, dtype=np.float64, ndim=1, allow_empty=True)
        check_utility_range(arr, name)
    else:
        seq = as_sequence(utilities, name, "a sequence of finite utilities (or None items)")
        arr = np.array(
            [np.nan if u is None else as_utility(u, name) for u in seq], dtype=np.float64
        )
    if arr.shape != (n,):
        raise DimensionMismatchError(name, arr, f"{n} utilities")
    return arr


def _mean(values: np.ndarray) -> float:
    """Mean of finite float64 values, finite even when their sum overflows (results
    near the float64 limit): then computed on values scaled by their largest magnitude."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(values.mean())
    if not np.isfinite(mean):
        scale = float(np.abs(values).max())
        mean = scale * float((values / scale).mean())
        mean = min(max(mean, float(values.min())), float(values.max()))
    return mean

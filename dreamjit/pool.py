"""``DreamPool``: the memory-bounded pool of scored tensors."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ._rwlock import RWLock, after_fork
from ._storage import ColumnStore, column_spec
from ._validate import (as_bool, as_float_array, as_label, as_sequence, as_tensor_batch,
                        as_utility, check_utility_range)
from .config import PoolConfig
from .embedding import EmbeddingMapper
from .errors import (DimensionMismatchError, EmptyCollectionError, InvalidConfigError,
                     InvalidParameterError, MemoryExceededError)
from .kernels.budget import admission_plan
from .kernels.cosine import normalize_rows
from .kernels.spectral import describe_batch
from .kernels.thumbnail import thumbnail_batch
from .features import check_spectral
from ._pool_views import PoolViewsMixin
from .retrieval import RetrievalMixin

__all__ = ["DreamPool"]

logger = logging.getLogger("dreamjit")


class _Batch:
    """A validated, fully computed batch, ready to commit."""

    __slots__ = ("shape", "tensors", "certainty", "results", "labels", "utility",
                 "embeddings", "chroma", "spectral", "user_embeddings")


class DreamPool(PoolViewsMixin, RetrievalMixin):
    """An in-process, memory-bounded pool of scored tensors ("dreams").

    Parameters
    ----------
    config : PoolConfig, optional
        Settings; ``PoolConfig()`` defaults when omitted.
    **overrides
        Settings to change from ``config`` (e.g. ``DreamPool(max_size=50)``).

    Notes
    -----
    A pool is also a read-only container of its entries: ``len(pool)``,
    ``eid in pool``, ``pool[eid]`` (a :class:`DreamEntry`; ``KeyError`` for
    an id never issued or since evicted), ``pool.ids()`` (live ids, oldest
    first) and ``iter(pool)`` (the entries, oldest first). Ids are integers
    (Python or numpy, any width); a bool, a float (even ``1.0``) or a string
    is never an id: ``in`` gives False and ``pool[key]`` raises ``KeyError``.

    Every method is thread-safe. Reads (retrievals, lookups, iteration,
    statistics, :meth:`save`) run concurrently; writes (adds,
    :meth:`record_feedback`, :meth:`rebuild_index`) are exclusive, and a
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
        self.config = config
        self._lock = RWLock()
        self._usage_lock = threading.Lock()  # readers count usage concurrently
        self._store: ColumnStore | None = None
        self._shape: tuple | None = None
        self._mapper: EmbeddingMapper | None = None
        self._embedding_mode: str | None = None  # "mapper" or "user", fixed by the first add
        self._slot_of: dict[int, int] = {}
        self._next_id = 0
        self._evicted = 0
        self._adding = None  # slots written by the add in progress
        self._init_retrieval()
        if config.tensor_shape is not None:
            self._check_fits(config.tensor_shape)  # MemoryExceededError, not a failed allocation
            self._setup(config.tensor_shape)
        after_fork(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: locks another thread of the parent held are released here
        (the readers-writer lock and the index reset themselves)."""
        self._usage_lock = threading.Lock()
        if getattr(self, "_cache", None) is not None and hasattr(self._cache, "_lock"):
            self._cache._lock = threading.Lock()

    # ------------------------------------------------------------------ set-up
    def _setup(self, shape: tuple) -> None:
        cfg = self.config
        spec = column_spec(shape, cfg.embedding_dim, cfg.store_certainty)
        self._store = ColumnStore(spec, cfg.max_size)
        self._shape = tuple(shape)
        self._mapper = _make_mapper(cfg, shape)
        self._reset_index()

    @property
    def tensor_shape(self) -> tuple | None:
        """The per-entry tensor shape (None until the first add)."""
        return self._shape

    @property
    def entry_bytes(self) -> int:
        """Logical bytes one more entry costs: its storage rows plus what adding it can
        add to the index (a delta slot of the NN-descent index when ``use_ann``)."""
        if self._store is None:
            return 0
        return self._store.entry_bytes + self._index_bytes_per_entry()

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
        batch = self._prepare(tensor, [result], [label], [utility],
                              None if embedding is None else [embedding],
                              None if certainty is None else [certainty], single=True)
        return int(self._commit(batch)[0])

    def add_if_coherent(self, tensor, result, label=None, utility=None, embedding=None,
                        certainty=None) -> int | None:
        """Store the tensor only if ``result.coherence >= coherence_threshold``.

        Parameters are those of :meth:`add`; input is validated the same way
        whether or not the tensor is stored, except for the checks on the
        computed features (a tensor whose spectral power overflows float32),
        which run only for tensors that are stored.

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
            self._prepare(tensor, [result], [label], [utility],
                          None if embedding is None else [embedding],
                          None if certainty is None else [certainty], single=True, compute=False)
            return None
        return self.add(tensor, result, label=label, utility=utility, embedding=embedding,
                        certainty=certainty)

    def add_batch(self, tensors, results=None, labels=None, utilities=None, embeddings=None,
                  certainties=None, only_coherent=True) -> np.ndarray:
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
        only_coherent = as_bool(only_coherent, "only_coherent")
        if results is None:
            from .features import evaluate_batch

            results = evaluate_batch(tensors)
        batch = self._prepare(tensors, results, labels, utilities, embeddings, certainties,
                              only_coherent=only_coherent)
        if batch is None:
            return np.empty(0, dtype=np.int64)
        return self._commit(batch)

    def _prepare(self, tensors, results, labels, utilities, embeddings, certainties,
                 single=False, only_coherent=False, compute=True):
        """Validate everything, then compute features; nothing is stored here."""
        name = "tensor" if single else "tensors"
        if single:
            arr = as_float_array(tensors, name, ndim=(3, 4))
            t5, shape = as_tensor_batch(arr[None], name)
        else:
            t5, shape = as_tensor_batch(tensors, name)
        n = t5.shape[0]
        expected = self._shape if self._shape is not None else self.config.tensor_shape
        if expected is not None and shape != expected:
            raise DimensionMismatchError(name, tensors if single else t5,
                                         f"tensor shape {expected} (the pool's), got {shape}")
        res = _as_results(results, n, "result" if single else "results")
        lab = _as_labels(labels, n, "label" if single else "labels")
        util = _as_utilities(utilities, n, "utility" if single else "utilities")
        cert = self._as_certainty(certainties, t5, shape, "certainty" if single else "certainties")
        emb = self._as_embeddings(embeddings, n, "embedding" if single else "embeddings")
        self._check_fits(shape)
        if only_coherent:
            keep = res[:, 1] >= self.config.coherence_threshold
            if compute and not keep.all():
                logger.info("add_batch: %d of %d entries below coherence_threshold=%g, not stored",
                            int(n - keep.sum()), n, self.config.coherence_threshold)
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
        b.spectral, b.chroma = describe_batch(t5, cert_in, cert is not None)
        check_spectral(b.spectral, name, tensors)
        if emb is not None:
            b.embeddings = normalize_rows(emb)
        else:
            mapper = self._mapper or _make_mapper(self.config, shape)
            spatial = thumbnail_batch(t5, cert_in, cert is not None, mapper.grid)
            b.embeddings = mapper.embed(b.chroma, b.spectral, lab, util, spatial=spatial)
        for column in ("chroma", "embeddings"):  # never store what save() could not load back
            if not np.isfinite(getattr(b, column)).all():
                raise InvalidParameterError(name, tensors, f"values whose {column} are finite",
                                            detail=f"the computed {column} overflowed")
        return b

    def _as_certainty(self, certainties, t5, shape, name):
        if certainties is None:
            return None
        if not self.config.store_certainty:
            raise InvalidParameterError(name, certainties,
                                        "None (this pool was configured with store_certainty=False)")
        cert = as_float_array(certainties, name, ndim=(3, 4) if len(shape) == 4 else (3,))
        want = (t5.shape[0],) + t5.shape[1:4]
        cert = cert.reshape(cert.shape[0], *cert.shape[1:3], -1) if cert.ndim == 3 else cert
        if cert.shape != want:
            raise DimensionMismatchError(name, cert, f"shape {want[1:]} per entry (rows, cols, layers)")
        if (cert < 0).any():
            raise InvalidParameterError(name, cert, "certainties >= 0")
        return cert

    def _as_embeddings(self, embeddings, n, name):
        mode = self._embedding_mode
        if embeddings is None:
            if mode == "user":
                raise InvalidParameterError(name, None, "an embedding for every entry "
                                            "(this pool stores user embeddings)")
            return None
        if mode == "mapper":
            raise InvalidParameterError(name, embeddings, "None (this pool computes its own embeddings)")
        emb = as_float_array(embeddings, name, ndim=2)
        dim = self.config.embedding_dim
        if emb.shape != (n, dim):
            raise DimensionMismatchError(name, emb, f"{n} vectors of length embedding_dim={dim}")
        return emb

    def _check_fits(self, shape):
        """Refuse an entry larger than the whole budget (the same for every add)."""
        budget = self.config.budget_bytes
        if budget is None:
            return
        if self._store is not None:
            store_bytes = self._store.entry_bytes
        else:
            spec = column_spec(shape, self.config.embedding_dim, self.config.store_certainty)
            store_bytes = ColumnStore(spec, 1, initial=0).entry_bytes
        entry = store_bytes + self._index_bytes_per_entry(store_bytes)
        if entry > budget:
            raise MemoryExceededError("tensor", shape, f"an entry of at most {budget} bytes "
                                      f"(memory_budget_mb={self.config.memory_budget_mb}); "
                                      f"one entry takes {entry} bytes")

    def _entry_limit(self) -> int:
        """Most live entries allowed: max_size and the budget's share for entries.

        The index's bytes are what it holds now (its exact ``nbytes``); each
        entry is charged what adding it can add to the index (``entry_bytes``),
        so after the add ``entries + index <= eviction_threshold * budget``.
        """
        cfg = self.config
        budget = cfg.budget_bytes
        if budget is None:
            return cfg.max_size
        entry = self.entry_bytes
        room = int(cfg.eviction_threshold * budget) - self._index_nbytes()
        by_budget = max(room // entry, 1)  # an entry that fits the whole budget is always admitted
        return int(min(cfg.max_size, by_budget))

    def _make_index_room(self) -> None:
        """Before planning an add: if the index leaves no room for even one entry, drop
        its graph (queries scan exactly), so ``entries + index <= budget`` can hold."""
        budget = self.config.budget_bytes
        if budget is None or self._index_nbytes() + self.entry_bytes <= budget:
            return
        if self._ann is not None:
            logger.warning("NN-descent index (%d bytes) leaves no room for an entry in the "
                           "memory budget: graph dropped", self._index_nbytes())
            self._ann.refuse()

    def _fit_index(self) -> None:
        """The index grew (a graph was installed; write lock held): evict by policy until
        ``entries + index`` fits again, or drop the graph if that would take half the
        entries (more than half of its rows dead, it would be dropped anyway)."""
        budget = self.config.budget_bytes
        if budget is None or self._store is None or self.used_bytes() <= budget:
            return
        store = self._store
        live = store.live_slots()
        limit = self._entry_limit()
        n_out = live.shape[0] - limit
        if self._adding is not None:  # the entries of the add in progress stay
            live = live[~np.isin(live, self._adding)]
        if 2 * n_out > store.live_slots().shape[0] or n_out > live.shape[0]:
            logger.warning("NN-descent graph of %d bytes does not fit the memory budget "
                           "beside %d entries: not used", self._index_nbytes(), live.shape[0])
            self._ann.refuse()
            return
        keys = self._eviction_keys(live, None)
        order = np.lexsort((store.ids[live], keys))[:max(n_out, 0)]
        logger.info("NN-descent graph installed: %d entries evicted to stay in the memory "
                    "budget", order.shape[0])
        self._remove_slots(np.sort(live[order]))

    def _eviction_keys(self, slots: np.ndarray, batch: _Batch | None) -> np.ndarray:
        policy = self.config.eviction
        if policy == "oldest":
            n = slots.shape[0] + (0 if batch is None else batch.results.shape[0])
            return np.zeros(n)
        if policy == "lowest_coherence":
            old = self._store.coherence[slots]
            new = None if batch is None else batch.results[:, 1]
        else:
            old = self._store.util_mean[slots]
            new = None if batch is None else np.where(np.isnan(batch.utility), 0.0, batch.utility)
        return old.copy() if new is None else np.concatenate([old, new])

    def _commit(self, b: _Batch) -> np.ndarray:
        with self._lock.write():
            self._recheck(b)  # another thread may have fixed the shape or mode since validation
            if self._store is None:
                self._setup(b.shape)
            store = self._store
            m = b.tensors.shape[0]
            new_ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            self._make_index_room()
            live = store.live_slots()
            n_live = live.shape[0]
            limit = self._entry_limit()
            keep = np.ones(m, dtype=np.bool_)
            evict = live[:0]
            if n_live + m > limit:
                live = live[np.argsort(store.ids[live], kind="stable")]
                keys = self._eviction_keys(live, b)
                ids = np.concatenate([store.ids[live], new_ids])
                gone = admission_plan(keys, ids, n_live, limit)
                evict, keep = live[gone[:n_live]], ~gone[n_live:]
            n_keep = int(keep.sum())
            store.ensure_capacity(n_live - evict.shape[0] + n_keep)  # may raise: nothing changed yet
            if evict.shape[0]:
                self._remove_slots(evict)
            slots = store.free_slots(n_keep)
            self._write(slots, b, keep, new_ids[keep])
            self._next_id += m
            self._evicted += m - n_keep  # admitted from this batch and evicted within it
            if self._embedding_mode is None:
                self._embedding_mode = "user" if b.user_embeddings else "mapper"
            self._adding = slots  # a graph installed during the add never evicts these
            try:
                self._after_add(slots)
            finally:
                self._adding = None
            return new_ids[keep]

    def _recheck(self, b: _Batch) -> None:
        if self._shape is not None and b.shape != self._shape:
            raise DimensionMismatchError("tensors", b.shape, f"tensor shape {self._shape} (the pool's)")
        mode = "user" if b.user_embeddings else "mapper"
        if self._embedding_mode not in (None, mode):
            raise InvalidParameterError("embeddings", mode, f"{self._embedding_mode} embeddings, "
                                        "as every earlier entry of this pool")

    def _write(self, slots, b: _Batch, keep, ids):
        s = self._store
        s.tensors.reshape(s.capacity, *b.tensors.shape[1:])[slots] = b.tensors[keep]
        if b.certainty is not None:
            s.certainty[slots] = b.certainty[keep]
        elif "certainty" in s.columns:
            s.certainty[slots] = 1.0
        s.set_embeddings(slots, b.embeddings[keep])
        s.chroma[slots] = b.chroma[keep]
        s.spectral[slots] = b.spectral[keep]
        s.energy[slots], s.coherence[slots], s.violation[slots] = b.results[keep].T
        s.labels[slots] = b.labels[keep]
        util = b.utility[keep]
        given = ~np.isnan(util)
        s.utility[slots] = util
        s.util_mean[slots] = np.where(given, util, 0.0)
        s.util_count[slots] = given
        s.usage[slots] = 0
        s.timestamp[slots] = time.time()
        s.ids[slots] = ids
        s.alive[slots] = True
        self._slot_of.update(zip(ids.tolist(), slots.tolist()))

    def _remove_slots(self, slots: np.ndarray) -> None:
        s = self._store
        for eid in s.ids[slots].tolist():
            del self._slot_of[eid]
        s.alive[slots] = False
        self._evicted += int(slots.shape[0])
        self._after_remove(slots)
        logger.debug("evicted %d entries (policy %s)", slots.shape[0], self.config.eviction)

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
            been evicted are skipped.

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
        if isinstance(ids, (str, bytes, dict, set, frozenset)):
            raise InvalidParameterError("ids", ids, "a sequence of integer entry ids")
        try:
            id_arr = np.atleast_1d(np.asarray(ids))
        except Exception as exc:  # ragged nesting and the like
            raise InvalidParameterError("ids", ids, "a sequence of integer entry ids",
                                        detail=str(exc)) from None
        if id_arr.ndim == 1 and id_arr.size == 0:
            raise EmptyCollectionError("ids", ids, "at least one id")
        if id_arr.dtype.kind not in "iu" or id_arr.ndim != 1:
            raise InvalidParameterError("ids", ids, "a sequence of integer entry ids")
        if isinstance(utilities, (dict, set, frozenset)):
            raise InvalidParameterError("utilities", utilities,
                                        "a finite utility or a sequence of them")
        u = as_float_array(utilities, "utilities", dtype=np.float64, ndim=(0, 1))
        check_utility_range(u.reshape(-1), "utilities")
        u = np.broadcast_to(u, id_arr.shape) if u.ndim == 0 else u
        if u.shape != id_arr.shape:
            raise DimensionMismatchError("utilities", u, f"one utility or {id_arr.shape[0]} of them")
        with self._lock.write():
            bad = (id_arr < 0) | (id_arr >= self._next_id)
            if bad.any():
                raise InvalidParameterError("ids", int(id_arr[bad][0]),
                                            f"an id issued by this pool (0 <= id < {self._next_id})")
            slots = np.array([self._slot_of.get(i, -1) for i in id_arr.tolist()], dtype=np.int64)
            live = slots >= 0
            slots, u = slots[live], u[live]
            if slots.size == 0:
                return 0
            s = self._store
            total = np.zeros(s.capacity)
            count = np.zeros(s.capacity, dtype=np.int64)
            np.add.at(total, slots, u)
            np.add.at(count, slots, 1)
            touched = np.flatnonzero(count)
            n_old = s.util_count[touched]
            s.util_mean[touched] = (s.util_mean[touched] * n_old + total[touched]) / (n_old + count[touched])
            s.util_count[touched] = n_old + count[touched]
            return int(slots.size)


def _make_mapper(cfg: PoolConfig, shape: tuple) -> EmbeddingMapper:
    return EmbeddingMapper(cfg.embedding_dim, cfg.seed, shape[-1], cfg.embedding_weights,
                           cfg.label_buckets, cfg.spatial_grid)


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
            raise InvalidParameterError(name, labels,
                                        "a 1-d array of integer labels >= 0 (-1 for none)")
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
        arr = np.array([np.nan if u is None else as_utility(u, name) for u in seq],
                       dtype=np.float64)
    if arr.shape != (n,):
        raise DimensionMismatchError(name, arr, f"{n} utilities")
    return arr

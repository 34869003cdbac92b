"""The retriever of a :class:`~dreamjit.DreamPool`: queries in, ranked slots out.

:class:`Retriever` parses queries (a :class:`~dreamjit.Query`, a tensor, a
chroma vector or the user's own embedding; query embeddings are cached in a
:class:`~dreamjit.cache.QueryCache`) and runs the hard, soft, diverse and
hybrid paths over the entry table and the index set. Each path returns
``(slots, scores, similarity)`` and counts nothing: the pool holds the lock,
counts usage and makes the :class:`~dreamjit.Hits`.
"""

from __future__ import annotations

import functools

import numpy as np

from ._indexes import (
    SLOT_SCAN_SHARE,
    candidate_count,
    ranked_by_id,
    rerank_count,
    similarity_order,
)
from ._validate import as_float, as_float_array, as_label, as_sequence
from .cache import QueryCache
from .errors import (
    DimensionMismatchError,
    DreamError,
    EmptyCollectionError,
    InvalidParameterError,
    describe_value,
)
from .index.exact import PARALLEL_SCAN_ROWS
from .kernels.cosine import normalize_rows, pairwise_dispersion, topk_cosine
from .kernels.graph import ann_soft_query
from .kernels.mmr import mmr_fast, mmr_standard
from .kernels.query import (
    BLOCKED_MIN_ROWS,
    SOFT_OK,
    label_mask,
    rerank_batch,
    rerank_candidates,
    round_f32_into,
    soft_query_batch,
    soft_query_into,
    topk_cosine_batch,
    unit_query,
)
from .query import Query, RetrievalWeights

__all__ = ["RRF_K", "Retriever", "candidate_count", "ranked_by_id", "reciprocal_rank_fusion"]

DEFAULT_WEIGHTS = RetrievalWeights()

NO_SLOTS = np.empty(0, dtype=np.int64)
NO_SCORES = np.empty(0, dtype=np.float32)
_NOTHING = (NO_SLOTS, NO_SCORES, NO_SCORES)
_NO_INT8 = np.empty((0, 0), dtype=np.int8)
_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
#: the usual constant of reciprocal rank fusion (Cormack et al., 2009)
RRF_K = 60


@functools.lru_cache(maxsize=64)
def _weights_array(w: RetrievalWeights) -> np.ndarray:
    """``w.as_array()``, made once per distinct weights (the kernels only read it)."""
    return w.as_array()


def reciprocal_rank_fusion(lists, k: int, ids):
    """Fuse rankings of slots: ``score = sum(1 / (RRF_K + rank))`` with rank from 1;
    returns the best ``k`` as ``(slots, scores float32)``, ties to the lower id
    (``ids`` maps slots to entry ids)."""
    if not lists or all(len(x) == 0 for x in lists):
        return NO_SLOTS, NO_SCORES
    slots = np.concatenate(lists)
    ranks = np.concatenate([np.arange(1, len(x) + 1) for x in lists])
    uniq, inverse = np.unique(slots, return_inverse=True)
    fused = np.bincount(inverse, weights=1.0 / (RRF_K + ranks), minlength=uniq.shape[0])
    order = np.lexsort((ids[uniq], -fused))[:k]
    return uniq[order], fused[order].astype(np.float32)


class Retriever:
    """Query parsing and the retrieval paths over ``table`` and ``indexes``."""

    def __init__(self, config, table, indexes):
        self.config = config
        self._table = table
        self._indexes = indexes
        self.cache = QueryCache(config.query_cache_size)
        self._last_weights: tuple = (None, None)

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh lock for the cache (another thread may have held it)."""
        self.cache.reset_after_fork()

    # ------------------------------------------------------------ parsing
    def chroma_query(self, query, name="chroma") -> np.ndarray:
        """A chroma vector from a Query, a tensor or a vector."""
        if isinstance(query, Query):
            if query.chroma is None:
                raise InvalidParameterError(name, query, "a Query with chroma set")
            query = query.chroma
        arr = as_float_array(query, name, ndim=(1, 3, 4))
        if arr.ndim > 1:
            from .features import chroma_signature

            arr = chroma_signature(arr)
        shape = self._table.shape
        channels = shape[-1] if shape is not None else arr.shape[0]
        if arr.shape[0] != channels:
            raise DimensionMismatchError(name, arr, f"{channels} values (one per channel)")
        if not np.any(arr):
            raise InvalidParameterError(
                name,
                arr,
                "a chroma signature with a direction (not all "
                "zero: cosine similarity to it is undefined)",
            )
        return np.ascontiguousarray(arr, dtype=np.float32)

    def as_query(self, query, name="query") -> Query:
        if isinstance(query, Query):
            return query
        arr = as_float_array(query, name, ndim=(1, 3, 4))
        if arr.ndim > 1:
            return Query.from_tensor(arr)
        if self._table.embedding_mode == "user":
            return Query(embedding=arr)
        return Query(chroma=arr)

    def query_embedding(self, query, name="query"):
        """``(unit embedding float32 (dim,), label or -1)`` for any accepted query
        (the embedding is None while the pool is empty)."""
        if self._table.embedding_mode == "user":
            if type(query) is np.ndarray:
                fast = self._user_vector(query)
                if fast is not None:
                    return fast, -1
            elif (
                type(query) is Query
                and type(query.embedding) is np.ndarray
                and query.chroma is None
                and query.spectral is None
                and query.spatial is None
            ):  # a Query of an embedding (and a label): the same bits as below
                fast = self._user_vector(query.embedding)
                if fast is not None:
                    label = as_label(query.label, "label")
                    return fast, -1 if label is None else label
        q = self.as_query(query, name)
        label = as_label(q.label, "label")
        dim = self.config.embedding_dim
        mode = self._table.embedding_mode
        if q.embedding is not None:
            v = as_float_array(q.embedding, "embedding", ndim=1)
            if v.shape[0] != dim:
                raise DimensionMismatchError("embedding", v, f"length embedding_dim={dim}")
            if mode == "mapper":
                raise InvalidParameterError(
                    "embedding",
                    v,
                    "no embedding: this pool computes its own "
                    "(query with a tensor, chroma or Query fields)",
                )
            if not np.any(v):
                raise InvalidParameterError(
                    "embedding", v, "a query vector with a direction (not all zero)"
                )
            return normalize_rows(v[None])[0], -1 if label is None else label
        if mode == "user":
            raise InvalidParameterError(
                name, query, "a query embedding (this pool stores user embeddings)"
            )
        shape = self._table.shape
        channels = shape[-1] if shape is not None else None
        chroma = None if q.chroma is None else as_float_array(q.chroma, "chroma", ndim=1)
        if chroma is not None and channels is not None and chroma.shape[0] != channels:
            raise DimensionMismatchError("chroma", chroma, f"{channels} values (one per channel)")
        spectral = None if q.spectral is None else as_float_array(q.spectral, "spectral", ndim=1)
        if spectral is not None and spectral.shape[0] != 6:
            raise DimensionMismatchError("spectral", spectral, "6 spectral features")
        spatial = None if q.spatial is None else as_float_array(q.spatial, "spatial", ndim=1)
        if spatial is not None and channels is not None:
            grid = self.config.spatial_grid
            if spatial.shape[0] != grid * grid * channels:
                raise DimensionMismatchError(
                    "spatial",
                    spatial,
                    f"{grid * grid * channels} values (a {grid}x{grid} "
                    f"thumbnail of {channels} channels: Query.from_tensor(..., grid={grid}))",
                )
        utility = as_float(q.utility, "utility", allow_none=True)
        if (
            chroma is None
            and spectral is None
            and spatial is None
            and label is None
            and utility is None
        ):
            raise InvalidParameterError(
                name,
                q,
                "a query with at least one of chroma, spectral, "
                "spatial, label, utility or embedding",
            )
        mapper = self._table.mapper
        if mapper is None:  # empty pool: nothing to embed against
            return None, -1 if label is None else label
        assert channels is not None, "the mapper and the shape are set up together"
        key = QueryCache.key(mapper.key, chroma, spectral, spatial, label, utility)
        emb = self.cache.peek(key)
        if emb is not None:
            self.cache.count(hit=True)
        else:
            c = np.zeros((1, channels), np.float32) if chroma is None else chroma[None]
            s = np.zeros((1, 6), np.float32) if spectral is None else spectral[None]
            sp = None if spatial is None else spatial[None]
            present = (
                chroma is not None,
                spectral is not None,
                spatial is not None,
                label is not None,
                utility is not None,
            )
            emb = mapper.embed(
                c,
                s,
                np.array([-1 if label is None else label], np.int32),
                np.array([np.nan if utility is None else utility]),
                present,
                spatial=sp,
            )[0]
            if not np.any(emb):
                raise InvalidParameterError(
                    name,
                    q,
                    "a query with a direction: its features "
                    "(e.g. an all-zero tensor or chroma) embed to zero",
                )
            emb = self.cache.put(key, emb)
            self.cache.count(hit=False)
        return emb, -1 if label is None else label

    def _user_vector(self, v):
        """The unit float32 embedding of a plain query vector ``v`` of a user-embedding pool
        (float32 or float64, ``embedding_dim`` values, finite, not all zero), as the general
        path computes it (float64 rounded to float32, then :func:`normalize_rows`'s bits);
        None for anything else, which the general path then validates and reports."""
        if v.shape != (self.config.embedding_dim,):
            return None
        if v.dtype != np.float32 or not v.flags.c_contiguous or not v.flags.writeable:
            if v.dtype != np.float64 and v.dtype != np.float32:
                return None
            with np.errstate(over="ignore"):  # out of float32 range: inf, refused below
                v = np.array(v, dtype=np.float32)  # a new C-contiguous writable copy
        unit, status = unit_query(v)
        return unit if status == SOFT_OK else None

    # ------------------------------------------------------------ batches
    def chroma_batch(self, chromas, name="chromas") -> np.ndarray:
        """``(m, channels)`` float32 validated chroma queries from an ``(m, C)`` array, a
        tensor batch or a sequence of single queries (any row without a direction refused)."""
        if isinstance(chromas, np.ndarray) and chromas.dtype.kind != "O" and chromas.ndim >= 2:
            arr = as_float_array(chromas, name, ndim=(2, 4, 5))
            shape = self._table.shape
            if arr.ndim == 2 and (shape is None or arr.shape[1] == shape[-1]):
                zero = ~arr.any(axis=1)
                if zero.any():
                    i = int(np.flatnonzero(zero)[0])
                    self.chroma_query(arr[i], f"{name}[{i}]")  # raises: no direction
                return arr
            rows = list(arr)
        else:
            rows = as_sequence(chromas, name, "a sequence (or array) of chroma queries")
        if not rows:
            raise EmptyCollectionError(name, chromas, "at least one query")
        return np.stack([self.chroma_query(r, f"{name}[{i}]") for i, r in enumerate(rows)])

    def embedding_batch(self, queries, name="queries"):
        """``(Q (m, dim) float32 unit rows, labels (m,) int64)`` for a batch of queries
        (read lock held): an ``(m, dim)`` array of user embeddings, an ``(m, C)`` array of
        chromas (pools that embed their own), a tensor batch, or a sequence of single
        queries. Rows of a pool still empty are zero."""
        dim = self.config.embedding_dim
        user = self._table.embedding_mode == "user"
        if isinstance(queries, np.ndarray) and queries.dtype.kind != "O" and queries.ndim >= 2:
            arr = as_float_array(queries, name, ndim=(2, 4, 5))
            if arr.ndim == 2 and user:
                if arr.shape[1] != dim:
                    raise DimensionMismatchError(name, arr, f"shape (m, {dim}) (embedding_dim)")
                zero = ~arr.any(axis=1)
                if zero.any():
                    i = int(np.flatnonzero(zero)[0])
                    raise InvalidParameterError(
                        f"{name}[{i}]", arr[i], "a query vector with a direction (not all zero)"
                    )
                return normalize_rows(arr), np.full(arr.shape[0], -1, dtype=np.int64)
            rows = list(arr)
        else:
            rows = as_sequence(queries, name, "a sequence (or array) of queries")
        if not rows:
            raise EmptyCollectionError(name, queries, "at least one query")
        Q = np.zeros((len(rows), dim), dtype=np.float32)
        labels = np.full(len(rows), -1, dtype=np.int64)
        for i, row in enumerate(rows):
            q = row
            if isinstance(row, np.ndarray) and row.ndim > 1:
                q = Query.from_tensor(row)
            try:
                emb, labels[i] = self.query_embedding(q, f"{name}[{i}]")
            except DreamError as exc:  # name the query of the batch
                if exc.param.startswith(f"{name}["):
                    raise
                raise type(exc)(
                    f"{name}[{i}]", exc.value, exc.expected, detail=f"its {exc.param}"
                ) from exc
            if emb is not None:
                Q[i] = emb
        return Q, labels

    # ------------------------------------------------------------ filters (read lock held)
    def filter(self, spec):
        """``(mask, count)`` for a ``where=`` spec parsed by :func:`~dreamjit._validate.as_where`:
        ``mask`` (capacity,) bool of the live entries it matches (None: no filter, every
        live entry) and how many that is."""
        table = self._table
        s = table.store
        if spec is None or s is None:
            return None, len(table)
        kind, value = spec
        if kind in ("label", "labels"):
            wanted = np.atleast_1d(np.asarray(value, dtype=np.int64))
            return label_mask(s.alive, s.labels, wanted)
        if kind == "ids":
            if value.size and int(value.max()) >= table.next_id:
                raise InvalidParameterError(
                    "where",
                    value,
                    f"ids issued by this pool (below {table.next_id}; ids of entries "
                    "evicted or removed since match nothing)",
                )
            mask = np.zeros(s.capacity, dtype=np.bool_)
            mask[table.slots_of(value.tolist())] = True
        else:
            mask = self._called_mask(value)
        return mask, int(np.count_nonzero(mask))

    def _called_mask(self, fn) -> np.ndarray:
        """The slots a ``where=`` callable selects from the table's columns."""
        table = self._table
        order = table.live_slots_by_id()
        cols = table.columns()
        try:
            res = np.asarray(fn(cols))
        except Exception as exc:  # the user's callable: any failure is a bad filter
            raise InvalidParameterError(
                "where",
                fn,
                "a callable taking the pool's columns and returning a bool mask",
                detail=f"it raised {type(exc).__name__}: {exc}",
            ) from exc
        if res.dtype != np.bool_ or res.shape != order.shape:
            raise InvalidParameterError(
                "where",
                fn,
                f"a callable returning a bool mask of shape ({order.shape[0]},) "
                "(one value per live entry, aligned with the columns)",
                detail=f"it returned {describe_value(res)}",
            )
        mask = np.zeros(table.store.capacity, dtype=np.bool_)
        mask[order[res]] = True
        return mask

    # ------------------------------------------------------------ paths (read lock held)
    def candidates(self, q, k, mask=None, count=None):
        """Index candidates for the rerank and MMR stages, in id order (so that
        the kernels' ties to the lower position are ties to the lower id)."""
        n = len(self._table) if count is None else count
        slots, sims = self._indexes.search(q, candidate_count(k, n), mask, n)
        order = np.argsort(self._table.ids_at(slots), kind="stable")
        return slots[order], sims[order]

    def hard(self, q, k, label, mask=None):
        """``(slots, cosines)`` of chroma cosine to the validated chroma ``q``."""
        n = len(self._table)
        if self._table.store is None or n == 0:
            return NO_SLOTS, NO_SCORES
        s = self._table.store
        mask = s.alive if mask is None else mask
        if label is not None:
            mask = mask & (s.labels == label)
        return ranked_by_id(lambda kk: topk_cosine(s.chroma, q, mask, kk), k, n, s.ids)

    def hard_batch(self, C, k, label, mask=None):
        """``(slots (m, kk), cosines (m, kk))`` of :meth:`hard` for each row of the
        validated chromas ``C`` (m, channels), padded with -1 / NaN."""
        m = C.shape[0]
        s = self._table.store
        w = min(k, self.config.max_size)
        if s is None or len(self._table) == 0:
            return np.full((m, w), -1, np.int64), np.full((m, w), np.nan, np.float32)
        mask = s.alive if mask is None else mask
        if label is not None:
            mask = mask & (s.labels == label)
        slots, cos, tie = topk_cosine_batch(s.chroma, C, mask, s.ids, min(k, len(self._table)))
        for t in np.flatnonzero(tie):  # ties across the cut: the single path's id order
            sl, c = self.hard(C[t], k, None, mask)
            slots[t, : sl.shape[0]] = sl
            cos[t, : c.shape[0]] = c
        slots, cos, _ = self._pad(slots, cos, cos, w)
        return slots, cos

    def soft(self, query, k, weights, spec=None):
        """``(slots, rerank values, cosines, ids)`` of the soft path: ``ids`` the hits'
        entry ids when the fused kernel gathered them (:meth:`_fused`), else None."""
        if spec is None:
            mask, count = None, len(self._table)  # self.filter(None), without the call
        else:
            mask, count = self.filter(spec)
        fast = self._fused(query, k, weights, mask, count)
        if fast is not None:
            return fast
        q, label = self.query_embedding(query)
        return (*self.soft_embedded(q, label, k, weights, mask, count), None)

    def _weights(self, weights) -> np.ndarray:
        """``weights.as_array()``: the last one asked for, else from :func:`_weights_array`."""
        last = self._last_weights  # one tuple, replaced whole: safe for concurrent readers
        if last[0] is weights:
            return last[1]
        arr = _weights_array(weights)
        self._last_weights = (weights, arr)
        return arr

    def _fused(self, query, k, weights, mask, count):
        """The soft path in one kernel call, for a user-embedding query, unfiltered or with
        a wide filter: ``(slots, scores, cosines, ids)`` (None when that does not apply or
        the scores tie across the candidate cut: the general path answers then, with the
        same bits). On a graph-searched pool :meth:`_fused_walk` answers (ids None).

        The query is a 1-d float32 or float64 array of ``embedding_dim`` values (or a
        Query of just an embedding and a label); float64 is rounded to float32 first, as
        the general path's validation does, so both give the same bits. A query the
        kernel finds non-finite or without a direction goes to the general path, which
        raises the error. The kernel writes the hits, and their ids, into four arrays
        made here (:func:`~dreamjit.kernels.query.soft_query_into`)."""
        table = self._table
        s = table.store
        if s is None or count == 0 or table.embedding_mode != "user":
            return None
        if mask is not None and count * SLOT_SCAN_SHARE < len(table):
            return None
        label = -1
        if type(query) is Query:
            if (
                query.chroma is not None
                or query.spectral is not None
                or query.spatial is not None
                or query.utility is not None
            ):
                return None
            if query.label is not None:
                label = as_label(query.label, "label")
            query = query.embedding
        if type(query) is not np.ndarray or query.shape != (self.config.embedding_dim,):
            return None
        dt = query.dtype  # numpy's canonical float32 by identity first, else by value
        if (dt is not _F32 and dt != _F32) or not query.flags.c_contiguous:
            if dt != np.float64 and dt != np.float32:
                return None
            flags = query.flags
            if dt == np.float64 and flags.c_contiguous and flags.writeable:  # one signature
                q32 = np.empty(query.shape[0], _F32)
                round_f32_into(query, q32)  # out of float32 range: inf, refused below
                query = q32
            else:
                with np.errstate(over="ignore"):  # as above
                    query = np.ascontiguousarray(query, dtype=np.float32)
        cols = s.columns
        if self._indexes.use_ann_now():  # the graph walk answers
            return self._fused_walk(query, k, weights, mask, count, label, cols)
        xt = cols.get("embeddings_t")
        if xt is None or xt.shape[1] >= PARALLEL_SCAN_ROWS:
            return None
        cols8 = cols.get("embeddings_q")
        last = self._last_weights  # self._weights(weights), without the call
        w = last[1] if last[0] is weights else self._weights(weights)
        size = k if k < count else count  # the picks: at most min(k, count)
        slots = np.empty(size, _I64)
        ids = np.empty(size, _I64)
        scores = np.empty(size, _F32)
        sims = np.empty(size, _F32)
        m, status = soft_query_into(
            xt,
            _NO_INT8 if cols8 is None else cols8,
            s.quant_error,
            cols["embeddings"],
            query,
            True,
            cols["alive"] if mask is None else mask,
            count,
            cols["ids"],
            cols["util_mean"],
            cols["labels"],
            label,
            rerank_count(k, count, similarity_order(weights, label)),
            k,
            w,
            slots,
            ids,
            scores,
            sims,
        )
        if status != SOFT_OK:
            return None  # a tie at the cut, or a bad query the general path reports
        if m < size:  # fewer picks than asked (not for the exact scans here): the prefixes
            return slots[:m].copy(), scores[:m].copy(), sims[:m].copy(), ids[:m].copy()
        return slots, scores, sims, ids

    def _fused_walk(self, query, k, weights, mask, count, label, cols):
        """:meth:`_fused` on a graph-searched pool: the walk, the tie check at the cut and
        the rerank in one kernel call (:func:`~dreamjit.kernels.graph.ann_soft_query`),
        the same bits as the general path (its :func:`ranked_by_id` asks the walk for one
        more than the candidates, with the same beam); None when the index would scan
        exactly, the walk finds too few rows or the scores tie across the cut."""
        cc = self._indexes.rerank_count(k, count, similarity_order(weights, label))
        want = min(cc + 1, count)
        plan = self._indexes.walk_plan(want, mask, count)
        if plan is None:
            return None
        X, walk, live, delta, ef, epsilon, n_seeds = plan
        slots, scores, sims, status = ann_soft_query(
            X,
            walk,
            live,
            delta,
            query,
            want,
            ef,
            epsilon,
            n_seeds,
            cols["ids"],
            cols["util_mean"],
            cols["labels"],
            label,
            cc,
            k,
            self._weights(weights),
        )
        if status != SOFT_OK:
            return None
        return slots, scores, sims, None  # the ids: gathered when the pool counts usage

    def soft_embedded(self, q, label, k, weights, mask=None, count=None):
        n = len(self._table) if count is None else count
        if q is None or n == 0:
            return _NOTHING
        cc = self._indexes.rerank_count(k, n, similarity_order(weights, label), count)
        slots, sims = self._indexes.search(q, cc, mask, n)
        cols = self._table.store.columns  # the dict: cheaper than the store's attributes
        return rerank_candidates(
            slots,
            sims,
            cols["embeddings"],
            cols["ids"],
            cols["util_mean"],
            cols["labels"],
            label,
            k,
            self._weights(weights),
        )

    def soft_batch(self, Q, labels, k, weights, mask=None, count=None):
        """``(slots, rerank values, cosines)``, each (m, kk) padded with -1 / NaN, of the
        soft path for each row of the unit query embeddings ``Q`` (m, dim) with query
        labels ``labels`` (m,) int64 (-1 for none): the same picks as :meth:`soft_embedded`
        row by row."""
        m = Q.shape[0]
        n = len(self._table) if count is None else count
        kk = min(k, self.config.max_size)  # the width: k, never more than the pool can hold
        if n == 0 or self._table.store is None:
            empty = np.full((m, kk), np.nan, np.float32)
            return np.full((m, kk), -1, np.int64), empty, empty.copy()
        w = weights
        order_only = similarity_order(w, int(labels.max()))
        if order_only != similarity_order(w, -1):
            # a class term, and labelled next to unlabelled queries: their candidate
            # counts differ (rerank_count), so each group runs as its own batch
            nan = np.full((m, kk), np.nan, np.float32)
            out = (np.full((m, kk), -1, np.int64), nan, nan.copy())
            for rows in (np.flatnonzero(labels < 0), np.flatnonzero(labels >= 0)):
                part = self.soft_batch(Q[rows], labels[rows], k, weights, mask, count)
                for whole, got in zip(out, part):
                    whole[rows] = got
            return out
        cc = rerank_count(k, n, order_only)
        s = self._table.store
        cols = s.columns.get("embeddings_t")
        if (
            cols is not None
            and cols.shape[1] < PARALLEL_SCAN_ROWS
            and not self._indexes.use_ann_now()
            and (mask is None or n * SLOT_SCAN_SHARE >= len(self._table))
        ):  # the fused single path's results, in parallel over tiles of queries
            cols8 = s.columns.get("embeddings_q")
            out_i, out_s, out_c, status = soft_query_batch(
                cols,
                _NO_INT8 if cols8 is None else cols8,
                s.quant_error,
                s.embeddings,
                Q,
                s.alive if mask is None else mask,
                n,
                s.ids,
                s.util_mean,
                s.labels,
                labels,
                cc,
                kk,
                _weights_array(w),
                cols.shape[1] >= BLOCKED_MIN_ROWS,
            )
            for t in np.flatnonzero(status != SOFT_OK):  # ties at the cut: the general path
                sl, sc, cs = self.soft_embedded(Q[t], int(labels[t]), k, weights, mask, n)
                out_i[t, : sl.shape[0]] = sl
                out_s[t, : sc.shape[0]] = sc
                out_c[t, : cs.shape[0]] = cs
            return self._pad(out_i, out_s, out_c, kk)
        slots, sims = self._indexes.search_batch(Q, min(cc + 1, n), mask, n)
        if slots.shape[1] > cc:  # ties across the cut: those rows take the single path
            for t in np.flatnonzero(sims[:, cc] == sims[:, cc - 1]):
                sl, sc = self._indexes.search(Q[t], cc, mask, n)
                slots[t, :cc] = sl
                sims[t, :cc] = sc
            slots, sims = slots[:, :cc], sims[:, :cc]
        counts = np.count_nonzero(slots >= 0, axis=1).astype(np.int64)
        out_i, out_s, out_c = rerank_batch(
            np.ascontiguousarray(slots),
            np.ascontiguousarray(sims),
            counts,
            s.embeddings,
            s.ids,
            s.util_mean,
            s.labels,
            labels,
            kk,
            _weights_array(w),
        )
        return self._pad(out_i, out_s, out_c, kk)

    @staticmethod
    def _pad(out_i, out_s, out_c, kk):
        """Pad batch results narrower than ``kk`` (a filter matched fewer) to ``kk``."""
        if out_i.shape[1] < kk:
            pad = ((0, 0), (0, kk - out_i.shape[1]))
            out_i = np.pad(out_i, pad, constant_values=-1)
            out_s = np.pad(out_s, pad, constant_values=np.nan)
            out_c = np.pad(out_c, pad, constant_values=np.nan)
        return out_i, out_s, out_c

    def diverse(self, query, k, lambda_, fast, min_sim, sample, spec=None):
        """``(slots, MMR values, cosines)`` of greedy MMR over the soft candidates."""
        q, _ = self.query_embedding(query)
        mask, count = self.filter(spec)
        if q is None or count == 0:
            return _NOTHING
        slots, sims = self.candidates(q, k, mask, count)
        cands = np.ascontiguousarray(self._table.store.embeddings[slots])
        if fast:
            order, scores = mmr_fast(q, cands, k, lambda_, min_sim, sample)
        else:
            order, scores = mmr_standard(q, cands, k, lambda_)
        return slots[order], scores, sims[order]

    def hybrid(self, q, hard_q, k, spec=None):
        """``(slots, fused scores, cosines)``: hard and soft rankings fused by reciprocal
        rank, each ``2k`` deep (``hard_q``: the validated chroma, or None)."""
        qv, label = self.query_embedding(q)
        mask, count = self.filter(spec)
        depth = 2 * min(k, max(count, 1))  # each list goes beyond k: agreement lifts
        lists = [self.soft_embedded(qv, label, depth, DEFAULT_WEIGHTS, mask, count)[0]]
        if hard_q is not None and count:
            lists.append(self.hard(hard_q, depth, None, mask)[0])
        if self._table.store is None:
            return _NOTHING
        slots, fused = reciprocal_rank_fusion(lists, k, self._table.store.ids)
        return slots, fused, self.embedding_cosines(qv, slots)

    def embedding_cosines(self, q, slots) -> np.ndarray:
        """Cosines (float32) of the stored embeddings at ``slots`` to the unit query ``q``."""
        if q is None or len(slots) == 0:
            return np.zeros(len(slots), np.float32)
        emb = self._table.store.embeddings[slots].astype(np.float64)
        return (emb @ np.asarray(q, np.float64)).astype(np.float32)

    def dispersion(self, slots) -> dict:
        """Mean pairwise dispersion of chroma signatures and embeddings at ``slots``."""
        s = self._table.store
        return {
            "count": int(slots.shape[0]),
            "chroma_dispersion": float(pairwise_dispersion(np.ascontiguousarray(s.chroma[slots]))),
            "embedding_dispersion": float(
                pairwise_dispersion(np.ascontiguousarray(s.embeddings[slots]))
            ),
        }

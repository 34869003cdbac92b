"""Retrieval methods of :class:`~dreamjit.DreamPool`: hard, soft, diverse, hybrid.

Also owns the pool's indexes: the exact index always, the NN-descent index
once the pool reaches ``ann_threshold`` live entries (built in the
background; queries never wait for a build).
"""
from __future__ import annotations

import logging

import numpy as np

from ._validate import MAX_ENTRIES, as_float, as_float_array, as_k, as_label
from .cache import QueryCache
from .errors import DimensionMismatchError, InvalidParameterError
from .kernels.cosine import normalize_rows, pairwise_dispersion, topk_cosine
from .kernels.hybrid import hybrid_rerank
from .kernels.mmr import mmr_fast, mmr_standard
from .query import Query, RetrievalMode, RetrievalWeights
from .results import Hits

__all__ = ["RetrievalMixin"]

logger = logging.getLogger("dreamjit")

_DEFAULT_WEIGHTS = RetrievalWeights()


_NO_SLOTS = np.empty(0, dtype=np.int64)
_NO_SCORES = np.empty(0, dtype=np.float32)
#: the usual constant of reciprocal rank fusion (Cormack et al., 2009)
RRF_K = 60


def reciprocal_rank_fusion(lists, k: int, ids):
    """Fuse rankings of slots: ``score = sum(1 / (RRF_K + rank))`` with rank from 1;
    returns the best ``k`` as ``(slots, scores float32)``, ties to the lower id
    (``ids`` maps slots to entry ids)."""
    if not lists or all(len(x) == 0 for x in lists):
        return _NO_SLOTS, _NO_SCORES
    slots = np.concatenate(lists)
    ranks = np.concatenate([np.arange(1, len(x) + 1) for x in lists])
    uniq, inverse = np.unique(slots, return_inverse=True)
    fused = np.bincount(inverse, weights=1.0 / (RRF_K + ranks), minlength=uniq.shape[0])
    order = np.lexsort((ids[uniq], -fused))[:k]
    return uniq[order], fused[order].astype(np.float32)


def candidate_count(k: int, n: int) -> int:
    """How many index candidates (of ``n`` live entries) the rerank and MMR stages look at
    (``k`` is clamped first, so the count always fits an int64 kernel argument)."""
    return min(max(4 * min(int(k), n, MAX_ENTRIES), 32), n)


def ranked_by_id(search, k: int, n: int, ids):
    """The best ``k`` of a top-k ``search(k) -> (slots, scores)`` with ties to the lower *id*.

    Kernels break ties by slot, and slots are reused out of id order, so this
    asks for one more than ``k``: if the scores tie across the cut, it widens
    the search until every tied entry is in, then orders by (score desc, id asc).
    """
    want = min(k + 1, n)
    while True:
        slots, scores = search(want)
        if slots.shape[0] <= k or scores[k] < scores[k - 1] or want >= n:
            break
        want = min(2 * want, n)
    if slots.shape[0] > k:
        keep = scores >= scores[k - 1]
        slots, scores = slots[keep], scores[keep]
    order = np.lexsort((ids[slots], -scores.astype(np.float64)))[:k]
    return slots[order], scores[order]


class RetrievalMixin:
    """Index bookkeeping and retrieval; mixed into ``DreamPool``."""

    # ------------------------------------------------------------ index hooks
    def _init_retrieval(self):
        self._exact = None
        self._ann = None
        self._cache = QueryCache(self.config.query_cache_size)

    def _reset_index(self):
        from .index import ExactIndex

        self._exact = ExactIndex(self._store)
        self._ann = None

    def _ann_possible(self, store_bytes=None) -> bool:
        """Whether this pool can ever reach ann_threshold (from the config and the size
        of an entry's storage rows, so the answer is the same before and after any add)."""
        cfg = self.config
        if not cfg.use_ann:
            return False
        budget = cfg.budget_bytes
        if budget is None:
            return cfg.max_size >= cfg.ann_threshold
        if store_bytes is None:
            if self._store is None:
                return True  # shape unknown yet: assume it can
            store_bytes = self._store.entry_bytes
        # as _entry_limit: an entry that fits the whole budget is always admitted
        most = max(int(cfg.eviction_threshold * budget) // store_bytes, 1)
        return min(cfg.max_size, most) >= cfg.ann_threshold

    def _make_ann(self):
        from .index import NNDescentIndex

        cfg = self.config
        ann = NNDescentIndex(self._store, n_neighbors=cfg.ann_n_neighbors,
                             n_pivots=cfg.ann_n_pivots, epsilon=cfg.ann_epsilon,
                             overfetch=cfg.ann_overfetch, rebuild_fraction=cfg.ann_rebuild_fraction,
                             seed=cfg.seed, background=cfg.ann_background,
                             build_timeout=cfg.ann_build_timeout)
        # snapshots under the read lock, installs under the write lock, then the budget check
        ann.attach(self._lock, self._fit_index)
        return ann

    def _index_bytes_per_entry(self, store_bytes=None) -> int:
        """Most bytes adding one entry can add to the index: a delta slot of the
        NN-descent index, when the pool can reach ``ann_threshold``; else 0."""
        if not self._ann_possible(store_bytes):
            return 0
        from .index import NNDescentIndex

        return NNDescentIndex.bytes_per_added_entry()

    def _index_nbytes(self) -> int:
        """Exact bytes of the index arrays held now (the budget counts these)."""
        exact = self._exact.nbytes if self._exact is not None else 0
        return exact + (self._ann.nbytes if self._ann is not None else 0)

    def _index_len(self) -> int:
        return len(self._exact) if self._exact is not None else 0

    def _after_add(self, slots):
        self._exact.add(slots)
        if self._ann is not None:
            self._ann.add(slots)
            self._ann.maybe_rebuild()
        elif self.config.use_ann and len(self) >= self.config.ann_threshold:
            logger.info("pool reached %d entries: building the NN-descent index", len(self))
            self._ann = self._make_ann()
            self._ann.rebuild(block=not self.config.ann_background)

    def _after_remove(self, slots):
        self._exact.remove(slots)
        if self._ann is not None:
            self._ann.remove(slots)
            self._ann.maybe_rebuild()

    def _index_stats(self) -> dict:
        ann = self._ann
        return {"index": "ann" if self._use_ann_now() else "exact",
                "ann_ready": bool(ann is not None and ann.ready),
                "ann_building": bool(ann is not None and ann.building),
                "index_bytes": self._index_nbytes()}

    def _use_ann_now(self) -> bool:
        return (self._ann is not None and self._ann.ready
                and len(self) >= self.config.ann_threshold)

    def _search(self, q, k, mask=None):
        """Top-k ``(slots, cosines)`` by embedding similarity from the index in use,
        ties to the lower id."""
        index = self._ann if self._use_ann_now() else self._exact
        return ranked_by_id(lambda kk: index.search(q, kk, mask), k, len(self), self._store.ids)

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
            if self._ann is None:
                if not (self.config.use_ann and len(self) >= self.config.ann_threshold):
                    return True
                self._ann = self._make_ann()
            ann = self._ann
            ann._failures = 0  # asked explicitly: automatic rebuilds may resume
            ann.rebuild(block=False)
        if block:
            return ann.wait(timeout)
        return not ann.building

    # ------------------------------------------------------------ queries
    def _chroma_query(self, query, name="chroma") -> np.ndarray:
        """A chroma vector from a Query, a tensor or a vector."""
        if isinstance(query, Query):
            if query.chroma is None:
                raise InvalidParameterError(name, query, "a Query with chroma set")
            query = query.chroma
        arr = as_float_array(query, name, ndim=(1, 3, 4))
        if arr.ndim > 1:
            from .features import chroma_signature

            arr = chroma_signature(arr)
        channels = self._shape[-1] if self._shape is not None else arr.shape[0]
        if arr.shape[0] != channels:
            raise DimensionMismatchError(name, arr, f"{channels} values (one per channel)")
        if not np.any(arr):
            raise InvalidParameterError(name, arr, "a chroma signature with a direction (not all "
                                        "zero: cosine similarity to it is undefined)")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _as_query(self, query, name="query") -> Query:
        if isinstance(query, Query):
            return query
        arr = as_float_array(query, name, ndim=(1, 3, 4))
        if arr.ndim > 1:
            return Query.from_tensor(arr)
        if self._embedding_mode == "user":
            return Query(embedding=arr)
        return Query(chroma=arr)

    def _query_embedding(self, query, name="query"):
        """``(unit embedding float32 (dim,), label or -1)`` for any accepted query."""
        q = self._as_query(query, name)
        label = as_label(q.label, "label")
        dim = self.config.embedding_dim
        if q.embedding is not None:
            v = as_float_array(q.embedding, "embedding", ndim=1)
            if v.shape[0] != dim:
                raise DimensionMismatchError("embedding", v, f"length embedding_dim={dim}")
            if self._embedding_mode == "mapper":
                raise InvalidParameterError("embedding", v, "no embedding: this pool computes its own "
                                            "(query with a tensor, chroma or Query fields)")
            if not np.any(v):
                raise InvalidParameterError("embedding", v, "a query vector with a direction "
                                            "(not all zero)")
            return normalize_rows(v[None])[0], -1 if label is None else label
        if self._embedding_mode == "user":
            raise InvalidParameterError(name, query, "a query embedding (this pool stores user embeddings)")
        channels = self._shape[-1] if self._shape is not None else None
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
                    "spatial", spatial, f"{grid * grid * channels} values (a {grid}x{grid} "
                    f"thumbnail of {channels} channels: Query.from_tensor(..., grid={grid}))")
        utility = as_float(q.utility, "utility", allow_none=True)
        if chroma is None and spectral is None and spatial is None and label is None \
                and utility is None:
            raise InvalidParameterError(name, q, "a query with at least one of chroma, spectral, "
                                        "spatial, label, utility or embedding")
        if self._mapper is None:  # empty pool: nothing to embed against
            return None, -1 if label is None else label
        key = QueryCache.key(self._mapper.key, chroma, spectral, spatial, label, utility)
        emb = self._cache.peek(key)
        if emb is not None:
            self._cache.count(hit=True)
        else:
            c = np.zeros((1, channels), np.float32) if chroma is None else chroma[None]
            s = np.zeros((1, 6), np.float32) if spectral is None else spectral[None]
            sp = None if spatial is None else spatial[None]
            present = (chroma is not None, spectral is not None, spatial is not None,
                       label is not None, utility is not None)
            emb = self._mapper.embed(c, s, np.array([-1 if label is None else label], np.int32),
                                     np.array([np.nan if utility is None else utility]), present,
                                     spatial=sp)[0]
            if not np.any(emb):
                raise InvalidParameterError(name, q, "a query with a direction: its features "
                                            "(e.g. an all-zero tensor or chroma) embed to zero")
            emb = self._cache.put(key, emb)
            self._cache.count(hit=False)
        return emb, -1 if label is None else label

    def _candidates(self, q, k):
        """Index candidates for the rerank and MMR stages, in id order (so that
        the kernels' ties to the lower position are ties to the lower id)."""
        slots, sims = self._search(q, candidate_count(k, len(self)))
        order = np.argsort(self._store.ids[slots], kind="stable")
        return slots[order], sims[order]

    def retrieve_similar(self, chroma, k=None, label=None) -> Hits:
        """Hard retrieval: exact cosine similarity of chroma signatures.

        Parameters
        ----------
        chroma : array_like (C,), tensor or Query
            The colour signature to match (a tensor is reduced to its signature).
        k : int, optional
            Hits wanted (default ``retrieval_limit``); fewer if the pool has fewer.
        label : int, optional
            Only entries with this label (a Query's label is used when omitted).

        Returns
        -------
        Hits
            Ids and cosine similarities, best first (ties to the lower id).

        Raises
        ------
        DimensionMismatchError
            ``chroma`` does not have one value per channel.
        InvalidParameterError
            NaN/inf values, ``k < 1``, or a Query without chroma.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import smooth_tensors
        >>> tensors = smooth_tensors(50, shape=(8, 8, 3), seed=0)
        >>> pool = dj.DreamPool(seed=0)
        >>> ids = pool.add_batch(tensors, labels=[i % 2 for i in range(50)], only_coherent=False)
        >>> hits = pool.retrieve_similar([0.8, 0.3, 0.2], k=3)
        >>> len(hits), bool(np.all(np.diff(hits.scores) <= 0))
        (3, True)
        >>> all(e.label == 1 for e in pool.retrieve_similar([0.8, 0.3, 0.2], k=3, label=1).entries())
        True
        """
        q = self._chroma_query(chroma)
        k = as_k(k, default=self.config.retrieval_limit)
        label = as_label(label)
        if label is None and isinstance(chroma, Query):
            label = as_label(chroma.label)
        with self._lock.read():
            slots, cos = self._hard(q, k, label)
            return self._finish(slots, cos, cos)

    def _hard(self, q, k, label):
        """``(slots, cosines)`` of the hard path (validated inputs; no usage counted)."""
        if self._store is None or len(self) == 0:
            return _NO_SLOTS, _NO_SCORES
        s = self._store
        mask = s.alive if label is None else s.alive & (s.labels == label)
        return ranked_by_id(lambda kk: topk_cosine(s.chroma, q, mask, kk), k, len(self), s.ids)

    def retrieve_soft(self, query, k=None, weights=None) -> Hits:
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

        Returns
        -------
        Hits
            Ids and rerank values in pick order: the first pick's value is its
            hybrid score, each later one ``lambda_*score - delta*max_similarity``
            to the entries picked before it.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import smooth_tensors
        >>> tensors = smooth_tensors(50, shape=(8, 8, 3), seed=0)
        >>> pool = dj.DreamPool(seed=0)
        >>> ids = pool.add_batch(tensors, labels=[i % 2 for i in range(50)], only_coherent=False)
        >>> probe = pool[ids[7]]
        >>> hits = pool.retrieve_soft(dj.Query.from_tensor(probe.tensor, label=probe.label), k=3)
        >>> int(hits.ids[0]) == int(ids[7])
        True
        """
        k = as_k(k, default=self.config.retrieval_limit)
        if weights is None:
            weights = _DEFAULT_WEIGHTS
        elif not isinstance(weights, RetrievalWeights):
            raise InvalidParameterError("weights", weights, "a RetrievalWeights or None")
        with self._lock.read():
            return self._finish(*self._soft(query, k, weights))

    def _soft(self, query, k, weights):
        """``(slots, rerank values, cosines)`` of the soft path (no usage counted)."""
        return self._soft_embedded(*self._query_embedding(query), k, weights)

    def _soft_embedded(self, q, label, k, weights):
        if q is None or len(self) == 0:
            return _NO_SLOTS, _NO_SCORES, _NO_SCORES
        slots, sims = self._candidates(q, k)
        s = self._store
        w = weights
        order, scores = hybrid_rerank(sims, s.util_mean[slots], s.labels[slots], label,
                                      np.ascontiguousarray(s.embeddings[slots]), w.alpha, w.beta,
                                      w.gamma, w.delta, w.lambda_, k)
        return slots[order], scores, sims[order]

    def retrieve_diverse(self, query, k=None, lambda_=0.5, fast=False, min_similarity=None,
                         sample_size=None) -> Hits:
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

        Returns
        -------
        Hits
            Ids in pick order; scores as in
            :func:`dreamjit.maximal_marginal_relevance` (the first pick's
            cosine relevance, then the MMR value that won each later pick).

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import smooth_tensors
        >>> tensors = smooth_tensors(50, shape=(8, 8, 3), seed=0)
        >>> pool = dj.DreamPool(seed=0)
        >>> ids = pool.add_batch(tensors, labels=[i % 2 for i in range(50)], only_coherent=False)
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
        lambda_ = as_float(lambda_, "lambda_", minimum=0.0, maximum=1.0)
        if not isinstance(fast, bool):
            raise InvalidParameterError("fast", fast, "True or False")
        min_sim = as_float(0.0 if min_similarity is None else min_similarity, "min_similarity",
                           minimum=-1.0, maximum=1.0)
        sample = as_k(sample_size, "sample_size", default=8, minimum=0)
        with self._lock.read():
            q, _ = self._query_embedding(query)
            if q is None or len(self) == 0:
                return self._finish(_NO_SLOTS, _NO_SCORES, _NO_SCORES)
            slots, sims = self._candidates(q, k)
            cands = np.ascontiguousarray(self._store.embeddings[slots])
            if fast:
                order, scores = mmr_fast(q, cands, k, lambda_, min_sim, sample)
            else:
                order, scores = mmr_standard(q, cands, k, lambda_)
            return self._finish(slots[order], scores, sims[order])

    def retrieve(self, query, k=None, mode=RetrievalMode.SOFT) -> Hits:
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

        Returns
        -------
        Hits

        Notes
        -----
        HYBRID fuses the two rankings by reciprocal rank (each entry scores
        ``sum(1 / (60 + rank))`` over the hard and soft lists, ``2k`` deep),
        because chroma cosines and rerank values are on different scales:
        mixing raw scores would let the hard list win every time.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import smooth_tensors
        >>> tensors = smooth_tensors(50, shape=(8, 8, 3), seed=0)
        >>> pool = dj.DreamPool(seed=0)
        >>> ids = pool.add_batch(tensors, labels=[i % 2 for i in range(50)], only_coherent=False)
        >>> q = dj.Query.from_tensor(tensors[3])
        >>> hard = pool.retrieve(q, k=3, mode=dj.RetrievalMode.HARD)
        >>> hard.ids.tolist() == pool.retrieve_similar(q, k=3).ids.tolist()
        True
        >>> len(pool.retrieve(q, k=3, mode="hybrid"))
        3
        """
        if isinstance(mode, str):
            try:
                mode = RetrievalMode(mode.lower())
            except ValueError:
                mode = None
        if not isinstance(mode, RetrievalMode):
            raise InvalidParameterError("mode", mode, "a RetrievalMode (HARD, SOFT or HYBRID)")
        if mode is RetrievalMode.HARD:
            return self.retrieve_similar(query, k=k)
        if mode is RetrievalMode.SOFT:
            return self.retrieve_soft(query, k=k)
        k = as_k(k, default=self.config.retrieval_limit)
        q = self._as_query(query)
        hard_q = None if q.chroma is None else self._chroma_query(q)
        as_label(q.label)  # refuse a bad label before any work
        with self._lock.read():
            depth = 2 * min(k, max(len(self), 1))  # each list goes beyond k: agreement lifts
            qv, label = self._query_embedding(q)
            lists = [self._soft_embedded(qv, label, depth, _DEFAULT_WEIGHTS)[0]]
            if hard_q is not None:
                lists.append(self._hard(hard_q, depth, None)[0])
            if self._store is None:
                return self._finish(_NO_SLOTS, _NO_SCORES, _NO_SCORES)
            slots, fused = reciprocal_rank_fusion(lists, k, self._store.ids)
            return self._finish(slots, fused, self._embedding_cosines(qv, slots))

    def _embedding_cosines(self, q, slots) -> np.ndarray:
        """Cosines (float32) of the stored embeddings at ``slots`` to the unit query ``q``."""
        if q is None or len(slots) == 0:
            return np.zeros(len(slots), np.float32)
        emb = self._store.embeddings[slots].astype(np.float64)
        return (emb @ np.asarray(q, np.float64)).astype(np.float32)

    def diversity_stats(self, hits: Hits | None = None) -> dict:
        """Mean pairwise dispersion (1 - cosine) of chroma signatures and of
        embeddings, over the pool or over ``hits``.

        Ids of ``hits`` evicted since the retrieval are skipped: the statistics
        cover the hits still in the pool, and ``count`` says how many.

        Returns
        -------
        dict
            ``count``, ``chroma_dispersion``, ``embedding_dispersion``.
        """
        with self._lock.read():
            if self._store is None:
                return {"count": 0, "chroma_dispersion": 0.0, "embedding_dispersion": 0.0}
            if hits is None:
                slots = self._store.live_slots()
            elif isinstance(hits, Hits):
                live = [i for i in hits.ids.tolist() if i in self._slot_of]  # evicted: skipped
                slots = np.array([self._slot_of[i] for i in live], dtype=np.int64)
            else:
                raise InvalidParameterError("hits", hits, "a Hits or None")
            s = self._store
            return {"count": int(slots.shape[0]),
                    "chroma_dispersion": float(pairwise_dispersion(np.ascontiguousarray(s.chroma[slots]))),
                    "embedding_dispersion": float(pairwise_dispersion(
                        np.ascontiguousarray(s.embeddings[slots])))}

    def query_cache_stats(self):
        """Counters of the query-embedding cache: a named tuple ``CacheStats(hits,
        misses, hit_rate)`` that unpacks as ``(hits, misses, hit_rate)``.

        Examples
        --------
        >>> import numpy as np, dreamjit as dj
        >>> from dreamjit.synthetic import smooth_tensors
        >>> tensors = smooth_tensors(50, shape=(8, 8, 3), seed=0)
        >>> pool = dj.DreamPool(seed=0)
        >>> ids = pool.add_batch(tensors, labels=[i % 2 for i in range(50)], only_coherent=False)
        >>> _ = pool.retrieve_soft([0.5, 0.4, 0.3]); _ = pool.retrieve_soft([0.5, 0.4, 0.3])
        >>> pool.query_cache_stats()
        CacheStats(hits=1, misses=1, hit_rate=0.5)
        """
        return self._cache.stats()

    def _finish(self, slots, scores, similarity) -> Hits:
        """Hits for slots; counts the usage of each returned entry."""
        s = self._store
        if len(slots) == 0:
            return Hits(_NO_SLOTS, _NO_SCORES, self, similarity=_NO_SCORES)
        with self._usage_lock:
            s.usage[slots] += 1  # slots of one result are distinct
        return Hits(s.ids[slots], scores, self, similarity=similarity)

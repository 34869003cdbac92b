"""The retriever of a :class:`~dreamjit.DreamPool`: queries in, ranked slots out.

:class:`Retriever` parses queries (a :class:`~dreamjit.Query`, a tensor, a
chroma vector or the user's own embedding; query embeddings are cached in a
:class:`~dreamjit.cache.QueryCache`) and runs the hard, soft, diverse and
hybrid paths over the entry table and the index set. Each path returns
``(slots, scores, similarity)`` and counts nothing: the pool holds the lock,
counts usage and makes the :class:`~dreamjit.Hits`.
"""

from __future__ import annotations

import numpy as np

from ._indexes import candidate_count, ranked_by_id
from ._validate import as_float, as_float_array, as_label
from .cache import QueryCache
from .errors import DimensionMismatchError, InvalidParameterError
from .kernels.cosine import normalize_rows, pairwise_dispersion, topk_cosine
from .kernels.hybrid import hybrid_rerank
from .kernels.mmr import mmr_fast, mmr_standard
from .query import Query, RetrievalWeights

__all__ = ["RRF_K", "Retriever", "candidate_count", "ranked_by_id", "reciprocal_rank_fusion"]

DEFAULT_WEIGHTS = RetrievalWeights()

NO_SLOTS = np.empty(0, dtype=np.int64)
NO_SCORES = np.empty(0, dtype=np.float32)
_NOTHING = (NO_SLOTS, NO_SCORES, NO_SCORES)
#: the usual constant of reciprocal rank fusion (Cormack et al., 2009)
RRF_K = 60


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

    # ------------------------------------------------------------ paths (read lock held)
    def candidates(self, q, k):
        """Index candidates for the rerank and MMR stages, in id order (so that
        the kernels' ties to the lower position are ties to the lower id)."""
        slots, sims = self._indexes.search(q, candidate_count(k, len(self._table)))
        order = np.argsort(self._table.ids_at(slots), kind="stable")
        return slots[order], sims[order]

    def hard(self, q, k, label):
        """``(slots, cosines)`` of chroma cosine to the validated chroma ``q``."""
        n = len(self._table)
        if self._table.store is None or n == 0:
            return NO_SLOTS, NO_SCORES
        s = self._table.store
        mask = s.alive if label is None else s.alive & (s.labels == label)
        return ranked_by_id(lambda kk: topk_cosine(s.chroma, q, mask, kk), k, n, s.ids)

    def soft(self, query, k, weights):
        """``(slots, rerank values, cosines)`` of the soft path."""
        q, label = self.query_embedding(query)
        return self.soft_embedded(q, label, k, weights)

    def soft_embedded(self, q, label, k, weights):
        if q is None or len(self._table) == 0:
            return _NOTHING
        slots, sims = self.candidates(q, k)
        s = self._table.store
        w = weights
        order, scores = hybrid_rerank(
            sims,
            s.util_mean[slots],
            s.labels[slots],
            label,
            np.ascontiguousarray(s.embeddings[slots]),
            w.alpha,
            w.beta,
            w.gamma,
            w.delta,
            w.lambda_,
            k,
        )
        return slots[order], scores, sims[order]

    def diverse(self, query, k, lambda_, fast, min_sim, sample):
        """``(slots, MMR values, cosines)`` of greedy MMR over the soft candidates."""
        q, _ = self.query_embedding(query)
        if q is None or len(self._table) == 0:
            return _NOTHING
        slots, sims = self.candidates(q, k)
        cands = np.ascontiguousarray(self._table.store.embeddings[slots])
        if fast:
            order, scores = mmr_fast(q, cands, k, lambda_, min_sim, sample)
        else:
            order, scores = mmr_standard(q, cands, k, lambda_)
        return slots[order], scores, sims[order]

    def hybrid(self, q, hard_q, k):
        """``(slots, fused scores, cosines)``: hard and soft rankings fused by reciprocal
        rank, each ``2k`` deep (``hard_q``: the validated chroma, or None)."""
        depth = 2 * min(k, max(len(self._table), 1))  # each list goes beyond k: agreement lifts
        qv, label = self.query_embedding(q)
        lists = [self.soft_embedded(qv, label, depth, DEFAULT_WEIGHTS)[0]]
        if hard_q is not None:
            lists.append(self.hard(hard_q, depth, None)[0])
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

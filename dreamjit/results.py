"""What retrieval and lookups return: ``DreamEntry`` and ``Hits``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .features import SolverResult

__all__ = ["BatchHits", "DreamEntry", "Hits", "Hit"]


def _frozen(arr):
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


_I64 = np.dtype(np.int64)
_F32 = np.dtype(np.float32)


def _as_owned(arr, dtype):
    """``arr`` itself when it is a numpy array of ``dtype``, else a new array of it."""
    if type(arr) is np.ndarray and arr.dtype == dtype:
        return arr
    return np.array(arr, dtype=dtype)


@dataclass(frozen=True)
class DreamEntry:
    """A read-only snapshot of one stored entry, as returned by ``pool[eid]``.

    Arrays are copies marked read-only: later changes to the pool do not
    show through, and the entry cannot change the pool.

    Attributes
    ----------
    id : int
        The entry id.
    tensor : numpy.ndarray
        The stored tensor (float32, the pool's tensor shape).
    certainty : numpy.ndarray or None
        Per-cell certainty, when the pool stores it.
    result : SolverResult
        Energy, coherence and violation given when it was added.
    chroma : numpy.ndarray
        Chroma signature (C,).
    label : int or None
        The class label given when it was added.
    utility : float or None
        The utility given when it was added.
    util_mean : float
        Running mean of the utilities (the initial one and all feedback).
    usage_count : int
        How many retrievals have returned this entry.
    timestamp : float
        ``time.time()`` when it was added.
    spectral : numpy.ndarray
        The six spectral features (see :class:`SpectralFeatures`).
    embedding : numpy.ndarray
        The unit embedding used by soft retrieval.
    """

    id: int
    tensor: np.ndarray
    certainty: np.ndarray | None
    result: SolverResult
    chroma: np.ndarray
    label: int | None
    utility: float | None
    util_mean: float
    usage_count: int
    timestamp: float
    spectral: np.ndarray
    embedding: np.ndarray

    def __post_init__(self):
        for name in ("tensor", "certainty", "chroma", "spectral", "embedding"):
            arr = getattr(self, name)
            if arr is not None:
                arr.setflags(write=False)

    def __repr__(self):
        return (
            f"DreamEntry(id={self.id}, shape={self.tensor.shape}, label={self.label}, "
            f"coherence={self.result.coherence:.4f}, util_mean={self.util_mean:.4f}, "
            f"usage_count={self.usage_count})"
        )


class Hit(NamedTuple):
    """One retrieval result: ``(id, score)``, as yielded by iterating :class:`Hits`.

    Attributes
    ----------
    id : int
        The entry id.
    score : float
        Its score (see :attr:`Hits.scores`).
    """

    id: int
    score: float


class Hits:
    """Retrieval results: ``ids`` and ``scores`` arrays, best first.

    ``tensors()`` and ``entries()`` fetch the stored data on request, all hits
    under one read lock (one consistent state of the pool). A hit evicted or
    removed since the retrieval is skipped (never a ``KeyError``): both then
    return fewer than ``len(hits)`` items, in hit order; ``entries()`` says
    which (each entry carries its ``id``).

    Parameters
    ----------
    ids, scores : array_like
        The attributes below (copied, read-only).
    pool : DreamPool, optional
        The pool the hits came from (what :meth:`entries` and :meth:`tensors` read).
    similarity : array_like, optional
        The attribute below; NaN for every hit when not given.

    Attributes
    ----------
    ids : numpy.ndarray of int64, shape (k,)
        Entry ids, best first (read-only).
    scores : numpy.ndarray of float32, shape (k,)
        The value each hit was ranked by; its meaning depends on the retrieval
        method (chroma cosine for hard retrieval, the rerank value for soft,
        the MMR value for diverse, the fused reciprocal rank for hybrid), so
        scores of different methods, and of different ranks in soft and
        diverse retrieval, do not compare.
    similarity : numpy.ndarray of float32, shape (k,)
        The cosine of each hit to the query, which does compare across ranks
        and methods: the chroma cosine for hard retrieval, the embedding
        cosine for soft, diverse and hybrid retrieval.

    Examples
    --------
    >>> import numpy as np, dreamjit as dj
    >>> pool = dj.DreamPool()
    >>> for v in (0.2, 0.5, 0.8):
    ...     _ = pool.add(np.full((4, 4, 3), v) * [1.0, 0.5, 0.25], dj.SolverResult(1.0, 0.9, 0.0))
    >>> hits = pool.retrieve_similar([1.0, 0.5, 0.25], k=2)
    >>> len(hits), hits.ids.dtype, hits.tensors().shape
    (2, dtype('int64'), (2, 4, 4, 3))
    >>> eid, score = hits[0]
    >>> [e.id for e in hits.entries()] == hits.ids.tolist()
    True
    """

    __slots__ = ("ids", "scores", "similarity", "_pool")

    def __init__(self, ids, scores, pool=None, similarity=None):
        self.ids = _frozen(np.asarray(ids, dtype=np.int64))
        self.scores = _frozen(np.asarray(scores, dtype=np.float32))
        if similarity is None:
            similarity = np.full(self.ids.shape, np.nan, np.float32)
        self.similarity = _frozen(np.asarray(similarity, dtype=np.float32))
        self._pool = pool

    @classmethod
    def owned(cls, ids, scores, similarity, pool=None) -> Hits:
        """Hits over arrays nobody else holds (fresh kernel results of the right dtypes:
        int64 ids, float32 scores and similarity): marked read-only, not copied.

        Parameters
        ----------
        ids, scores, similarity : numpy.ndarray
            ``(k,)`` int64, float32, float32.
        pool : DreamPool, optional
            The pool the ids belong to.

        Returns
        -------
        Hits
            Over the given arrays themselves (now read-only); arrays of another type or
            dtype are converted (copied) first.
        """
        hits = cls.__new__(cls)
        if not (
            type(ids) is np.ndarray
            and type(scores) is np.ndarray
            and type(similarity) is np.ndarray
            # numpy's canonical dtypes by identity first (arrays made here by np.empty);
            # numba's boxed results carry equal dtypes that are other objects
            and (ids.dtype is _I64 or ids.dtype == _I64)
            and (scores.dtype is _F32 or scores.dtype == _F32)
            and (similarity.dtype is _F32 or similarity.dtype == _F32)
        ):  # not what a kernel returns: converted (copies of the right dtype)
            ids = _as_owned(ids, np.int64)
            scores = _as_owned(scores, np.float32)
            similarity = _as_owned(similarity, np.float32)
        ids.setflags(False)  # write=False, positional: half the cost of the keyword
        scores.setflags(False)
        similarity.setflags(False)
        hits.ids = ids
        hits.scores = scores
        hits.similarity = similarity
        hits._pool = pool
        return hits

    def __len__(self):
        return int(self.ids.shape[0])

    def len(self) -> int:
        """The number of hits (as ``len(hits)``).

        Returns
        -------
        int
            ``k``.
        """
        return len(self)

    def __iter__(self):
        for i, s in zip(self.ids.tolist(), self.scores.tolist()):
            yield Hit(i, s)

    def __getitem__(self, i):
        return Hit(int(self.ids[i]), float(self.scores[i]))

    def entries(self) -> list:
        """The hit entries still in the pool, best first.

        Hits evicted since the retrieval are skipped.

        Returns
        -------
        list of DreamEntry
            Snapshots, each with its ``id``.
        """
        if self._pool is None:
            return []
        return self._pool.entries_of(self.ids)

    def tensors(self) -> np.ndarray:
        """The tensors of the hits still in the pool, stacked, best first.

        Hits evicted since the retrieval are skipped, so when ``m < len(hits)``
        the rows no longer line up with ``ids``; use :meth:`entries` to know
        which entries they are.

        Returns
        -------
        numpy.ndarray
            float32 ``(m, *tensor_shape)``, ``m <= k``; ``(0,)`` when the pool
            has never held a tensor (its shape is not known yet).
        """
        if self._pool is None:
            return np.empty((0,), np.float32)
        return self._pool.gather("tensors", self.ids)

    def __repr__(self):
        pairs = ", ".join(
            f"{i}:{s:.4f}" for i, s in zip(self.ids.tolist()[:8], self.scores.tolist()[:8])
        )
        more = ", ..." if len(self) > 8 else ""
        return f"Hits([{pairs}{more}])"


class BatchHits:
    """The results of a batch retrieval: one row of hits per query.

    Parameters
    ----------
    ids : array_like of int, shape (m, w)
        Entry ids per query, -1 for padding.
    scores : array_like of float, shape (m, w)
        The ranking values (NaN in padding).
    pool : DreamPool, optional
        The pool the ids belong to (for :meth:`Hits.entries` of a row).
    similarity : array_like of float, shape (m, w), optional
        The cosines to the queries (NaN in padding; all NaN when omitted).

    Attributes
    ----------
    ids : numpy.ndarray of int64, shape (m, w)
        Entry ids per query, best first, padded with -1 where a query has fewer
        than ``w`` hits (a filter matching fewer entries).
    scores : numpy.ndarray of float32, shape (m, w)
        The value each hit was ranked by (as :attr:`Hits.scores`), NaN in padding.
    similarity : numpy.ndarray of float32, shape (m, w)
        The cosine of each hit to its query (as :attr:`Hits.similarity`), NaN in padding.

    ``len(batch)`` is the number of queries; ``batch[i]`` (and iteration) gives
    query ``i``'s :class:`Hits` without the padding. Arrays are read-only.

    Examples
    --------
    >>> import numpy as np, dreamjit as dj
    >>> batch = dj.BatchHits(np.array([[3, 1], [2, -1]]), np.array([[0.9, 0.5], [0.8, np.nan]]))
    >>> len(batch), batch.ids.shape, batch[1].ids.tolist(), [len(h) for h in batch]
    (2, (2, 2), [2], [2, 1])
    """

    __slots__ = ("ids", "scores", "similarity", "_pool")

    def __init__(self, ids, scores, pool=None, similarity=None):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError(f"ids: expected a 2-d array, got shape {ids.shape}")
        self.ids = _frozen(ids)
        self.scores = _frozen(np.asarray(scores, dtype=np.float32).reshape(ids.shape))
        if similarity is None:
            similarity = np.full(ids.shape, np.nan, np.float32)
        self.similarity = _frozen(np.asarray(similarity, dtype=np.float32).reshape(ids.shape))
        self._pool = pool

    def __len__(self):
        return int(self.ids.shape[0])

    @property
    def shape(self) -> tuple:
        """``(m, w)``: queries and the width of the arrays."""
        return tuple(self.ids.shape)

    def counts(self) -> np.ndarray:
        """Hits per query (the ids that are not padding).

        Returns
        -------
        numpy.ndarray of int64, shape (m,)
            How many of row ``i``'s ids are entries (not -1).
        """
        return np.count_nonzero(self.ids >= 0, axis=1).astype(np.int64)

    def __getitem__(self, i) -> Hits:
        if not isinstance(i, (int, np.integer)) or isinstance(i, (bool, np.bool_)):
            raise TypeError(f"BatchHits indices are integers, not {type(i).__name__}")
        row = self.ids[i]
        n = int(np.count_nonzero(row >= 0))
        return Hits(row[:n], self.scores[i, :n], self._pool, similarity=self.similarity[i, :n])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self):
        m, w = self.ids.shape
        return f"BatchHits({m} queries x {w} hits)"

"""What retrieval and lookups return: ``DreamEntry`` and ``Hits``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .features import SolverResult

__all__ = ["DreamEntry", "Hits", "Hit"]


def _frozen(arr):
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


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
            float32 ``(m, *tensor_shape)``, ``m <= k``.
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

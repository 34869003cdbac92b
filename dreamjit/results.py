"""What retrieval and lookups return: ``DreamEntry`` and ``Hits``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["DreamEntry", "Hits", "Hit"]


def _frozen(arr):
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class DreamEntry:
    """A read-only snapshot of one stored entry.

    Arrays are copies marked read-only: later changes to the pool do not
    show through, and the entry cannot change the pool.
    """

    id: int
    tensor: np.ndarray
    certainty: np.ndarray | None
    result: "object"  # SolverResult
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
        return (f"DreamEntry(id={self.id}, shape={self.tensor.shape}, label={self.label}, "
                f"coherence={self.result.coherence:.4f}, util_mean={self.util_mean:.4f}, "
                f"usage_count={self.usage_count})")


class Hit(NamedTuple):
    id: int
    score: float


class Hits:
    """Retrieval results: ``ids`` and ``scores`` arrays, best first.

    ``tensors()`` and ``entries()`` fetch the stored data on request; an id
    evicted since the retrieval raises ``KeyError``.
    """

    __slots__ = ("ids", "scores", "_pool")

    def __init__(self, ids, scores, pool=None):
        self.ids = _frozen(np.asarray(ids, dtype=np.int64))
        self.scores = _frozen(np.asarray(scores, dtype=np.float32))
        self._pool = pool

    def __len__(self):
        return int(self.ids.shape[0])

    def len(self) -> int:
        return len(self)

    def __iter__(self):
        for i, s in zip(self.ids.tolist(), self.scores.tolist()):
            yield Hit(i, s)

    def __getitem__(self, i):
        return Hit(int(self.ids[i]), float(self.scores[i]))

    def entries(self) -> list:
        return [self._pool[i] for i in self.ids.tolist()]

    def tensors(self) -> np.ndarray:
        """The hit tensors stacked, shape ``(k, *tensor_shape)``."""
        return self._pool._gather("tensors", self.ids)

    def __repr__(self):
        pairs = ", ".join(f"{i}:{s:.4f}" for i, s in zip(self.ids.tolist()[:8], self.scores.tolist()[:8]))
        more = ", ..." if len(self) > 8 else ""
        return f"Hits([{pairs}{more}])"

"""Pool configuration: one frozen, validated dataclass."""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

from ._validate import as_float, as_int
from .errors import InvalidConfigError

__all__ = ["PoolConfig", "EVICTION_POLICIES"]

#: eviction policy name -> code used by the budget kernel
EVICTION_POLICIES = {"oldest": 0, "lowest_coherence": 1, "lowest_utility": 2}

#: default number of live entries at which the pool switches from the exact
#: index to NN-descent. Through retrieve_soft (d=64, recall@10 1.0 both ways)
#: ANN/exact speed was 1.0x at 2e4, 1.3x at 5e4, 1.7x at 1e5, 2.5x+ at 2e5
#: (scripts/measure_crossover.py): below ~5e4 the graph is not worth its build.
DEFAULT_ANN_THRESHOLD = 50_000


@dataclass(frozen=True)
class PoolConfig:
    """Settings of a :class:`~dreamjit.DreamPool`, validated on construction.

    Parameters
    ----------
    max_size : int
        Most entries the pool holds; adding past it evicts by ``eviction``.
    coherence_threshold : float
        ``add_if_coherent`` stores a tensor only if its coherence is at least this, in [0, 1].
    retrieval_limit : int
        The ``k`` used when a retrieval call passes ``k=None``.
    use_ann : bool
        Use the NN-descent index at or above ``ann_threshold`` live entries.
    ann_threshold : int
        Live entries at which the approximate index takes over from the exact one.
    memory_budget_mb : float or None
        Logical memory budget in MiB (2**20 bytes); ``None`` means unbounded.
    eviction_threshold : float
        Before an add, entries are evicted until usage fits within
        ``eviction_threshold * budget``; in (0, 1].
    eviction : {"oldest", "lowest_coherence", "lowest_utility"}
        Which entries go first when the pool is full or over budget.
    embedding_dim : int
        Length of the soft-retrieval embedding (or of the user's own vectors).
    query_cache_size : int
        Entries in the LRU query-embedding cache (0 disables it).
    seed : int
        The one seed for everything random (embedding projection, ANN builds).
    tensor_shape : tuple of int or None
        ``(rows, cols, C)`` or ``(rows, cols, layers, C)``; ``None`` takes it from the first add.
    store_certainty : bool
        Keep a per-cell certainty array ``(rows, cols, layers)`` with each entry.
    ann_n_neighbors, ann_n_pivots, ann_epsilon, ann_overfetch : NN-descent settings
        Graph degree (pynndescent's ``n_neighbors``); rows of the entry layer
        every query scans first (None: ``ceil(6*sqrt(n))``; it always holds a
        representative of each connected component of the graph); walk slack;
        beam = ``max(40, overfetch*k)``. Defaults measured
        (``scripts/measure_ann_clusters.py``): pool recall@10 >= 0.95 on 2e5
        points in 2000 and in 20000 clusters.
    ann_rebuild_fraction : float
        Rebuild the graph once entries added or removed since the last build
        pass this share of it.
    ann_background : bool
        Build off the query path (queries use the previous graph or the exact
        index meanwhile); False builds synchronously.
    embedding_weights : tuple of 4 floats
        Weights of the chroma, spectral, label and utility feature groups.
    label_buckets : int
        Size of the label one-hot group of the embedding (label mod buckets).

    Examples
    --------
    >>> from dreamjit import PoolConfig
    >>> PoolConfig(max_size=100, eviction="lowest_coherence").max_size
    100
    """

    max_size: int = 1000
    coherence_threshold: float = 0.75
    retrieval_limit: int = 3
    use_ann: bool = True
    ann_threshold: int = DEFAULT_ANN_THRESHOLD
    memory_budget_mb: float | None = 500
    eviction_threshold: float = 0.9
    eviction: str = "oldest"
    embedding_dim: int = 64
    query_cache_size: int = 128
    seed: int = 0
    tensor_shape: tuple | None = None
    store_certainty: bool = False
    # NN-descent parameters (chosen by measurement, see the index benchmarks)
    ann_n_neighbors: int = 30
    ann_n_pivots: int | None = None
    ann_epsilon: float = 0.15
    ann_overfetch: float = 1.5
    ann_rebuild_fraction: float = 0.1
    ann_background: bool = True
    # embedding feature-group weights: chroma, spectral, label, utility
    embedding_weights: tuple = field(default=(1.0, 0.5, 0.5, 0.25))
    label_buckets: int = 16

    def __post_init__(self):
        def check_int(name, minimum, maximum=None):
            try:
                value = as_int(getattr(self, name), name, minimum=minimum, maximum=maximum)
            except Exception:
                raise InvalidConfigError(name, getattr(self, name),
                                         f"an integer >= {minimum}" if maximum is None
                                         else f"an integer in [{minimum}, {maximum}]") from None
            object.__setattr__(self, name, value)

        def check_float(name, lo, hi, exclusive_min=False):
            value = as_float(getattr(self, name), name, minimum=lo, maximum=hi,
                             exclusive_min=exclusive_min, error=InvalidConfigError)
            object.__setattr__(self, name, value)

        check_int("max_size", 1)
        check_int("retrieval_limit", 1)
        check_int("ann_threshold", 1)
        check_int("embedding_dim", 1)
        check_int("query_cache_size", 0)
        check_int("seed", 0, 2**32 - 1)
        check_int("ann_n_neighbors", 2)
        if self.ann_n_pivots is not None:
            check_int("ann_n_pivots", 1)
        check_int("label_buckets", 1)
        check_float("coherence_threshold", 0.0, 1.0)
        check_float("eviction_threshold", 0.0, 1.0, exclusive_min=True)
        check_float("ann_epsilon", 0.0, None)
        check_float("ann_overfetch", 1.0, None)
        check_float("ann_rebuild_fraction", 0.0, 1.0, exclusive_min=True)
        for name in ("use_ann", "store_certainty", "ann_background"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidConfigError(name, getattr(self, name), "True or False")
        if self.memory_budget_mb is not None:
            check_float("memory_budget_mb", 0.0, None, exclusive_min=True)
        if self.eviction not in EVICTION_POLICIES:
            raise InvalidConfigError("eviction", self.eviction,
                                     "one of " + ", ".join(repr(p) for p in EVICTION_POLICIES))
        self._check_tensor_shape()
        self._check_embedding_weights()

    def _check_tensor_shape(self):
        shape = self.tensor_shape
        if shape is None:
            return
        ok = isinstance(shape, (tuple, list)) and len(shape) in (3, 4) and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
        if not ok:
            raise InvalidConfigError("tensor_shape", shape,
                                     "None or a tuple (rows, cols, C) or (rows, cols, layers, C) of integers >= 1")
        object.__setattr__(self, "tensor_shape", tuple(int(s) for s in shape))

    def _check_embedding_weights(self):
        w = self.embedding_weights
        ok = isinstance(w, (tuple, list)) and len(w) == 4
        if ok:
            try:
                w = tuple(as_float(x, "embedding_weights", minimum=0.0) for x in w)
            except Exception:
                ok = False
        if not ok:
            raise InvalidConfigError("embedding_weights", self.embedding_weights,
                                     "4 finite weights >= 0 (chroma, spectral, label, utility)")
        object.__setattr__(self, "embedding_weights", w)

    @property
    def budget_bytes(self) -> int | None:
        """The memory budget in bytes, or None when unbounded."""
        if self.memory_budget_mb is None:
            return None
        return int(self.memory_budget_mb * 2**20)

    def replace(self, **changes) -> "PoolConfig":
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-able settings."""
        d = dataclasses.asdict(self)
        for key in ("tensor_shape", "embedding_weights"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PoolConfig":
        d = dict(d)
        for key in ("tensor_shape", "embedding_weights"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidConfigError("config", sorted(unknown), "only known PoolConfig fields")
        return cls(**d)

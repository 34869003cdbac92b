"""Pool configuration: one frozen, validated dataclass."""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import os
from dataclasses import dataclass, field

import numpy as np

from ._validate import MAX_ENTRIES, as_float, as_int, is_integer
from .errors import DreamError, InvalidConfigError

__all__ = ["PoolConfig", "EVICTION_POLICIES", "TENSOR_STORES"]

#: the eviction policies (the order in which entries leave: see ``_budget.Budget``)
EVICTION_POLICIES = ("oldest", "lowest_coherence", "lowest_utility")
#: where tensors live: in RAM, or in a memory-mapped file under ``path``
TENSOR_STORES = ("memory", "mmap")
#: settings added after format 2 files were written: absent from such a file's
#: config, they take their defaults
LATER_FIELDS = ("tensor_store", "path", "disk_budget_mb", "ann_min_ef")

#: default number of live entries at which the pool switches from the exact
#: index to NN-descent. Through retrieve_soft (d=64, recall@10 1.0 both ways)
#: ANN/exact speed was 1.0x at 2e4, 1.3x at 5e4, 1.7x at 1e5, 2.5x+ at 2e5
#: (scripts/measure_crossover.py): below ~5e4 the graph is not worth its build.
DEFAULT_ANN_THRESHOLD = 50_000

#: default weights of the embedding's feature groups (chroma, spectral, spatial,
#: label, utility), chosen on photo patches (scripts/measure_retrieval_quality.py)
DEFAULT_EMBEDDING_WEIGHTS = (1.0, 0.25, 2.0, 0.5, 0.25)
#: upper bounds of the settings (a huge value is refused, never left to overflow later):
#: counts of entries share MAX_ENTRIES (2**40); sizes that are allocated up front
#: (embedding length, label one-hot group, graph degree) are kept to what fits in memory
MAX_EMBEDDING_DIM = 2**16
MAX_LABEL_BUCKETS = 2**16
MAX_ANN_NEIGHBORS = 2**12
MAX_ANN_OVERFETCH = 1000.0
MAX_ANN_MIN_EF = 2**16
MAX_ANN_EPSILON = 1000.0
MAX_EMBEDDING_WEIGHT = 1e6
#: most values in one tensor (rows * cols * layers * C)
MAX_TENSOR_VALUES = 2**40
#: 2**40 MiB is 2**60 bytes: the budget in bytes stays an int64
MAX_BUDGET_MB = float(2**40)


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
        It counts the storage rows of the live entries and the index arrays
        this process holds (their exact ``nbytes``; a newly installed graph
        that does not fit evicts entries by ``eviction``). It does not count
        the NN-descent build worker: a separate process shared by every pool
        of the process, started for the first build, whose memory (~650 MB
        RSS after a 2e5 x 64 build, measured here) is freed when it closes
        after ``dreamjit.index.WORKER_IDLE_SECONDS`` (120 s) without a build;
        nor temporary arrays while a call runs.
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
        beam = ``max(ann_min_ef, overfetch*k, k)`` with a fixed ``ann_min_ef``
        (with the calibrated one: see ``ann_min_ef``). Defaults measured
        (``scripts/measure_ann_clusters.py``): pool recall@10 >= 0.95 on 2e5
        points in 2000 and in 20000 clusters.
    ann_min_ef : int or None
        Smallest beam of a graph walk. A soft retrieval whose rerank keeps the
        similarity order (``beta = delta = 0``, and ``gamma = 0`` or an
        unlabelled query) walks for ``k`` rows, any other for the rerank's
        ``max(4k, 32)`` candidates. None (the default): the beam is calibrated
        once per graph, when it is built (and when a graph saved without a
        calibration is loaded): a seeded sample of its rows (256, at most one
        in 64) is held out of the graph as queries and walked at beams 10,
        12, 16, 20, 24, 32, ... 256 until their recall@10 against the exact
        top 10 reaches 0.97 (``dreamjit.index.calibrate.CALIBRATION_RECALL``);
        the beam is saved with the graph, kept by graph updates and
        calibrated again by a rebuild. A walk for ``k <= 11`` rows (10 and
        the one more the pool asks for to see ties) keeps ``max(beam, k)``,
        for more ``max(beam * k / 10, ann_overfetch * k)``.
        Measured (``scripts/measure_ann_speed.py``): beam 10 on a 100-centre
        mixture and on 1000 clusters of 1e5 points, 80 on 2e5 points in
        20000 clusters. An int fixes the beam for every graph (62 was the
        default before calibration).
    ann_rebuild_fraction : float
        Rebuild the graph once entries added or removed since the last build
        pass this share of it.
    ann_background : bool
        Build off the query path (queries use the previous graph or the exact
        index meanwhile); False builds synchronously.
    ann_build_timeout : float or None
        Seconds one NN-descent build may take (starting the build worker,
        which compiles pynndescent, ~35 s here, is bounded the same way);
        past it the worker is killed and reaped, the build counts as failed
        (logged) and queries keep the previous graph or the exact scan.
        None: no limit.
    embedding_weights : tuple of 5 floats
        Weights of the chroma, spectral, spatial, label and utility feature
        groups of computed embeddings (see :class:`~dreamjit.EmbeddingMapper`).
        A query ranks by the groups it has; the squared weights are the
        groups' shares of the cosine.
    label_buckets : int
        Size of the label one-hot group of the embedding (label mod buckets).
    spatial_grid : int
        Side of the spatial thumbnail group (``spatial_grid**2 * C`` values).
    tensor_store : {"memory", "mmap"}
        ``"mmap"`` keeps the tensors in a memory-mapped file in the directory
        ``path`` (a new ``tensors-<random>.f32`` per pool) while embeddings and
        metadata stay in RAM; ``memory_budget_mb`` then counts the RAM columns
        and ``disk_budget_mb`` the tensor rows. :meth:`DreamPool.save` of such a
        pool writes a sealed sidecar (every other column, the tensor rows' slots
        and a CRC-32 of each row) instead of copying the tensors, and
        :meth:`DreamPool.load` of the sidecar reopens the file after checking
        its size and every row's CRC (``IndexCorruptedError`` on any mismatch,
        e.g. rows overwritten by adds after the save, or a damaged file).
    path : str or os.PathLike or None
        The directory of the tensor file (created if missing); required with
        ``tensor_store="mmap"``, None otherwise. Stored as an absolute path.
    disk_budget_mb : float or None
        With ``"mmap"``: the most MiB of tensor rows kept on disk (live
        entries' rows; the file also grows by doubling up to it); adding past
        ``eviction_threshold`` of it evicts by ``eviction``. None: unbounded.

    Raises
    ------
    InvalidConfigError
        An unknown setting (the message lists the valid ones), a value of the
        wrong type (a bool where an int is expected, a string, a list, NaN,
        inf, ...) or a value out of range. Upper bounds: ``max_size``,
        ``retrieval_limit``, ``ann_threshold``, ``query_cache_size`` and
        ``ann_n_pivots`` at most 2**40; ``embedding_dim`` and
        ``label_buckets`` at most 2**16; ``ann_n_neighbors`` at most 4096;
        ``ann_overfetch`` and ``ann_epsilon`` at most 1000;
        ``memory_budget_mb`` at most 2**40; ``ann_build_timeout`` at most 1e9 s;
        embedding weights at most 1e6; ``tensor_shape`` at most 2**40 values.

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
    ann_min_ef: int | None = None
    ann_rebuild_fraction: float = 0.1
    ann_background: bool = True
    ann_build_timeout: float | None = 900.0
    # embedding feature-group weights: chroma, spectral, spatial, label, utility
    embedding_weights: tuple = field(default=DEFAULT_EMBEDDING_WEIGHTS)
    label_buckets: int = 16
    spatial_grid: int = 4
    # out-of-core tensors
    tensor_store: str = "memory"
    path: str | None = None
    disk_budget_mb: float | None = None

    def __post_init__(self):
        def check_int(name, minimum, maximum):
            value = getattr(self, name)
            try:
                value = as_int(value, name, minimum=minimum, maximum=maximum)
            except DreamError:
                raise InvalidConfigError(
                    name, value, f"an integer in [{minimum}, {maximum}]"
                ) from None
            object.__setattr__(self, name, value)

        def check_float(name, lo, hi, exclusive_min=False):
            value = as_float(
                getattr(self, name),
                name,
                minimum=lo,
                maximum=hi,
                exclusive_min=exclusive_min,
                error=InvalidConfigError,
            )
            object.__setattr__(self, name, value)

        check_int("max_size", 1, MAX_ENTRIES)
        check_int("retrieval_limit", 1, MAX_ENTRIES)
        check_int("ann_threshold", 1, MAX_ENTRIES)
        check_int("embedding_dim", 1, MAX_EMBEDDING_DIM)
        check_int("query_cache_size", 0, MAX_ENTRIES)
        check_int("seed", 0, 2**32 - 1)
        check_int("ann_n_neighbors", 2, MAX_ANN_NEIGHBORS)
        if self.ann_min_ef is not None:
            check_int("ann_min_ef", 1, MAX_ANN_MIN_EF)
        if self.ann_n_pivots is not None:
            check_int("ann_n_pivots", 1, MAX_ENTRIES)
        check_int("label_buckets", 1, MAX_LABEL_BUCKETS)
        check_int("spatial_grid", 1, 64)
        check_float("coherence_threshold", 0.0, 1.0)
        check_float("eviction_threshold", 0.0, 1.0, exclusive_min=True)
        check_float("ann_epsilon", 0.0, MAX_ANN_EPSILON)
        check_float("ann_overfetch", 1.0, MAX_ANN_OVERFETCH)
        check_float("ann_rebuild_fraction", 0.0, 1.0, exclusive_min=True)
        for name in ("use_ann", "store_certainty", "ann_background"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise InvalidConfigError(name, value, "True or False")
            object.__setattr__(self, name, bool(value))
        if self.memory_budget_mb is not None:
            check_float("memory_budget_mb", 0.0, MAX_BUDGET_MB, exclusive_min=True)
        if self.ann_build_timeout is not None:
            check_float("ann_build_timeout", 0.0, 1e9, exclusive_min=True)
        if not isinstance(self.eviction, str) or self.eviction not in EVICTION_POLICIES:
            raise InvalidConfigError(
                "eviction", self.eviction, "one of " + ", ".join(repr(p) for p in EVICTION_POLICIES)
            )
        self._check_tensor_shape()
        self._check_embedding_weights()
        self._check_tensor_store()
        if self.disk_budget_mb is not None:
            check_float("disk_budget_mb", 0.0, MAX_BUDGET_MB, exclusive_min=True)

    def _check_tensor_store(self):
        store = self.tensor_store
        if not isinstance(store, str) or store not in TENSOR_STORES:
            raise InvalidConfigError(
                "tensor_store", store, "one of " + ", ".join(repr(s) for s in TENSOR_STORES)
            )
        path = self.path
        if store == "memory":
            if path is not None:
                raise InvalidConfigError("path", path, 'None (tensor_store="memory")')
            if self.disk_budget_mb is not None:
                raise InvalidConfigError(
                    "disk_budget_mb", self.disk_budget_mb, 'None (tensor_store="memory")'
                )
            return
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise InvalidConfigError(
                "path", path, 'a directory path (str or os.PathLike) with tensor_store="mmap"'
            )
        path = os.fspath(path)
        if not isinstance(path, str) or "\x00" in path:
            raise InvalidConfigError("path", self.path, "a text path without NUL characters")
        object.__setattr__(self, "path", os.path.abspath(path))

    def _check_tensor_shape(self):
        shape = self.tensor_shape
        if shape is None:
            return
        ok = (
            _is_vector(shape)
            and len(shape) in (3, 4)
            and all(is_integer(s) and 1 <= int(s) <= MAX_TENSOR_VALUES for s in shape)
        )
        if ok:
            shape = tuple(int(s) for s in shape)
            ok = int(np.prod(shape, dtype=object)) <= MAX_TENSOR_VALUES
        if not ok:
            raise InvalidConfigError(
                "tensor_shape",
                self.tensor_shape,
                "None or a tuple (rows, cols, C) or (rows, cols, layers, C) "
                f"of integers >= 1, at most {MAX_TENSOR_VALUES} values in all",
            )
        object.__setattr__(self, "tensor_shape", shape)

    def _check_embedding_weights(self):
        w = self.embedding_weights
        ok = _is_vector(w) and len(w) == 5
        if ok:
            try:
                w = tuple(
                    as_float(x, "embedding_weights", minimum=0.0, maximum=MAX_EMBEDDING_WEIGHT)
                    for x in w
                )
            except DreamError:
                ok = False
        if not ok:
            raise InvalidConfigError(
                "embedding_weights",
                self.embedding_weights,
                f"5 finite weights in [0, {MAX_EMBEDDING_WEIGHT:g}] "
                "(chroma, spectral, spatial, label, utility)",
            )
        object.__setattr__(self, "embedding_weights", w)

    @property
    def budget_bytes(self) -> int | None:
        """The memory budget in bytes, or None when unbounded."""
        if self.memory_budget_mb is None:
            return None
        return int(self.memory_budget_mb * 2**20)

    @property
    def disk_budget_bytes(self) -> int | None:
        """The disk budget in bytes, or None when unbounded."""
        if self.disk_budget_mb is None:
            return None
        return int(self.disk_budget_mb * 2**20)

    def replace(self, **changes) -> PoolConfig:
        """A copy with some settings changed (validated again).

        Parameters
        ----------
        **changes
            Settings by name, as in the constructor.

        Returns
        -------
        PoolConfig
            The new settings; this one is unchanged.

        Raises
        ------
        InvalidConfigError
            An unknown setting (the message lists the valid ones) or a bad value.
        """
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as plain JSON-able values.

        Returns
        -------
        dict
            Setting name -> value (tuples as lists).
        """
        d = dataclasses.asdict(self)
        for key in ("tensor_shape", "embedding_weights"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PoolConfig:
        """Settings from a mapping such as :meth:`to_dict` gives (lists for tuples are fine).

        Parameters
        ----------
        d : Mapping
            Setting name -> value.

        Returns
        -------
        PoolConfig
            The validated settings.

        Raises
        ------
        InvalidConfigError
            ``d`` is not a mapping, names an unknown setting, or holds a bad value.
        """
        if not isinstance(d, collections.abc.Mapping):
            raise InvalidConfigError(
                "config", d, "a mapping of PoolConfig settings (e.g. to_dict())"
            )
        d = dict(d)
        _check_names(d)
        return cls(**d)  # tuple settings accept lists; __post_init__ validates every value


def _is_vector(value) -> bool:
    """A tuple, list or 1-d array (what tuple-valued settings accept)."""
    return isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim == 1)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(PoolConfig))


def _check_names(settings: dict) -> None:
    unknown = [key for key in settings if key not in _FIELD_NAMES]
    if unknown:
        key = unknown[0]
        raise InvalidConfigError(
            key if isinstance(key, str) else "config",
            settings[key],
            "a known PoolConfig setting, one of " + ", ".join(_FIELD_NAMES),
            detail=f"unknown setting {key!r}",
        )


def _checked_init(init):
    """Wrap the dataclass ``__init__``: unknown or repeated settings raise InvalidConfigError
    (naming the setting and listing the valid ones) instead of TypeError."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        _check_names(kwargs)
        try:
            signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise InvalidConfigError(
                "config",
                args,
                f"at most {len(_FIELD_NAMES)} settings, each given once",
                detail=str(exc),
            ) from None
        init(self, *args, **kwargs)

    return __init__


# replaced after the class is built, since @dataclass generates the __init__ being wrapped
PoolConfig.__init__ = _checked_init(PoolConfig.__init__)  # type: ignore[method-assign]

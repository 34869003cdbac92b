"""A pool sharded over a Dask cluster: :class:`ShardedPool`.

Each shard is a :class:`~dreamjit.DreamPool` held by a Dask actor on a worker
(``client.submit(..., actor=True)``); nothing here opens a socket or runs a
server of its own. The client routes adds to the shards round-robin, fans
retrievals out and merges them, and routes calls about one entry to the shard
that holds it.

Ids
    The user sees *global* ids: ``global = local * n_shards + shard`` where
    ``local`` is the id the shard's pool issued. They are unique across the
    pool and never reused (the shards' ids never are), the shard of an id is
    ``id % n_shards``, and a single client adding round-robin gets the ids a
    single pool would issue (0, 1, 2, ...). With several clients adding, ids
    stay unique but leave gaps.

Merging
    Hard retrieval takes each shard's top ``k`` by chroma cosine and keeps the
    best ``k`` (ties to the lower global id). Soft, diverse and hybrid
    retrieval take each shard's index candidates with their similarity,
    utility, label and embedding, keep the ``candidate_count(k, n)`` most
    similar of the union (exactly the candidates one pool of all entries would
    consider), and run the same hybrid rerank, MMR and fusion kernels on them in
    the client. With exact indexes the answers equal a single pool's on the
    same data; with NN-descent indexes on the shards they are as approximate
    as each shard's index.

Budget
    ``max_size`` and ``memory_budget_mb`` are split evenly: each shard's pool
    gets ``max_size // n_shards`` (at least 1) and ``memory_budget_mb /
    n_shards``; eviction runs per shard.

Failures
    A shard that cannot be reached (its worker died, or no answer within
    ``timeout`` seconds) raises :class:`~dreamjit.ShardUnavailableError` naming
    the shard. Retrievals take ``allow_partial=True`` to answer from the shards
    that did reply instead (logged as a warning).

Usage and filters
    The entries a merged retrieval returns have their usage counted on their
    shards without the caller waiting for it. ``where=`` (a label, labels or a
    callable over the columns, as ``DreamPool`` takes it) is passed to every
    shard as given, so a callable sees shard-local columns (local ids); a
    filtered soft, diverse or hybrid retrieval takes each shard's most similar
    allowed entries through the shard's own ``retrieve_soft(where=...)`` (so
    their usage is counted there too).

Many clients
    A pool is published on the scheduler under its ``name``
    (``client.publish_dataset``); any client of the same cluster joins it with
    :meth:`ShardedPool.attach`. Each shard runs one call at a time (Dask runs
    an actor's methods in one thread), so every call on a shard is atomic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping

import numpy as np

try:
    import distributed
    from distributed import Actor, Client
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        "dreamjit.distributed needs dask.distributed: pip install 'dreamjit[distributed]' "
        "(or pip install 'dask[distributed]')"
    ) from exc

from ._indexes import candidate_count, rerank_count, similarity_order
from ._retriever import DEFAULT_WEIGHTS, reciprocal_rank_fusion
from ._table import _ReadOnly
from ._validate import (
    as_feedback_utilities,
    as_float,
    as_ids,
    as_k,
    as_label,
    as_mmr_options,
    as_retrieval_mode,
    is_integer,
)
from .config import PoolConfig
from .errors import (
    DreamError,
    EmptyCollectionError,
    FeatureUnavailableError,
    IndexCorruptedError,
    InvalidConfigError,
    InvalidParameterError,
    ShardUnavailableError,
)
from .kernels.hybrid import hybrid_rerank
from .kernels.mmr import mmr_fast, mmr_standard
from .pool import DreamPool
from .query import Query, RetrievalMode, RetrievalWeights
from .results import Hits

__all__ = ["ShardedPool", "shard_config", "MANIFEST", "MANIFEST_VERSION"]

logger = logging.getLogger("dreamjit")

#: the manifest file of a saved sharded pool (a directory)
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
#: weights under which the hybrid rerank orders candidates by similarity alone
_SIMILARITY_ONLY = RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)
#: calls routed to every shard by name (methods of DreamPool)
_BY_NAME = frozenset(
    {
        "stats",
        "memory_budget_stats",
        "check_invariants",
        "fingerprint",
        "clear",
        "remove",
        "update",
        "to_pandas",
        "rebuild_index",
        "query_cache_stats",
        "__len__",
    }
)
_NO_IDS = np.empty(0, dtype=np.int64)
_NO_SCORES = np.empty(0, dtype=np.float32)


def shard_config(config: PoolConfig, n_shards: int) -> PoolConfig:
    """The config of each shard of a pool of ``config`` split ``n_shards`` ways.

    Parameters
    ----------
    config : PoolConfig
        The settings of the whole pool.
    n_shards : int
        How many shards share it.

    Returns
    -------
    PoolConfig
        ``config`` with ``max_size // n_shards`` (at least 1) and
        ``memory_budget_mb / n_shards`` (None stays None).
    """
    budget = config.memory_budget_mb
    return config.replace(
        max_size=max(config.max_size // n_shards, 1),
        memory_budget_mb=None if budget is None else budget / n_shards,
    )


# ---------------------------------------------------------------------- worker side
class _Shard:
    """One shard: a DreamPool in a Dask actor (runs on a worker, one call at a time)."""

    def __init__(self, config, index: int, n_shards: int, token: str, path=None):
        if path is None:
            self.pool = DreamPool(config)
        else:
            self.pool = DreamPool.load(path)
        self.index = index
        self.n_shards = n_shards
        self.token = token

    # ---------------------------------------------------------------- state
    def meta(self) -> dict:
        pool = self.pool
        return {
            "token": self.token,
            "index": self.index,
            "shape": pool.tensor_shape,
            "mode": pool.table.embedding_mode,
            "count": len(pool),
            "next_id": pool.table.next_id,
            "pid": os.getpid(),
        }

    def call(self, name: str, args: tuple = (), kwargs: dict | None = None):
        if name not in _BY_NAME:
            raise InvalidParameterError("name", name, "a method routed to shards")
        method = getattr(self.pool, name, None)
        if method is None:
            raise FeatureUnavailableError(
                "method", name, "a DreamPool method this version of dreamjit has"
            )
        return method(*args, **(kwargs or {}))

    # ---------------------------------------------------------------- adding
    def add(self, single: bool, args: tuple, kwargs: dict):
        if single:
            return self.pool.add(*args, **kwargs)
        return self.pool.add_if_coherent(*args, **kwargs)

    def add_batch(self, kwargs: dict):
        before = self.pool.table.next_id  # calls on a shard do not interleave
        return self.pool.add_batch(**kwargs), before

    # ---------------------------------------------------------------- reading
    def ids(self):
        return self.pool.ids()

    def contains(self, ids):
        return np.array([i in self.pool for i in ids], dtype=np.bool_)

    def entries(self, ids):
        return self.pool.entries_of(ids)

    def gather(self, column, ids):
        return self.pool.gather(column, ids)

    def next_id(self) -> int:
        return self.pool.table.next_id

    def record_feedback(self, ids, utilities):
        return self.pool.record_feedback(ids, utilities)

    def count_usage(self, ids) -> None:
        pool = self.pool
        with pool.lock.write():  # excludes readers, so counting needs no other lock
            pool.table.count_usage(pool.table.slots_of(ids))

    def save(self, path: str) -> tuple:
        self.pool.save(path)
        return _file_digest(path), os.path.getsize(path)

    # ---------------------------------------------------------------- retrieval parts
    def fetch(self, query, c_soft: int, chroma, c_hard: int, label, where, hybrid=False):
        """The parts a merged retrieval needs: ``(n, soft, hard)``; ``soft`` is
        ``(qv, qlabel, ids, sims, util_mean, labels, embeddings)`` of the ``c_soft``
        most similar entries (or None), ``hard`` is ``(ids, cosines, embeddings)``
        of the ``c_hard`` best chroma matches (or None)."""
        pool = self.pool
        retriever = pool.retriever
        soft: tuple | None = None
        hard: tuple | None = None
        hard_q = None
        if hybrid:  # as DreamPool.retrieve(mode=HYBRID): chroma from the query, if any
            q = retriever.as_query(query)
            hard_q = None if q.chroma is None else retriever.chroma_query(q)
            as_label(q.label)
        elif chroma is not None:
            hard_q = retriever.chroma_query(chroma)
        if where is not None:
            return self._fetch_where(query, c_soft, hard_q, c_hard, label, where)
        with pool.lock.read():
            table = pool.table
            n = len(table)
            store = table.store
            if query is not None:
                qv, qlabel = retriever.query_embedding(query)
                if qv is not None and n:
                    assert store is not None, "a pool with entries has storage"
                    slots, sims = pool.indexes.search(qv, min(c_soft, n))
                    soft = (
                        qv,
                        qlabel,
                        table.ids_at(slots),
                        np.asarray(sims, np.float32),
                        store.util_mean[slots],
                        store.labels[slots],
                        np.ascontiguousarray(store.embeddings[slots]),
                    )
                else:
                    soft = (qv, qlabel, _NO_IDS, _NO_SCORES, None, None, None)
            if hard_q is not None:
                slots, cos = retriever.hard(hard_q, c_hard, label)
                emb = None if store is None else np.ascontiguousarray(store.embeddings[slots])
                hard = (table.ids_at(slots) if len(slots) else _NO_IDS, cos, emb)
        return n, soft, hard

    def _fetch_where(self, query, c_soft, hard_q, c_hard, label, where):
        """:meth:`fetch` for a filtered retrieval, through the pool's own ``where=``:
        similarity-only weights make ``retrieve_soft`` return the most similar
        entries in similarity order (their usage is counted)."""
        pool = self.pool
        n = len(pool)
        soft = hard = None
        kw = {"where": where}  # DreamPool's where= (see the module docstring)
        if query is not None:
            qv, qlabel = pool.query_embedding(query)
            hits = pool.retrieve_soft(query, k=max(c_soft, 1), weights=_SIMILARITY_ONLY, **kw)
            ids = hits.ids
            soft = (
                qv,
                qlabel,
                ids,
                hits.similarity,
                pool.gather("util_mean", ids),
                pool.gather("labels", ids),
                np.ascontiguousarray(pool.gather("embeddings", ids)),
            )
        if hard_q is not None:
            hits = pool.retrieve_similar(hard_q, k=max(c_hard, 1), label=label, **kw)
            hard = (
                hits.ids,
                hits.scores,
                np.ascontiguousarray(pool.gather("embeddings", hits.ids)),
            )
        return n, soft, hard

    def fetch_many(self, queries, c_soft, chromas, c_hard, label, where):
        m = len(queries) if queries is not None else len(chromas)
        return [
            self.fetch(
                None if queries is None else queries[i],
                c_soft,
                None if chromas is None else chromas[i],
                c_hard,
                label,
                where,
            )
            for i in range(m)
        ]


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------- client side
class ShardedPool:
    """A :class:`~dreamjit.DreamPool` split over Dask actors on a cluster's workers.

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster the shards live on.
    n_shards : int
        How many shards (>= 1); they are placed round-robin on the workers.
    config : PoolConfig, optional
        Settings of the whole pool (``PoolConfig()`` when omitted); each shard
        gets :func:`shard_config` of it.
    name : str, optional
        The name the pool is published under (other clients :meth:`attach` by
        it); a fresh unique name when omitted.
    timeout : float, default 60
        Seconds to wait for a shard's answer before
        :class:`~dreamjit.ShardUnavailableError`.
    workers : sequence of str, optional
        Worker addresses to place the shards on (default: all workers).

    Notes
    -----
    The API mirrors :class:`~dreamjit.DreamPool` (see the module docstring for
    ids, merging, the budget split and failures). A pool is removed from the
    cluster by :meth:`close` (also on leaving a ``with`` block of the client
    that created it).

    Examples
    --------
    >>> from distributed import Client, LocalCluster          # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, processes=True))  # doctest: +SKIP
    >>> pool = ShardedPool(client, 2, PoolConfig(max_size=1000))    # doctest: +SKIP
    """

    #: the name other clients :meth:`attach` by
    name: _ReadOnly[str] = _ReadOnly()
    #: settings of the whole pool
    config: _ReadOnly[PoolConfig] = _ReadOnly()

    def __init__(
        self,
        client: Client,
        n_shards: int,
        config: PoolConfig | None = None,
        *,
        name: str | None = None,
        timeout: float = 60.0,
        workers=None,
        _paths=None,
    ):
        if not isinstance(client, Client):
            raise InvalidParameterError("client", client, "a distributed.Client")
        if not is_integer(n_shards) or isinstance(n_shards, bool) or int(n_shards) < 1:
            raise InvalidParameterError("n_shards", n_shards, "an integer >= 1")
        n_shards = int(n_shards)
        if config is None:
            config = PoolConfig()
        elif not isinstance(config, PoolConfig):
            raise InvalidConfigError("config", config, "a PoolConfig or None")
        if name is None:
            name = f"dreamjit-{uuid.uuid4().hex[:12]}"
        elif not isinstance(name, str) or not name:
            raise InvalidParameterError("name", name, "a non-empty string")
        timeout = as_float(timeout, "timeout", minimum=0.0, exclusive_min=True)
        if workers is None:
            workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        workers = list(workers)
        if not workers:
            raise InvalidParameterError("workers", workers, "at least one worker")
        if name in client.list_datasets():
            raise InvalidParameterError("name", name, "a name no pool of this cluster uses")
        self._bind(client, config, n_shards, name, timeout, owner=True)
        sub = shard_config(config, n_shards)
        tokens = [uuid.uuid4().hex for _ in range(n_shards)]
        futures = [
            client.submit(
                _Shard,
                sub,
                i,
                n_shards,
                tokens[i],
                None if _paths is None else _paths[i],
                actor=True,
                workers=[workers[i % len(workers)]],
                allow_other_workers=False,
                key=f"{name}-shard-{i}",
                pure=False,
            )
            for i in range(n_shards)
        ]
        self._futures = futures
        self._actors = [self._result(f, i) for i, f in enumerate(futures)]
        self._tokens = tokens
        record = {
            "version": MANIFEST_VERSION,
            "n_shards": n_shards,
            "config": config.to_dict(),
            "tokens": tokens,
            "addresses": [a._address for a in self._actors],
            "keys": [a.key for a in self._actors],
        }
        client.publish_dataset({"futures": futures, "record": json.dumps(record)}, name=name)

    def _bind(self, client, config, n_shards, name, timeout, *, owner) -> None:
        """Set what every handle holds: the cluster, the settings, the name and timeout,
        whether it created the pool, and a fresh round-robin start."""
        self._client, self._config, self._n = client, config, n_shards
        self._name, self._timeout, self._owner = name, timeout, owner
        self._next = 0
        self._shape = None
        self._mode = None

    # ---------------------------------------------------------------- joining
    @classmethod
    def attach(cls, client: Client, name: str, *, timeout: float = 60.0) -> ShardedPool:
        """Join the sharded pool published as ``name`` on ``client``'s cluster.

        Parameters
        ----------
        client : distributed.Client
            A client of the cluster the pool lives on (e.g. ``get_client()`` in a task).
        name : str
            The pool's :attr:`name`.
        timeout : float, default 60
            As in :class:`ShardedPool`.

        Returns
        -------
        ShardedPool
            A handle on the same shards (closing it does not remove them).

        Raises
        ------
        InvalidParameterError
            No pool of that name on the cluster.
        ShardUnavailableError
            A shard's actor was lost since the pool was created.
        """
        if name not in client.list_datasets():
            raise InvalidParameterError("name", name, "the name of a ShardedPool on this cluster")
        published = client.get_dataset(name)
        record = json.loads(published["record"])
        self = cls.__new__(cls)
        config = PoolConfig.from_dict(record["config"])
        n_shards = int(record["n_shards"])
        timeout = as_float(timeout, "timeout", minimum=0.0, exclusive_min=True)
        self._bind(client, config, n_shards, name, timeout, owner=False)
        self._futures = published["futures"]
        self._tokens = record["tokens"]
        self._actors = [
            Actor(_Shard, addr, key) for addr, key in zip(record["addresses"], record["keys"])
        ]
        metas = self._fan("meta")
        for i, meta in enumerate(metas):
            if meta["token"] != self._tokens[i]:  # a lost actor recomputed empty elsewhere
                raise ShardUnavailableError(
                    "shard", i, "the shard created with the pool", detail="its actor was replaced"
                )
        # start this client's round-robin where the pool has fewest ids
        self._next = int(np.argmin([m["next_id"] for m in metas]))
        return self

    def close(self) -> None:
        """Remove the pool from the cluster (by the client that created it; other
        handles only forget their shards).

        Returns
        -------
        None
        """
        if self._owner and self._name in self._client.list_datasets():
            self._client.unpublish_dataset(self._name)
        for f in self._futures:
            f.release()
        self._futures = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- plumbing
    @property
    def shard_config(self) -> PoolConfig:
        """Settings of each shard's pool (the budget split)."""
        return shard_config(self._config, self._n)

    @property
    def n_shards(self) -> int:
        """The number of shards."""
        return self._n

    def to_global(self, local_ids, shard: int) -> np.ndarray:
        """Global ids of a shard's local ids.

        Parameters
        ----------
        local_ids : array_like of int
            Ids issued by shard ``shard``'s pool.
        shard : int
            The shard's index.

        Returns
        -------
        numpy.ndarray of int64
        """
        return np.asarray(local_ids, dtype=np.int64) * self._n + shard

    def _split(self, gids: np.ndarray):
        """``{shard: (positions, local ids)}`` of global ids."""
        shard = gids % self._n
        local = gids // self._n
        return {int(s): (np.flatnonzero(shard == s), local[shard == s]) for s in np.unique(shard)}

    def _unavailable(self, i: int, exc: BaseException) -> ShardUnavailableError:
        return ShardUnavailableError(
            "shard",
            i,
            f"a reachable shard of pool {self._name!r}",
            detail=f"{type(exc).__name__}: {exc}",
        )

    def _result(self, future, i: int):
        try:
            return future.result(timeout=self._timeout)
        except DreamError:
            raise
        except (OSError, TimeoutError, distributed.TimeoutError) as exc:
            raise self._unavailable(i, exc) from None
        except Exception as exc:
            if _is_lost(exc):
                raise self._unavailable(i, exc) from None
            raise

    def _call(self, i: int, method: str, *args):
        try:
            future = getattr(self._actors[i], method)(*args)
        except (OSError, RuntimeError, distributed.TimeoutError) as exc:  # lost worker
            raise self._unavailable(i, exc) from None
        return self._result(future, i)

    def _fan(self, method: str, args_of=None, shards=None, allow_partial=False):
        """Call ``method`` on ``shards`` (all by default) at once; their answers in
        shard order (None for a shard skipped with ``allow_partial``)."""
        shards = range(self._n) if shards is None else shards
        futures = {}
        errors = {}
        for i in shards:
            args = () if args_of is None else args_of(i)
            try:
                futures[i] = getattr(self._actors[i], method)(*args)
            except (OSError, RuntimeError, distributed.TimeoutError) as exc:  # lost worker
                errors[i] = self._unavailable(i, exc)
        out = {}
        for i, f in futures.items():
            try:
                out[i] = self._result(f, i)
            except ShardUnavailableError as exc:
                errors[i] = exc
        if errors:
            if not allow_partial:
                raise errors[min(errors)]
            logger.warning(
                "pool %s: answered without unreachable shards %s", self._name, sorted(errors)
            )
        return [out.get(i) for i in shards]

    def _fan_name(self, name: str, *args, shards=None, **kwargs):
        return self._fan("call", lambda i: (name, args, kwargs), shards=shards)

    def _known(self):
        """``(shape, mode)`` fixed by the first add to any shard (cached once known)."""
        if self._shape is None or self._mode is None:
            for meta in self._fan("meta"):
                self._shape = self._shape or meta["shape"]
                self._mode = self._mode or meta["mode"]
        return self._shape, self._mode

    def _take(self, m: int) -> np.ndarray:
        """The shards of the next ``m`` entries (round-robin)."""
        out = (self._next + np.arange(m)) % self._n
        self._next = (self._next + m) % self._n
        return out

    # ---------------------------------------------------------------- adding
    def add(self, tensor, result, label=None, utility=None, embedding=None, certainty=None) -> int:
        """Store one tensor on the next shard (round-robin); see :meth:`DreamPool.add`.

        Parameters
        ----------
        tensor, result, label, utility, embedding, certainty
            As in :meth:`DreamPool.add`.

        Returns
        -------
        int
            The new entry's global id.
        """
        return self._add_one(True, tensor, result, label, utility, embedding, certainty)

    def add_if_coherent(
        self, tensor, result, label=None, utility=None, embedding=None, certainty=None
    ) -> int | None:
        """Store the tensor only if its coherence reaches the threshold; see
        :meth:`DreamPool.add_if_coherent`.

        Parameters
        ----------
        tensor, result
            As in :meth:`DreamPool.add`; stored only if ``result.coherence`` reaches
            ``coherence_threshold``.
        label, utility, embedding, certainty
            As in :meth:`DreamPool.add`.

        Returns
        -------
        int or None
            The new global id, or None below the threshold.
        """
        return self._add_one(False, tensor, result, label, utility, embedding, certainty)

    def _add_one(self, single, tensor, result, label, utility, embedding, certainty):
        kwargs = {"label": label, "utility": utility, "embedding": embedding}
        if certainty is not None:
            kwargs["certainty"] = certainty
        shard = self._next
        local = self._call(shard, "add", single, (tensor, result), kwargs)
        if local is None:
            return None
        self._next = (shard + 1) % self._n
        return int(local) * self._n + shard

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
        """Store a batch spread round-robin over the shards; see :meth:`DreamPool.add_batch`.

        The whole batch is validated in the client first (by a scratch pool of the
        shards' settings), so a refused batch changes no shard.

        Parameters
        ----------
        tensors, results, labels, utilities, embeddings, certainties, only_coherent
            As in :meth:`DreamPool.add_batch`.

        Returns
        -------
        numpy.ndarray of int64
            Global ids of the entries stored, in batch order.
        """
        columns = {
            "tensors": tensors,
            "results": results,
            "labels": labels,
            "utilities": utilities,
            "embeddings": embeddings,
            "certainties": certainties,
        }
        if self._n == 1:  # one shard: its own validation is all-or-nothing already
            kwargs = {**columns, "only_coherent": only_coherent}
            return np.asarray(self._call(0, "add_batch", kwargs)[0], dtype=np.int64)
        if results is None:  # as DreamPool.add_batch does
            from .features import evaluate_batch

            results = columns["results"] = evaluate_batch(tensors)
        shape, mode = self._known()
        cfg = self.shard_config
        scratch = DreamPool(
            cfg.replace(
                tensor_shape=shape if shape is not None else cfg.tensor_shape,
                use_ann=False,
                query_cache_size=0,
                max_size=max(len(tensors), 1),
            )
        )
        # validates everything (shapes, values, labels, budget fit, computed features)
        scratch.add_batch(**columns, only_coherent=only_coherent)
        if mode is not None and (embeddings is None) != (mode == "mapper"):
            raise InvalidParameterError(
                "embeddings",
                "mapper" if embeddings is None else "user",
                f"{mode} embeddings, as every earlier entry of this pool",
            )
        keep = self._coherent_rows(tensors, results, only_coherent, scratch.table.next_id)
        if keep.shape[0] == 0:
            return _NO_IDS
        shards = self._take(keep.shape[0])
        parts = {}
        for s in np.unique(shards):
            rows = keep[shards == s]
            kwargs = {name: _rows(value, rows) for name, value in columns.items()}
            parts[int(s)] = (rows, {**kwargs, "only_coherent": False})
        answers = self._fan("add_batch", lambda i: (parts[i][1],), shards=sorted(parts))
        pos, gid = [], []
        for s, (ids, before) in zip(sorted(parts), answers):
            rows = parts[s][0]
            pos.append(rows[np.asarray(ids, np.int64) - before])
            gid.append(self.to_global(ids, s))
        if not pos:
            return _NO_IDS
        pos_all = np.concatenate(pos)
        return np.concatenate(gid)[np.argsort(pos_all, kind="stable")]

    def _coherent_rows(self, tensors, results, only_coherent, n_kept) -> np.ndarray:
        """Batch rows that pass ``only_coherent`` (already validated)."""
        n = len(tensors)
        if not only_coherent:
            return np.arange(n)
        from .pool import _as_results

        res = _as_results(results, n, "results")
        rows = np.flatnonzero(res[:, 1] >= self._config.coherence_threshold)
        assert rows.shape[0] == n_kept, "the scratch pool stored the coherent rows"
        return rows

    # ---------------------------------------------------------------- entries by id
    def _gids(self, ids, name="ids") -> np.ndarray:
        return as_ids(ids, name, allow_empty=True).astype(np.int64)

    def record_feedback(self, ids, utilities) -> int:
        """Fold utilities into the entries' running means; see
        :meth:`DreamPool.record_feedback`.

        Every id is checked against its shard before any shard changes.

        Parameters
        ----------
        ids : int or sequence of int
            Global entry ids.
        utilities : float or sequence of float
            One for all ids or one per id.

        Returns
        -------
        int
            How many ids were updated (evicted ones are skipped).
        """
        gids = as_ids(ids).astype(np.int64)
        u = as_feedback_utilities(utilities, gids.shape[0])
        if (gids < 0).any():
            raise InvalidParameterError(
                "ids", int(gids[gids < 0][0]), "an id issued by this pool (>= 0)"
            )
        parts = self._split(gids)
        order = sorted(parts)
        nexts = self._fan("next_id", shards=order)
        for s, nxt in zip(order, nexts):
            local = parts[s][1]
            if (local >= nxt).any():
                bad = int(local[local >= nxt][0]) * self._n + s
                raise InvalidParameterError("ids", bad, "an id issued by this pool")
        counts = self._fan(
            "record_feedback",
            lambda i: (parts[i][1], np.ascontiguousarray(u[parts[i][0]])),
            shards=order,
        )
        return int(sum(counts))

    def __getitem__(self, eid):
        if not is_integer(eid) or isinstance(eid, (bool, np.bool_)) or int(eid) < 0:
            raise KeyError(eid)
        shard, local = int(eid) % self._n, int(eid) // self._n
        found = self._call(shard, "entries", [local])
        if not found:
            raise KeyError(eid)
        return dataclasses.replace(found[0], id=int(eid))

    def __contains__(self, eid) -> bool:
        if not is_integer(eid) or isinstance(eid, (bool, np.bool_)) or int(eid) < 0:
            return False
        return bool(self._call(int(eid) % self._n, "contains", [int(eid) // self._n])[0])

    def __len__(self) -> int:
        return int(sum(m["count"] for m in self._fan("meta")))

    def ids(self) -> np.ndarray:
        """Live global ids, ascending (int64).

        Returns
        -------
        numpy.ndarray of int64
        """
        parts = self._fan("ids")
        if not parts:
            return _NO_IDS
        return np.sort(np.concatenate([self.to_global(p, s) for s, p in enumerate(parts)]))

    def __iter__(self):
        for lo in range(0, len(ids := self.ids()), 256):
            yield from self.entries_of(ids[lo : lo + 256])

    def entries_of(self, ids) -> list:
        """Snapshots of those global ``ids`` still live, in the given order.

        Parameters
        ----------
        ids : sequence of int
            Global ids.

        Returns
        -------
        list of DreamEntry
            With global ids; ids not live are skipped.
        """
        gids = self._gids(ids)
        parts = self._split(gids)
        order = sorted(parts)
        found = self._fan("entries", lambda i: (parts[i][1],), shards=order)
        by_gid = {}
        for s, entries in zip(order, found):
            for e in entries:
                g = e.id * self._n + s
                by_gid[g] = dataclasses.replace(e, id=g)
        return [by_gid[g] for g in gids.tolist() if g in by_gid]

    def gather(self, column: str, ids) -> np.ndarray:
        """The ``column`` rows of those global ``ids`` still live, in the given order.

        Parameters
        ----------
        column : str
            A storage column such as ``"tensors"`` or ``"embeddings"``.
        ids : sequence of int
            Global ids.

        Returns
        -------
        numpy.ndarray
        """
        gids = self._gids(ids)
        parts = self._split(gids)
        order = sorted(parts)
        if not order:
            return np.empty((0,), np.float32)
        live = self._fan("contains", lambda i: (parts[i][1].tolist(),), shards=order)
        rows = self._fan("gather", lambda i: (column, parts[i][1]), shards=order)
        pos = np.concatenate([parts[s][0][m] for s, m in zip(order, live)])
        stacked = np.concatenate(rows)
        return stacked[np.argsort(pos, kind="stable")]

    # ---------------------------------------------------------------- routed by name
    def remove(self, ids):
        """Remove entries by global id (``DreamPool.remove`` on their shards).

        Parameters
        ----------
        ids : int or sequence of int
            Global ids.

        Returns
        -------
        int
            What the shards' ``remove`` returned, summed (entries removed).
        """
        gids = self._gids(ids)
        parts = self._split(gids)
        order = sorted(parts)
        out = self._fan("call", lambda i: ("remove", (parts[i][1],), {}), shards=order)
        return int(sum(int(x) for x in out if x is not None))

    def __delitem__(self, eid) -> None:
        if eid not in self:
            raise KeyError(eid)
        self.remove([int(eid)])

    def update(self, eid, **changes):
        """Change one entry in place (``DreamPool.update`` on its shard).

        Parameters
        ----------
        eid : int
            A global id.
        **changes
            ``result``, ``label``, ``utility``, ``tensor``, ``embedding`` as in
            ``DreamPool.update``.

        Returns
        -------
        object
            What the shard's ``update`` returned.
        """
        if not is_integer(eid) or isinstance(eid, (bool, np.bool_)) or int(eid) < 0:
            raise KeyError(eid)
        shard = int(eid) % self._n
        return self._call(shard, "call", "update", (int(eid) // self._n,), changes)

    def clear(self) -> None:
        """Remove every entry of every shard (ids are never reused).

        Returns
        -------
        None
        """
        self._fan_name("clear")

    def to_pandas(self):
        """Per-entry metadata of all shards as one ``pandas.DataFrame`` (global ids).

        Returns
        -------
        pandas.DataFrame
            The shards' ``to_pandas()`` frames, ids made global, sorted by id.
        """
        import pandas as pd

        frames = self._fan_name("to_pandas")
        out = []
        for s, frame in enumerate(frames):
            frame = frame.copy()
            if "id" in frame.columns:
                frame["id"] = frame["id"].to_numpy(np.int64) * self._n + s
            elif frame.index.name == "id":
                frame.index = frame.index.to_numpy(np.int64) * self._n + s
                frame.index.name = "id"
            out.append(frame)
        df = pd.concat(out)
        return df.sort_values("id") if "id" in df.columns else df.sort_index()

    # ---------------------------------------------------------------- whole-pool state
    def stats(self) -> dict:
        """Counts over all shards, and each shard's own :meth:`DreamPool.stats`.

        Returns
        -------
        dict
            ``count``, ``evicted``, ``bytes_used``, ``n_shards``, ``name`` and
            ``shards`` (the list of per-shard dicts).
        """
        per = self._fan_name("stats")
        return {
            "name": self._name,
            "n_shards": self._n,
            "count": int(sum(p["count"] for p in per)),
            "evicted": int(sum(p["evicted"] for p in per)),
            "bytes_used": int(sum(p["bytes_used"] for p in per)),
            "tensor_shape": next((p["tensor_shape"] for p in per if p["tensor_shape"]), None),
            "shards": per,
        }

    def memory_budget_stats(self) -> tuple:
        """Memory use against the whole budget, summed over the shards.

        Returns
        -------
        tuple
            ``(current_mb, max_mb, usage_ratio, count)``.
        """
        per = self._fan_name("memory_budget_stats")
        used = float(sum(p[0] for p in per))
        budget = self._config.memory_budget_mb
        return (used, budget, used / budget if budget else 0.0, int(sum(p[3] for p in per)))

    def check_invariants(self) -> None:
        """Run :meth:`DreamPool.check_invariants` on every shard.

        Returns
        -------
        None
        """
        self._fan_name("check_invariants")

    def fingerprint(self) -> str:
        """Digest of every shard's storage and bookkeeping.

        Returns
        -------
        str
        """
        return hashlib.sha256("|".join(self._fan_name("fingerprint")).encode()).hexdigest()

    def shard_pids(self) -> list:
        """The process id of each shard's worker (for tests and monitoring).

        Returns
        -------
        list of int
        """
        return [m["pid"] for m in self._fan("meta")]

    def shard_addresses(self) -> list:
        """The worker address of each shard.

        Returns
        -------
        list of str
        """
        return [a._address for a in self._actors]

    def __repr__(self):
        return f"ShardedPool(name={self._name!r}, n_shards={self._n})"

    # ---------------------------------------------------------------- retrieval
    def _hits(self, gids, scores, sims) -> Hits:
        gids = np.asarray(gids, np.int64)
        self._count_hits(gids)
        return Hits(gids, scores, self, similarity=sims)

    def _count_hits(self, gids) -> None:
        """Count one use of each of ``gids`` (int64) on its shard."""
        if gids.size:
            for s, (_, local) in self._split(gids).items():
                self._count_usage(s, local)

    def _gather_parts(
        self, query, c_soft, chroma, c_hard, label, where, allow_partial, hybrid=False
    ):
        where = self._where(where)
        answers = self._fan(
            "fetch",
            lambda i: (query, c_soft, chroma, c_hard, label, where, hybrid),
            allow_partial=allow_partial,
        )
        return self._merge_parts(answers)

    def _merge_parts(self, answers):
        """Union of the shards' parts: ``(n, soft, hard)`` with global ids."""
        n = 0
        qv = None
        qlabel = -1
        soft: list[list] = [[], [], [], [], []]
        hard: list[list] = [[], [], []]
        for s, ans in enumerate(answers):
            if ans is None:
                continue
            n_s, sp, hp = ans
            n += n_s
            if sp is not None:
                if sp[0] is not None and qv is None:
                    qv, qlabel = sp[0], sp[1]
                if len(sp[2]):
                    soft[0].append(self.to_global(sp[2], s))
                    for j in range(1, 5):
                        soft[j].append(sp[2 + j])
            if hp is not None and len(hp[0]):
                hard[0].append(self.to_global(hp[0], s))
                hard[1].append(np.asarray(hp[1], np.float32))
                hard[2].append(hp[2])
        soft_cat = None
        if soft[0]:
            soft_cat = [np.concatenate(x) for x in soft]
        hard_cat = None
        if hard[0]:
            hard_cat = [np.concatenate(x) for x in hard]
        return n, qv, qlabel, soft_cat, hard_cat

    @staticmethod
    def _top(gids, scores, k):
        order = np.lexsort((gids, -np.asarray(scores, np.float64)))[:k]
        return order

    def _candidates(self, soft, c):
        """The ``c`` most similar of the union, in global-id order (as one pool's
        candidates: ties of the kernels then go to the lower id)."""
        gids, sims, util, labels, emb = soft
        top = self._top(gids, sims, c)
        top = top[np.argsort(gids[top], kind="stable")]
        return (
            gids[top],
            np.ascontiguousarray(sims[top], np.float32),
            np.ascontiguousarray(util[top], np.float64),
            np.ascontiguousarray(labels[top], np.int32),
            np.ascontiguousarray(emb[top], np.float32),
        )

    def _where(self, where):
        """``where`` for the shards: a mapping with global ``"ids"`` is turned into
        each shard's local ids (labels and callables pass through)."""
        if where is None:
            return None
        if isinstance(where, Mapping) and "ids" in where:
            raise InvalidParameterError(
                "where", where, "a label, labels or a callable (filter by ids on the client)"
            )
        return where

    def retrieve_similar(self, chroma, k=None, label=None, where=None, allow_partial=False):
        """Hard retrieval over all shards; see :meth:`DreamPool.retrieve_similar`.

        Parameters
        ----------
        chroma : array_like or Query
            A chroma signature, or a Query carrying one (and, without ``label``, its label).
        k, label, where
            As in :meth:`DreamPool.retrieve_similar`.
        allow_partial : bool, default False
            Answer from the reachable shards instead of raising
            :class:`~dreamjit.ShardUnavailableError`.

        Returns
        -------
        Hits
            Global ids and chroma cosines, best first, ties to the lower id.
        """
        k = as_k(k, default=self._config.retrieval_limit)
        label = as_label(label)
        if label is None and isinstance(chroma, Query):
            label = as_label(chroma.label)
        _, _, _, _, hard = self._gather_parts(None, 0, chroma, k, label, where, allow_partial)
        return self._hits(*self._hard(hard, k))

    def _hard(self, hard, k):
        """The ``k`` best of the merged hard part: ``(gids, cosines, cosines)``."""
        if hard is None:
            return _NO_IDS, _NO_SCORES, _NO_SCORES
        gids, cos, _ = hard
        top = self._top(gids, cos, k)
        return gids[top], cos[top], cos[top]

    def retrieve_soft(self, query, k=None, weights=None, where=None, allow_partial=False):
        """Soft retrieval over all shards; see :meth:`DreamPool.retrieve_soft`.

        Parameters
        ----------
        query, k, weights, where
            As in :meth:`DreamPool.retrieve_soft`.
        allow_partial : bool, default False
            As in :meth:`retrieve_similar`.

        Returns
        -------
        Hits
            Global ids and rerank values in pick order.
        """
        k = as_k(k, default=self._config.retrieval_limit)
        weights = _as_weights(weights)
        parts = self._gather_parts(
            query, candidate_count(k, 2**62), None, 0, None, where, allow_partial
        )
        return self._hits(*self._soft(parts, k, weights))

    def _soft(self, parts, k, weights):
        n, qv, qlabel, soft, _ = parts
        if qv is None or soft is None:
            return _NO_IDS, _NO_SCORES, _NO_SCORES
        c = rerank_count(k, n, similarity_order(weights, qlabel))
        gids, sims, util, labels, emb = self._candidates(soft, c)
        w = weights
        order, scores = hybrid_rerank(
            sims, util, labels, qlabel, emb, w.alpha, w.beta, w.gamma, w.delta, w.lambda_, k
        )
        return gids[order], scores, sims[order]

    def retrieve_diverse(
        self,
        query,
        k=None,
        lambda_=0.5,
        fast=False,
        min_similarity=None,
        sample_size=None,
        where=None,
        allow_partial=False,
    ):
        """Greedy MMR over the merged soft candidates; see :meth:`DreamPool.retrieve_diverse`.

        Parameters
        ----------
        query, k
            As in :meth:`retrieve_soft`.
        lambda_, fast, min_similarity, sample_size
            As in :meth:`DreamPool.retrieve_diverse`.
        where, allow_partial
            As in :meth:`retrieve_soft`.

        Returns
        -------
        Hits
            Global ids in pick order and their MMR values.
        """
        k = as_k(k, default=self._config.retrieval_limit)
        lambda_, fast, min_sim, sample = as_mmr_options(lambda_, fast, min_similarity, sample_size)
        n, qv, qlabel, soft, _ = self._gather_parts(
            query, candidate_count(k, 2**62), None, 0, None, where, allow_partial
        )
        if qv is None or soft is None:
            return self._hits(_NO_IDS, _NO_SCORES, _NO_SCORES)
        gids, sims, _, _, emb = self._candidates(soft, candidate_count(k, n))
        if fast:
            order, scores = mmr_fast(qv, emb, k, lambda_, min_sim, sample)
        else:
            order, scores = mmr_standard(qv, emb, k, lambda_)
        return self._hits(gids[order], scores, sims[order])

    def retrieve(self, query, k=None, mode=RetrievalMode.SOFT, where=None, allow_partial=False):
        """Retrieve by ``mode`` (HARD, SOFT or HYBRID); see :meth:`DreamPool.retrieve`.

        Parameters
        ----------
        query, k
            As in :meth:`retrieve_soft`.
        mode : RetrievalMode or str, default RetrievalMode.SOFT
            HARD answers as :meth:`retrieve_similar`, SOFT as :meth:`retrieve_soft`;
            HYBRID fuses the two rankings by reciprocal rank, as
            :meth:`DreamPool.retrieve` does.
        where, allow_partial
            As in :meth:`retrieve_soft`.

        Returns
        -------
        Hits
            Best first, scored as the mode's method scores them.
        """
        mode = as_retrieval_mode(mode)
        kw = {} if where is None else {"where": where}
        if mode is RetrievalMode.HARD:
            return self.retrieve_similar(query, k=k, allow_partial=allow_partial, **kw)
        if mode is RetrievalMode.SOFT:
            return self.retrieve_soft(query, k=k, allow_partial=allow_partial, **kw)
        k = as_k(k, default=self._config.retrieval_limit)
        n, qv, qlabel, soft, hard = self._gather_parts(
            query, candidate_count(2 * k, 2**62), None, 2 * k, None, where, allow_partial, True
        )
        depth = 2 * min(k, max(n, 1))
        lists = []
        emb_of: dict[int, np.ndarray] = {}
        if qv is not None and soft is not None:
            cand = self._candidates(soft, candidate_count(depth, n))
            gids, sims, util, labels, emb = cand
            w = DEFAULT_WEIGHTS
            order, _ = hybrid_rerank(
                sims, util, labels, qlabel, emb, w.alpha, w.beta, w.gamma, w.delta, w.lambda_, depth
            )
            lists.append(gids[order])
            emb_of.update(zip(gids.tolist(), emb))
        if hard is not None:
            hg, hc, he = hard
            top = self._top(hg, hc, depth)
            lists.append(hg[top])
            emb_of.update(zip(hg[top].tolist(), he[top]))
        if not lists or all(len(x) == 0 for x in lists):
            return self._hits(_NO_IDS, _NO_SCORES, _NO_SCORES)
        universe = np.unique(np.concatenate(lists))
        pos_lists = [np.searchsorted(universe, x) for x in lists]
        slots, fused = reciprocal_rank_fusion(pos_lists, k, universe)
        gids = universe[slots]
        if qv is None or len(gids) == 0:
            sims = np.zeros(len(gids), np.float32)
        else:
            emb = np.stack([emb_of[g] for g in gids.tolist()]).astype(np.float64)
            sims = (emb @ np.asarray(qv, np.float64)).astype(np.float32)
        return self._hits(gids, fused, sims)

    def _batch_hits(self, rows, k):
        """Count the uses of the hits of ``rows`` (``(gids, scores, sims)`` each) and pack
        them as padded ``(m, k)`` arrays."""
        self._count_hits(np.concatenate([_NO_IDS] + [np.asarray(r[0], np.int64) for r in rows]))
        try:
            from .results import BatchHits
        except ImportError:
            raise FeatureUnavailableError(
                "BatchHits", None, "a dreamjit with batch retrieval (dreamjit.BatchHits)"
            ) from None
        m = len(rows)
        ids = np.full((m, k), -1, np.int64)
        scores = np.full((m, k), np.nan, np.float32)
        sims = np.full((m, k), np.nan, np.float32)
        for i, (g, s, c) in enumerate(rows):
            ids[i, : len(g)] = g
            scores[i, : len(g)] = s
            sims[i, : len(g)] = c
        return BatchHits(ids, scores, self, similarity=sims)

    def _batch_answers(self, queries, c_soft, chromas, c_hard, label, where, allow_partial):
        where = self._where(where)
        per_shard = self._fan(
            "fetch_many",
            lambda i: (queries, c_soft, chromas, c_hard, label, where),
            allow_partial=allow_partial,
        )
        m = len(queries) if queries is not None else len(chromas)
        return [
            self._merge_parts([None if a is None else a[j] for a in per_shard]) for j in range(m)
        ]

    def retrieve_soft_batch(self, queries, k=None, weights=None, where=None, allow_partial=False):
        """Soft retrieval of many queries in one round trip per shard; see
        ``DreamPool.retrieve_soft_batch``.

        Parameters
        ----------
        queries : sequence of Query, tensor or array_like
            One query per result row.
        k, weights, where, allow_partial
            As in :meth:`retrieve_soft`.

        Returns
        -------
        BatchHits
            ``(m, k)`` global ids (padded -1) and rerank values (padded NaN).
        """
        k = as_k(k, default=self._config.retrieval_limit)
        weights = _as_weights(weights)
        queries = _as_list(queries, "queries")
        c_soft = candidate_count(k, 2**62)
        merged = self._batch_answers(queries, c_soft, None, 0, None, where, allow_partial)
        return self._batch_hits([self._soft(p, k, weights) for p in merged], k)

    def retrieve_similar_batch(self, chromas, k=None, label=None, where=None, allow_partial=False):
        """Hard retrieval of many chroma queries in one round trip per shard; see
        ``DreamPool.retrieve_similar_batch``.

        Parameters
        ----------
        chromas : sequence of array_like or Query
            One chroma signature per result row.
        k, label, where, allow_partial
            As in :meth:`retrieve_similar`.

        Returns
        -------
        BatchHits
            ``(m, k)`` global ids (padded -1) and cosines (padded NaN).
        """
        k = as_k(k, default=self._config.retrieval_limit)
        label = as_label(label)
        chromas = _as_list(chromas, "chromas")
        merged = self._batch_answers(None, 0, chromas, k, label, where, allow_partial)
        return self._batch_hits([self._hard(parts[4], k) for parts in merged], k)

    def _count_usage(self, shard: int, local) -> None:
        """Count one use of each hit on its shard, without waiting for the answer (a
        lost shard's count is lost with it)."""
        try:
            self._actors[shard].count_usage(local)
        except (OSError, RuntimeError, distributed.TimeoutError):  # lost worker
            pass

    # ---------------------------------------------------------------- files
    def save(self, path) -> str:
        """Write the pool to the directory ``path``: one ``shard-<i>.npz`` per shard
        (each written by its worker with :meth:`DreamPool.save`) and ``manifest.json``
        (format version, config, shard count, each file's size and SHA-256).

        The files are written into a temporary directory beside ``path``, fsynced,
        and the directory is renamed to ``path`` (an existing ``path`` is moved
        aside first and removed after). The workers must see the same filesystem
        as the client (one machine, or a shared mount).

        Parameters
        ----------
        path : str or os.PathLike
            The directory to write.

        Returns
        -------
        str
            The path written.
        """
        path = os.path.abspath(os.fspath(path))
        parent = os.path.dirname(path)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-", suffix=".tmp", dir=parent)
        try:
            files = [os.path.join(tmp, f"shard-{i}.npz") for i in range(self._n)]
            digests = self._fan("save", lambda i: (files[i],))
            manifest = {
                "format": "dreamjit-sharded",
                "version": MANIFEST_VERSION,
                "n_shards": self._n,
                "config": self._config.to_dict(),
                "shards": [
                    {"file": os.path.basename(f), "sha256": d, "size": int(size)}
                    for f, (d, size) in zip(files, digests)
                ],
            }
            mpath = os.path.join(tmp, MANIFEST)
            with open(mpath, "w") as f:
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            old = None
            if os.path.exists(path):
                old = os.path.join(parent, f".{os.path.basename(path)}-{uuid.uuid4().hex}.old")
                os.replace(path, old)
            os.replace(tmp, path)
            _fsync_dir(parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(
        cls, client: Client, path, *, name: str | None = None, timeout: float = 60.0, workers=None
    ) -> ShardedPool:
        """Read a pool written by :meth:`save` into new shards on ``client``'s cluster.

        Parameters
        ----------
        client : distributed.Client
            A client of the cluster to place the shards on.
        path : str or os.PathLike
            The directory :meth:`save` wrote.
        name, timeout, workers
            As in :class:`ShardedPool`.

        Returns
        -------
        ShardedPool

        Raises
        ------
        IndexCorruptedError
            A missing or unreadable manifest, a wrong format or version, a shard
            file missing, of the wrong size or checksum, or a set of files that does
            not match the manifest (each shard file is then checked by
            :meth:`DreamPool.load`).
        """
        path = os.path.abspath(os.fspath(path))
        manifest = read_manifest(path)
        config = PoolConfig.from_dict(manifest["config"])
        paths = [os.path.join(path, s["file"]) for s in manifest["shards"]]
        return cls(
            client,
            manifest["n_shards"],
            config,
            name=name,
            timeout=timeout,
            workers=workers,
            _paths=paths,
        )


def read_manifest(path) -> dict:
    """The checked manifest of a saved sharded pool.

    Parameters
    ----------
    path : str or os.PathLike
        The directory :meth:`ShardedPool.save` wrote.

    Returns
    -------
    dict
        The manifest; every shard file it names exists with its size and SHA-256.

    Raises
    ------
    IndexCorruptedError
        Anything missing, unreadable or mismatched.
    """
    mpath = os.path.join(os.fspath(path), MANIFEST)
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise IndexCorruptedError(
            "path", os.fspath(path), f"a directory written by ShardedPool.save (no {MANIFEST})"
        ) from None
    except (OSError, ValueError) as exc:
        raise IndexCorruptedError(
            "manifest", mpath, "a readable JSON manifest", detail=str(exc)
        ) from None
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") == "dreamjit-sharded"
        and manifest.get("version") == MANIFEST_VERSION
        and isinstance(manifest.get("shards"), list)
        and is_integer(manifest.get("n_shards"))
        and len(manifest["shards"]) == manifest["n_shards"] >= 1
        and isinstance(manifest.get("config"), dict)
    )
    if not ok:
        raise IndexCorruptedError(
            "manifest",
            mpath,
            f"format 'dreamjit-sharded' version {MANIFEST_VERSION} with one record per shard",
        )
    names = {f"shard-{i}.npz" for i in range(manifest["n_shards"])}
    on_disk = {f for f in os.listdir(path) if f.startswith("shard-")}
    if on_disk != names or {s.get("file") for s in manifest["shards"]} != names:
        raise IndexCorruptedError(
            "path",
            os.fspath(path),
            f"exactly the shard files the manifest names ({sorted(names)})",
            detail=f"found {sorted(on_disk)}",
        )
    for i, rec in enumerate(manifest["shards"]):
        fpath = os.path.join(path, rec["file"])
        size = os.path.getsize(fpath)
        if size != rec.get("size") or _file_digest(fpath) != rec.get("sha256"):
            raise IndexCorruptedError(
                f"shard {i}",
                fpath,
                "the file the manifest records (size and SHA-256)",
                detail=f"size {size}, expected {rec.get('size')}",
            )
    return manifest


def _fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_weights(weights):
    if weights is None:
        return DEFAULT_WEIGHTS
    if not isinstance(weights, RetrievalWeights):
        raise InvalidParameterError("weights", weights, "a RetrievalWeights or None")
    return weights


def _as_list(values, name) -> list:
    if values is None or isinstance(values, (str, bytes, dict, set)):
        raise InvalidParameterError(name, values, "a sequence or array of queries")
    out = list(values)
    if not out:
        raise EmptyCollectionError(name, values, "at least one query")
    return out


def _rows(values, rows):
    """Rows ``rows`` of a batch argument (None stays None; lists stay lists)."""
    if values is None:
        return None
    if isinstance(values, np.ndarray):
        return values[rows]
    seq = list(values)
    return [seq[i] for i in rows.tolist()]


def _is_lost(exc: BaseException) -> bool:
    """True for the errors Dask raises when an actor's worker is gone."""
    names = {"CommClosedError", "KilledWorker", "FutureCancelledError", "CancelledError"}
    return type(exc).__name__ in names or isinstance(exc, (OSError, TimeoutError))

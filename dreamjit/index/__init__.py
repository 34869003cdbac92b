"""Embedding indexes over the pool's column store: exact and NN-descent.

Modules: :mod:`.exact` (the exact scan), :mod:`.nndescent` (the graph index),
:mod:`.structure` (components, bridges and the entry layer of a built graph),
:mod:`.calibrate` (the walk's beam, calibrated once per graph on a held-out sample),
:mod:`.worker` (the build worker process and its protocol).

Both share one protocol; every index works in *slots* of the store (the pool
maps slots to ids) and always reads ``store.embeddings`` / ``store.alive``
afresh, because the store replaces those arrays when it grows.

``ExactIndex`` scans the live rows with the njit top-k kernel.

``NNDescentIndex`` holds a sealed search graph over a snapshot of the live
embeddings (built by pynndescent, imported lazily, off the query path), a
tombstone mask for graph rows removed since, and an exactly searched delta of
slots added since. The graph is walked by our own njit kernel
(:mod:`dreamjit.kernels.graph`), so queries never touch pynndescent: no query
compile in the main process.

After a build, :func:`search_structure` turns pynndescent's graph into what
the walk needs, so that no part of the graph can be missed: its connected
components (on clustered data the k-NN graph splits into one per cluster
once clusters are larger than ``n_neighbors``), bridging edges that join
them, and an *entry layer* of rows, scanned first by every query as one
contiguous int8 block: a representative of every component, a hop cover of
the graph, seeded random rows. The walk starts from the best entries.

Builds run in a persistent worker process by default (``builder="process"``):
in a thread, the first build of a process (pynndescent compiling, ~40 s)
delayed queries from the main thread by 250 ms at p99 (1e5 entries), while
the worker process kept p99 at 15 ms (``scripts/measure_ann.py gil``). The
worker is spawned on the first build, shared by every index of the process
(its compile is paid once), and talks over pipes: arrays go as raw bytes
with a JSON header, nothing is pickled.
"""

from __future__ import annotations

from .exact import ExactIndex, exact_topk
from .nndescent import NNDescentIndex

__all__ = ["ExactIndex", "NNDescentIndex", "exact_topk"]

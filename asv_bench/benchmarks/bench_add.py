"""``add_batch`` throughput: 32x32x4x3 tensors with spectral features, embeddings and budget.

A budgeted pool (memory_budget_mb set, eviction "oldest") held at
ADD_POOL_ENTRIES entries, so each batch of ADD_BATCH is validated, described
(chroma + spectral features), embedded, accounted against the budget, and
evicts as many old entries: the steady state of a long-running producer.
``time_add_batch_grow`` adds to a pool that still has room (no eviction).

Target (issue 4): >= 20K tensors/s, i.e. ``time_add_batch`` <= ADD_BATCH / 20000 s
(50 ms for 1000); ``track_tensors_per_second`` reports it directly.
"""

from __future__ import annotations

import numpy as np

from .common import (
    ADD_BATCH,
    ADD_POOL_ENTRIES,
    SEED,
    BusyNeighbour,
    coherent_results,
    forget,
    median_seconds,
    memo,
    smooth_tensors,
)

GROW_LIMIT = 8 * ADD_BATCH


class AddBatch:
    timeout = 300

    def setup(self):
        self.__dict__.update(memo(("AddBatch",), self._build))

    def _build(self):
        import dreamjit as dj

        self.T = smooth_tensors(ADD_BATCH)
        rng = np.random.default_rng(SEED)
        self.res = coherent_results(ADD_BATCH)
        self.res[:, 1] = rng.uniform(0.8, 1.0, ADD_BATCH)
        self.labels = (np.arange(ADD_BATCH) % 8).astype(np.int64)
        self.util = rng.uniform(0.0, 1.0, ADD_BATCH)
        probe = dj.DreamPool(dj.PoolConfig(max_size=4, memory_budget_mb=None))
        probe.add(self.T[0], dj.SolverResult(1.0, 1.0, 0.0))
        budget_mb = (ADD_POOL_ENTRIES + 0.5) * probe.entry_bytes / 0.9 / 2**20
        self.full = dj.DreamPool(
            dj.PoolConfig(max_size=10 * ADD_POOL_ENTRIES, memory_budget_mb=budget_mb, seed=SEED)
        )
        while len(self.full) < ADD_POOL_ENTRIES - ADD_BATCH // 2:
            self._add(self.full)
        self._add(self.full)  # now at the budget: every further batch evicts
        # unbounded, but reset by setup when it passes GROW_LIMIT entries (asv re-runs
        # setup before each sample), so a long run never holds more than that
        self.grow = dj.DreamPool(dj.PoolConfig(max_size=10**7, memory_budget_mb=None, seed=SEED))
        self._add(self.grow)
        return dict(self.__dict__)

    def teardown(self):
        if len(self.grow) >= GROW_LIMIT:
            forget("AddBatch")

    def _add(self, pool):
        return pool.add_batch(self.T, self.res, labels=self.labels, utilities=self.util)

    def time_add_batch(self):
        """ADD_BATCH tensors into a pool at its budget (evicts ADD_BATCH)."""
        self._add(self.full)

    def time_add_batch_grow(self):
        """ADD_BATCH tensors into a pool with room (storage grows by doubling; no eviction)."""
        self._add(self.grow)

    def track_tensors_per_second(self):
        """Tensors/s of ``time_add_batch`` (median of 7 batches)."""
        return ADD_BATCH / median_seconds(lambda: self._add(self.full), repeat=7)

    track_tensors_per_second.unit = "tensors/s"


class AddBatchBusyNeighbour(AddBatch):
    """:class:`AddBatch` while another process keeps one core busy (issue 12, item 6).

    Target: >= 20K tensors/s here too (``track_tensors_per_second``).
    """

    def setup(self):
        super().setup()
        self.neighbour = BusyNeighbour().start()

    def teardown(self):
        self.neighbour.stop()
        super().teardown()

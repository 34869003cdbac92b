"""Memory-budget operations: adds into a full pool (each one evicts), and filling a pool.

``BudgetAdd`` keeps a pool at its budget (``BUDGET_ENTRIES`` tensors of
32x32x4x3 fit in ``eviction_threshold * memory_budget_mb``), so every timed
add plans and performs evictions by the policy. ``peakmem_fill_pool`` is the
peak resident memory of a process filling a budgeted pool from empty (the
tensors themselves included).
"""

from __future__ import annotations

import numpy as np

from .common import (
    BUDGET_BATCH,
    BUDGET_ENTRIES,
    PEAKMEM_ENTRIES,
    SEED,
    TENSOR_SHAPE,
    coherent_results,
    memo,
    smooth_tensors,
)

POLICIES = ["oldest", "lowest_coherence", "lowest_utility"]


def _budget_mb(entries, entry_bytes, threshold=0.9):
    """A budget that holds ``entries`` entries below ``threshold`` of it."""
    return (entries + 0.5) * entry_bytes / threshold / 2**20


class BudgetAdd:
    params = [POLICIES]
    param_names = ["eviction"]
    timeout = 300

    def setup(self, eviction):
        self.__dict__.update(memo(("BudgetAdd", eviction), lambda: self._build(eviction)))

    def _build(self, eviction):
        import dreamjit as dj

        self.T = smooth_tensors(BUDGET_BATCH + 1, TENSOR_SHAPE)
        probe = dj.DreamPool(dj.PoolConfig(max_size=10, memory_budget_mb=None))
        probe.add(self.T[0], dj.SolverResult(1.0, 1.0, 0.0))
        budget = _budget_mb(BUDGET_ENTRIES, probe.entry_bytes)
        self.pool = dj.DreamPool(
            dj.PoolConfig(
                max_size=10 * BUDGET_ENTRIES, memory_budget_mb=budget, eviction=eviction, seed=SEED
            )
        )
        rng = np.random.default_rng(SEED)
        fill = np.repeat(self.T[:1], BUDGET_ENTRIES, axis=0)
        res = coherent_results(BUDGET_ENTRIES)
        res[:, 1] = rng.uniform(0.8, 1.0, BUDGET_ENTRIES)
        self.pool.add_batch(
            fill, res, utilities=rng.uniform(0, 1, BUDGET_ENTRIES), only_coherent=False
        )
        self.one = dj.SolverResult(1.0, 0.9, 0.0)
        self.batch = self.T[1:]
        self.batch_res = coherent_results(BUDGET_BATCH)
        self.batch_util = rng.uniform(0, 1, BUDGET_BATCH)
        self.n0 = len(self.pool)
        for _ in range(3):
            self.time_add_one_evicting(eviction)
            self.time_add_batch_evicting(eviction)
        return dict(self.__dict__)

    def time_add_one_evicting(self, eviction):
        """``pool.add`` into a full pool: one entry in, one out."""
        self.pool.add(self.T[0], self.one, utility=0.5)

    def time_add_batch_evicting(self, eviction):
        """``pool.add_batch`` of BUDGET_BATCH tensors into a full pool: as many evicted."""
        self.pool.add_batch(
            self.batch, self.batch_res, utilities=self.batch_util, only_coherent=False
        )

    def time_memory_budget_stats(self, eviction):
        self.pool.memory_budget_stats()

    def track_entries_held(self, eviction):
        """Entries held after the adds (steady state: the budget's worth)."""
        self.time_add_batch_evicting(eviction)
        return len(self.pool)

    track_entries_held.unit = "entries"


class FillPool:
    """Filling a budgeted pool from empty with PEAKMEM_ENTRIES tensors, 100 per batch."""

    timeout = 300

    def setup(self):
        self.T = memo(("FillPool",), lambda: smooth_tensors(PEAKMEM_ENTRIES, TENSOR_SHAPE))
        self.res = coherent_results(PEAKMEM_ENTRIES)

    def _fill(self):
        import dreamjit as dj

        pool = dj.DreamPool(
            dj.PoolConfig(max_size=PEAKMEM_ENTRIES, memory_budget_mb=500, seed=SEED)
        )
        for s in range(0, PEAKMEM_ENTRIES, 100):
            pool.add_batch(self.T[s : s + 100], self.res[s : s + 100], only_coherent=False)
        return pool

    def peakmem_fill_pool(self):
        self._fill()

    def track_pool_mb(self):
        """The pool's own accounting after the fill (logical MiB)."""
        return float(self._fill().memory_budget_stats()[0])

    track_pool_mb.unit = "MiB"

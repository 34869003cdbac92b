"""The memory budget of a :class:`~dreamjit.DreamPool`: limits and eviction plans.

:class:`Budget` decides; it changes nothing. From the config, the entry
table and the index set (read through their public methods) it gives the
bytes in use, the most live entries allowed, whether an entry can ever fit,
which entries an add evicts (eviction keys and the ``admission_plan``
kernel), and what to do when a newly installed NN-descent graph overfills
the budget. The pool carries the plans out.
"""

from __future__ import annotations

import numpy as np

from .errors import MemoryExceededError
from .kernels.budget import admission_plan

__all__ = ["Budget", "DROP_GRAPH"]

#: :meth:`Budget.index_fit_plan`: drop the NN-descent graph instead of evicting
DROP_GRAPH = "drop"


class Budget:
    """Limits of a pool of ``config`` over ``table`` and ``indexes``."""

    def __init__(self, config, table, indexes):
        self.config = config
        self._table = table
        self._indexes = indexes

    # ------------------------------------------------------------------ bytes
    def entry_bytes(self) -> int:
        """Logical bytes one more entry costs: its storage rows plus what adding it can
        add to the index (0 before the shape is known)."""
        if self._table.store is None:
            return 0
        return self._table.store_entry_bytes() + self._indexes.bytes_per_entry()

    def used_bytes(self) -> int:
        """Logical bytes in use: live entries' storage rows plus index arrays (in RAM:
        with ``tensor_store="mmap"`` the tensor rows count on disk instead)."""
        if self._table.store is None:
            return 0
        return len(self._table) * self._table.store_entry_bytes() + self._indexes.nbytes

    def disk_used_bytes(self) -> int:
        """Logical bytes on disk: live entries' tensor rows (0 with tensors in RAM)."""
        if self._table.store is None:
            return 0
        return len(self._table) * self._table.store_disk_entry_bytes()

    def _check_disk_fits(self, shape) -> None:
        disk = self.config.disk_budget_bytes
        row = self._table.store_disk_entry_bytes(shape)
        if disk is not None and row > disk:
            raise MemoryExceededError(
                "tensor",
                shape,
                f"a tensor of at most {disk} bytes "
                f"(disk_budget_mb={self.config.disk_budget_mb}); one takes {row} bytes",
            )

    def check_fits(self, shape) -> None:
        """Refuse an entry larger than the whole budget, in RAM or on disk (the same
        for every add)."""
        budget = self.config.budget_bytes
        if budget is None:
            self._check_disk_fits(shape)
            return
        store_bytes = self._table.store_entry_bytes(shape)
        entry = store_bytes + self._indexes.bytes_per_entry(store_bytes)
        self._check_disk_fits(shape)
        if entry > budget:
            raise MemoryExceededError(
                "tensor",
                shape,
                f"an entry of at most {budget} bytes "
                f"(memory_budget_mb={self.config.memory_budget_mb}); "
                f"one entry takes {entry} bytes",
            )

    def entry_limit(self) -> int:
        """Most live entries allowed: max_size and the budget's share for entries.

        The index's bytes are what it holds now (its exact ``nbytes``); each
        entry is charged what adding it can add to the index (``entry_bytes``),
        so after the add ``entries + index <= eviction_threshold * budget``.
        """
        cfg = self.config
        budget = cfg.budget_bytes
        limit = cfg.max_size
        disk = cfg.disk_budget_bytes
        if disk is not None and self._table.store is not None:
            row = max(self._table.store_disk_entry_bytes(), 1)
            limit = min(limit, max(int(cfg.eviction_threshold * disk) // row, 1))
        if budget is None:
            return int(limit)
        entry = self.entry_bytes()
        room = int(cfg.eviction_threshold * budget) - self._indexes.nbytes
        by_budget = max(room // entry, 1)  # an entry that fits the whole budget is always admitted
        return int(min(limit, by_budget))

    def problems(self) -> list:
        """Limits broken now (empty when the pool is within them)."""
        out = []
        budget = self.config.budget_bytes
        used = self.used_bytes()
        if budget is not None and used > budget:
            out.append(f"{used} bytes used of a {budget} byte budget")
        n = len(self._table)
        if n > self.config.max_size:
            out.append(f"{n} entries above max_size {self.config.max_size}")
        disk = self.config.disk_budget_bytes
        on_disk = self.disk_used_bytes()
        if disk is not None and on_disk > disk:
            out.append(f"{on_disk} bytes on disk of a {disk} byte disk budget")
        return out

    # ------------------------------------------------------------------ plans
    def index_leaves_no_room(self) -> bool:
        """Before planning an add: True if the index leaves no room for even one entry
        (then its graph should be dropped, so ``entries + index <= budget`` can hold)."""
        budget = self.config.budget_bytes
        return budget is not None and self._indexes.nbytes + self.entry_bytes() > budget

    def eviction_keys(self, slots: np.ndarray, new_results=None, new_utility=None) -> np.ndarray:
        """Sort keys (lowest evicted first) of the live ``slots``, followed by those of a
        batch being added (its ``(n, 3)`` results and utilities, NaN for none)."""
        policy = self.config.eviction
        store = self._table.store
        if policy == "oldest":
            n = slots.shape[0] + (0 if new_results is None else new_results.shape[0])
            return np.zeros(n)
        if policy == "lowest_coherence":
            old = store.coherence[slots]
            new = None if new_results is None else new_results[:, 1]
        else:
            old = store.util_mean[slots]
            new = None if new_results is None else np.where(np.isnan(new_utility), 0.0, new_utility)
        return old.copy() if new is None else np.concatenate([old, new])

    def admission(self, new_ids, results, utility):
        """Plan adding a batch as sequential adds: ``(evict, keep)``, the live slots to
        evict and the mask of the batch's entries that stay."""
        table = self._table
        store = table.store
        m = new_ids.shape[0]
        live = table.live_slots()
        n_live = live.shape[0]
        limit = self.entry_limit()
        keep = np.ones(m, dtype=np.bool_)
        evict = live[:0]
        if n_live + m > limit:
            live = live[np.argsort(store.ids[live], kind="stable")]
            keys = self.eviction_keys(live, results, utility)
            ids = np.concatenate([store.ids[live], new_ids])
            gone = admission_plan(keys, ids, n_live, limit)
            evict, keep = live[gone[:n_live]], ~gone[n_live:]
        return evict, keep

    def index_fit_plan(self, protected=None):
        """The index grew (a graph was installed): None if ``entries + index`` fits, else
        the live slots to evict by policy (never those in ``protected``), or
        :data:`DROP_GRAPH` if that would take half the entries (more than half of the
        graph's rows dead, it would be dropped anyway) or more than may be evicted."""
        budget = self.config.budget_bytes
        if budget is None or self._table.store is None or self.used_bytes() <= budget:
            return None
        store = self._table.store
        all_live = self._table.live_slots()
        live = all_live
        n_out = live.shape[0] - self.entry_limit()
        if protected is not None:  # the entries of the add in progress stay
            live = live[~np.isin(live, protected)]
        if 2 * n_out > all_live.shape[0] or n_out > live.shape[0]:
            return DROP_GRAPH
        keys = self.eviction_keys(live)
        order = np.lexsort((store.ids[live], keys))[: max(n_out, 0)]
        return np.sort(live[order])

    def disk_stats(self) -> tuple:
        """``(used_mb, max_mb, usage_ratio, file_mb)``: live tensor rows on disk against
        ``disk_budget_mb`` (None when unbounded), and the tensor file's size."""
        used = self.disk_used_bytes()
        budget = self.config.disk_budget_bytes
        ratio = used / budget if budget else 0.0
        return (used / 2**20, self.config.disk_budget_mb, ratio, self._table.disk_bytes / 2**20)

    def stats(self) -> tuple:
        """``(used_mb, max_mb, usage_ratio, count)``."""
        used = self.used_bytes()
        budget = self.config.budget_bytes
        ratio = used / budget if budget else 0.0
        return (used / 2**20, self.config.memory_budget_mb, ratio, len(self._table))

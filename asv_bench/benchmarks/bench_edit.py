"""Editing a pool in place: update, remove, clear, and the metadata views.

A pool of ADD_POOL_ENTRIES tensors of TENSOR_SHAPE (mapper embeddings, exact
index). ``time_add_one`` (an add of one tensor, then its removal) is the reference
each edit compares with:

- ``time_update_result``: a new solver result only (no re-embedding);
- ``time_update_label``: a new label (re-embeds from the stored tensor: thumbnail
  and embedding, no spectral features);
- ``time_update_tensor``: a new tensor (spectral features, chroma, thumbnail,
  embedding, re-index), the work of an add without the admission plan;
- ``time_remove_add``: remove the oldest entry and add one (the pool's size stays);
  the same calls as ``time_add_one`` (an add, then a removal of that entry) in the
  other order, so the two should match;
- ``time_columns`` / ``time_to_pandas``: the read-only metadata view and the
  DataFrame built from it.
"""

from __future__ import annotations

import numpy as np

from .common import (
    ADD_POOL_ENTRIES,
    SEED,
    TENSOR_SHAPE,
    memo,
    require,
    smooth_tensors,
    tensor_pool,
)


class Edit:
    timeout = 300

    def setup(self):
        self.__dict__.update(memo(("Edit",), self._build))

    def _build(self):
        import dreamjit as dj

        T = smooth_tensors(ADD_POOL_ENTRIES + 64, TENSOR_SHAPE)
        self.spare = T[ADD_POOL_ENTRIES:]
        self.pool = tensor_pool(T[:ADD_POOL_ENTRIES], max_size=10 * ADD_POOL_ENTRIES, use_ann=False)
        self.result = dj.SolverResult(1.0, 0.9, 0.0)
        self.rng = np.random.default_rng(SEED)
        self.i = 0
        self.order = self.pool.ids().tolist()  # live ids, oldest first
        for _ in range(3):  # compile and warm every path once
            self.time_update_result()
            self.time_update_label()
            self.time_update_tensor()
            self.time_remove_add()
            self.time_add_one()
        return dict(self.__dict__)

    def _live(self) -> int:
        self.i += 1
        ids = self.pool.ids()
        return int(ids[self.i % ids.shape[0]])

    def time_add_one(self):
        """Reference: ``pool.add`` of one tensor, then ``pool.remove`` of it (the size stays)."""
        eid = self.pool.add(self.spare[self.i % 64], self.result, label=1)
        self.pool.remove(eid)

    def time_update_result(self):
        """``pool.update(eid, result=...)``: metadata only."""
        self.pool.update(self._live(), result=self.result)

    def time_update_label(self):
        """``pool.update(eid, label=...)``: re-embeds the stored tensor."""
        self.pool.update(self._live(), label=self.i % 8)

    def time_update_tensor(self):
        """``pool.update(eid, tensor=...)``: describes, embeds and re-indexes a new tensor."""
        self.pool.update(self._live(), tensor=self.spare[self.i % 64])

    def time_remove_add(self):
        """``pool.remove`` of the oldest entry, then ``pool.add`` of one."""
        self.pool.remove(self.order.pop(0))
        self.order.append(self.pool.add(self.spare[self.i % 64], self.result, label=1))
        self.i += 1

    def time_columns(self):
        """``EntryTable.columns()``: the aligned read-only metadata arrays."""
        self.pool.table.columns()

    def time_to_pandas(self):
        """``pool.to_pandas()`` of the whole pool."""
        require("pandas")
        self.pool.to_pandas()


if __name__ == "__main__":  # cd asv_bench && python -m benchmarks.bench_edit [rounds]
    import sys
    import time

    bench = Edit()
    bench.setup()
    names = [n for n in dir(Edit) if n.startswith("time_")]
    names.remove("time_add_one")
    names.insert(0, "time_add_one")
    seconds: dict[str, list] = {n: [] for n in names}
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 300):
        for n in names:  # interleaved: one call of each per round
            t0 = time.perf_counter()
            getattr(bench, n)()
            seconds[n].append(time.perf_counter() - t0)
    ref = float(np.median(seconds["time_add_one"]))
    print(f"pool of {len(bench.pool)} entries of shape {bench.pool.tensor_shape}; medians:")
    for n in names:
        m = float(np.median(seconds[n]))
        print(f"{n:20s} {m * 1e6:9.1f} us  {m / ref:5.2f} x time_add_one")

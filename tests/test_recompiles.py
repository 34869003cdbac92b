"""No silent recompiles: after ``dreamjit.warmup()`` and a representative workload, every
registered kernel holds at most its expected number of compiled signatures.

A kernel that gains a signature compiles again (seconds, in the caller's thread): a float64
array where float32 is expected, an int32 index array, a non-contiguous view, a Python int
where an int64 was passed before. The expected counts live in :data:`EXPECTED`, one place.
"""

import importlib
import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import dreamjit as dj
import dreamjit.kernels
from dreamjit import PoolConfig, Query, RetrievalMode
from dreamjit.kernels._jit import REGISTRY

from standins import build_in_threads

pytestmark = pytest.mark.jit_only

#: kernels allowed more than one compiled signature, with the reason; every other
#: registered kernel may hold at most one. Helpers called from other kernels compile once
#: per caller's argument types, as part of the caller's compile (measured with an empty
#: numba cache; a warm cache loads callers whole, and the helpers then count fewer).
EXPECTED: dict[str, int] = {
    # heaps of float64, float32 or int32 keys; a literal 0 (an empty heap) is its own type
    "heap.worse": 3,
    "heap.sift_down": 6,
    "heap.heap_offer": 6,
    "heap.heap_drain": 4,
    # the growable candidate queue of the graph walk and the budget's eviction order: one
    # compile per caller's key/array types (counted with an empty numba cache)
    "heap.sift_up": 6,
    "heap.heap_pop": 4,
    "heap.heap_push": 2,
    "cosine._heap_result": 2,
    # a literal 0 start or size from one caller, a variable from another; and the int8
    # copy by an int32 query (the int8 prefilter of query.topk_dot_int8)
    "cosine._block_dots": 3,
    # topk_dot_batch's tail offers row 0 of its accumulators as a literal 0
    "cosine._offer_tile": 2,
    "mmr._mmr": 2,
    "graph._nav_scores": 2,
    # a flag passed as a literal (window_2d: False, radius_grid: True); chroma._weighted_means,
    # chroma_into, thumbnail_into and _spectral_chunk get variables from every caller
    "spectral._outer": 2,
    # float64 x float64 (query norms), float32 x float32 (row norms), float32 x float64 (scores)
    "cosine.dot64": 3,
    # a read-only query (the query cache's) and a writable one
    "cosine._to_f64": 2,
    # union-find over int64 and int32 node numbers
    "entry_layer._find": 2,
    # the exact scans' prefilters: int32 scores (int8 copy) and float32 scores (below
    # INT8_MIN_ROWS)
    "query._select_rescore": 2,
    "query._largest_into": 2,
    "query._insert_largest": 2,
    "query._rescore_into": 2,
    # the column-major copy (soft_query_batch) and the row-major rows' transposed view
    "query._cols_dot64": 2,
}


def _name(dispatcher) -> str:
    fn = dispatcher.py_func
    return f"{fn.__module__.removeprefix('dreamjit.kernels.')}.{fn.__qualname__}"


def _all_kernels() -> list:
    """Every registered kernel, after importing every kernel module."""
    for info in pkgutil.iter_modules(dreamjit.kernels.__path__):
        importlib.import_module(f"dreamjit.kernels.{info.name}")
    return list(REGISTRY)


def workload(tmp_path) -> None:
    """What a user does: adds (small and large batches), every retrieval mode, feedback,
    save/load, features and MMR; the exact index and the NN-descent one."""
    from dreamjit.synthetic import smooth_tensors

    rng = np.random.default_rng(0)
    shape = (8, 8, 2, 3)
    tensors = smooth_tensors(400, shape=shape, seed=0)
    for use_ann in (False, True):
        cfg = PoolConfig(
            max_size=300,
            memory_budget_mb=None,
            use_ann=use_ann,
            ann_threshold=256,
            ann_background=False,
            ann_n_neighbors=8,
            seed=0,
        )
        pool = dj.DreamPool(cfg)
        results = dj.evaluate_batch(tensors)
        pool.add_batch(tensors[:3], results[:3], labels=[0, 1, 2], only_coherent=False)
        pool.add_batch(tensors[3:], results[3:], only_coherent=False)  # evicts past max_size
        eid = pool.add(tensors[0], dj.evaluate(tensors[0]), label=1, utility=0.5)
        pool.add_if_coherent(tensors[1], dj.evaluate(tensors[1]))
        if use_ann:
            pool.rebuild_index(block=True)
        q = tensors[5]
        chroma = dj.chroma_signature(q)
        pool.retrieve_similar(chroma, k=5)
        pool.retrieve_similar(chroma, k=5, label=1)
        pool.retrieve_soft(q, k=5)
        pool.retrieve_soft(Query.from_tensor(q), k=500)
        pool.retrieve_diverse(q, k=5)
        pool.retrieve_diverse(q, k=5, fast=True)
        for mode in RetrievalMode:
            pool.retrieve(q, k=5, mode=mode)
        pool.retrieve_soft_batch(tensors[:70], k=5)  # parallel over tiles of queries
        pool.retrieve_soft_batch(tensors[:3], k=5)  # a small batch
        pool.retrieve_similar_batch(tensors[:70], k=5)
        hits = pool.retrieve_soft(q, k=5)
        hits.tensors()
        hits.entries()
        pool.diversity_stats(hits)
        pool.record_feedback(hits.ids, np.linspace(0.0, 1.0, len(hits)))
        pool.record_feedback([eid], 0.25)
        pool.update(eid, label=2, utility=0.75)  # re-embeds the stored tensor
        pool.update(eid, tensor=tensors[2], result=dj.evaluate(tensors[2]))
        pool.remove(hits.ids[:1])
        pool.to_pandas()
        back = dj.DreamPool.load(pool.save(str(tmp_path / f"pool{use_ann}.npz")))
        back.retrieve_soft(q, k=5)
        list(back)
        back.clear()
    dj.spectral_features(tensors[0])
    dj.spectral_features_batch(tensors[:80])
    dj.maximal_marginal_relevance(rng.random(16), rng.random((10, 16)), k=3)


def signature_counts(directory: str) -> dict[str, int]:
    """Compiled signatures per registered kernel after warmup() and the workload (run this
    in a fresh process: kernels other tests called with other types would count too)."""
    build_in_threads()
    dj.warmup()
    workload(pathlib.Path(directory))
    return {_name(d): len(d.signatures) for d in _all_kernels()}


def test_no_kernel_compiles_more_signatures_than_expected(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(dj.__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert not set(EXPECTED) - set(counts), "EXPECTED names a kernel that is not registered"
    too_many = {
        name: (n, EXPECTED.get(name, 1)) for name, n in counts.items() if n > EXPECTED.get(name, 1)
    }
    assert not too_many, f"kernel: (signatures, expected) {too_many}"


if __name__ == "__main__":  # python tests/test_recompiles.py DIR: the counts, as JSON
    print(json.dumps(signature_counts(sys.argv[1])))

"""Fork stress (not a unit test): many forks during background builds and many
``multiprocessing`` fork workers doing >= 64-tensor adds after the parent ran
prange kernels. Counts forks, hangs (children silent past the timeout) and
errors.

Usage::

    python scripts/fork_stress.py [--forks 50] [--mp-rounds 10] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import signal
import sys
import threading

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dreamjit as dj  # noqa: E402
import dreamjit.index.nndescent as index_mod  # noqa: E402
import dreamjit.index.worker as worker_mod  # noqa: E402
from dreamjit._indexes import IndexSet  # noqa: E402
from dreamjit.kernels._jit import active_layer, parallel_allowed  # noqa: E402
from dreamjit.kernels.graph import knn_to_csr  # noqa: E402


def brute_build(X, n_neighbors, seed, graph, max_degree, n_jobs):
    S = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(S, -np.inf)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :n_neighbors]
    return knn_to_csr(nbrs.astype(np.int32), 1.0 - np.take_along_axis(S, nbrs, axis=1), max_degree)


def thread_builds():
    worker_mod._build_csr = brute_build
    make = IndexSet.make_ann

    def make_thread_ann(self):
        ann = make(self)
        ann.builder = "thread"
        return ann

    IndexSet.make_ann = make_thread_ann


def unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def child_report(pool, V):
    out = {"building": pool.stats()["ann_building"], "parallel": parallel_allowed()}
    out["rebuilt"] = pool.rebuild_index(block=True, timeout=60)
    pool.add_batch(
        np.zeros((200, 1, 1, 3), np.float32),
        np.tile([0.0, 1.0, 0.0], (200, 1)),
        embeddings=V[400:600],
    )
    out["waited"] = pool.indexes.ann.wait(60)
    out["rows"] = int(pool.indexes.ann.graph_info.get("rows", 0))
    pool.check_invariants()
    return out


def fork_during_build(i, timeout):
    parent = os.getpid()
    started, release = threading.Event(), threading.Event()

    def hold(index):
        if os.getpid() == parent and not release.is_set():
            started.set()
            release.wait(timeout)

    index_mod._BUILD_HOOK = hold
    V = unit(600, 16, i)
    pool = dj.DreamPool(
        dj.PoolConfig(
            max_size=5000,
            memory_budget_mb=None,
            embedding_dim=16,
            ann_threshold=300,
            ann_n_neighbors=8,
            seed=i,
        )
    )
    pool.add_batch(
        np.zeros((400, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (400, 1)), embeddings=V[:400]
    )
    try:
        if not started.wait(timeout):
            return "error", "build never started"
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                out = child_report(pool, V)
                code = 0
            except BaseException as exc:
                out = {"error": repr(exc)}
            try:
                os.write(w, json.dumps(out).encode())
            finally:
                os._exit(code)
        os.close(w)
        data = b""
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(r)
                return "hang", None
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        out = json.loads(data or b"{}")
        ok = (
            status == 0
            and "error" not in out
            and not out["building"]
            and out["rebuilt"]
            and out["waited"]
            and out["rows"] == 600
        )
        return ("ok" if ok else "error"), out
    finally:
        release.set()
        index_mod._BUILD_HOOK = None
        pool.rebuild_index(block=True, timeout=timeout)


def mp_job(seed):
    pool = dj.DreamPool(dj.PoolConfig(max_size=2000, memory_budget_mb=None))
    t = np.random.default_rng(seed).random((80, 6, 6, 3), dtype=np.float32)
    ids = pool.add_batch(t, only_coherent=False)
    hits = pool.retrieve_soft(t[0], k=5)
    return len(ids), len(hits), parallel_allowed()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forks", type=int, default=50)
    ap.add_argument("--mp-rounds", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    thread_builds()
    outcomes = {"ok": 0, "hang": 0, "error": 0}
    errors = []
    for i in range(args.forks):
        kind, detail = fork_during_build(i, args.timeout)
        outcomes[kind] += 1
        if kind != "ok":
            errors.append(detail)
    print(
        f"fork during a held build: {args.forks} forks, {outcomes}, layer {active_layer()}",
        flush=True,
    )
    mp_out = {"ok": 0, "hang": 0, "error": 0}
    for r in range(args.mp_rounds):
        workers = mp.get_context("fork").Pool(2)
        try:
            res = workers.map_async(mp_job, range(r * 4, r * 4 + 4)).get(timeout=args.timeout)
            good = all(a == 80 and h == 5 for a, h, _ in res)
            mp_out["ok" if good else "error"] += 1
        except mp.TimeoutError:
            mp_out["hang"] += 1
        except Exception as exc:  # noqa: BLE001 - counted
            mp_out["error"] += 1
            errors.append(repr(exc))
        finally:
            workers.terminate()
            workers.join()
    print(
        f"multiprocessing fork pools: {args.mp_rounds} rounds x 2 workers x 4 jobs "
        f"(80-tensor add_batch each), {mp_out}",
        flush=True,
    )
    if errors:
        print("errors:", errors[:5])


if __name__ == "__main__":
    main()

"""Measure the exact and NN-descent indexes: recall@10, queries/s, crossover, GIL stalls.

Usage::

    python scripts/measure_ann.py [table] [crossover] [gil] [first] [mask] [params]

(no argument: all sections). Results go to the ``dreamjit`` logger and to
stdout as plain tables. Data: a Gaussian mixture (100 centres ~ N(0, I_64),
points = centre + N(0, I_64), unit-normalised; queries are fresh draws of
the same mixture) and scikit-learn's ``load_digits`` (unit rows; 300 held
out as queries). Recall@10 is against the exact top-10 over the live
entries (numpy, float64).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import numpy as np

try:
    import dreamjit  # noqa: F401
except ImportError:  # run from a source checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dreamjit.index import ExactIndex, NNDescentIndex  # noqa: E402

log = logging.getLogger("dreamjit")


class ArrayStore:
    """The four store columns an index reads, with room to grow."""

    def __init__(self, X, capacity=None, labels=None):
        n, d = X.shape
        cap = capacity or n
        self.embeddings = np.zeros((cap, d), np.float32)
        self.embeddings[:n] = X
        self.alive = np.zeros(cap, bool)
        self.alive[:n] = True
        self.ids = np.full(cap, -1, np.int64)
        self.ids[:n] = np.arange(n)
        self.labels = np.full(cap, -1, np.int32)
        if labels is not None:
            self.labels[:n] = labels
        self.capacity = cap
        self.next_id = n


def mixture(n, nq=1000, d=64, c=100, seed=0, sigma=1.0, streams=(1, 2)):
    """(data (n, d), queries (nq, d)) of a unit-normalised Gaussian mixture."""
    centres = np.random.default_rng(seed).normal(size=(c, d))

    def draw(m, rng):
        x = centres[rng.integers(0, c, m)] + sigma * rng.normal(size=(m, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return (
        draw(n, np.random.default_rng(seed + streams[0])),
        draw(nq, np.random.default_rng(seed + streams[1])),
    )


def digits(nq=300, seed=0):
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float64)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    p = np.random.default_rng(seed).permutation(x.shape[0])
    return x[p[nq:]], x[p[:nq]]


def truth(store, Q, k=10, mask=None):
    live = store.alive if mask is None else store.alive & mask
    slots = np.flatnonzero(live)
    S = Q.astype(np.float64) @ store.embeddings[slots].astype(np.float64).T
    return slots[np.argsort(-S, axis=1, kind="stable")[:, :k]]


def recall(index, store, Q, k=10, mask=None):
    T = truth(store, Q, k, mask)
    got = [index.search(q, k, mask)[0] for q in Q]
    return float(np.mean([np.intersect1d(g, t).size / t.size for g, t in zip(got, T)]))


def qps(index, Q, k=10, repeat=3, n=300):
    """Best of ``repeat`` passes over ``n`` queries (the machine is shared)."""
    Q = Q[:n]
    index.search(Q[0], k)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for q in Q:
            index.search(q, k)
        best = min(best, time.perf_counter() - t0)
    return Q.shape[0] / best


def batch_qps(index, Q, k=10, repeat=3):
    """Queries/s of ``search_batch`` over all of ``Q`` (best of ``repeat``)."""
    index.search_batch(Q[:2], k)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        index.search_batch(Q, k)
        best = min(best, time.perf_counter() - t0)
    return Q.shape[0] / best


def churn(store, frac=0.15, seed=1):
    """Remove ``frac`` of the live entries and write as many fresh mixture points into the
    freed slots (new ids); returns (removed slots, written slots)."""
    rng = np.random.default_rng(seed)
    live = np.flatnonzero(store.alive)
    gone = np.sort(rng.choice(live, int(frac * live.size), replace=False))
    store.alive[gone] = False
    new_x = mixture(gone.size, nq=0, streams=(10 + seed, 11))[0]
    free = np.flatnonzero(~store.alive)[: gone.size]
    store.embeddings[free] = new_x
    store.ids[free] = np.arange(store.next_id, store.next_id + free.size)
    store.next_id += free.size
    store.alive[free] = True
    return gone, free


def make_ann(store, **kw):
    return NNDescentIndex(store, **kw)


# ------------------------------------------------------------------ sections


def section_table(params):
    print("\n== recall@10 and queries/s (single query, k=10) ==")
    print(
        f"{'data':<22}{'n':>8}{'exact q/s':>11}{'ann q/s':>10}{'recall':>8}{'build s':>9}"
        f"{'exact batch':>13}{'ann batch':>11}"
    )
    rows = []
    for name, (X, Q) in (
        ("digits", digits()),
        ("mixture 1e4", mixture(10_000)),
        ("mixture 1e5", mixture(100_000)),
    ):
        store = ArrayStore(X, capacity=X.shape[0] + X.shape[0] // 4 + 8)
        ex = ExactIndex(store)
        ann = make_ann(store, **params)
        ann.rebuild(block=True)
        r = recall(ann, store, Q)
        rows.append((name, X.shape[0], qps(ex, Q), qps(ann, Q), r, ann.last_build_seconds))
        print(
            f"{name:<22}{X.shape[0]:>8}{rows[-1][2]:>11.0f}{rows[-1][3]:>10.0f}{r:>8.4f}"
            f"{ann.last_build_seconds:>9.1f}{batch_qps(ex, Q):>13.0f}{batch_qps(ann, Q):>11.0f}",
            flush=True,
        )
        if X.shape[1] == 64 and "mixture" in name:
            gone, new = churn(store)
            ann.remove(gone)
            ann.add(new)
            label = f"{name} churned"
            r = recall(ann, store, Q)
            print(
                f"{label:<22}{len(ann):>8}{qps(ex, Q):>11.0f}{qps(ann, Q):>10.0f}{r:>8.4f}"
                f"{'':>9}  (delta {ann.n_delta}, tombstones {ann.n_tombstones})",
                flush=True,
            )
            assert ann.maybe_rebuild()
            ann.wait()
            r = recall(ann, store, Q)
            label = f"{name} rebuilt"
            print(
                f"{label:<22}{len(ann):>8}{qps(ex, Q):>11.0f}{qps(ann, Q):>10.0f}{r:>8.4f}"
                f"{ann.last_build_seconds:>9.1f}",
                flush=True,
            )
    return rows


def section_crossover(params):
    print(
        "\n== crossover: q/s exact vs ANN (mixture; single queries k=10 and k=32, "
        "search_batch of 1000 k=32) =="
    )
    print(
        f"{'n':>8}{'exact':>9}{'ann':>9}{'exact32':>9}{'ann32':>9}{'recall':>8}"
        f"{'ex batch':>10}{'ann batch':>10}"
    )
    for n in (1_000, 2_000, 3_000, 5_000, 10_000, 20_000, 30_000, 50_000):
        X, Q = mixture(n, nq=1000)
        store = ArrayStore(X)
        ex = ExactIndex(store)
        ann = make_ann(store, **dict(params, exact_batch_below=0))
        ann.rebuild(block=True)
        print(
            f"{n:>8}{qps(ex, Q):>9.0f}{qps(ann, Q):>9.0f}{qps(ex, Q, 32):>9.0f}"
            f"{qps(ann, Q, 32):>9.0f}{recall(ann, store, Q[:300]):>8.4f}"
            f"{batch_qps(ex, Q, 32):>10.0f}{batch_qps(ann, Q, 32):>10.0f}",
            flush=True,
        )


def section_gil(params, n=100_000, period=0.02):
    """Query latency (scheduled -> answered) from the main thread while a build runs."""
    print(
        f"\n== query latency during a background build (n={n}, a query every "
        f"{period * 1e3:.0f} ms) =="
    )
    X, Q = mixture(n)
    for builder in ("thread", "process"):
        for phase in ("first build", "rebuild"):
            store = ArrayStore(X)
            ann = make_ann(store, builder=builder, **params)
            if phase == "rebuild":
                ann.rebuild(block=True)
            ann.search(Q[0], 10)
            lat = []
            t_start = time.perf_counter()
            ann.rebuild(block=False)
            nxt = time.perf_counter()
            i = 0
            while ann.building:
                nxt += period
                delay = nxt - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                ann.search(Q[i % Q.shape[0]], 10)
                lat.append(time.perf_counter() - nxt)
                i += 1
            lat = np.array(lat) * 1e3
            print(
                f"{builder:<8} {phase:<12} build {time.perf_counter() - t_start:6.1f} s  "
                f"queries {lat.size:5d}  p50 {np.percentile(lat, 50):7.2f} ms  "
                f"p99 {np.percentile(lat, 99):8.2f} ms  max {lat.max():8.1f} ms",
                flush=True,
            )


_FIRST = r"""
import time, sys
t0 = time.perf_counter()
import numpy as np
import dreamjit
sys.path.insert(0, {here!r})
from measure_ann import ArrayStore, mixture
from dreamjit.index import NNDescentIndex, ExactIndex
t1 = time.perf_counter()
X, Q = mixture({n}, nq=2)
store = ArrayStore(X)
ann = NNDescentIndex(store, **{params!r})
t2 = time.perf_counter()
ann.rebuild(block=False)
ann.search(Q[0], 10)
t3 = time.perf_counter()
ann.wait()
t4 = time.perf_counter()
ann.search(Q[1], 10)
t5 = time.perf_counter()
print(f"import {{t1 - t0:.2f}} s; first query (exact, build running) {{t3 - t2:.3f}} s; "
      f"build {{t4 - t3:.1f}} s; first graph query {{t5 - t4:.3f}} s; "
      "pynndescent imported in main:", "pynndescent" in sys.modules)
"""


def section_first(params, n=100_000):
    print("\n== fresh process (warm numba cache) ==")
    code = _FIRST.format(here=os.path.dirname(os.path.abspath(__file__)), n=n, params=params)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    print(out.stdout.strip() or out.stderr[-2000:])


def section_mask(params, n=100_000):
    print("\n== label mask: exact masked scan vs filtered walk (q/s, recall) ==")
    X, Q = mixture(n, nq=300)
    labels = np.random.default_rng(3).integers(0, 1000, n)
    store = ArrayStore(X, labels=labels)
    ex = ExactIndex(store)
    ann = make_ann(store, **dict(params, mask_share=0.0))
    ann.rebuild(block=True)
    for share in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
        mask = labels < int(share * 1000)
        t0 = time.perf_counter()
        for q in Q:
            ex.search(q, 10, mask)
        t_ex = time.perf_counter() - t0
        t0 = time.perf_counter()
        for q in Q:
            ann.search(q, 10, mask)
        t_ann = time.perf_counter() - t0
        print(
            f"share {share:5.3f}: exact {Q.shape[0] / t_ex:7.0f} q/s  "
            f"walk {Q.shape[0] / t_ann:7.0f} q/s  recall {recall(ann, store, Q, 10, mask):.4f}",
            flush=True,
        )


def section_params(params):
    print("\n== parameter sweep on one graph per data set (recall@10, q/s) ==")
    for name, (X, Q) in (("digits", digits()), ("mixture 1e5", mixture(100_000))):
        store = ArrayStore(X)
        ann = make_ann(store, **params)
        ann.rebuild(block=True)
        for ef in (20, 40, 64):
            for eps in (0.0, 0.1, 0.2):
                ann.min_ef, ann.epsilon = ef, eps
                print(
                    f"{name:<12} ef {ef:3d} eps {eps:.1f}: recall {recall(ann, store, Q):.4f}"
                    f"  {qps(ann, Q):6.0f} q/s",
                    flush=True,
                )


SECTIONS = {
    "table": section_table,
    "crossover": section_crossover,
    "gil": section_gil,
    "first": section_first,
    "mask": section_mask,
    "params": section_params,
}

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    chosen = sys.argv[1:] or ["table", "crossover", "first", "mask", "gil"]
    params = {}
    for name in chosen:
        SECTIONS[name](params)

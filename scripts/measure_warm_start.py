"""Warm-starting a real solver from the pool: TV denoising and inpainting of photo patches.

A solver (L-BFGS-B on a smoothed total-variation energy) restores noisy or partly
observed 32x32 RGB patches cut from scikit-image's photographs; each solved state is
stored in a pool. Later a *new* noisy (or holed) observation of the same clean patch
arrives; the pool is asked for a start with ``retrieve_soft(Query.from_tensor(obs))``
(the certainty map of the observed pixels is passed for inpainting). Reported: how often
the hit is the stored solution of the same clean patch, and solver iterations from a
cold start (the observation itself) against a warm start (the retrieved state).

Run: ``python scripts/measure_warm_start.py [--stored 300] [--queries 60]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize

import dreamjit as dj
from dreamjit.testing import photo_patches

EPS = 1e-3


def tv_energy(x, y, m, lam, shape):
    """``0.5 * sum(m (x - y)^2) + lam * sum(sqrt(dx^2 + dy^2 + EPS))`` and its gradient."""
    x = x.reshape(shape)
    r = m * (x - y)
    dx = np.zeros_like(x)
    dy = np.zeros_like(x)
    dx[:, :-1] = x[:, 1:] - x[:, :-1]
    dy[:-1, :] = x[1:, :] - x[:-1, :]
    mag = np.sqrt(dx * dx + dy * dy + EPS)
    e = 0.5 * float((r * (x - y)).sum()) + lam * float(mag.sum())
    gx = dx / mag
    gy = dy / mag
    g = r.copy()
    g[:, :-1] -= lam * gx[:, :-1]
    g[:, 1:] += lam * gx[:, :-1]
    g[:-1, :] -= lam * gy[:-1, :]
    g[1:, :] += lam * gy[:-1, :]
    return e, g.ravel()


def solve(y, m, x0, lam=0.08, tol=1e-6):
    res = minimize(
        tv_energy,
        x0.ravel(),
        args=(y, m, lam, y.shape),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * y.size,
        options={"maxiter": 2000, "ftol": tol, "gtol": 1e-5},
    )
    return res.x.reshape(y.shape).astype(np.float32), int(res.nit)


def observe(clean, rng, task):
    if task == "denoise":
        return np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1), np.ones(clean.shape[:2])
    seen = (rng.random(clean.shape[:2]) >= 0.7).astype(np.float64)
    return clean * seen[..., None], seen


def run(task, clean, stored, queries, seed):
    rng = np.random.default_rng(seed)
    pool = dj.DreamPool(max_size=stored, memory_budget_mb=None, seed=0)
    t0 = time.perf_counter()
    ids = []
    for i in range(stored):
        y, seen = observe(clean[i], rng, task)
        x, _ = solve(y, seen[..., None], y)
        ids.append(pool.add(x, dj.SolverResult(0.0, 1.0, 0.0)))
    solve_s = time.perf_counter() - t0
    found = found_hard = 0
    cold_it, warm_it, warm_hard_it = [], [], []
    for i in range(queries):
        y, seen = observe(clean[i], rng, task)
        cert = None if task == "denoise" else seen.astype(np.float32)
        hit = int(pool.retrieve_soft(dj.Query.from_tensor(y, certainty=cert), k=1).ids[0])
        hard = int(pool.retrieve_similar(dj.chroma_signature(y, certainty=cert), k=1).ids[0])
        found += hit == ids[i]
        found_hard += hard == ids[i]
        m = seen[..., None]
        cold_it.append(solve(y, m, y)[1])
        warm_it.append(solve(y, m, pool[hit].tensor)[1])
        warm_hard_it.append(solve(y, m, pool[hard].tensor)[1])
    print(
        f"{task:8s}: {stored} solved states stored ({solve_s:.1f} s); "
        f"of {queries} new observations retrieve_soft found the same patch's state "
        f"{found}/{queries}, hard {found_hard}/{queries}; "
        f"L-BFGS-B iterations median cold {np.median(cold_it):.0f}, warm (soft hit) "
        f"{np.median(warm_it):.0f}, warm (hard hit) {np.median(warm_hard_it):.0f}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--stored", type=int, default=300)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    clean = photo_patches(args.stored, size=32, seed=args.seed, min_std=0.05).astype(np.float64)
    run("denoise", clean, args.stored, args.queries, args.seed + 1)
    run("inpaint", clean, args.stored, min(args.queries, 30), args.seed + 2)


if __name__ == "__main__":
    main()

"""``kernels._jit.run_chunks``: every chunk runs exactly once, on helper threads or not,
errors come back to the caller, and it works in a forked child (whose parent's helper
threads do not exist). No timing: results and call records only."""

import multiprocessing
import os
import threading

import numpy as np
import pytest

from dreamjit.kernels import _jit
from dreamjit.kernels._jit import MIN_PARALLEL_ITEMS, run_chunks


def _record(n, step, min_items=MIN_PARALLEL_ITEMS):
    calls = []  # list.append is atomic under the GIL
    run_chunks(lambda lo, hi: calls.append((lo, hi, threading.get_ident())), n, step, min_items)
    return calls


@pytest.mark.parametrize(
    "n,step", [(0, 8), (1, 8), (7, 8), (8, 8), (63, 8), (64, 8), (65, 8), (1000, 8), (100, 1)]
)
def test_every_chunk_runs_once(n, step):
    calls = _record(n, step)
    want = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
    assert sorted((lo, hi) for lo, hi, _ in calls) == want


def test_small_batches_run_in_the_calling_thread_in_order():
    calls = _record(MIN_PARALLEL_ITEMS - 1, 8)
    assert [c[:2] for c in calls] == [(lo, min(63, lo + 8)) for lo in range(0, 63, 8)]
    assert {c[2] for c in calls} == {threading.get_ident()}


def test_writes_equal_the_serial_loop():
    # the shape of the real use: each chunk writes its own rows of an output
    x = np.arange(1000.0)
    out = np.empty_like(x)

    def body(lo, hi):
        out[lo:hi] = np.sqrt(x[lo:hi]) * 3.0

    run_chunks(body, 1000, 8)
    assert np.array_equal(out, np.sqrt(x) * 3.0)


def test_a_chunk_error_reaches_the_caller():
    done = []

    def body(lo, hi):
        done.append(lo)
        if lo == 80:
            raise ValueError("chunk 80")

    with pytest.raises(ValueError, match="chunk 80"):
        run_chunks(body, 200, 8)
    # threaded: every chunk ran first; in the calling thread alone (NUMBA_DISABLE_JIT=1)
    # the loop stops at the error
    assert set(range(0, 88, 8)) <= set(done) <= set(range(0, 200, 8))


def test_calls_from_several_threads_at_once():
    outs = [np.zeros(500) for _ in range(4)]
    errors = []

    def caller(k):
        try:
            run_chunks(lambda lo, hi: outs[k].__setitem__(slice(lo, hi), k + 1.0), 500, 8)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, out in enumerate(outs):
        assert (out == k + 1.0).all()


def _in_child(queue):
    try:
        calls = _record(256, 8)
        queue.put(
            sorted((lo, hi) for lo, hi, _ in calls) == [(lo, lo + 8) for lo in range(0, 256, 8)]
        )
    except BaseException as exc:  # pragma: no cover - reported by the parent
        queue.put(repr(exc))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_runs_in_a_forked_child():
    _record(256, 8)  # the parent's helper threads exist now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_in_child, args=(queue,))
    proc.start()
    result = queue.get(timeout=300)  # a safety net against a hang, not a timing
    proc.join()
    assert result is True
    assert proc.exitcode == 0


def test_one_thread_when_numba_allows_one(monkeypatch):
    monkeypatch.setattr(_jit, "_thread_count", lambda: 1)
    calls = _record(256, 8)
    assert {c[2] for c in calls} == {threading.get_ident()}
    assert [c[:2] for c in calls] == [(lo, lo + 8) for lo in range(0, 256, 8)]

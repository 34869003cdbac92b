"""The NN-descent build worker: pynndescent in a persistent process, and its pipe protocol.

pynndescent is imported only here (lazily, never on ``import dreamjit``), and its
private attributes are read in one function, :func:`pynndescent_search_graph`
(``tests/test_index.py`` pins them to the installed version). The worker is
spawned on the first build, shared by every index of the process (its compile
is paid once), and talks over pipes: arrays go as raw bytes with a JSON header,
nothing is pickled.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from ..kernels._jit import parallel_allowed
from ..kernels.graph import knn_to_csr, relabel_csr

logger = logging.getLogger("dreamjit")


def _build_csr(X, n_neighbors, seed, graph, max_degree, n_jobs):
    """pynndescent k-NN graph of the unit rows ``X`` -> (indptr int64, indices int32)."""
    if not parallel_allowed():  # pynndescent's prange kernels would end this process
        raise RuntimeError(
            "pynndescent cannot run in this thread of this process (numba's "
            "threading layer is not safe here: forked child or workqueue)"
        )
    import pynndescent  # lazy: ~2 s import, never on ``import dreamjit``

    nnd = pynndescent.NNDescent(
        X, metric="dot", n_neighbors=n_neighbors, random_state=seed, n_jobs=n_jobs, low_memory=True
    )
    if graph == "knn":
        nbrs, dists = nnd.neighbor_graph
        return knn_to_csr(np.ascontiguousarray(nbrs), np.ascontiguousarray(dists), max_degree)
    indptr, indices, order = pynndescent_search_graph(nnd)
    return relabel_csr(indptr, indices, order, max_degree)


def pynndescent_search_graph(nnd):
    """``(indptr, indices, vertex_order)`` int64 of a built ``NNDescent``'s search graph:
    pruned and symmetrised, vertices in pynndescent's tree order. The one place that
    reads pynndescent's private attributes (``_search_graph``, ``_vertex_order``)."""
    nnd.prepare()
    sg = nnd._search_graph
    return (
        np.asarray(sg.indptr, dtype=np.int64),
        np.asarray(sg.indices, dtype=np.int64),
        np.asarray(nnd._vertex_order, dtype=np.int64),
    )


def _write_msg(fp, header: dict, arrays=()) -> None:
    """One JSON line (with each array's dtype and shape) then the raw array bytes."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = dict(header, arrays=[[a.dtype.str, list(a.shape)] for a in arrays])
    fp.write((json.dumps(header) + "\n").encode())
    for a in arrays:
        fp.write(memoryview(a).cast("B"))
    fp.flush()


def _read_exact(fp, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = fp.read(left)
        if not chunk:
            raise EOFError("build worker closed its pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_msg(fp):
    line = fp.readline()
    if not line:
        raise EOFError("build worker closed its pipe")
    header = json.loads(line)
    arrays = []
    for dtype, shape in header.pop("arrays"):
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise ValueError("object arrays are refused")
        count = int(np.prod(shape, dtype=np.int64))
        arrays.append(
            np.frombuffer(_read_exact(fp, count * dt.itemsize), dtype=dt).reshape(shape).copy()
        )
    return header, arrays


def _worker_main() -> None:
    """Build loop of the worker process: one build request in, one graph out."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    inp = sys.stdin.buffer
    while True:
        try:
            req, (X,) = _read_msg(inp)
        except EOFError:
            return
        t0 = time.perf_counter()
        try:
            indptr, indices = _build_csr(
                X, req["n_neighbors"], req["seed"], req["graph"], req["max_degree"], req["n_jobs"]
            )
        except Exception as exc:  # report, keep serving
            _write_msg(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        _write_msg(out, {"ok": True, "seconds": time.perf_counter() - t0}, (indptr, indices))


class BuildTimeout(RuntimeError):
    """A build ran past its timeout (the worker process was killed)."""


class BuildUnwanted(RuntimeError):
    """Nobody needs the build any more (its pool was garbage-collected)."""


#: seconds an idle build worker is kept before it is closed. Its memory
#: (pynndescent's compiled code and what the last build left, ~650 MB RSS
#: after a 2e5 x 64 build measured here) is outside every pool's logical
#: budget; closing it frees that, and the next build starts a new worker
#: (~35 s here to start and compile pynndescent). None keeps it until exit.
WORKER_IDLE_SECONDS = 120.0


class _Worker:
    """The persistent build process (spawned on first use, shared by all indexes)."""

    _instance = None
    _guard = threading.Lock()
    closing = False  # set at interpreter exit: no thread fallback then
    #: what the worker process runs (tests swap in stand-ins)
    CODE = "from dreamjit.index.worker import _worker_main; _worker_main()"

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
        )
        self.lock = threading.Lock()  # one build at a time; held while the worker is in use
        self.closed = False
        self.warm = False  # pynndescent has compiled and run here
        self.timed_out = False
        self._idle_timer = None
        logger.info("started NN-descent build worker (pid %d)", self.proc.pid)

    @classmethod
    def get(cls) -> _Worker:
        with cls._guard:
            if cls.closing:
                raise RuntimeError("the interpreter is exiting: no build worker")
            inst = cls._instance
            if inst is None or inst.closed or inst.proc.poll() is not None:  # poll reaps
                if inst is not None:
                    inst._stop()
                cls._instance = inst = cls()
            return inst

    @classmethod
    def build(cls, X, request: dict, timeout=None, warm_only=False, wanted=None):
        """Run one build in the shared worker (started if needed); ``(indptr, indices)``.

        Raises :class:`BuildTimeout` after ``timeout`` seconds (the worker is
        killed and reaped; the next build starts a new one) and RuntimeError
        if the worker fails. ``warm_only``: build a small random graph of
        ``X``'s dimension, so pynndescent has compiled before a real snapshot.
        ``wanted()`` is asked once the worker is free (builds of other indexes
        go first): False gives up with :class:`BuildUnwanted`.
        """
        for _ in range(3):  # a worker closed by its idle timer meanwhile: take a new one
            worker = cls.get()
            with worker.lock:
                if worker.closed:
                    continue
                if wanted is not None and not wanted():
                    raise BuildUnwanted("the index's owner is gone")
                worker._cancel_idle()
                try:
                    if warm_only:
                        if worker.warm:
                            return None
                        rng = np.random.default_rng(0)
                        n = max(256, 2 * int(request["n_neighbors"]) + 2)
                        X = rng.normal(size=(n, X.shape[1])).astype(np.float32)
                        X /= np.linalg.norm(X, axis=1, keepdims=True)
                    out = worker._run(X, request, timeout)
                    worker.warm = True
                    return None if warm_only else out
                finally:
                    worker._arm_idle()
        raise RuntimeError("no build worker could be started")

    def _run(self, X, request, timeout):
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self._kill_for_timeout)
            timer.daemon = True
            timer.start()
        try:
            _write_msg(self.proc.stdin, request, (X,))
            header, arrays = _read_msg(self.proc.stdout)
        except (OSError, EOFError, ValueError) as exc:
            self._stop()  # dead or out of step: kill and reap it now, never leave a zombie
            if self.timed_out:
                raise BuildTimeout(
                    f"NN-descent build of {X.shape[0]} entries ran past "
                    f"{timeout} s; build worker killed"
                ) from None
            self.log.seek(0)
            tail = self.log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"build worker failed: {exc}; stderr: {tail}") from None
        finally:
            if timer is not None:
                timer.cancel()
        if self.timed_out:  # the timer fired just as the answer came: reap the worker now
            self._stop()
        if not header["ok"]:
            raise RuntimeError(header["error"])
        return arrays

    def _kill_for_timeout(self) -> None:
        self.timed_out = True
        logger.warning(
            "NN-descent build worker (pid %d) passed the build timeout: killing it", self.proc.pid
        )
        try:
            self.proc.kill()  # the blocked read then sees EOF; the builder reaps it
        except OSError:  # pragma: no cover - already gone
            pass

    def _stop(self, grace=0.0) -> None:
        """Close the pipes, end the process (kill after ``grace`` s) and reap it."""
        self.closed = True
        for fp in (self.proc.stdin, self.proc.stdout):
            try:
                if fp is not None:
                    fp.close()
            except Exception:  # pragma: no cover - a broken pipe
                pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            self.log.close()
        except Exception:  # pragma: no cover
            pass

    # ------------------------------------------------------- idle close
    def _arm_idle(self) -> None:
        idle = WORKER_IDLE_SECONDS
        if idle is None or self.closed:
            return
        self._idle_timer = threading.Timer(float(idle), self._close_if_idle)
        self._idle_timer.daemon = True
        self._idle_timer.start()

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _close_if_idle(self) -> None:
        if not self.lock.acquire(blocking=False):
            return  # a build took it meanwhile: it re-arms the timer when done
        try:
            if self.closed:
                return
            logger.info("closing the idle NN-descent build worker (pid %d)", self.proc.pid)
            self._stop(grace=5.0)
        finally:
            self.lock.release()
        with _Worker._guard:
            if _Worker._instance is self:
                _Worker._instance = None

    def close(self) -> None:
        self._cancel_idle()
        self._stop(grace=5.0)

    @classmethod
    def shutdown(cls) -> None:
        cls.closing = True
        with cls._guard:
            if cls._instance is not None:
                cls._instance.close()
                cls._instance = None

    def _disown_in_child(self) -> None:
        """In a forked child: let go of the parent's worker without touching its pipes.

        The child's copies of the pipe and log descriptors are pointed at
        /dev/null, so nothing the child does (closing, flushing a half-written
        request) reaches the parent's worker, and the worker sees EOF when the
        parent closes its end.
        """
        self.closed = True
        self._idle_timer = None
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for fp in (self.proc.stdin, self.proc.stdout, self.log):
                try:
                    if fp is not None:
                        os.dup2(devnull, fp.fileno())
                except (OSError, ValueError):
                    pass
        finally:
            os.close(devnull)
        self.proc.returncode = -1  # not our child: never wait for it here


def _forget_worker_in_child() -> None:
    # a forked child starts its own worker when it needs one
    _Worker._guard = threading.Lock()  # another thread of the parent may have held it
    inst, _Worker._instance = _Worker._instance, None
    if inst is not None:
        inst._disown_in_child()


atexit.register(_Worker.shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_in_child)

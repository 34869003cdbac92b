"""Stand-ins that let tests build NN-descent indexes without pynndescent (and its ~40 s compile).

``build_in_threads(monkeypatch.setattr)`` in a test (undone after it), ``build_in_threads()``
in a script: every pool made afterwards builds its graph in a thread, from the exact k-NN graph.
"""

import json
import zipfile

import numpy as np

import dreamjit.index.worker as worker_mod
from dreamjit._indexes import IndexSet
from dreamjit.io import _checksum, _encode_header
from dreamjit.kernels.graph import knn_to_csr


def exact_knn_graph(X, n_neighbors, seed, graph, max_degree, n_jobs):
    """Stand-in for pynndescent, with the build worker's ``_build_csr`` signature: the exact
    k-NN graph of the unit rows ``X`` (numpy and a serial kernel) as CSR."""
    S = X.astype(np.float64) @ X.astype(np.float64).T
    np.fill_diagonal(S, -np.inf)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :n_neighbors]
    dists = 1.0 - np.take_along_axis(S, nbrs, axis=1)
    return knn_to_csr(nbrs.astype(np.int32), dists, max_degree)


def build_in_threads(patch=setattr) -> None:
    """Pools build in a thread with :func:`exact_knn_graph` (``patch``: how to set attributes)."""
    patch(worker_mod, "_build_csr", exact_knn_graph)
    make = IndexSet.make_ann

    def make_thread_ann(self):
        ann = make(self)
        ann.builder = "thread"
        return ann

    patch(IndexSet, "make_ann", make_thread_ann)


def rewrite(path, out, edit):
    """Copy a pool file with ``edit(header, arrays)`` applied, checksums and seal redone."""
    with zipfile.ZipFile(path) as zf:
        arrays = {}
        for info in zf.infolist():
            with zf.open(info) as fp:
                arrays[info.filename[:-4]] = np.lib.format.read_array(fp, allow_pickle=False)
    header = json.loads(arrays.pop("__header__").tobytes())
    edit(header, arrays)
    header["checksums"] = {k: _checksum(a) for k, a in arrays.items()}
    blob = np.frombuffer(_encode_header(header), dtype=np.uint8)
    with open(out, "wb") as fh:
        np.savez(fh, __header__=blob, **arrays)
    return out

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# hypothesis profiles: the default run keeps each property's own (small) example count;
# ``--hypothesis-profile=thorough`` runs at least 1000 examples per property
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if not JIT_DISABLED:
        return
    skip = pytest.mark.skip(reason="too slow with NUMBA_DISABLE_JIT=1")
    for item in items:
        if "jit_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def nndescent_worker():
    """The shared NN-descent build worker, started with pynndescent compiled (~40 s), once.

    Every ``ann`` test gets it (see :func:`_ann_tests_share_the_worker`), so the compile is
    paid once per session, by the first of them, and by no later one: the worker is kept for
    the whole session instead of closing after ``WORKER_IDLE_SECONDS`` idle (a later ``ann``
    test would pay the compile again). With the JIT off nothing is started: the tests that
    build real graphs are ``jit_only``.
    """
    if JIT_DISABLED:
        yield None
        return
    import dreamjit.index.worker as worker_mod

    request = {"n_neighbors": 30, "seed": 0, "graph": "search", "max_degree": 45, "n_jobs": None}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(worker_mod, "WORKER_IDLE_SECONDS", None)
        worker_mod._Worker.build(np.empty((0, 64), np.float32), request, warm_only=True)
        worker = worker_mod._Worker.get()
        worker._cancel_idle()  # armed by a build before this fixture ran, if any
        yield worker


@pytest.fixture(autouse=True)
def _ann_tests_share_the_worker(request):
    if request.node.get_closest_marker("ann") is not None:
        request.getfixturevalue("nndescent_worker")

import os

import numpy as np
import pytest

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

"""The short soak CI runs: many adds under a small budget, usage never above it."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))


@pytest.mark.jit_only
def test_short_soak():
    from soak import soak

    out = soak(20_000, budget_mb=2.0, batch=1)
    assert out["max_usage_ratio"] <= 1.0
    assert out["evicted"] == 20_000 - out["final_count"] > 0


@pytest.mark.jit_only
def test_short_soak_batched():
    from soak import soak

    out = soak(20_000, budget_mb=2.0, batch=64)
    assert out["max_usage_ratio"] <= 1.0

"""Every kernel property test again with >= 1000 hypothesis examples each (slow)."""

import os
import subprocess
import sys

import pytest

PROPERTY_MODULES = [
    "test_kernels_budget.py",
    "test_kernels_cosine.py",
    "test_kernels_evaluate.py",
    "test_kernels_hybrid.py",
    "test_kernels_mmr.py",
    "test_kernels_spectral.py",
    "test_diversity.py",
    "test_features.py",
]


@pytest.mark.slow
def test_kernel_properties_with_1000_examples():
    here = os.path.dirname(__file__)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-profile=thorough",
        *[os.path.join(here, m) for m in PROPERTY_MODULES],
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(here))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]

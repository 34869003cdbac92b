"""How many hypothesis examples property tests run.

Few by default; ``DREAMJIT_THOROUGH=1`` (what the ``slow`` run of
``test_properties_thorough.py`` sets) runs at least 1000 for each.
"""
import os

THOROUGH = os.environ.get("DREAMJIT_THOROUGH", "") == "1"


def examples(n: int) -> int:
    return max(n, 1000) if THOROUGH else n

"""How many hypothesis examples property tests run.

Few by default; with ``--hypothesis-profile=thorough`` (registered in
``conftest.py``; what the ``slow`` run of ``test_properties_thorough.py``
passes) at least 1000 for each.
"""

from hypothesis import settings


def examples(n: int) -> int:
    thorough = settings.default.max_examples >= 1000
    return max(n, settings.default.max_examples) if thorough else n

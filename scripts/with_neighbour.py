"""Run a command while a *neighbour* process keeps one core busy.

``python scripts/with_neighbour.py -- python scripts/measure_query_path.py 1000,10000``

The neighbour is the same spinning child :mod:`measure_busy_neighbour` uses: it is
started first, the command runs once its "ready" line arrives, and it is killed when
the command ends. Each measurement script times its contenders interleaved, so running
it plainly and then under this wrapper gives the performance page's "idle" and "busy
neighbour" figures for every target. The command's exit status is returned.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure_busy_neighbour import Neighbour  # noqa: E402


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with Neighbour():
        print(f"# with a busy neighbour (load {os.getloadavg()[0]:.2f}): {' '.join(argv)}")
        sys.stdout.flush()
        return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run every notebook (or the ones named) as the notebook tests do and print each wall time and the total.

Usage: ``python scripts/notebook_times.py [notebooks/02_claim_decomposition.ipynb ...]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_notebooks import PATHS, execute_notebook  # noqa: E402

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Time each notebook; exit status 1 if any failed."""
    paths = [Path(a).resolve() for a in argv] or PATHS
    total, failed = 0.0, []
    for path in paths:
        t0 = time.perf_counter()
        try:
            execute_notebook(path)
            status = "ok"
        except Exception as e:  # report and go on to the next notebook
            status, _ = f"FAILED ({type(e).__name__})", failed.append(path.name)
        dt = time.perf_counter() - t0
        total += dt
        print(f"{path.name:40} {dt:7.1f} s  {status}", flush=True)
    print(f"{'total':40} {total:7.1f} s  ({len(paths)} notebooks, {len(failed)} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Runs every benchmark under bench/ in turn (make bench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ["banking77.py", "few_shot.py", "reinforcement.py", "transfer.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failures = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        failures += subprocess.run([sys.executable, str(here / name)], check=False).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

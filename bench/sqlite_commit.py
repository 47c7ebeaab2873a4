"""What `synchronous=FULL` costs: one-row write transactions with FULL against NORMAL (WAL mode).

The store commits every acknowledged write with `synchronous=FULL` (docs/durability.md); this
measures the price on this machine's disk, with the store's own pragmas and transaction shape.
Usage: python bench/sqlite_commit.py [--commits 500] [--dir FOLDER_ON_THE_DATA_DISK]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path


def commit_times(folder: Path, synchronous: str, commits: int) -> list[float]:
    """Seconds per one-row BEGIN IMMEDIATE ... COMMIT, ``commits`` times."""
    db = sqlite3.connect(str(folder / f"{synchronous}.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE events (sequence INTEGER PRIMARY KEY, payload TEXT)")
    times = []
    for sequence in range(commits):
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO events VALUES (?, ?)", (sequence, "x" * 300))
        db.execute("COMMIT")
        times.append(time.perf_counter() - started)
    db.close()
    return sorted(times)


def main() -> None:
    """Print median and p99 commit latency for FULL and NORMAL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--dir", default=None, help="folder on the disk to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for synchronous in ("FULL", "NORMAL"):
            times = commit_times(Path(folder), synchronous, args.commits)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(
                f"synchronous={synchronous}: median {statistics.median(times) * 1e3:.3f} ms,"
                f" p99 {p99 * 1e3:.3f} ms over {args.commits} commits"
            )


if __name__ == "__main__":
    main()

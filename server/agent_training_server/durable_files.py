"""Flushing files to the disk: what makes a write survive a power loss, not only a crash.

A process crash (``kill -9``) loses nothing the kernel already has; a power loss loses what is
still only in its page cache. Files that a committed database row names (checkpoints, version
weights) are flushed first, and so is the folder entry of a file renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

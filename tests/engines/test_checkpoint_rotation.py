"""Checkpoint rotation: the newest checkpoint file is there at every moment once one is written.

Readers open it while the background writer saves the next one (the Ray executor's rank 0 copies
it to Ray Train's storage from the training thread): a rotation that moved the newest aside
before putting the new one in place left a moment with no newest file, and such a copy failed
with FileNotFoundError.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from agent_training_server.engines.checkpoint import (
    FILE_NAME,
    PREVIOUS_FILE_NAME,
    read_checkpoint,
    save_checkpoint,
)


def _save(folder: Path, step: int) -> None:
    model = {"weight": torch.full((64, 64), float(step))}
    save_checkpoint(folder, model, {"state": {}, "param_groups": []}, None, {"step": step})


def test_the_newest_checkpoint_never_goes_missing_while_the_next_is_written(
    tmp_path: Path,
) -> None:
    _save(tmp_path, 0)
    done = threading.Event()
    misses = 0

    def read_while_written() -> None:
        nonlocal misses
        while not done.is_set():
            try:
                with (tmp_path / FILE_NAME).open("rb") as newest:
                    newest.read(8)
            except FileNotFoundError:
                misses += 1

    reader = threading.Thread(target=read_while_written)
    reader.start()
    try:
        for step in range(1, 300):
            _save(tmp_path, step)
    finally:
        done.set()
        reader.join()
    assert misses == 0
    # The rotation still keeps the one before the newest to fall back on.
    assert read_checkpoint(tmp_path / FILE_NAME)["state"]["step"] == 299
    assert read_checkpoint(tmp_path / PREVIOUS_FILE_NAME)["state"]["step"] == 298

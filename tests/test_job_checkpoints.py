"""job_checkpoints: kept files' names, retention, descriptions, and pruning a job's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent_training_server import job_checkpoints
from agent_training_server.engines import integrity


def keep(folder: Path, epoch: int, best_epoch: int, **figures: float) -> Path:
    """A kept file as the training loop writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / job_checkpoints.file_name(epoch)
    metadata = {
        job_checkpoints.METADATA_KEY: job_checkpoints.description(
            epoch, epoch * 10, figures, best_epoch
        )
    }
    integrity.write_tensors(path, {"model.weight": torch.full((2, 3), float(epoch))}, metadata)
    return path


def test_ids_name_epochs_and_nothing_else() -> None:
    assert job_checkpoints.checkpoint_id(3) == "epoch-3"
    assert job_checkpoints.epoch_of("epoch-3") == 3
    for bad in ("epoch-0", "epoch-03", "epoch-", "epoch-1234567", "best", "epoch-3 ", "../x"):
        assert job_checkpoints.epoch_of(bad) is None, bad


def test_a_kept_file_describes_itself_from_its_header(tmp_path: Path) -> None:
    path = keep(tmp_path, 4, best_epoch=2, loss=0.5, validation_accuracy=0.75)
    kept = job_checkpoints.read_kept(path)
    assert (kept.checkpoint_id, kept.epoch, kept.step, kept.best_epoch) == ("epoch-4", 4, 40, 2)
    assert kept.figures == {"loss": 0.5, "validation_accuracy": 0.75}
    assert kept.size_bytes == path.stat().st_size and kept.time > 0


def test_retention_keeps_the_best_and_the_last_n(tmp_path: Path) -> None:
    for epoch in range(1, 7):
        keep(tmp_path, epoch, best_epoch=2)
    job_checkpoints.retain(tmp_path, best=2, keep_last=2)
    assert [k.epoch for k in job_checkpoints.list_kept(tmp_path)] == [2, 5, 6]
    job_checkpoints.retain(tmp_path, best=6, keep_last=0)
    assert [k.epoch for k in job_checkpoints.list_kept(tmp_path)] == [6]


def test_a_damaged_or_partial_file_is_not_listed(tmp_path: Path) -> None:
    keep(tmp_path, 1, best_epoch=1)
    keep(tmp_path, 2, best_epoch=1).write_bytes(b"\x00" * 4)
    (tmp_path / "epoch-0003.safetensors.partial-12").write_bytes(b"half")
    assert [k.epoch for k in job_checkpoints.list_kept(tmp_path)] == [1]


def test_an_ended_jobs_folder_keeps_only_its_kept_folders(tmp_path: Path) -> None:
    job = tmp_path / "train_1"
    loops = job / job_checkpoints.LOOP_FOLDER
    keep(loops / job_checkpoints.KEPT_FOLDER, 1, best_epoch=1)
    keep(loops / "ngrams" / job_checkpoints.KEPT_FOLDER, 3, best_epoch=3)
    for leftover in (loops / "checkpoint.safetensors", loops / "ngrams" / "checkpoint.safetensors"):
        leftover.write_bytes(b"resumable")
    (job / "artifact").mkdir()
    (job / "artifact" / "weights.safetensors").write_bytes(b"moved already")
    job_checkpoints.prune_job_folder(job)
    left = sorted(str(p.relative_to(job)) for p in job.rglob("*") if p.is_file())
    assert left == [
        "checkpoints/kept/epoch-0001.safetensors",
        "checkpoints/ngrams/kept/epoch-0003.safetensors",
    ]
    # A job that kept nothing leaves nothing.
    other = tmp_path / "train_2"
    (other / job_checkpoints.LOOP_FOLDER).mkdir(parents=True)
    (other / job_checkpoints.LOOP_FOLDER / "checkpoint.safetensors").write_bytes(b"x")
    job_checkpoints.prune_job_folder(other)
    assert not other.exists()


def test_finishing_names_the_chosen_epoch_and_each_helpers_best(tmp_path: Path) -> None:
    job = tmp_path / "train_1"
    loops = job / job_checkpoints.LOOP_FOLDER
    chosen = keep(loops / job_checkpoints.KEPT_FOLDER, 1, best_epoch=1)
    keep(loops / "ngrams" / job_checkpoints.KEPT_FOLDER, 4, best_epoch=4)
    helper_best = keep(loops / "ngrams" / job_checkpoints.KEPT_FOLDER, 5, best_epoch=4)
    helper_best = helper_best.with_name(job_checkpoints.file_name(4))
    work = tmp_path / "work"
    job_checkpoints.prepare_finalize(job, 1, work)
    work_loops = work / job_checkpoints.LOOP_FOLDER
    assert job_checkpoints.finalize_source(work_loops) == chosen
    assert job_checkpoints.finalize_source(work_loops / "ngrams") == helper_best
    with pytest.raises(FileNotFoundError):  # an epoch the job did not keep
        job_checkpoints.prepare_finalize(job, 2, tmp_path / "missing")

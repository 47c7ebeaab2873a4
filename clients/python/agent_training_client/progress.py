"""A one-line live progress bar for training events."""

from __future__ import annotations

from typing import TextIO

from agent_training.v1 import training_pb2

BAR_WIDTH = 24


def _phase(value: int) -> str:
    return training_pb2.TrainingPhase.Name(value).removeprefix("TRAINING_PHASE_").lower()


def format_progress(progress: training_pb2.TrainingProgress) -> str:
    """Return one line: bar, percent, epoch, loss, accuracies, speed and ETA."""
    done = int(BAR_WIDTH * progress.percent_complete / 100)
    parts = [
        f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {progress.percent_complete:5.1f}%",
        _phase(progress.phase),
        f"epoch {progress.epoch}/{progress.total_epochs}",
    ]
    if progress.HasField("loss"):
        parts.append(f"loss {progress.loss:.4f}")
    if progress.HasField("train_accuracy"):
        parts.append(f"acc {progress.train_accuracy:.3f}")
    if progress.HasField("validation_accuracy"):
        parts.append(f"val_acc {progress.validation_accuracy:.3f}")
    if progress.examples_per_second:
        parts.append(f"{progress.examples_per_second:,.0f} ex/s")
    if progress.HasField("eta_seconds"):
        parts.append(f"ETA {progress.eta_seconds:.0f}s")
    return "  ".join(parts)


class ProgressPrinter:
    """Prints events of a job to a terminal, redrawing the progress line in place."""

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self._stream = stream
        self._enabled = enabled
        self._live = stream.isatty()

    def show(self, event: training_pb2.TrainingEvent) -> None:
        """Print one event."""
        if not self._enabled:
            return
        kind = event.WhichOneof("kind")
        if kind == "accepted":
            line = (
                f"job {event.training_id} accepted: {event.accepted.example_count} examples,"
                f" {event.accepted.output_count} outputs"
            )
            self._stream.write(line + "\n")
        elif kind == "progress":
            line = format_progress(event.progress)
            self._stream.write(("\r" + line + "\033[K") if self._live else line + "\n")
        elif kind == "finished":
            status = training_pb2.TrainingStatus.Name(event.finished.status)
            self._stream.write(("\n" if self._live else "") + f"job ended: {status}\n")
        self._stream.flush()

    def close(self) -> None:
        """Finish the output."""
        self._stream.flush()

"""Training progress a person can read: one line of fixed fields per report, then a summary.

Every line has the same fields in the same place (phase, epoch, step, loss, acc, val_acc, ex/s,
ETA), ``-`` where a value is not known yet. On a terminal the line is redrawn in place; in a file
or a pipe there is one line per phase and per epoch (at most one every ten seconds between
them) and never a carriage return.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TextIO

from agent_training.v1 import training_pb2

BAR_WIDTH = 20
QUIET_SECONDS = 10.0
"""Off a terminal, the longest stretch without a line while reports keep coming."""
PHASES = {
    training_pb2.TRAINING_PHASE_UNSPECIFIED: "queued",
    training_pb2.TRAINING_PHASE_LOADING_DATA: "loading data",
    training_pb2.TRAINING_PHASE_LOADING_ENCODER: "loading encoder",
    training_pb2.TRAINING_PHASE_TRAINING: "training",
    training_pb2.TRAINING_PHASE_EVALUATING: "evaluating",
    training_pb2.TRAINING_PHASE_SAVING: "saving",
}
DONE = "done"
PHASE_WIDTH = max(len(name) for name in (*PHASES.values(), DONE))


def phase_name(value: training_pb2.TrainingPhase.ValueType) -> str:
    """What a phase does, in words (``loading encoder``)."""
    if value in PHASES:
        return PHASES[value]
    name = (
        training_pb2.TrainingPhase.Name(value)
        if value in training_pb2.TrainingPhase.values()
        else ""
    )
    return name.removeprefix("TRAINING_PHASE_").replace("_", " ").lower() or str(value)


def status_name(value: training_pb2.TrainingStatus.ValueType) -> str:
    """``TRAINING_STATUS_SUCCEEDED`` -> ``SUCCEEDED``."""
    return training_pb2.TrainingStatus.Name(value).removeprefix("TRAINING_STATUS_")


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclasses.dataclass
class Figures:
    """The latest known value of each field, carried from report to report."""

    loss: float | None = None
    train_accuracy: float | None = None
    validation_accuracy: float | None = None
    examples_per_second: float | None = None

    def update(self, progress: training_pb2.TrainingProgress) -> None:
        """Keep what this report knows."""
        for name in ("loss", "train_accuracy", "validation_accuracy"):
            if progress.HasField(name):
                setattr(self, name, getattr(progress, name))
        if progress.examples_per_second:
            self.examples_per_second = progress.examples_per_second


def format_line(
    percent: float,
    phase: str,
    epoch: int,
    total_epochs: int,
    step: int,
    total_steps: int,
    figures: Figures,
    eta_seconds: float | None,
) -> str:
    """One progress line: bar, percent, phase, epoch, step, loss, accuracies, speed, ETA."""
    done = int(BAR_WIDTH * min(max(percent, 0.0), 100.0) / 100)
    # Loading and saving have no epoch: "-" rather than "0/0".
    epochs = f"{epoch}/{total_epochs}" if total_epochs and epoch else "-"
    steps = f"{step}/{total_steps}" if total_steps else "-"
    speed = "-" if not figures.examples_per_second else f"{figures.examples_per_second:,.0f}"
    eta = "-" if eta_seconds is None else _duration(eta_seconds)
    return (
        f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {percent:5.1f}%  {phase:<{PHASE_WIDTH}}"
        f"  epoch {epochs:>5}  step {steps:>9}"
        f"  loss {_number(figures.loss, '.4f'):>6}"
        f"  acc {_number(figures.train_accuracy, '.3f'):>5}"
        f"  val_acc {_number(figures.validation_accuracy, '.3f'):>5}"
        f"  ex/s {speed:>6}  ETA {eta:>5}"
    )


def format_progress(progress: training_pb2.TrainingProgress, figures: Figures | None = None) -> str:
    """The line of one report (``figures``: the values known from earlier reports)."""
    if figures is None:
        figures = Figures()
    figures.update(progress)
    return format_line(
        progress.percent_complete,
        phase_name(progress.phase),
        progress.epoch,
        progress.total_epochs,
        progress.step,
        progress.total_steps,
        figures,
        progress.eta_seconds if progress.HasField("eta_seconds") else None,
    )


def summary_line(
    training_id: str, finished: training_pb2.TrainingFinished, seconds: float | None
) -> str:
    """The last line: status, accuracy, validation accuracy, loss, duration, version id."""
    status = status_name(finished.status)
    parts = [f"job {training_id} {status}"]
    metrics = finished.metrics
    if finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED:
        parts += [
            f"accuracy {metrics.accuracy:.3f}",
            f"val_acc {metrics.validation_accuracy:.3f}"
            if metrics.validation_examples
            else "val_acc -",
            f"loss {metrics.loss:.4f}",
        ]
    if seconds is None and metrics.duration_seconds:
        seconds = metrics.duration_seconds
    parts.append(f"duration {_duration(seconds) if seconds is not None else '-'}")
    if finished.version_id:
        parts.append(f"version {finished.version_id}")
    if finished.HasField("error") and finished.error.code:
        parts.append(f"{finished.error.code}: {finished.error.message}")
        if finished.error.hint:
            parts.append(f"hint: {finished.error.hint}")
    return "  ".join(parts)


class ProgressPrinter:
    """Prints a job's events: the accepted line, progress lines, 100% and a summary line.

    Args:
        stream: Where to write (standard error).
        enabled: False prints nothing (``--quiet``).
        live: Redraw one line in place (a terminal); default: whether ``stream`` is a terminal.
    """

    def __init__(self, stream: TextIO, *, enabled: bool = True, live: bool | None = None) -> None:
        self._stream = stream
        self._enabled = enabled
        self._live = stream.isatty() if live is None else live
        self._figures = Figures()
        self._pending: str | None = None
        self._pending_key: tuple[int, int] | None = None
        self._printed_key: tuple[int, int] | None = None
        self._printed_at = 0.0
        self._printed_line = ""
        self._drawn = False
        self._start: float | None = None
        self._last: training_pb2.TrainingProgress | None = None
        self.training_id = ""
        """The job's id, once an event named it."""

    def show(self, event: training_pb2.TrainingEvent) -> None:
        """Print one event."""
        if event.training_id:
            self.training_id = event.training_id
        kind = event.WhichOneof("kind")
        if kind == "accepted" and self._start is None:
            self._start = event.time.ToMicroseconds() / 1e6 if event.HasField("time") else None
        if not self._enabled:
            return
        if kind == "accepted":
            self._write_line(
                f"job {event.training_id} accepted: {event.accepted.example_count} examples,"
                f" {event.accepted.output_count} outputs"
            )
        elif kind == "progress":
            self._progress(event.progress)
        elif kind == "finished":
            self._finished(event)
        self._stream.flush()

    def _progress(self, progress: training_pb2.TrainingProgress) -> None:
        line = format_progress(progress, self._figures)
        if progress.total_steps:
            self._last = progress  # the last report with epochs and steps, for the 100% line
        if self._live:
            self._draw(line)
            return
        key = (progress.phase, progress.epoch)
        now = time.monotonic()
        new_phase = self._printed_key is None or progress.phase != self._printed_key[0]
        if new_phase or progress.HasField("validation_loss"):
            # A new phase shows at once (say what the job is doing); so does the report that
            # ends an epoch, with the epoch's figures (the earlier reports of it are dropped).
            if new_phase and self._pending_key != self._printed_key:
                self._flush_pending()  # an epoch not shown yet; a mere update of the shown is not
            self._print(line, key, now)
            return
        if key != self._printed_key and key != self._pending_key:
            self._flush_pending()  # the last report of the previous epoch
        self._pending, self._pending_key = line, key
        if now - self._printed_at >= QUIET_SECONDS:
            self._print(line, key, now)

    def _print(self, line: str, key: tuple[int, int], now: float) -> None:
        if line != self._printed_line:
            self._write_line(line)
            self._printed_line = line
        self._pending = self._pending_key = None
        self._printed_key = key
        self._printed_at = now

    def _flush_pending(self) -> None:
        if self._pending is not None:
            self._write_line(self._pending)
            self._pending = self._pending_key = None

    def _finished(self, event: training_pb2.TrainingEvent) -> None:
        finished = event.finished
        self._flush_pending()
        if finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED:
            metrics = finished.metrics
            self._figures.loss = metrics.loss
            self._figures.train_accuracy = metrics.accuracy
            # Without a held-out split there is no validation accuracy to state (the summary's).
            self._figures.validation_accuracy = (
                metrics.validation_accuracy if metrics.validation_examples else None
            )
            if metrics.examples_per_second:
                self._figures.examples_per_second = metrics.examples_per_second
            last = self._last
            epochs = metrics.epochs_run or (last.epoch if last else 0)
            total_epochs = last.total_epochs if last and last.total_epochs else epochs
            total_steps = last.total_steps if last else 0
            steps = last.step if last and last.step else total_steps
            line = format_line(
                100.0, DONE, epochs, total_epochs, steps, total_steps, self._figures, 0.0
            )
            if self._live:
                self._draw(line)
            else:
                self._write_line(line)
        seconds = None
        if self._start is not None and event.HasField("time"):
            seconds = max(0.0, event.time.ToMicroseconds() / 1e6 - self._start)
        self._write_line(summary_line(self.training_id, finished, seconds))

    def _draw(self, line: str) -> None:
        self._stream.write("\r" + line + "\033[K")
        self._drawn = True

    def _write_line(self, line: str) -> None:
        if self._drawn:  # end the line drawn in place first
            self._stream.write("\n")
            self._drawn = False
        self._stream.write(line + "\n")

    def close(self) -> None:
        """End the output (a line drawn in place ends; a pending line is printed)."""
        if not self._enabled:
            return
        self._flush_pending()
        if self._drawn:
            self._stream.write("\n")
            self._drawn = False
        self._stream.flush()


class StatusLine:
    """A one-line status (``generated 200/1000``).

    On a terminal it is redrawn in place; elsewhere it is a line every ten seconds at most, and
    the last one at the end.
    """

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self._stream = stream
        self._enabled = enabled
        self._live = stream.isatty()
        self._text: str | None = None
        self._printed: str | None = None
        self._printed_at = time.monotonic()

    def update(self, text: str) -> None:
        """Show the current status."""
        if not self._enabled:
            return
        self._text = text
        if self._live:
            self._stream.write("\r" + text + "\033[K")
            self._stream.flush()
        elif time.monotonic() - self._printed_at >= QUIET_SECONDS:
            self._line(text)

    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()
        self._printed = text
        self._printed_at = time.monotonic()

    def close(self) -> None:
        """End the line (on a terminal) or print the last status (elsewhere)."""
        if not self._enabled or self._text is None:
            return
        if self._live:
            self._stream.write("\n")
            self._stream.flush()
        elif self._printed != self._text:
            self._line(self._text)

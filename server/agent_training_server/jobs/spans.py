"""Spans for a job's phases and epochs, drawn from the engine's progress reports.

Engines know nothing of tracing: they report progress. Each report names its phase
(``loading_data``, ``training``, ``evaluating``, ``saving``) and epoch, and the report that ends
an epoch carries its validation figures. That is enough to open a span when a phase or an epoch
begins and to end it, with its figures as attributes, when the next one begins.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace

from agent_training_server.engines.base import Progress

EPOCH_FIGURES = ("loss", "train_accuracy", "validation_loss", "validation_accuracy")


class PhaseSpans:
    """Opens and ends ``training.phase`` and ``training.epoch`` spans as progress arrives."""

    def __init__(self, tracer: trace.Tracer, attributes: dict[str, Any]) -> None:
        self._tracer = tracer
        self._attributes = attributes
        self._phase: str = ""
        self._phase_span: trace.Span | None = None
        self._epoch_span: trace.Span | None = None
        self._epoch = 0
        self._epoch_start_ns = 0
        """When the next epoch begins: the end of the previous one, or of the phase start."""

    def observe(self, update: Progress) -> None:
        """Account for one progress report."""
        if update.phase != self._phase:
            self._end_epoch()
            self._end_phase()
            self._start_phase(update.phase)
        if update.phase == "training" and update.epoch > 0:
            self._observe_epoch(update)

    def close(self) -> None:
        """End whatever is still open (the job ended, failed or was cancelled)."""
        self._end_epoch()
        self._end_phase()

    def _start_phase(self, phase: str) -> None:
        self._phase = phase
        parent = trace.set_span_in_context(trace.get_current_span())
        self._phase_span = self._tracer.start_span(
            f"training.phase {phase}",
            context=parent,
            attributes={**self._attributes, "training.phase": phase},
        )
        self._epoch_start_ns = time.time_ns()

    def _observe_epoch(self, update: Progress) -> None:
        if self._epoch_span is not None and update.epoch != self._epoch:
            self._end_epoch()  # an engine that reports no figures at an epoch's end
        if self._epoch_span is None:
            self._epoch = update.epoch
            assert self._phase_span is not None
            self._epoch_span = self._tracer.start_span(
                "training.epoch",
                context=trace.set_span_in_context(self._phase_span),
                start_time=self._epoch_start_ns,
                attributes={
                    **self._attributes,
                    "training.epoch": update.epoch,
                    "training.total_epochs": update.total_epochs,
                },
            )
        if update.validation_loss is not None:  # the report that ends the epoch
            for name in EPOCH_FIGURES:
                value = getattr(update, name)
                if value is not None:
                    self._epoch_span.set_attribute(f"training.{name}", float(value))
            if update.examples_per_second:
                self._epoch_span.set_attribute(
                    "training.examples_per_second", float(update.examples_per_second)
                )
            self._end_epoch()

    def _end_epoch(self) -> None:
        if self._epoch_span is not None:
            self._epoch_span.end()
            self._epoch_span = None
            self._epoch_start_ns = time.time_ns()

    def _end_phase(self) -> None:
        if self._phase_span is not None:
            self._phase_span.end()
            self._phase_span = None

"""The generation loop: balanced rounds over a source's units, duplicate removal, mining, chunks.

Each round asks every active unit (intent or label) for one new example, so the counts per unit
never differ by more than one. A unit that yields only duplicates `patience` times in a row has
run out of distinct sentences: generation then stops after that round and reports the shortfall
(with hard-example mining, the unit is dropped instead and the others go on).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from agent_training_server.synthetic.dedup import Deduplicator, DuplicateCounts
from agent_training_server.synthetic.sources import Sample

DUPLICATE_PATIENCE = 300
"""Duplicates in a row after which a unit counts as out of distinct sentences."""

MINING_PATIENCE = 200
"""Candidates in a row that the target agent answers well, after which mining drops a unit."""

BATCH_TARGET = 4096
"""Candidates made and checked together (duplicate removal is vectorised over a batch)."""

REFILL_BELOW = 16
"""When a unit's queue runs dry, units with fewer than this many examples queued are refilled in
the same batch: one large batch costs far less than many small ones (numpy's per-call cost)."""


_LABEL = operator.attrgetter("label")


class Source(Protocol):
    """What the pipeline needs of a source (see sources.py)."""

    units: Sequence[str]

    def candidates(self, unit: int, count: int) -> list[Sample]:
        """The next `count` candidate examples for `unit`."""
        ...


Accept = Callable[[list[Sample]], list[bool]]
"""Mining filter: for each candidate, whether it is hard enough to keep."""

Finish = Callable[[list[Sample]], list[Sample]]
"""Last step on each chunk, e.g. the simulated agent answering (feedback_logs)."""


@dataclasses.dataclass
class Summary:
    """What a generation produced."""

    requested: int
    generated: int = 0
    shortfall_reason: str = ""
    candidates_tried: int = 0
    duplicates: DuplicateCounts = dataclasses.field(default_factory=DuplicateCounts)
    target_tried: int = 0
    target_passed: int = 0
    label_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def target_pass_rate(self) -> float | None:
        """Share of mined candidates the target agent answered well; None without mining."""
        return self.target_passed / self.target_tried if self.target_tried else None


class Generation:
    """One generation run; iterate `chunks()` once, then read `summary`."""

    def __init__(
        self,
        source: Source,
        count: int,
        *,
        accept: Accept | None = None,
        finish: Finish | None = None,
        seen: Sequence[str] = (),
    ) -> None:
        self._source = source
        self._count = count
        self._accept = accept
        self._finish = finish
        self._dedup = Deduplicator(count + len(seen))
        for text in seen:
            # A rewrite equal to a source (up to case and punctuation) adds nothing; one a word
            # away from its source is what paraphrasing is for, so near duplicates are only
            # checked among the generated examples.
            self._dedup.remember(text)
        self.summary = Summary(requested=count, duplicates=self._dedup.counts)
        units = len(source.units)
        self._queues: list[collections.deque[Sample]] = [collections.deque() for _ in range(units)]
        self._duplicates_in_a_row = [0] * units
        self._easy_in_a_row = [0] * units

    def chunks(self, chunk_size: int) -> Iterator[list[Sample]]:
        """The examples, `chunk_size` at a time (the last chunk may be shorter)."""
        chunk: list[Sample] = []
        for round_samples in self._rounds():
            chunk.extend(round_samples)
            while len(chunk) >= chunk_size:
                yield self._finished(chunk[:chunk_size])
                chunk = chunk[chunk_size:]
        if chunk:
            yield self._finished(chunk)

    def _finished(self, samples: list[Sample]) -> list[Sample]:
        samples = self._finish(samples) if self._finish else samples
        self.summary.generated += len(samples)
        self.summary.label_counts.update(map(_LABEL, samples))
        return samples

    def _rounds(self) -> Iterator[list[Sample]]:
        active = list(range(len(self._source.units)))
        produced = 0
        while produced < self._count and active:
            wanted = active[: self._count - produced]
            exhausted = self._fill(wanted)
            samples = [self._queues[unit].popleft() for unit in wanted if self._queues[unit]]
            produced += len(samples)
            yield samples
            if exhausted:
                names = ", ".join(repr(self._source.units[unit]) for unit in exhausted[:5])
                if self._accept is None:
                    self.summary.shortfall_reason = (
                        f"{names} ran out of distinct examples after {produced} in all "
                        f"({DUPLICATE_PATIENCE} duplicates in a row); intents stay balanced, so "
                        "generation stopped. More topics, a harder difficulty or a larger "
                        "grammar give more distinct examples."
                    )
                    return
                active = [unit for unit in active if unit not in exhausted]
                if not active:
                    self.summary.shortfall_reason = (
                        f"the target agent answered every candidate of the remaining intents "
                        f"well (last: {names}); no harder examples were found"
                    )
        if produced < self._count and not self.summary.shortfall_reason:
            self.summary.shortfall_reason = "the source has no units to generate from"

    def _fill(self, units: list[int]) -> list[int]:
        """Queue at least one new example for each unit; return the units that ran out.

        Candidates are made and checked a batch at a time (several per unit when there are few
        units, and for every unit running low, not only the empty ones), which is what makes
        duplicate removal cheap; extras wait in the unit's queue.
        """
        exhausted: list[int] = []
        if all(map(self._queues.__getitem__, units)):
            return exhausted
        waiting = [unit for unit in units if len(self._queues[unit]) < REFILL_BELOW]
        per_unit = max(1, min(64, BATCH_TARGET // len(waiting)))
        candidates = self._source.candidates
        while waiting:
            batch = [sample for unit in waiting for sample in candidates(unit, per_unit)]
            self.summary.candidates_tried += len(batch)
            distinct = self._dedup.keep([sample.input for sample in batch])
            verdicts = distinct if self._accept is None else self._mine(batch, distinct)
            still = []
            for position, unit in enumerate(waiting):
                start = position * per_unit
                self._take(
                    unit, batch[start : start + per_unit], verdicts[start : start + per_unit]
                )
                if self._queues[unit]:
                    continue  # queued now, or topped up while it still had some
                if (
                    self._duplicates_in_a_row[unit] >= DUPLICATE_PATIENCE
                    or self._easy_in_a_row[unit] >= MINING_PATIENCE
                ):
                    exhausted.append(unit)
                else:
                    still.append(unit)
            waiting = still
        return exhausted

    def _take(self, unit: int, samples: list[Sample], verdicts: Sequence[bool | None]) -> None:
        """Queue a unit's kept candidates; update its counts of failures in a row.

        A verdict is True (kept), False (a duplicate) or None (mining: distinct but too easy).
        """
        queue = self._queues[unit]
        if self._accept is None:
            # No mining: every verdict is True or False, so whole runs can be counted at once.
            queue.extend(itertools.compress(samples, verdicts))
            if True in verdicts:
                last_kept = len(verdicts) - 1 - verdicts[::-1].index(True)
                self._duplicates_in_a_row[unit] = len(verdicts) - 1 - last_kept
            else:
                self._duplicates_in_a_row[unit] += len(verdicts)
            return
        for sample, verdict in zip(samples, verdicts, strict=True):
            if verdict:
                queue.append(sample)
                self._duplicates_in_a_row[unit] = self._easy_in_a_row[unit] = 0
            elif verdict is None:
                self._duplicates_in_a_row[unit] = 0
                self._easy_in_a_row[unit] += 1
            else:
                self._duplicates_in_a_row[unit] += 1

    def _mine(self, batch: list[Sample], distinct: list[bool]) -> list[bool | None]:
        """Ask the target agent about the distinct candidates: None marks the too easy ones."""
        assert self._accept is not None
        fresh = [sample for sample, keep in zip(batch, distinct, strict=True) if keep]
        verdicts = iter(self._accept(fresh) if fresh else [])
        self.summary.target_tried += len(fresh)
        result: list[bool | None] = []
        for keep in distinct:
            hard = next(verdicts) if keep else False
            if keep and not hard:
                self.summary.target_passed += 1
            result.append(True if hard else (None if keep else False))
        return result

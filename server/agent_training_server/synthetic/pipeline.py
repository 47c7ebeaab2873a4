"""The generation loop: balanced rounds over a source's units, duplicate removal, mining, chunks.

Each round asks every active unit (intent or label) for one new example, so the counts per unit
never differ by more than one. A unit that yields only duplicates `patience` times in a row has
run out of distinct sentences: generation then stops after that round and reports the shortfall
(with hard-example mining, the unit is dropped instead and the others go on).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from agent_training_server.synthetic.dedup import Deduplicator, DuplicateCounts
from agent_training_server.synthetic.sources import Sample

DUPLICATE_PATIENCE = 300
"""Duplicates in a row after which a unit counts as out of distinct sentences."""

MINING_PATIENCE = 40
"""Mining attempts per round after which a unit the target agent always answers well is dropped."""


class Source(Protocol):
    """What the pipeline needs of a source (see sources.py)."""

    units: Sequence[str]

    def candidate(self, unit: int) -> Sample:
        """One candidate example for `unit`."""
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
        self.summary.label_counts.update(sample.label for sample in samples)
        return samples

    def _rounds(self) -> Iterator[list[Sample]]:
        active = list(range(len(self._source.units)))
        produced = 0
        while produced < self._count and active:
            wanted = active[: self._count - produced]
            samples, exhausted = self._round(wanted)
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

    def _round(self, units: list[int]) -> tuple[list[Sample], list[int]]:
        """One new example per unit (fewer when units run out); returns (samples, exhausted)."""
        if self._accept is None:
            samples, exhausted = [], []
            for unit in units:
                sample = self._distinct(unit)
                if sample is None:
                    exhausted.append(unit)
                else:
                    samples.append(sample)
            return samples, exhausted
        return self._mined_round(units)

    def _mined_round(self, units: list[int]) -> tuple[list[Sample], list[int]]:
        assert self._accept is not None
        found: dict[int, Sample] = {}
        waiting = list(units)
        exhausted: list[int] = []
        for _attempt in range(MINING_PATIENCE):
            candidates: list[tuple[int, Sample]] = []
            for unit in waiting:
                sample = self._distinct(unit)
                if sample is None:
                    exhausted.append(unit)
                else:
                    candidates.append((unit, sample))
            if not candidates:
                break
            verdicts = self._accept([sample for _unit, sample in candidates])
            self.summary.target_tried += len(candidates)
            self.summary.target_passed += verdicts.count(False)
            for (unit, sample), hard in zip(candidates, verdicts, strict=True):
                if hard:
                    found[unit] = sample
            waiting = [unit for unit, _sample in candidates if unit not in found]
            if not waiting:
                break
        exhausted += waiting
        return [found[unit] for unit in units if unit in found], exhausted

    def _distinct(self, unit: int) -> Sample | None:
        """A candidate for `unit` that is no duplicate, or None after DUPLICATE_PATIENCE tries."""
        candidate = self._source.candidate
        keep = self._dedup.keep_one
        for _ in range(DUPLICATE_PATIENCE):
            sample = candidate(unit)
            self.summary.candidates_tried += 1
            if keep(sample.input):
                return sample
        return None

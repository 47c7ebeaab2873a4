"""The phases engines report, in the order a person watching the progress sees them."""

from __future__ import annotations

from pathlib import Path

from agent_training_server.engines import registry
from agent_training_server.engines.base import Example
from agent_training_server.engines.defaults import defaults_for
from tests.engines.test_supervised import Recorder


def _phases(reporter: Recorder) -> list[str]:
    phases: list[str] = []
    for update in reporter.updates:
        if not phases or phases[-1] != update.phase:
            phases.append(update.phase)
    return phases


def test_few_shot_says_it_loads_the_encoder_between_the_data_and_the_first_epoch(
    tmp_path: Path,
) -> None:
    examples = [
        Example("where is my new card", "card_arrival"),
        Example("my card has not arrived yet", "card_arrival"),
        Example("my top up did not go through", "top_up_failed"),
        Example("the top-up failed", "top_up_failed"),
    ]
    reporter = Recorder()
    registry.get_engine("few_shot").train(
        examples, defaults_for("few_shot"), reporter, tmp_path / "work"
    )
    assert _phases(reporter) == ["loading_data", "loading_encoder", "training", "evaluating"]


def test_supervised_has_no_encoder_phase(tmp_path: Path) -> None:
    examples = [Example(f"card {i}", "card_arrival") for i in range(5)]
    examples += [Example(f"top up {i}", "top_up_failed") for i in range(5)]
    reporter = Recorder()
    registry.get_engine("supervised").train(
        examples, defaults_for("supervised"), reporter, tmp_path / "work"
    )
    assert _phases(reporter) == ["loading_data", "training", "evaluating"]

"""The one checker of training examples, for every path that takes them.

TrainAgent's inline examples and a stored dataset's, UploadDataset's chunks, the source examples
of a generation and AnalyzeAndOptimize's evaluation set are all checked here, field by field,
with the same rules and the same cap on how many violations are listed (`Checker.full`): a
request with a million bad examples gets a short answer, found quickly. The paradigms' rules
(what few_shot takes, what a job that extends a version may add) are here too, so the api layer
and the training service ask one owner.

The examples may be contract messages (`TrainingExample`) or engine examples (`Example`):
anything with their four fields.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from typing import Protocol

from agent_training_server.checks import Checker
from agent_training_server.config import ServerConfig

FEEDBACK_WORDS = ("correct", "incorrect")
FEW_SHOT_MAX_PER_OUTPUT = 20
"""Most examples of one output few_shot takes; larger sets train better supervised."""


class ExampleFields(Protocol):
    """What the checks read of an example (a TrainingExample message or an engine Example)."""

    @property
    def input(self) -> str:
        """The text the agent is given."""
        ...

    @property
    def expected_output(self) -> str:
        """The output it should give (or gave, for a logged interaction)."""
        ...

    @property
    def context(self) -> Sequence[str]:
        """Earlier conversation turns."""
        ...

    @property
    def feedback(self) -> str:
        """Empty, "correct", "incorrect" or a reward in [-1, 1] as text."""
        ...


def check_feedback(checker: Checker, field: str, feedback: str, *, required: bool) -> None:
    """Check a feedback value: correct, incorrect, or a reward in [-1, 1]."""
    if not feedback:
        if required:
            checker.add(field, "is required: 'correct', 'incorrect' or a number in [-1, 1]")
        return
    if feedback.strip().lower() in FEEDBACK_WORDS:
        return
    try:
        reward = float(feedback)
    except ValueError:
        checker.add(field, f"{feedback[:40]!r} is not 'correct', 'incorrect' or a number")
        return
    checker.number(field, reward, low=-1, high=1)


def is_negative_feedback(feedback: str) -> bool:
    """Whether feedback says the output was wrong ("incorrect" or a negative reward)."""
    text = feedback.strip().lower()
    if text == "incorrect":
        return True
    try:
        return float(text) < 0
    except ValueError:
        return False


def check_example_fields(
    checker: Checker,
    field: str,
    examples: Iterable[ExampleFields],
    server: ServerConfig,
    *,
    first_index: int = 0,
    feedback_required: bool = False,
) -> None:
    """Check each example's texts and feedback; stop scanning once the checker is full.

    `field` names the repeated field ("training_data"); `first_index` is the position of the
    first example in it (an upload's later chunks start further on).
    """
    for index, example in enumerate(examples, start=first_index):
        path = f"{field}[{index}]"
        checker.text(f"{path}.input", example.input, server.max_text_length, required=True)
        checker.text(
            f"{path}.expected_output",
            example.expected_output,
            server.max_text_length,
            required=True,
        )
        checker.texts(
            f"{path}.context", example.context, server.max_context_turns, server.max_text_length
        )
        check_feedback(checker, f"{path}.feedback", example.feedback, required=feedback_required)
        if checker.full:  # enough to act on; stop scanning a huge request
            return


def check_training_examples(
    checker: Checker,
    examples: Sequence[ExampleFields],
    server: ServerConfig,
    *,
    max_examples: int,
    labelled: bool,
    few_shot: bool = False,
) -> None:
    """Check a training job's examples (`training_data`): their number, each one, and the set.

    ``labelled`` paradigms learn expected_output as the target; reinforcement learns from the
    reward alone, so each of its interactions needs feedback.
    """
    if not examples:
        checker.add("training_data", "is required: give at least one example per output")
        return
    if len(examples) > max_examples:
        checker.add(
            "training_data",
            f"has {len(examples)} examples; at most {max_examples} are allowed per request",
        )
        return
    check_example_fields(checker, "training_data", examples, server, feedback_required=not labelled)
    if checker.full:
        return
    taught_counts = collections.Counter(
        e.expected_output for e in examples if not is_negative_feedback(e.feedback)
    )
    if few_shot and taught_counts and max(taught_counts.values()) > FEW_SHOT_MAX_PER_OUTPUT:
        output, count = taught_counts.most_common(1)[0]
        checker.add(
            "training_data",
            f"few_shot takes 1 to {FEW_SHOT_MAX_PER_OUTPUT} examples"
            f" per output; {output[:60]!r} has {count}: use TRAINING_TYPE_SUPERVISED or"
            " TRAINING_TYPE_TRANSFER for larger sets",
        )
    if not taught_counts and labelled and not few_shot and not checker.violations:
        checker.add(
            "training_data",
            "teaches no output; an agent needs at least 1 (examples marked incorrect are not"
            " taught)",
        )
    outputs = {e.expected_output for e in examples}
    if len(outputs) > server.max_outputs_per_agent:
        checker.add(
            "training_data",
            f"has {len(outputs)} distinct outputs; at most"
            f" {server.max_outputs_per_agent} are allowed per agent",
        )


def check_few_shot_outputs(examples: Sequence[ExampleFields], extends_a_version: bool) -> None:
    """few_shot may teach a single new output only when it extends a few_shot version."""
    taught = {e.expected_output for e in examples if not is_negative_feedback(e.feedback)}
    if len(taught) >= 2 or extends_a_version:
        return
    checker = Checker()
    checker.add(
        "training_data",
        f"teaches {len(taught)} distinct output(s); few_shot needs at"
        " least 2, or an agent whose active version was trained with few_shot to extend",
    )
    checker.raise_if_any()


def check_extended_outputs(
    examples: Sequence[ExampleFields], existing: Sequence[str], max_outputs: int
) -> None:
    """A job that extends a version keeps its outputs: together they stay within the limit."""
    outputs = set(existing) | {e.expected_output for e in examples}
    if len(outputs) <= max_outputs:
        return
    checker = Checker()
    checker.add(
        "training_data",
        f"would give the agent {len(outputs)} distinct outputs (its active version has"
        f" {len(set(existing))}); at most {max_outputs} are allowed per agent",
    )
    checker.raise_if_any()

"""Out-of-scope detection measured and tuned, over a real channel.

AnalyzeAndOptimize's out-of-scope section is recomputed from InvokeAgent's answers; the
maximize_oos_recall goal's threshold, applied, keeps its share of in-scope inputs answered;
AdaptAgentBehavior's `oos_recall` target moves the out-of-scope threshold, measured on the
held-out split of a supervised agent trained with negatives (a share of them is held out);
settings that cannot be served are refused with a hint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from agent_training.v1 import adaptation_pb2, analysis_pb2, synthetic_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server.analysis import metrics, optimize
from agent_training_server.engines import negatives
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_analysis import banking_test_examples, trained
from tests.test_training import INTENTS, banking_examples

FALLBACK = "fallback"
GOAL = analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_OOS_RECALL
THRESHOLD = adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD
CONSERVATIVE = adaptation_pb2.ADAPTATION_STRATEGY_CONSERVATIVE
RETENTION = 0.9
OFF_TOPIC = [
    "what's the weather like in paris tomorrow",
    "will it rain this weekend",
    "is it going to snow in december",
    "who won the football match last night",
    "when does the tennis final start",
    "how many goals did the striker score this season",
    "what time does the basketball game begin",
    "give me a recipe for banana bread",
    "how long should i boil an egg",
    "what can i cook with chicken and rice",
    "how do i make pancakes without eggs",
    "recommend a good pasta sauce",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("out_of_scope"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=300) as made:
        yield made


@pytest.fixture(scope="module")
def few_shot(client: AgentTrainingClient) -> str:
    client.create_agent(agent_id="oos-few-shot")
    events = list(
        client.train_agent(
            agent_id="oos-few-shot",
            training_data=banking_examples(INTENTS, per_intent=5),
            training_type=training_pb2.TRAINING_TYPE_FEW_SHOT,
            timeout=300,
        )
    )
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    return "oos-few-shot"


@pytest.fixture(scope="module")
def supervised(client: AgentTrainingClient) -> str:
    # A confidence threshold, so that the fallback already catches some inputs.
    trained(client, "oos-supervised", confidence_threshold=0.3)
    return "oos-supervised"


def evaluation_data() -> list[training_pb2.TrainingExample]:
    """Banking examples of the trained intents, and a dozen off-topic messages."""
    off_topic = [training_pb2.TrainingExample(input=t, expected_output=FALLBACK) for t in OFF_TOPIC]
    return [*banking_test_examples(per_intent=8), *off_topic]


def recomputed(client: AgentTrainingClient, agent_id: str, version_id: str = "", data=None) -> dict:
    """The out-of-scope figures, from InvokeAgent's answers to ``data`` (the evaluation data)."""
    data = data or evaluation_data()
    answers = client.invoke_agent(
        agent_id=agent_id, inputs=[e.input for e in data], version_id=version_id
    ).predictions
    expected = np.array([e.expected_output for e in data])
    outside = expected == FALLBACK
    scores = np.array([a.out_of_scope_score for a in answers])
    flagged = np.array([a.is_fallback or a.output == FALLBACK for a in answers])
    right = np.array([a.output for a in answers]) == expected
    pairs = [(o > i) + 0.5 * (o == i) for o in scores[outside] for i in scores[~outside]]
    return {
        "out_of_scope_count": int(outside.sum()),
        "in_scope_count": int((~outside).sum()),
        "auroc": float(np.mean(pairs)),
        "recall": float(flagged[outside].mean()),
        "precision": float(outside[flagged].mean()) if flagged.any() else 0.0,
        "in_scope_accuracy": float((right & ~flagged)[~outside].mean()),
        "in_scope_coverage": float((~flagged)[~outside].mean()),
    }


FIGURES = (
    "out_of_scope_count",
    "in_scope_count",
    "auroc",
    "recall",
    "precision",
    "in_scope_accuracy",
    "in_scope_coverage",
)


def assert_agrees(section: analysis_pb2.OutOfScopeAnalysis, expected: dict) -> None:
    assert {name: getattr(section, name) for name in FIGURES} == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("agent", ["few_shot", "supervised"])
def test_the_section_agrees_with_invoke_agent_answers(client, request, agent) -> None:
    agent_id = request.getfixturevalue(agent)
    response = client.analyze_and_optimize(agent_id=agent_id, evaluation_data=evaluation_data())
    section = response.analysis.out_of_scope
    assert response.analysis.HasField("out_of_scope")
    figures = recomputed(client, agent_id)
    assert_agrees(section, figures)
    assert figures["out_of_scope_count"] == len(OFF_TOPIC)
    assert section.auroc > 0.7, section  # off-topic messages score higher than banking ones
    behavior = client.get_agent(agent_id).default_behavior
    assert section.confidence_threshold == behavior.confidence_threshold
    assert section.out_of_scope_threshold == 1.0  # off


def test_the_section_is_absent_without_out_of_scope_examples(client, supervised) -> None:
    response = client.analyze_and_optimize(
        agent_id=supervised, evaluation_data=banking_test_examples(per_intent=4)
    )
    assert not response.analysis.HasField("out_of_scope")
    assert response.analysis.example_count == 20


def test_the_goal_threshold_applied_keeps_the_target_share_answered(client, few_shot) -> None:
    response = client.analyze_and_optimize(
        agent_id=few_shot,
        evaluation_data=evaluation_data(),
        optimization_goals=[GOAL],
        target_in_scope_retention=RETENTION,
    )
    (suggestion,) = response.suggestions
    assert suggestion.goal == GOAL and suggestion.applicable, suggestion
    assert suggestion.before["out_of_scope_threshold"] == 1.0
    assert suggestion.before["out_of_scope_recall"] == response.analysis.out_of_scope.recall
    threshold = suggestion.after["out_of_scope_threshold"]
    assert 0.0 < threshold < 1.0
    assert suggestion.after["in_scope_coverage"] >= RETENTION
    assert suggestion.after["out_of_scope_recall"] > suggestion.before["out_of_scope_recall"]

    applied = client.analyze_and_optimize(
        agent_id=few_shot, apply_suggestion_id=suggestion.suggestion_id
    ).applied_version
    assert applied.behavior.out_of_scope_threshold == threshold
    assert client.get_agent(few_shot).active_version_id != applied.version_id  # not activated
    figures = recomputed(client, few_shot, applied.version_id)
    assert figures["in_scope_coverage"] >= RETENTION  # really keeps the share answered
    assert figures["recall"] == pytest.approx(suggestion.after["out_of_scope_recall"], abs=1e-9)
    assert figures["precision"] == pytest.approx(
        suggestion.after["out_of_scope_precision"], abs=1e-9
    )
    assert figures["in_scope_accuracy"] == pytest.approx(
        suggestion.after["in_scope_accuracy"], abs=1e-9
    )
    assert figures["in_scope_coverage"] == pytest.approx(
        suggestion.after["in_scope_coverage"], abs=1e-9
    )
    # The applied version's own analysis measures at its threshold, as its answers show.
    again = client.analyze_and_optimize(
        agent_id=few_shot, version_id=applied.version_id, evaluation_data=evaluation_data()
    ).analysis.out_of_scope
    assert again.out_of_scope_threshold == threshold
    assert_agrees(again, figures)

    # Unset, the target is 0.95: a threshold no lower, answering at least as many.
    default = client.analyze_and_optimize(
        agent_id=few_shot, evaluation_data=evaluation_data(), optimization_goals=[GOAL]
    ).suggestions[0]
    assert default.after["in_scope_coverage"] >= 0.95
    assert default.after["out_of_scope_threshold"] >= threshold


@pytest.mark.parametrize("retention", [0.3, 1.5, float("nan")])
def test_a_retention_outside_its_range_is_refused_with_a_hint(client, retention) -> None:
    error = expect_error(
        client.analyze_and_optimize,
        agent_id="oos-few-shot",
        evaluation_data=evaluation_data(),
        optimization_goals=[GOAL],
        target_in_scope_retention=retention,
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    fields = {v.field: v.description for v in error.field_violations}
    assert "[0.5, 1]" in fields["target_in_scope_retention"], fields


def test_the_goal_without_out_of_scope_examples_is_refused_with_a_hint(client, supervised) -> None:
    error = expect_error(
        client.analyze_and_optimize,
        agent_id=supervised,
        evaluation_data=banking_test_examples(per_intent=4),
        optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_IMPROVE_CALIBRATION, GOAL],
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in error.field_violations] == ["optimization_goals[1]"]
    assert "fallback output" in error.hint and "evaluation data" in error.hint


@pytest.mark.parametrize("agent", ["few_shot", "supervised"])
def test_an_oos_recall_target_without_out_of_scope_examples_is_refused_with_a_hint(
    client, request, agent
) -> None:
    # few_shot: no held-out split at all; supervised: one without fallback-labelled examples.
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id=request.getfixturevalue(agent),
        performance_metrics={"success_rate": 0.9},
        adaptation_strategy=THRESHOLD,
        targets={"oos_recall": 0.8},
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in error.field_violations] == ["targets['oos_recall']"]
    assert "AnalyzeAndOptimize" in error.hint and "fallback output" in error.hint


def held_out_split(data: list[training_pb2.TrainingExample]) -> list[training_pb2.TrainingExample]:
    """The validation split a job with the default seed and validation_split holds out."""
    outputs = sorted({e.expected_output for e in data} - {FALLBACK})
    labels = negatives.labels_of([e.expected_output for e in data], outputs, FALLBACK)
    _train, valid = negatives.split(labels, 0.1, 0)
    return [data[i] for i in valid]


def test_an_oos_recall_target_moves_the_out_of_scope_threshold(client) -> None:
    """Measured on the held-out split, which holds a share of the negatives trained with."""
    generated = client.generate_synthetic_training_data(
        data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_OUT_OF_SCOPE, count=60
    )
    training = [*banking_examples(), *(e.example for m in generated for e in m.examples)]
    trained(client, "oos-adapted", data=training, confidence_threshold=0.3)
    data = held_out_split(training)
    assert sum(e.expected_output == FALLBACK for e in data) == 6
    target = 0.75

    def adapt(strategy, dry_run=False):
        return client.adapt_agent_behavior(
            agent_id="oos-adapted",
            performance_metrics={"success_rate": 0.9},
            adaptation_strategy=strategy,
            targets={"oos_recall": target},
            dry_run=dry_run,
        )

    bounded = adapt(CONSERVATIVE, dry_run=True)
    (change,) = bounded.changes
    assert change.setting == "out_of_scope_threshold"
    assert (change.old_value, change.new_value) == ("1", "0.95")  # n-gram scores are at most 0.8
    assert "step bounded to 0.05" in change.reason and not bounded.HasField("version")

    moved = adapt(THRESHOLD)
    (change,) = moved.changes
    behavior = moved.version.behavior
    assert change.setting == "out_of_scope_threshold"
    assert behavior.confidence_threshold == 0.3  # untouched
    threshold = behavior.out_of_scope_threshold
    # Recomputed from the answers: the highest threshold whose recall meets the target.
    answers = client.invoke_agent(
        agent_id="oos-adapted", inputs=[e.input for e in data], version_id=moved.previous_version_id
    ).predictions
    outside = np.array([e.expected_output == FALLBACK for e in data])
    scores = np.array([a.out_of_scope_score for a in answers])
    unsure = np.array([a.is_fallback for a in answers])

    def recall(at: float) -> float:
        return float((unsure | (scores > at))[outside].mean())

    assert recall(threshold) >= target
    assert recall(float(scores[scores > threshold].min())) < target
    figures = recomputed(client, "oos-adapted", moved.version.version_id, data)
    assert figures["recall"] == pytest.approx(change.evidence["oos_recall"], abs=1e-9)
    assert figures["precision"] == pytest.approx(change.evidence["oos_precision"], abs=1e-9)
    assert figures["in_scope_coverage"] == pytest.approx(
        change.evidence["in_scope_coverage"], abs=1e-9
    )
    assert figures["in_scope_accuracy"] == pytest.approx(
        change.evidence["in_scope_accuracy"], abs=1e-9
    )
    assert change.evidence["target_oos_recall"] == target
    assert not adapt(THRESHOLD, dry_run=True).changes  # reached: asked again, it stays


def rows_of(seed: int) -> metrics.OutOfScopeRows:
    """Random answers with many tied scores; about a third out of scope."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(4, 40))
    outside = rng.random(count) < 0.35
    outside[:2] = [True, False]
    expected = [FALLBACK if o else str(rng.choice(["a", "b"])) for o in outside]
    probabilities = rng.dirichlet([1.0, 1.0, 0.3], count)
    scores = np.round(rng.random(count), 1)
    return metrics.OutOfScopeRows.of(
        expected, ["a", "b", FALLBACK], probabilities, scores, FALLBACK
    )


@pytest.mark.parametrize("seed", range(40))
def test_thresholds_are_the_extreme_ones_meeting_their_target(seed: int) -> None:
    rows = rows_of(seed)
    confidence = 0.0 if seed % 2 else 0.4
    outside = rows.out_of_scope
    pairs = [(o > i) + 0.5 * (o == i) for o in rows.scores[outside] for i in rows.scores[~outside]]
    assert metrics.auroc(rows.scores, outside) == pytest.approx(np.mean(pairs), abs=1e-12)
    distinct = np.unique(rows.scores)

    def measured(threshold: float) -> metrics.OutOfScope:
        result = metrics.out_of_scope(rows, confidence, threshold)
        assert result is not None
        return result

    for retention in (0.5, 0.8, 0.95, 1.0):
        threshold = optimize.retention_threshold(rows, confidence, retention)
        if threshold is None:  # the confidence threshold alone answers fewer
            assert measured(math.inf).in_scope_coverage < retention
            continue
        assert measured(threshold).in_scope_coverage >= retention
        lower = distinct[distinct < threshold]
        if len(lower):  # the lowest: one score lower and the share is lost
            assert measured(float(lower.max()) - 1e-9).in_scope_coverage < retention
    for recall in (0.0, 0.3, 0.7, 1.0):
        threshold, reached = optimize.recall_threshold(rows, confidence, recall)
        if not reached:
            assert threshold == 0.0 and measured(0.0).recall < recall
            continue
        assert measured(threshold).recall >= recall
        higher = distinct[distinct > threshold]
        if len(higher) and threshold < 1.0:  # the highest: one score higher and it is missed
            assert measured(float(higher.min())).recall < recall

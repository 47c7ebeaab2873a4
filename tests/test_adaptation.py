"""AdaptAgentBehavior over a real channel: each strategy's changes and reasons, dry runs,
rollback, and malformed metrics."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import adaptation_pb2, agents_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_analysis import banking_test_examples
from tests.test_training import banking_examples

THRESHOLD = adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD
CONSERVATIVE = adaptation_pb2.ADAPTATION_STRATEGY_CONSERVATIVE
CALIBRATION = adaptation_pb2.ADAPTATION_STRATEGY_CALIBRATION
ROLLBACK = adaptation_pb2.ADAPTATION_STRATEGY_ROLLBACK


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("adaptation"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made


def trained(client: AgentTrainingClient, agent_id: str, **behavior) -> agents_pb2.Agent:
    client.create_agent(agent_id=agent_id, default_behavior=agents_pb2.BehaviorSettings(**behavior))
    events = list(
        client.train_agent(agent_id=agent_id, training_data=banking_examples(per_intent=60))
    )
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    return client.get_agent(agent_id)


def versions(client: AgentTrainingClient, agent_id: str) -> list:
    return list(client.list_agent_versions(agent_id).versions)


def test_threshold_meets_a_success_target_as_a_new_version_that_rolls_back_exactly(client):
    agent = trained(client, "thresholded")
    before = versions(client, "thresholded")[0]
    response = client.adapt_agent_behavior(
        agent_id="thresholded",
        performance_metrics={"success_rate": 0.9, "queue_depth": 3.0},
        adaptation_strategy=THRESHOLD,
        targets={"success_rate": 0.99},
    )
    (change,) = response.changes
    assert change.setting == "confidence_threshold" and change.old_value == "0"
    assert float(change.new_value) > 0
    assert change.evidence["success_rate"] >= 0.99 or "out of reach" in change.reason
    assert "held-out validation split" in change.reason
    assert list(response.ignored_metrics) == ["queue_depth"]
    assert response.previous_version_id == agent.active_version_id
    assert response.version.active and response.version.parent_version_id == before.version_id
    assert response.version.behavior.confidence_threshold == pytest.approx(float(change.new_value))
    client.activate_agent_version("thresholded", before.version_id)
    restored = versions(client, "thresholded")[-1]
    assert restored.version_id == before.version_id
    assert restored.behavior == before.behavior


def test_dry_run_reports_the_same_changes_and_stores_nothing(client):
    trained(client, "dry")
    request = dict(
        agent_id="dry",
        performance_metrics={"success_rate": 0.8},
        adaptation_strategy=THRESHOLD,
        targets={"success_rate": 0.99},
    )
    dry = client.adapt_agent_behavior(**request, dry_run=True)
    assert dry.changes and not dry.HasField("version")
    assert len(versions(client, "dry")) == 1
    real = client.adapt_agent_behavior(**request)
    assert [c.new_value for c in real.changes] == [c.new_value for c in dry.changes]
    assert len(versions(client, "dry")) == 2


def test_conservative_moves_at_most_a_small_step(client):
    trained(client, "careful")
    response = client.adapt_agent_behavior(
        agent_id="careful",
        performance_metrics={"escalation_rate": 0.0},
        adaptation_strategy=CONSERVATIVE,
        targets={"escalation_rate": 0.5},
    )
    (change,) = response.changes
    assert float(change.new_value) == pytest.approx(0.05)
    assert "bounded" in change.reason


def test_recorded_feedback_sets_the_operating_point_once_there_is_enough(client):
    trained(client, "listened")
    evaluation = banking_test_examples(10)
    answers = client.invoke_agent(
        agent_id="listened", inputs=[e.input for e in evaluation]
    ).predictions
    for answer, example in zip(answers, evaluation, strict=True):
        client.record_feedback(
            agent_id="listened",
            invocation_id=answer.invocation_id,
            feedback="correct" if answer.output == example.expected_output else "incorrect",
        )
    response = client.adapt_agent_behavior(
        agent_id="listened",
        performance_metrics={"success_rate": 0.9},
        adaptation_strategy=THRESHOLD,
        targets={"escalation_rate": 0.2},
    )
    (change,) = response.changes
    assert f"{len(evaluation)} answers with recorded feedback" in change.reason
    assert change.evidence["escalation_rate"] <= 0.2 + 1 / len(evaluation)


def test_calibration_refits_the_temperature_with_evidence(client):
    trained(client, "overheated", temperature=4.0)
    response = client.adapt_agent_behavior(
        agent_id="overheated",
        performance_metrics={"user_satisfaction": 0.7},
        adaptation_strategy=CALIBRATION,
    )
    (change,) = response.changes
    assert change.setting == "temperature" and change.old_value == "4"
    assert float(change.new_value) < 4.0
    evidence = change.evidence
    assert (
        evidence["expected_calibration_error_after"] < evidence["expected_calibration_error_before"]
    )


def test_rollback_returns_to_the_better_earlier_version(client):
    trained(client, "regretful")
    first = versions(client, "regretful")[0]
    changed = client.adapt_agent_behavior(
        agent_id="regretful",
        performance_metrics={"success_rate": 0.92},
        adaptation_strategy=THRESHOLD,
        targets={"success_rate": 0.99},
    ).version
    calm = client.adapt_agent_behavior(
        agent_id="regretful",
        performance_metrics={"success_rate": 0.915},
        adaptation_strategy=ROLLBACK,
    )
    assert not calm.changes and "no change" in calm.summary
    response = client.adapt_agent_behavior(
        agent_id="regretful",
        performance_metrics={"success_rate": 0.70},
        adaptation_strategy=ROLLBACK,
    )
    (change,) = response.changes
    assert change.old_value == changed.version_id and change.new_value == first.version_id
    assert "fell" in change.reason
    back = response.version
    assert back.active and back.parent_version_id == changed.version_id
    assert back.behavior == first.behavior


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        ({"success_rate": -0.1}, "rates are in [0, 1]"),
        ({"success_rate": 1.5}, "rates are in [0, 1]"),
        ({"escalation_rate": float("nan")}, "rates are in [0, 1]"),
        ({"latency_p95_ms": -3.0}, "0 or more"),
        ({}, "empty"),
    ],
)
def test_malformed_metrics_are_refused_with_a_hint(client, metrics, words):
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="anyone",
        performance_metrics=metrics,
        adaptation_strategy=THRESHOLD,
        targets={"success_rate": 0.9},
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert words in error.message and error.hint


def test_unknown_strategy_and_missing_target_are_refused(client):
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="anyone",
        performance_metrics={"success_rate": 0.9},
        adaptation_strategy=99,
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert (
        "ADAPTATION_STRATEGY_THRESHOLD" in error.message or "adaptation_strategy" in error.message
    )
    trained(client, "aimless")
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="aimless",
        performance_metrics={"success_rate": 0.9},
        adaptation_strategy=THRESHOLD,
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "targets.success_rate" in error.message


def test_cli_adapts_with_metrics_targets_and_a_dry_run(server, client):
    from tests.test_service import _cli

    trained(client, "cli-adapted")
    address = server.address
    shown = _cli(
        address, "adapt", "cli-adapted", "--metric", "success_rate=0.85", "--strategy",
        "threshold", "--goal", "success_rate=0.99", "--dry-run",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert '"setting": "confidence_threshold"' in shown.stdout
    assert len(versions(client, "cli-adapted")) == 1


def test_reinforcement_learns_from_recorded_feedback_and_is_accepted_on_evidence(client):
    client.create_agent(
        agent_id="learner", default_behavior=agents_pb2.BehaviorSettings(exploration_rate=0.3)
    )
    events = list(
        client.train_agent(agent_id="learner", training_data=banking_examples(per_intent=2))
    )
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    start = versions(client, "learner")[0]
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="learner",
        performance_metrics={"success_rate": 0.5},
        adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_REINFORCEMENT,
    )
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "NOT_ENOUGH_FEEDBACK"
    queries = banking_test_examples(60, split="train")
    for _round in range(2):
        answers = client.invoke_agent(
            agent_id="learner", inputs=[e.input for e in queries]
        ).predictions
        for answer, example in zip(answers, queries, strict=True):
            client.record_feedback(
                agent_id="learner",
                invocation_id=answer.invocation_id,
                feedback="correct" if answer.output == example.expected_output else "incorrect",
            )
    response = client.adapt_agent_behavior(
        agent_id="learner",
        performance_metrics={"success_rate": 0.5},
        adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_REINFORCEMENT,
    )
    assert response.changes, response.summary
    weights, exploration = response.changes
    assert weights.evidence["policy_value_new"] > weights.evidence["policy_value_current"]
    assert weights.evidence["logged_answers"] == 2 * len(queries)
    assert float(exploration.new_value) < 0.3
    version = response.version
    assert version.active and version.parent_version_id == start.version_id
    assert version.training_type == training_pb2.TRAINING_TYPE_REINFORCEMENT
    evaluation = banking_test_examples(25)

    def accuracy(version_id: str) -> float:
        # Top answers, exploration aside: what the policy learned.
        return client.analyze_and_optimize(
            agent_id="learner", version_id=version_id, evaluation_data=evaluation
        ).analysis.accuracy

    assert accuracy(version.version_id) >= accuracy(start.version_id)


def test_aggressive_moves_further_than_conservative_but_bounded(client):
    trained(client, "bold")
    response = client.adapt_agent_behavior(
        agent_id="bold",
        performance_metrics={"escalation_rate": 0.0},
        adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_AGGRESSIVE,
        targets={"escalation_rate": 0.9},
    )
    (change,) = response.changes
    assert 0.05 < float(change.new_value) <= 0.25


def test_concurrent_adaptations_apply_one_after_the_other(client):
    import concurrent.futures

    start = trained(client, "contended").active_version_id
    request = dict(
        agent_id="contended",
        performance_metrics={"success_rate": 0.9},
        adaptation_strategy=CONSERVATIVE,
        targets={"escalation_rate": 0.5},
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: client.adapt_agent_behavior(**request), range(2))
    results = sorted([first, second], key=lambda r: r.version.version_number)
    # The second started from the first's version: neither overwrote the other silently.
    assert results[0].previous_version_id == start
    assert results[1].previous_version_id == results[0].version.version_id
    assert float(results[1].changes[0].new_value) == pytest.approx(0.1)


def test_invoke_answers_with_the_version_activated_last(client):
    trained(client, "switching")
    first = versions(client, "switching")[0]

    def answering_version() -> str:
        return client.invoke_agent(agent_id="switching", input="my card is lost").version_id

    assert answering_version() == first.version_id == answering_version()
    adapted = client.adapt_agent_behavior(
        agent_id="switching",
        performance_metrics={"success_rate": 0.9},
        adaptation_strategy=THRESHOLD,
        targets={"success_rate": 0.99},
    )
    assert answering_version() == adapted.version.version_id != first.version_id
    client.activate_agent_version("switching", first.version_id)
    assert answering_version() == first.version_id
    client.delete_agent("switching")
    error = expect_error(client.invoke_agent, agent_id="switching", input="my card is lost")
    assert_status(error, grpc.StatusCode.NOT_FOUND)

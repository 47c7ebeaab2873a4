"""Rollouts over a real channel: canary shares, sticky keys, shadow answers recorded and not
returned, promotion and abort by hand and by policy, one rollout per agent, a deleted agent, a
restart in the middle, and bad requests refused with a hint."""

from __future__ import annotations

import collections
import shutil
from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import adaptation_pb2, rollouts_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import INTENTS, banking_examples

CANARY = rollouts_pb2.ROLLOUT_MODE_CANARY
SHADOW = rollouts_pb2.ROLLOUT_MODE_SHADOW
QUESTIONS = [
    "my card has not arrived yet",
    "what is the exchange rate today",
    "I lost my card",
    "my top up did not work",
]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return make_config(tmp_path_factory.mktemp("rollouts"), workers=1)


@pytest.fixture(scope="module")
def server(config) -> Iterator[ServerThread]:
    running = ServerThread(config)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made


def two_versions(client: AgentTrainingClient, agent_id: str) -> tuple[str, str]:
    """An agent with two versions, the first active: (active, candidate)."""
    client.create_agent(agent_id=agent_id)
    versions = []
    for per_intent in (3, 20):
        events = list(
            client.train_agent(
                agent_id=agent_id,
                training_data=banking_examples(INTENTS, per_intent=per_intent),
                config=training_pb2.TrainingConfig(epochs=3),
            )
        )
        assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
        versions.append(events[-1].finished.version_id)
    client.activate_agent_version(agent_id, versions[0])
    return versions[0], versions[1]


def arms_of(client: AgentTrainingClient, agent_id: str, calls: int, key=lambda i: "") -> list:
    return [
        client.invoke_agent(
            agent_id=agent_id, input=QUESTIONS[i % 4], assignment_key=key(i)
        ).rollout_arm
        for i in range(calls)
    ]


def test_a_canary_answers_its_share_and_records_each_arm(client) -> None:
    active, candidate = two_versions(client, "canary")
    rollout = client.start_rollout(
        agent_id="canary", candidate_version_id=candidate, mode=CANARY, traffic_share=0.3
    )
    assert rollout.state == rollouts_pb2.ROLLOUT_STATE_RUNNING
    assert (rollout.active_version_id, rollout.candidate_version_id) == (active, candidate)
    assert client.get_agent("canary").active_version_id == active  # untouched
    calls = 600
    responses = [
        client.invoke_agent(agent_id="canary", input=QUESTIONS[i % 4]) for i in range(calls)
    ]
    share = sum(r.rollout_arm == "candidate" for r in responses) / calls
    assert abs(share - 0.3) < 0.08, share  # 4.3 standard deviations of a binomial share
    for response in responses:  # the arm says which version answered
        expected = candidate if response.rollout_arm == "candidate" else active
        assert response.rollout_arm in ("active", "candidate")
        assert response.version_id == expected
    # Propensities record the arm's probability: the share, or one minus it.
    candidate_answers = [r for r in responses if r.rollout_arm == "candidate"]
    assert candidate_answers[0].predictions[0].propensity == pytest.approx(0.3)
    seen = client.get_rollout("canary")
    arms = {arm.arm: arm for arm in seen.arms}
    assert arms["candidate"].answers + arms["active"].answers == calls
    assert arms["candidate"].answers == len(candidate_answers)
    assert arms["candidate"].version_id == candidate and arms["active"].version_id == active
    assert arms["active"].latency_p95_ms > 0


def test_a_named_version_bypasses_the_rollout(client) -> None:
    response = client.invoke_agent(
        agent_id="canary",
        input=QUESTIONS[0],
        version_id=client.get_rollout("canary").candidate_version_id,
    )
    assert response.rollout_arm == ""


def test_the_same_key_keeps_its_arm_and_keys_spread_in_the_share(client) -> None:
    for key in ("customer-1", "customer-2", "conversation-77"):
        assert len(set(arms_of(client, "canary", 12, key=lambda i, k=key: k))) == 1
    keyed = arms_of(client, "canary", 400, key=lambda i: f"customer-{i}")
    share = keyed.count("candidate") / len(keyed)
    assert abs(share - 0.3) < 0.1, share


def test_one_rollout_per_agent(client) -> None:
    rollout = client.get_rollout("canary")
    error = expect_error(
        client.start_rollout,
        agent_id="canary",
        candidate_version_id=rollout.candidate_version_id,
        mode=SHADOW,
    )
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "ROLLOUT_RUNNING" and rollout.rollout_id in error.message
    assert "AbortRollout" in error.hint


def test_promotion_by_hand_activates_the_candidate_with_its_evidence(client) -> None:
    rollout = client.get_rollout("canary")
    promoted = client.promote_rollout("canary", reason="looks good")
    assert promoted.agent.active_version_id == rollout.candidate_version_id
    ended = promoted.rollout
    assert ended.state == rollouts_pb2.ROLLOUT_STATE_PROMOTED
    (decision,) = ended.decisions
    assert (decision.action, decision.reason, decision.automatic) == (
        "promote",
        "looks good",
        False,
    )
    assert (
        decision.evidence["candidate_answers"]
        == {a.arm: a for a in rollout.arms}["candidate"].answers
    )
    # Ended: calls go to the (new) active version alone, and nothing more can be decided.
    response = client.invoke_agent(agent_id="canary", input=QUESTIONS[0])
    assert response.rollout_arm == "" and response.version_id == rollout.candidate_version_id
    error = expect_error(client.abort_rollout, "canary")
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "NO_RUNNING_ROLLOUT" and error.hint


def test_a_shadow_answers_every_input_unseen(client) -> None:
    active, candidate = two_versions(client, "shadowed")
    client.start_rollout(agent_id="shadowed", candidate_version_id=candidate, mode=SHADOW)
    inputs = [e.input for e in banking_examples(INTENTS, per_intent=25)[-40:]]
    response = client.invoke_agent(agent_id="shadowed", inputs=inputs)
    assert response.version_id == active and response.rollout_arm == "active"
    returned = [p.output for p in response.predictions]
    # What the candidate says, asked directly: the shadow recorded the same answers.
    theirs = [
        p.output
        for p in client.invoke_agent(
            agent_id="shadowed", inputs=inputs, version_id=candidate
        ).predictions
    ]
    rollout = client.get_rollout("shadowed")
    assert rollout.shadow.compared == len(inputs)
    agreement = sum(a == b for a, b in zip(returned, theirs, strict=True)) / len(inputs)
    assert rollout.shadow.agreement == pytest.approx(agreement)
    arms = {arm.arm: arm for arm in rollout.arms}
    assert arms["active"].answers == len(inputs) and arms["candidate"].answers == 0
    aborted = client.abort_rollout("shadowed", reason="not now")
    assert aborted.state == rollouts_pb2.ROLLOUT_STATE_ABORTED
    assert client.get_agent("shadowed").active_version_id == active


def feedback_by_arm(client, agent_id: str, good_arm: str, calls: int) -> None:
    """Simulated customers who are pleased by one arm's answers only."""
    for i in range(calls):
        response = client.invoke_agent(agent_id=agent_id, input=QUESTIONS[i % 4])
        verdict = "correct" if response.rollout_arm == good_arm else "incorrect"
        client.record_feedback(
            agent_id=agent_id,
            invocation_id=response.predictions[0].invocation_id,
            feedback=verdict,
        )
        if client.get_rollout(agent_id).state != rollouts_pb2.ROLLOUT_STATE_RUNNING:
            return


@pytest.mark.parametrize(("good_arm", "action"), [("candidate", "promote"), ("active", "abort")])
def test_the_policy_decides_on_feedback(client, good_arm: str, action: str) -> None:
    agent_id = f"policy-{action}"
    active, candidate = two_versions(client, agent_id)
    policy = rollouts_pb2.RolloutPolicy(confidence=0.95, abort_margin=0.0, min_feedback=10)
    client.start_rollout(
        agent_id=agent_id,
        candidate_version_id=candidate,
        mode=CANARY,
        traffic_share=0.5,
        policy=policy,
    )
    feedback_by_arm(client, agent_id, good_arm, calls=300)
    rollout = client.get_rollout(agent_id)
    (decision,) = rollout.decisions
    assert decision.action == action and decision.automatic, decision
    assert decision.evidence["candidate_feedback"] >= 10
    assert decision.evidence["active_feedback"] >= 10
    expected_active = candidate if action == "promote" else active
    assert client.get_agent(agent_id).active_version_id == expected_active


def test_a_restart_in_the_middle_loses_nothing(tmp_path) -> None:
    config = make_config(tmp_path, workers=1)
    first = ServerThread(config)
    try:
        with AgentTrainingClient(first.address, timeout=120) as client:
            _active, candidate = two_versions(client, "durable")
            started = client.start_rollout(
                agent_id="durable", candidate_version_id=candidate, mode=CANARY, traffic_share=0.5
            )
            arms_of(client, "durable", 40)
    finally:
        first.stop(grace=5)  # the answers written behind are flushed at shutdown
    restarted = ServerThread(config)
    try:
        with AgentTrainingClient(restarted.address, timeout=60) as again:
            after = again.get_rollout("durable")
            assert after.rollout_id == started.rollout_id
            assert after.state == rollouts_pb2.ROLLOUT_STATE_RUNNING
            assert after.traffic_share == 0.5
            assert sum(a.answers for a in after.arms) == 40
            assert set(arms_of(again, "durable", 30)) == {"active", "candidate"}
    finally:
        restarted.stop()


def test_a_deleted_agent_takes_its_rollout_with_it(client) -> None:
    _active, candidate = two_versions(client, "doomed")
    client.start_rollout(agent_id="doomed", candidate_version_id=candidate, mode=SHADOW)
    client.delete_agent("doomed")
    error = expect_error(client.get_rollout, "doomed")
    assert_status(error, grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize("mode", [CANARY, SHADOW])
def test_a_candidate_whose_files_are_gone_never_fails_a_call(server, client, mode) -> None:
    agent_id = f"lost-{mode}"
    active, candidate = two_versions(client, agent_id)
    stored = server.running.store.get_version(agent_id, candidate)
    shutil.rmtree(server.config.artifact_root / stored.artifact_dir)
    share = {"traffic_share": 0.5} if mode == CANARY else {}
    client.start_rollout(agent_id=agent_id, candidate_version_id=candidate, mode=mode, **share)
    responses = [client.invoke_agent(agent_id=agent_id, input=QUESTIONS[i % 4]) for i in range(30)]
    assert {r.version_id for r in responses} == {active}
    assert {r.rollout_arm for r in responses} == {"active"}
    rollout = client.get_rollout(agent_id)
    assert {a.arm: a.answers for a in rollout.arms} == {"active": 30, "candidate": 0}
    assert rollout.shadow.compared == 0
    client.abort_rollout(agent_id, reason="its files are gone")


def test_the_candidate_must_not_be_the_active_version(client) -> None:
    active, _candidate = two_versions(client, "same")
    error = expect_error(
        client.start_rollout, agent_id="same", candidate_version_id=active, mode=SHADOW
    )
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "ROLLOUT_CANDIDATE_ACTIVE" and error.hint
    error = expect_error(
        client.start_rollout, agent_id="same", candidate_version_id="ver_nothere", mode=SHADOW
    )
    assert_status(error, grpc.StatusCode.NOT_FOUND)


def test_a_training_job_can_start_a_rollout_instead_of_activating(client) -> None:
    client.create_agent(agent_id="trained-rollout")
    canary = rollouts_pb2.VersionRollout(mode=CANARY, traffic_share=0.2)

    def train(per_intent: int):
        events = list(
            client.train_agent(
                agent_id="trained-rollout",
                training_data=banking_examples(INTENTS, per_intent=per_intent),
                config=training_pb2.TrainingConfig(epochs=3),
                rollout=canary,
            )
        )
        assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
        return events[-1].finished.version_id

    first = train(3)  # nothing to compare the first version with: it becomes active
    assert client.get_agent("trained-rollout").active_version_id == first
    second = train(20)
    assert client.get_agent("trained-rollout").active_version_id == first
    rollout = client.get_rollout("trained-rollout")
    assert rollout.state == rollouts_pb2.ROLLOUT_STATE_RUNNING
    assert (rollout.candidate_version_id, rollout.active_version_id) == (second, first)
    assert (rollout.mode, rollout.traffic_share) == (CANARY, pytest.approx(0.2))
    # A third job while it runs keeps its version, not active, for StartRollout.
    third = train(10)
    assert client.get_rollout("trained-rollout").candidate_version_id == second
    versions = {v.version_id for v in client.list_agent_versions("trained-rollout").versions}
    assert third in versions and client.get_agent("trained-rollout").active_version_id == first


def test_an_adaptation_can_start_a_rollout_instead_of_activating(client) -> None:
    # Every fifth label wrong: the held-out split's success rate is short of 0.99, so the
    # threshold strategy raises the confidence threshold.
    data = banking_examples(INTENTS, per_intent=20)
    for index in range(0, len(data), 5):
        data[index].expected_output = INTENTS[(INTENTS.index(data[index].expected_output) + 1) % 4]
    client.create_agent(agent_id="adapted-rollout")
    events = list(client.train_agent(agent_id="adapted-rollout", training_data=data))
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    active = events[-1].finished.version_id
    adapted = client.adapt_agent_behavior(
        agent_id="adapted-rollout",
        performance_metrics={"success_rate": 0.8},
        adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD,
        targets={"success_rate": 0.99},
        rollout=rollouts_pb2.VersionRollout(mode=SHADOW),
    )
    assert adapted.changes and adapted.rollout_id
    assert client.get_agent("adapted-rollout").active_version_id == active
    rollout = client.get_rollout("adapted-rollout")
    assert rollout.rollout_id == adapted.rollout_id
    assert rollout.candidate_version_id == adapted.version.version_id
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="adapted-rollout",
        performance_metrics={"success_rate": 0.8},
        adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD,
        targets={"success_rate": 0.995},
        rollout=rollouts_pb2.VersionRollout(mode=SHADOW),
    )
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "ROLLOUT_RUNNING" and error.hint


@pytest.mark.parametrize(
    ("rollout", "field"),
    [
        (rollouts_pb2.VersionRollout(mode=CANARY), "rollout.traffic_share"),
        (rollouts_pb2.VersionRollout(), "rollout.mode"),
        (
            rollouts_pb2.VersionRollout(
                mode=SHADOW, policy=rollouts_pb2.RolloutPolicy(abort_margin=2.0)
            ),
            "rollout.policy.abort_margin",
        ),
    ],
)
def test_a_bad_rollout_option_is_refused_with_a_hint(client, rollout, field: str) -> None:
    for call in (
        lambda: list(
            client.train_agent(
                agent_id="canary", training_data=banking_examples(INTENTS, 3), rollout=rollout
            )
        ),
        lambda: client.adapt_agent_behavior(
            agent_id="canary",
            performance_metrics={"success_rate": 0.8},
            adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD,
            targets={"success_rate": 0.9},
            rollout=rollout,
        ),
    ):
        error = expect_error(call)
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
        assert field in {v.field for v in error.field_violations}, error.field_violations
        assert error.hint


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": CANARY}, "traffic_share"),
        ({"mode": CANARY, "traffic_share": 0.0}, "traffic_share"),
        ({"mode": CANARY, "traffic_share": 1.0}, "traffic_share"),
        ({"mode": CANARY, "traffic_share": float("nan")}, "traffic_share"),
        ({"mode": SHADOW, "traffic_share": 0.2}, "traffic_share"),
        ({}, "mode"),
        (
            {"mode": SHADOW, "policy": rollouts_pb2.RolloutPolicy(confidence=0.3)},
            "policy.confidence",
        ),
        (
            {"mode": SHADOW, "policy": rollouts_pb2.RolloutPolicy(min_feedback=0)},
            "policy.min_feedback",
        ),
    ],
)
def test_bad_rollouts_are_refused_with_a_hint(client, fields: dict, field: str) -> None:
    error = expect_error(
        client.start_rollout, agent_id="canary", candidate_version_id="ver_x", **fields
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert field in {v.field for v in error.field_violations}, error.field_violations
    assert error.hint and len(error.trace_id) == 32


def test_decisions_are_counted_in_a_metric(server) -> None:
    counted = collections.Counter()
    for metric in server.running.metrics.registry.collect():
        if metric.name.endswith("rollout_decisions"):
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counted[(sample.labels["action"], sample.labels["automatic"])] += sample.value
    assert counted[("promote", "false")] >= 1 and counted[("abort", "false")] >= 1

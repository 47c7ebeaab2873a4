"""AnalyzeAndOptimize over a real channel: every figure checked against InvokeAgent's answers."""

from __future__ import annotations

import collections
import csv
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from agent_training.v1 import agents_pb2, analysis_pb2, service_pb2, synthetic_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import (
    BANKING77,
    TRACE_ID,
    ServerThread,
    assert_status,
    expect_error,
    make_config,
)
from tests.test_training import INTENTS, banking_examples

CALIBRATION = analysis_pb2.OPTIMIZATION_GOAL_IMPROVE_CALIBRATION
COVERAGE = analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_COVERAGE


def banking_test_examples(
    per_intent: int = 25, intents=INTENTS, split: str = "test"
) -> list[training_pb2.TrainingExample]:
    """Banking77 examples of `intents` from the test (or train) split."""
    counts: collections.Counter[str] = collections.Counter()
    examples = []
    with (BANKING77 / f"{split}.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in intents and counts[row["category"]] < per_intent:
                counts[row["category"]] += 1
                examples.append(
                    training_pb2.TrainingExample(input=row["text"], expected_output=row["category"])
                )
    return examples


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("analysis"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made


def trained(
    client: AgentTrainingClient, agent_id: str, config=None, data=None, **behavior
) -> agents_pb2.Agent:
    client.create_agent(agent_id=agent_id, default_behavior=agents_pb2.BehaviorSettings(**behavior))
    events = list(
        client.train_agent(
            agent_id=agent_id, training_data=data or banking_examples(), config=config
        )
    )
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    return client.get_agent(agent_id)


def expected_calibration_error(confidence: np.ndarray, right: np.ndarray) -> float:
    """An independent ECE: 10 equal-width bins, (lower, upper]."""
    total = 0.0
    for lower in np.arange(10) / 10:
        members = (confidence > lower) & (confidence <= lower + 0.1 + 1e-12)
        if lower == 0:
            members |= confidence == 0
        if members.any():
            total += members.mean() * abs(right[members].mean() - confidence[members].mean())
    return total


def test_report_agrees_with_invoke_agent_answers(client):
    trained(client, "analysed")
    evaluation = banking_test_examples()
    unseen = training_pb2.TrainingExample(input="what is the weather", expected_output="weather")
    response = client.analyze_and_optimize(
        agent_id="analysed", evaluation_data=[*evaluation, unseen]
    )
    analysis = response.analysis
    inputs = [e.input for e in evaluation] + [unseen.input]
    expected = [e.expected_output for e in evaluation] + ["weather"]
    answers = client.invoke_agent(agent_id="analysed", inputs=inputs).predictions
    right = np.array([a.output == e for a, e in zip(answers, expected, strict=True)])
    confidence = np.array([a.confidence for a in answers])
    assert analysis.example_count == len(inputs)
    assert analysis.accuracy == pytest.approx(right.mean())
    assert list(analysis.unseen_outputs) == ["weather"]
    assert analysis.expected_calibration_error == pytest.approx(
        expected_calibration_error(confidence, right), abs=1e-6
    )
    assert sum(b.count for b in analysis.reliability) == len(inputs)
    assert analysis.coverage == 1.0 and analysis.accuracy_when_answered == analysis.accuracy
    f1 = {}
    for output in set(expected) | {a.output for a in answers}:
        hits = sum(a.output == e == output for a, e in zip(answers, expected, strict=True))
        said = sum(a.output == output for a in answers)
        wanted = expected.count(output)
        precision, recall = hits / said if said else 0.0, hits / wanted if wanted else 0.0
        f1[output] = 2 * precision * recall / (precision + recall) if hits else 0.0
    assert analysis.macro_f1 == pytest.approx(np.mean([f1[o] for o in set(expected)]))
    support = {m.output: m.support for m in analysis.per_output}
    assert support == {**collections.Counter(expected)} | {
        m.output: 0 for m in analysis.per_output if m.output not in expected
    }
    mistakes = collections.Counter(
        (e, a.output) for a, e in zip(answers, expected, strict=True) if a.output != e
    )
    top = analysis.confused_pairs[0]
    assert top.count == max(mistakes.values())
    assert mistakes[(top.expected_output, top.predicted_output)] == top.count
    assert 1 <= len(top.example_inputs) <= 3
    assert analysis.latency.batch_size == 1 and analysis.latency.p50_ms > 0
    assert analysis.latency.p50_ms <= analysis.latency.p95_ms <= analysis.latency.p99_ms
    assert analysis.batch_latency.batch_size > 1
    assert analysis.parameter_count > 0 and analysis.size_bytes > 0
    assert analysis.training_curve_summary


def test_default_evaluation_is_the_held_out_split_training_measured(client):
    agent = trained(client, "held-out")
    response = client.analyze_and_optimize(agent_id="held-out")
    version = client.list_agent_versions("held-out").versions[0]
    assert response.version_id == agent.active_version_id == version.version_id
    assert response.analysis.example_count == version.metrics.validation_examples
    assert response.analysis.accuracy == pytest.approx(version.metrics.validation_accuracy)


def test_calibration_suggestion_is_measured_and_applied_as_a_new_version(client):
    # A high temperature makes the agent under-confident: temperature scaling must fix it.
    agent = trained(client, "hot", temperature=4.0)
    response = client.analyze_and_optimize(
        agent_id="hot", optimization_goals=[CALIBRATION], evaluation_data=banking_test_examples()
    )
    (suggestion,) = response.suggestions
    assert suggestion.goal == CALIBRATION and suggestion.applicable
    before = suggestion.before["expected_calibration_error"]
    after = suggestion.after["expected_calibration_error"]
    assert after <= before / 2
    assert before == pytest.approx(response.analysis.expected_calibration_error)
    applied = client.analyze_and_optimize(
        agent_id="hot", apply_suggestion_id=suggestion.suggestion_id
    ).applied_version
    assert applied.parent_version_id == agent.active_version_id
    assert not applied.active
    assert applied.behavior.temperature < 4.0
    assert client.get_agent("hot").active_version_id == agent.active_version_id
    fixed = client.analyze_and_optimize(
        agent_id="hot", version_id=applied.version_id, evaluation_data=banking_test_examples()
    )
    assert fixed.analysis.expected_calibration_error < before
    assert fixed.analysis.accuracy == pytest.approx(response.analysis.accuracy)


def test_coverage_suggestion_lowers_the_threshold_without_losing_precision(client):
    trained(client, "strict", confidence_threshold=0.95)
    evaluation = banking_test_examples()
    response = client.analyze_and_optimize(
        agent_id="strict", optimization_goals=[COVERAGE], evaluation_data=evaluation
    )
    (suggestion,) = response.suggestions
    assert suggestion.applicable
    assert suggestion.after["coverage"] > suggestion.before["coverage"]
    assert suggestion.after["accuracy_when_answered"] >= (
        suggestion.before["accuracy_when_answered"] - 0.005
    )
    answers = client.invoke_agent(
        agent_id="strict", inputs=[e.input for e in evaluation]
    ).predictions
    answered = [not a.is_fallback for a in answers]
    assert response.analysis.coverage == pytest.approx(np.mean(answered))
    assert suggestion.before["coverage"] == pytest.approx(np.mean(answered))
    request = dict(
        agent_id="strict",
        apply_suggestion_id=suggestion.suggestion_id,
        activate=True,
        request_id="apply-once",
    )
    applied = client.analyze_and_optimize(**request).applied_version
    retried = client.analyze_and_optimize(**request).applied_version
    assert retried.version_id == applied.version_id
    assert len(client.list_agent_versions("strict").versions) == 2
    assert applied.active
    assert applied.behavior.confidence_threshold == pytest.approx(suggestion.after["threshold"])
    answers = client.invoke_agent(
        agent_id="strict", inputs=[e.input for e in evaluation]
    ).predictions
    assert np.mean([not a.is_fallback for a in answers]) == pytest.approx(
        suggestion.after["coverage"]
    )


def test_size_and_latency_candidates_are_measured_and_the_smaller_model_applies(client):
    agent = trained(client, "compact")
    evaluation = banking_test_examples()
    response = client.analyze_and_optimize(
        agent_id="compact",
        optimization_goals=[
            analysis_pb2.OPTIMIZATION_GOAL_MINIMIZE_SIZE,
            analysis_pb2.OPTIMIZATION_GOAL_MINIMIZE_LATENCY,
        ],
        evaluation_data=evaluation,
    )
    size, latency = response.suggestions
    assert size.applicable
    assert size.after["size_bytes"] < size.before["size_bytes"]
    assert size.after["accuracy"] >= size.before["accuracy"] - 0.005
    assert size.before["accuracy"] == pytest.approx(response.analysis.accuracy)
    assert "measured candidates" in latency.rationale and "p50" in latency.rationale
    assert "Pareto options" in size.rationale
    if not latency.applicable:
        # Why none can be: featurising and scoring's fixed cost bound what the weights can gain.
        assert "no candidate reached" in latency.action
        assert "featurising the text takes" in latency.action
        assert "the model cut to one feature" in latency.action
        bound = float(latency.action.rsplit("more than ", 1)[1].removesuffix("x faster"))
        assert bound >= 1.0
    applied = client.analyze_and_optimize(
        agent_id="compact", apply_suggestion_id=size.suggestion_id
    ).applied_version
    assert applied.parent_version_id == agent.active_version_id and not applied.active
    assert applied.size_bytes < client.list_agent_versions("compact").versions[1].size_bytes
    answers = client.invoke_agent(
        agent_id="compact", version_id=applied.version_id, inputs=[e.input for e in evaluation]
    ).predictions
    accuracy = np.mean(
        [a.output == e.expected_output for a, e in zip(answers, evaluation, strict=True)]
    )
    assert accuracy == pytest.approx(size.after["accuracy"])


def test_accuracy_search_retrains_and_the_pick_applies_as_measured(client):
    # Deliberately undertrained, on 20 intents: one epoch at a small learning rate.
    with (BANKING77 / "test.csv").open(newline="", encoding="utf-8") as handle:
        intents = sorted({row["category"] for row in csv.DictReader(handle)})[:20]
    weak = training_pb2.TrainingConfig(epochs=1, learning_rate=0.0005)
    data = banking_test_examples(20, intents, split="train")
    agent = trained(client, "undertrained", config=weak, data=data)
    evaluation = banking_test_examples(10, intents)
    response = client.analyze_and_optimize(
        agent_id="undertrained",
        optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_ACCURACY],
        evaluation_data=evaluation,
    )
    (suggestion,) = response.suggestions
    assert suggestion.applicable, suggestion.rationale
    assert suggestion.after["accuracy"] > suggestion.before["accuracy"]
    assert suggestion.after["validation_loss"] < suggestion.before["validation_loss"]
    assert suggestion.rationale.count("epochs") >= 5
    applied = client.analyze_and_optimize(
        agent_id="undertrained", apply_suggestion_id=suggestion.suggestion_id
    ).applied_version
    assert applied.parent_version_id == agent.active_version_id
    assert applied.manifest.config.epochs == int(suggestion.after["epochs"])
    answers = client.invoke_agent(
        agent_id="undertrained",
        version_id=applied.version_id,
        inputs=[e.input for e in evaluation],
    ).predictions
    accuracy = np.mean(
        [a.output == e.expected_output for a, e in zip(answers, evaluation, strict=True)]
    )
    assert accuracy == pytest.approx(suggestion.after["accuracy"])


def test_balance_outputs_lifts_the_weakest_with_paraphrases_and_a_ready_request(client):
    with (BANKING77 / "test.csv").open(newline="", encoding="utf-8") as handle:
        intents = sorted({row["category"] for row in csv.DictReader(handle)})[:20]
    agent = trained(client, "unbalanced", data=banking_test_examples(8, intents, split="train"))
    evaluation = banking_test_examples(10, intents)
    response = client.analyze_and_optimize(
        agent_id="unbalanced",
        optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_BALANCE_OUTPUTS],
        evaluation_data=evaluation,
    )
    (suggestion,) = response.suggestions
    weakest = sorted((m for m in response.analysis.per_output if m.support), key=lambda m: m.f1)
    assert suggestion.before["weakest_mean_f1"] == pytest.approx(
        np.mean([m.f1 for m in weakest[:5]])
    )
    assert weakest[0].output in suggestion.rationale
    request = suggestion.synthetic_parameters
    assert suggestion.synthetic_data_type == synthetic_pb2.SYNTHETIC_DATA_TYPE_PARAPHRASES
    assert {e.expected_output for e in request.source_examples} == {m.output for m in weakest[:5]}
    assert suggestion.synthetic_count == 5 * len(request.source_examples)
    generated = client.generate_synthetic_examples(
        data_type=suggestion.synthetic_data_type,
        count=suggestion.synthetic_count,
        parameters=request,
    )
    assert len(generated.examples) == suggestion.synthetic_count
    if suggestion.applicable:
        assert suggestion.after["weakest_mean_f1"] > suggestion.before["weakest_mean_f1"]
        applied = client.analyze_and_optimize(
            agent_id="unbalanced", apply_suggestion_id=suggestion.suggestion_id
        ).applied_version
        assert applied.parent_version_id == agent.active_version_id
        assert "paraphrases" in applied.description


def test_bad_requests_get_clear_errors(client):
    trained(client, "errors")
    error = expect_error(client.analyze_and_optimize, agent_id="errors", optimization_goals=[99])
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "OPTIMIZATION_GOAL_MINIMIZE_LATENCY" in error.message
    error = expect_error(client.analyze_and_optimize, agent_id="errors", version_id="ver_nope")
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    error = expect_error(
        client.analyze_and_optimize, agent_id="errors", apply_suggestion_id="sug_garbage"
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.trace_id


def test_cli_prints_a_readable_report_and_applies(server, client, tmp_path):
    from tests.test_service import _cli

    trained(client, "cli-analysed", confidence_threshold=0.95)
    evaluation = tmp_path / "eval.csv"
    rows = ["input,expected_output"] + [
        f'"{e.input}",{e.expected_output}' for e in banking_test_examples(10)
    ]
    evaluation.write_text("\n".join(rows) + "\n")
    picture = tmp_path / "report.png"
    shown = _cli(
        server.address, "analyze", "cli-analysed", "--goals", "maximize_coverage",
        "--eval", str(evaluation), "--plot", str(picture),
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "accuracy" in shown.stdout and "maximize_coverage:" in shown.stdout
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suggestion = shown.stdout.split("--apply ")[1].split()[0]
    applied = _cli(server.address, "analyze", "cli-analysed", "--apply", suggestion)
    assert applied.returncode == 0, applied.stderr
    assert "(not active)" in applied.stdout


def test_large_evaluation_sets_stream_progress_instead_of_a_silent_call(tmp_path, monkeypatch):
    from agent_training_server.services import analysis

    monkeypatch.setattr(analysis, "SCORING_CHUNK", 20)
    small = ServerThread(make_config(tmp_path, workers=1, max_direct_analysis_examples=50))
    try:
        with AgentTrainingClient(small.address, timeout=120) as client:
            trained(client, "big-eval")
            evaluation = banking_test_examples(25)  # 125 examples: over the direct limit
            error = expect_error(
                client.analyze_and_optimize, agent_id="big-eval", evaluation_data=evaluation
            )
            assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
            assert error.code == "EVALUATION_TOO_LARGE"
            assert "AnalyzeAndOptimizeStream" in error.hint
            messages = list(
                client.analyze_and_optimize_stream(
                    agent_id="big-eval", evaluation_data=evaluation, optimization_goals=[COVERAGE]
                )
            )
            assert messages[0].accepted.analysis_id.startswith("analysis_")
            progress = [m.progress for m in messages if m.WhichOneof("kind") == "progress"]
            scored = [p.examples_done for p in progress if p.phase == "scoring"]
            # The stream attaches just after the job starts: on a busy machine the first chunks
            # may be scored before, and it then starts from the latest report (as a re-attached
            # watcher does); every report after that arrives, in order.
            every_chunk = [20, 40, 60, 80, 100, 120, 125]
            assert scored and scored == every_chunk[-len(scored) :]
            assert all(p.examples_total == 125 for p in progress)
            percents = [p.percent_complete for p in progress]
            assert percents == sorted(percents) and percents[-1] < 100
            assert messages[-1].WhichOneof("kind") == "result"
            result = messages[-1].result
            assert result.analysis.example_count == 125 and len(result.suggestions) == 1
    finally:
        small.stop()


def test_an_analysis_job_outlives_its_stream_and_can_be_watched_and_read_again(
    tmp_path, monkeypatch
):
    from agent_training_server.services import analysis

    monkeypatch.setattr(analysis, "SCORING_CHUNK", 20)
    running = ServerThread(make_config(tmp_path, workers=1, max_direct_analysis_examples=50))
    try:
        with AgentTrainingClient(running.address, timeout=120) as client:
            trained(client, "detached")
            request = dict(
                agent_id="detached",
                evaluation_data=banking_test_examples(25),
                optimization_goals=[COVERAGE],
                request_id="analysis-1",
            )
            stream = client.analyze_and_optimize_stream(**request)
            analysis_id = next(stream).accepted.analysis_id
            stream.close()  # the client goes away at once

            watched = list(client.watch_analysis_job(analysis_id))
            assert watched[-1].WhichOneof("kind") == "result"
            assert watched[-1].result.analysis.example_count == 125
            job = client.get_analysis_job(analysis_id)
            assert job.status == service_pb2.ANALYSIS_STATUS_SUCCEEDED
            assert job.result == watched[-1].result
            assert job.agent_id == "detached" and TRACE_ID.match(job.trace_id)
            assert job.progress.examples_total == 125
            # Watching an ended job answers at once with its result.
            assert list(client.watch_analysis_job(analysis_id))[-1].result == job.result

            # A retry with the same request_id re-attaches to the same job.
            retried = list(client.analyze_and_optimize_stream(**request))
            assert retried[0].accepted.analysis_id == analysis_id
            assert retried[-1].result == job.result

            error = expect_error(client.get_analysis_job, "analysis_0000000000000000")
            assert_status(error, grpc.StatusCode.NOT_FOUND)
            assert error.code == "ANALYSIS_NOT_FOUND"
            error = expect_error(lambda: list(client.watch_analysis_job("../etc")))
            assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
            # Wrong requests are refused before any job is stored.
            error = expect_error(
                lambda: list(client.analyze_and_optimize_stream(agent_id="nobody"))
            )
            assert_status(error, grpc.StatusCode.NOT_FOUND)
    finally:
        running.stop()


def test_analyses_a_stopped_server_left_running_fail_retryable_at_the_next_start(tmp_path):
    from agent_training_server.domain import AnalysisJob
    from agent_training_server.store.sqlite import SqliteStore

    config = make_config(tmp_path, workers=1)
    first = ServerThread(config)
    with AgentTrainingClient(first.address, timeout=120) as client:
        trained(client, "interrupted")
    first.stop()
    # What a crash leaves behind: a job stored as RUNNING that no process works on any more.
    store = SqliteStore(config.database_path)
    store.create_analysis(AnalysisJob("analysis_00000000000000aa", "interrupted", create_time=1.0))
    store.close()

    second = ServerThread(config)
    try:
        with AgentTrainingClient(second.address, timeout=60) as client:
            job = client.get_analysis_job("analysis_00000000000000aa")
            assert job.status == service_pb2.ANALYSIS_STATUS_FAILED
            assert job.error.code == "ANALYSIS_INTERRUPTED" and job.error.retryable
            error = expect_error(
                lambda: list(client.watch_analysis_job("analysis_00000000000000aa"))
            )
            assert_status(error, grpc.StatusCode.UNAVAILABLE)
            assert error.code == "ANALYSIS_INTERRUPTED" and error.retryable
    finally:
        second.stop()


def test_analysis_jobs_over_the_limit_are_refused_with_a_retry_delay(tmp_path):
    running = ServerThread(make_config(tmp_path, workers=1, max_analysis_jobs=1))
    try:
        with AgentTrainingClient(running.address, timeout=120) as client:
            trained(client, "busy")
            slow = client.analyze_and_optimize_stream(
                agent_id="busy",
                optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_ACCURACY],
            )
            analysis_id = next(slow).accepted.analysis_id  # retrains: runs for seconds
            error = expect_error(
                lambda: list(
                    client.analyze_and_optimize_stream(
                        agent_id="busy", optimization_goals=[COVERAGE]
                    )
                )
            )
            assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert error.code == "TOO_MANY_ANALYSES" and error.retryable
            assert error.retry_delay_seconds and error.retry_delay_seconds > 0
            assert list(slow)[-1].WhichOneof("kind") == "result"
            assert client.get_analysis_job(analysis_id).status == (
                service_pb2.ANALYSIS_STATUS_SUCCEEDED
            )
    finally:
        running.stop()

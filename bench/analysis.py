"""AnalyzeAndOptimize on the Banking77 supervised agent: calibration, size and latency.

The service trains a supervised agent on train.csv, then AnalyzeAndOptimize evaluates it on
test.csv with improve_calibration, minimize_size and minimize_latency; the suggested temperature
is applied as a new version and that version is analysed again on test.csv, so "after" is
measured, not predicted. The size and latency suggestions report the candidates they measured.
Prints one table; writes bench/results/analysis.json.
Usage: python bench/analysis.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, read_split, start_service


def main() -> None:
    from agent_training.v1 import analysis_pb2, training_pb2
    from agent_training_client import AgentTrainingClient

    train = read_split(DEFAULT_DATA / "train.csv")
    test = read_split(DEFAULT_DATA / "test.csv")
    examples = [
        training_pb2.TrainingExample(input=t, expected_output=label)
        for t, label in zip(*train, strict=True)
    ]
    evaluation = [
        training_pb2.TrainingExample(input=t, expected_output=label)
        for t, label in zip(*test, strict=True)
    ]
    goals = [
        analysis_pb2.OPTIMIZATION_GOAL_IMPROVE_CALIBRATION,
        analysis_pb2.OPTIMIZATION_GOAL_MINIMIZE_SIZE,
        analysis_pb2.OPTIMIZATION_GOAL_MINIMIZE_LATENCY,
        analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_ACCURACY,
        analysis_pb2.OPTIMIZATION_GOAL_BALANCE_OUTPUTS,
    ]
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=600) as client:
                client.create_agent(agent_id="banking77")
                events = list(client.train_agent(agent_id="banking77", training_data=examples))
                if events[-1].finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
                    raise RuntimeError(f"training failed: {events[-1].finished.error}")
                report = client.analyze_and_optimize(
                    agent_id="banking77", optimization_goals=goals, evaluation_data=evaluation
                )
                suggestion, size, latency, accuracy, balance = report.suggestions
                applied = client.analyze_and_optimize(
                    agent_id="banking77", apply_suggestion_id=suggestion.suggestion_id
                ).applied_version
                after = client.analyze_and_optimize(
                    agent_id="banking77",
                    version_id=applied.version_id,
                    evaluation_data=evaluation,
                ).analysis
        finally:
            process.terminate()
            process.wait(30)
    before = report.analysis
    results = {
        "accuracy": before.accuracy,
        "ece_before": before.expected_calibration_error,
        "ece_after_cross_fitted": suggestion.after["expected_calibration_error"],
        "ece_after_applied": after.expected_calibration_error,
        "temperature": applied.behavior.temperature,
        "accuracy_after": after.accuracy,
        "latency_p50_ms": before.latency.p50_ms,
        "size": {"action": size.action, "before": dict(size.before), "after": dict(size.after)},
        "balance": {
            "action": balance.action,
            "before": dict(balance.before),
            "after": dict(balance.after),
        },
        "accuracy_search": {
            "action": accuracy.action,
            "before": dict(accuracy.before),
            "after": dict(accuracy.after),
        },
        "latency": {
            "action": latency.action,
            "applicable": latency.applicable,
            "before": dict(latency.before),
            "after": dict(latency.after),
            "rationale": latency.rationale,
        },
    }
    print(f"Banking77 supervised agent, {len(evaluation)} test examples, {os.cpu_count()} cores")
    print(f"accuracy {before.accuracy:.4f} (after: {after.accuracy:.4f})")
    print(
        f"expected calibration error {before.expected_calibration_error:.4f} -> "
        f"{after.expected_calibration_error:.4f}"
        f" with temperature {applied.behavior.temperature:.3g}"
        f" (cross-fitted estimate {suggestion.after['expected_calibration_error']:.4f})"
    )
    print(
        f"minimize_size: {size.action}: {size.before['size_bytes']:,.0f} ->"
        f" {size.after['size_bytes']:,.0f} bytes, accuracy {size.before['accuracy']:.4f} ->"
        f" {size.after['accuracy']:.4f}"
    )
    print(f"minimize_latency: {latency.action}")
    print(
        f"maximize_accuracy: {accuracy.action}: test accuracy {accuracy.before['accuracy']:.4f}"
        f" -> {accuracy.after['accuracy']:.4f}"
    )
    print(f"  {latency.rationale}")
    print(
        f"balance_outputs: {balance.action}: weakest mean F1"
        f" {balance.before['weakest_mean_f1']:.3f} -> {balance.after['weakest_mean_f1']:.3f},"
        f" accuracy {balance.before['accuracy']:.4f} -> {balance.after['accuracy']:.4f}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

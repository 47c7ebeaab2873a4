"""Runs every benchmark under bench/ in turn (make bench), then prints one summary table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [  # a script, or a script and its arguments
    "banking77.py",
    "few_shot.py",
    "reinforcement.py",
    "transfer.py",
    "transfer_full.py",
    "out_of_scope.py",
    "synthetic_usefulness.py",
    "synthetic_usefulness.py --validation-split 0",
    "synthetic_throughput.py",
    "analysis.py",
    "closed_loop.py",
    "rollout.py",
    "checkpoints.py",
    "invoke_throughput.py",
    "invoke_during_analysis.py",
    "postgres_vs_sqlite.py",
    "load.py",
    "tenant_timing.py",
    "ray_executor.py",
]


def _load(name: str) -> dict | None:
    path = HERE / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _usefulness_row(title: str, result: dict) -> tuple[str, str, str]:
    return (
        title,
        f"{result['with_paraphrases']['accuracy']:.2%} ({result['gain_points']:+.2f} points)",
        f"without them {result['sample_only']['accuracy']:.2%}; lexicon synonyms only"
        f" {result['with_lexicon_paraphrases']['accuracy']:.2%}"
        f" ({result['lexicon_gain_points']:+.2f})",
    )


def summary() -> list[tuple[str, str, str]]:
    """(paradigm, ours, reference) rows from the results files of this run."""
    rows = []
    if result := _load("banking77"):
        ours, peer = result["service"], result["linear_svc"]
        every = result["service_all_examples"]
        rows.append(
            (
                "supervised, Banking77 full",
                f"{ours['accuracy']:.2%} in {ours['train_seconds']:.2f} s (all examples training:"
                f" {every['accuracy']:.2%} in {every['train_seconds']:.2f} s)",
                f"TF-IDF + LinearSVC {peer['accuracy']:.2%} in {peer['train_seconds']:.2f} s",
            )
        )
    if result := _load("few_shot"):
        ours = result["service"]
        rows.append(
            (
                "few_shot, 10 per intent",
                f"{ours['accuracy']:.2%} in {ours['train_seconds']:.0f} s",
                f"frozen MiniLM + LR {result['reference']['accuracy']:.2%}",
            )
        )
    if result := _load("transfer_full"):
        rows.append(
            (
                "transfer, Banking77 full",
                f"{result['accuracy']:.2%} in {result['train_seconds']:.0f} s",
                f"frozen MiniLM + LR {result['reference']['accuracy']:.2%}",
            )
        )
    if result := _load("out_of_scope"):
        peers = ("linear_svc", "frozen_embeddings_lr")
        ours = max((key for key in result if key not in peers), key=lambda k: result[k]["auroc"])
        peer = max(peers, key=lambda key: result[key]["auroc"])
        rows.append(
            (
                "out-of-scope detection, banking77-oos",
                f"{ours} AUROC {result[ours]['auroc']:.3f}, recall"
                f" {result[ours]['oos_recall']:.1%} at 95% in-scope kept",
                f"{peer} AUROC {result[peer]['auroc']:.3f}, recall"
                f" {result[peer]['oos_recall']:.1%}",
            )
        )
    if result := _load("transfer"):
        rows.append(
            (
                "transfer from agent A, 37 new intents x 10",
                f"{result['from_agent_a']['accuracy']:.2%}",
                f"from scratch {result['from_scratch']['accuracy']:.2%}, from pretrained"
                f" {result['from_pretrained']['accuracy']:.2%}",
            )
        )
    if result := _load("reinforcement"):
        rows.append(
            (
                "reinforcement, bandit log",
                f"{result['reinforcement']['accuracy']:.2%}",
                f"logging policy {result['logging_policy']['accuracy']:.2%}, positives only"
                f" {result['positives_only']['accuracy']:.2%}",
            )
        )
    for name, title in (
        ("synthetic_usefulness", "supervised, 10 per intent + paraphrases"),
        ("synthetic_usefulness_validation0", "  the same, all with validation_split 0"),
    ):
        if result := _load(name):
            rows.append(_usefulness_row(title, result))
    if result := _load("synthetic_throughput"):
        grpc, local, dups = result["grpc"], result["in_process"], result["duplicates"]
        rows.append(
            (
                "synthetic customer_queries, medium",
                f"{local['per_second']:,.0f}/s in process, {grpc['per_second']:,.0f}/s over"
                f" gRPC, +{grpc['server_rss_growth_mb']:.0f} MB for {grpc['examples']:,}",
                f"near duplicates {dups['near_rate']:.2%} (datasketch MinHash LSH)",
            )
        )
    if result := _load("analysis"):
        rows.append(
            (
                "improve_calibration, Banking77 supervised",
                f"ECE {result['ece_before']:.4f} -> {result['ece_after_applied']:.4f}"
                f" (temperature {result['temperature']:.3g})",
                f"accuracy unchanged: {result['accuracy']:.2%} -> {result['accuracy_after']:.2%}",
            )
        )
    if result := _load("closed_loop"):
        rounds = result["rounds"]
        threshold = result["threshold"]
        rows.append(
            (
                "closed loop, reinforcement adaptation",
                " -> ".join(f"{r['accuracy']:.2%}" for r in rounds),
                f"threshold alone: {threshold['answered_success_rate']:.2%} right when answered"
                f" (target {threshold['target']:.0%})",
            )
        )
    if result := _load("rollout"):
        better, worse = result["summary"]["better"], result["summary"]["worse"]
        accuracy = result["accuracy"]
        medians = " / ".join(
            f"{row['answers_to_decision_median'] or 0:,.0f}" for row in (better, worse)
        )
        rows.append(
            (
                "rollouts, canary 50%, candidate +/-5 points",
                f"promoted {better['right']}/{better['runs']}, aborted"
                f" {worse['right']}/{worse['runs']}, wrong {better['wrong'] + worse['wrong']};"
                f" median {medians} answers",
                f"versions {accuracy['full']:.2%} vs {accuracy['degraded']:.2%}; a worse one"
                f" cost {worse['successes_lost_mean']:.1f} successes per run",
            )
        )
    if (result := _load("invoke_throughput")) and "agents" in result:
        agents = result["agents"]
        busy, alone = agents["in_flight_32"], agents["in_flight_1"]
        rows.append(
            (
                "InvokeAgent, 32 in flight, supervised / few_shot",
                f"{busy['supervised']['calls_per_second']:,.0f} /"
                f" {busy['few_shot']['calls_per_second']:,.0f} calls/s"
                f" ({agents['supervised_vs_health']:.0%} of health / "
                f"{agents['few_shot_vs_supervised']:.0%} of supervised)",
                f"health check {busy['health']['calls_per_second']:,.0f}/s; batch-1 p50"
                f" {alone['supervised']['p50_ms']:.2f} / {alone['few_shot']['p50_ms']:.2f} ms",
            )
        )
    if (result := _load("invoke_throughput")) and "observability" in result:
        observability = result["observability"]
        calls = observability["calls_per_second"]
        rows.append(
            (
                "InvokeAgent, metrics and tracing on",
                f"{calls['observed']:,.0f} calls/s"
                f" ({observability['observed_vs_quiet']:.1%} of off)",
                f"off {calls['quiet']:,.0f}/s; health check {calls['health']:,.0f}/s",
            )
        )
    if result := _load("invoke_during_analysis"):
        idle, during = result["median"]["idle"], result["median"]["during"]
        rows.append(
            (
                "InvokeAgent p99, 32 in flight, during maximize_accuracy",
                f"{during['p99_ms']:.0f} ms ({result['p99_during_vs_idle']:.2f}x idle)",
                f"idle {idle['p99_ms']:.0f} ms, same server",
            )
        )
    if result := _load("postgres_vs_sqlite"):
        sqlite, postgres = result["medians"]["sqlite"], result["medians"]["postgres"]
        rows.append(
            (
                "on PostgreSQL: InvokeAgent, CreateAgent calls/s",
                f"{postgres['invoke_per_second']:,.0f}, {postgres['create_per_second']:,.0f}",
                f"on SQLite {sqlite['invoke_per_second']:,.0f}, {sqlite['create_per_second']:,.0f}",
            )
        )
    if result := _load("load"):
        rss = result["server_rss_mb"]
        health = result["per_rpc"]["Health.Check"]
        rows.append(
            (
                f"load, {result['clients']} clients, two jobs training",
                f"{result['calls_per_second']:,.0f} calls/s, unexpected errors"
                f" {sum(result['unexpected_errors'].values())}, health p99"
                f" {health['p99_ms']:.0f} ms",
                f"server RSS {rss['before']:.0f} -> {rss['after']:.0f} -> {rss['settled']:.0f} MB",
            )
        )
    if result := _load("tenant_timing"):
        methods = result["methods"]
        rows.append(
            (
                "NOT_FOUND, another tenant's id vs a missing one",
                ", ".join(f"{name} gap {m['gap_ms']:.3f} ms" for name, m in methods.items()),
                "spread of two missing-id sets: "
                + ", ".join(f"{m['spread_ms']:.3f}" for m in methods.values())
                + " ms",
            )
        )
    if result := _load("ray_executor"):
        local = result["results"]["local"]["jobs"]["1"]["median"]
        ray_jobs = result["results"]["ray"]["jobs"]
        one, two = ray_jobs["1"]["median"], ray_jobs["2"]["median"]
        rows.append(
            (
                "supervised, Banking77 full, on Ray",
                f"1 worker {one['wall_seconds']:.1f} s, 2 workers {two['wall_seconds']:.1f} s"
                f" ({two['examples_per_second_per_worker']:,.0f} examples/s per worker)",
                f"local executor {local['wall_seconds']:.1f} s, same machine",
            )
        )
    return rows


def main() -> int:
    failures = 0
    for benchmark in BENCHMARKS:
        print(f"== {benchmark}", flush=True)
        script, *arguments = benchmark.split()
        run = subprocess.run([sys.executable, str(HERE / script), *arguments], check=False)
        failures += run.returncode != 0
    print("\n== summary (Banking77 test.csv accuracy unless stated)")
    rows = summary()
    widths = [max(len(row[i]) for row in rows) for i in range(3)] if rows else [0, 0, 0]
    for row in [("paradigm", "agent-training", "reference, same run"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

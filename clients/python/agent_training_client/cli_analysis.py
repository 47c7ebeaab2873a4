"""The ``agent-training analyze`` command: a readable AnalyzeAndOptimize report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent_training.v1 import analysis_pb2, service_pb2
from agent_training_client.cli_args import add_command as add_command_to
from agent_training_client.cli_args import enum_list, enum_names, enum_number, output_format
from agent_training_client.cli_data import resolve_dataset
from agent_training_client.cli_examples import add_column_flags, reader
from agent_training_client.cli_output import show
from agent_training_client.client import AgentTrainingClient
from agent_training_client.progress import StatusLine

GOALS = enum_names(analysis_pb2.OptimizationGoal, "OPTIMIZATION_GOAL_")


def report_text(response: service_pb2.AnalyzeAndOptimizeResponse) -> str:
    """The analysis and suggestions as plain text."""
    a = response.analysis
    lines = [
        f"version {response.version_id}: {a.example_count} evaluation examples",
        f"  accuracy {a.accuracy:.2%}   macro-F1 {a.macro_f1:.3f}"
        f"   weighted-F1 {a.weighted_f1:.3f}",
        f"  calibration error (ECE) {a.expected_calibration_error:.3f}   log-loss {a.log_loss:.3f}",
        f"  coverage {a.coverage:.1%} at threshold {a.confidence_threshold:g},"
        f" {a.accuracy_when_answered:.2%} of those right",
        f"  latency p50/p95/p99 {a.latency.p50_ms:.2f}/{a.latency.p95_ms:.2f}/"
        f"{a.latency.p99_ms:.2f} ms at batch 1; {a.batch_latency.throughput_per_second:,.0f}"
        f" inputs/s at batch {a.batch_latency.batch_size}",
        f"  {a.parameter_count:,} parameters, {a.size_bytes:,} bytes",
        f"  training: {a.training_curve_summary}",
    ]
    if a.unseen_outputs:
        lines.append(f"  outputs never learned: {', '.join(a.unseen_outputs)}")
    weakest = sorted(a.per_output, key=lambda m: m.f1)[:5]
    lines.append("  weakest outputs: " + ", ".join(f"{m.output} F1 {m.f1:.2f}" for m in weakest))
    for pair in a.confused_pairs[:5]:
        lines.append(
            f"  confused: {pair.expected_output} -> {pair.predicted_output} x{pair.count}"
            f" (e.g. {pair.example_inputs[0]!r})"
        )
    for s in response.suggestions:
        goal = analysis_pb2.OptimizationGoal.Name(s.goal).removeprefix("OPTIMIZATION_GOAL_")
        lines.append(f"{goal.lower()}: {s.action}")
        lines.append(f"  why: {s.rationale}")
        for name in s.before:
            lines.append(f"  {name}: {s.before[name]:.4g} -> {s.after[name]:.4g}")
        if s.applicable:
            lines.append(f"  apply with: --apply {s.suggestion_id}")
    return "\n".join(lines)


def analyze(args: argparse.Namespace, client: AgentTrainingClient) -> int:
    """`agent-training analyze AGENT ...`."""
    output = output_format(args)
    if args.apply:
        response = client.analyze_and_optimize(
            agent_id=args.agent, apply_suggestion_id=args.apply, activate=args.activate
        )
        if output == "json":
            show(response, output)
            return 0
        version = response.applied_version
        state = "active" if version.active else "not active"
        print(f"made version {version.version_id} from {response.version_id} ({state})")
        return 0
    goals = [
        enum_number(analysis_pb2.OptimizationGoal, "OPTIMIZATION_GOAL_", goal)
        for goal in args.goals
    ]
    # The stream works for any size and shows progress; the unary call is for small sets.
    result: service_pb2.AnalyzeAndOptimizeResponse | None = None
    status = StatusLine(sys.stderr)
    for message in client.analyze_and_optimize_stream(
        agent_id=args.agent,
        version_id=args.version,
        optimization_goals=goals,
        evaluation_data=reader(args)(args.eval) if args.eval else [],
        dataset_id=resolve_dataset(client, args.dataset) if args.dataset else "",
    ):
        if message.WhichOneof("kind") == "accepted":
            print(f"analysis job {message.accepted.analysis_id}", file=sys.stderr)
        elif message.WhichOneof("kind") == "progress":
            p = message.progress
            status.update(
                f"{p.percent_complete:5.1f}%  {p.phase}  {p.examples_done}/{p.examples_total}"
            )
        else:
            result = message.result
    status.close()
    if result is None:
        return 1
    if output == "json":
        show(result, output)
    else:
        print(report_text(result))
    if args.plot:
        plot(result, Path(args.plot))
        print(f"plots written to {args.plot}", file=sys.stderr if output == "json" else sys.stdout)
    return 0


def plot(response: service_pb2.AnalyzeAndOptimizeResponse, path: Path) -> None:
    """Reliability diagram, top confused pairs and latency percentiles, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    a = response.analysis
    figure, (reliability, confusion, latency) = plt.subplots(1, 3, figsize=(16, 5))
    bins = [b for b in a.reliability if b.count]
    centres = [(b.lower + b.upper) / 2 for b in bins]
    reliability.bar(centres, [b.accuracy for b in bins], width=0.09, label="accuracy")
    reliability.plot([0, 1], [0, 1], "k--", label="perfect calibration", zorder=3)
    reliability.plot(
        centres,
        [b.mean_confidence for b in bins],
        "o",
        color="C1",
        label="mean confidence",
        zorder=4,
    )
    reliability.set(
        title=f"Reliability (ECE {a.expected_calibration_error:.3f})",
        xlabel="confidence",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    reliability.legend()
    pairs = list(a.confused_pairs)[:10][::-1]
    confusion.barh(
        [f"{p.expected_output} -> {p.predicted_output}" for p in pairs], [p.count for p in pairs]
    )
    confusion.set(title="Most confused pairs (expected -> answered)", xlabel="examples")
    confusion.tick_params(axis="y", labelsize=7)
    names = ["p50", "p95", "p99"]
    single = [a.latency.p50_ms, a.latency.p95_ms, a.latency.p99_ms]
    batched = [a.batch_latency.p50_ms, a.batch_latency.p95_ms, a.batch_latency.p99_ms]
    positions = range(len(names))
    latency.bar([p - 0.2 for p in positions], single, width=0.4, label="batch 1")
    latency.bar(
        [p + 0.2 for p in positions],
        batched,
        width=0.4,
        label=f"batch {a.batch_latency.batch_size}",
    )
    latency.set(title="Latency per call", ylabel="ms", xticks=list(positions), xticklabels=names)
    latency.set_yscale("log")
    latency.legend()
    figure.suptitle(f"version {response.version_id}: accuracy {a.accuracy:.2%}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def add_command(commands: Any) -> None:
    """Add `analyze` to the CLI."""
    sub = add_command_to(
        commands, "analyze", "evaluate an agent version and suggest changes", output="table"
    )
    sub.description = (
        "Evaluate an agent version and suggest changes. The table output is a readable report;"
        " -o json prints the whole AnalyzeAndOptimize response."
    )
    sub.add_argument("agent", help="the agent to analyse")
    sub.add_argument(
        "--goals",
        type=enum_list(GOALS),
        default="",
        help=f"comma-separated goals to suggest changes for, from {', '.join(GOALS)}",
    )
    sub.add_argument("--version", default="", help="version to analyse (default: active)")
    sub.add_argument("--eval", default="", metavar="FILE", help="CSV or JSONL evaluation examples")
    add_column_flags(sub)
    sub.add_argument(
        "--dataset", default="", metavar="NAME_OR_ID", help="stored dataset to evaluate on"
    )
    sub.add_argument("--apply", default="", metavar="SUGGESTION_ID", help="apply a suggestion")
    sub.add_argument("--activate", action="store_true", help="make the applied version active")
    sub.add_argument("--plot", default="", metavar="FILE.png", help="also draw the report")
    sub.set_defaults(handler=analyze)

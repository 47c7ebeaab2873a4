"""InvokeAgent latency while the server is idle and while a maximize_accuracy analysis runs.

The service (`agent-training serve`, default settings) trains a supervised agent on the whole
Banking77 train.csv. Each round then keeps 32 InvokeAgent calls (one input each) in flight from
an asyncio client for `--seconds`, twice:
- idle: nothing else runs;
- during: an AnalyzeAndOptimize call with OPTIMIZATION_GOAL_MAXIMIZE_ACCURACY (evaluated on the
  version's held-out split) was started first, and the window opens once its scoring is over,
  i.e. while its retrainings run. The window is kept only if the analysis was still running
  when it closed; the analysis is then cancelled (the client leaves) so the next round starts
  on an idle server.
Every call's latency is recorded; p50 and p99 are per window, and the median over rounds is
reported with the spread. Writes bench/results/invoke_during_analysis.json.
Usage: python bench/invoke_during_analysis.py [--seconds 6] [--rounds 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, read_split, start_service

IN_FLIGHT = 32
SCORING_SECONDS = 2.0
"""Wait after starting the analysis before the window opens: scoring the ~1,000 held-out
examples and measuring latency come first; the retrainings follow."""


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def window(stub, request, seconds: float) -> dict[str, float]:
    """IN_FLIGHT concurrent InvokeAgent callers for `seconds`: latency percentiles in ms."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await stub.InvokeAgent(request)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return {
        "calls": len(latencies),
        "calls_per_second": len(latencies) / (time.perf_counter() - started),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


async def rounds(address: str, seconds: float, count: int) -> list[dict[str, dict[str, float]]]:
    import grpc

    from agent_training.v1 import analysis_pb2, service_pb2, service_pb2_grpc

    results = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        request = service_pb2.InvokeAgentRequest(agent_id="banking77", input="my card is lost")
        for _ in range(100):  # warm up: the model is loaded on the first call
            await stub.InvokeAgent(request)
        analyse = service_pb2.AnalyzeAndOptimizeRequest(
            agent_id="banking77",
            optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_ACCURACY],
        )
        while len(results) < count:
            idle = await window(stub, request, seconds)
            analysis = asyncio.ensure_future(stub.AnalyzeAndOptimize(analyse, timeout=600))
            await asyncio.sleep(SCORING_SECONDS)
            if analysis.done():
                raise RuntimeError(f"the analysis ended before the window: {analysis.result()}")
            during = await window(stub, request, seconds)
            still_running = not analysis.done()
            analysis.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await analysis
            await asyncio.sleep(3.0)  # the retraining stops at its next step
            if still_running:
                results.append({"idle": idle, "during": during})
            else:
                print("the analysis ended inside the window; round repeated", flush=True)
    return results


def train(address: str, data: Path) -> None:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    texts, labels = read_split(data / "train.csv")
    examples = [
        training_pb2.TrainingExample(input=t, expected_output=label)
        for t, label in zip(texts, labels, strict=True)
    ]
    with AgentTrainingClient(address, timeout=600) as client:
        client.create_agent(agent_id="banking77")
        events = list(client.train_agent(agent_id="banking77", training_data=examples))
        if events[-1].finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
            raise RuntimeError(f"training failed: {events[-1].finished.error}")


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Banking77 folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            train(address, args.data)
            load_before = load_average()
            measured = asyncio.run(rounds(address, args.seconds, args.rounds))
            load_after = load_average()
        finally:
            process.terminate()
            process.wait(30)
    summary = {
        name: {
            figure: statistics.median(r[name][figure] for r in measured)
            for figure in ("p50_ms", "p99_ms", "calls_per_second")
        }
        for name in ("idle", "during")
    }
    ratio = summary["during"]["p99_ms"] / summary["idle"]["p99_ms"]
    results = {
        "in_flight": IN_FLIGHT,
        "seconds": args.seconds,
        "cores": os.cpu_count(),
        "load_average": [load_before, load_after],
        "median": summary,
        "p99_during_vs_idle": ratio,
        "rounds": measured,
    }
    print(
        f"InvokeAgent, {IN_FLIGHT} calls in flight, {os.cpu_count()} cores, load"
        f" {load_before:.1f} -> {load_after:.1f}, median of {len(measured)} rounds of"
        f" {args.seconds:g} s"
    )
    print(f"{'server':<36} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>8}  p99 per round")
    for name, title in (("idle", "idle"), ("during", "during a maximize_accuracy analysis")):
        row = summary[name]
        spread = ", ".join(f"{r[name]['p99_ms']:.1f}" for r in measured)
        print(
            f"{title:<36} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f}"
            f" {row['calls_per_second']:8,.0f}  {spread}"
        )
    print(f"p99 during / idle = {ratio:.2f}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "invoke_during_analysis.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

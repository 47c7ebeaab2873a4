"""InvokeAgent throughput and latency, supervised and few_shot agents, against the health check.

Part "agents" (what a user of `make run` gets): one server with its defaults (Prometheus metrics
on, every request traced) serves a supervised agent trained on the whole Banking77 train.csv and
a few_shot agent trained on 10 examples per intent (bench/few_shot.py's fixed sample). Rounds
alternate between grpc.health.v1 Check, the supervised agent and the few_shot agent, each with 32
single-input calls in flight for `--seconds` (inputs cycle through Banking77 test.csv); then
latency p50/p99 with 1 and 32 calls in flight, and throughput with 256 inputs per call. Every
answer received is counted, and after the server stops (its write-behind flushed) the stored
invocations are counted: the two must be equal.

Part "observability": the supervised agent (5 Banking77 intents) on a server with metrics on and
every request traced and exported over OTLP/gRPC to a sink process (bench/otlp_sink.py), against
the same server with metrics off and no request traced.

Medians over `--rounds`. Writes bench/results/invoke_throughput.json.
Usage: python bench/invoke_throughput.py [--seconds 5] [--rounds 5]
       [--part agents|observability|all] [--paradigms supervised few_shot]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, read_split, start_service
from few_shot import sample

IN_FLIGHT = 32


def start_sink() -> tuple[subprocess.Popen, int]:
    """The OTLP receiver the observed server exports to."""
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("otlp_sink.py"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return sink, int(sink.stdout.readline())


def cpu_seconds_of_children(pid: int) -> float:
    """CPU time used so far by a process's children (Linux /proc)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while listed
        if fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_until_settled(process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until the server's child processes (training workers, span exporter) are idle.

    They start by importing torch or the exporters, a second or two of CPU on a 2-core machine;
    measured alongside the first round, that start-up would be charged to whichever server has
    more children.
    """
    deadline = time.monotonic() + timeout
    used = cpu_seconds_of_children(process.pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds_of_children(process.pid)
        if now - used < 0.02:
            return
        used = now


def serve(data_dir: Path, observed: bool, sink_port: int = 0) -> tuple[subprocess.Popen, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OTEL_TRACES_SAMPLER": "always_on" if observed else "always_off",
    }
    if observed:
        env.update(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}",
            OTEL_EXPORTER_OTLP_INSECURE="true",
        )
    metrics = "127.0.0.1:0" if observed else ""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "agent_training_client", "serve", "--address", "127.0.0.1:0",
            "--data-dir", str(data_dir), "--log-level", "WARNING", "--metrics-address", metrics,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    line = process.stdout.readline()
    match = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    wait_until_settled(process)
    return process, match.group(1)


async def hammer(address: str, seconds: float, call: str) -> float:
    """Calls per second of agent "bench" ("invoke") or the health check, IN_FLIGHT at once."""
    agent_id = "" if call == "health" else "bench"
    texts = ["my card is lost"]
    await drive(address, agent_id, 0.2, 1, texts)  # warm up
    return (await drive(address, agent_id, seconds, IN_FLIGHT, texts))["calls_per_second"]


INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed")


def train(
    address: str,
    intents: tuple[str, ...] | None = INTENTS,
    agent_id: str = "bench",
    few_shot: bool = False,
) -> None:
    """Train ``agent_id`` on the Banking77 training examples of ``intents`` (None: all).

    ``few_shot``: a few_shot agent on 10 examples per intent (bench/few_shot.py's sample).
    """
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    texts, labels = read_split(DEFAULT_DATA / "train.csv")
    if few_shot:
        texts, labels = sample((texts, labels), 10)
    examples = [
        training_pb2.TrainingExample(input=t, expected_output=label)
        for t, label in zip(texts, labels, strict=True)
        if intents is None or label in intents
    ]
    kind = training_pb2.TRAINING_TYPE_SUPERVISED
    if few_shot:
        kind = training_pb2.TRAINING_TYPE_FEW_SHOT
    with AgentTrainingClient(address, timeout=600) as client:
        client.create_agent(agent_id=agent_id)
        events = list(
            client.train_agent(agent_id=agent_id, training_data=examples, training_type=kind)
        )
        if events[-1].finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
            raise RuntimeError(f"training failed: {events[-1].finished.error}")


AGENTS = {"supervised": "bench", "few_shot": "bench-few-shot"}
"""The agents of part "agents", by paradigm."""


async def drive(
    address: str, agent_id: str, seconds: float, in_flight: int, texts: list[str], per_call: int = 1
) -> dict[str, float]:
    """Keep ``in_flight`` calls of ``per_call`` inputs going for ``seconds`` ("" = health check).

    Returns calls and inputs per second, latency p50 and p99 in ms, and the answers received.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from agent_training.v1 import service_pb2, service_pb2_grpc

    latencies: list[float] = []
    answers = 0
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        service = service_pb2_grpc.AgentTrainingServiceStub(channel)
        deadline = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            nonlocal answers
            position = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if not agent_id:
                    await health.Check(health_pb2.HealthCheckRequest())
                else:
                    batch = [texts[(position + k) % len(texts)] for k in range(per_call)]
                    request = (
                        service_pb2.InvokeAgentRequest(agent_id=agent_id, input=batch[0])
                        if per_call == 1
                        else service_pb2.InvokeAgentRequest(agent_id=agent_id, inputs=batch)
                    )
                    response = await service.InvokeAgent(request)
                    answers += len(response.predictions)
                latencies.append(time.perf_counter() - started)
                position += in_flight * per_call

        started = time.perf_counter()
        await asyncio.gather(*(caller(k * 7919) for k in range(in_flight)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "calls_per_second": len(latencies) / elapsed,
        "inputs_per_second": len(latencies) * per_call / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "answers": answers,
    }


def stored_invocations(data_dir: Path) -> dict[str, int]:
    """Answers stored per agent, read from the stopped server's SQLite file."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "agent_training.sqlite3")) as db:
        rows = db.execute("SELECT agent_id, COUNT(*) FROM invocations GROUP BY agent_id")
        return dict(rows.fetchall())


def agents_part(seconds: float, rounds: int, paradigms: list[str]) -> dict:
    """Health check, supervised and few_shot agents on one server with its defaults."""
    texts, _labels = read_split(DEFAULT_DATA / "test.csv")
    agents = {name: AGENTS[name] for name in paradigms}
    targets = {"health": "", **agents}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    answers = dict.fromkeys(agents.values(), 0)

    def measure(agent_id: str, *args: int) -> dict[str, float]:
        result = asyncio.run(drive(address, agent_id, *args))
        if agent_id:
            answers[agent_id] += int(result["answers"])
        return result

    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        os.environ.pop("OTEL_TRACES_SAMPLER", None)  # the default sampling: every request
        process, address = start_service(data_dir, "--metrics-address", "127.0.0.1:0")
        try:
            for name, agent_id in agents.items():
                train(address, None, agent_id, few_shot=name == "few_shot")
            wait_until_settled(process)
            for agent_id in agents.values():
                measure(agent_id, 2.0, IN_FLIGHT, texts)  # models loaded, caches warm
            for _ in range(rounds):
                for name, agent_id in targets.items():
                    runs[name].append(measure(agent_id, seconds, IN_FLIGHT, texts))
            alone = {
                name: measure(agent_id, seconds, 1, texts) for name, agent_id in targets.items()
            }
            batch_256 = {
                name: measure(agent_id, seconds, 1, texts, 256) for name, agent_id in agents.items()
            }
        finally:
            process.terminate()  # graceful: the answers still in memory are stored
            process.wait(60)
        stored = stored_invocations(data_dir)
    median = {
        name: {key: statistics.median(run[key] for run in values) for key in values[0]}
        for name, values in runs.items()
    }
    health = median["health"]["calls_per_second"]
    supervised = median.get("supervised", {}).get("calls_per_second", float("nan"))
    few_shot = median.get("few_shot", {}).get("calls_per_second", float("nan"))
    return {
        "in_flight_32": median,
        "in_flight_1": alone,
        "batch_256": batch_256,
        "runs": runs,
        "supervised_vs_health": supervised / health,
        "few_shot_vs_supervised": few_shot / supervised,
        "answers_sent": answers,
        "invocations_stored": {agent_id: stored.get(agent_id, 0) for agent_id in answers},
    }


def print_agents(result: dict, rounds: int) -> None:
    print(f"InvokeAgent on a server with its defaults, {os.cpu_count()} cores (median of {rounds})")
    print(f"{'':12} {'32 in flight':>14} {'p50 ms':>8} {'p99 ms':>8} {'alone p50':>10}"
          f" {'alone p99':>10} {'256/call inputs/s':>18}")  # fmt: skip
    for name in result["in_flight_32"]:
        busy, alone = result["in_flight_32"][name], result["in_flight_1"][name]
        batch = result["batch_256"].get(name, {}).get("inputs_per_second", float("nan"))
        print(f"{name:12} {busy['calls_per_second']:11,.0f}/s {busy['p50_ms']:8.2f}"
              f" {busy['p99_ms']:8.2f} {alone['p50_ms']:10.2f} {alone['p99_ms']:10.2f}"
              f" {batch:18,.0f}")  # fmt: skip
    print(
        f"supervised / health = {result['supervised_vs_health']:.1%};"
        f" few_shot / supervised = {result['few_shot_vs_supervised']:.1%}"
    )
    print(f"answers sent {result['answers_sent']}; stored {result['invocations_stored']}")


def observability_part(seconds: float, rounds: int) -> dict:
    """Metrics and tracing on (spans exported) against both off, and the health check."""
    runs: dict[str, list[float]] = {"observed": [], "quiet": [], "health": []}
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = serve(Path(data_dir), observed=False)
        try:
            train(address)
        finally:
            process.terminate()
            process.wait(30)
        sink, sink_port = start_sink()
        for _ in range(rounds):
            for name in ("observed", "quiet"):
                process, address = serve(Path(data_dir), name == "observed", sink_port)
                try:
                    runs[name].append(asyncio.run(hammer(address, seconds, "invoke")))
                    if name == "quiet":
                        runs["health"].append(asyncio.run(hammer(address, seconds, "health")))
                finally:
                    process.terminate()
                    process.wait(30)
        sink.terminate()
        _out, sink_report = sink.communicate(timeout=30)
    spans_exported = int(re.search(r"received (\d+) spans", sink_report).group(1))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    results = {
        "calls_per_second": medians,
        "runs": runs,
        "observed_vs_quiet": medians["observed"] / medians["quiet"],
        "quiet_vs_health": medians["quiet"] / medians["health"],
        "spans_exported": spans_exported,
    }
    return results


def print_observability(results: dict, rounds: int) -> None:
    medians = results["calls_per_second"]
    spans_exported = results["spans_exported"]
    print(f"InvokeAgent, {IN_FLIGHT} calls in flight, {os.cpu_count()} cores (median of {rounds})")
    print(f"metrics and tracing on:  {medians['observed']:8,.0f} calls/s"
          f" ({spans_exported:,} spans exported over OTLP)")  # fmt: skip
    print(f"metrics and tracing off: {medians['quiet']:8,.0f} calls/s")
    print(f"health check (ceiling):  {medians['health']:8,.0f} calls/s")
    print(
        f"on / off = {results['observed_vs_quiet']:.1%};"
        f" off / health = {results['quiet_vs_health']:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part", choices=("agents", "observability", "all"), default="all")
    parser.add_argument("--paradigms", nargs="+", choices=tuple(AGENTS), default=list(AGENTS))
    args = parser.parse_args()
    results = {}
    if args.part in ("agents", "all"):
        results["agents"] = agents_part(args.seconds, args.rounds, args.paradigms)
        print_agents(results["agents"], args.rounds)
    if args.part in ("observability", "all"):
        results["observability"] = observability_part(args.seconds, args.rounds)
        print_observability(results["observability"], args.rounds)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "invoke_throughput.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

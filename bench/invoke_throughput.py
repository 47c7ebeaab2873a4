"""InvokeAgent throughput with metrics and tracing on, off, and a bare health check, in one run.

An agent is trained once (supervised, 5 Banking77 intents); then the server is started on the
same data twice:
- observed: Prometheus metrics on, every request traced (OTEL_TRACES_SAMPLER=always_on) and its
  spans exported over OTLP/gRPC to a sink process (bench/otlp_sink.py) that counts them;
- quiet: metrics off (--metrics-address ""), no request traced (OTEL_TRACES_SAMPLER=always_off).
Against each, an asyncio client keeps 32 InvokeAgent calls (one input each) in flight for
`--seconds`; and against the quiet server, the same for grpc.health.v1 Check, the ceiling of any
unary RPC here. Each server is measured once its child processes (training workers, span
exporter) have finished starting. Rounds alternate (five each by default); medians are reported.
Writes bench/results/invoke_throughput.json.
Usage: python bench/invoke_throughput.py [--seconds 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, read_split

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
    """Calls per second with IN_FLIGHT concurrent callers for `seconds`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from agent_training.v1 import service_pb2, service_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        if call == "health":
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            method = stub.Check
        else:
            stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
            request = service_pb2.InvokeAgentRequest(agent_id="bench", input="my card is lost")
            method = stub.InvokeAgent
        for _ in range(50):  # warm up
            await method(request)
        done = 0
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await method(request)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
        return done / (time.perf_counter() - started)


INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed")


def train(address: str, intents: tuple[str, ...] | None = INTENTS) -> None:
    """Train agent "bench" on the Banking77 training examples of ``intents`` (None: all)."""
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    texts, labels = read_split(DEFAULT_DATA / "train.csv")
    examples = [
        training_pb2.TrainingExample(input=t, expected_output=label)
        for t, label in zip(texts, labels, strict=True)
        if intents is None or label in intents
    ]
    with AgentTrainingClient(address, timeout=600) as client:
        client.create_agent(agent_id="bench")
        events = list(client.train_agent(agent_id="bench", training_data=examples))
        if events[-1].finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
            raise RuntimeError("training failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"observed": [], "quiet": [], "health": []}
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = serve(Path(data_dir), observed=False)
        try:
            train(address)
        finally:
            process.terminate()
            process.wait(30)
        sink, sink_port = start_sink()
        for _ in range(args.rounds):
            for name in ("observed", "quiet"):
                process, address = serve(Path(data_dir), name == "observed", sink_port)
                try:
                    runs[name].append(asyncio.run(hammer(address, args.seconds, "invoke")))
                    if name == "quiet":
                        runs["health"].append(asyncio.run(hammer(address, args.seconds, "health")))
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
    cores = os.cpu_count()
    print(f"InvokeAgent, {IN_FLIGHT} calls in flight, {cores} cores (median of {args.rounds})")
    print(f"metrics and tracing on:  {medians['observed']:8,.0f} calls/s"
          f" ({spans_exported:,} spans exported over OTLP)")  # fmt: skip
    print(f"metrics and tracing off: {medians['quiet']:8,.0f} calls/s")
    print(f"health check (ceiling):  {medians['health']:8,.0f} calls/s")
    print(
        f"on / off = {results['observed_vs_quiet']:.1%};"
        f" off / health = {results['quiet_vs_health']:.1%}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "invoke_throughput.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

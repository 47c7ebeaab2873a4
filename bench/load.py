"""Load: many concurrent clients driving mixed RPCs while two jobs train.

1. Starts the service (``agent-training serve``, two training workers) on a free loopback port
   with a fresh data folder, trains a small agent (so InvokeAgent answers and finished jobs
   exist), then starts two long training jobs on the full Banking77 training set.
2. Opens `--clients` clients (each its own channel, so its own connection), each calling in a
   closed loop for `--seconds` or until `--max-requests` calls in all: health checks, GetAgent,
   ListAgents, InvokeAgent, GetTrainingJob, ListTrainingJobs, WatchTrainingJob (a finished job's
   whole log, or the first events of a live one), and now and then a TrainAgent that the
   per-tenant job limit must refuse (the deliberate RESOURCE_EXHAUSTED).
3. Reports throughput, errors by status code, p50/p99 latency per RPC, and the server process's
   resident memory before, right after, and `--settle` seconds after the load.

Loopback only, bounded in time and requests. Memory is read from /proc (Linux).
Writes bench/results/load.json.
Usage: python bench/load.py [--clients 200] [--seconds 60] [--max-requests 2000000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
from banking77 import DEFAULT_DATA, REPO, read_split
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent_training.v1 import service_pb2, service_pb2_grpc, training_pb2

CALL_TIMEOUT = 30.0
MIX = {
    "Health.Check": 20,
    "GetAgent": 15,
    "ListAgents": 8,
    "InvokeAgent": 25,
    "GetTrainingJob": 10,
    "ListTrainingJobs": 6,
    "WatchTrainingJob(finished)": 8,
    "WatchTrainingJob(live)": 4,
    "TrainAgent(over limit)": 4,
}
"""Relative weight of each call in the mix."""
DELIBERATE = {"TrainAgent(over limit)": "RESOURCE_EXHAUSTED"}
"""The one error each of these calls is expected to get."""


def serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """Start the service on a free loopback port; return the process and its address."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "agent_training_client", "serve", "--address", "127.0.0.1:0",
            "--data-dir", str(data_dir / "data"), "--log-level", "WARNING", "--workers", "2",
            "--torch-threads", "1", "--max-jobs-per-tenant", "2", "--metrics-address", "",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )  # fmt: skip
    line = process.stdout.readline()
    match = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    return process, match.group(1)


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB (from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kilobytes = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return kilobytes / 1024


class Recorder:
    """Latencies and outcomes of every call."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def record(self, name: str, seconds: float, outcome: str) -> None:
        """Note one finished call."""
        self.latency[name].append(seconds)
        self.outcomes[name][outcome] += 1

    def total(self) -> int:
        """Calls recorded."""
        return sum(sum(counter.values()) for counter in self.outcomes.values())


async def prepare(address: str, train: tuple[list[str], list[str]]) -> dict[str, str]:
    """A trained agent, its finished job, and two long jobs training on another agent."""
    texts, labels = train
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        for agent_id in ("load", "load-long"):
            await stub.CreateAgent(service_pb2.CreateAgentRequest(agent_id=agent_id))
        small = [
            training_pb2.TrainingExample(input=text, expected_output=label)
            for text, label in zip(texts[:2000], labels[:2000], strict=True)
        ]
        finished = ""
        async for response in stub.TrainAgent(
            service_pb2.TrainAgentRequest(agent_id="load", training_data=small)
        ):
            finished = response.event.training_id
        everything = [
            training_pb2.TrainingExample(input=text, expected_output=label)
            for text, label in zip(texts, labels, strict=True)
        ]
        # Long jobs: many epochs, early stopping off; they are cancelled after the load.
        config = training_pb2.TrainingConfig(epochs=1000, validation_split=0.1)
        config.early_stopping.patience = 0
        live = []
        for _ in range(2):
            call = stub.TrainAgent(
                service_pb2.TrainAgentRequest(
                    agent_id="load-long", training_data=everything, config=config
                )
            )
            async for response in call:
                live.append(response.event.training_id)
                break
            call.cancel()  # the job goes on without its first subscriber
    return {"agent": "load", "finished_job": finished, "live_jobs": ",".join(live)}


def calls(
    channel: grpc.aio.Channel, ids: dict[str, str], inputs: list[str]
) -> dict[str, Callable[[], Awaitable[None]]]:
    """One coroutine function per call of the mix, on this client's channel."""
    stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    live_jobs = ids["live_jobs"].split(",")
    tiny = [
        training_pb2.TrainingExample(input="a", expected_output="x"),
        training_pb2.TrainingExample(input="b", expected_output="y"),
    ]

    async def watch(training_id: str, most: int) -> None:
        call = stub.WatchTrainingJob(
            service_pb2.WatchTrainingJobRequest(training_id=training_id), timeout=CALL_TIMEOUT
        )
        read = 0
        async for _event in call:
            read += 1
            if read >= most:
                call.cancel()
                return

    return {
        "Health.Check": lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT),
        "GetAgent": lambda: stub.GetAgent(
            service_pb2.GetAgentRequest(agent_id=ids["agent"]), timeout=CALL_TIMEOUT
        ),
        "ListAgents": lambda: stub.ListAgents(
            service_pb2.ListAgentsRequest(page_size=10), timeout=CALL_TIMEOUT
        ),
        "InvokeAgent": lambda: stub.InvokeAgent(
            service_pb2.InvokeAgentRequest(agent_id=ids["agent"], input=random.choice(inputs)),
            timeout=CALL_TIMEOUT,
        ),
        "GetTrainingJob": lambda: stub.GetTrainingJob(
            service_pb2.GetTrainingJobRequest(training_id=random.choice(live_jobs)),
            timeout=CALL_TIMEOUT,
        ),
        "ListTrainingJobs": lambda: stub.ListTrainingJobs(
            service_pb2.ListTrainingJobsRequest(page_size=10), timeout=CALL_TIMEOUT
        ),
        "WatchTrainingJob(finished)": lambda: watch(ids["finished_job"], 1_000_000),
        "WatchTrainingJob(live)": lambda: watch(random.choice(live_jobs), 2),
        "TrainAgent(over limit)": lambda: watch_train(stub, tiny),
    }


async def watch_train(stub: service_pb2_grpc.AgentTrainingServiceStub, examples: list) -> None:
    """A TrainAgent the per-tenant job limit refuses while the two long jobs run."""
    call = stub.TrainAgent(
        service_pb2.TrainAgentRequest(agent_id="load-long", training_data=examples),
        timeout=CALL_TIMEOUT,
    )
    async for _event in call:
        call.cancel()  # accepted: the limit did not hold (counted as OK, reported)
        return


async def client(
    address: str,
    ids: dict[str, str],
    inputs: list[str],
    recorder: Recorder,
    stop_at: float,
    budget: list[int],
) -> None:
    """One client: its own channel, calls drawn from MIX until the time or budget runs out."""
    names, weights = list(MIX), list(MIX.values())
    async with grpc.aio.insecure_channel(address) as channel:
        table = calls(channel, ids, inputs)
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            name = random.choices(names, weights)[0]
            started = time.perf_counter()
            try:
                await table[name]()
                outcome = "OK"
            except grpc.aio.AioRpcError as error:
                outcome = error.code().name
            recorder.record(name, time.perf_counter() - started, outcome)


async def drive(
    address: str, ids: dict[str, str], inputs: list[str], args: argparse.Namespace
) -> tuple[Recorder, float]:
    recorder = Recorder()
    budget = [args.max_requests]
    started = time.perf_counter()
    stop_at = started + args.seconds
    await asyncio.gather(
        *(client(address, ids, inputs, recorder, stop_at, budget) for _ in range(args.clients))
    )
    return recorder, time.perf_counter() - started


async def cancel_jobs(address: str, training_ids: list[str]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        for training_id in training_ids:
            job = await stub.GetTrainingJob(
                service_pb2.GetTrainingJobRequest(training_id=training_id)
            )
            if job.job.status in (
                training_pb2.TRAINING_STATUS_QUEUED,
                training_pb2.TRAINING_STATUS_RUNNING,
            ):
                await stub.CancelTrainingJob(
                    service_pb2.CancelTrainingJobRequest(training_id=training_id)
                )


def summarise(recorder: Recorder, elapsed: float) -> dict:
    per_rpc = {}
    unexpected: collections.Counter[str] = collections.Counter()
    deliberate: collections.Counter[str] = collections.Counter()
    for name, latencies in sorted(recorder.latency.items()):
        outcomes = recorder.outcomes[name]
        for outcome, count in outcomes.items():
            if outcome == "OK":
                continue
            if DELIBERATE.get(name) == outcome:
                deliberate[outcome] += count
            else:
                unexpected[outcome] += count
        milliseconds = np.array(latencies) * 1000
        per_rpc[name] = {
            "calls": len(latencies),
            "p50_ms": float(np.percentile(milliseconds, 50)),
            "p99_ms": float(np.percentile(milliseconds, 99)),
            "outcomes": dict(outcomes),
        }
    total = recorder.total()
    return {
        "calls": total,
        "seconds": elapsed,
        "calls_per_second": total / elapsed,
        "unexpected_errors": dict(unexpected),
        "deliberate_errors": dict(deliberate),
        "per_rpc": per_rpc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument(
        "--rounds", type=int, default=1, help="load rounds (figures are from the first)"
    )
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before the last RSS")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    train = read_split(args.data / "train.csv")
    inputs = read_split(args.data / "test.csv")[0]
    with tempfile.TemporaryDirectory() as folder:
        process, address = serve(Path(folder))
        try:
            ids = asyncio.run(prepare(address, train))
            # Warm up (the agent's model loads on its first call), so growth means growth.
            asyncio.run(drive(address, ids, inputs, argparse.Namespace(
                clients=4, seconds=3.0, max_requests=400
            )))  # fmt: skip
            load_before = os.getloadavg()[0]
            rss_before = rss_mb(process.pid)
            recorder, elapsed = asyncio.run(drive(address, ids, inputs, args))
            rss_after = rss_mb(process.pid)
            rss_rounds = [rss_after]
            for _ in range(args.rounds - 1):  # later rounds tell growth from a leak
                asyncio.run(drive(address, ids, inputs, args))
                rss_rounds.append(rss_mb(process.pid))
            load_after = os.getloadavg()[0]
            asyncio.run(cancel_jobs(address, ids["live_jobs"].split(",")))
            time.sleep(args.settle)
            rss_settled = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    result = {
        "clients": args.clients,
        **summarise(recorder, elapsed),
        "server_rss_mb": {
            "before": rss_before,
            "after": rss_after,
            "after_each_round": rss_rounds,
            "settled": rss_settled,
        },
        "live_jobs": ids["live_jobs"].split(","),
        "machine": {"cores": os.cpu_count(), "load_average_1m": [load_before, load_after]},
    }
    report(result)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "load.json").write_text(json.dumps(result, indent=2) + "\n")


def report(result: dict) -> None:
    print(
        f"{result['clients']} clients, {result['seconds']:.1f} s: {result['calls']:,} calls,"
        f" {result['calls_per_second']:,.0f}/s"
    )
    print(f"unexpected errors: {result['unexpected_errors'] or 'none'}")
    print(f"deliberate errors: {result['deliberate_errors']}")
    print(f"{'rpc':28} {'calls':>8} {'p50 ms':>8} {'p99 ms':>8}  outcomes")
    for name, row in result["per_rpc"].items():
        print(
            f"{name:28} {row['calls']:>8,} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}"
            f"  {row['outcomes']}"
        )
    machine = result["machine"]
    print(
        f"machine: {machine['cores']} cores, 1-minute load average"
        f" {machine['load_average_1m'][0]:.1f} before, {machine['load_average_1m'][1]:.1f} after"
    )
    rss = result["server_rss_mb"]
    print(
        f"server RSS: {rss['before']:.0f} MB before, {rss['after']:.0f} MB after,"
        f" {rss['settled']:.0f} MB after settling; after each round"
        f" {', '.join(f'{value:.0f}' for value in rss['after_each_round'])} MB"
    )


if __name__ == "__main__":
    main()

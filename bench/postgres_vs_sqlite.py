"""The service on PostgreSQL against the service on SQLite, in one run.

Each round starts the service (`agent-training serve`, default settings) on a fresh store twice,
alternating: on SQLite in its data folder, and with --database-url on a fresh database of a
PostgreSQL server this script starts on loopback (scripts/postgres.sh, Debian's server, default
settings: every commit flushed to its WAL). Against each, in this order:
- TrainAgent: the first job of the fresh server, a supervised agent on the whole Banking77
  train.csv (the request sent to the finished event received);
- InvokeAgent: 32 calls in flight (one input each) for `--seconds`;
- CreateAgent: 32 calls in flight for `--seconds`, each a write transaction committed durably
  before its reply.
Medians over rounds are reported with their spread. Writes bench/results/postgres_vs_sqlite.json.
Usage: python bench/postgres_vs_sqlite.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, read_split, start_service
from invoke_throughput import wait_until_settled

IN_FLIGHT = 32
POSTGRES = REPO / "scripts" / "postgres.sh"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Postgres:
    """A PostgreSQL server in a temporary folder, for the length of the benchmark."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
        self.folder.chmod(0o755)  # as root the server runs as nobody (scripts/postgres.sh)
        self.port = free_port()
        subprocess.run([str(POSTGRES), "start", str(self.folder / "cluster"), str(self.port)],
                       check=True, cwd=REPO)  # fmt: skip
        self._names = itertools.count(1)

    def fresh_database(self) -> str:
        """The URL of a new, empty database."""
        import psycopg

        name = f"bench_{next(self._names)}"
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        subprocess.run([str(POSTGRES), "stop", str(self.folder / "cluster")], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def serve(data_dir: Path, database_url: str) -> tuple[subprocess.Popen, str]:
    flags = ["--metrics-address", ""] + (["--database-url", database_url] if database_url else [])
    process, address = start_service(data_dir, *flags)
    wait_until_settled(process)
    return process, address


def train_seconds(address: str, examples: list) -> float:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    with AgentTrainingClient(address, timeout=300) as client:
        client.create_agent(agent_id="bench")
        started = time.perf_counter()
        events = list(client.train_agent(agent_id="bench", training_data=examples))
        seconds = time.perf_counter() - started
    if events[-1].finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
        raise RuntimeError("training failed")
    return seconds


async def calls_per_second(address: str, seconds: float, call: str) -> float:
    """Calls per second of InvokeAgent or CreateAgent with IN_FLIGHT callers."""
    import grpc

    from agent_training.v1 import service_pb2, service_pb2_grpc

    names = itertools.count()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)

        def request():
            if call == "invoke":
                return stub.InvokeAgent(
                    service_pb2.InvokeAgentRequest(agent_id="bench", input="my card is lost")
                )
            return stub.CreateAgent(service_pb2.CreateAgentRequest(agent_id=f"a{next(names)}"))

        for _ in range(20):  # warm up
            await request()
        done = 0
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await request()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
        return done / (time.perf_counter() - started)


def measure(database_url: str, examples: list, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = serve(Path(data_dir), database_url)
        try:
            return {
                "train_seconds": train_seconds(address, examples),
                "invoke_per_second": asyncio.run(calls_per_second(address, seconds, "invoke")),
                "create_per_second": asyncio.run(calls_per_second(address, seconds, "create")),
            }
        finally:
            process.terminate()
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from agent_training.v1 import training_pb2

    texts, labels = read_split(DEFAULT_DATA / "train.csv")
    examples = [
        training_pb2.TrainingExample(input=t, expected_output=label)
        for t, label in zip(texts, labels, strict=True)
    ]
    load_before = os.getloadavg()[0]
    postgres = Postgres()
    runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
    try:
        for _ in range(args.rounds):
            runs["sqlite"].append(measure("", examples, args.seconds))
            runs["postgres"].append(measure(postgres.fresh_database(), examples, args.seconds))
    finally:
        postgres.stop()
    load_after = os.getloadavg()[0]
    medians = {
        store: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for store, rounds in runs.items()
    }
    ratios = {key: medians["postgres"][key] / medians["sqlite"][key] for key in medians["sqlite"]}
    results = {"medians": medians, "postgres_over_sqlite": ratios, "runs": runs,
               "examples": len(examples), "cores": os.cpu_count(),
               "load": [load_before, load_after]}  # fmt: skip
    out = Path(__file__).with_name("results") / "postgres_vs_sqlite.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"PostgreSQL vs SQLite, {os.cpu_count()} cores, load {load_before:.1f} ->"
          f" {load_after:.1f}, median of {args.rounds} rounds")  # fmt: skip
    print(f"{'':28} {'SQLite':>10} {'PostgreSQL':>11} {'ratio':>7}  per round (SQLite | PG)")
    for key, label in (("train_seconds", "TrainAgent, first job (s)"),
                       ("invoke_per_second", "InvokeAgent calls/s"),
                       ("create_per_second", "CreateAgent calls/s")):  # fmt: skip
        spread = (", ".join(f"{r[key]:.2f}" for r in runs["sqlite"]) + " | "
                  + ", ".join(f"{r[key]:.2f}" for r in runs["postgres"]))  # fmt: skip
        print(f"{label:28} {medians['sqlite'][key]:10.2f} {medians['postgres'][key]:11.2f}"
              f" {ratios[key]:7.2f}  {spread}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Whether another tenant's ids answer NOT_FOUND in the same time as ids that exist nowhere.

The answers are identical byte for byte (tests/test_tenancy_matrix.py); this measures the time,
which would otherwise tell a caller which ids exist. The service is started as `make run` starts
it (agent-training-server, metrics on, default tracing) with authentication on and two tenants.
Tenant A creates agents (the first one trained, the others each with a long training job that
stays queued or running, held in the server's memory, during the measurement: the training
worker is paused with SIGSTOP meanwhile, so that its training adds no noise), uploads datasets,
runs analyses and gets answers; tenant B then calls GetAgent, GetDataset, InvokeAgent,
GetTrainingJob (A's finished job and its unfinished ones), GetAnalysisJob and RecordFeedback
(on B's own agent, with A's invocation ids) with ids of three classes:
- other: A's ids, which exist;
- missing: ids of the same shape that exist nowhere;
- control: a second, different set of missing ids.
`--calls` calls per method and class, all shuffled together and made one at a time over one
channel, after a warm-up; each call is timed at the client. Per method it reports the median of
each class, the gap |median(other) - median(missing)| and the spread |median(missing) -
median(control)| of two classes that cannot differ. A method passes when the gap is at most
0.05 ms or within that spread. Exits 1 when one does not. Writes bench/results/tenant_timing.json.
Usage: python bench/tenant_timing.py [--calls 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOKENS = {"tenant-a": "bench-tenant-a-token-0001", "tenant-b": "bench-tenant-b-token-0001"}
IDS_PER_CLASS = 8
"""Distinct ids per class: calls cycle through them, as a caller probing ids would repeat some."""
WARM_UP = 50
TOLERANCE_MS = 0.05
METHODS = (
    "GetAgent",
    "GetDataset",
    "InvokeAgent",
    "GetTrainingJob",
    "GetAnalysisJob",
    "RecordFeedback",
)
CLASSES = ("other", "missing", "control")
EXAMPLES = {
    "card_arrival": ["where is my card", "my card has not arrived", "card still not here"],
    "lost_card": ["I lost my card", "my card was stolen", "cannot find my card"],
    "refund": ["I want a refund", "give my money back", "refund my payment"],
}


def serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """Start the service as `make run` does, with a token file; return it and its address."""
    token_file = data_dir / "tokens.json"
    token_file.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": tenant, "token": token, "tenant": tenant, "scopes": ["admin"]}
                    for tenant, token in TOKENS.items()
                ]
            }
        )
    )
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("agent-training-server")),
            "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
            "--data-dir", str(data_dir / "data"), "--auth-token-file", str(token_file),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    line = process.stdout.readline()
    match = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    return process, match.group(1)


def tenant_a_ids(stub: Any, metadata: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Make tenant A's objects (see the module's docstring); return their ids by method."""
    from agent_training.v1 import service_pb2, training_pb2

    examples = [
        training_pb2.TrainingExample(input=text, expected_output=output)
        for output, texts in EXAMPLES.items()
        for text in texts
    ]
    agents = [
        stub.CreateAgent(service_pb2.CreateAgentRequest(), metadata=metadata).agent.agent_id
        for _ in range(IDS_PER_CLASS)
    ]
    request = service_pb2.TrainAgentRequest(
        agent_id=agents[0],
        training_data=examples,
        config=training_pb2.TrainingConfig(epochs=1, validation_split=0.0),
    )
    events = list(stub.TrainAgent(request, metadata=metadata, timeout=300))
    if events[-1].event.finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
        raise RuntimeError(f"training failed: {events[-1]}")
    jobs = [events[0].event.training_id] + [
        unfinished_job(stub, metadata, agent_id, examples) for agent_id in agents[1:]
    ]
    uploads = [
        service_pb2.UploadDatasetRequest(name=f"bench-{secrets.token_hex(4)}", examples=examples)
        for _ in range(IDS_PER_CLASS)
    ]
    datasets = [
        stub.UploadDataset(iter([upload]), metadata=metadata).dataset.dataset_id
        for upload in uploads
    ]
    analyses = [finished_analysis(stub, metadata, agents[0], examples) for _ in agents]
    invocations = [
        stub.InvokeAgent(
            service_pb2.InvokeAgentRequest(agent_id=agents[0], input="my card"), metadata=metadata
        )
        .predictions[0]
        .invocation_id
        for _ in agents
    ]
    return {
        "GetAgent": agents,
        "InvokeAgent": agents,
        "GetDataset": datasets,
        "GetTrainingJob": jobs,
        "GetAnalysisJob": analyses,
        "RecordFeedback": invocations,
    }


def unfinished_job(stub: Any, metadata: list[tuple[str, str]], agent_id: str, examples) -> str:
    """Start a training job long enough to outlast the measurement; return its id."""
    from agent_training.v1 import service_pb2, training_pb2

    request = service_pb2.TrainAgentRequest(
        agent_id=agent_id,
        training_data=examples,
        config=training_pb2.TrainingConfig(
            epochs=1000, validation_split=0.0, early_stopping=training_pb2.EarlyStopping(patience=0)
        ),
    )
    stream = stub.TrainAgent(request, metadata=metadata, timeout=3600)
    training_id = next(stream).event.training_id
    stream.cancel()  # leaving the stream leaves the job running
    return training_id


def finished_analysis(stub: Any, metadata: list[tuple[str, str]], agent_id: str, examples) -> str:
    """Run an analysis of the agent to its end; return its id."""
    from agent_training.v1 import service_pb2

    request = service_pb2.AnalyzeAndOptimizeStreamRequest(
        request=service_pb2.AnalyzeAndOptimizeRequest(agent_id=agent_id, evaluation_data=examples)
    )
    messages = list(stub.AnalyzeAndOptimizeStream(request, metadata=metadata, timeout=300))
    if not messages[-1].HasField("result"):
        raise RuntimeError(f"analysis failed: {messages[-1]}")
    return messages[0].accepted.analysis_id


def worker_pids(server_pid: int) -> list[int]:
    """The server's training workers: its children started through multiprocessing's spawn."""
    pids = []
    for process in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((process / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            command = (process / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if parent == server_pid and b"spawn_main" in command:
            pids.append(int(process.name))
    return pids


def missing_ids(like: list[str]) -> list[str]:
    """Ids shaped like the server's (prefix and 16 hex digits) that exist nowhere."""
    return [f"{name.split('_')[0]}_{secrets.token_hex(8)}" for name in like]


def requests_of(method: str) -> Callable[[str], Any]:
    from agent_training.v1 import service_pb2

    return {
        "GetAgent": lambda i: service_pb2.GetAgentRequest(agent_id=i),
        "GetDataset": lambda i: service_pb2.GetDatasetRequest(dataset_id=i),
        "InvokeAgent": lambda i: service_pb2.InvokeAgentRequest(agent_id=i, input="my card"),
        "GetTrainingJob": lambda i: service_pb2.GetTrainingJobRequest(training_id=i),
        "GetAnalysisJob": lambda i: service_pb2.GetAnalysisJobRequest(analysis_id=i),
    }[method]


def feedback_request(agent_id: str) -> Callable[[str], Any]:
    """RecordFeedback of tenant B's own agent on the answer with the given id."""
    from agent_training.v1 import service_pb2

    return lambda i: service_pb2.RecordFeedbackRequest(
        agent_id=agent_id, invocation_id=i, feedback="correct"
    )


def measure(
    address: str, calls: int, seed: int, server_pid: int
) -> dict[str, dict[str, list[float]]]:
    """Milliseconds of each call, by method and class, tenant B calling."""
    import grpc

    from agent_training.v1 import service_pb2, service_pb2_grpc

    rng = random.Random(seed)
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        own = tenant_a_ids(stub, [("authorization", f"Bearer {TOKENS['tenant-a']}")])
        for pid in worker_pids(server_pid):
            os.kill(pid, signal.SIGSTOP)  # the unfinished jobs stay so, without training noise
        ids = {
            method: {"other": own[method]} | {c: missing_ids(own[method]) for c in CLASSES[1:]}
            for method in METHODS
        }
        plan = [
            (method, kind, ids[method][kind][n % IDS_PER_CLASS])
            for method in METHODS
            for kind in CLASSES
            for n in range(calls)
        ]
        rng.shuffle(plan)
        metadata = [("authorization", f"Bearer {TOKENS['tenant-b']}")]
        callables = {method: getattr(stub, method) for method in METHODS}
        requests = {method: requests_of(method) for method in METHODS if method != "RecordFeedback"}
        own_agent = stub.CreateAgent(service_pb2.CreateAgentRequest(), metadata=metadata)
        requests["RecordFeedback"] = feedback_request(own_agent.agent.agent_id)

        def call(method: str, kind: str, name: str) -> float:
            request = requests[method](name)
            started = time.perf_counter()
            try:
                callables[method](request, metadata=metadata, timeout=30)
            except grpc.RpcError as error:
                elapsed = time.perf_counter() - started
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise RuntimeError(f"{method} {kind}: {error.code()}") from error
                return elapsed * 1000
            raise RuntimeError(f"{method} of {kind} id {name} answered: tenant B sees it")

        for method, kind, name in rng.sample(plan, WARM_UP * len(METHODS)):
            call(method, kind, name)
        times: dict[str, dict[str, list[float]]] = {m: {c: [] for c in CLASSES} for m in METHODS}
        for method, kind, name in plan:
            times[method][kind].append(call(method, kind, name))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per method and class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        process, address = serve(Path(folder))
        try:
            load_before = os.getloadavg()[0]
            times = measure(address, args.calls, args.seed, process.pid)
            load_after = os.getloadavg()[0]
        finally:
            for pid in worker_pids(process.pid):
                os.kill(pid, signal.SIGCONT)
            process.terminate()
            process.wait(30)
    results: dict[str, Any] = {
        "calls": args.calls,
        "cores": os.cpu_count(),
        "load": [load_before, load_after],
        "methods": {},
    }
    print(
        f"tenant B, NOT_FOUND answers, {args.calls} calls per class, {os.cpu_count()} cores,"
        f" load {load_before:.1f} -> {load_after:.1f}; medians in ms"
    )
    print(f"{'method':<12} {'other':>7} {'missing':>8} {'control':>8} {'gap':>6} {'spread':>7}")
    failed = []
    for method in METHODS:
        medians = {kind: statistics.median(times[method][kind]) for kind in CLASSES}
        gap = abs(medians["other"] - medians["missing"])
        spread = abs(medians["missing"] - medians["control"])
        passed = gap <= TOLERANCE_MS or gap <= spread
        results["methods"][method] = {
            "median_ms": medians,
            "gap_ms": gap,
            "spread_ms": spread,
            "passed": passed,
        }
        if not passed:
            failed.append(method)
        print(
            f"{method:<12} {medians['other']:7.3f} {medians['missing']:8.3f}"
            f" {medians['control']:8.3f} {gap:6.3f} {spread:7.3f}  {'ok' if passed else 'FAIL'}"
        )
    print(
        f"pass: gap <= {TOLERANCE_MS} ms or gap <= spread;"
        f" {'all pass' if not failed else 'failed: ' + ', '.join(failed)}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tenant_timing.json").write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

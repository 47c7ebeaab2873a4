"""Where an InvokeAgent call's time goes: a sampling profile of the server under load, by stage.

The service starts with its defaults (metrics on, default trace sampling) and trains a supervised
agent on the whole Banking77 train.csv; then a client process keeps 32 single-input InvokeAgent
calls in flight for `--seconds` while py-spy samples every thread of the server process (only
samples where a thread runs, not where it waits), each put in a stage (featurising, scoring,
lookup, validation, the gRPC runtime, the event loop...). Prints the share of each stage and
the calls per second of the run, and writes bench/results/invoke_profile.json. A sample goes to
the stage of its innermost frame of the service's own code (numpy inside the featuriser is
featurising), else to that of its innermost library frame.
Needs py-spy (in the dev extras) and permission to attach to a child process.
Usage: python bench/invoke_profile.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from banking77 import REPO, start_service
from invoke_throughput import hammer, train, wait_until_settled

OUR_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (stage, substrings of a frame "function (file:line)") for the service's own code.
    ("featurising the text", ("text_features.py",)),
    ("scoring (model forward)", ("engines/",)),
    ("answer recording (write-behind)", ("services/feedback.py", "record_invocations")),
    ("store and lookup", ("read_cache.py", "store/", "_version (")),
    ("behaviour and answer building", ("apply_behavior", "answer_to_proto")),
    ("request validation", ("api/validation.py", "field_limits.py")),
    ("metrics", ("agent_training_server/metrics.py",)),
    ("tracing (spans)", ("agent_training_server/telemetry.py",)),
    (
        "our interceptors",
        (
            "call_guard.py",
            "error_translation.py",
            "open_calls.py",
            "stream_tasks.py",
            "agent_training_server/auth/",
        ),
    ),
    ("handler and service (rest)", ("handlers/inference.py", "services/inference.py")),
)
"""A sample goes to the stage of its innermost frame of the service's own code..."""
LIBRARY_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tracing (spans)", ("opentelemetry",)),
    ("metrics", ("prometheus_client",)),
    ("thread hand-off (to_thread)", ("concurrent/futures", "threading.py")),
    ("protobuf (de)serialisation", ("protobuf",)),
    ("gRPC runtime", ("grpc/", "cygrpc")),
    ("asyncio event loop", ("asyncio/",)),
)
"""...and, with none, to that of its innermost library frame."""


WAITING = ("EpollSelector.select", "_worker (concurrent/futures/thread.py:81)")
"""Innermost frames of a thread that waits (the event loop polling, an idle pool thread): py-spy
counts them as running because they hold no lock it can see; they are left out of the shares."""


def stage_of(stack: list[str]) -> str:
    """The stage of the innermost frame that names one."""
    leaf = stack[-1]
    if any(wait in leaf for wait in WAITING):
        return "waiting"
    if leaf.startswith("Handle._run (asyncio/events.py"):
        # A callback with no Python frame below it: gRPC's aio server, compiled with Cython.
        return "gRPC runtime"
    if any("_poll_wrapper" in frame for frame in stack):
        return "gRPC runtime"  # its completion-queue poller thread
    if any("services/feedback.py" in frame or "record_invocations" in frame for frame in stack):
        return "answer recording (write-behind)"  # its store writes included
    for stages in (OUR_STAGES, LIBRARY_STAGES):
        for frame in reversed(stack):
            for stage, needles in stages:
                if any(needle in frame for needle in needles):
                    return stage
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--raw", help="also keep py-spy's samples (collapsed stacks) here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as folder:
        process, address = start_service(Path(folder))
        try:
            train(address, intents=None)  # the whole training set
            wait_until_settled(process)
            asyncio.run(hammer(address, 3.0, "invoke"))  # the predictor loaded, caches warm
            raw = Path(folder) / "profile.txt"
            profiler = subprocess.Popen(
                [py_spy, "record", "--pid", str(process.pid), "--rate", "250", "--format",
                 "raw", "--output", str(raw), "--duration", str(int(args.seconds)), "--threads",
                 "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # attached
            rate = asyncio.run(hammer(address, args.seconds - 2.0, "invoke"))
            profiler.wait(60)
            lines = raw.read_text().splitlines()
            if args.raw:
                shutil.copyfile(raw, args.raw)
        finally:
            process.terminate()
            process.wait(30)
    samples: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        samples[stage_of(stack.split(";"))] += int(count)
    waiting = samples.pop("waiting", 0)
    total = sum(samples.values())
    shares = {stage: count / total for stage, count in samples.most_common()}
    print(
        f"InvokeAgent under load: {rate:,.0f} calls/s; {total} samples of working threads"
        f" ({waiting} more of waiting ones left out)"
    )
    for stage, share in shares.items():
        print(f"  {share:6.1%}  {stage}")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "invoke_profile.json").write_text(
        json.dumps({"calls_per_second": rate, "samples": total, "shares": shares}, indent=2)
    )


if __name__ == "__main__":
    main()

"""Entry point: ``agent-training-server`` (also ``agent-training serve``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from agent_training_server import logs
from agent_training_server.config import ServerConfig, build_argument_parser, load_config

log = logging.getLogger("agent_training_server")

LIBRARY_ENVIRONMENT = {
    # gRPC's core logs to standard error, outside the JSON log, at INFO by default (e.g. "Got
    # goaway" when a client goes): errors only. It reads this once, when grpc is first imported.
    "GRPC_VERBOSITY": "ERROR",
    # Weights ship with the packages; nothing may be fetched from a model hub at run time.
    "HF_HUB_OFFLINE": "1",
}
"""Defaults for the libraries' own environment variables; a value the user set is kept."""


async def serve(config: ServerConfig) -> None:
    """Run the server until SIGTERM or SIGINT, then shut down gracefully.

    Raises:
        StartupError: the server cannot start (see app.create_server); nothing was started.
    """
    # Imported here: grpc must not load before run() has set GRPC_VERBOSITY.
    from agent_training_server.app import create_server

    # Handlers first: a signal during start-up then stops the server cleanly once it is up,
    # instead of killing the process and orphaning its worker processes.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = await create_server(config)
    print(
        f"agent-training: serving agent_training.v1.AgentTrainingService on {running.address}"
        f" (data in {config.data_dir.resolve()})",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: finishing running calls within %ss", config.shutdown_grace_seconds)
    await running.stop()
    log.info("stopped")


def run(parsed: argparse.Namespace | None = None, argv: Sequence[str] | None = None) -> int:
    """Load the configuration and serve; return the process exit code.

    A server that cannot start says why on one line of standard error, naming the setting to
    change, and returns 1 (2 for a malformed configuration).
    """
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        config = load_config(argv, parsed=parsed)
    except ValueError as error:
        print(f"agent-training: bad configuration: {error}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    from agent_training_server.startup import StartupError

    try:
        asyncio.run(serve(config))
    except StartupError as error:
        print(f"agent-training: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # e.g. an OTEL_* setting that names no known exporter
        print(f"agent-training: bad configuration: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    parser = build_argument_parser()
    sys.exit(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

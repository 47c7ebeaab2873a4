"""Writes docs/configuration.md: every server setting, from ServerConfig's field help.

config.py owns the settings (names, defaults, help); this script only lays them out, so the page
cannot drift from the code. tests/test_config_docs.py fails when docs/configuration.md is stale.

Usage: python scripts/config_docs.py [ROOT]   (writes ROOT/docs/configuration.md; default the
repository)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from agent_training_server.config import ENV_PREFIX, ServerConfig

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("docs/configuration.md")

HEADER = """\
# Configuration

Every setting of the server is a flag of `agent-training serve` (also `agent-training-server`) and
an environment variable; a flag wins over the environment, which wins over the default. A value
out of its range stops the server with one line naming the setting.

This page is generated from `server/agent_training_server/config.py` by `make config-docs`; a
test fails when it is stale.

| flag | environment | default | meaning |
| --- | --- | --- | --- |
"""

FOOTER = """
Standard OpenTelemetry variables configure trace export (the server reads them as the
OpenTelemetry SDK defines them):

| environment | default | meaning |
| --- | --- | --- |
| `OTEL_TRACES_EXPORTER` | `none` | `console`, or `otlp` (the `otlp` extra) |
| `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`... | | where and how spans go \
([metrics.md](metrics.md)) |
| `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | parent-based, always on | which requests \
are traced |

The clients (CLI, Python and TypeScript) read `AGENT_TRAINING_TARGET`, `AGENT_TRAINING_TOKEN` and
the TLS variables described in [security.md](security.md).
"""


def _default(field: dataclasses.Field[object]) -> str:
    if field.default_factory is not dataclasses.MISSING:
        return "computed (see meaning)"  # e.g. from the machine's cores: not a fixed value
    value = field.default
    if value == "":
        return "empty"
    return f"`{value}`"


def render() -> str:
    """Return the text of docs/configuration.md."""
    rows = []
    for field in dataclasses.fields(ServerConfig):
        flag = "--" + field.name.replace("_", "-")
        env = ENV_PREFIX + field.name.upper()
        rows.append(f"| `{flag}` | `{env}` | {_default(field)} | {field.metadata['help']} |\n")
    return HEADER + "".join(rows) + FOOTER


def main() -> None:
    """Write the page under the root named on the command line, or the repository."""
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    (root / PAGE).write_text(render())


if __name__ == "__main__":
    main()

"""The Grafana dashboard in deploy/ only uses metrics the service exports."""

from __future__ import annotations

import json
import re

from agent_training_server.metrics import Metrics
from tests.conftest import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "agent-training.json"
FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "by"}


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        # Counters expose name_total; histograms name_bucket/_count/_sum, even before samples.
        names.update(
            family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum", "_created")
        )
    return names


def test_every_panel_query_uses_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expression = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", target["expr"])
            used.update(
                word
                for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression)
                if word not in FUNCTIONS and word not in {"le", "grpc_method", "grpc_code",
                                                         "training_type", "agent_id", "kind",
                                                         "strategy", "data_type", "status"}
            )  # fmt: skip
    assert used, "the dashboard queries nothing"
    assert used <= exported, sorted(used - exported)
    assert len(dashboard["panels"]) >= 12

"""docs/configuration.md is generated from config.py and lists every setting."""

from __future__ import annotations

import dataclasses
import sys

from agent_training_server.config import ServerConfig
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import config_docs


def test_configuration_page_is_fresh() -> None:
    page = (REPO_ROOT / config_docs.PAGE).read_text()
    assert page == config_docs.render(), "docs/configuration.md is stale: run make config-docs"


def test_every_setting_is_on_the_page() -> None:
    page = config_docs.render()
    for field in dataclasses.fields(ServerConfig):
        assert f"`--{field.name.replace('_', '-')}`" in page
        assert f"`AGENT_TRAINING_{field.name.upper()}`" in page

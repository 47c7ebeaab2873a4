"""Configuration: flags over environment over defaults, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_training_server.config import build_argument_parser, describe_settings, load_config


def test_defaults_are_usable() -> None:
    config = load_config([], environ={})
    assert config.address == "127.0.0.1:50051"
    assert config.workers >= 1
    assert config.database_path.name == "agent_training.sqlite3"


def test_environment_then_flags_win() -> None:
    environ = {"AGENT_TRAINING_MAX_QUEUED_JOBS": "3", "AGENT_TRAINING_DATA_DIR": "/srv/at"}
    config = load_config([], environ=environ)
    assert config.max_queued_jobs == 3
    assert config.data_dir == Path("/srv/at")
    config = load_config(["--max-queued-jobs", "5"], environ=environ)
    assert config.max_queued_jobs == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "many"], "workers"),
        (["--workers", "0"], "workers"),
        (["--address", "nowhere"], "address"),
        (["--max-queued-jobs", "-1"], "max_queued_jobs"),
        (["--worker-niceness", "-1"], r"worker_niceness must be in \[0, 19\]"),
        (["--worker-niceness", "20"], r"worker_niceness must be in \[0, 19\]"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(argv, environ={})


def test_every_setting_has_a_flag_an_env_var_and_help() -> None:
    flags = {action.dest for action in build_argument_parser()._actions}
    for flag, env, _default, text in describe_settings():
        assert flag.startswith("--") and env.startswith("AGENT_TRAINING_") and text
        assert flag[2:].replace("-", "_") in flags


def test_executor_is_local_or_ray() -> None:
    assert load_config([], environ={}).executor == "local"
    config = load_config(["--executor", "ray", "--ray-address", "auto"], environ={})
    assert (config.executor, config.ray_address, config.ray_max_failures) == ("ray", "auto", 1)
    with pytest.raises(ValueError, match="executor must be local or ray"):
        load_config([], environ={"AGENT_TRAINING_EXECUTOR": "dask"})

"""Service configuration: file, then environment, then flags; unsafe deployments refused up front."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from trackcheck.errors import ConfigError
from trackcheck.service.config import ServiceConfig, load_config

TOML = """
db = "sqlite:///from-file.db"
port = 9000
workers = 2

[scheduler]
jobstore = "sqlalchemy"
executor = "processpool"
workers = 4
interval = "2m"
misfire_grace_time = "10s"
"""


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "trackcheck.toml"
    path.write_text(TOML)
    env = {"TRACKCHECK_PORT": "9100", "TRACKCHECK_EXECUTOR_WORKERS": "8", "TRACKCHECK_COALESCE": "false"}
    config = load_config(path, env, port=None, workers=3)
    assert config.db == "sqlite:///from-file.db"  # file
    assert config.port == 9100  # environment over file
    assert config.workers == 3  # flag over file
    assert config.scheduler.executor == "processpool" and config.scheduler.workers == 8
    assert config.scheduler.interval == timedelta(minutes=2)
    assert config.scheduler.misfire_grace_time == timedelta(seconds=10)
    assert config.scheduler.coalesce is False


def test_log_format_from_the_file_the_environment_or_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "trackcheck.toml"
    path.write_text('log_format = "json"')
    assert ServiceConfig().log_format == "text"
    assert load_config(path, {}).log_format == "json"
    assert load_config(path, {"TRACKCHECK_LOG_FORMAT": "text"}).log_format == "text"
    assert load_config(path, {"TRACKCHECK_LOG_FORMAT": "text"}, log_format="json").log_format == "json"


def test_every_scheduler_component_comes_from_the_environment() -> None:
    env = {
        "TRACKCHECK_SCHEDULER": "background",
        "TRACKCHECK_JOBSTORE": "memory",
        "TRACKCHECK_EXECUTOR": "threadpool",
        "TRACKCHECK_INTERVAL": "30s",
    }
    scheduler = load_config(None, env).scheduler
    assert (scheduler.scheduler, scheduler.jobstore, scheduler.executor) == ("background", "memory", "threadpool")
    assert scheduler.interval == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("port = 'eighty'", {}, "port"),
        ("colour = 'blue'", {}, "colour"),
        ("[scheduler]\nexecutor = 'fibers'", {}, "scheduler.executor"),
        ("port = ", {}, "not valid TOML"),
        ("", {"TRACKCHECK_INTERVAL": "soon"}, "scheduler.interval"),
        ("[scheduler]\nbackend = 'celery'", {}, "scheduler.backend"),
        ("[scheduler]\nbackend = 'procrastinate'\nexecutor = 'processpool'", {}, "scheduler.executor.*threadpool"),
        ("", {"TRACKCHECK_BACKEND": "procrastinate", "TRACKCHECK_HEARTBEAT": "5s"}, "stalled_after.*15s"),
        ("[scheduler]\nheartbeat = '1s'\nstalled_after = '2s'", {}, "scheduler.stalled_after.*three heartbeats"),
        ("log_format = 'yaml'", {}, "log_format: Input should be 'text' or 'json'"),
        ("", {"TRACKCHECK_LOG_FORMAT": "logfmt"}, "log_format"),
    ],
)
def test_invalid_configuration_names_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "trackcheck.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env)


def test_unsafe_or_impossible_deployments_are_refused() -> None:
    with pytest.raises(ConfigError, match="API token"):
        ServiceConfig(host="0.0.0.0").check()
    ServiceConfig(host="0.0.0.0", api_token="t0ken").check()  # with a token: allowed
    ServiceConfig(host="::1").check()  # loopback: allowed without one
    with pytest.raises(ConfigError, match="jobstore|job store"):
        ServiceConfig(workers=4, scheduler={"jobstore": "memory"}).check()
    with pytest.raises(ConfigError, match="in-memory"):
        ServiceConfig(workers=2, db="sqlite://").check()
    for db in ("sqlite:///tc.db", "mysql://root@127.0.0.1/test"):
        with pytest.raises(ConfigError, match=r"'scheduler\.backend'.*must be PostgreSQL"):
            ServiceConfig(db=db, scheduler={"backend": "procrastinate"}).check()
    ServiceConfig(db="postgresql://pg/tc", scheduler={"backend": "procrastinate"}).check()


def test_serve_refuses_a_public_address_without_a_token_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trackcheck", "serve", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path}/s.db"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TRACKCHECK_API_TOKEN": ""},
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "TRACKCHECK_API_TOKEN" in done.stderr and "0.0.0.0" in done.stderr

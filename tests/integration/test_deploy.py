"""The image's commands run as its containers would run them (tests/containers.py): no image is built here.

``docker run`` of the image alone (SQLite in its working directory), and the compose deployment's
``trackcheck`` and ``worker`` services on a throw-away PostgreSQL database, each with the environment and the
secret files compose gives it; the HEALTHCHECK commands are run against them as Docker would run them.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.containers import Container, Image, read_compose, read_image
from tests.ports import free_port


@pytest.fixture
def image() -> Image:
    return read_image()


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.kill()


def test_docker_run_without_a_token_is_refused(image: Image, tmp_path: Path) -> None:
    """The image listens on all addresses, so the service refuses to start open to everyone (exit 2)."""
    container = Container(image, tmp_path, env={"TRACKCHECK_PORT": str(free_port())}).start()
    assert container.wait_exit(60) == 2
    assert "TRACKCHECK_API_TOKEN" in container.text()


def test_docker_run_serves_healthz_and_stops_on_sigterm(
    image: Image, tmp_path: Path, containers: list[Container]
) -> None:
    port = free_port()
    token = secrets.token_urlsafe(24)
    container = Container(image, tmp_path, env={"TRACKCHECK_PORT": str(port), "TRACKCHECK_API_TOKEN": token})
    containers.append(container.start())
    answer = container.health(f"http://127.0.0.1:{port}/healthz", lambda a: a.status_code == 200)
    assert answer.json()["ok"] is True
    assert (tmp_path / "trackcheck.db").exists(), "the default SQLite state lives in the image's WORKDIR"
    assert httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=5).status_code == 401, "the token is required"
    healthy = container.exec(image.healthcheck)
    assert healthy.returncode == 0, healthy.stderr
    assert container.stop() == 0, container.text()[-3000:]
    assert container.exec(image.healthcheck).returncode != 0, "the check fails once the service is gone"
    assert token not in container.text()


@pytest.fixture
def compose_database(postgres_admin: Engine, postgres_url: str) -> Iterator[tuple[str, str]]:
    """compose's PostgreSQL: a database owned by a role with a password (the ``db_password`` secret). The
    server trusts local connections, so the password is sent but not what lets the role in."""
    role = f"tc_deploy_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(18)
    database = make_url(postgres_url).database
    with postgres_admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        connection.execute(text(f"ALTER DATABASE {database} OWNER TO {role}"))
    yield f"postgresql://{role}@127.0.0.1:5432/{database}", password
    with postgres_admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        connection.execute(text(f"DROP ROLE IF EXISTS {role}"))


def _service(name: str, db: str, port: int) -> tuple[list[str], dict[str, str], list[str]]:
    """A compose service's command, environment (``postgres:5432`` is this machine's server, TRACKCHECK_DB
    the test's database) and the secrets it mounts; ``port`` replaces the worker's metrics port."""
    service: dict[str, Any] = read_compose()["services"][name]
    env = {key: str(value) for key, value in service["environment"].items()}
    assert make_url(env["TRACKCHECK_DB"]).host == "postgres", "the services reach PostgreSQL by its service name"
    env["TRACKCHECK_DB"] = db
    command = [str(part) for part in service["command"]]
    if "--metrics-port" in command:
        command[command.index("--metrics-port") + 1] = str(port)
    return command, env, list(service["secrets"])


def test_compose_service_and_worker_on_postgresql(
    image: Image, tmp_path: Path, containers: list[Container], compose_database: tuple[str, str]
) -> None:
    """``docker compose up``: the service answers 503 until a worker sends heartbeats, then 200 with
    ``"workers": 1``; both healthchecks pass, and both processes stop cleanly on SIGTERM."""
    db, password = compose_database
    token = secrets.token_urlsafe(24)
    files = {
        "db_password": password + "\n",
        "trackcheck.toml": f'api_token = "{token}"\nsecret_key = "{secrets.token_urlsafe(32)}"\n',
    }
    port, metrics_port = free_port(), free_port()

    command, env, mounted = _service("trackcheck", db, port)
    env["TRACKCHECK_PORT"] = str(port)  # the container's 8000, published to a free port here
    api = Container(image, tmp_path / "trackcheck", command=command, env=env, secrets=files)
    containers.append(api.start())
    assert set(mounted) == set(files)
    healthz = f"http://127.0.0.1:{port}/healthz"
    waiting = api.health(healthz, lambda a: a.status_code == 503 and "workers" in a.json())
    assert waiting.json()["workers"] == "no trackcheck worker is running: nothing polls"
    assert api.exec(image.healthcheck).returncode != 0, "unhealthy while nothing polls"

    command, env, mounted = _service("worker", db, metrics_port)
    worker = Container(image, tmp_path / "worker", command=command, env=env, secrets=files)
    containers.append(worker.start())
    healthy = api.health(healthz, lambda a: a.status_code == 200, timeout=90).json()
    assert healthy["workers"] == 1 and healthy["database"] == "ok", healthy
    check = api.exec(image.healthcheck)
    assert check.returncode == 0, check.stderr
    declared = read_compose()["services"]["worker"]
    published = declared["command"][declared["command"].index("--metrics-port") + 1]
    worker_check = [part.replace(f":{published}/", f":{metrics_port}/") for part in declared["healthcheck"]["test"][1:]]
    check = worker.exec(worker_check)
    assert check.returncode == 0, check.stderr

    assert worker.stop() == 0, worker.text()[-3000:]
    assert api.stop() == 0, api.text()[-3000:]
    for log in (api.text(), worker.text()):
        assert password not in log and token not in log

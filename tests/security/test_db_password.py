"""The state database's password never has to be on a command line, where every user of the machine reads
it (``ps``, /proc/PID/cmdline): ``--db`` with a password is refused, ``--db-password-file`` (or
TRACKCHECK_DB_PASSWORD_FILE, or ``db_password_file``) supplies it, TRACKCHECK_DB may still hold it.

Against the real PostgreSQL of this machine (127.0.0.1:5432, trust authentication: the server ignores the
password, so the tests check that the URL the store opened carries it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from tests.ports import free_port
from tests.service.conftest import MEM_PLAN
from tests.settings import FAST_SETUP, MIN_INTERVAL
from trackcheck.cli import main
from trackcheck.engine.core import Engine, store_plan
from trackcheck.service.app import EXTENSION, create_app
from trackcheck.service.config import ServiceConfig, state_database_url
from trackcheck.store.repository import Store

#: characters that must be escaped in a URL: the file's text reaches the server unchanged
PASSWORD = "s3cret/p@ss:w%rd"
ON_ARGV = "Zebra-on-argv-731"
MESSAGE = (
    "a password on the command line is visible in ps: put it in TRACKCHECK_DB, or in a file named by "
    "--db-password-file / TRACKCHECK_DB_PASSWORD_FILE"
)


def trackcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCHECK_")}
    return subprocess.run(
        [sys.executable, "-m", "trackcheck", *args],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "db-password"
    path.write_text(f"  {PASSWORD}\n", encoding="utf-8")  # stripped
    path.chmod(0o600)
    return path


@pytest.fixture
def stored_run(postgres_url: str) -> Iterator[str]:
    """A run in a fresh PostgreSQL state database; its id."""
    engine = Engine(postgres_url, setup=FAST_SETUP).start()
    try:
        version_id, _ = store_plan(engine, MEM_PLAN, origin="mem", base_dir=None)
        yield engine.submit(version_id, {"test_id": "pw"})
    finally:
        engine.shutdown()


def opened_urls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URL of every Store opened from now on (the real ``Store.open`` still runs)."""
    urls: list[str] = []
    real = Store.open

    def recording(self: Store) -> Store:
        urls.append(self.url)
        return real(self)

    monkeypatch.setattr(Store, "open", recording)
    return urls


def test_a_password_in_db_on_the_command_line_is_refused_by_every_command(tmp_path: Path) -> None:
    url = f"postgresql://tracker:{ON_ARGV}@127.0.0.1:5432/x"
    plan = tmp_path / "mem.yaml"
    plan.write_text(MEM_PLAN, encoding="utf-8")
    commands = {
        "serve": ["serve", "--db", url],
        "serve-encoded": ["serve", "--db", url.replace(ON_ARGV, "Zebra%40on-argv-731")],
        "show": ["show", "0123456789abcdef", "--db", url],
        "worker": ["worker", "--db", url],
        "run": ["run", str(plan), "-p", "test_id=x", "--db", url],
    }
    with ThreadPoolExecutor(3) as pool:
        done = dict(zip(commands, pool.map(lambda args: trackcheck(*args), commands.values()), strict=True))
    for name, result in done.items():
        output = result.stdout + result.stderr
        assert result.returncode == 2, (name, output)
        assert MESSAGE in " ".join(output.split()), (name, output)
        assert "Zebra" not in output and "on-argv" not in output, (name, output)


def test_trackcheck_db_may_hold_the_password_the_environment_is_not_in_ps(postgres_url: str, stored_run: str) -> None:
    with_password = make_url(postgres_url).set(password=ON_ARGV).render_as_string(hide_password=False)
    result = trackcheck("show", stored_run, env={"TRACKCHECK_DB": with_password})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run_id"] == stored_run
    assert ON_ARGV not in result.stdout + result.stderr


def test_show_reads_the_password_from_the_file_and_never_prints_it(
    postgres_url: str, stored_run: str, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = opened_urls(monkeypatch)
    monkeypatch.delenv("TRACKCHECK_DB", raising=False)
    for args, env in [
        (["--db", postgres_url, "--db-password-file", str(password_file)], {}),
        (["--db", postgres_url], {"TRACKCHECK_DB_PASSWORD_FILE": str(password_file)}),
    ]:
        result = CliRunner().invoke(main, ["show", stored_run, *args], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["run_id"] == stored_run
        assert PASSWORD not in result.output
    assert len(urls) == 2
    for url in urls:
        parsed = make_url(url)
        assert parsed.password == PASSWORD  # escaped in the URL, the same text once parsed
        assert (parsed.host, parsed.database) == (make_url(postgres_url).host, make_url(postgres_url).database)


def test_the_service_opens_its_state_database_with_the_password_of_the_file(
    postgres_url: str, stored_run: str, password_file: Path, tmp_path: Path
) -> None:
    app = create_app(ServiceConfig(db=postgres_url, db_password_file=password_file, min_interval=MIN_INTERVAL))
    service = app.extensions[EXTENSION]
    try:
        assert service.engine.store.engine.url.password == PASSWORD
        answer = app.test_client().get(f"/api/runs/{stored_run}")
        assert answer.status_code == 200 and answer.json["run_id"] == stored_run
        assert PASSWORD not in app.test_client().get("/healthz").get_data(as_text=True)
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "No such file"), ("", "is empty"), ("  \n", "is empty"), (b"\xff\xfe", "not UTF-8")],
)
def test_an_unusable_password_file_is_a_configuration_error_naming_the_file(
    tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    path = tmp_path / "pw"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(
        main, ["show", "0123", "--db", "postgresql://u@127.0.0.1/x", "--db-password-file", str(path)]
    )
    assert result.exit_code == 2, result.output
    assert "db_password_file" in result.output and str(path) in " ".join(result.output.split())
    assert problem in result.output


def test_the_password_is_set_on_the_url_whatever_it_holds(password_file: Path) -> None:
    assert state_database_url("sqlite:///x.db", None) == "sqlite:///x.db"  # no file: the URL as given
    url = make_url(state_database_url("mysql://root@127.0.0.1:3306/x?charset=utf8mb4", password_file))
    assert (url.drivername, url.username, url.password, url.database) == ("mysql+pymysql", "root", PASSWORD, "x")
    assert url.query == {"charset": "utf8mb4"}
    replaced = make_url(state_database_url(f"postgresql://u:{ON_ARGV}@h/x", password_file))
    assert replaced.password == PASSWORD  # the file's password wins over one already in TRACKCHECK_DB


# -- trackcheck serve: the process list shows no password --------------------------------------------------------


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_with_a_password_file_works_and_ps_shows_no_password(
    postgres_url: str, stored_run: str, password_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCHECK_")}
    args = ["serve", "--db", postgres_url, "--db-password-file", str(password_file), "--port", str(port)]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "trackcheck", *args], cwd=tmp_path, env=clean, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                status, health = get(f"http://127.0.0.1:{port}/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        assert health["database"] == "ok"
        status, run = get(f"http://127.0.0.1:{port}/api/runs/{stored_run}")
        assert status == 200 and run["run_id"] == stored_run
        # the master and its worker: what `ps` shows of each
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        for pid in [process.pid, *map(int, children)]:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert PASSWORD not in cmdline and "s3cret" not in cmdline, cmdline
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    assert "s3cret" not in (tmp_path / "serve.log").read_text()

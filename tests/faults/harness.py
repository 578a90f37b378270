"""What the fault scenarios run against: a real ``trackcheck serve``, a real HTTP source, real databases.

- ``Feed``: the systems of a pipeline as one HTTP server on a fixed port. ``GET /<system>`` answers
  ``{"items": [...]}``: the records delivered to that system whose arrival time has come. It fails the way
  sources fail: nothing listening (connection refused), HTTP 500, or a request that hangs unanswered.
- ``Served``: one ``trackcheck serve`` process group; ``kill()`` is kill -9 of all of it.
- ``ThrowawayPostgres``: a PostgreSQL cluster of its own (``initdb`` + ``pg_ctl`` as user postgres, a free
  port, its socket in its own folder) that a scenario stops and starts, and removes afterwards.
- ``scratch_database``: a fresh database on the machine's PostgreSQL or MariaDB (or a SQLite file), dropped
  afterwards.

Sizes: every scenario has a quick size (``make test``) and a full one (``TRACKCHECK_FAULTS=full``,
``make test-faults``); ``sized(quick, full)`` picks.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from glob import glob
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from tests.ports import free_port

MODES = ("quick", "full")
MODE = os.environ.get("TRACKCHECK_FAULTS", "quick").strip().lower() or "quick"
FULL = MODE == "full"
T = TypeVar("T")


def sized(quick: T, full: T) -> T:
    """The quick size under ``make test``, the full one under ``TRACKCHECK_FAULTS=full``."""
    return full if FULL else quick


# -- the source ------------------------------------------------------------------------------------------
OUTAGES = ("refused", "http500", "hang")


class Feed:
    """An HTTP source whose records arrive over time and which can go down; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._records: defaultdict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
        self._mode = "up"
        self._released = threading.Event()  # cleared while requests hang
        self._released.set()
        self._held = threading.Event()  # cleared while requests wait to be answered (``hold``)
        self._held.set()
        self._server: _FeedServer | None = None
        self._thread: threading.Thread | None = None
        self._port = free_port()
        self.requests: Counter[str] = Counter()  # per system: every request, answered or not
        #: every request by its X-Trackcheck-Poll header (group, epoch, tick, attempt, chunk), answered or not
        self.polls: Counter[str] = Counter()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Feed:
        self._listen()
        return self

    def close(self) -> None:
        self._released.set()
        self._held.set()
        self._stop_listening()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    # -- data ------------------------------------------------------------------------------------------
    def deliver(self, system: str, record: dict[str, Any], at: float) -> None:
        """``record`` appears in ``system`` at monotonic time ``at`` (and stays)."""
        with self._lock:
            self._records[system].append((at, record))

    # -- faults ----------------------------------------------------------------------------------------
    def fail(self, mode: str) -> None:
        """Stop answering: ``refused`` (nothing listens), ``http500`` or ``hang`` (no answer until recovery)."""
        assert mode in OUTAGES, mode
        if mode == "refused":
            self._stop_listening()
        elif self._server is None:
            self._listen()
        if mode == "hang":
            self._released.clear()
        else:
            self._released.set()
        self._mode = mode

    def hold(self) -> None:
        """Requests from now on wait, unanswered, until ``release()``; then each is answered as usual, with
        what has arrived by then: a tick held in the middle of its read."""
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def recover(self) -> None:
        self._mode = "up"
        self._released.set()
        if self._server is None:
            self._listen()

    def wait_for_request(self, timeout: float) -> bool:
        """Block until the next request reaches the feed (a poll tick has begun); False after ``timeout``."""
        with self._arrived:
            seen = sum(self.requests.values())
            return self._arrived.wait_for(lambda: sum(self.requests.values()) > seen, timeout)

    # -- serving ---------------------------------------------------------------------------------------
    def _listen(self) -> None:
        server = _FeedServer((self.host, self._port), _FeedHandler)  # SO_REUSEADDR: the same port again
        server.feed = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="feed", daemon=True)
        self._thread.start()

    def _stop_listening(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)

    def answer(self, path: str, poll: str | None = None) -> tuple[int, bytes] | None:
        """The status and body for a request to ``path`` (``poll``: its X-Trackcheck-Poll header); None: hang
        until recovery, then drop it."""
        system = path.strip("/")
        with self._arrived:
            self.requests[system] += 1
            if poll is not None:
                self.polls[poll] += 1
            self._arrived.notify_all()
        self._held.wait(120)
        with self._lock:
            now = time.monotonic()
            items = [record for at, record in self._records.get(system, []) if at <= now]
        if self._mode == "hang":
            self._released.wait(120)
            return None
        if self._mode == "http500":
            return 500, b'{"error": "the warehouse is restarting"}'
        # json.dumps escapes NUL and lone surrogates (\u0000, \ud800): the poison arrives as valid JSON
        return 200, json.dumps({"items": items}).encode()


class _FeedServer(ThreadingHTTPServer):
    daemon_threads = True
    feed: Feed


class _FeedHandler(BaseHTTPRequestHandler):
    server: _FeedServer

    def do_GET(self) -> None:
        reply = self.server.feed.answer(urlsplit(self.path).path, self.headers.get("X-Trackcheck-Poll"))
        if reply is None:
            self.close_connection = True
            return
        status, body = reply
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- the service -----------------------------------------------------------------------------------------
class Served:
    """One ``trackcheck serve`` (gunicorn master and workers in their own process group)."""

    def __init__(self, folder: Path, db: str, plans: Path, workers: int = 2) -> None:
        self.db = db
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"serve-{self.port}.log"
        self.args = [
            sys.executable, "-m", "trackcheck", "-v", "serve", "--port", str(self.port), "--db", db,
            "--plans", str(plans), "--workers", str(workers),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._client = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout: float = 60) -> Served:
        """Start (again) and wait until ``/healthz`` answers 200."""
        assert not self.alive, "already running"
        env = {
            **os.environ,
            "TRACKCHECK_API_TOKEN": "",
            "PROMETHEUS_MULTIPROC_DIR": str(self.folder / "metrics"),  # removed with the folder
        }
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts + 1}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.args, stdout=log, stderr=log, env=env, start_new_session=True)
        self.starts += 1
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> float:
        """Seconds until ``/healthz`` answered 200; AssertionError (with the log) if it never did."""
        began = time.monotonic()
        while time.monotonic() < began + timeout:
            assert self.alive, f"trackcheck serve exited:\n{self.log_tail()}"
            if self.health() == 200:
                return time.monotonic() - began
            time.sleep(0.1)
        raise AssertionError(f"trackcheck serve not healthy within {timeout:g} s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 of the master and every worker at once."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._client.close()

    def health(self) -> int | None:
        try:
            return self._client.get("/healthz", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call; when the service cannot be reached, an AssertionError saying whether its master is
        still alive (and its exit code if not) with the end of its log, not a bare ``Connection refused``."""
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            state = "alive" if self.alive else f"exited with {self.process.returncode if self.process else None}"
            raise AssertionError(f"{method} {path}: {exc!r}; serve master {state}\n{self.log_tail()}") from exc

    def post_run(self, plan: str, params: dict[str, Any], **extra: Any) -> httpx.Response:
        return self._request("POST", "/api/runs", json={"plan": plan, "params": params, **extra})

    def submit(self, plan: str, params: dict[str, Any], **extra: Any) -> str:
        """A run's id; AssertionError unless the service accepted it (202)."""
        answer = self.post_run(plan, params, **extra)
        assert answer.status_code == 202, f"{answer.status_code} {answer.text}"
        run_id: str = answer.json()["id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        answer = self._request("GET", f"/api/runs/{run_id}")
        assert answer.status_code == 200, f"{answer.status_code} {answer.text}"
        document: dict[str, Any] = answer.json()
        return document

    def records(self, run_id: str, stage: str) -> list[Any]:
        """What the stage stored for the run (its snapshot)."""
        answer = self._request("GET", f"/api/runs/{run_id}/records/{stage}")
        assert answer.status_code == 200, f"{answer.status_code} {answer.text}"
        records: list[Any] = answer.json()["records"]
        return records

    def log_tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# -- databases -------------------------------------------------------------------------------------------
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
START_COMMANDS = {
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "mariadb": 'start-stop-daemon --start --oknodo --background --exec "$(command -v mariadbd)"',
}


@contextmanager
def scratch_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a fresh state database on ``backend`` (``postgresql``, ``mariadb``, ``sqlite``), dropped
    afterwards. A server that cannot be reached fails the test with the command that starts it."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'state.db'}"
        return
    admin_url = {"postgresql": POSTGRES_ADMIN, "mariadb": MARIADB_ADMIN}[backend]
    name = f"tc_faults_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        try:
            with admin.connect() as connection:
                charset = " CHARACTER SET utf8mb4" if backend == "mariadb" else ""
                connection.execute(text(f"CREATE DATABASE {name}{charset}"))
        except SQLAlchemyError as exc:
            pytest.fail(
                f"{backend} is not reachable ({type(exc).__name__}); start it with:\n    {START_COMMANDS[backend]}"
            )
        try:
            yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
        finally:
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
    finally:
        admin.dispose()


def _postgres_bin() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return Path(found[-1]).parent


class ThrowawayPostgres:
    """A PostgreSQL cluster of this scenario only: its own folder, port and socket; ``destroy()`` stops it
    and removes everything. As root it runs as user postgres (the server refuses to run as root)."""

    def __init__(self, *, listen: str = "127.0.0.1", clients: str | None = None) -> None:
        """``listen``: the addresses it listens on (comma-separated; the URL uses the first); ``clients``: a
        network (CIDR) whose clients it trusts besides loopback (another network namespace)."""
        self.listen, self.clients = listen, clients
        self.bin = _postgres_bin()
        self.root = Path(self._mkdtemp())
        self.data, self.sockets, self.log = self.root / "data", self.root / "sockets", self.root / "server.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@{listen.split(',')[0]}:{self.port}/postgres"
        self._initialised = False

    def _mkdtemp(self) -> str:
        folder = tempfile.mkdtemp(prefix="trackcheck-faults-pg-")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        return folder

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise AssertionError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}{done.stdout}\n{log}")

    def start(self) -> ThrowawayPostgres:
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
            os.makedirs(self.sockets, exist_ok=True)
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(self.sockets, owner.pw_uid, owner.pw_gid)
            if self.clients is not None:
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.clients} trust\n")
            self._initialised = True
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses={self.listen} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown (sessions ended); ``immediate``: like a crash (recovery at start)."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data), "-m", mode)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

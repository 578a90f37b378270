"""Dashboard sessions and logins against a real service: logout ends a session on the server (a copied
cookie opens nothing afterwards, in any worker process), ``next`` never leaves the site, the cookie's Secure
flag follows ``cookie_secure`` and the proxies in front, and failed authentications are rate limited.

The Flask test client where one process shows it; werkzeug's server (real HTTP, real headers) for the
proxy and cookie flags; ``trackcheck serve`` with two gunicorn workers for what every process must agree on.
"""

from __future__ import annotations

import http.client
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from tests.ports import free_port
from tests.service import conftest as service

#: the real service apps of tests/service (SQLite state in tmp_path, the mem plan, the poller running)
make_app, plans_dir = service.make_app, service.plans_dir

ADMIN = "admin-t0ken-0123456789"
VIEWER = "viewer-t0ken-0123456789"
TOKENS = [{"name": "ops", "role": "admin", "token": ADMIN}, {"name": "dash", "role": "viewer", "token": VIEWER}]
#: fixed, so that two apps sign cookies alike: a refusal then comes from the session check, not the signature
SECRET_KEY = "cw8dDHjrdSsdLkRH0lW5jBSXcVrjn1yG8tTd-9Xt4G0="
COOKIE = "trackcheck_session"


def login(client: FlaskClient, token: str, **kwargs: Any) -> Any:
    return client.post("/login", data={"token": token}, **kwargs)


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None, "no session cookie"
    return cookie.value


def replay(app: Flask, cookie: str, path: str = "/", **headers: str) -> Any:
    """A request from someone else's browser holding a copy of ``cookie``."""
    other = app.test_client()
    other.set_cookie(COOKIE, cookie)
    return other.get(path, headers=headers)


def assert_sent_to_login(answer: Any) -> None:
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login"), answer.status_code


# -- sessions on the server ------------------------------------------------------------------------------------
def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_opens_nothing(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_app(tokens=TOKENS)
    client = app.test_client()
    assert_sent_to_login(client.get("/plans"))
    assert login(client, ADMIN).status_code == 302
    cookie = session_cookie(client)
    assert ADMIN not in cookie
    assert replay(app, cookie, "/plans").status_code == 200  # the copy works while the session lives

    with sqlite3.connect(tmp_path / "tc.db") as db:
        rows = db.execute("SELECT id, token_name, role FROM tc_sessions").fetchall()
    assert [(name, role) for _, name, role in rows] == [("ops", "admin")]
    assert rows[0][0] not in cookie  # the database holds a digest of the session id, not the id itself

    assert client.post("/logout").status_code == 302
    assert_sent_to_login(client.get("/plans"))
    assert_sent_to_login(replay(app, cookie, "/plans"))
    fragment = replay(app, cookie, "/fragments/runs", **{"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"].startswith("/login")
    assert replay(app, cookie, "/runs/new").status_code == 302
    with sqlite3.connect(tmp_path / "tc.db") as db:
        assert db.execute("SELECT count(*) FROM tc_sessions").fetchone() == (0,)


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param([TOKENS[0]], id="token-removed"),
        pytest.param([TOKENS[0], {**TOKENS[1], "role": "runner"}], id="role-changed"),
        pytest.param([TOKENS[0], {**TOKENS[1], "name": "dash2"}], id="renamed"),
    ],
)
def test_a_session_ends_when_its_token_leaves_the_configuration(
    make_app: Callable[..., Flask], tokens: list[dict[str, str]]
) -> None:
    before = make_app(tokens=TOKENS, secret_key=SECRET_KEY)
    client = before.test_client()
    login(client, VIEWER)
    cookie = session_cookie(client)
    assert replay(before, cookie).status_code == 200
    after = make_app(tokens=tokens, secret_key=SECRET_KEY)  # a restart with the new configuration, same database
    assert after.secret_key == before.secret_key  # so the cookie's signature is still good
    assert_sent_to_login(replay(after, cookie))
    assert_sent_to_login(replay(before, cookie))  # and the session row is gone for every process


def test_a_session_of_an_unchanged_token_survives_a_restart(make_app: Callable[..., Flask]) -> None:
    before = make_app(tokens=TOKENS)
    client = before.test_client()
    login(client, VIEWER)
    after = make_app(tokens=list(reversed(TOKENS)))
    page = replay(after, session_cookie(client), "/plans")
    assert page.status_code == 200 and 'id="account-name">dash<' in page.get_data(as_text=True)


def test_expired_sessions_are_refused_and_deleted_at_the_next_login(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_app(tokens=TOKENS)
    old, new = app.test_client(), app.test_client()
    login(old, VIEWER)
    with sqlite3.connect(tmp_path / "tc.db") as db:
        past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        db.execute("UPDATE tc_sessions SET expires_at = ?", (past,))
    assert_sent_to_login(old.get("/"))
    login(new, ADMIN)
    with sqlite3.connect(tmp_path / "tc.db") as db:
        assert db.execute("SELECT token_name FROM tc_sessions").fetchall() == [("ops",)]


def test_a_forged_or_tampered_cookie_opens_nothing(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(tokens=TOKENS)
    client = app.test_client()
    login(client, ADMIN)
    cookie = session_cookie(client)
    assert_sent_to_login(replay(app, cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")))
    other = make_app(tokens=TOKENS, db=f"sqlite:///{tmp_path}/other.db")
    assert_sent_to_login(replay(other, cookie))  # same key, another database: no such session


# -- next ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "//evil.com/runs",
        "/\\evil.com",
        "\\\\evil.com",
        "/\\/evil.com",
        "https:evil.com",
        "https://evil.com/",
        "http:/evil.com",
        "javascript:alert(1)",
        "/%2F%2Fevil.com",
        "/%2f%2fevil.com",
        "/%252F%252Fevil.com",
        "%2F%2Fevil.com",
        "/%5Cevil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        " //evil.com",
        "evil.com",
        "",
    ],
)
def test_next_after_login_never_leaves_the_site(make_app: Callable[..., Flask], target: str) -> None:
    app = make_app(tokens=TOKENS)
    client = app.test_client()
    answer = client.post("/login", data={"token": ADMIN, "next": target})
    assert answer.status_code == 302 and answer.headers["Location"] == "/", (target, answer.headers["Location"])
    form = client.get("/login", query_string={"next": target}).get_data(as_text=True)
    assert 'name="next" value="/"' in form


def test_next_keeps_a_local_path_with_its_query(make_app: Callable[..., Flask]) -> None:
    client = make_app(tokens=TOKENS).test_client()
    sent = client.get("/plans/mem?version=1")
    assert_sent_to_login(sent)
    location = sent.headers["Location"]
    answer = client.post(location, data={"token": VIEWER})
    assert answer.headers["Location"] == "/plans/mem?version=1"


# -- the cookie's Secure flag, over real HTTP ------------------------------------------------------------------
@pytest.fixture
def serve_app() -> Iterator[Callable[[Flask], tuple[str, int]]]:
    """Serve apps with werkzeug's threaded server on 127.0.0.1 (a free port each)."""
    servers = []

    def serve(app: Flask) -> tuple[str, int]:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return "127.0.0.1", server.server_port

    yield serve
    for server, thread in servers:
        server.shutdown()
        thread.join(10)


def http_login(
    address: tuple[str, int], token: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], SimpleCookie]:
    """POST the login form over a real connection; the status, the headers and the cookie set."""
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        body = f"token={token}"
        connection.request(
            "POST",
            "/login",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )
        response = connection.getresponse()
        response.read()
        cookies: SimpleCookie = SimpleCookie()
        for value in response.headers.get_all("Set-Cookie") or []:
            cookies.load(value)
        return response.status, dict(response.headers.items()), cookies
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("settings", "headers", "secure"),
    [
        pytest.param({"cookie_secure": "always"}, {}, True, id="always-over-http"),
        pytest.param({"cookie_secure": "never"}, {"X-Forwarded-Proto": "https"}, False, id="never"),
        pytest.param({"trusted_proxies": 1}, {"X-Forwarded-Proto": "https"}, True, id="auto-behind-https-proxy"),
        pytest.param({"trusted_proxies": 1}, {"X-Forwarded-Proto": "http"}, False, id="auto-behind-http-proxy"),
        pytest.param({}, {}, False, id="auto-over-plain-http"),
        pytest.param({}, {"X-Forwarded-Proto": "https"}, False, id="auto-untrusted-header-ignored"),
    ],
)
def test_the_cookie_is_secure_as_configured_and_as_the_proxy_says(
    make_app: Callable[..., Flask],
    serve_app: Callable[[Flask], tuple[str, int]],
    settings: dict[str, Any],
    headers: dict[str, str],
    secure: bool,
) -> None:
    address = serve_app(make_app(tokens=TOKENS, **settings))
    status, _, cookies = http_login(address, ADMIN, headers)
    assert status == 302
    morsel = cookies[COOKIE]
    assert bool(morsel["secure"]) is secure
    assert morsel["httponly"] and morsel["samesite"] == "Strict"


def test_behind_a_trusted_proxy_the_rate_limit_counts_each_client_not_the_proxy(
    make_app: Callable[..., Flask], serve_app: Callable[[Flask], tuple[str, int]]
) -> None:
    address = serve_app(make_app(tokens=TOKENS, trusted_proxies=1, login_rate_limit="3 per minute"))
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    assert [http_login(address, "wrong-guess-00000000", guesser)[0] for _ in range(4)] == [401, 401, 401, 429]
    status, headers, _ = http_login(address, ADMIN, guesser)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    assert http_login(address, ADMIN, {"X-Forwarded-For": "198.51.100.2"})[0] == 302  # same proxy, another client


# -- rate limits -----------------------------------------------------------------------------------------------
def test_eleven_wrong_logins_are_429_with_retry_after_while_other_addresses_log_in(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(tokens=TOKENS)  # the default login_rate_limit: 10 per minute
    guesser = {"REMOTE_ADDR": "192.0.2.10"}
    client = app.test_client()
    statuses = [login(client, f"guess-{n:016d}", environ_base=guesser).status_code for n in range(11)]
    assert statuses == [401] * 10 + [429]
    blocked = login(client, ADMIN, environ_base=guesser)
    assert blocked.status_code == 429  # even the right token waits: a guesser cannot tell it was right
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert "Too many failed logins" in blocked.get_data(as_text=True)
    assert "text/html" in blocked.headers["Content-Type"]

    other = app.test_client()
    assert login(other, ADMIN, environ_base={"REMOTE_ADDR": "192.0.2.20"}).status_code == 302
    assert other.get("/", environ_base={"REMOTE_ADDR": "192.0.2.20"}).status_code == 200
    # a logged-in page of the blocked address is not a guess: only the login form and the API are limited
    assert client.get("/plans", environ_base=guesser).status_code == 302


def test_bursts_of_401_on_the_api_get_429_and_successes_do_not_count(make_app: Callable[..., Flask]) -> None:
    client = make_app(tokens=TOKENS, login_rate_limit="3 per minute").test_client()
    here = {"REMOTE_ADDR": "192.0.2.30"}
    good = {"Authorization": f"Bearer {VIEWER}"}
    for _ in range(10):
        assert client.get("/api/runs", headers=good, environ_base=here).status_code == 200
    bad = {"Authorization": "Bearer wrong-token-000000000"}
    answers = [client.get(path, headers=bad, environ_base=here) for path in ("/api/runs", "/api/x", "/api/plans")]
    assert [a.status_code for a in answers] == [401, 401, 401]  # an unknown route's 401 counts too
    refused = client.get("/api/runs", headers=bad, environ_base=here)
    assert refused.status_code == 429
    assert refused.json["error"] == "too_many_requests" and "login_rate_limit" in refused.json["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert client.get("/api/runs", headers=good, environ_base=here).status_code == 429
    assert client.get("/api/runs", headers=good, environ_base={"REMOTE_ADDR": "192.0.2.31"}).status_code == 200
    assert client.get("/healthz", environ_base=here).status_code == 200  # only authentication is limited


def test_a_bad_rate_limit_is_refused_when_the_configuration_loads(tmp_path: Path) -> None:
    from trackcheck.errors import ConfigError
    from trackcheck.service.config import load_config

    with pytest.raises(ConfigError, match="login_rate_limit"):
        (tmp_path / "trackcheck.toml").write_text('login_rate_limit = "ten a minute"\n', encoding="utf-8")
        load_config(tmp_path / "trackcheck.toml", env={})


# -- several worker processes ----------------------------------------------------------------------------------


class Served:
    """``trackcheck serve`` in a subprocess of this test, stopped (SIGTERM to its pid) afterwards."""

    def __init__(self, root: Path, config: str) -> None:
        self.port = free_port()
        (root / "trackcheck.toml").write_text(config.format(port=self.port, root=root), encoding="utf-8")
        self.stderr = root / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCHECK_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trackcheck", "serve", "--config", str(root / "trackcheck.toml")],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr.open("w"),
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.stderr.read_text()
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, self.stderr.read_text()
            time.sleep(0.2)

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPResponse, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response, response.read().decode()
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


SERVE_CONFIG = """
db = "sqlite:///{root}/state.db"
port = {port}
workers = 2
"""
TOKENS_CONFIG = SERVE_CONFIG + "\n".join(
    f'[[tokens]]\nname = "{t["name"]}"\nrole = "{t["role"]}"\ntoken = "{t["token"]}"\n' for t in TOKENS
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[[str], Served]]:
    started: list[Served] = []

    def start(config: str) -> Served:
        server = Served(tmp_path, config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_every_worker_process_honours_a_login_and_a_logout(served: Callable[[str], Served]) -> None:
    server = served(TOKENS_CONFIG)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, response, _ = server.request("POST", "/login", f"token={VIEWER}", form)
    assert status == 302
    cookie = SimpleCookie(response.headers["Set-Cookie"])[COOKIE].value
    with_cookie = {"Cookie": f"{COOKIE}={cookie}"}
    # a new connection each time: gunicorn's two workers share the listening socket and take turns
    for _ in range(12):
        status, _, page = server.request("GET", "/plans", headers=with_cookie)
        assert status == 200 and 'id="account-name">dash<' in page
    assert server.request("POST", "/runs/new", "plan=mem", {**form, **with_cookie})[0] == 403
    assert server.request("POST", "/logout", "", {**form, **with_cookie})[0] == 302
    for _ in range(12):
        status, response, _ = server.request("GET", "/plans", headers=with_cookie)
        assert status == 302 and response.headers["Location"].startswith("/login")


def test_without_a_token_the_service_warns_once_in_its_log_and_on_every_page(served: Callable[[str], Served]) -> None:
    server = served(SERVE_CONFIG)
    status, _, page = server.request("GET", "/")
    warning = f"No API token is configured: anyone who can reach 127.0.0.1:{server.port} is an admin."
    assert status == 200 and warning in page
    warned = [line for line in server.stderr.read_text().splitlines() if warning in line]
    assert len(warned) == 1 and "WARNING" in warned[0], warned  # the master warned; its two workers did not

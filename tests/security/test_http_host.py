"""The http source's host is the source's: no stage path, redirect or DNS answer sends it elsewhere.

Real HTTP servers in threads (tests/integration/http_server.py): the source's server, and a second one on
another port or another loopback address standing for the host an attacker wants reached. That second
server must record no request at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.http_server import HttpTestServer
from trackcheck.errors import PlanError, SourceQueryError
from trackcheck.loader import load_plan_text
from trackcheck.plan.model import StageSpec
from trackcheck.sources import network
from trackcheck.sources.base import CAUSE_CHARS, FetchRequest
from trackcheck.sources.http import HttpSource
from trackcheck.sources.network import NetworkRule

CANARY = "canary-5b1e0c2a-exfiltrated"
EVENTS = [{"test_id": "abc", "event": "purchase"}]


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as started:
        yield started


@pytest.fixture
def other() -> Iterator[HttpTestServer]:
    """Another origin: the same address, another port."""
    with HttpTestServer() as started:
        yield started


@pytest.fixture
def other_host() -> Iterator[HttpTestServer]:
    """Another host: 127.0.0.2 (the whole 127/8 is loopback on Linux)."""
    with HttpTestServer("127.0.0.2") as started:
        yield started


def make_source(url: str, **options: Any) -> HttpSource:
    return HttpSource("bi", HttpSource.options_model.model_validate({"url": url, **options}))


def make_stage(path: str, **request: Any) -> StageSpec:
    spec = {"name": "bi", "source": "bi", "request": {"path": path, **request}, "compare": {"with": "expect"}}
    return StageSpec.model_validate(spec)


def fetch(source: HttpSource, path: str, **params: Any) -> list[dict[str, Any]]:
    return source.fetch(FetchRequest(plan="p", stage=make_stage(path), params=params)).records


def error_texts(error: BaseException) -> str:
    """The error and every error chained to it, as a traceback would print them."""
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def plan_with_path(url: str, path: str, **request: Any) -> str:
    return yaml.safe_dump(
        {
            "name": "uploaded",
            "key": ["test_id"],
            "params": {"test_id": {"type": "string"}},
            "sources": {"bi": {"type": "http", "url": url}},
            "stages": [
                {"name": "bi-api", "source": "bi", "request": {"path": path, **request}, "compare": {"with": "expect"}}
            ],
        }
    )


# -- refused when the plan loads ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("http://other-host/api/events", "has a scheme"),
        ("HTTPS://other-host/", "has a scheme"),
        ("//127.0.0.2:{port}/x", "is a network-path reference"),
        ("  //127.0.0.2/x", "is a network-path reference"),
        ("\\\\evil.com\\x", "contains a backslash"),
        ("/\\evil.com", "contains a backslash"),
        ("user@127.0.0.2/x", "has an '@' before its first '/'"),
        ("/api/../../admin", "has a '..' segment"),
        ("/api/%2e%2e/admin", "has a '..' segment"),
        ("/api/x\r\nHost: evil", "contains a control character"),
    ],
)
def test_a_stage_path_that_could_name_another_host_is_refused_at_load(
    server: HttpTestServer, other: HttpTestServer, path: str, reason: str
) -> None:
    path = path.replace("{port}", str(other.port))
    with pytest.raises(PlanError) as caught:
        load_plan_text(plan_with_path(server.url, path), origin="uploaded.yaml")

    message = str(caught.value)
    assert "stage 'bi-api'" in message
    assert f"request.path: {path!r} {reason}" in message
    assert server.requests == [] and other.requests == []


def test_a_stage_cannot_set_the_host_header(server: HttpTestServer) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan_text(plan_with_path(server.url, "/api", headers={"HOST": "internal.example"}))

    assert "stage 'bi-api'" in str(caught.value)
    assert "request.headers: 'Host' cannot be set by a stage" in str(caught.value)


@pytest.mark.parametrize("path", ["/api/events", "api/events", "/api/runs/{test_id}/events", "/api/x@y", ""])
def test_relative_paths_load(server: HttpTestServer, path: str) -> None:
    plan = load_plan_text(plan_with_path(server.url, path))
    assert plan.stage("bi-api").request is not None


# -- refused before sending --------------------------------------------------------------------------------
def test_a_request_built_for_another_origin_is_not_sent(server: HttpTestServer, other_host: HttpTestServer) -> None:
    """Defence in depth: a stage that skipped the load check (built in code) still cannot leave the host."""
    other_host.reply("/x", EVENTS)
    with make_source(server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, f"{other_host.url}/x?token=t0k3n")

    assert f"request to another host ({other_host.url}/) refused, not sent" in str(caught.value)
    assert "t0k3n" not in str(caught.value)
    assert other_host.requests == [] and server.requests == []


def test_a_host_header_set_by_a_stage_is_not_sent(server: HttpTestServer) -> None:
    stage = make_stage("/api/events", headers={"Host": "internal.example"})
    with make_source(server.url) as source, pytest.raises(SourceQueryError) as caught:
        source.fetch(FetchRequest(plan="p", stage=stage))

    assert "a stage cannot set the Host header, not sent" in str(caught.value)
    assert server.requests == []


def test_a_run_parameter_cannot_climb_out_of_the_source_path(server: HttpTestServer) -> None:
    """Parameters are quoted into the path, but '..' needs no quoting: the request is not sent."""
    with make_source(server.url + "/tenant-a") as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/{section}/tenant-b/events", section="..")

    assert "the path leaves the source's url" in str(caught.value)
    assert server.requests == []


# -- redirects ---------------------------------------------------------------------------------------------
def test_a_redirect_to_another_port_is_not_followed(server: HttpTestServer, other: HttpTestServer) -> None:
    target = other.url.replace("http://", "http://admin:pw-s3cret@") + "/latest/meta-data?token=t0k3n"
    server.reply("/api/events", status=302, headers={"Location": target})
    other.reply("/latest/meta-data", {"secret": CANARY})

    with make_source(server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/api/events")

    message = str(caught.value)
    assert f"GET {server.url}/api/events: redirect to another port ({other.url}/) not followed" in message
    assert other.requests == []
    text = error_texts(caught.value)
    for leaked in ("pw-s3cret", "t0k3n", "meta-data", CANARY):
        assert leaked not in text


def test_a_redirect_to_another_host_is_not_followed(server: HttpTestServer, other_host: HttpTestServer) -> None:
    server.reply("/api/events", status=307, headers={"Location": f"{other_host.url}/x"})
    other_host.reply("/x", EVENTS)

    with make_source(server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/api/events")

    assert f"redirect to another host ({other_host.url}/) not followed" in str(caught.value)
    assert other_host.requests == []


def test_a_redirect_to_another_scheme_is_not_followed(server: HttpTestServer) -> None:
    server.reply("/api/events", status=301, headers={"Location": f"https://127.0.0.1:{server.port}/api/events"})

    with make_source(server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/api/events")

    assert f"redirect to another scheme (https://127.0.0.1:{server.port}/) not followed" in str(caught.value)
    assert len(server.requests) == 1


def test_same_origin_redirects_are_followed(server: HttpTestServer, other: HttpTestServer) -> None:
    server.reply("/old", status=301, headers={"Location": "/older"})
    server.reply("/older", status=302, headers={"Location": f"{server.url}/api/events?page=1"})
    server.reply("/api/events", EVENTS)

    with make_source(server.url) as source:
        assert fetch(source, "/old") == EVENTS

    assert [r.path for r in server.requests] == ["/old", "/older", "/api/events"]
    assert server.requests[-1].query == {"page": ["1"]}


def test_a_chain_leaving_the_origin_after_a_same_origin_hop_stops_there(
    server: HttpTestServer, other: HttpTestServer
) -> None:
    server.reply("/a", status=302, headers={"Location": "/b"})
    server.reply("/b", status=302, headers={"Location": f"{other.url}/c"})
    other.reply("/c", EVENTS)

    with make_source(server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/a")

    assert f"GET {server.url}/a: redirect to another port" in str(caught.value)
    assert [r.path for r in server.requests] == ["/a", "/b"]
    assert other.requests == []


# -- what an error may quote -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 200])
def test_a_long_body_appears_only_as_a_short_excerpt(server: HttpTestServer, status: int) -> None:
    """A 10,000-character answer (an error, or a 200 that is not JSON) ending in a canary."""
    server.reply("/api/events", "<html>" + "x" * (10_000 - len(CANARY) - 6) + CANARY, status=status)

    with make_source(server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/api/events")

    text = error_texts(caught.value)
    assert "<html>xxx" in text
    assert CANARY not in text
    assert len(str(caught.value)) < 500


def test_a_cause_is_quoted_masked_then_cut(server: HttpTestServer) -> None:
    """A driver's error echoing a file or a body is cut; a secret straddling the cut is masked whole."""
    source = make_source(server.url, headers={"Authorization": "Bearer s3cr3t-token-value"})
    echoed = "y" * (CAUSE_CHARS - 30) + " s3cr3t-token-value " + "z" * 10_000 + CANARY

    error = source.error(SourceQueryError, "the query failed", None, ValueError(echoed))

    message = str(error)
    assert "the query failed: ValueError: yyy" in message
    assert CANARY not in message and "s3cr3t" not in message
    assert "***" in message
    assert len(message) < CAUSE_CHARS + 100


# -- the network rule: checked again at fetch time ---------------------------------------------------------
def test_a_network_rule_refuses_a_private_host_before_sending(server: HttpTestServer) -> None:
    with make_source(server.url) as trusted:
        server.reply("/api/events", EVENTS)
        assert fetch(trusted, "/api/events") == EVENTS
    server.clear()

    source = make_source(server.url)
    source.network = NetworkRule(allow_private=False)
    with source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/api/events")

    assert f"GET {server.url}/api/events: host '127.0.0.1' is a loopback address" in str(caught.value)
    assert server.requests == []


def test_a_name_that_resolves_elsewhere_when_connecting_is_caught(
    server: HttpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the check's lookup says public, the connection goes to loopback. The answer is not
    read: the address actually connected to is checked before the body."""
    real = network._resolve
    public = network.ipaddress.ip_address("93.184.215.14")
    monkeypatch.setattr(network, "_resolve", lambda name: [public] if name == "localhost" else real(name))
    server.reply("/api/events", [{"secret": CANARY}])
    source = make_source(f"http://localhost:{server.port}")
    source.network = NetworkRule(allow_private=False)

    with source, pytest.raises(SourceQueryError) as caught:
        fetch(source, "/api/events")

    message = str(caught.value)
    assert "connected to a refused address: host '127.0.0.1' is a loopback address" in message
    assert CANARY not in error_texts(caught.value)

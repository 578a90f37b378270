"""The http source against a real HTTP server running in a thread (tests/integration/http_server.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.http_server import HttpTestServer
from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import RunRequest
from trackcheck.errors import PlanError, SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import SourceSpec, StageSpec
from trackcheck.sources import build_source
from trackcheck.sources.base import FetchRequest
from trackcheck.sources.http import POLL_HEADER, HttpSource
from trackcheck.store.ticks import Claim

pytestmark = pytest.mark.integration


@pytest.fixture
def http_server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        yield server


def make_stage(**keys: Any) -> StageSpec:
    return StageSpec.model_validate({"name": "bi", "source": "bi", "compare": {"with": "expect"}, **keys})


def make_source(url: str, **options: Any) -> HttpSource:
    return HttpSource("bi", HttpSource.options_model.model_validate({"url": url, **options}))


def fetch(source: HttpSource, stage: StageSpec, **request: Any) -> list[dict[str, Any]]:
    request.setdefault("params", {"test_id": "abc"})
    return source.fetch(FetchRequest(plan="p", stage=stage, **request)).records


def error_texts(error: BaseException) -> str:
    """The text of an error and of every error chained to it (what a traceback would print)."""
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


EVENTS = [
    {"test_id": "abc", "event": "purchase", "amount": 25.5},
    {"test_id": "abc", "event": "page_view", "amount": None},
    {"test_id": "def", "event": "purchase", "amount": 10},
]


def test_get_sends_rendered_query_params_and_reads_records(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", {"data": {"items": EVENTS}, "total": 3})
    stage = make_stage(
        request={
            "method": "GET",
            "path": "/api/events",
            "params": {"test_id": "{test_id}", "page_size": 500},
        },
        records="data.items",
    )
    with make_source(http_server.url) as source:
        records = fetch(source, stage)

    assert records == EVENTS
    [sent] = http_server.requests
    assert sent.method == "GET"
    assert sent.path == "/api/events"
    assert sent.query == {"test_id": ["abc"], "page_size": ["500"]}


def test_path_is_relative_to_the_source_url_and_params_in_it_are_escaped(http_server: HttpTestServer) -> None:
    http_server.reply("/bi/api/runs/a%20b%2Fc/events", [{"event": "purchase"}])
    stage = make_stage(request={"path": "/api/runs/{test_id}/events"})
    with make_source(http_server.url + "/bi") as source:
        records = fetch(source, stage, params={"test_id": "a b/c"})

    assert records == [{"event": "purchase"}]
    assert http_server.requests[0].path == "/bi/api/runs/a%20b%2Fc/events"


def test_post_sends_rendered_json_body_keeping_parameter_types(http_server: HttpTestServer) -> None:
    http_server.reply("/api/query", {"rows": EVENTS[:2]}, method="POST")
    stage = make_stage(
        request={
            "method": "post",
            "path": "/api/query",
            "json": {"filter": {"test_id": "{test_id}", "min_amount": "{min}"}, "label": "run {test_id}"},
        },
        records="rows",
    )
    with make_source(http_server.url) as source:
        records = fetch(source, stage, params={"test_id": "abc", "min": 5})

    assert records == EVENTS[:2]
    [sent] = http_server.requests
    assert sent.method == "POST"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json() == {"filter": {"test_id": "abc", "min_amount": 5}, "label": "run abc"}


def test_select_maps_nested_fields_to_plan_fields(http_server: HttpTestServer) -> None:
    http_server.reply(
        "/api/orders",
        {"data": {"items": [{"id": 7, "props": {"order": {"total": "25.50"}}, "user": {"id": "u1"}}]}},
    )
    stage = make_stage(
        request={"path": "/api/orders"},
        records="data.items",
        select={"order_id": "id", "total": "props.order.total", "user_id": "user.id", "absent": "nope.x"},
    )
    with make_source(http_server.url) as source:
        records = fetch(source, stage)

    assert records == [{"order_id": 7, "total": "25.50", "user_id": "u1", "absent": None}]


def test_where_filters_apply_to_the_response(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", EVENTS)
    stage = make_stage(request={"path": "/api/events"})
    with make_source(http_server.url) as source:
        only_def = fetch(source, stage, filters={"test_id": ["def"]})
        amounts = fetch(source, stage, filters={"amount": ["25.50", "10.0"]})

    assert only_def == [EVENTS[2]]
    assert amounts == [EVENTS[0], EVENTS[2]]  # compared as numbers, not as text


def test_headers_of_the_source_and_of_the_stage_are_sent(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", [])
    stage = make_stage(request={"path": "/api/events", "headers": {"X-Test-Run": "{test_id}"}})
    options = {"headers": {"Authorization": "Bearer s3cr3t-token", "X-Tenant": "acme"}}
    with make_source(http_server.url, **options) as source:
        assert fetch(source, stage) == []

    headers = http_server.requests[0].headers
    assert headers["authorization"] == "Bearer s3cr3t-token"
    assert headers["x-tenant"] == "acme"
    assert headers["x-test-run"] == "abc"


def test_user_and_password_in_the_url_are_sent_as_basic_auth(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", [])
    url = http_server.url.replace("http://", "http://user:pw-s3cret@")
    with make_source(url) as source:
        fetch(source, make_stage(request={"path": "/api/events"}))

    assert http_server.requests[0].headers["authorization"].startswith("Basic ")


def test_a_204_answer_is_no_records(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", status=204)
    with make_source(http_server.url) as source:
        assert fetch(source, make_stage(request={"path": "/api/events"}, records="data.items")) == []


def test_non_2xx_is_a_query_error_naming_status_source_and_stage(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", {"error": "warehouse is down"}, status=503)
    with make_source(http_server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, make_stage(request={"path": "/api/events", "params": {"test_id": "{test_id}"}}))

    message = str(caught.value)
    assert "503" in message
    assert "warehouse is down" in message
    assert "source 'bi'" in message and "stage 'bi'" in message
    assert f"GET {http_server.url}/api/events" in message
    assert "test_id=abc" not in message  # the query string is never quoted


def test_a_long_error_body_is_cut_in_the_message(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", "<html>" + "x" * 5000 + "</html>", status=500)
    with make_source(http_server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, make_stage(request={"path": "/api/events"}))

    assert "HTTP 500: <html>xxx" in str(caught.value)
    assert len(str(caught.value)) < 400


def test_a_body_that_is_not_json_is_a_query_error(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", "<html><body>Login required</body></html>")
    with make_source(http_server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, make_stage(request={"path": "/api/events"}))

    assert "not JSON" in str(caught.value)
    assert "Login required" in str(caught.value)


def test_records_that_are_not_a_list_of_objects_are_a_query_error(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", {"data": {"count": 3}})
    with make_source(http_server.url) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, make_stage(request={"path": "/api/events"}, records="data.count"))

    assert "'records: data.count' is not a list of objects" in str(caught.value)


def test_no_answer_within_the_timeout_is_a_timeout_error(http_server: HttpTestServer) -> None:
    http_server.reply("/api/slow", [], delay=3)
    started = time.monotonic()
    with make_source(http_server.url, timeout="300ms") as source, pytest.raises(SourceTimeoutError) as caught:
        fetch(source, make_stage(request={"path": "/api/slow"}))

    assert time.monotonic() - started < 2
    assert "no answer within 0.3s" in str(caught.value)
    assert "stage 'bi'" in str(caught.value)


def test_connection_refused_is_a_connect_error() -> None:
    with make_source("http://127.0.0.1:1/") as source, pytest.raises(SourceConnectError) as caught:
        fetch(source, make_stage(request={"path": "/api/events"}))

    assert "could not connect" in str(caught.value)
    assert "http://127.0.0.1:1/api/events" in str(caught.value)


def test_password_in_the_url_never_appears_in_an_error() -> None:
    url = "http://user:pw-s3cret@127.0.0.1:1/"
    with make_source(url) as source, pytest.raises(SourceConnectError) as caught:
        fetch(source, make_stage(request={"path": "/api/events"}))

    assert "127.0.0.1:1" in str(caught.value)
    assert "pw-s3cret" not in error_texts(caught.value)


def test_header_and_query_secrets_echoed_by_the_server_are_masked(http_server: HttpTestServer) -> None:
    echoed = "invalid credentials: Bearer s3cr3t-token hunter2-custom sig-abc-x k-12345-secret"
    http_server.reply("/api/events", {"error": echoed}, status=401)
    stage = make_stage(
        request={
            "path": "/api/events",
            "params": {"api_key": "k-12345-secret", "test_id": "{test_id}"},
            "headers": {"X-Signature": "sig-{test_id}-x"},
        }
    )
    options = {"headers": {"Authorization": "Bearer s3cr3t-token", "X-Custom": "hunter2-custom"}}
    with make_source(http_server.url, **options) as source, pytest.raises(SourceQueryError) as caught:
        fetch(source, stage)

    text = error_texts(caught.value)
    assert "401" in text and "invalid credentials" in text
    for secret in ("s3cr3t-token", "hunter2-custom", "sig-abc-x", "k-12345-secret"):
        assert secret not in text
    assert "invalid credentials: ***" in text


def test_secrets_in_timeout_errors_are_masked(http_server: HttpTestServer) -> None:
    http_server.reply("/api/slow", [], delay=3)
    url = http_server.url.replace("http://", "http://user:pw-s3cret@")
    options = {"timeout": "200ms", "headers": {"Authorization": "Bearer s3cr3t-token"}}
    with make_source(url, **options) as source, pytest.raises(SourceTimeoutError) as caught:
        fetch(source, make_stage(request={"path": "/api/slow", "params": {"token": "t0k3n-value"}}))

    text = error_texts(caught.value)
    for secret in ("pw-s3cret", "s3cr3t-token", "t0k3n-value"):
        assert secret not in text


def test_a_source_fetches_without_open_and_closes_twice(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", EVENTS)
    source = make_source(http_server.url)
    assert fetch(source, make_stage(request={"path": "/api/events"}), filters={"test_id": ["def"]}) == [EVENTS[2]]
    source.close()
    source.close()
    assert http_server.requests  # the request really went out


def test_built_from_a_plan_source_entry(http_server: HttpTestServer) -> None:
    http_server.reply("/api/events", EVENTS)
    spec = SourceSpec.model_validate({"type": "http", "url": http_server.url, "timeout": "2s"})
    source = build_source("bi", spec, plan="p")
    assert isinstance(source, HttpSource)
    with source:
        assert len(fetch(source, make_stage(request={"path": "/api/events"}))) == 3

    with pytest.raises(PlanError) as caught:
        build_source("bi", SourceSpec.model_validate({"type": "http", "url": "x", "timeout": "soon"}), plan="p")
    assert "sources.bi.timeout" in str(caught.value)


def test_stage_keys_of_other_backends_are_rejected() -> None:
    assert HttpSource.check_stage(make_stage(request={"path": "/x"}, records="data")) is None
    problem = HttpSource.check_stage(make_stage(table="events"))
    assert problem == "table: unknown key: a http stage reads request, records (check the spelling; see docs/plans.md)"


def test_every_error_is_a_source_error(http_server: HttpTestServer) -> None:
    """``records`` pointing at something that is not a list of objects (a JMESPath that does not parse is a
    plan error at load: tests/unit/test_functions.py)."""
    http_server.reply("/api/events", {"items": 5})
    with make_source(http_server.url) as source, pytest.raises(SourceError, match="not a list of objects"):
        fetch(source, make_stage(request={"path": "/api/events"}, records="items"))


def test_a_poll_under_the_lease_names_its_tick_in_a_header(http_server: HttpTestServer, tmp_path: Path) -> None:
    """Each read of a poller with the lease says which group, tick, attempt and chunk it belongs to (what the
    API's owner sees in its access log, and what the fault scenarios count); a poll outside the lease
    (``trackcheck run``) sends nothing of the sort."""
    http_server.reply("/api/events", [])
    plan = f"""
name: named
key: event_id
params: {{test_id: {{required: true}}}}
defaults: {{interval: 1m, timeout: 30m, batch_size: 2}}
sources: {{bi: {{type: http, url: "{http_server.url}"}}}}
expect: [{{event_id: e1}}]
stages:
  - name: bi
    source: bi
    request: {{path: /api/events}}
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect}}
"""
    with Engine(f"sqlite:///{tmp_path / 'state.db'}", setup=FAST_SETUP) as engine:
        plan_id = store_plan(engine, plan, "named.yaml", None)[0]
        engine.submit_many(plan_id, [RunRequest({"test_id": f"t{i}"}) for i in range(3)])
        [group] = engine.store.active_groups()
        engine.poll_group(group.group_key)
        assert [r.headers.get(POLL_HEADER.lower()) for r in http_server.requests] == [None, None]

        epoch = engine.store.take_epoch()
        engine.poll_group(group.group_key, claim=Claim(group.group_key, epoch, tick=7, attempt=1))
        sent = [r.headers.get(POLL_HEADER.lower()) for r in http_server.requests[2:]]
        assert sent == [f"group={group.group_key}; epoch={epoch}; tick=7; attempt=1; chunk={chunk}" for chunk in (0, 1)]

"""The plan page and the runs search as served (Flask's test client over a real service): what a plan
without runs shows, that a parameter sent over the API is shown as text wherever "failing since" lists it,
and that a search that cannot be read is a 400 on the page and on its live fragment alike."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from tests.service.conftest import rows, wait_finished
from trackcheck.testing import MemorySource

HOSTILE = '<img src=x onerror="alert(1)">'


def test_a_plan_without_runs_says_so_and_fails_since_nothing(client: FlaskClient) -> None:
    page = client.get("/plans/mem")
    assert page.status_code == 200
    html = page.data.decode()
    assert "No runs of this plan yet." in html
    assert 'id="failing"' not in html and 'id="run-grid"' not in html and "Trends" not in html
    assert 'class="failing-cell"' in client.get("/plans").data.decode()
    assert "failing-count" not in client.get("/plans").data.decode()


def test_a_failing_run_s_parameters_are_shown_as_text_never_as_markup(client: FlaskClient) -> None:
    answer = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": HOSTILE}})
    assert answer.status_code == 202, answer.json
    run_id = answer.json["id"]  # type: ignore[index]
    MemorySource.tables["log"].extend([{**row, "event": "other"} for row in rows(HOSTILE)])  # e1 and e2 differ
    assert wait_finished(client, run_id)["status"] == "failed"

    for url in ("/plans", "/plans/mem"):
        page = client.get(url)
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        html = page.data.decode()
        assert HOSTILE not in html
        assert "test_id=&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
        assert f'href="/runs/{run_id}"' in html
    plan_page = client.get("/plans/mem").data.decode()
    assert re.search(r'<section class="failing" id="failing" [^>]*data-count="1"', plan_page)
    assert re.search(rf'<td data-run="{run_id}" data-status="failed">', plan_page)

    found = client.get("/", query_string={"param": f"test_id={HOSTILE}"})
    assert found.status_code == 200
    assert found.data.decode().count('class="run-row"') == 1


def test_a_search_that_cannot_be_read_is_a_400_naming_the_field(client: FlaskClient) -> None:
    for url in ("/", "/fragments/runs"):
        answer = client.get(url, query_string={"param": "test id=t-1"})
        assert answer.status_code == 400
        html = answer.data.decode()
        assert "Search by parameter (param): &#39;test id&#39; is not a parameter name" in html
    assert client.get("/", query_string={"param": "x" * 201}).status_code == 400
    assert client.get("/", query_string={"param": ""}).status_code == 200  # an empty box: no search

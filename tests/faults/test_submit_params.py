"""A run whose later stage needs an optional parameter given no value is refused when it is submitted (400
naming the parameter), not accepted and then stuck or failed at that stage; nothing of it is stored."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from tests.faults.harness import Feed, Served
from tests.faults.invariants import reader

PLAN = """
name: optional
key: event_id
params:
  test_id: {required: true}
  region: {description: "optional, no default: only the warehouse stage uses it"}
defaults: {interval: 1s, timeout: 10s}
sources:
  feed: {type: http, url: "URL", timeout: 2s}
expect:
  - {event_id: e1, event: view}
stages:
  - name: collector
    source: feed
    request: {path: /collector}
    records: items
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
  - name: warehouse
    source: feed
    request: {path: /warehouse, params: {region: "{region}"}}
    records: items
    where: {test_id: "{test_id}", region: "{region}"}
    compare: {with: collector, fields: [event]}
"""


def test_optional_parameter_without_value_in_a_later_stage_is_refused_at_submit(
    workdir: Path, feed: Feed, serve: Callable[..., Served], report: Callable[[str], None]
) -> None:
    began = time.monotonic()
    plans = workdir / "plans"
    plans.mkdir()
    (plans / "optional.yaml").write_text(PLAN.replace("URL", feed.url))
    served = serve(f"sqlite:///{workdir / 'state.db'}", plans, workers=1).start()

    refused = served.post_run("optional", {"test_id": "t1"})
    refused_null = served.post_run("optional", {"test_id": "t1", "region": None})  # JSON null: no value either
    accepted = served.post_run("optional", {"test_id": "t2", "region": "eu"})  # the plan itself is fine

    engine = reader(served.db)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM tc_runs")).scalar()
    finally:
        engine.dispose()
    detail = str(refused.json().get("detail", "")) if refused.headers.get("content-type") == "application/json" else ""
    line = (
        f"optional parameter without value in a later stage: {refused.status_code} {detail[:120]!r}, "
        f"runs stored {stored} (of 1 accepted) ({time.monotonic() - began:.0f} s)"
    )
    report(line)
    assert accepted.status_code == 202, f"{accepted.status_code} {accepted.text}"
    assert refused.status_code == 400, f"{line}\n{refused.text}"
    assert "region" in detail, line
    assert refused_null.status_code == 400 and "region" in refused_null.text, refused_null.text
    assert stored == 1, line

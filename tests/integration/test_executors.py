"""The executor is configuration: the same verification on APScheduler's thread pool and process pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.foreground import wait_for
from trackcheck.scheduling import Poller, SchedulerConfig

PLAN = """
name: pooled
key: event_id
sources:
  log: {type: file, path: "LOG", format: jsonl}
expect:
  - {event_id: e1, event: view}
  - {event_id: e2, event: buy}
stages:
  - name: log
    source: log
    compare: {with: expect, fields: [event]}
"""


@pytest.mark.parametrize("executor", ["threadpool", "processpool"])
@pytest.mark.parametrize("jobstore", ["memory", "sqlalchemy"])
def test_a_run_passes_on_every_executor_and_job_store(tmp_path: Path, executor: str, jobstore: str) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"event_id": e, "event": v}) + "\n" for e, v in (("e1", "view"), ("e2", "buy"))))
    config = SchedulerConfig.model_validate({"executor": executor, "jobstore": jobstore, "workers": 2})
    poller = Poller(Engine(f"sqlite:///{tmp_path / 'state.db'}", setup=FAST_SETUP), config).start()
    engine = poller.engine
    try:
        plan_id = store_plan(engine, PLAN.replace("LOG", str(log)), "pooled.yaml", None)[0]
        run_id = engine.submit(plan_id, {}, overrides={"interval": 0.3, "timeout": 30})
        result = wait_for(engine, run_id, every=0.1)
    finally:
        poller.shutdown()
    assert result.status == "passed", result.to_dict()
    assert result.stages[0].found == 2

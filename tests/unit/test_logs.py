"""The JSON lines of ``--log-format json``: their fields, the context the engine sets, and nothing more."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.settings import FAST_SETUP

from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import RunRequest
from trackcheck.logs import JsonLines, log_context
from trackcheck.testing import MemorySource


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing JSON lines into a buffer (the root logger and its handlers untouched)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("trackcheck.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_timestamp_level_logger_and_message_in_that_order(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    logger.warning("poll of group %s stopped", "g-1")
    [line] = parsed(stream)
    assert list(line) == ["timestamp", "level", "logger", "message"]
    assert line["level"] == "WARNING" and line["logger"] == "trackcheck.test_logs"
    assert line["message"] == "poll of group g-1 stopped"
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == timedelta(0) and abs(datetime.now(stamp.tzinfo) - stamp) < timedelta(seconds=5)


def test_context_is_on_every_line_inside_the_block_nested_blocks_add_to_it_and_it_ends_with_the_block(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    with log_context(group="1-0-abc", plan="orders", stage="warehouse", runs=2):
        logger.info("fetched")
        with log_context(run_id="r1"):
            logger.info("decided")
        logger.info("written")
    logger.info("after")
    fetched, decided, written, after = parsed(stream)
    group = {"plan": "orders", "stage": "warehouse", "group": "1-0-abc", "runs": 2}
    assert {k: fetched[k] for k in group} == group and "run_id" not in fetched
    assert decided["run_id"] == "r1" and {k: decided[k] for k in group} == group
    assert "run_id" not in written and written["group"] == "1-0-abc"
    assert not {"run_id", "plan", "stage", "group", "runs"} & after.keys()


def test_context_belongs_to_the_thread_that_set_it(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = lines
    with log_context(run_id="mine"):
        other = threading.Thread(target=logger.info, args=("from another thread",))
        other.start()
        other.join()
    [line] = parsed(stream)
    assert "run_id" not in line


def test_an_exception_is_one_field_of_its_line(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = lines
    try:
        json.loads("{not json")
    except ValueError:
        with log_context(run_id="r1"):
            logger.exception("cannot compare stage %s", "warehouse")
    assert len(stream.getvalue().splitlines()) == 1
    [line] = parsed(stream)
    assert line["message"] == "cannot compare stage warehouse" and line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].rstrip().splitlines()[-1].startswith("json.decoder.JSONDecodeError:")


def test_extras_other_than_the_context_fields_are_left_out(lines: tuple[logging.Logger, io.StringIO]) -> None:
    """A library's ``extra=`` (procrastinate passes a job's arguments) is not on the text line either."""
    logger, stream = lines
    logger.info("run accepted", extra={"run_id": "r9", "plan": "orders", "params": {"token": "s3cret"}})
    [line] = parsed(stream)
    assert (line["run_id"], line["plan"]) == ("r9", "orders")
    assert "s3cret" not in stream.getvalue() and "params" not in line


def test_log_context_refuses_a_field_that_is_not_a_context_field() -> None:
    with pytest.raises(ValueError, match="not log context fields: password"), log_context(password="x"):
        pass


GROUP_PLAN = """
name: chunked
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 58s, timeout: 30m, batch_size: 10}
sources:
  log: {type: memory, table: log}
expect:
  - {event_id: e1, event: view}
stages:
  - name: arrive
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""


def test_each_poll_line_of_a_group_names_its_run_and_the_chunk_it_was_read_in(
    tmp_path: Path, lines: tuple[logging.Logger, io.StringIO]
) -> None:
    _, stream = lines
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    poll_log = logging.getLogger("trackcheck.poll")
    poll_log.addHandler(handler)
    level = poll_log.level
    poll_log.setLevel(logging.INFO)
    MemorySource.reset()
    try:
        with Engine(f"sqlite:///{tmp_path / 'state.db'}", setup=FAST_SETUP) as engine:
            plan_id = store_plan(engine, GROUP_PLAN, "chunked.yaml", None)[0]
            tests = [f"t{i:02d}" for i in range(25)]
            MemorySource.tables["log"].extend({"event_id": "e1", "event": "view", "test_id": t} for t in tests)
            runs = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in tests])
            [group] = engine.store.active_groups()
            engine.poll_group(group.group_key)
    finally:
        poll_log.removeHandler(handler)
        poll_log.setLevel(level)
        MemorySource.reset()

    polls = parsed(stream)
    assert [line["run_id"] for line in polls] == runs
    assert all("outcome=passed" in line["message"] and line["run_id"] in line["message"] for line in polls)
    assert {(line["plan"], line["stage"], line["group"]) for line in polls} == {("chunked", "arrive", group.group_key)}
    assert [line["runs"] for line in polls] == [10] * 20 + [5] * 5  # the chunk each was read in

"""JUnit XML for CI systems: one testcase per stage, failures and errors with their reasons, and the warnings
of a stage (checks of ``severity: warn``) in its ``<system-out>``.

``time`` is in seconds: a testcase's is its stage's duration (until now for a stage that has not ended, 0 for
one never started), the testsuite's the run's (from its first stage's start to its last stage's end).
``timestamp`` is when the run started, ISO 8601 in UTC. A run that could not start (an invalid plan, a
missing driver) is one errored testcase named after the plan: see ``write_junit_error``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from trackcheck.engine.result import RunResult, StageResult

#: characters XML 1.0 cannot carry at all, not even escaped (event keys and values may hold them)
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    """``text`` as XML can hold it: a control character is written ``\\x01``, as Python shows it."""
    return _NOT_XML.sub(lambda m: repr(m.group())[1:-1], text)


def write_junit(result: RunResult, path: str | Path) -> None:
    now = datetime.now(UTC)
    starts = [_moment(s.started_at) for s in result.stages if s.started_at]
    ends = [_moment(s.finished_at) if s.finished_at else now for s in result.stages if s.started_at]
    began = min(starts, default=now)
    suite = ET.Element(
        "testsuite",
        name=_xml(result.plan),
        tests=str(len(result.stages)),
        failures=str(_count(result, "failed")),
        errors=str(_count(result, "error")),
        skipped=str(sum(s.status in ("skipped", "pending", "waiting") for s in result.stages)),
        time=_seconds((max(ends, default=began) - began).total_seconds()),
        timestamp=_timestamp(began),
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run_id", value=result.run_id)
    for key, value in result.params.items():
        ET.SubElement(props, "property", name=_xml(f"param.{key}"), value=_xml(str(value)))
    for stage in result.stages:
        case = ET.SubElement(
            suite, "testcase", classname=_xml(result.plan), name=stage.name, time=_seconds(_duration(stage, now))
        )
        if stage.status == "failed":
            ET.SubElement(case, "failure", message=_xml(stage.reason or "failed")).text = _evidence(stage)
        elif stage.status == "error":
            error = ET.SubElement(case, "error", message=_xml(stage.error or stage.reason or "error"))
            error.text = _xml(stage.reason) if stage.reason else None
        elif stage.status != "passed":
            ET.SubElement(case, "skipped", message=_xml(stage.reason or stage.status))
        if stage.warnings:  # after failure/error/skipped, as the JUnit schema orders a testcase's children
            ET.SubElement(case, "system-out").text = _xml("\n".join(f"warning: {w}" for w in stage.warnings))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def write_junit_error(
    path: str | Path, plan: str, error_type: str, message: str, *, began: datetime, seconds: float
) -> None:
    """The report of a run that could not start: one testcase named after ``plan`` (its name, or the file's
    when the plan could not be read) with an ``<error>`` of ``error_type`` whose message is ``message``."""
    suite = ET.Element(
        "testsuite",
        name=_xml(plan),
        tests="1",
        failures="0",
        errors="1",
        skipped="0",
        time=_seconds(seconds),
        timestamp=_timestamp(began),
    )
    case = ET.SubElement(suite, "testcase", classname=_xml(plan), name=_xml(plan), time=_seconds(seconds))
    ET.SubElement(case, "error", message=_xml(message), type=error_type).text = _xml(message)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _moment(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(stage: StageResult, now: datetime) -> float:
    if not stage.started_at:
        return 0.0
    end = _moment(stage.finished_at) if stage.finished_at else now
    return max(0.0, (end - _moment(stage.started_at)).total_seconds())


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _count(result: RunResult, status: str) -> int:
    return sum(stage.status == status for stage in result.stages)


def _evidence(stage: StageResult) -> str:
    evidence = {
        k: getattr(stage, k)
        for k in ("missing", "unexpected", "duplicates", "mismatches", "violations", "counts")
        if getattr(stage, k)
    }
    return json.dumps(evidence, indent=2, default=str)

"""JUnit XML for CI systems: one testcase per stage, failures and errors with their reasons."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from trackcheck.engine.result import RunResult, StageResult


def write_junit(result: RunResult, path: str | Path) -> None:
    suite = ET.Element(
        "testsuite",
        name=result.plan,
        tests=str(len(result.stages)),
        failures=str(_count(result, "failed")),
        errors=str(_count(result, "error")),
        skipped=str(sum(s.status in ("skipped", "pending", "waiting") for s in result.stages)),
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run_id", value=result.run_id)
    for key, value in result.params.items():
        ET.SubElement(props, "property", name=f"param.{key}", value=str(value))
    for stage in result.stages:
        case = ET.SubElement(suite, "testcase", classname=result.plan, name=stage.name)
        if stage.status == "failed":
            ET.SubElement(case, "failure", message=stage.reason or "failed").text = _evidence(stage)
        elif stage.status == "error":
            ET.SubElement(case, "error", message=stage.error or stage.reason or "error").text = stage.reason
        elif stage.status != "passed":
            ET.SubElement(case, "skipped", message=stage.reason or stage.status)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _count(result: RunResult, status: str) -> int:
    return sum(stage.status == status for stage in result.stages)


def _evidence(stage: StageResult) -> str:
    evidence = {
        k: getattr(stage, k)
        for k in ("missing", "unexpected", "duplicates", "mismatches", "violations", "counts")
        if getattr(stage, k)
    }
    return json.dumps(evidence, indent=2, default=str)

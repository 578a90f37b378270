"""JUnit XML for CI systems: one testcase per stage, failures and errors with their reasons, and the warnings
of a stage (checks of ``severity: warn``) in its ``<system-out>``."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from trackcheck.engine.result import RunResult, StageResult

#: characters XML 1.0 cannot carry at all, not even escaped (event keys and values may hold them)
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    """``text`` as XML can hold it: a control character is written ``\\x01``, as Python shows it."""
    return _NOT_XML.sub(lambda m: repr(m.group())[1:-1], text)


def write_junit(result: RunResult, path: str | Path) -> None:
    suite = ET.Element(
        "testsuite",
        name=_xml(result.plan),
        tests=str(len(result.stages)),
        failures=str(_count(result, "failed")),
        errors=str(_count(result, "error")),
        skipped=str(sum(s.status in ("skipped", "pending", "waiting") for s in result.stages)),
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run_id", value=result.run_id)
    for key, value in result.params.items():
        ET.SubElement(props, "property", name=_xml(f"param.{key}"), value=_xml(str(value)))
    for stage in result.stages:
        case = ET.SubElement(suite, "testcase", classname=_xml(result.plan), name=stage.name)
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


def _count(result: RunResult, status: str) -> int:
    return sum(stage.status == status for stage in result.stages)


def _evidence(stage: StageResult) -> str:
    evidence = {
        k: getattr(stage, k)
        for k in ("missing", "unexpected", "duplicates", "mismatches", "violations", "counts")
        if getattr(stage, k)
    }
    return json.dumps(evidence, indent=2, default=str)

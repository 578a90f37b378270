"""``schema``: every record found at a stage is valid against its JSON Schema (one file, or a tracking plan)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from trackcheck.compare.checks import Check, Record, listing, plural, show
from trackcheck.compare.result import Comparison
from trackcheck.compare.values import display_key, jsonable
from trackcheck.errors import PlanError
from trackcheck.plan.model import SchemaMapSpec

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

#: violations reported per record, most relevant first
ERRORS_PER_RECORD = 10


class SchemaCheck(Check[str | SchemaMapSpec]):
    """Validates each found record, as JSON (Decimal → number, datetime → ISO text), against a JSON Schema.

    ``spec`` is one schema file, or a tracking plan (``SchemaMapSpec``) where the record's ``by`` field picks
    the file; a record whose value has no file is an unplanned event. The dialect is the one the schema's
    ``$schema`` names (Draft 2020-12 by default) and ``format`` is asserted. Any violation fails the stage;
    ``violations`` holds ``{"key", "path", "message"}``, at most ERRORS_PER_RECORD per record.

    The reference is not used. Raises PlanError when a schema file cannot be read.
    """

    name = "schema"

    def evaluate(self, found: list[Record], reference: list[Record]) -> Comparison:
        violations: list[dict[str, Any]] = []
        failing = 0
        for record in found:
            before = len(violations)
            self._validate(record, violations)
            failing += len(violations) > before
        reason = (
            f"{plural(len(violations), 'schema violation')} in {plural(failing, 'record')}: "
            + listing(len(violations), (f"{show(v['key'])} {v['path']}: {v['message']}" for v in violations), "; ")
            if violations
            else f"{plural(len(found), 'record')} valid against the schema"
        )
        return Comparison(
            verdict="failed" if violations else "passed",
            expected=len(reference),
            found=len(found),
            violations=violations,
            reason=reason,
        )

    def _validate(self, record: Record, out: list[dict[str, Any]]) -> None:
        spec = self.spec
        if isinstance(spec, str):
            path = spec
        else:
            value = record.get(spec.by)
            name = value if isinstance(value, str) else json.dumps(jsonable(value))
            if spec.by not in record or name not in spec.files:
                message = (
                    f"no '{spec.by}' field to pick its schema in the tracking plan"
                    if spec.by not in record
                    else f"unplanned {spec.by} {show(jsonable(value))!r}: no schema in the tracking plan"
                )
                out.append({"key": display_key(record, self.key), "path": f"$.{spec.by}", "message": message})
                return
            path = spec.files[name]
        validator = _validator(path)
        errors = validator.iter_errors(jsonable(record))
        first = next(errors, None)
        if first is None:
            return
        from jsonschema.exceptions import relevance

        key = display_key(record, self.key)
        for error in sorted([first, *errors], key=relevance)[:ERRORS_PER_RECORD]:
            out.append({"key": key, "path": error.json_path, "message": error.message})


def _validator(path: str) -> Validator:
    try:
        modified = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise PlanError(f"cannot read schema file {path}: {exc.strerror}", field="schema") from exc
    return _load(path, modified)


@lru_cache(maxsize=256)
def _load(path: str, modified: int) -> Validator:
    """The validator of a schema file; ``modified`` makes an edited file load again."""
    from jsonschema import SchemaError, validators

    try:
        with open(path, encoding="utf-8") as handle:
            schema = json.load(handle)
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
    except OSError as exc:
        raise PlanError(f"cannot read schema file {path}: {exc.strerror}", field="schema") from exc
    except ValueError as exc:
        raise PlanError(f"schema file {path} is not JSON: {exc}", field="schema") from exc
    except SchemaError as exc:
        raise PlanError(f"schema file {path} is not a valid JSON Schema: {exc.message}", field="schema") from exc
    return cls(schema, format_checker=cls.FORMAT_CHECKER)

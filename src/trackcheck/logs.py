"""Log lines as text or JSON, and what each line is about: the run, plan and stage being polled.

JSON lines come from python-json-logger's formatter on the standard library's logging, not from structlog:
every module logs with ``logging.getLogger(...)`` and %-style messages, and so do gunicorn and the drivers. One
formatter on the stderr handler turns all of them into JSON without touching a call site; structlog would need
its ``ProcessorFormatter`` on that same handler anyway, plus its own loggers wherever context is bound.

What a line is about travels in a ContextVar rather than in each call: the engine sets ``plan``, ``stage``,
``group`` and ``runs`` while it polls a group (and ``run_id`` when the chunk is one run, or while it sends one
run's events); the JSON formatter adds them to every line logged meanwhile, by any logger, in that thread (or
in work handed on with ``contextvars.copy_context``). The lines about one run of a chunk (its poll line, a
failure to compare it) name it with ``extra={"run_id": ...}`` instead: a chunk is up to ``batch_size`` runs,
and a context per run cost microseconds each on every tick, whether anything is logged or not. Only names, ids
and counts go there, never a parameter value: those may be secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Final, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
#: the text format of a line (JSON lines carry the same facts, each in its field)
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the context a line can carry, as ``log_context`` takes it
CONTEXT_FIELDS: Final = ("run_id", "plan", "stage", "group", "runs")
#: the fields of a JSON line, in this order; anything else on a record (a library's ``extra=``) is left out,
#: so that a JSON line says no more than its text line did, besides the context's names and ids
JSON_FIELDS: Final = ("timestamp", "level", "logger", "message", *CONTEXT_FIELDS, "exception", "stack_info")

_context: ContextVar[Mapping[str, str | int]] = ContextVar("trackcheck_log_context", default=MappingProxyType({}))


def log_to_stderr(level: int, log_format: LogFormat) -> None:
    """Every logger's lines to stderr from ``level`` on (the root logger's handler replaced), as text or JSON;
    at DEBUG (-vv) only, APScheduler's own chatter too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(log_format == "json")  # a library's warning is a log line too, not raw text
    logging.getLogger("apscheduler").setLevel(logging.WARNING if level > logging.DEBUG else logging.NOTSET)
    # the HTTP client logs each request's whole URL (user:password@, ?api_key=...) at INFO and the response
    # headers (Set-Cookie) at DEBUG; trackcheck's own poll lines say what was read, with credentials masked
    for client in ("httpx", "httpcore"):
        logging.getLogger(client).setLevel(logging.WARNING)


@contextmanager
def log_context(**fields: str | int | None) -> Iterator[None]:
    """Lines logged inside the block carry ``fields`` (names from CONTEXT_FIELDS; None: not set), besides those
    of an enclosing block, which they override."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"not log context fields: {', '.join(sorted(unknown))}")
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonLines(JsonFormatter):
    """One JSON object per line: ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the context
    fields that are set (not None), and ``exception`` (the whole traceback as one string) when there is one.

    Context set with ``log_context`` is read when the record is formatted, which for the stream handler is
    in the thread that logged it; ``extra={"run_id": ...}`` on a call gives the same fields explicitly."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            timestamp=True,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        fields = {**_context.get(), **log_data}
        return {key: fields[key] for key in JSON_FIELDS if fields.get(key) is not None}

"""The ``redis`` source: records from a stream, a list, a hash, or from keys matching a pattern.

A stage's ``redis: {kind, key, field, count}`` says what to read; ``{param}`` placeholders in ``key`` are
rendered with the run parameters (for ``kind: keys`` with glob characters escaped, so a parameter never
widens the pattern). Bytes are decoded as UTF-8. How each kind becomes records:

- ``stream``: the newest ``count`` entries (XREVRANGE, returned oldest first); each entry's fields are a
  record of strings, plus ``_id`` = the entry id. An entry with a single field named ``data``, ``json`` or
  ``payload`` holding a JSON object is that object instead (the usual "JSON in one field" producer).
- ``list``: LRANGE 0..count-1; each element must be a JSON object, other elements are counted as unparsed.
- ``hash``: HGETALL; when every value is a JSON object each is a record with ``_field`` = its field name,
  otherwise the whole hash is one record of strings.
- ``keys``: SCAN MATCH (never KEYS, which blocks the server) up to ``count`` keys; a string key holds a JSON
  object, a hash key is a record of strings; ``field`` (if set) receives the key name. Keys of other
  types, or strings that are not JSON objects, are counted as unparsed.

``where`` and ``select`` are applied here, in Python. Redis' own retries are off: the engine retries a
stage with back-off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qs, unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trackcheck.errors import SourceConnectError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.limits import check_at_most
from trackcheck.plan.model import Duration, ReadSpec, limits_of
from trackcheck.plan.templates import render
from trackcheck.sources import missing_driver
from trackcheck.sources.base import (
    FetchRequest,
    FetchResult,
    Record,
    Source,
    SourceOptions,
    apply_select,
    filter_records,
)
from trackcheck.sources.network import LOCAL

if TYPE_CHECKING:
    import redis

    from trackcheck.plan.model import StageSpec

#: stream fields whose JSON object, when it is the entry's only field, is the record itself
PAYLOAD_FIELDS = frozenset({"data", "json", "payload"})
#: error replies that the same read gets every time (a key of another type, a missing permission or command)
PERMANENT_REPLIES = frozenset({"WRONGTYPE", "NOPERM", "NOAUTH", "WRONGPASS"})
#: keys read per round trip for ``kind: keys``
SCAN_BATCH = 500
#: how much of an unparsed value a note quotes
EXCERPT_CHARS = 80


class RedisReadSpec(BaseModel):
    """What a ``redis`` stage reads: a stream, a list, a hash, or every string/hash key matching a pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["stream", "list", "hash", "keys"]
    key: str
    field: str | None = Field(default=None, description="for kind=keys: store each key's name in this field")
    count: int = Field(default=100_000, ge=1)

    @field_validator("count")
    @classmethod
    def _count(cls, value: int, info: ValidationInfo) -> int:
        check_at_most(value, limits_of(info).max_redis_count, "max_redis_count")
        return value


class RedisRead(ReadSpec):
    """The stage key of a ``redis`` stage: its ``redis`` block, whose ``key`` may hold ``{param}``."""

    redis: RedisReadSpec | None = None

    def templates(self, source: str, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"redis.key": self.redis.key} if self.redis is not None else {}


class RedisOptions(SourceOptions):
    """``type: redis``: a ``redis://[user:password@]host:port/db`` URL (or rediss://) and a timeout."""

    url: str
    timeout: Duration = timedelta(seconds=5)


class RedisSource(Source):
    """Reads the stream, list, hash or keys a stage's ``redis`` block names."""

    type_name: ClassVar[str] = "redis"
    options_model: ClassVar[type[SourceOptions]] = RedisOptions
    read_model: ClassVar[type[ReadSpec]] = RedisRead

    options: RedisOptions

    def __init__(self, name: str, options: SourceOptions) -> None:
        super().__init__(name, options)
        self._client: redis.Redis | None = None

    @classmethod
    def check_stage(cls, stage: StageSpec) -> str | None:
        foreign = super().check_stage(stage)
        if foreign is None and RedisRead.of(stage).redis is None:
            return "a redis stage needs 'redis: {kind, key}' (kind: stream, list, hash or keys)"
        return foreign

    def hosts(self) -> list[str]:
        """The server's host, parsed as redis-py parses the URL (``urlparse``), and any ``host`` query
        argument; a ``unix://`` socket, or a socket path in the query, is local."""
        try:
            parts = urlparse(self.options.url)
            query = parse_qs(parts.query)
            hostname = parts.hostname
        except ValueError:
            return [LOCAL]
        if parts.scheme == "unix" or "path" in query or "unix_socket_path" in query:
            return [LOCAL]
        found = [unquote(hostname)] if hostname else []
        found.extend(value for value in query.get("host", []) if value not in found)
        return found or [LOCAL]  # redis-py's default host is localhost

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        if self._client is not None:
            return
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise missing_driver("redis", "redis", self.name, exc) from exc
        seconds = self.options.timeout.total_seconds()
        try:
            self._client = redis.Redis.from_url(
                self.options.url,
                socket_timeout=seconds,
                socket_connect_timeout=seconds,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise self.error(SourceConnectError, "the source url is not a redis:// URL", None, exc) from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the contract ----------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        """Read the stage's stream/list/hash/keys; records matching ``request.filters``.

        A missing key reads as no records. A key of the wrong type (or any error reply) is a
        SourceQueryError, an unreachable server a SourceConnectError, no answer in ``timeout`` a
        SourceTimeoutError.
        """
        stage = request.stage
        spec = RedisRead.of(stage).redis
        if spec is None:
            raise self.error(SourceQueryError, "the stage has no 'redis' block", stage)
        self.open()
        assert self._client is not None
        import redis

        key = self._key(spec, request.params)
        result = FetchResult([])
        try:
            readers = {"stream": self._stream, "list": self._list, "hash": self._hash, "keys": self._keys}
            readers[spec.kind](self._client, key, spec, result)
        except redis.TimeoutError as exc:
            seconds = self.options.timeout.total_seconds()
            raise self.error(SourceTimeoutError, f"no answer within {seconds:g}s", stage, exc) from exc
        except redis.AuthenticationError as exc:
            raise self.error(
                SourceConnectError, "the server refused the credentials", stage, exc, permanent=True
            ) from exc
        except redis.ConnectionError as exc:
            raise self.error(SourceConnectError, "could not connect", stage, exc) from exc
        except redis.RedisError as exc:
            # an error reply (WRONGTYPE, NOPERM, an unknown command) is the same at every read
            permanent = isinstance(exc, redis.ResponseError) and str(exc).split(" ", 1)[0] in PERMANENT_REPLIES
            message = f"reading {spec.kind} {key!r} failed"
            raise self.error(SourceQueryError, message, stage, exc, permanent=permanent) from exc
        records = filter_records(apply_select(result.records, stage.select), request.filters)
        result.records = records
        return result

    @staticmethod
    def _key(spec: RedisReadSpec, params: Mapping[str, Any]) -> str:
        if spec.kind == "keys":
            params = {name: re.sub(r"([*?\[\]\\])", r"\\\1", str(value)) for name, value in params.items()}
        return str(render(spec.key, params))

    # -- one reader per kind ---------------------------------------------------------------------------
    def _stream(self, client: redis.Redis, key: str, spec: RedisReadSpec, result: FetchResult) -> None:
        entries = client.xrevrange(key, count=spec.count) or []
        for entry_id, raw in reversed(entries):
            fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
            record: Record = fields
            if len(fields) == 1:
                ((name, value),) = fields.items()
                payload = _json_object(value) if name in PAYLOAD_FIELDS else None
                if payload is not None:
                    record = payload
            record["_id"] = _text(entry_id)
            result.records.append(record)
        if len(entries) == spec.count:
            result.notes.append(f"stream {key!r}: read only its newest {spec.count} entries (count)")

    def _list(self, client: redis.Redis, key: str, spec: RedisReadSpec, result: FetchResult) -> None:
        bad: list[str] = []
        for raw in client.lrange(key, 0, spec.count - 1):
            record = _json_object(_text(raw))
            if record is None:
                bad.append(_text(raw))
            else:
                result.records.append(record)
        self._unparsed(result, f"list {key!r}", "elements are not JSON objects", bad)
        if client.llen(key) > spec.count:
            result.notes.append(f"list {key!r}: read only its first {spec.count} elements (count)")

    def _hash(self, client: redis.Redis, key: str, spec: RedisReadSpec, result: FetchResult) -> None:
        fields = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
        objects = {name: _json_object(value) for name, value in fields.items()}
        parsed = {name: obj for name, obj in objects.items() if obj is not None}
        if parsed and len(parsed) == len(fields):
            result.records.extend({**obj, "_field": name} for name, obj in parsed.items())
        elif fields:
            if parsed:
                result.notes.append(f"hash {key!r} mixes JSON objects and other values: read as one record")
            result.records.append(fields)

    def _keys(self, client: redis.Redis, pattern: str, spec: RedisReadSpec, result: FetchResult) -> None:
        names: dict[bytes, None] = {}  # SCAN may return a key twice
        for name in client.scan_iter(match=pattern, count=SCAN_BATCH):
            if len(names) == spec.count and name not in names:
                result.notes.append(f"keys {pattern!r}: read only the first {spec.count} keys found (count)")
                break
            names[name] = None
        bad: list[str] = []
        ordered = list(names)
        for start in range(0, len(ordered), SCAN_BATCH):
            batch = ordered[start : start + SCAN_BATCH]
            with client.pipeline(transaction=False) as pipe:
                for name in batch:
                    pipe.type(name)
                types = [_text(t) for t in pipe.execute()]
            with client.pipeline(transaction=False) as pipe:
                for name, kind in zip(batch, types, strict=True):
                    if kind == "hash":
                        pipe.hgetall(name)
                    elif kind == "string":
                        pipe.get(name)
                values = iter(pipe.execute())
            for name, kind in zip(batch, types, strict=True):
                record: Record | None
                if kind == "hash":
                    record = {_text(k): _text(v) for k, v in next(values).items()}
                elif kind == "string":
                    value = next(values)
                    if value is None:  # expired since the scan
                        continue
                    record = _json_object(_text(value))
                    if record is None:
                        bad.append(f"{_text(name)} = {_text(value)}")
                        continue
                elif kind == "none":  # deleted since the scan
                    continue
                else:
                    bad.append(f"{_text(name)} is a {kind}")
                    continue
                if spec.field:
                    record[spec.field] = _text(name)
                result.records.append(record)
        self._unparsed(result, f"keys {pattern!r}", "keys are neither a JSON object nor a hash", bad)

    def _unparsed(self, result: FetchResult, where: str, what: str, bad: list[str]) -> None:
        """Count what could not be read as a record, with one note quoting the first of them."""
        if not bad:
            return
        result.unparsed += len(bad)
        excerpt = self.mask(bad[0])
        if len(excerpt) > EXCERPT_CHARS:
            excerpt = excerpt[:EXCERPT_CHARS] + "…"
        result.notes.append(f"{where}: {len(bad)} {what}, e.g. {excerpt}")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _json_object(text: str) -> Record | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


__all__ = ["PAYLOAD_FIELDS", "RedisOptions", "RedisSource"]

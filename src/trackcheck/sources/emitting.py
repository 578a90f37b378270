"""Sending a run's events through the pipeline's front door (a plan's ``emit:``): the wire formats, and
which source carries them.

- ``segment``: the Segment HTTP tracking API, which RudderStack and Jitsu accept too: one POST of
  ``{"batch": [message, ...]}`` to ``/v1/batch``, the write key being the user part of the http source's url
  (``https://WRITE_KEY:@api.segment.io``), sent as basic auth. An event's Segment fields (``event``,
  ``userId``, ``messageId``...) stay at the top of its message, every other field goes into ``properties``.
- ``snowplow``: the Snowplow tracker protocol 2: one POST of a ``payload_data`` document to
  ``/com.snowplowanalytics.snowplow/tp2``; each event with a ``schema`` (the Iglu URI of its self-describing
  event) is sent as ``ue_pr`` with its other fields as data, and its ``contexts`` as ``co``.
- ``json``: the events as they are: one POST of the list (http).

On a bus (kafka, rabbitmq, nats, mqtt) each event is one message, in the chosen format's shape for one
event. Ids that ``{uuid}`` gives, and the default ``messageId``/``eid``, derive from the run's id and the
event's position: a send retried after an error carries the same ids, so a collector that deduplicates
(Segment by ``messageId``, Snowplow by ``eid``) does not count it twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trackcheck.errors import SourceQueryError
from trackcheck.plan.model import EMIT_PATHS, EmitSpec
from trackcheck.plan.templates import BUS_KEYS, render
from trackcheck.sources.base import Destination, Source
from trackcheck.sources.http import HttpSource

if TYPE_CHECKING:
    from trackcheck.plan.model import StageSpec

#: the bus keys an emit must set for each bus: where its messages go
DESTINATIONS = {
    "kafka": ("topic",),
    "rabbitmq": ("stream", "exchange"),
    "nats": ("subject",),
    "mqtt": ("topic",),
}
#: a Segment message's own fields; an event's other fields are its ``properties``
SEGMENT_FIELDS = frozenset(
    {
        "type", "event", "userId", "anonymousId", "messageId", "timestamp", "originalTimestamp", "sentAt",
        "context", "integrations", "properties", "traits", "name", "category", "groupId", "previousId",
    }
)  # fmt: skip
#: tracker protocol fields an event may set itself (they stay at the top of the tp2 event)
SNOWPLOW_FIELDS = frozenset(
    {
        "e", "eid", "aid", "p", "tv", "tna", "dtm", "stm", "ttm", "tz", "uid", "duid", "sid", "vid", "ip", "ua",
        "url", "refr", "page", "lang", "res", "vp", "cs",
    }
)  # fmt: skip
PAYLOAD_DATA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
UNSTRUCT_EVENT = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0"
CONTEXTS = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1"
#: the namespace of the ids derived from a run's id and an event's position
_IDS = uuid.UUID("6f1d7f4e-9a51-4c1b-8a0e-2b6f3f0d5a11")


def emit_problem(source: Source, emit: EmitSpec) -> str | None:
    """Why ``source`` cannot carry this emit (a message naming the key), or None. No I/O."""
    kind = source.type_name
    if kind == "http":
        foreign = [f"emit.{name}" for name in BUS_KEYS if getattr(emit, name) is not None]
        if foreign:
            return f"{foreign[0]} does not apply to an http source: an http emit POSTs to emit.path"
        return None
    if kind not in DESTINATIONS:
        return (
            f"emit sends through an http source or a bus (kafka, rabbitmq, nats, mqtt); {emit.source!r} is a "
            f"{kind} source"
        )
    if emit.path is not None:
        return f"emit.path applies to an http source; a {kind} emit publishes to emit.{DESTINATIONS[kind][0]}"
    if not any(getattr(emit, name) for name in DESTINATIONS[kind]):
        keys = " or ".join(f"emit.{name}" for name in DESTINATIONS[kind])
        return f"a {kind} emit needs {keys}: where the events are published"
    return None


def event_id(run_id: str, index: int) -> str:
    """The id of the ``index``-th event of a run: the same at every try."""
    return str(uuid.uuid5(_IDS, f"{run_id}:{index}"))


def stamped(
    events: Sequence[Mapping[str, Any]], emit: EmitSpec, params: Mapping[str, Any], run_id: str
) -> list[dict[str, Any]]:
    """The run's events with ``emit.stamp`` set on each (``{uuid}`` an id per event, ``{run_id}`` the run's)."""
    out = []
    for index, event in enumerate(events):
        values = render(emit.stamp, {**params, "uuid": event_id(run_id, index), "run_id": run_id})
        out.append({**event, **values})
    return out


def send(source: Source, stage: StageSpec, events: list[dict[str, Any]], params: Mapping[str, Any], run_id: str) -> str:
    """Send ``events`` (already stamped) as ``stage.emit`` says; what the front door answered, for the run's
    record. A SourceError when it did not accept them (retried like any source error)."""
    emit = stage.emit
    assert emit is not None
    now = datetime.now(UTC)
    try:
        if emit.format == "segment":
            messages = [_segment(event, run_id, index, now) for index, event in enumerate(events)]
            body: Any = {"batch": messages, "sentAt": _iso(now)}
        elif emit.format == "snowplow":
            messages = [_snowplow(event, run_id, index, now) for index, event in enumerate(events)]
            body = {"schema": PAYLOAD_DATA, "data": messages}
        else:
            messages = events
            body = events
    except ValueError as exc:
        raise source.error(SourceQueryError, f"emit: {exc}", stage, permanent=True) from None
    if isinstance(source, HttpSource):
        path = render(emit.path, params) if emit.path is not None else EMIT_PATHS[emit.format]
        return f"sent {len(events)} event(s): {source.post(stage, path, body)}"
    destination = Destination(**{name: render(getattr(emit, name), params) for name in BUS_KEYS}, qos=emit.qos)
    source.publish(destination, [json.dumps(message, default=str).encode() for message in messages])
    where = next(f"{name} {getattr(destination, name)}" for name in BUS_KEYS if getattr(destination, name))
    return f"published {len(events)} event(s) to {where}"


def _segment(event: Mapping[str, Any], run_id: str, index: int, now: datetime) -> dict[str, Any]:
    message = {key: value for key, value in event.items() if key in SEGMENT_FIELDS}
    properties = {key: value for key, value in event.items() if key not in SEGMENT_FIELDS}
    message.setdefault("type", "track")
    if message["type"] == "track" and "event" not in message:
        raise ValueError(f"expect[{index}] has no 'event': a Segment track call needs the event's name")
    if properties:
        message["properties"] = {**(message.get("properties") or {}), **properties}
    if "userId" not in message and "anonymousId" not in message:
        message["anonymousId"] = run_id
    message.setdefault("messageId", event_id(run_id, index))
    message.setdefault("timestamp", _iso(now))
    return message


def _snowplow(event: Mapping[str, Any], run_id: str, index: int, now: datetime) -> dict[str, Any]:
    schema = event.get("schema")
    if not isinstance(schema, str) or not schema.startswith("iglu:"):
        raise ValueError(
            f"expect[{index}] has no 'schema': a Snowplow event is sent as a self-describing event, name its "
            "Iglu schema (iglu:com.acme/checkout/jsonschema/1-0-0)"
        )
    data = {k: v for k, v in event.items() if k not in SNOWPLOW_FIELDS and k not in ("schema", "contexts")}
    message = {k: str(v) for k, v in event.items() if k in SNOWPLOW_FIELDS}
    message.setdefault("e", "ue")
    message.setdefault("eid", event_id(run_id, index))
    message.setdefault("p", "srv")
    message.setdefault("tv", "trackcheck")
    message.setdefault("dtm", str(int(now.timestamp() * 1000)))
    message["stm"] = str(int(now.timestamp() * 1000))
    message["ue_pr"] = json.dumps({"schema": UNSTRUCT_EVENT, "data": {"schema": schema, "data": data}}, default=str)
    contexts = event.get("contexts")
    if contexts:
        message["co"] = json.dumps({"schema": CONTEXTS, "data": contexts}, default=str)
    return message


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

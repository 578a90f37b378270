"""Source backends, registered by the ``type`` a plan gives them and imported only when used.

A backend whose driver is missing becomes a SourceConnectError telling which extra to install, not an
ImportError trace. ``register`` adds a backend (trackcheck.testing registers its in-memory source).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pydantic import ValidationError

from trackcheck.errors import ErrorKind, PlanError, SourceConnectError

if TYPE_CHECKING:
    from trackcheck.plan.model import SourceSpec
    from trackcheck.sources.base import Source

_BUILTIN = {
    "sql": "trackcheck.sources.sql:SqlSource",
    "file": "trackcheck.sources.files:FileSource",
    "http": "trackcheck.sources.http:HttpSource",
    "redis": "trackcheck.sources.redis:RedisSource",
    "kafka": "trackcheck.sources.kafka:KafkaSource",
    "rabbitmq": "trackcheck.sources.rabbitmq:RabbitmqSource",
    "nats": "trackcheck.sources.nats:NatsSource",
    "mqtt": "trackcheck.sources.mqtt:MqttSource",
}
_registered: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    """Make a Source class available under its ``type_name`` (usable as a class decorator)."""
    _registered[cls.type_name] = cls
    return cls


def source_class(type_name: str) -> type[Source]:
    """The backend class for a plan's ``type:``; KeyError if there is none."""
    if type_name not in _registered:
        module_name, _, attr = _BUILTIN[type_name].partition(":")
        _registered[type_name] = getattr(importlib.import_module(module_name), attr)
    return _registered[type_name]


def known_types() -> list[str]:
    return sorted(set(_BUILTIN) | set(_registered))


def build_source(name: str, spec: SourceSpec, *, plan: str) -> Source:
    """A closed Source for ``sources.<name>`` of a plan; its options are validated here (PlanError)."""
    if spec.type not in _BUILTIN and spec.type not in _registered:
        raise PlanError(
            f"unknown source type {spec.type!r} (known: {', '.join(known_types())})",
            plan=plan,
            field=f"sources.{name}.type",
        )
    cls = source_class(spec.type)
    try:
        options = cls.options_model.model_validate(spec.options)
    except ValidationError as exc:
        issue = exc.errors()[0]
        loc = ".".join(str(p) for p in issue["loc"])
        raise PlanError(
            issue["msg"].removeprefix("Value error, "),
            plan=plan,
            field=f"sources.{name}.{loc}" if loc else f"sources.{name}",
        ) from None
    return cls(name, options)


def missing_driver(extra: str, module: str, source: str, exc: ImportError) -> SourceConnectError:
    """The error for a driver that is not installed: which extra brings it."""
    error = SourceConnectError(
        f"the driver module {module!r} is not installed: pip install 'trackcheck[{extra}]'",
        kind=ErrorKind.PERMANENT,
        source=source,
    )
    error.__cause__ = exc
    return error

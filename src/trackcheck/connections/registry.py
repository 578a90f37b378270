"""The connections plans may name: the operator's ``[connections.NAME]`` in trackcheck.toml (``${ENV}``
expanded there, from the server's environment) and those an admin stored over the API (encrypted).

A plan source ``{connection: warehouse}`` becomes the connection's ``type`` and options when the plan
loads; the plan's stages stay as they are. Uploaded plans may only read systems this way, so what they
can reach, and with which credentials, is decided by the operator, never by the plan's author.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackcheck.connections.keyring import Keyring, no_key_error
from trackcheck.connections.masking import has_secrets, mask_options, unmask
from trackcheck.errors import ConfigError, PlanError
from trackcheck.plan.templates import expand_env
from trackcheck.store.connections import ConnectionStore, StoredConnection

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def check_connection(name: str, spec: Mapping[str, Any], *, where: str = "connections") -> dict[str, Any]:
    """``spec`` (``type`` and that type's options) validated like a plan's source; PlanError naming
    ``<where>.<name>.<key>`` otherwise. A ``file`` connection needs an absolute ``root``."""
    from trackcheck.plan.model import SourceSpec
    from trackcheck.sources import build_source

    field = f"{where}.{name}"
    if not NAME.match(name):
        raise PlanError("a connection name is a letter, then letters, digits, _ . - (64 at most)", field=field)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise PlanError("a connection needs 'type' (sql, file, http, redis...) and that type's options", field=field)
    if "connection" in spec:
        raise PlanError("a connection cannot name another connection", field=f"{field}.connection")
    options = dict(spec)
    try:
        source = build_source(name, SourceSpec.model_validate(options), plan="")
    except PlanError as exc:
        key = (exc.context.get("field") or "").removeprefix(f"sources.{name}")
        raise PlanError(exc.message, field=f"{field}{key}") from None
    if options["type"] == "file":
        root = options.get("root")
        if not isinstance(root, str) or not Path(root).is_absolute():
            raise PlanError("a file connection needs 'root': the absolute folder its paths are under", field=field)
    del source
    return options


@dataclass(frozen=True)
class ConnectionInfo:
    """A connection as answers and pages show it: secrets masked."""

    name: str
    type: str
    options: dict[str, Any]
    origin: str  # "config" (trackcheck.toml, read-only) or "api"
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "options": self.options,
            "origin": self.origin,
            "updated_at": self.updated_at,
        }


class Connections(Mapping[str, dict[str, Any]]):
    """Name → ``{type, ...options}`` with secrets in clear: only the plan loader reads these values."""

    def __init__(
        self,
        configured: Mapping[str, Mapping[str, Any]] | None = None,
        store: ConnectionStore | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.configured: dict[str, dict[str, Any]] = {}
        for name, spec in (configured or {}).items():
            expanded = expand_env(dict(spec), plan="trackcheck.toml", path=f"connections.{name}")
            try:
                self.configured[name] = check_connection(name, expanded)
            except PlanError as exc:
                raise ConfigError(exc.message, field=exc.context.get("field")) from None
        self.store = store
        self.keyring = keyring

    # -- Mapping ---------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> dict[str, Any]:
        if name in self.configured:
            return dict(self.configured[name])
        stored = self.store.get(name) if self.store is not None else None
        if stored is None:
            raise KeyError(name)
        return self._full(stored)

    def __iter__(self) -> Iterator[str]:
        names = set(self.configured)
        if self.store is not None:
            names |= {c.name for c in self.store.all()}
        return iter(sorted(names))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        if name in self.configured:
            return True
        return isinstance(name, str) and self.store is not None and self.store.get(name) is not None

    # -- what the API and the dashboard use ------------------------------------------------------------
    def describe(self) -> list[ConnectionInfo]:
        shown = [ConnectionInfo(n, s["type"], mask_options(_options(s)), "config") for n, s in self.configured.items()]
        if self.store is not None:
            shown += [
                ConnectionInfo(c.name, c.type, c.options, "api", c.updated_at.isoformat())
                for c in self.store.all()
                if c.name not in self.configured
            ]
        return sorted(shown, key=lambda c: c.name)

    def info(self, name: str) -> ConnectionInfo | None:
        return next((c for c in self.describe() if c.name == name), None)

    def save(self, name: str, spec: Mapping[str, Any]) -> bool:
        """Validate and store a connection defined over the API (``***`` keeps a stored secret); True when
        created. PlanError naming the key if invalid; ConfigError when it holds a secret and no key is set."""
        if name in self.configured:
            raise ConfigError(f"connection {name!r} is defined in trackcheck.toml: change it there", field=name)
        assert self.store is not None
        previous = self.store.get(name)
        full = dict(spec)
        if previous is not None:
            full = unmask(full, {"type": previous.type, **_options(self._full(previous))})
        full = check_connection(name, full, where="connection")
        options = _options(full)
        sealed = None
        if has_secrets(options):
            if self.keyring is None:
                raise no_key_error(f"connection {name!r}")
            sealed = self.keyring.seal(json.dumps(options))
        return self.store.put(name, full["type"], mask_options(options), sealed)

    def delete(self, name: str) -> bool:
        if name in self.configured:
            raise ConfigError(f"connection {name!r} is defined in trackcheck.toml: remove it there", field=name)
        return self.store is not None and self.store.delete(name)

    def revision(self) -> object:
        return self.store.revision() if self.store is not None else None

    def _full(self, stored: StoredConnection) -> dict[str, Any]:
        if stored.sealed is None:
            return {"type": stored.type, **stored.options}
        if self.keyring is None:
            raise ConfigError(
                f"connection {stored.name!r} is encrypted and the service has no secret key: set "
                "TRACKCHECK_SECRET_KEY to the key it was stored with",
                field="secret_key",
            )
        options = json.loads(self.keyring.open(stored.sealed, what=f"connection {stored.name!r}"))
        return {"type": stored.type, **options}


def _options(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "type"}

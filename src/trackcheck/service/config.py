"""Service configuration: ``trackcheck.toml``, then ``TRACKCHECK_*`` variables, then command-line flags.

The four APScheduler components are part of it (``[scheduler]`` in the file, ``TRACKCHECK_SCHEDULER``,
``TRACKCHECK_JOBSTORE``, ``TRACKCHECK_EXECUTOR``, ``TRACKCHECK_EXECUTOR_WORKERS``, ``TRACKCHECK_INTERVAL``), and
the choice of who polls (``TRACKCHECK_BACKEND``: ``apscheduler`` or ``procrastinate``, with
``TRACKCHECK_HEARTBEAT`` and ``TRACKCHECK_STALLED_AFTER``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trackcheck.errors import ConfigError
from trackcheck.logs import LogFormat
from trackcheck.plan.durations import parse_duration
from trackcheck.plan.limits import DEFAULT_LIMITS
from trackcheck.plan.model import Duration

if TYPE_CHECKING:
    from trackcheck.engine.core import PlanSetup
    from trackcheck.store.repository import Retention
from trackcheck.scheduling.config import SchedulerConfig
from trackcheck.store.database import DEFAULT_URL, normalize_url, sqlite_file

CONFIG_FILE = "trackcheck.toml"
#: TRACKCHECK_<NAME> → (section, key); section None is the top level
ENV_KEYS: dict[str, tuple[str | None, str]] = {
    "DB": (None, "db"),
    "HOST": (None, "host"),
    "PORT": (None, "port"),
    "PLANS": (None, "plans"),
    "WORKERS": (None, "workers"),
    "API_TOKEN": (None, "api_token"),
    "MAX_BODY_BYTES": (None, "max_body_bytes"),
    "DB_PASSWORD_FILE": (None, "db_password_file"),
    "SECRET_KEY": (None, "secret_key"),
    "ALLOW_INLINE_SOURCES": (None, "allow_inline_sources"),
    "ALLOW_PRIVATE_NETWORKS": (None, "allow_private_networks"),
    "COOKIE_SECURE": (None, "cookie_secure"),
    "TRUSTED_PROXIES": (None, "trusted_proxies"),
    "LOGIN_RATE_LIMIT": (None, "login_rate_limit"),
    "MIN_INTERVAL": (None, "min_interval"),
    "LOG_FORMAT": (None, "log_format"),
    "SCHEDULER": ("scheduler", "scheduler"),
    "JOBSTORE": ("scheduler", "jobstore"),
    "EXECUTOR": ("scheduler", "executor"),
    "EXECUTOR_WORKERS": ("scheduler", "workers"),
    "INTERVAL": ("scheduler", "interval"),
    "MISFIRE_GRACE_TIME": ("scheduler", "misfire_grace_time"),
    "COALESCE": ("scheduler", "coalesce"),
    "BACKEND": ("scheduler", "backend"),
    "HEARTBEAT": ("scheduler", "heartbeat"),
    "STALLED_AFTER": ("scheduler", "stalled_after"),
    "RETENTION_POLLS": ("retention", "polls"),
    "RETENTION_RUNS": ("retention", "runs"),
    "RETENTION_EVERY": ("retention", "every"),
}


Role = Literal["admin", "runner", "viewer"]


class TokenConfig(BaseModel):
    """One ``[[tokens]]`` entry: who (``name``, shown in logs), what they may do (``role``), and the token."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role
    token: SecretStr = Field(min_length=16)


def _kept_for(value: object) -> timedelta | None:
    """A retention duration: ``0``, ``off`` (or ``false``, ``none``) keep forever (None)."""
    if value is None or value is False:
        return None
    if isinstance(value, str) and value.strip().lower() in ("off", "none", "false", "0", ""):
        return None
    duration = parse_duration(value)
    return duration if duration > timedelta(0) else None


KeptFor = Annotated[timedelta | None, BeforeValidator(_kept_for)]


class RetentionConfig(BaseModel):
    """``[retention]``: how long the state database keeps polls and ended runs, and how often it prunes."""

    model_config = ConfigDict(extra="forbid")

    polls: KeptFor = Field(default=timedelta(days=7), description="poll rows are kept this long; off: forever")
    runs: KeptFor = Field(
        default=timedelta(days=90),
        description="ended runs (stages, polls, snapshots) are kept this long after they finished; off: forever",
    )
    every: Duration = Field(default=timedelta(minutes=10), description="how often the poller prunes")

    @field_validator("every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value


class ServiceConfig(BaseModel):
    """Everything ``trackcheck serve`` needs; see docs/service.md for each key."""

    model_config = ConfigDict(extra="forbid")

    db: str = DEFAULT_URL
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    plans: Path | None = Field(default=None, description="a folder of plan files loaded (as versions) at start")
    workers: int = Field(default=1, ge=1, le=64, description="HTTP worker processes; exactly one of them polls")
    api_token: SecretStr | None = None
    tokens: list[TokenConfig] = Field(default_factory=list, description="[[tokens]]: named tokens with a role")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    db_password_file: Path | None = Field(
        default=None, description="a file holding the state database's password (kept out of the URL and ps)"
    )
    secret_key: SecretStr | None = Field(
        default=None, description="encrypts secrets at rest (connections, plan secrets); comma-separated to rotate"
    )
    connections: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="[connections.NAME]: the systems plans may read, with their secrets"
    )
    allow_inline_sources: bool = Field(
        default=False, description="uploaded plans may define sources inline instead of using a connection"
    )
    allow_private_networks: bool = Field(
        default=False, description="inline sources of uploaded plans may reach loopback, link-local, private hosts"
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto", description="the dashboard cookie's Secure flag: auto = when the request came over https"
    )
    trusted_proxies: int = Field(
        default=0, ge=0, le=5, description="reverse proxies in front whose X-Forwarded-For/-Proto are believed"
    )
    min_interval: Duration = Field(
        default=DEFAULT_LIMITS.min_interval,
        description="the shortest poll interval a plan or a run may ask for: each poll is a read of a source",
    )
    login_rate_limit: str = Field(
        default="10 per minute", description="failed logins and 401s allowed per client address (Flask-Limiter)"
    )
    log_format: LogFormat = Field(
        default="text", description="stderr as text lines, or as JSON lines carrying the run, plan and stage"
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @field_validator("login_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # ValueError: "couldn't parse rate limit string ..." (e.g. "10 per minute")
        return value

    def plan_setup(self) -> PlanSetup:
        """What the engine needs to load plans: connections, the secret key, the rules for uploaded plans."""
        from trackcheck.engine.core import PlanSetup
        from trackcheck.plan.trust import Trust

        uploads = Trust.for_uploads(
            allow_inline_sources=self.allow_inline_sources,
            allow_private_networks=self.allow_private_networks,
            files_root=self.plans.resolve() if self.plans is not None else None,
            state_db=self.db,
        )
        key = self.secret_key.get_secret_value() if self.secret_key is not None else None
        limits = replace(DEFAULT_LIMITS, min_interval=self.min_interval)
        return PlanSetup(
            connections=dict(self.connections),
            secret_key=key,
            uploads=uploads,
            limits=limits,
            interval=self.scheduler.interval,
        )

    def retention_policy(self) -> Retention:
        """The ``[retention]`` settings as the engine's poller applies them."""
        from trackcheck.store.repository import Retention

        return Retention(polls=self.retention.polls, runs=self.retention.runs, every=self.retention.every)

    @property
    def authenticated(self) -> bool:
        """True when callers must show a token (``api_token`` or ``[[tokens]]``); else loopback, all admin."""
        return self.api_token is not None or bool(self.tokens)

    def check(self) -> ServiceConfig:
        """Refuse deployments that would be unsafe or would lose work; ConfigError says which key to change."""
        if not self.authenticated and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host} without an API token: set TRACKCHECK_API_TOKEN "
                "(or api_token in trackcheck.toml), or listen on 127.0.0.1",
                field="host",
            )
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ConfigError("two [[tokens]] entries have the same name", field="tokens")
        secrets = [t.token.get_secret_value() for t in self.tokens]
        if self.api_token is not None:
            secrets.append(self.api_token.get_secret_value())
        if len(set(secrets)) != len(secrets):
            raise ConfigError("two tokens have the same value: each caller needs its own", field="tokens")
        from trackcheck.connections import Connections, Keyring

        Connections(self.connections)  # ConfigError naming connections.NAME.key if one is invalid
        if self.secret_key is not None:
            Keyring(self.secret_key.get_secret_value())  # ConfigError if too short
        if self.scheduler.scheduler != "background":
            raise ConfigError("the service polls in the background: scheduler must be 'background'", field="scheduler")
        if self.workers > 1 and self.scheduler.jobstore != "sqlalchemy":
            raise ConfigError(
                "with more than one worker the job store must be 'sqlalchemy' (the workers share it)", field="jobstore"
            )
        if self.workers > 1 and _memory_sqlite(self.db):
            raise ConfigError("an in-memory database cannot be shared by several workers", field="db")
        if self.scheduler.backend == "procrastinate":
            from trackcheck.scheduling.distributed import conninfo

            conninfo(self.db)  # ConfigError naming scheduler.backend unless the state database is PostgreSQL
        return self


def state_database_url(db: str, password_file: str | Path | None) -> str:
    """The URL the state database is opened with: ``db``, with the password read from ``password_file``
    (stripped) when one is given, so that it appears neither on a command line (ps) nor in a config file.

    ConfigError names the file (never what it holds) when it cannot be read or is empty."""
    if password_file is None:
        return db
    path = Path(password_file)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot read {path}: {reason}", field="db_password_file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", field="db_password_file") from None
    if not password:
        raise ConfigError(f"{path} is empty", field="db_password_file")
    try:
        url = make_url(normalize_url(db))
    except ArgumentError:
        raise ConfigError("the state database URL is not a database URL", field="db") from None
    return url.set(password=password).render_as_string(hide_password=False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _memory_sqlite(url: str) -> bool:
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        return False  # not a URL at all: the state database says so when it opens
    return parsed.get_backend_name() == "sqlite" and sqlite_file(parsed) is None


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None, **flags: Any) -> ServiceConfig:
    """The configuration from the file (``path``, or ./trackcheck.toml if present), the environment, then
    ``flags`` (command-line options; None means not given). ConfigError names the key at fault."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    file = Path(path) if path is not None else Path(CONFIG_FILE)
    if path is not None or file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    for name, (section, key) in ENV_KEYS.items():
        value = env.get(f"TRACKCHECK_{name}")
        if value is not None and value != "":
            target = data.setdefault(section, {}) if section else data
            target[key] = value
    for key, value in flags.items():
        if value is not None:
            data[key] = value
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None

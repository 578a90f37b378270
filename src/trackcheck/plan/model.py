"""The plan format v1 as pydantic models: every key, its default, and the checks that need no I/O.

A plan names the systems (``sources``), how to read each at every ``stage``, and what must match there.
Rules that span several keys (a stage compares only with an earlier stage, a ``{param}`` must be declared)
are checked here too, so a wrong plan is rejected before anything runs. See docs/plans.md.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self, TypeVar

from jmespath.exceptions import JMESPathError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trackcheck.errors import PlanError
from trackcheck.plan.cron import check_cron
from trackcheck.plan.durations import parse_duration
from trackcheck.plan.functions import check_calls, compile_path
from trackcheck.plan.limits import (
    DEFAULT_LIMITS,
    PlanLimits,
    check_at_most,
    check_backoff,
    check_interval,
    check_timeout,
)
from trackcheck.plan.names import IDENTIFIER, NAME, check_name, check_plan_name
from trackcheck.plan.templates import param_names, printable, stage_templates

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
EXPECT = "expect"
#: the name of the stage a plan's ``emit:`` adds first
EMIT_STAGE = "emit"
#: the keys of a stage that declare its main check; a stage declares exactly one of them
MAIN_CHECKS = ("compare", "counts", "aggregates", "absent")


def limits_of(info: ValidationInfo) -> PlanLimits:
    """The limits a plan is validated under: ``model_validate(raw, context={"limits": ...})``, else the
    defaults."""
    context = info.context
    limits = context.get("limits") if isinstance(context, dict) else None
    return limits if isinstance(limits, PlanLimits) else DEFAULT_LIMITS


def _check_setting(name: str, value: Any, limits: PlanLimits) -> None:
    """The bound of a setting that ``defaults`` and stages share (interval, timeout, backoff, retries)."""
    if value is None:
        return
    if name == "interval":
        check_interval(value, limits)
    elif name == "timeout":
        check_timeout(value, limits)
    elif name == "backoff":
        check_backoff(value, limits)
    elif name == "retries":
        check_at_most(value, limits.max_retries, "max_retries")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


FieldList = Annotated[list[str], BeforeValidator(_as_list)]


class ParamSpec(_Model):
    """A run parameter such as ``test_id``; values are converted to ``type`` when a run is submitted."""

    required: bool = False
    default: Any = None
    type: Literal["string", "integer", "number", "boolean"] = "string"
    description: str | None = None


class Defaults(_Model):
    """Stage settings that apply wherever a stage does not set its own."""

    interval: Duration = timedelta(seconds=58)
    timeout: Duration = timedelta(minutes=30)
    retries: int | None = Field(default=None, ge=0)
    backoff: Duration = timedelta(seconds=1)
    snapshot_limit: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=1_000, ge=1)

    @field_validator("interval", "timeout", "backoff", "retries")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        _check_setting(str(info.field_name), value, limits_of(info))
        return value

    @field_validator("snapshot_limit", "batch_size")
    @classmethod
    def _capped(cls, value: int, info: ValidationInfo) -> int:
        limits = limits_of(info)
        if info.field_name == "snapshot_limit":
            check_at_most(value, limits.max_snapshot_limit, "max_snapshot_limit")
        else:
            check_at_most(value, limits.max_batch_size, "max_batch_size")
        return value


class SourceSpec(BaseModel):
    """A system to read. ``type`` picks the backend, whose own model validates the other keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    #: the connection it came from (``sources: {wh: {connection: warehouse}}``), None for an inline source
    connection: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ReadSpec(BaseModel):
    """The keys of a stage that say how its backend reads it: a SQL ``query``, a bus ``topic``, an HTTP
    ``request``. Each source backend declares its own subclass (``Source.read_model``), so that a backend
    brings its keys with it and this module names none of them.

    A stage keeps them unparsed (``StageSpec.read_keys``) until its source's type is known: the loader
    validates and binds them (``Plan.bind_reads``), and a backend reads them typed with ``Model.of(stage)``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    @classmethod
    def of(cls, stage: StageSpec) -> Self:
        """This backend's keys of ``stage``, validated once and kept on the stage."""
        return stage.read_as(cls)

    def templates(self, source: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The values rendered with a run's parameters, by the plan key they are written at; ``source`` and
        ``options`` are the stage's source's name and options (a file source's own ``path`` may hold
        ``{param}``). None by default: a key that may hold ``{param}`` is one its backend renders."""
        return {}


Read = TypeVar("Read", bound=ReadSpec)


def read_problem(exc: ValidationError, model: type[ReadSpec], type_name: str) -> tuple[str, str]:
    """What is wrong with a stage's backend keys, for a plan's author: (the key, the problem) of the first
    issue ``model`` found. A key the backend does not read is an unknown key, and the problem lists the keys
    it does read."""
    issue = exc.errors()[0]
    key = ".".join(printable(part) for part in issue["loc"])
    if issue["type"] == "extra_forbidden":
        # the backend's own keys first (a bus's ``topic`` before the ``records`` every bus has); a key typed
        # None is one the backend declares only to refuse it with a reason (MQTT's ``from``)
        fields = model.model_fields
        names = [n for k in model.__mro__ for n in inspect.get_annotations(k) if n in fields]
        read = [n for n in dict.fromkeys(names) if fields[n].annotation is not type(None)]
        own = ", ".join(fields[n].alias or n for n in read) or "none"
        return key, f"unknown key: a {type_name} stage reads {own} (check the spelling; see docs/plans.md)"
    if issue["type"] == "missing":
        return key, "this key is required"
    return key, issue["msg"].removeprefix("Value error, ")


class NotifySpec(_Model):
    """Where a finished run's JSON is POSTed (by the service), signed with HMAC-SHA256 when a secret is set."""

    webhook: str = Field(pattern=r"^https?://")
    secret: str | None = Field(default=None, description="HMAC key; use ${ENV} so it stays out of the plan text")
    retries: int = Field(default=5, ge=0, le=20)
    backoff: Duration = timedelta(seconds=2)

    @field_validator("backoff")
    @classmethod
    def _backoff(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        check_backoff(value, limits_of(info))
        return value


#: what each emit format POSTs to when an http emit gives no ``path``
EMIT_PATHS = {"segment": "/v1/batch", "snowplow": "/com.snowplowanalytics.snowplow/tp2", "json": "/"}


class EmitSpec(_Model):
    """Stage 0 of a run: send the run's ``expect`` events through the pipeline's front door, then verify.

    ``stamp`` sets fields on each event before it is sent: run parameters (``{test_id}``), ``{uuid}`` (an id
    of its own per event, the same if the send is retried) and ``{run_id}``.
    """

    source: str
    format: Literal["segment", "snowplow", "json"] = "json"
    #: for an http source: the path the events are POSTed to (relative to the source's url)
    path: str | None = None
    #: for a bus source: where each event is published (which keys apply depends on the bus)
    topic: str | None = None
    stream: str | None = None
    subject: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    qos: int | None = Field(default=None, ge=0, le=2)
    stamp: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stamp")
    @classmethod
    def _stamp(cls, value: dict[str, Any]) -> dict[str, Any]:
        for field in value:
            if not IDENTIFIER.match(field):
                raise ValueError(f"stamp field {field!r} is not a plain field name (letters, digits, _)")
        return value


Severity = Literal["fail", "warn"]


def _share(value: Any) -> Any:
    """``99%`` or ``0.99`` as a share between 0 (exclusive) and 1."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a share: write a percentage like 99% (or a number like 0.99)")
        value = float(match.group(1)) / 100
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"{value!r} is not a share between 0% (exclusive) and 100%")
    return float(value)


Share = Annotated[float, BeforeValidator(_share)]


def _by_checksum(stage: StageSpec) -> bool:
    """Whether the stage is (or may be) compared by checksum, and so keeps no records for a later stage."""
    spec = stage.compare
    return spec is not None and (spec.method == "checksum" or spec.checksum_above is not None)


class Bucket(_Model):
    """Segments of a time field (``compare: {method: checksum, bucket: {by: event_time, size: 1h}}``)."""

    by: str
    size: Duration = timedelta(hours=1)

    @field_validator("size")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1) or value.total_seconds() != int(value.total_seconds()):
            raise ValueError("a bucket is whole seconds long, at least 1s (1h, 15m, 1d)")
        return value


class CompareSpec(_Model):
    """Records must match the reference (``expect`` or an earlier stage) by key, field by field."""

    with_: str = Field(alias="with")
    fields: FieldList | None = None
    tolerance: dict[str, float | Duration] = Field(default_factory=dict)
    allow_extra: bool = False
    on_mismatch: Literal["fail", "wait"] = "fail"
    #: pass once this share of the reference arrived (what is missing is still reported); None: all of it
    complete: Share | None = None
    #: ``fail``: a key found twice fails; ``allow-identical``: duplicates whose compared fields are equal pass
    #: (at-least-once delivery); ``allow``: every duplicate passes (still reported)
    duplicates: Literal["fail", "allow-identical", "allow"] = "fail"
    #: ``warn``: what would fail is recorded and shown, and the stage passes
    severity: Severity = "fail"
    #: ``rows``: the records are read and compared here; ``checksum``: two sql stages' tables are compared inside
    #: their databases by checksums of segments, and only the rows that differ are read (``recon``)
    method: Literal["rows", "checksum"] = "rows"
    #: when compared by checksum (``method: checksum`` or past ``checksum_above``): cut the tables by this time
    #: field instead of by key
    bucket: Bucket | None = None
    #: ``method: rows`` until the reference stage read more rows than this for a run, then ``checksum``
    checksum_above: int | None = Field(default=None, ge=1)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerances(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: (parse_duration(v) if isinstance(v, str) else v) for k, v in value.items()}


class CountsSpec(_Model):
    """The stage returns aggregates: ``value`` per ``by`` group must equal the reference's record counts."""

    by: FieldList
    value: str
    with_: str = Field(alias="with")
    tolerance: float | str = 0
    allow_extra: bool = False
    severity: Severity = "fail"

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, value: float | str) -> float | str:
        if isinstance(value, str) and not re.fullmatch(r"\d+(\.\d+)?%", value.strip()):
            raise ValueError(f"{value!r} is not a tolerance: write a number (absolute) or a percentage like 5%")
        return value.strip() if isinstance(value, str) else value


class AggregatesSpec(_Model):
    """Sums, averages, minima, maxima and counts per ``by`` group must match the reference's, within
    ``tolerance`` (per field: an absolute number or a percentage). Computed by the database for SQL sources
    (``GROUP BY``), from the records for the others."""

    by: FieldList = Field(default_factory=list)
    sum: FieldList = Field(default_factory=list)
    avg: FieldList = Field(default_factory=list)
    min: FieldList = Field(default_factory=list)
    max: FieldList = Field(default_factory=list)
    count: bool = False
    with_: str = Field(alias="with")
    tolerance: dict[str, float | str] = Field(default_factory=dict)
    severity: Severity = "fail"

    @model_validator(mode="after")
    def _something(self) -> AggregatesSpec:
        if not (self.sum or self.avg or self.min or self.max or self.count):
            raise ValueError("aggregates: name at least one of sum, avg, min, max (fields) or count: true")
        return self


class AbsentSpec(_Model):
    """Nothing may match the stage's ``where`` for ``for``: the stage passes then, and fails at the first
    match (events of an opted-out user, PII that must not reach the warehouse)."""

    for_: Duration = Field(alias="for")
    severity: Severity = "fail"


class LatencySpec(_Model):
    """How late a stage's records may arrive: each record's first-seen poll time minus its ``time_field``
    (when the event was sent), as percentiles over the run's records."""

    p50: Duration | None = None
    p95: Duration | None = None
    p99: Duration | None = None
    max: Duration | None = None
    severity: Severity = "fail"

    @model_validator(mode="after")
    def _something(self) -> LatencySpec:
        if self.p50 is None and self.p95 is None and self.p99 is None and self.max is None:
            raise ValueError("latency: give at least one of p50, p95, p99, max")
        return self


class SchemaMapSpec(_Model):
    """A tracking plan: the value of field ``by`` (e.g. ``event``) picks the JSON Schema file."""

    by: str
    files: dict[str, str]


def check_path(expression: str, key: str) -> None:
    """A ``select``/``records`` expression must parse and call only known functions with a number of
    arguments they take: JMESPath alone would find a wrong call only when it reads a record. ValueError
    naming ``key`` otherwise."""
    try:
        problem = check_calls(compile_path(expression))
    except JMESPathError as exc:
        raise ValueError(f"{key}: {expression!r} is not a JMESPath expression: {exc}") from None
    if problem:
        raise ValueError(f"{key}: {problem}")


class StageSpec(BaseModel):
    """One system checked at one point of the pipeline.

    The keys that say how its backend reads it (``query``, ``topic``, ``request``...) are kept as extra
    keys, validated by the backend's own ``ReadSpec`` once the source's type is known (``Plan.bind_reads``):
    an unknown key is refused there, by the backend that knows which keys it reads.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    name: str
    source: str
    description: str | None = None
    key: FieldList | None = None
    where: dict[str, Any] = Field(default_factory=dict)
    select: dict[str, str] | None = None
    compare: CompareSpec | None = None
    counts: CountsSpec | None = None
    aggregates: AggregatesSpec | None = None
    absent: AbsentSpec | None = None
    schema_: str | SchemaMapSpec | None = Field(default=None, alias="schema")
    #: the field holding when the event was sent: arrival latency per record is measured from it
    time_field: str | None = None
    latency: LatencySpec | None = None
    interval: Duration | None = None
    cron: str | None = None
    at: datetime | None = None
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=0)
    backoff: Duration | None = None
    #: set on the stage a plan's top-level ``emit:`` adds as its first (the plan loader does, not users)
    emit: EmitSpec | None = None
    #: the backend's keys, typed, once bound (``read_as``)
    _read: ReadSpec | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        rule = "use letters, digits, _ . - (and not 'expect')"
        if value == EXPECT:
            raise ValueError(f"{value!r} is not a stage name: {rule}")
        return check_name(value, "stage name", NAME, rule, limits_of(info))

    @field_validator("interval", "timeout", "backoff", "retries")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        _check_setting(str(info.field_name), value, limits_of(info))
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: dict[str, Any]) -> dict[str, Any]:
        for field in value:
            if not IDENTIFIER.match(field):
                raise ValueError(f"where field {field!r} is not a plain field name (letters, digits, _)")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @model_validator(mode="after")
    def _shape(self) -> StageSpec:
        if sum(x is not None for x in (self.interval, self.cron, self.at)) > 1:
            raise ValueError("set only one of interval, cron and at")
        declared = [name for name in MAIN_CHECKS if getattr(self, name) is not None]
        if self.emit is not None:  # it sends, and checks only that the front door accepted every event
            if declared:
                raise ValueError("the emit stage sends the run's events; checks belong to the stages after it")
            return self
        if not declared:
            raise ValueError(
                "a stage needs one of 'compare' (records), 'counts', 'aggregates' or 'absent' to know what must match"
            )
        if len(declared) > 1:
            raise ValueError(f"a stage declares one check, not {' and '.join(repr(d) for d in declared)}")
        if self.latency is not None and self.time_field is None:
            raise ValueError("'latency' needs 'time_field': the field that says when each event was sent")
        if self.time_field is not None and self.aggregates is not None:
            raise ValueError("'time_field' measures each record's lateness; an 'aggregates' stage reads groups")
        if self.select is not None:
            for field, path in self.select.items():
                check_path(path, f"select.{field}")
            lost = sorted(set(self.where) - set(self.select))
            if lost:
                # records are split back per run on their selected fields: a 'where' field must be one of them
                raise ValueError(f"'where' filters on {', '.join(lost)}, which 'select' does not keep")
        if self.compare is not None and self.compare.fields is not None:
            unknown = set(self.compare.tolerance) - set(self.compare.fields)
            if unknown:
                raise ValueError(f"tolerance names fields that are not compared: {', '.join(sorted(unknown))}")
        return self

    @property
    def read_keys(self) -> dict[str, Any]:
        """The keys its backend reads, as written (validated by ``read_as``)."""
        return dict(self.model_extra or {})

    @property
    def bound_read(self) -> ReadSpec | None:
        """The backend's keys, typed, if ``read_as`` has validated them."""
        return self._read

    def read_as(self, model: type[Read], limits: PlanLimits = DEFAULT_LIMITS) -> Read:
        """The backend's keys validated by ``model`` (its ``ReadSpec``), kept for the next call: a source
        asks at every fetch. Raises pydantic's ValidationError; the loader turns it into a PlanError."""
        read = self._read
        if not isinstance(read, model):
            read = model.model_validate(self.read_keys, context={"limits": limits})
            self._read = read
        return read

    @property
    def check_name(self) -> str:
        """The plan key of the stage's main check: ``compare``, ``counts``, ``aggregates`` or ``absent``."""
        return next(name for name in MAIN_CHECKS if getattr(self, name) is not None)

    @property
    def reference(self) -> str | None:
        """What this stage is checked against: ``expect``, the name of an earlier stage, or None for a
        stage that checks that nothing arrives (``absent``)."""
        spec = self.compare or self.counts or self.aggregates
        return spec.with_ if spec is not None else None


class Plan(_Model):
    """A whole plan file."""

    name: str
    description: str | None = None
    key: FieldList = Field(min_length=1)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    sources: dict[str, SourceSpec]
    expect: list[dict[str, Any]] = Field(default_factory=list)
    emit: EmitSpec | None = None
    stages: list[StageSpec] = Field(min_length=1)
    notify: NotifySpec | None = None
    #: ``stage_params`` by stage name, filled on first use (a plan is immutable)
    _rendered_params: tuple[tuple[str, str], ...] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _emit_stage(cls, value: Any) -> Any:
        """A top-level ``emit:`` becomes the first stage, named ``emit``: the engine polls it like any stage
        (retried like a source error until its timeout), and later stages can compare ``with: emit``."""
        if not isinstance(value, dict) or not isinstance(value.get("emit"), dict):
            return value
        stages = value.get("stages")
        if not isinstance(stages, list):
            return value
        emit = value["emit"]
        first = {"name": EMIT_STAGE, "source": emit.get("source"), "emit": emit}
        head = stages[0] if stages else None
        if isinstance(head, dict) and head.get("name") == EMIT_STAGE and head.get("emit") is not None:
            return value  # already added: a plan dumped and validated again (``_links`` checks it is the same)
        return {**value, "stages": [first, *stages]}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        return check_plan_name(value, limits_of(info))

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, ParamSpec], info: ValidationInfo) -> dict[str, ParamSpec]:
        rule = "a run parameter is named like {test_id}: a letter or _, then letters, digits, _"
        for name in value:
            check_name(name, "parameter name", IDENTIFIER, rule, limits_of(info))
        return value

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceSpec], info: ValidationInfo) -> dict[str, SourceSpec]:
        for name in value:
            check_name(name, "source name", NAME, "use letters, digits, _ . -", limits_of(info))
        return value

    @model_validator(mode="after")
    def _links(self) -> Plan:
        seen: list[str] = []
        added = 1 if self.emit is not None else 0  # the emit stage: users number their stages without it
        for index, stage in enumerate(self.stages):
            where = self.stage_path(index)
            if stage.emit is not None and (index > 0 or stage.emit != self.emit):
                raise ValueError(f"{where}: 'emit' is a top-level key of the plan, not of a stage")
            if stage.name in seen:
                if stage.name == EMIT_STAGE and added:
                    raise ValueError(f"{where}: {EMIT_STAGE!r} is the name of the stage the plan's emit: adds")
                raise ValueError(f"{where}: stage name {stage.name!r} is used twice")
            if stage.source not in self.sources:
                known = ", ".join(sorted(self.sources)) or "none"
                raise ValueError(f"{where}.source: unknown source {stage.source!r} (sources: {known})")
            reference = stage.reference
            if reference is not None and reference != EXPECT and reference not in seen:
                later = reference in {s.name for s in self.stages}
                why = "a later stage (or itself)" if later else "not a stage of this plan"
                raise ValueError(
                    f"{where}.{stage.check_name}.with: {reference!r} is {why}; "
                    f"compare with 'expect' or an earlier stage ({', '.join(seen) or 'none yet'})"
                )
            problem = self.undeclared(stage) or self._checksum_problem(stage, seen)
            if problem:
                raise ValueError(f"{where}: {problem}")
            seen.append(stage.name)
        return self

    def _checksum_problem(self, stage: StageSpec, before: list[str]) -> str | None:
        """Why ``stage`` cannot compare by checksum (or with a stage that does), or None."""
        stages = {s.name: s for s in self.stages}
        reference = stages.get(stage.reference or "")
        spec = stage.compare
        if spec is not None and spec.bucket is not None and spec.method != "checksum" and spec.checksum_above is None:
            return "compare.bucket: segments cut tables compared by checksum: add method: checksum"
        key = "compare.checksum_above" if spec is not None and spec.method == "rows" else "compare.method: checksum"
        if spec is not None and spec.checksum_above is not None and spec.method == "checksum":
            return "compare.checksum_above: the stage always compares by checksum already (method: checksum)"
        if not _by_checksum(stage):
            if reference is not None and _by_checksum(reference):
                return (
                    f"{stage.check_name}.with: stage {reference.name!r} may be compared by checksum and then keeps no "
                    "records to compare with: compare with it by checksum too, or with an earlier stage"
                )
            return None
        if reference is None or reference.name not in before:
            return f"{key}: checksums compare two sql stages' tables: 'with' must name an earlier sql stage"
        for compared in (reference, stage):
            kind = self.sources[compared.source].type
            if kind != "sql":
                return (
                    f"{key}: checksums compare tables of sql sources; stage {compared.name!r} reads "
                    f"source {compared.source!r} of type {kind}"
                )
            if compared.select is not None:
                return (
                    f"{key}: checksums compare the tables' columns, which 'select' of stage "
                    f"{compared.name!r} cannot rename: alias the columns in its query instead"
                )
        return None

    def bind_reads(self, read_model: Callable[[str], type[ReadSpec]], limits: PlanLimits = DEFAULT_LIMITS) -> None:
        """Validate each stage's backend keys with the ``ReadSpec`` of its source's backend (``read_model``,
        by source name) and keep them, typed, on the stage. A PlanError names the stage and the key at
        fault, or a ``{param}`` they render that ``params`` does not declare. The loader calls it once the
        plan's sources are built; until then ``templates`` knows only the keys of the plan itself."""
        for index, stage in enumerate(self.stages):
            model = read_model(stage.source)
            try:
                stage.read_as(model, limits)
            except ValidationError as exc:
                key, problem = read_problem(exc, model, self.sources[stage.source].type)
                where = f"{self.stage_path(index)}.{key}" if key else self.stage_path(index)
                raise PlanError(f"{where}: {problem}", plan=self.name, stage=stage.name) from None
            undeclared = self.undeclared(stage)
            if undeclared:
                raise PlanError(f"{self.stage_path(index)}: {undeclared}", plan=self.name, stage=stage.name)

    def stage_path(self, index: int) -> str:
        """How errors name the stage at ``index``: ``stages[1] (warehouse)``, numbered as its author wrote
        them (without the stage a top-level ``emit:`` adds, which is ``emit``)."""
        added = 1 if self.emit is not None else 0
        if added and index == 0:
            return EMIT_STAGE
        return f"stages[{index - added}] ({printable(self.stages[index].name)})"

    def undeclared(self, stage: StageSpec) -> str | None:
        """Why ``stage`` cannot be rendered: a ``{param}`` it uses that ``params`` does not declare."""
        for key, value in self.templates(stage).items():
            missing = sorted(param_names(value) - set(self.params))
            if missing:
                listed = ", ".join("{" + p + "}" for p in missing)
                return f"{key} uses run parameter(s) {listed} that 'params' does not declare"
        return None

    def templates(self, stage: StageSpec, *, where: bool = True) -> dict[str, Any]:
        """The values of ``stage`` rendered with a run's parameters, by plan key: the plan's own
        (``templates.stage_templates``) and, once bound, those of its backend's keys (``ReadSpec.templates``)."""
        found = stage_templates(stage, where=where)
        read = stage.bound_read
        if read is not None and stage.source in self.sources:
            found.update(read.templates(stage.source, self.sources[stage.source].options))
        return found

    def stage_params(self, stage: StageSpec) -> frozenset[str]:
        """The run parameters ``stage`` renders, wherever it renders them."""
        return frozenset(param_names(list(self.templates(stage).values())))

    def rendered_params(self) -> tuple[tuple[str, str], ...]:
        """(stage name, parameter) for every parameter each stage renders, in stage order, then by name:
        worked out once per plan, since every submitted run asks (a private attribute read goes through
        pydantic's ``__getattr__``: once per run, not once per stage)."""
        found = self._rendered_params
        if found is None:
            found = self._rendered_params = tuple(
                (stage.name, parameter) for stage in self.stages for parameter in sorted(self.stage_params(stage))
            )
        return found

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def key_for(self, stage: StageSpec) -> list[str]:
        return stage.key or self.key

    def setting(self, stage: StageSpec, name: str) -> Any:
        """A stage's own value for interval/timeout/retries/backoff, else the plan default."""
        own = getattr(stage, name)
        return own if own is not None else getattr(self.defaults, name)

"""What the API takes and gives, as pydantic models: flask-openapi3 validates each request against them
and builds ``/api/openapi.json`` from them, so the document and the checks cannot drift apart.

Request models forbid unknown keys (``extra="forbid"``: a misspelt key is a 400 naming it, not silently
ignored) and take JSON types strictly (``"5"`` is not a number, ``true`` not an integer). Query models parse
the query string's text. What every body must satisfy besides (depth, NUL characters, 64-bit integers) is
checked before these models see it (``bodies``); ``${ENV}`` in a run request is refused here, where the
place it was found is known (``runs[3].params.test_id``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask_openapi3 import RawModel
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from trackcheck.plan.templates import env_references
from trackcheck.service.validation import MAX_NAME, MAX_OFFSET
from trackcheck.states import RunStatus, StageStatus

#: runs per ``POST /api/runs/batch``: one transaction of a few seconds at most, and within max_body_bytes
MAX_BATCH = 10_000
#: a duration is a number and a unit: anything longer is not one (and is not echoed back whole)
MAX_DURATION_TEXT = 40
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def _no_env(value: Any) -> Any:
    """A run request is data: ``${NAME}`` in it is refused rather than silently kept or ever expanded."""
    references = env_references(value)
    if references:
        where, name = references[0]
        raise PydanticCustomError(
            "env_reference",
            "${{name}} is not expanded in a run request; send the value itself",
            {"name": name, "where": where},
        )
    return value


class Request(BaseModel):
    """A JSON body: unknown keys refused, JSON types taken as they are."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query parameters: unknown ones refused; their text parsed into the declared type."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, values: Any) -> Any:
        """``?status=`` (what an HTML form sends for an empty field) means no filter, not an invalid one."""
        if isinstance(values, dict):
            return {key: value for key, value in values.items() if value != ""}
        return values


Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME, pattern=r"\S")]
Params = Annotated[
    dict[str, Any],
    AfterValidator(_no_env),
    Field(description="run parameters as the plan's params declare them"),
]
Expect = Annotated[
    list[dict[str, Any]],
    AfterValidator(_no_env),
    Field(description="expected events (else the plan's)"),
]


def _duration(value: Any) -> Any:
    """A duration as text (``2s``) or a positive number of seconds; what it means is ``overrides_from``'s."""
    if isinstance(value, str):
        if len(value) > MAX_DURATION_TEXT:
            raise PydanticCustomError("duration", "not a duration (e.g. 500ms, 58s, 5m, 2h, 1d)")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise PydanticCustomError("duration", "must be more than 0 seconds")
        return value
    raise PydanticCustomError("duration", "must be a duration like '2s' or a number of seconds")


#: one plain check rather than a union, so an error names the key and not the union's branches
Duration = Annotated[
    Any,
    AfterValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_DURATION_TEXT},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "a duration, e.g. '2s', '90s', '5m'; a number is seconds",
        }
    ),
]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


# -- requests ---------------------------------------------------------------------------------------------
class BatchRun(Request):
    """One run of a batch: as ``POST /api/runs`` takes one, without ``plan``."""

    params: Params | None = None
    expect: Expect | None = None
    interval: Duration | None = Field(None, description="poll every stage this often (e.g. '2s')")
    timeout: Duration | None = Field(None, description="every stage times out after this long (e.g. '90s')")


class RunRequest(BatchRun):
    """A run of a plan's latest version."""

    plan: Name = Field(description="plan name (its latest version is used)")


class BatchRunRequest(Request):
    """Many runs of one plan, stored all or nothing."""

    plan: Name = Field(description="plan name (its latest version is used for every run)")
    runs: list[BatchRun] = Field(min_length=1, max_length=MAX_BATCH, description="the runs, in order")


class ScheduleRequest(BatchRun):
    """A schedule: when, and the run request each firing submits (parameters, expected events, interval,
    timeout, as ``POST /api/runs`` takes them), checked now rather than when it fires."""

    plan: Name
    cron: Name = Field(description="five-field crontab expression in UTC, e.g. '10 2 * * *'")
    paused: StrictBool = Field(False, description="kept, but not fired")


class SchedulePause(Request):
    paused: StrictBool = Field(description="true: stop firing it; false: fire it again")


class ConnectionRequest(Request):
    """A connection as ``PUT /api/connections/{name}`` takes it (the name is the URL's)."""

    name: Name | None = Field(None, description="if given, the URL's name")
    type: Name = Field(description="sql, file, http, redis...")
    options: dict[str, Any] | None = Field(
        None, description="the type's options (url, root, headers...); '***' keeps a stored secret"
    )


class NewConnection(ConnectionRequest):
    name: Name = Field(description="the connection's name: a letter, then letters, digits, _ . -")


class PlanYaml(RawModel):
    """A plan's YAML: read by its view (``load_plan_text``), not by a model."""

    mimetypes = ["application/yaml", "text/plain"]


class RunsQuery(Query):
    plan: str | None = Field(None, description="only runs of this plan")
    status: RunStatus | None = Field(None, description="only runs in this status")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class PlanQuery(Query):
    version: int | None = Field(None, ge=1, le=MAX_OFFSET, description="this version (else the latest)")


class ForceQuery(Query):
    force: bool = Field(False, description="delete even while plans use it")


PathName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class RunPath(BaseModel):
    run_id: PathName = Field(description="run id")


class StagePath(RunPath):
    stage: PathName = Field(description="stage name")


class PlanPath(BaseModel):
    name: PathName = Field(description="plan name")


class SchedulePath(BaseModel):
    schedule_id: PathName = Field(description="schedule id")


class ConnectionPath(BaseModel):
    name: PathName = Field(description="connection name")


# -- answers ----------------------------------------------------------------------------------------------
class Error(BaseModel):
    """Every error of the API."""

    error: str = Field(description="short code, e.g. invalid_params, not_found")
    detail: Any = Field(description="what is wrong, naming the key, parameter, plan, stage or field")


class RunAccepted(BaseModel):
    id: str
    status: Literal["processing"]


class BatchAccepted(BaseModel):
    ids: list[str] = Field(description="the run ids, in the order of 'runs'")
    status: Literal["processing"]


class StageResult(BaseModel):
    """A stage's verdict and its evidence (lists capped at 1000 items each: ``EVIDENCE_CAP``)."""

    name: str
    status: StageStatus
    attempts: int
    started_at: Timestamp | None
    finished_at: Timestamp | None
    expected: int | None
    found: int | None
    missing: list[Any]
    unexpected: list[Any]
    duplicates: list[Any]
    mismatches: list[dict[str, Any]]
    violations: list[dict[str, Any]]
    counts: list[dict[str, Any]]
    warnings: list[str]
    latency: dict[str, Any] | None = Field(description="how late the records arrived, in seconds: n, p50, p95...")
    error: str | None
    error_kind: Literal["permanent", "transient"] | None = Field(
        description="permanent: ended at once; transient: retried"
    )
    reason: str | None


class RunResult(BaseModel):
    """The same document as ``trackcheck run --json``, plus ``notify``."""

    run_id: str
    plan: str
    status: RunStatus
    params: dict[str, Any]
    stages: list[StageResult]
    notify: dict[str, Any] | None = Field(
        description="webhook notification state: state (pending, retrying, delivered, failed, skipped), "
        "attempts, error, delivered_at, next_attempt; null if the plan has no webhook"
    )


class StageState(BaseModel):
    name: str
    status: StageStatus


class RunSummary(BaseModel):
    id: str
    plan: str
    status: RunStatus
    created_at: Timestamp
    finished_at: Timestamp | None
    stages: list[StageState]


class RunList(BaseModel):
    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


class Poll(BaseModel):
    stage: str | None
    polled_at: Timestamp
    outcome: str
    found: int | None
    expected: int | None
    duration_ms: float
    error: str | None


class PollList(BaseModel):
    run_id: str
    polls: list[Poll]


class Records(BaseModel):
    run_id: str
    stage: str
    records: list[dict[str, Any]]
    total: int = Field(description="how many records the stage read")
    truncated: bool = Field(description="true if more were read than the snapshot keeps")
    taken_at: Timestamp | None


class PlanSummary(BaseModel):
    name: str
    version: int
    description: str | None
    stages: list[str]
    created_at: Timestamp


class PlanList(BaseModel):
    plans: list[PlanSummary]


class PlanVersionRef(BaseModel):
    version: int
    created_at: Timestamp


class Plan(PlanSummary):
    text: str = Field(description="the YAML; URL passwords and secrets shown as ***")
    versions: list[PlanVersionRef]


class PlanSaved(PlanSummary):
    created: bool = Field(description="false if the text equals the latest version")


class Schedule(BaseModel):
    id: str
    plan: str
    cron: str
    params: dict[str, Any]
    expect: list[dict[str, Any]] | None = Field(description="the runs' expected events; null: the plan's")
    interval: str | None = Field(description="the runs' poll interval; null: the plan's")
    timeout: str | None = Field(description="the runs' stage timeout; null: the plan's")
    paused: bool
    created_at: Timestamp
    next_run_time: Timestamp | None
    last_run_id: str | None
    last_error: str | None


class ScheduleList(BaseModel):
    schedules: list[Schedule]


class Connection(BaseModel):
    name: str
    type: str
    options: dict[str, Any] = Field(description="secrets (passwords, header values, tokens) shown as ***")
    origin: Literal["config", "api"] = Field(description="config: from trackcheck.toml, read-only")
    updated_at: Timestamp | None


class ConnectionList(BaseModel):
    connections: list[Connection]

"""The Source interface every backend implements, and the plumbing they share.

A source reads records (plain dicts) from one system for one stage. The engine polls many runs waiting at
the same stage together, so a fetch carries the *union* of their filter values; the source returns at least
every record matching them (it may return more) and the engine splits the rows back per run.

Shared here: masking of credentials in every message, translating driver errors into the SourceError tree
with the driver error kept as ``__cause__``, JMESPath ``records``/``select`` extraction, and filtering in
Python for backends that cannot filter on the server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

import jmespath.exceptions
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from trackcheck.compare.values import canonical
from trackcheck.errors import ErrorKind, SourceError, SourceQueryError
from trackcheck.plan.functions import OPTIONS, compile_path, interpreter
from trackcheck.plan.masking import MASK, mask_url_passwords, secret_name
from trackcheck.plan.model import ReadSpec, StageSpec, check_path, read_problem

if TYPE_CHECKING:
    from types import TracebackType

    from trackcheck.sources.network import NetworkRule

Record = dict[str, Any]
#: how much of a driver's (or any cause's) text an error quotes: a server's error message must not be a
#: way to read a file or a response body through trackcheck
CAUSE_CHARS = 300


class RecordsRead(ReadSpec):
    """The stage key of a backend that reads JSON documents (an HTTP answer, a bus message): ``records``, a
    JMESPath to the list of records inside each (the document itself when unset)."""

    records: str | None = None

    @model_validator(mode="after")
    def _records(self) -> Self:
        if self.records:  # '' reads the whole answer, as no 'records' does
            check_path(self.records, "records")  # its message names the key
        return self


class SourceOptions(BaseModel):
    """Base of each backend's options model (the keys of a ``sources:`` entry besides ``type``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class FetchRequest:
    """One read of one stage, on behalf of one or more runs.

    ``filters`` maps each ``where`` field to the values any of the batched runs accepts (one array, bound
    as a parameter by SQL sources). ``params`` are the run parameters used to render the stage's other
    templates (HTTP request, Redis key, file path); the engine only batches runs whose renderings agree.
    """

    plan: str
    stage: StageSpec
    filters: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    #: when the earliest of the batched runs started (UTC): a bus stage reads what was published from then
    #: on (its ``from`` moves that back); None outside a run
    since: datetime | None = None
    #: a listening source's input: what the poller captured on the stage's channel since ``since``, oldest
    #: first (the source only decodes and filters it); None for every other source
    captured: Sequence[Message] | None = None
    #: which poll reads (``store.ticks.Claim.describe``) when a poller with the lease reads: an HTTP source
    #: sends it as the ``X-Trackcheck-Poll`` header, so the API's owner can tell one tick's reads from another's
    #: (and a test can count reads per tick at the source); None outside the lease (``trackcheck run``)
    poll: str | None = None


@dataclass(frozen=True)
class Message:
    """One message as a bus delivered it, before it is decoded into a record.

    ``meta`` holds what the bus says about it, offered to ``where``/``select``/``compare`` beside the
    payload's fields: ``_key``, ``_partition``, ``_offset``, ``_timestamp`` (ISO 8601 UTC), ``_headers``
    (text to text), ``_topic``/``_subject``/``_routing_key`` where the bus has them. ``at`` is the broker's
    timestamp, or when trackcheck received it if the bus gives none.
    """

    payload: bytes
    meta: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True)
class Destination:
    """Where ``Source.publish`` sends: the bus keys of an ``emit:`` (or of a stage), rendered."""

    topic: str | None = None
    stream: str | None = None
    subject: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    qos: int | None = None


class Listener(ABC):
    """A subscription a listening source holds for the runs waiting on one channel (see ``Source.listen``).

    The poller drains it about every second into a buffer in the state database, then calls ``commit``:
    a listener that can (a RabbitMQ queue, an MQTT QoS 1 session) acknowledges only then, so a crash between
    the two loses nothing. ``durable`` says whether the broker keeps what is published while trackcheck is
    away (a queue or a persistent session); if not, such a gap is reported on the runs it concerns.
    """

    durable: bool = False

    @abstractmethod
    def drain(self, limit: int) -> list[Message]:
        """What arrived since the last drain, up to ``limit`` messages, oldest first; never blocks long."""

    def commit(self) -> None:  # noqa: B027 - optional: only listeners that acknowledge
        """Acknowledge what the last ``drain`` returned: it is stored now."""

    @abstractmethod
    def close(self, *, remove: bool) -> None:
        """Disconnect; ``remove``: no run needs this channel any more, delete what the broker keeps for it
        (trackcheck's own queue, the persistent session)."""


@dataclass
class FetchResult:
    """What a fetch read: the records, and how many raw lines/items could not be parsed (files)."""

    records: list[Record]
    unparsed: int = 0
    notes: list[str] = field(default_factory=list)
    #: how many rows or messages the source read to answer (a bus reads more than it returns); None if unknown
    scanned: int | None = None


class Source(ABC):
    """A system trackcheck reads. Constructors do no I/O: call ``open()`` (or use ``with``) first."""

    type_name: ClassVar[str]
    options_model: ClassVar[type[SourceOptions]]
    #: the keys of a stage this backend reads (a SQL ``query``, a bus ``topic``); any other key of a stage
    #: that the plan itself does not define is a plan error
    read_model: ClassVar[type[ReadSpec]] = ReadSpec
    #: True for a bus that keeps no history (MQTT, a RabbitMQ exchange): the poller ``listen``s from when a
    #: run is picked up and buffers what it hears; ``fetch`` then gets it as ``request.captured``
    listens: ClassVar[bool] = False
    #: the network rule applied while fetching; None (the default) reaches anything, as a trusted plan may.
    #: Set it per source before ``open()``: under a rule forbidding private addresses the http source
    #: re-checks its host before each request, since a name may resolve differently than at load.
    network: NetworkRule | None = None

    def __init__(self, name: str, options: SourceOptions) -> None:
        self.name = name
        self.options = options
        #: ``_templates`` by stage, worked out once per stage rather than for each run submitted (the stage
        #: is kept with them, so that its id cannot be reused by another)
        self._batch_templates: dict[int, tuple[StageSpec, dict[str, Any]]] = {}

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:  # noqa: B027 - optional hook: most backends connect lazily
        """Acquire connections/clients. Idempotent."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``open`` acquired. Idempotent."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the contract ----------------------------------------------------------------------------------
    @classmethod
    def check_stage(cls, stage: StageSpec) -> str | None:
        """Why ``stage`` cannot be read by this backend (a message naming the key), or None if it can.
        Here: its keys against ``read_model``; a backend adds what its model alone cannot say."""
        try:
            cls.read_model.of(stage)
        except ValidationError as exc:
            key, problem = read_problem(exc, cls.read_model, cls.type_name)
            return f"{key}: {problem}" if key else problem
        return None

    def check_read(self, stage: StageSpec) -> str | None:
        """Why reading ``stage`` with this source's options would be unsafe or impossible (a message naming
        the key and, for text such as SQL, the position), or None. Called when a plan loads, so a plan that
        would write, reach outside its root or change host is refused before it is stored; no I/O."""
        return None

    def hosts(self) -> list[str]:
        """The network hosts this source connects to (checked against the private-network rule for
        inline sources of uploaded plans); none for sources that read local files."""
        return []

    @abstractmethod
    def fetch(self, request: FetchRequest) -> FetchResult:
        """Read the stage's records matching ``request.filters`` (at least those; more is allowed).

        Returns plain dicts with the plan's field names (``select`` applied). Raises a SourceError
        subclass (connect, query, timeout) when the system cannot be read; never returns partial data
        silently.
        """

    def channel(self, stage: StageSpec, params: Mapping[str, Any]) -> str:
        """A listening source's subscription for ``stage`` with these run parameters, as text that names it
        (``devices/+/events qos 1``): runs whose channels are equal share one listener and one buffer."""
        raise NotImplementedError(f"a {self.type_name} source does not listen")

    @classmethod
    def listens_to(cls, stage: StageSpec) -> bool:
        """Whether ``stage`` is read from what the poller heard (``listen``) rather than by ``fetch`` alone:
        a RabbitMQ exchange stage does, a stream stage of the same source does not."""
        return cls.listens

    def listen(self, stage: StageSpec, params: Mapping[str, Any], identity: str | None = None) -> Listener:
        """Subscribe to ``channel(stage, params)`` (a listening source only); raises a SourceError if the
        bus cannot be reached. ``identity`` names what the broker keeps for this subscription (a queue, a
        session): the poller gives the same one after a restart, and another for another state database
        (two installations, parallel CI jobs); None: derived from the channel."""
        raise NotImplementedError(f"a {self.type_name} source does not listen")

    def publish(self, destination: Destination, payloads: Sequence[bytes], key: str | None = None) -> None:
        """Send each payload as one message to ``destination`` (a bus source: ``emit:`` sends a run's
        events this way) and wait until the broker accepted them all; a SourceError if it did not."""
        raise NotImplementedError(f"a {self.type_name} source does not publish")

    def batch_key(self, stage: StageSpec, params: Mapping[str, Any]) -> str:
        """A string equal for runs whose fetch differs only in ``where`` values: they share one query."""
        from trackcheck.plan.templates import render

        templates = self._batch_templates.get(id(stage))
        if templates is None or templates[0] is not stage:
            templates = self._batch_templates[id(stage)] = (stage, self._templates(stage))
        return repr(render(templates[1], params)) if templates[1] else "{}"

    def _templates(self, stage: StageSpec) -> dict[str, Any]:
        """Every template ``stage`` renders per run but its ``where`` (a file source's own path may use {x})."""
        from trackcheck.plan.templates import stage_templates

        found = stage_templates(stage, where=False)
        found.update(self.read_model.of(stage).templates(self.name, self.options.model_dump()))
        return found

    # -- shared plumbing -------------------------------------------------------------------------------
    def secrets(self) -> list[str]:
        """Strings that must never appear in a message: passwords in URLs, header values, and every option
        named like a credential (``password``, ``sasl_password``, ``token``...), however deep."""
        return [s for s in _secrets_in(self.options.model_dump()) if s]

    def mask(self, text: str) -> str:
        """``text`` with every secret of this source replaced by ***."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, MASK)
        return mask_url_passwords(text)

    def error(
        self,
        kind: type[SourceError],
        message: str,
        stage: StageSpec | None,
        cause: BaseException | None = None,
        *,
        permanent: bool = False,
    ) -> SourceError:
        """A SourceError of ``kind`` naming this source and the stage, its text masked; ``permanent`` when
        the same read cannot succeed later (see ``ErrorKind``): the stage then ends without waiting.

        The cause's text is quoted up to CAUSE_CHARS (masked before it is cut, so that a secret straddling
        the cut cannot leak in part); the cause itself stays the error's ``__cause__`` for logs.
        """
        detail = self.mask(message)
        if cause is not None:
            said = self.mask(f"{type(cause).__name__}: {cause}")
            if len(said) > CAUSE_CHARS:
                said = said[:CAUSE_CHARS] + "…"
            detail = f"{detail}: {said}"
        error = kind(
            detail,
            kind=ErrorKind.PERMANENT if permanent else ErrorKind.TRANSIENT,
            source=self.name,
            stage=stage.name if stage else None,
        )
        if cause is not None:
            error.__cause__ = cause
        return error


def _secrets_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        if "://" in value:
            parts = urlsplit(value)
            if parts.password:
                yield parts.password
    elif isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, str) and (str(key).lower() in _SECRET_HEADER_KEYS or secret_name(str(key))):
                yield inner
                yield from inner.split()[1:]
            else:
                yield from _secrets_in(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _secrets_in(inner)


_SECRET_HEADER_KEYS = {"authorization", "x-api-key", "api-key", "apikey", "token", "x-auth-token", "password"}


def extract_records(document: Any, expression: str | None, source: Source, stage: StageSpec) -> list[Record]:
    """The list of records inside a JSON document (``records:`` JMESPath; the document itself if None)."""
    found = document
    if expression:
        try:
            found = compile_path(expression).search(document, options=OPTIONS)
        except jmespath.exceptions.JMESPathError as exc:
            raise source.error(SourceQueryError, f"'records: {expression}' is not valid JMESPath", stage, exc) from exc
    if found is None:
        return []
    if isinstance(found, dict):
        found = [found]
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        where = f"'records: {expression}'" if expression else "the response"
        raise source.error(SourceQueryError, f"{where} is not a list of objects", stage)
    return found


def apply_select(records: list[Record], select: Mapping[str, str] | None) -> list[Record]:
    """Map raw fields to plan fields: ``{plan_field: JMESPath or dotted path}``; None keeps records as they are.

    Expressions may call the plan functions (``plan/functions.py``). A value one record holds that a
    function cannot take (``length(n)`` of a number) makes that field null in that record, as the plan
    functions do themselves: one malformed record must not fail every run's poll.
    """
    if not select:
        return records
    compiled = [(name, compile_path(path).parsed) for name, path in select.items()]
    visit = interpreter().visit  # one evaluator for every record: as ``search(options=OPTIONS)``, 3x faster
    selected: list[Record] = []
    for record in records:
        row: Record = {}
        for name, tree in compiled:
            try:
                row[name] = visit(tree, record)
            except jmespath.exceptions.JMESPathTypeError:
                row[name] = None
        selected.append(row)
    return selected


def filter_records(records: Iterable[Record], filters: Mapping[str, Sequence[Any]]) -> list[Record]:
    """Keep the records whose value of every filter field is one of the accepted values (compared canonically)."""
    if not filters:
        return list(records)
    accepted = {name: {canonical(v) for v in values} for name, values in filters.items()}
    return [r for r in records if all(canonical(r.get(name)) in ok for name, ok in accepted.items())]

"""The ``http`` source: records from a JSON HTTP API (a BI tool, an analytics export, a collector).

A stage's ``request`` (method, path, params, json, headers) is rendered with the run parameters and sent
relative to the source's ``url``; ``records`` (JMESPath) finds the list of objects in the JSON response and
``select`` maps it to plan fields. ``where`` is applied here, in Python, after the response is read.

Every header value, of the source and of the stage's request, is treated as a credential: it never appears
in a message, and neither does a password in the URL nor the value of a query parameter named like a
token, key or password. Messages name the method and the URL without credentials or query string.

The host is the source's. A stage's ``request.path`` is a relative path (no scheme, no ``//host``, no
backslash, no ``@`` before the first ``/``, no ``..`` segment) and sets no ``Host`` header: checked when
the plan loads (``check_read``). A built request whose scheme, host or port differ from the source's
``url``, or whose path is not below the url's path, is refused before it is sent. A redirect is followed
only to the same scheme, host and port (httpx calls the request hook for every request of a redirect
chain). Under a ``Source.network`` rule that forbids private addresses, the host is resolved and checked
again before each request and the address actually connected to is checked before the answer is read:
a DNS answer that changed since the plan loaded is caught.

A poller with the lease names each read in an ``X-Trackcheck-Poll`` header (``group=...; epoch=...;
tick=...; attempt=...; chunk=...``): the API's owner sees which reads belong to one tick, and that a retried
tick (its worker killed mid-read) reads again under the next attempt.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trackcheck.errors import SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import Duration, ReadSpec
from trackcheck.plan.templates import render
from trackcheck.sources import network
from trackcheck.sources.base import (
    FetchRequest,
    FetchResult,
    RecordsRead,
    Source,
    SourceOptions,
    apply_select,
    extract_records,
    filter_records,
)

if TYPE_CHECKING:
    from trackcheck.plan.model import StageSpec

#: answers that the same request will get again: a malformed request, credentials refused, a method or a
#: resource that is gone. 404 is not among them: many APIs answer it until the data exists.
PERMANENT_STATUSES = frozenset({400, 401, 403, 405, 410, 422})
#: how much of an unexpected response body a message quotes
EXCERPT_CHARS = 200
#: names the poll a request belongs to (``FetchRequest.poll``): group, lease epoch, tick, attempt and chunk
POLL_HEADER = "X-Trackcheck-Poll"
#: header values shorter than this are not masked unless the header's name says it holds a credential
#: (masking "2" of ``X-Api-Version: 2`` would garble every message, and such a value protects nothing)
MIN_SECRET_CHARS = 4
_SECRET_NAME = re.compile(
    r"token|secret|passw|pwd|auth|credential|signature|session|cookie|apikey|(^|[-_])(api)?key$", re.I
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class RequestSpec(BaseModel):
    """The HTTP request of an ``http`` stage; ``{param}`` placeholders are rendered per run."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    method: Literal["GET", "POST"] = "GET"
    path: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class HttpRead(RecordsRead):
    """What an ``http`` stage reads: the answer to its ``request``, its ``records`` taken out."""

    request: RequestSpec | None = None

    def templates(self, source: str, options: Mapping[str, Any]) -> dict[str, Any]:
        if self.request is None:
            return {}
        return {
            "request.path": self.request.path,
            "request.params": self.request.params,
            "request.json": self.request.json_body,
            "request.headers": self.request.headers,
        }


class HttpOptions(SourceOptions):
    """``type: http``: the base URL, headers sent with every request, timeout and TLS verification."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    verify_tls: bool = True


class HttpSource(Source):
    """Reads a stage by sending its rendered ``request`` and extracting ``records`` from the JSON answer."""

    type_name: ClassVar[str] = "http"
    options_model: ClassVar[type[SourceOptions]] = HttpOptions
    read_model: ClassVar[type[ReadSpec]] = HttpRead

    options: HttpOptions

    def __init__(self, name: str, options: SourceOptions) -> None:
        super().__init__(name, options)
        self._client: httpx.Client | None = None
        self._lock = threading.RLock()
        # rendered stage header / secret-named parameter values of recent fetches (bounded: they may
        # contain run parameters, so there are as many as runs)
        self._seen_secrets: OrderedDict[str, None] = OrderedDict()
        self._origin: tuple[str, str, int | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            restricted = self.network is not None and not self.network.allow_private
            try:
                self._client = httpx.Client(
                    base_url=self.options.url,
                    headers=self.options.headers,
                    timeout=self.options.timeout.total_seconds(),
                    verify=self.options.verify_tls,
                    follow_redirects=True,  # to the same origin only: see _before_request
                    event_hooks={"request": [self._before_request], "response": [self._after_response]},
                    trust_env=not restricted,  # a proxy from the environment would connect on our behalf
                )
            except (httpx.InvalidURL, ValueError, TypeError) as exc:
                raise self.error(SourceConnectError, "the source url is not a valid HTTP URL", None, exc) from exc
            self._origin = _origin(self._client.base_url)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the contract ----------------------------------------------------------------------------------
    def check_read(self, stage: StageSpec) -> str | None:
        """A stage's ``request.path`` is relative to the source's url: it can never name another host."""
        spec = HttpRead.of(stage).request
        if spec is None:
            return None
        problem = _foreign_path(spec.path)
        if problem:
            return f"request.path: {spec.path!r} {problem}; the host is the source's url, paths are relative to it"
        if any(name.strip().lower() == "host" for name in spec.headers):
            return "request.headers: 'Host' cannot be set by a stage; the host is the source's url"
        return None

    def hosts(self) -> list[str]:
        """The host of ``url`` as httpx parses it (the parser that connects is the one checked)."""
        try:
            return [httpx.URL(self.options.url).host]
        except (httpx.InvalidURL, TypeError):
            return [""]

    def fetch(self, request: FetchRequest) -> FetchResult:
        """Send the stage's request; the JSON answer's ``records`` filtered by ``request.filters``.

        Errors as ``_send``'s; besides, a body that is not JSON or ``records`` not pointing at objects is a
        SourceQueryError. A 204 No Content is an empty list of records.
        """
        stage = request.stage
        read = HttpRead.of(stage)
        spec = read.request
        method = spec.method if spec else "GET"
        path = render(spec.path, _quoted(request.params)) if spec else ""
        params = render(spec.params, request.params) if spec else {}
        body = render(spec.json_body, request.params) if spec else None
        headers = {str(k): str(v) for k, v in render(spec.headers, request.params).items()} if spec else {}
        response, target = self._send(stage, method, path, params, body, headers, poll=request.poll)
        document: Any = None
        if response.status_code != 204:
            try:
                document = response.json()
            except ValueError as exc:
                kind = response.headers.get("content-type", "no content type")
                raise self._response_error(f"{target}: the answer is not JSON ({kind})", response, stage) from exc

        records = extract_records(document, read.records, self, stage)
        records = filter_records(apply_select(records, stage.select), request.filters)
        return FetchResult(records)

    def post(self, stage: StageSpec, path: str, body: Any) -> str:
        """POST ``body`` as JSON to ``path`` (below the source's url, as a stage's request): what a plan's
        ``emit:`` sends. Returns what the answer was (``POST /v1/batch: HTTP 200``); a SourceError as for a
        fetch when it is not a success."""
        response, target = self._send(stage, "POST", path, {}, body, {})
        return f"{target}: HTTP {response.status_code}"

    def _send(
        self,
        stage: StageSpec,
        method: str,
        path: str,
        params: Any,
        body: Any,
        headers: dict[str, str],
        *,
        poll: str | None = None,
    ) -> tuple[httpx.Response, str]:
        """Send one request on the source's origin only; the successful answer and how messages name it.
        ``poll`` goes in the ``X-Trackcheck-Poll`` header.

        A non-2xx status is a SourceQueryError; a refused connection a SourceConnectError; no answer in
        ``timeout`` a SourceTimeoutError."""
        self.open()
        assert self._client is not None
        self._remember([*_header_secrets(headers), *_param_secrets(params)])
        if poll is not None:  # not a secret: it names a tick of trackcheck's, nothing of the source's
            headers = {POLL_HEADER: poll, **headers}
        target = f"{method} {path or '/'}"
        try:
            built = self._client.build_request(
                method, str(path), params=params or None, json=body, headers=headers or None
            )
            target = f"{method} {_display_url(built.url)}"
            if _origin(built.url) != self._origin:
                other = f"{self._differs(built.url)} ({_display_origin(built.url)})"
                raise self.error(
                    SourceQueryError, f"{target}: request to {other} refused, not sent", stage, permanent=True
                )
            if any(name.strip().lower() == "host" for name in headers):
                raise self.error(
                    SourceQueryError, f"{target}: a stage cannot set the Host header, not sent", stage, permanent=True
                )
            if not built.url.path.startswith(self._client.base_url.path):
                message = f"{target}: the path leaves the source's url (a '..' in a run parameter?), not sent"
                raise self.error(SourceQueryError, message, stage, permanent=True)
            response = self._client.send(built)
        except _Refused as exc:
            if exc.request is built:
                raise self.error(SourceQueryError, f"{target}: {exc.reason}", stage, permanent=True) from None
            other = f"{self._differs(exc.request.url)} ({_display_origin(exc.request.url)})"
            reason = "" if exc.reason == _OTHER_ORIGIN else f": {exc.reason}"
            raise self.error(
                SourceQueryError, f"{target}: redirect to {other} not followed{reason}", stage, permanent=True
            ) from None
        except httpx.TimeoutException as exc:
            seconds = self.options.timeout.total_seconds()
            raise self.error(SourceTimeoutError, f"{target}: no answer within {seconds:g}s", stage, exc) from exc
        except (httpx.NetworkError, httpx.ProxyError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise self.error(SourceConnectError, f"{target}: could not connect", stage, exc) from exc
        except httpx.HTTPError as exc:
            raise self.error(SourceQueryError, f"{target}: the request failed", stage, exc) from exc

        if not response.is_success:
            permanent = response.status_code in PERMANENT_STATUSES
            raise self._response_error(f"{target}: HTTP {response.status_code}", response, stage, permanent=permanent)
        return response, target

    # -- staying on the source's host -------------------------------------------------------------------
    def _before_request(self, request: httpx.Request) -> None:
        """httpx's request hook, called for the first request and for each redirect it would follow."""
        if _origin(request.url) != self._origin:
            raise _Refused(request, _OTHER_ORIGIN)
        rule = self.network
        if rule is not None and not rule.allow_private:
            problem = network.refusal(request.url.host, allow_private=False)
            if problem:
                raise _Refused(request, problem)

    def _differs(self, url: httpx.URL) -> str:
        """What a URL changes of the source's origin, as a message says it."""
        scheme, host, port = _origin(url)
        if self._origin is None or host != self._origin[1]:
            return "another host"
        if port != self._origin[2]:
            return "another port"
        return "another scheme" if scheme != self._origin[0] else "the same host"

    def _after_response(self, response: httpx.Response) -> None:
        """httpx's response hook, before the body is read: the peer must be allowed by the network rule
        too, or a name resolving differently for the connection than for the check would get through."""
        rule = self.network
        if rule is None or rule.allow_private:
            return
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if not peer:
            raise _Refused(response.request, "cannot tell which address answered")
        problem = network.refusal(str(peer[0]), allow_private=False)
        if problem:
            raise _Refused(response.request, f"connected to a refused address: {problem}")

    # -- masking ---------------------------------------------------------------------------------------
    def secrets(self) -> list[str]:
        """Base secrets, every header value of the source and of recent stage requests, URL credentials."""
        found = super().secrets()
        found.extend(_header_secrets(self.options.headers))
        parts = urlsplit(self.options.url)
        if parts.password:
            found.append(unquote(parts.password))
        found.extend(_param_secrets(dict(parse_qsl(parts.query))))
        with self._lock:
            found.extend(self._seen_secrets)
        return [s for s in found if s]

    def _remember(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                self._seen_secrets[value] = None
                self._seen_secrets.move_to_end(value)
            while len(self._seen_secrets) > 1024:
                self._seen_secrets.popitem(last=False)

    def _response_error(
        self, message: str, response: httpx.Response, stage: StageSpec, *, permanent: bool = False
    ) -> SourceError:
        """A SourceQueryError quoting the start of the response body, masked."""
        # masked before it is cut, so that a secret straddling the cut cannot leak in part
        excerpt = self.mask(" ".join(response.text.split()))
        if len(excerpt) > EXCERPT_CHARS:
            excerpt = excerpt[:EXCERPT_CHARS] + "…"
        detail = f"{message}: {excerpt}" if excerpt else f"{message} (empty body)"
        return self.error(SourceQueryError, detail, stage, permanent=permanent)


_OTHER_ORIGIN = "another scheme, host or port"


class _Refused(Exception):
    """Raised by the hooks to stop a request (not an httpx error: nothing is retried or wrapped)."""

    def __init__(self, request: httpx.Request, reason: str) -> None:
        super().__init__(reason)
        self.request = request
        self.reason = reason


def _foreign_path(path: str) -> str | None:
    """Why a stage's ``request.path`` could leave the source's host, or None for a plain relative path."""
    if _CONTROL.search(path):
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash"
    start = path.lstrip()
    if start.startswith("//"):
        return "is a network-path reference (//host)"
    if _SCHEME.match(start):
        return "has a scheme"
    if "@" in start.split("/", 1)[0]:
        return "has an '@' before its first '/'"
    if any(unquote(segment) == ".." for segment in re.split(r"[?#]", path, maxsplit=1)[0].split("/")):
        return "has a '..' segment"
    return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (the default port written out) of a URL."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _display_origin(url: httpx.URL) -> str:
    """Another host as messages name it: scheme, host and port only (never credentials, path or query)."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}/"


def _header_secrets(headers: Mapping[str, str]) -> Iterable[str]:
    """Each header value, and its words after the first (the token of ``Bearer <token>``)."""
    for name, value in headers.items():
        named = bool(_SECRET_NAME.search(name))
        for candidate in (value, *value.split()[1:]):
            if candidate and (named or len(candidate) >= MIN_SECRET_CHARS):
                yield candidate


def _param_secrets(params: Any) -> Iterable[str]:
    """The values of query parameters named like a token, key or password."""
    if not isinstance(params, Mapping):
        return
    for name, value in params.items():
        if not _SECRET_NAME.search(str(name)):
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None and str(item):
                yield str(item)


def _quoted(params: Mapping[str, Any]) -> dict[str, str]:
    """Run parameters escaped for a URL path: ``a/b c`` stays one path segment."""
    return {name: quote(str(value), safe="") for name, value in params.items()}


def _display_url(url: httpx.URL) -> str:
    """The URL as messages show it: no user, password or query string."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


__all__ = ["HttpOptions", "HttpSource"]

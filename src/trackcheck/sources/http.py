"""The ``http`` source: records from a JSON HTTP API (a BI tool, an analytics export, a collector).

A stage's ``request`` (method, path, params, json, headers) is rendered with the run parameters and sent
relative to the source's ``url``; ``records`` (JMESPath) finds the list of objects in the JSON response and
``select`` maps it to plan fields. ``where`` is applied here, in Python, after the response is read.

Every header value, of the source and of the stage's request, is treated as a credential: it never appears
in a message, and neither does a password in the URL nor the value of a query parameter named like a
token, key or password. Messages name the method and the URL without credentials or query string.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
from pydantic import Field

from trackcheck.errors import SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import Duration
from trackcheck.plan.templates import render
from trackcheck.sources.base import (
    FetchRequest,
    FetchResult,
    Source,
    SourceOptions,
    apply_select,
    extract_records,
    filter_records,
)

if TYPE_CHECKING:
    from trackcheck.plan.model import StageSpec

#: how much of an unexpected response body a message quotes
EXCERPT_CHARS = 200
#: header values shorter than this are not masked unless the header's name says it holds a credential
#: (masking "2" of ``X-Api-Version: 2`` would garble every message, and such a value protects nothing)
MIN_SECRET_CHARS = 4
_SECRET_NAME = re.compile(
    r"token|secret|passw|pwd|auth|credential|signature|session|cookie|apikey|(^|[-_])(api)?key$", re.I
)


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
    stage_keys: ClassVar[frozenset[str]] = frozenset({"request", "records"})

    options: HttpOptions

    def __init__(self, name: str, options: SourceOptions) -> None:
        super().__init__(name, options)
        self._client: httpx.Client | None = None
        self._lock = threading.RLock()
        # rendered stage header / secret-named parameter values of recent fetches (bounded: they may
        # contain run parameters, so there are as many as runs)
        self._seen_secrets: OrderedDict[str, None] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            try:
                self._client = httpx.Client(
                    base_url=self.options.url,
                    headers=self.options.headers,
                    timeout=self.options.timeout.total_seconds(),
                    verify=self.options.verify_tls,
                    follow_redirects=True,  # httpx drops Authorization when a redirect leaves the origin
                )
            except (httpx.InvalidURL, ValueError, TypeError) as exc:
                raise self.error(SourceConnectError, "the source url is not a valid HTTP URL", None, exc) from exc

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the contract ----------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        """Send the stage's request; the JSON answer's ``records`` filtered by ``request.filters``.

        A non-2xx status, a body that is not JSON, or ``records`` not pointing at objects is a
        SourceQueryError; a refused connection a SourceConnectError; no answer in ``timeout`` a
        SourceTimeoutError. A 204 No Content is an empty list of records.
        """
        stage = request.stage
        self.open()
        assert self._client is not None
        spec = stage.request
        method = spec.method if spec else "GET"
        path = render(spec.path, _quoted(request.params)) if spec else ""
        params = render(spec.params, request.params) if spec else {}
        body = render(spec.json_body, request.params) if spec else None
        headers = {str(k): str(v) for k, v in render(spec.headers, request.params).items()} if spec else {}
        self._remember([*_header_secrets(headers), *_param_secrets(params)])

        target = f"{method} {path or '/'}"
        try:
            built = self._client.build_request(
                method, str(path), params=params or None, json=body, headers=headers or None
            )
            target = f"{method} {_display_url(built.url)}"
            response = self._client.send(built)
        except httpx.TimeoutException as exc:
            seconds = self.options.timeout.total_seconds()
            raise self.error(SourceTimeoutError, f"{target}: no answer within {seconds:g}s", stage, exc) from exc
        except (httpx.NetworkError, httpx.ProxyError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise self.error(SourceConnectError, f"{target}: could not connect", stage, exc) from exc
        except httpx.HTTPError as exc:
            raise self.error(SourceQueryError, f"{target}: the request failed", stage, exc) from exc

        if not response.is_success:
            raise self._response_error(f"{target}: HTTP {response.status_code}", response, stage)
        document: Any = None
        if response.status_code != 204:
            try:
                document = response.json()
            except ValueError as exc:
                kind = response.headers.get("content-type", "no content type")
                raise self._response_error(f"{target}: the answer is not JSON ({kind})", response, stage) from exc

        records = extract_records(document, stage.records, self, stage)
        records = filter_records(apply_select(records, stage.select), request.filters)
        if request.limit is not None:
            records = records[: request.limit]
        return FetchResult(records)

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

    def _response_error(self, message: str, response: httpx.Response, stage: StageSpec) -> SourceError:
        """A SourceQueryError quoting the start of the response body, masked."""
        # masked before it is cut, so that a secret straddling the cut cannot leak in part
        excerpt = self.mask(" ".join(response.text.split()))
        if len(excerpt) > EXCERPT_CHARS:
            excerpt = excerpt[:EXCERPT_CHARS] + "…"
        detail = f"{message}: {excerpt}" if excerpt else f"{message} (empty body)"
        return self.error(SourceQueryError, detail, stage)


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

"""Reading a stage from files a collector writes: JSON Lines or CSV, plain or gzipped, found by a glob.

Files are read while they are still being written, rotated or not there yet, so "nothing there" is zero
records, not an error: the stage simply waits. A line that cannot be parsed is counted and described in the
result, never fatal, except the last line of a file without its newline: it is still being written. Only
what says the source is misconfigured (a directory or file trackcheck may not read, an undecodable CSV)
raises.

A source with a ``root`` (a connection an operator defined) reads only below it: its paths are globs
relative to the root, an absolute path, a ``~`` path or a ``..`` part is refused when the plan loads
(``check_read``), and every file a glob matches is resolved (``os.path.realpath``) and skipped, with a
note and unread, when it lies outside the root's real path: a symbolic link never leads out of the root.
Without a root a path may name any file trackcheck can read (trusted plans).
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import field_validator

from trackcheck.errors import SourceQueryError
from trackcheck.plan.model import ReadSpec
from trackcheck.plan.templates import param_names, render
from trackcheck.sources.base import (
    FetchRequest,
    FetchResult,
    Record,
    Source,
    SourceOptions,
    apply_select,
    filter_records,
)

if TYPE_CHECKING:
    from trackcheck.plan.model import StageSpec

MAX_NOTES = 20
_MAGIC = re.compile(r"[*?[]")
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}


class FileRead(ReadSpec):
    """What a ``file`` stage reads: its own ``path`` (a glob), else its source's."""

    path: str | None = None

    def templates(self, source: str, options: Mapping[str, Any]) -> dict[str, Any]:
        if self.path:
            return {"path": self.path}
        path = options.get("path")
        return {f"sources.{source}.path": path} if isinstance(path, str) and path else {}


class FileOptions(SourceOptions):
    """``sources.<name>`` of ``type: file``; a stage's own ``path`` replaces ``path``.

    ``root`` (absolute; ``~`` is expanded) confines every path to that directory: paths are then
    relative to it. None: paths may name any file (the plan is trusted).
    """

    path: str | None = None
    root: str | None = None
    format: Literal["jsonl", "csv", "auto"] = "auto"
    encoding: str = "utf-8"
    delimiter: str = ","

    @field_validator("root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        expanded = os.path.expanduser(value)
        if not os.path.isabs(expanded):
            raise ValueError(f"the root {value!r} is not an absolute path")
        return os.path.normpath(expanded)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("the CSV delimiter is one character")
        return value


@dataclass
class _Parsed:
    """Records and problems of one fetch, across files."""

    records: list[Record] = field(default_factory=list)
    unparsed: int = 0
    notes: list[str] = field(default_factory=list)

    #: files matched but not read because they resolve outside the source's root
    outside: list[str] = field(default_factory=list)

    def problem(self, where: str, what: str) -> None:
        self.unparsed += 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{where}: {what}")


class FileSource(Source):
    """Every file matching a glob, read in name order at each fetch."""

    type_name = "file"
    options_model = FileOptions
    read_model = FileRead
    options: FileOptions

    def check_read(self, stage: StageSpec) -> str | None:
        """With a root, the path (the stage's, else the source's) must be relative and stay below it."""
        root = self.options.root
        template = FileRead.of(stage).path or self.options.path
        if root is None or template is None:
            return None
        problem = _escape(template)
        return f"path: {template!r} {problem}; paths are relative to the connection's root {root}" if problem else None

    def fetch(self, request: FetchRequest) -> FetchResult:
        stage = request.stage
        pattern = self._pattern(request)
        parsed = _Parsed()
        root = _static_root(pattern)
        confined = self._confine(pattern, stage)
        if confined is not None:
            pattern, root = confined
        for path in self._matching(pattern, root, stage):
            readable = self._inside(path)
            if readable is None:
                parsed.outside.append(_display(path, root))
                continue
            try:
                self._read(path, root, parsed, stage, readable)
            except FileNotFoundError:
                continue  # rotated away between the glob and the open: its lines are in the next file
            except OSError as exc:
                raise self.error(SourceQueryError, f"cannot read {path}", stage, exc) from exc
        if parsed.unparsed > len(parsed.notes):
            parsed.notes.append(f"... and {parsed.unparsed - len(parsed.notes)} more unparsed lines")
        if parsed.outside:
            shown = ", ".join(parsed.outside[:5]) + (", ..." if len(parsed.outside) > 5 else "")
            parsed.notes.append(
                f"not read: {len(parsed.outside)} file(s) resolving outside the connection's root "
                f"(symbolic links are not followed out of it): {shown}"
            )
        records = filter_records(apply_select(parsed.records, stage.select), request.filters)
        return FetchResult(records, unparsed=parsed.unparsed, notes=parsed.notes)

    # -- finding files ---------------------------------------------------------------------------------
    def _pattern(self, request: FetchRequest) -> str:
        """The glob of this run: run parameters are data here too, so their own ``*?[`` match literally."""
        stage = request.stage
        template = FileRead.of(stage).path or self.options.path
        if not template:
            raise self.error(SourceQueryError, "no 'path': set it on the source or on the stage", stage, permanent=True)
        for name in param_names(template):
            value = str(request.params.get(name, ""))
            if ".." in Path(value).parts:
                raise self.error(
                    SourceQueryError, f"run parameter {{{name}}} may not contain '..'", stage, permanent=True
                )
        params = {name: glob.escape(str(value)) for name, value in request.params.items()}
        rendered = str(render(template, params))
        return rendered if self.options.root is not None else os.path.expanduser(rendered)

    # -- staying below the root ------------------------------------------------------------------------
    def _confine(self, pattern: str, stage: StageSpec) -> tuple[str, Path] | None:
        """The glob and its static root below the source's root, or None without a root.

        Raises when the root does not exist or when the rendered path (a run parameter may make it
        absolute) or its static root leaves the root.
        """
        root = self.options.root
        if root is None:
            return None
        if not os.path.isdir(root):
            what = "is not a directory" if os.path.exists(root) else "does not exist"
            raise self.error(SourceQueryError, f"the connection's root {root} {what}", stage, permanent=True)
        problem = _escape(pattern)
        if problem:
            message = f"path {pattern!r} {problem}; paths are relative to the connection's root {root}"
            raise self.error(SourceQueryError, message, stage, permanent=True)
        static = Path(root, _static_root(pattern))
        if not _within(os.path.realpath(static), os.path.realpath(root)):
            message = f"{_display(static, Path(root))} leads outside the connection's root (a symbolic link?)"
            raise self.error(SourceQueryError, message, stage, permanent=True)
        return os.path.join(glob.escape(root), pattern), static

    def _inside(self, path: Path) -> Path | None:
        """The real path to open for ``path``: itself without a root; None when it resolves outside it."""
        root = self.options.root
        if root is None:
            return path
        real = os.path.realpath(path)
        return Path(real) if _within(real, os.path.realpath(root)) else None

    def _matching(self, pattern: str, root: Path, stage: StageSpec) -> list[Path]:
        """The files matching, sorted; none when the directory does not exist yet."""
        try:
            root.stat()
            if root.is_dir():
                with os.scandir(root):
                    pass
        except (FileNotFoundError, NotADirectoryError):
            return []
        except PermissionError as exc:
            # glob() would silently find nothing in a directory it may not list
            raise self.error(SourceQueryError, f"cannot read directory {root}", stage, exc, permanent=True) from exc
        return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))

    # -- parsing ---------------------------------------------------------------------------------------
    def _read(self, path: Path, root: Path, parsed: _Parsed, stage: StageSpec, readable: Path) -> None:
        """Parse ``path`` (opened as ``readable``, its checked real path under a root) into ``parsed``."""
        name = _display(path, root)
        kind = self._format(path, stage)
        gzipped = path.suffix.lower() == ".gz"
        try:
            with gzip.open(readable, "rb") if gzipped else readable.open("rb") as stream:
                if kind == "jsonl":
                    self._jsonl(stream, name, parsed)
                else:
                    self._csv(stream, name, path, parsed, stage)
        except EOFError:
            parsed.notes.append(f"{name}: compressed data ends early (still being written?)")
        except (gzip.BadGzipFile, zlib.error) as exc:
            parsed.problem(name, f"not readable as gzip ({exc})")

    def _format(self, path: Path, stage: StageSpec) -> str:
        if self.options.format != "auto":
            return self.options.format
        plain = path.with_suffix("") if path.suffix.lower() == ".gz" else path
        kind = _FORMATS.get(plain.suffix.lower())
        if kind is None:
            raise self.error(
                SourceQueryError,
                f"cannot tell the format of {path.name}: set format: jsonl or csv",
                stage,
                permanent=True,
            )
        return kind

    def _jsonl(self, stream: Iterable[bytes], name: str, parsed: _Parsed) -> None:
        encoding = self.options.encoding
        for number, raw in enumerate(stream, 1):
            complete = raw.endswith(b"\n")
            try:
                line = raw.decode(encoding).strip()
            except UnicodeDecodeError:
                if complete:
                    parsed.problem(f"{name} line {number}", f"not valid {encoding}")
                continue
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                if complete:
                    parsed.problem(f"{name} line {number}", "not valid JSON")
                continue
            if isinstance(value, dict):
                parsed.records.append(value)
            else:
                parsed.problem(f"{name} line {number}", f"not a JSON object but {type(value).__name__}")

    def _csv(self, stream: Iterable[bytes], name: str, path: Path, parsed: _Parsed, stage: StageSpec) -> None:
        """Values stay text: comparison reads ``"25.50"`` as the number it is."""
        delimiter = self.options.delimiter
        if self.options.format == "auto" and delimiter == "," and ".tsv" in path.suffixes:
            delimiter = "\t"
        lines = _Lines(stream, self.options.encoding)
        reader = csv.reader(lines, delimiter=delimiter)
        header: list[str] | None = None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                message = f"{path} is not {self.options.encoding}: set the source's encoding"
                raise self.error(SourceQueryError, message, stage, exc, permanent=True) from exc
            except csv.Error as exc:
                parsed.problem(f"{name} line {reader.line_num}", str(exc))
                continue
            if header is None:
                header = [row[0].lstrip("\ufeff"), *row[1:]] if row else None
            elif len(row) == len(header):
                parsed.records.append(dict(zip(header, row, strict=True)))
            elif row and (lines.complete or len(row) > len(header)):
                what = f"{len(row)} fields where the header has {len(header)}"
                parsed.problem(f"{name} line {reader.line_num}", what)


class _Lines:
    """The text lines of a binary stream, remembering whether the last one read ended with a newline."""

    def __init__(self, stream: Iterable[bytes], encoding: str) -> None:
        self._stream = stream
        self._encoding = encoding
        self.complete = True

    def __iter__(self) -> Iterator[str]:
        for raw in self._stream:
            self.complete = raw.endswith(b"\n")
            yield raw.decode(self._encoding)


def _escape(path: str) -> str | None:
    """Why ``path`` would not stay relative to a root (absolute, ``~``, a ``..`` part), or None."""
    if path.startswith("~"):
        return "starts with '~'"
    if os.path.isabs(path):
        return "is absolute"
    if ".." in Path(path).parts:
        return "has a '..' part"
    return None


def _within(real: str, root: str) -> bool:
    """Whether the resolved path ``real`` is the resolved directory ``root`` or below it."""
    return real == root or os.path.commonpath([real, root]) == root


def _display(path: Path, root: Path) -> str:
    """How notes and messages name a file: relative to the glob's static root when below it."""
    return str(path.relative_to(root)) if path != root and root in path.parents else path.name


def _static_root(pattern: str) -> Path:
    """The part of a glob before its first wildcard: the directory that must be readable."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if _MAGIC.search(part):
            break
        parts.append(part)
    if len(parts) == len(Path(pattern).parts):
        parts = parts[:-1]  # no wildcard: the pattern is one file, its directory is the root
    return Path(*parts) if parts else Path(".")

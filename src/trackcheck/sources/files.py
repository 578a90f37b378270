"""Reading a stage from files a collector writes: JSON Lines or CSV, plain or gzipped, found by a glob.

Files are read while they are still being written, rotated or not there yet, so "nothing there" is zero
records, not an error: the stage simply waits. A line that cannot be parsed is counted and described in the
result, never fatal, except the last line of a file without its newline: it is still being written. Only
what says the source is misconfigured (a directory or file trackcheck may not read, an undecodable CSV)
raises.
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import field_validator

from trackcheck.errors import SourceQueryError
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


class FileOptions(SourceOptions):
    """``sources.<name>`` of ``type: file``; a stage's own ``path`` replaces ``path``."""

    path: str | None = None
    format: Literal["jsonl", "csv", "auto"] = "auto"
    encoding: str = "utf-8"
    delimiter: str = ","

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

    def problem(self, where: str, what: str) -> None:
        self.unparsed += 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{where}: {what}")


class FileSource(Source):
    """Every file matching a glob, read in name order at each fetch."""

    type_name = "file"
    options_model = FileOptions
    stage_keys: ClassVar[frozenset[str]] = frozenset({"path"})
    options: FileOptions

    def fetch(self, request: FetchRequest) -> FetchResult:
        stage = request.stage
        pattern = self._pattern(request)
        parsed = _Parsed()
        root = _static_root(pattern)
        for path in self._matching(pattern, root, stage):
            try:
                self._read(path, root, parsed, stage)
            except FileNotFoundError:
                continue  # rotated away between the glob and the open: its lines are in the next file
            except OSError as exc:
                raise self.error(SourceQueryError, f"cannot read {path}", stage, exc) from exc
        if parsed.unparsed > len(parsed.notes):
            parsed.notes.append(f"... and {parsed.unparsed - len(parsed.notes)} more unparsed lines")
        records = filter_records(apply_select(parsed.records, stage.select), request.filters)
        if request.limit is not None:
            records = records[: request.limit]
        return FetchResult(records, unparsed=parsed.unparsed, notes=parsed.notes)

    # -- finding files ---------------------------------------------------------------------------------
    def _pattern(self, request: FetchRequest) -> str:
        """The glob of this run: run parameters are data here too, so their own ``*?[`` match literally."""
        stage = request.stage
        template = stage.path or self.options.path
        if not template:
            raise self.error(SourceQueryError, "no 'path': set it on the source or on the stage", stage)
        for name in param_names(template):
            value = str(request.params.get(name, ""))
            if ".." in Path(value).parts:
                raise self.error(SourceQueryError, f"run parameter {{{name}}} may not contain '..'", stage)
        params = {name: glob.escape(str(value)) for name, value in request.params.items()}
        return os.path.expanduser(str(render(template, params)))

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
            raise self.error(SourceQueryError, f"cannot read directory {root}", stage, exc) from exc
        return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))

    # -- parsing ---------------------------------------------------------------------------------------
    def _read(self, path: Path, root: Path, parsed: _Parsed, stage: StageSpec) -> None:
        name = str(path.relative_to(root)) if path != root and root in path.parents else path.name
        kind = self._format(path, stage)
        gzipped = path.suffix.lower() == ".gz"
        try:
            with gzip.open(path, "rb") if gzipped else path.open("rb") as stream:
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
                SourceQueryError, f"cannot tell the format of {path.name}: set format: jsonl or csv", stage
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
                raise self.error(SourceQueryError, message, stage, exc) from exc
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

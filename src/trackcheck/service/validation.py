"""What the service accepts from a request, for the API and the dashboard alike: text that every state
database can store and every log line can show, JSON bounded in depth and in its numbers, and names in URLs
that fit their column. Hostile input ends in a clear 400 naming the key, never in a 500 or a 503.

- Text holds no NUL character (PostgreSQL refuses it in text and JSON) and no lone surrogate (``"\\ud800"``
  in JSON: no database, and no UTF-8 answer, can encode it).
- A JSON body nests at most ``MAX_DEPTH`` levels, checked before it is parsed (a deeper one would exhaust
  the parser's recursion); its integers fit 64 bits and its numbers are finite.
- A name or id in a URL is at most ``MAX_NAME`` characters (the widest name column, ``tc_plans.name``) and
  holds no control character: a newline would forge log lines.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

MAX_DEPTH = 32
MAX_NAME = 200
MAX_INT = 2**63 - 1
#: the largest page offset (and version number) the API takes: far beyond any real history, and well
#: inside every database's integer
MAX_OFFSET = 10**9

_SURROGATE = re.compile("[\ud800-\udfff]")
#: a JSON string, to be skipped (brackets inside it do not nest); an unterminated one runs to the end, so
#: the scan stays linear whatever the text
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class InputError(ValueError):
    """A request value the service refuses: ``where`` names it (``params.test_id``, ``expect[0]``)."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}" if where else problem)


def _codepoint(char: str) -> str:
    return f"U+{ord(char):04X}"


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as its escape (``\\ud800``): fit to show, encode, log."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def text_problem(text: str, *, controls: bool = False) -> str | None:
    """Why ``text`` cannot be stored or shown as it is (None if it can): a NUL character, a lone surrogate,
    and with ``controls`` any control character (tab and newline included)."""
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        return (
            f"contains a lone surrogate ({surrogate.group().encode('unicode_escape').decode()}), which is not "
            "Unicode text: send valid UTF-16 pairs or the character itself"
        )
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which no state database stores"
    if controls:
        control = next((c for c in text if unicodedata.category(c) == "Cc"), None)
        if control is not None:
            return f"contains the control character {_codepoint(control)}"
    return None


def name_problem(name: str, *, limit: int = MAX_NAME) -> str | None:
    """Why ``name`` (a plan, run, stage, schedule or connection named in a URL) is refused, or None."""
    if len(name) > limit:
        return f"is {len(name)} characters long; at most {limit} are allowed"
    return text_problem(name, controls=True)


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_value(value: Any, where: str = "", depth: int = 0) -> None:
    """Refuse (``InputError`` naming the place) what no state database can store: text with a NUL or a lone
    surrogate (in keys too), integers beyond 64 bits, infinite numbers, nesting beyond ``MAX_DEPTH``."""
    if depth > MAX_DEPTH:
        raise InputError(where, f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise InputError(where, problem)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise InputError(where, f"the integer {_short(value)} does not fit in 64 bits (at most {MAX_INT})")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(where, "the number is too large (not a finite 64-bit float)")
    elif isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key)
            problem = text_problem(key_text)
            if problem is not None:
                raise InputError(where, f"a key {problem}")
            check_value(item, _key(where, key_text), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_value(item, f"{where}[{index}]", depth + 1)


def _short(value: int) -> str:
    digits = str(value)
    return digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"


def nesting_depth(text: str) -> int:
    """How deep the brackets of JSON ``text`` nest, counted without parsing it (in linear time)."""
    brackets = _BRACKET.findall(_JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, where: str = "") -> Any:
    """``text`` as JSON that every state database can store; ``InputError`` (depth, text, numbers) or
    ``ValueError`` (not JSON) otherwise."""
    if nesting_depth(text) > MAX_DEPTH:
        raise InputError(where, f"the JSON is nested more than {MAX_DEPTH} levels deep")
    value = json.loads(text, parse_constant=_reject_constant)
    check_value(value, where)
    return value


def url_problem(path_parts: Mapping[str, Any] | None, query: Iterable[tuple[str, str]]) -> str | None:
    """Why a request's URL is refused, or None: a part of its path (``view_args``) that is not a name, or a
    query parameter holding a NUL character. Checked before anything logs the path or looks it up."""
    for key, value in (path_parts or {}).items():
        problem = name_problem(value) if isinstance(value, str) else None
        if problem is not None:
            return f"{key} (in the URL) {problem}"
    for key, value in query:
        problem = text_problem(key) or text_problem(value)
        if problem is not None:
            return f"query parameter {_short_text(key)!r} {problem}"
    return None


def _short_text(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."

"""The runs search's query (``name=value`` or a bare value) as typed: what it finds is tested on every
state database in tests/integration/test_plan_history.py; here, that a query it cannot read says why."""

from __future__ import annotations

import re

import pytest

from trackcheck.store.history import ParamQuery


@pytest.mark.parametrize(
    ("query", "name", "value"),
    [("test_id=t-42", "test_id", "t-42"), (" t-42 ", None, "t-42"), ("url=a=b", "url", "a=b"), ("n = 7", "n", "7")],
)
def test_a_search_is_a_name_and_value_or_a_bare_value(query: str, name: str | None, value: str) -> None:
    assert ParamQuery.parse(query) == ParamQuery(name, value)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("", "is empty"),
        ("  ", "is empty"),
        ("=t-1", "'' is not a parameter name"),
        ("test id=t-1", "'test id' is not a parameter name"),
        ('a"b=1', "'a\"b' is not a parameter name"),
        ("1st=x", "'1st' is not a parameter name"),
        ("test_id=", "has no value after test_id="),
        ("x" * 201, "at most 200"),
    ],
)
def test_a_search_that_cannot_be_read_says_why(query: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        ParamQuery.parse(query)

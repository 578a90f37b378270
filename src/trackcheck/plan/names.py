"""The names a plan gives: the plan's own, and its stages', sources' and run parameters'.

Names travel further than any other plan text: into the state database's columns, URLs, log lines, metric
labels and every message. So they are bounded in length (``PlanLimits``) and in what they may hold.
"""

from __future__ import annotations

import re
import unicodedata

from trackcheck.plan.limits import DEFAULT_LIMITS, PlanLimits

#: run parameters (``{test_id}``) and ``where`` fields
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: stage and source names: they appear in field paths (``sources.<name>.url``), URLs and metric labels
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_plan_name(value: str, limits: PlanLimits = DEFAULT_LIMITS) -> str:
    """``value`` if it can name a plan, else a ValueError saying why.

    A plan's name is stored (String(200)), shown, logged and used as one URL path segment
    (``/api/plans/<name>``): any printable text without ``/`` and without leading or trailing spaces, so
    that a name can neither forge a log line (newlines, control characters) nor hide (format characters)."""
    if not value:
        raise ValueError("a plan needs a name")
    if len(value) > limits.max_plan_name_chars:
        raise ValueError(
            f"a name of {len(value)} characters is longer than {limits.max_plan_name_chars} (max_plan_name_chars)"
        )
    bad = next((c for c in value if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"the name holds the control character {bad!r}: use printable characters only")
    if value != value.strip():
        raise ValueError("the name starts or ends with a space")
    if "/" in value:
        raise ValueError("the name holds '/': the API addresses a plan as /api/plans/<name>")
    return value


def check_name(value: str, what: str, pattern: re.Pattern[str], rule: str, limits: PlanLimits = DEFAULT_LIMITS) -> str:
    """``value`` if it is at most ``max_name_chars`` long and matches ``pattern``; else a ValueError naming
    ``what`` it is (``stage name``...) and the ``rule``."""
    if len(value) > limits.max_name_chars:
        shown = repr(value[:40]) + "…"
        raise ValueError(f"{what} {shown} is longer than {limits.max_name_chars} characters (max_name_chars)")
    if not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not a {what}: {rule}")
    return value

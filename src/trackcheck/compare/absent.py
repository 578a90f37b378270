"""``absent``: nothing may arrive at a stage (events of an opted-out user, PII that must not reach the warehouse)."""

from __future__ import annotations

from trackcheck.compare.checks import Check, Record, display_keys, listing, plural, show
from trackcheck.compare.result import Comparison
from trackcheck.plan.model import AbsentSpec


class AbsentCheck(Check[AbsentSpec]):
    """Every record found (the stage's ``where`` picked it for the run) is one that must not exist: the
    verdict is ``failed`` at the first one, its key listed in ``unexpected``. While nothing is found the
    verdict is ``waiting``: the check cannot know for how long nothing arrived. The engine passes the stage
    once ``for`` has gone by since the stage started with nothing found (``engine.outcome.decide``).

    The reference is not used (an ``absent`` stage names none).
    """

    name = "absent"

    def evaluate(self, found: list[Record], reference: list[Record]) -> Comparison:
        if not found:
            return Comparison(verdict="waiting", expected=0, found=0, reason="nothing arrived that must not")
        keys = display_keys(found, self.key)
        return Comparison(
            verdict="failed",
            expected=0,
            found=len(found),
            unexpected=keys,
            reason=(
                f"{plural(len(keys), 'record')} arrived that must not: "
                f"{'key' if len(keys) == 1 else 'keys'} {listing(len(keys), map(show, keys))}"
            ),
        )

"""--max-bad-rows: how many bad records a run may set aside before it stops (exit 3)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError, InputError

_BUDGET = re.compile(r"^\s*(?:(\d+)|(\d+(?:\.\d*)?|\.\d+)\s*%)\s*$")


@dataclass(frozen=True)
class Budget:
    count: int | None = None  # at most this many bad records
    share: float | None = None  # at most this share (0..1) of the records read

    def describe(self) -> str:
        return f"{self.count:,}" if self.count is not None else f"{(self.share or 0) * 100:g}% of the records read"

    def over(self, bad: int, records: int, final: bool) -> bool:
        """Is `bad` out of `records` over the budget? A share is judged over every record of the run (`final`):
        the first thousand records say little about the next million."""
        if self.count is not None:
            return bad > self.count
        assert self.share is not None
        return final and bad > self.share * records


def parse_budget(text: str | int) -> Budget:
    """'1000' (a count) or '0.5%' (a share of the records read)."""
    match = _BUDGET.match(str(text))
    if match is None:
        raise ConfigError(f"--max-bad-rows {text!r} is neither a count nor a percentage; pass e.g. 1000 or 0.5%.")
    if match.group(1) is not None:
        return Budget(count=int(match.group(1)))
    share = float(match.group(2)) / 100
    if share > 1:
        raise ConfigError(f"--max-bad-rows {text} is over 100%; pass a percentage from 0% to 100%.")
    return Budget(share=share)


def over_budget(bad: int, budget: Budget, records: int, kinds: dict[str, int], place: str) -> InputError:
    """The error that stops a run whose bad records are over the budget (exit 3); what is committed stays."""
    listed = ", ".join(f"{n:,} {k}" for k, n in sorted(kinds.items()))
    return InputError(
        f"{bad:,} bad records ({listed}) of {records:,} read, over --max-bad-rows {budget.describe()}; they are "
        f"in {place}. What was scored is committed: fix the input, or rerun with a larger --max-bad-rows to "
        "go on from here."
    )

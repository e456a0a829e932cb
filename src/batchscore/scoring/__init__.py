"""The scoring core: a chunk of rows in, its result columns and counts out, one stage per module.

    rules       what is scored and how results are named, known before any model loads
    cache_step  (with --cache) each text looked up first; only the texts the cache lacks go on
    encode      texts or their windows (windows, prefixes) -> length-sorted token-budget batches
    load, run   the model loaded once (cpu: threads, allocator, int8); batches -> logits in row order
    heads       logits -> labels and scores, windows folded into rows
    stats       a chunk's counts for its part's footer
    core        the stages wired once (`ScoringCore`); seam: the `Scorers` its callers see, `open_scorers`
    feed        the DataLoader's side: each chunk read and put through the workers' step

Callers import from here; nothing heavy is imported until used.
"""

from .rules import CLI_HINTS, LIBRARY_HINTS, ColumnHints, ScoringRules, not_text, rules_for
from .seam import Scorers, open_scorers

__all__ = [
    "CLI_HINTS",
    "LIBRARY_HINTS",
    "ColumnHints",
    "Scorers",
    "ScoringRules",
    "not_text",
    "open_scorers",
    "rules_for",
]

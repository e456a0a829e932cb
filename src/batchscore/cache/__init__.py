"""The result cache: each text scored once per scoring identity, shared by shards and runs (docs/cache.md)."""

from .scoring import CachedScorers, refuse_window_scores, scoring_identity
from .store import ResultCache

__all__ = ["CachedScorers", "ResultCache", "refuse_window_scores", "scoring_identity"]

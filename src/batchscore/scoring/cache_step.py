"""The cache step: a chunk's texts looked up in the result cache before encoding, only the texts it lacks
encoded and scored (each distinct text once), and their new scores added after the run.

A row's result columns are built from its cached scores by the same `ModelScorer.columns` that builds them from
fresh ones, so the output has the same rows, order and columns either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..cache.files import FORMAT
from ..cache.keys import text_keys, unique_keys
from ..cache.store import CacheScope
from ..errors import ConfigError
from .heads import RowScores
from .identity import cache_part

if TYPE_CHECKING:
    from ..cache.store import CachedScores, ResultCache
    from ..config import ModelSpec
    from ..plan import Chunk
    from .models import ModelScorer


def refuse_window_scores(specs: Sequence[ModelSpec]) -> None:
    if any(spec.window_scores for spec in specs):
        raise ConfigError("--cache keeps each row's scores, not each window's: leave out --window-scores, or --cache.")


@dataclass
class ReadChunk:
    """A chunk as a DataLoader worker read it, text column included: under a cache, it is encoded after the
    lookup, and then only the texts the cache lacks."""

    read: Chunk
    out_columns: list[str]

    @property
    def chunk(self) -> Chunk:
        return self.read.select(self.out_columns)

    def pin_memory(self) -> ReadChunk:
        return self


@dataclass(frozen=True)
class LookupFirst:
    """The DataLoader workers' step under a cache: pass each chunk on as read."""

    def encode(self, chunk: Chunk, out_columns: Sequence[str]) -> ReadChunk:
        return ReadChunk(chunk, list(out_columns))


@dataclass
class Lookup:
    """One chunk's texts in the cache: the distinct texts, which the models lack, and which rows need the model."""

    distinct: np.ndarray  # the distinct texts' keys
    first: np.ndarray  # each distinct text's first row (among the rows with text)
    inverse: np.ndarray  # each row with text -> its distinct text
    found: list[CachedScores]  # per model: what the cache holds of each distinct text
    wanted: np.ndarray  # the distinct texts to score, in the order of their first rows

    @property
    def rows_scored(self) -> int:
        need = np.zeros(len(self.distinct), bool)
        need[self.wanted] = True
        return int(need[self.inverse].sum())


class CacheStep:
    """The result cache in front of a run's models: one scope (identity) per model."""

    def __init__(self, cache: ResultCache, models: list[ModelScorer]):
        self.cache = cache
        self.scopes: list[CacheScope] = [
            cache.scope(
                cache_part(model, FORMAT),
                len(model.labels),
                {"model": model.model_id, "revision": model.loaded.revision},
            )
            for model in models
        ]
        self.skipped_seen = 0

    def lookup(self, texts: list[str]) -> Lookup:
        """The texts' entries, per model; a text is scored again when any model lacks it."""
        distinct, first, inverse = unique_keys(text_keys(texts))
        found = [scope.lookup(distinct) for scope in self.scopes]
        need = ~np.logical_and.reduce([f.hit for f in found]) if found else np.zeros(len(distinct), bool)
        # In the order of their first rows: with nothing cached, the model sees the chunk's rows as it would
        # without a cache, so the batches, and the scores bit for bit, are the same.
        wanted = np.flatnonzero(need)
        wanted = wanted[np.argsort(first[wanted], kind="stable")]
        return Lookup(distinct, first, inverse, found, wanted)

    def misses(self, read: Chunk, text_column: str, lookup: Lookup, positions: np.ndarray) -> Chunk:
        """The chunk of the texts to score: each wanted text once, at its first row."""
        from ..plan import Chunk

        rows = positions[lookup.first[lookup.wanted]]
        return Chunk(read.index, read.start, read.table.select([text_column]).take(rows), 0)

    def add(self, lookup: Lookup, fresh: list[RowScores]) -> None:
        """Each model's new scores into its scope (held, written by `flush` or when enough are held) and into
        the lookup, for the chunk's rows."""
        wanted = lookup.wanted
        for scope, hit, rows in zip(self.scopes, lookup.found, fresh):
            new = ~hit.hit[wanted]  # texts this model had no entry for (another model's miss scores all)
            counts = np.ones(len(rows.scores), np.int32) if rows.windows is None else rows.windows
            scope.add(lookup.distinct[wanted[new]], rows.scores[new], counts[new], rows.truncated[new])
            hit.scores[wanted[new]] = rows.scores[new]
            hit.windows[wanted[new]] = counts[new]
            hit.truncated[wanted[new]] = rows.truncated[new]

    def rows(self, lookup: Lookup, number: int, valid: np.ndarray, windowed: bool, labels: int) -> RowScores:
        """Model `number`'s scores for every row of the chunk, from the lookup. Every row counts its text's
        truncation and windows, repeats too, as a run without the cache does."""
        hit, positions = lookup.found[number], np.flatnonzero(valid)
        scores = np.zeros((len(valid), labels), np.float32)
        scores[positions] = hit.scores[lookup.inverse]
        windows = np.zeros(len(valid), np.int32)
        windows[positions] = hit.windows[lookup.inverse]
        truncated = np.zeros(len(valid), np.int64)
        truncated[positions] = hit.truncated[lookup.inverse]
        return RowScores(scores, truncated, windows if windowed else None)

    @property
    def skipped(self) -> dict[str, str]:
        """Damaged cache files skipped so far, and why."""
        return {path: why for scope in self.scopes for path, why in scope.skipped.items()}

    def new_skips(self) -> int:
        """Damaged cache files first met since the last call (so the manifest's sum counts each once per process)."""
        total = len(self.skipped)
        new, self.skipped_seen = total - self.skipped_seen, total
        return new

    def flush(self) -> list[str]:
        """Add every model's held new entries to the cache; the messages of the writes it refused (full,
        read-only), each counted on its scope and never raised (`CacheScope.try_flush`): one model's refused
        write does not cost the others theirs."""
        return [refused for refused in map(CacheScope.try_flush, self.scopes) if refused is not None]

    @property
    def write_failures(self) -> int:
        return sum(len(scope.write_failures) for scope in self.scopes)

    def summary(self) -> dict[str, Any]:
        return {
            "cache": self.cache.spec,
            "identities": [scope.key for scope in self.scopes],
            "entries_added": sum(scope.added for scope in self.scopes),
        }

"""Stats: what a chunk's scoring counts, for its part's footer (the manifest sums them over parts).

Typed records rather than dicts built in three places: a model's counts, and a chunk's (its rows, its first
model's counts as the top level, every model's with several, and where the rows came from with a cache).
An empty chunk's stats have every key with nothing counted: a shard that scored no chunk still reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .heads import LABELS, NONE, SIGMOID

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(kw_only=True)
class ModelCounts:
    """One model's counts over a chunk's rows."""

    truncated_rows: int = 0  # rows with text tokens never scored
    truncated_tokens: int = 0
    windows: int = 0  # --long-text window: windows scored
    windowed_rows: int = 0  # rows of more than one window
    real_tokens: int = 0  # tokens the model saw, padding excluded (0 for rows from the cache)
    padded_tokens: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)  # what the head adds: labels_counts, or values

    def rows_from(self, truncated: np.ndarray, windows: np.ndarray | None) -> ModelCounts:
        """These counts with the truncation and window counts summed from each row's own (the same whether a row
        was scored or taken from the result cache)."""
        self.truncated_rows = int((truncated > 0).sum())
        self.truncated_tokens = int(truncated.sum())
        self.windows = 0 if windows is None else int(windows.sum())
        self.windowed_rows = 0 if windows is None else int((windows > 1).sum())
        return self

    def as_dict(self) -> dict[str, Any]:
        own = {k: v for k, v in self.__dict__.items() if k != "head"}
        return own | self.head


def head_counts(function: str, prefix: str | None, results: dict[str, pa.Array] | None) -> dict[str, Any]:
    """What a head's results add to a part's counts: a multi-label head counts every label over the threshold
    (`labels_counts`); a regression head's scores are values, summarized by count, min, max and sum (their
    quantiles cannot be summed over parts: the manifest computes them from the parts' score column)."""
    import pyarrow.compute as pc

    prefix = prefix or ""
    if function == SIGMOID:
        return {"labels_counts": {} if results is None else value_counts(pc.list_flatten(results[prefix + LABELS]))}
    if function != NONE:
        return {}
    score = prefix + "score"
    values = np.zeros(0, np.float32) if results is None else results[score].drop_null().to_numpy()
    found = len(values) > 0
    return {
        "values": {
            "column": score,
            "count": len(values),
            "min": float(values.min()) if found else None,
            "max": float(values.max()) if found else None,
            "sum": float(values.sum(dtype=np.float64)),
        }
    }


def value_counts(values: pa.Array) -> dict[str, int]:
    """How often each string occurs, counted in Arrow, not row by row in Python."""
    import pyarrow.compute as pc

    return {str(v["values"]): v["counts"] for v in pc.value_counts(values).to_pylist()}


@dataclass(kw_only=True)
class ModelEntry:
    """One model of a run of several, as its chunk stats list it."""

    model: str
    prefix: str | None
    tokens_from: int  # the first model whose encoding it shared
    seconds: float
    counts: ModelCounts


@dataclass(kw_only=True)
class CacheCounts:
    """Where a chunk's rows came from, under a result cache."""

    rows_from_cache: int = 0
    rows_scored: int = 0
    distinct_texts_scored: int = 0
    cache_files_skipped: int = 0  # damaged cache files first met in this chunk


@dataclass(kw_only=True)
class ChunkStats:
    """A chunk's counts: its rows, the first model's counts, each model's (several), the cache's (with one)."""

    rows: int = 0
    empty_text_rows: int = 0
    first: ModelCounts = field(default_factory=ModelCounts)
    tokenizations: int = 0  # distinct encodings of the chunk's texts
    models: list[ModelEntry] | None = None  # several models only
    cache: CacheCounts | None = None

    def as_footer(self) -> dict[str, Any]:
        """The counts as a part's footer holds them."""
        footer = {"rows": self.rows, "empty_text_rows": self.empty_text_rows, **self.first.as_dict()}
        footer["tokenizations"] = self.tokenizations
        if self.models is not None:
            footer["models"] = [
                {
                    "model": each.model,
                    "prefix": each.prefix,
                    "tokens_from": each.tokens_from,
                    "seconds": round(each.seconds, 3),
                    **each.counts.as_dict(),
                }
                for each in self.models
            ]
        if self.cache is not None:
            footer |= self.cache.__dict__
        return footer

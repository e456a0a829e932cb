"""Scoring through the result cache: a chunk's texts are looked up first, and only the texts the cache lacks are
tokenized and scored, each distinct text once.

The DataLoader hands over chunks as read (`AsRead`): which texts need the model is known only after the
lookup, in this process. A row's result is rebuilt from its cached scores by the same `ChunkScorer.columns` that
builds it from fresh ones, so the output has the same rows, order and columns either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ConfigError
from .keys import text_keys, unique_keys
from .store import FORMAT, CacheScope, ResultCache

if TYPE_CHECKING:
    import pyarrow as pa

    from ..plan import Chunk
    from ..scoring import ChunkScorer, ChunkScorers, ChunkWorks, OnBatch


def scoring_identity(scorer: ChunkScorer) -> dict[str, Any]:
    """Everything that changes a row's scores: the model by content (its tokenizer files included), its labels
    and head function, the max length, the precision and the device kind (bf16 on a GPU and on a CPU differ),
    and the long-text options. top_k and the threshold only choose from the kept scores; the batch size only
    regroups rows (see docs/cache.md for what that changes)."""
    from ..output.identity import model_fingerprint

    loaded, rules = scorer.loaded, scorer.rules
    identity: dict[str, Any] = {
        "format": FORMAT,
        "model": model_fingerprint(loaded.model_id, loaded.revision),
        "labels": list(loaded.labels),
        "head": scorer.function,
        "max_length": loaded.max_length,
        "precision": loaded.precision,
        "device": loaded.device.type,
    }
    if rules.windowed:
        identity["long_text"] = {
            "window_overlap": rules.window_overlap,
            "aggregate": rules.aggregate,
            "max_windows": rules.max_windows,
        }
    return identity


def refuse_window_scores(specs: Sequence[Any]) -> None:
    if any(getattr(spec, "window_scores", False) for spec in specs):
        raise ConfigError("--cache keeps each row's scores, not each window's: leave out --window-scores, or --cache.")


@dataclass
class AsRead:
    """A chunk as the DataLoader read it, text column included; tokenized later, misses only."""

    read: Chunk
    out_columns: list[str]

    @property
    def chunk(self) -> Chunk:
        from ..plan import Chunk

        read = self.read
        return Chunk(read.index, read.start, read.table.select(self.out_columns), read.rows_read)

    def pin_memory(self) -> AsRead:
        return self


@dataclass(frozen=True)
class Unencoded:
    """The DataLoader's encoder under a cache: passes chunks on as read."""

    def encode(self, chunk: Chunk, out_columns: Sequence[str]) -> AsRead:
        return AsRead(chunk, list(out_columns))


@dataclass
class Looked:
    """One chunk's lookup: the rows with text, their distinct texts, and what was scored."""

    valid: np.ndarray  # bool per row of the chunk
    rows_from_cache: int = 0
    rows_scored: int = 0
    distinct_texts_scored: int = 0
    scored: ChunkWorks | None = None  # the encoded misses (None: nothing to score)
    # Per model, per row of the chunk: its truncated tokens and (--long-text window) its windows, cached or fresh.
    counts: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)


class CachedScorers:
    """`ChunkScorers` with a result cache in front: the same interface the job and `Scorer` use."""

    def __init__(self, scorers: ChunkScorers, cache: ResultCache):
        self.core = scorers
        self.cache = cache
        self.scopes: list[CacheScope] = [
            cache.scope(
                scoring_identity(scorer),
                len(scorer.labels),
                {"model": scorer.loaded.model_id, "revision": scorer.loaded.revision},
            )
            for scorer in scorers.scorers
        ]
        self.encoder = Unencoded()
        self.last: Looked | None = None
        self.skipped_seen = 0

    # What the job reads of its scorers.
    @property
    def scorers(self) -> list[ChunkScorer]:
        return self.core.scorers

    @property
    def first(self) -> ChunkScorer:
        return self.core.first

    @property
    def fields(self) -> list[pa.Field]:
        return self.core.fields

    @property
    def on_gpu(self) -> bool:
        return self.core.on_gpu

    @property
    def batch_tokens(self) -> int:
        return self.core.batch_tokens

    @property
    def skipped(self) -> dict[str, str]:
        """Damaged cache files skipped so far, and why."""
        return {path: why for scope in self.scopes for path, why in scope.skipped.items()}

    def score_texts(self, texts: pa.Table) -> dict[str, pa.Array]:
        from ..plan import Chunk

        return self.score(AsRead(Chunk(0, 0, texts), []))

    def score(self, work: AsRead, on_batch: OnBatch | None = None) -> dict[str, pa.Array]:
        """Every model's result columns for a chunk as read: cached results where the cache has them, the rest
        scored (each distinct text once) and added to the cache."""
        import pyarrow as pa

        from ..batches import text_mask
        from ..plan import Chunk

        core = self.core
        rules = core.first.rules
        table = work.read.table
        texts = table.column(rules.text_column)
        if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
            texts = texts.cast(pa.string())  # as the encoder does: numbers are scored as their text
        valid = text_mask(texts)
        positions = np.flatnonzero(valid)
        every = texts.to_pylist()
        keys = text_keys([every[i] for i in positions])
        del every
        distinct, first, inverse = unique_keys(keys)
        found = [scope.lookup(distinct) for scope in self.scopes]
        need = ~np.logical_and.reduce([f.hit for f in found]) if found else np.zeros(len(distinct), bool)
        looked = Looked(valid)
        looked.distinct_texts_scored = int(need.sum())
        looked.rows_scored = int(need[inverse].sum())
        looked.rows_from_cache = len(positions) - looked.rows_scored
        if need.any():
            # The texts to score in the order of their first rows: with nothing cached, the model sees the chunk's
            # rows as it would without a cache, so the batches, and the scores bit for bit, are the same.
            wanted = np.flatnonzero(need)
            wanted = wanted[np.argsort(first[wanted], kind="stable")]
            rows = positions[first[wanted]]
            misses = Chunk(work.read.index, work.read.start, table.select([rules.text_column]).take(rows), 0)
            looked.scored = core.encoder.encode(misses, [])
            fresh = core.each_model(
                lambda scorer, item, report: (*scorer.row_scores(item, report), item.truncated),
                looked.scored,
                on_batch,
            )
            for scope, hit, (scores, windows, truncated) in zip(self.scopes, found, fresh):
                new = ~hit.hit[wanted]  # texts this model had no entry for (another model's miss scores all)
                counts = np.ones(len(scores), np.int32) if windows is None else windows
                scope.add(distinct[wanted[new]], scores[new], counts[new], truncated[new])
                hit.scores[wanted[new]] = scores[new]
                hit.windows[wanted[new]] = counts[new]
                hit.truncated[wanted[new]] = truncated[new]
        self.last = looked
        columns: dict[str, pa.Array] = {}
        for scorer, hit in zip(core.scorers, found):
            scores = np.zeros((len(valid), len(scorer.labels)), np.float32)
            scores[positions] = hit.scores[inverse]
            windows = np.zeros(len(valid), np.int32)
            windows[positions] = hit.windows[inverse]
            # Every row counts its text's truncation and windows, repeats too, as a run without the cache does.
            truncated = np.zeros(len(valid), np.int64)
            truncated[positions] = hit.truncated[inverse]
            looked.counts.append((truncated, windows if scorer.rules.windowed else None))
            columns |= scorer.columns(scores, windows if scorer.rules.windowed else None, valid)
        return {f.name: columns[f.name] for f in self.fields}

    def chunk_stats(self, work: AsRead | None = None, results: dict | None = None) -> dict:
        """The counts of `ChunkScorers.chunk_stats`: tokens over the texts scored, truncation and windows over
        every row (from the cache or fresh, each repeat counted, as without the cache), the label counts over
        every row, and where the rows' results came from."""
        from ..scoring import row_counts

        looked = self.last if work is not None else None
        if work is None or looked is None or results is None:
            stats = self.core.chunk_stats()
            return stats | {"rows_from_cache": 0, "rows_scored": 0, "distinct_texts_scored": 0, **self._skips()}
        stats = self.core.chunk_stats(looked.scored, results) if looked.scored is not None else self._no_work(results)
        stats |= row_counts(*looked.counts[0])
        for each, counts in zip(stats.get("models", []), looked.counts):
            each |= row_counts(*counts)
        stats |= {
            "rows": work.read.num_rows,
            "empty_text_rows": int((~looked.valid).sum()),
            "rows_from_cache": looked.rows_from_cache,
            "rows_scored": looked.rows_scored,
            "distinct_texts_scored": looked.distinct_texts_scored,
            **self._skips(),
        }
        return stats

    def _no_work(self, results: dict) -> dict:
        """The stats of a chunk the cache answered whole: label counts from the results, no tokens."""
        import pyarrow as pa

        from ..batches import ChunkWork
        from ..plan import Chunk
        from ..scoring import ChunkWorks

        assert self.last is not None

        empty = ChunkWork(Chunk(0, 0, pa.table({})), self.last.valid)
        stats = self.core.chunk_stats(ChunkWorks([empty] * len(self.core.encoders)), results)
        return stats | {"tokenizations": 0}

    def _skips(self) -> dict:
        """Damaged cache files first met in this chunk (so the manifest's sum counts each once per process)."""
        total = len(self.skipped)
        new, self.skipped_seen = total - self.skipped_seen, total
        return {"cache_files_skipped": new}

    def flush(self) -> list[str]:
        """Add every model's held new entries to the cache; the messages of the writes it refused (full,
        read-only), each counted on its scope and never raised (`CacheScope.try_flush`): one model's refused
        write does not cost the others theirs."""
        return [refused for refused in map(CacheScope.try_flush, self.scopes) if refused is not None]

    def summary(self) -> dict[str, Any]:
        return {
            "cache": self.cache.spec,
            "identities": [scope.key for scope in self.scopes],
            "entries_added": sum(scope.added for scope in self.scopes),
        }

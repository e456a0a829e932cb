"""The scoring core: a run's models over each chunk, wired once for every caller.

Per chunk: (cache lookup) -> encode -> run each model -> (cache add) -> result columns -> stats. Without a cache
the DataLoader workers encode each chunk; with one they pass it on as read, and the lookup decides what is
encoded. Models whose encoders are alike share one encoding of each chunk; on CPU several models run side by
side, each on its share of the cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from .cache_step import CacheStep, LookupFirst, ReadChunk
from .encode import ChunkEncodings, Encoder, Encoders, chunk_texts
from .identity import run_part
from .stats import CacheCounts, ChunkStats, ModelEntry

if TYPE_CHECKING:
    import pyarrow as pa

    from ..cache.store import ResultCache
    from .feed import WorkerStep
    from .heads import RowScores
    from .models import ModelScorer, OnBatch

T = TypeVar("T")


@dataclass
class ScoredChunk:
    columns: dict[str, pa.Array]  # every model's result columns, in the output's column order
    stats: ChunkStats


@dataclass
class CacheReport:
    """What a run did to its result cache, once its last new results are written."""

    refused: list[str]  # why the cache refused the last writes (full, read-only), one message per model
    write_failures: int  # every write the cache refused in the run, the last ones included
    skipped: dict[str, str]  # damaged cache files skipped, and why


class ScoringCore:
    """The models of a run, in order, each scoring every chunk; a result cache in front of them when given."""

    def __init__(self, models: list[ModelScorer], cache: ResultCache | None = None):
        self.models = models
        keys: dict[tuple, int] = {}
        encoders: list[Encoder] = []
        self.group: list[int] = []  # each model's encoder
        self.tokens_from: list[int] = []  # each model's first model of the same encoder
        for number, model in enumerate(models):
            key = model.encoder.sharing_key()
            if key not in keys:
                keys[key] = len(encoders)
                encoders.append(model.encoder)
                self.tokens_from.append(number)
            else:
                self.tokens_from.append(self.group.index(keys[key]))
            self.group.append(keys[key])
        self.encoders = Encoders(tuple(encoders))
        self.fields = [f for model in models for f in model.fields]
        self.first = models[0]
        self.result_cache = cache
        self.cache = None if cache is None else CacheStep(cache, models)
        self.worker_step: WorkerStep = self.encoders if self.cache is None else LookupFirst()

    @property
    def on_gpu(self) -> bool:
        return self.first.on_gpu

    @property
    def batch_tokens(self) -> int:
        return self.first.batch_tokens

    def with_models(self, models: list[ModelScorer]) -> ScoringCore:
        """The same run with these models instead (each one's precision settled by --precision fastest)."""
        return ScoringCore(models, self.result_cache)

    def identity_parts(self) -> list[dict[str, Any]]:
        """Each model's part of the run identity, in order."""
        return [run_part(model) for model in self.models]

    def score_texts(self, texts: pa.Table) -> dict[str, pa.Array]:
        """The result columns of a table holding the text column, encoded and scored in this process."""
        from ..plan import Chunk

        return self.score(self.worker_step.encode(Chunk(0, 0, texts), [])).columns

    def score(self, item: ChunkEncodings | ReadChunk, on_batch: OnBatch | None = None) -> ScoredChunk:
        """A chunk's result columns and stats. `on_batch` as for `ModelScorer.run`, each model's batches counting
        for its share of the chunk (so the rows add up to the chunk's once)."""
        if isinstance(item, ReadChunk):
            valid, rows, encodings, seconds, cached = self._through_cache(item, on_batch)
        else:
            valid, encodings, cached = item.items[0].valid, item, None
            rows, seconds = self._run(item, on_batch)
        columns: dict[str, pa.Array] = {}
        for model, each in zip(self.models, rows):
            columns |= model.columns(each, valid)
        columns = {f.name: columns[f.name] for f in self.fields}
        works = [None if encodings is None else encodings.items[self.group[n]] for n in range(len(self.models))]
        counts = [model.counts(each, columns, work) for model, each, work in zip(self.models, rows, works)]
        stats = ChunkStats(
            rows=len(valid),
            empty_text_rows=int((~valid).sum()),
            first=counts[0],
            tokenizations=0 if encodings is None else len(encodings.items),
            models=self._entries(counts, seconds),
            cache=cached,
        )
        return ScoredChunk(columns, stats)

    def empty_stats(self) -> ChunkStats:
        """The stats of a chunk with no rows: every key, nothing counted."""
        counts = [model.no_counts() for model in self.models]
        cached = None if self.cache is None else CacheCounts(cache_files_skipped=self.cache.new_skips())
        return ChunkStats(first=counts[0], models=self._entries(counts, [0.0] * len(counts)), cache=cached)

    def finish(self) -> CacheReport | None:
        """Write the run's last new results to the cache (None: no cache). A refused write is reported, not
        raised: it costs a later run the scoring, not this one its output."""
        if self.cache is None:
            return None
        refused = self.cache.flush()
        return CacheReport(refused, self.cache.write_failures, self.cache.skipped)

    def _entries(self, counts: list, seconds: list[float]) -> list[ModelEntry] | None:
        if len(self.models) == 1:
            return None  # one model: its counts are the chunk's, as before several models were possible
        return [
            ModelEntry(
                model=model.model_id,
                prefix=model.rules.prefix,
                tokens_from=self.tokens_from[n],
                seconds=seconds[n],
                counts=counts[n],
            )
            for n, model in enumerate(self.models)
        ]

    def _through_cache(
        self, item: ReadChunk, on_batch: OnBatch | None
    ) -> tuple[np.ndarray, list[RowScores], ChunkEncodings | None, list[float], CacheCounts]:
        """Every model's scores for a chunk as read: the cache's where it has them, the rest scored (each
        distinct text once) and added to it."""
        assert self.cache is not None
        text_column = self.first.rules.text_column
        valid, texts = chunk_texts(item.read.table, text_column)
        lookup = self.cache.lookup(texts)
        del texts
        positions = np.flatnonzero(valid)
        encodings, seconds = None, [0.0] * len(self.models)
        if len(lookup.wanted):
            encodings = self.encoders.encode(self.cache.misses(item.read, text_column, lookup, positions), [])
            fresh, seconds = self._run(encodings, on_batch)
            self.cache.add(lookup, fresh)
        rows = [
            self.cache.rows(lookup, n, valid, model.rules.windowed, len(model.labels))
            for n, model in enumerate(self.models)
        ]
        scored = lookup.rows_scored
        cached = CacheCounts(
            rows_from_cache=len(positions) - scored,
            rows_scored=scored,
            distinct_texts_scored=len(lookup.wanted),
            cache_files_skipped=self.cache.new_skips(),
        )
        return valid, rows, encodings, seconds, cached

    def _run(self, encodings: ChunkEncodings, on_batch: OnBatch | None) -> tuple[list[RowScores], list[float]]:
        """Every model run on its encoder's encoding, in model order, and each one's seconds."""
        return self._each_model(lambda model, work, report: model.run(work, report), encodings, on_batch)

    def _each_model(
        self,
        step: Callable[[ModelScorer, Any, OnBatch | None], T],
        encodings: ChunkEncodings,
        on_batch: OnBatch | None,
    ) -> tuple[list[T], list[float]]:
        """`step(model, its encoder's encoding, on_batch)` for every model: on CPU side by side, each on its
        share of the cores (cpu.side_by_side); one model, one core or a GPU: one after the other."""
        import functools
        import time

        import torch

        from .cpu import side_by_side

        count = len(self.models)
        report = None if on_batch is None or count == 1 else _shared(on_batch, count)
        seconds = [0.0] * count

        def timed(number: int) -> T:
            started = time.perf_counter()
            result = step(self.models[number], encodings.items[self.group[number]], report or on_batch)
            seconds[number] = time.perf_counter() - started
            return result

        tasks = [functools.partial(timed, number) for number in range(count)]
        threads = 1 if self.on_gpu else torch.get_num_threads()
        if len(tasks) > 1 and threads > 1:
            return side_by_side(tasks, threads), seconds
        return [task() for task in tasks], seconds


def _shared(on_batch: OnBatch, count: int) -> OnBatch:
    """One of `count` models' batches: its share of the rows, all of its tokens."""

    def report(rows: float, tokens: int) -> None:
        on_batch(rows / count, tokens)

    return report

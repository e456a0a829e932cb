"""The per-chunk scoring steps, wired once: texts -> tokens -> length-sorted batches -> logits -> result columns.

Every caller scores through a `ChunkScorer`: the job (a DataLoader hands it
chunks already tokenized by `Encoder` in worker processes), `Scorer` (one
batch in memory) and through it Ray Data and Spark. The rules of a chunk's
scoring live here once: the token budget, the pad multiple, the result
columns and their names, which input columns may sit beside them, and the
counts a part's footer carries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .config import (
    AGGREGATES,
    CPU_BATCH_TOKENS,
    DEFAULT_THRESHOLD,
    GPU_BATCH_TOKENS,
    LONG_TEXT,
    MAX_WINDOWS,
    TOP_K,
    WINDOW_OVERLAP,
    model_and_revision,
)
from .errors import ConfigError, InputError
from .postprocess import LABELS, NONE, SIGMOID, result_fields, result_names, score_function, window_fields

if TYPE_CHECKING:
    import pyarrow as pa

    from .batches import Batch, ChunkWork
    from .config import ModelSpec
    from .model import LoadedModel
    from .plan import Chunk
    from .windows import WindowSpec


def check_top_k(top_k: int | str) -> str:
    """ "1" or "all" (the library takes 1 as an int too); the CLI's options check it through `OPTIONS`."""
    text = str(top_k).lower()
    if text not in TOP_K:
        raise ConfigError(f"top_k must be 1 or 'all', not {text!r}.")
    return text


def pad_multiple(precision: str) -> int | None:
    # Multiples of 8 let fp16/bf16 matmuls use tensor cores; fp32 gains nothing.
    return 8 if precision in ("bf16", "fp16") else None


@dataclass(frozen=True)
class Encoder:
    """A chunk's texts -> padded, length-sorted token-budget batches. Holds no model: DataLoader workers get one."""

    tokenizer: Any
    text_column: str
    max_length: int
    batch_tokens: int
    pad_multiple: int | None
    windows: WindowSpec | None = None  # --long-text window

    def sharing_key(self) -> tuple:
        """Two models whose encoders have equal keys get the same batches from a chunk: one tokenization serves
        both. The tokenizer counts by content (its whole tokenizer.json, padding side and inputs), not by name."""
        import hashlib

        tokenizer = self.tokenizer
        content = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
        inputs = tuple(tokenizer.model_input_names)
        settings = (self.text_column, self.max_length, self.batch_tokens, self.pad_multiple, self.windows)
        return (content, tokenizer.padding_side, inputs, tokenizer.pad_token_id, *settings)

    def encode(self, chunk: Chunk, out_columns: Sequence[str]) -> ChunkWork:
        from .batches import encode_chunk

        return encode_chunk(
            chunk,
            text_column=self.text_column,
            out_columns=list(out_columns),
            tokenizer=self.tokenizer,
            max_length=self.max_length,
            batch_tokens=self.batch_tokens,
            pad_multiple=self.pad_multiple,
            windows=self.windows,
        )


@dataclass(frozen=True)
class ColumnHints:
    """How a message about columns names its fix: the CLI's options, or the library's arguments."""

    text_column: str  # the fix for a missing text column
    cli: bool  # a clash names --result-prefix and --keep-columns (the CLI), or result_prefix=... (the library)


CLI_HINTS = ColumnHints(text_column="Pass --text-column.", cli=True)
LIBRARY_HINTS = ColumnHints(text_column="Pass text_column=...", cli=False)


@dataclass(frozen=True)
class ScoringRules:
    """What is scored and how the results are named: known before the model loads, so columns are checked first;
    all but what the model's head adds (a multi-label head's `labels`), known once its config is read."""

    text_column: str = "text"
    top_k: str = "1"
    result_prefix: str | None = None
    batch_tokens: int | None = None  # None: CPU_BATCH_TOKENS or GPU_BATCH_TOKENS by the device
    long_text: str = "truncate"  # or "window": every window of a long text scored, then aggregated
    window_overlap: int = WINDOW_OVERLAP
    aggregate: str = "mean"
    max_windows: int = MAX_WINDOWS
    window_scores: bool = False
    threshold: float = DEFAULT_THRESHOLD  # a multi-label head's `labels`: every label scoring at least this
    head: str | None = None  # the head's score function (postprocess.score_function); None: not known yet

    def __post_init__(self) -> None:
        object.__setattr__(self, "top_k", check_top_k(self.top_k))
        for name, allowed in (("long_text", LONG_TEXT), ("aggregate", AGGREGATES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}.")
        if self.window_overlap < 0 or self.max_windows < 1:
            raise ConfigError("window_overlap must be at least 0 and max_windows at least 1.")
        if not 0 <= self.threshold <= 1:  # NaN too
            raise ConfigError(f"threshold must be a number from 0 to 1, not {self.threshold!r}.")

    @property
    def windowed(self) -> bool:
        return self.long_text == "window"

    @property
    def multi_label(self) -> bool:
        """A sigmoid head (multi_label_classification, or one label): each label is a yes/no of its own."""
        return self.head == SIGMOID

    def for_head(self, head: str) -> ScoringRules:
        """These rules for a model whose head applies `head` (postprocess.score_function of its config)."""
        return dataclasses.replace(self, head=head)

    @property
    def fields(self) -> list[pa.Field]:
        fields = result_fields(self.top_k, self.result_prefix, self.multi_label)
        return fields + window_fields(self.result_prefix, self.window_scores) if self.windowed else fields

    @property
    def result_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def check_columns(
        self,
        names: Iterable[Any],
        keep: Sequence[str] | None = None,
        id_column: str | None = None,
        hints: ColumnHints = LIBRARY_HINTS,
        text_type: pa.DataType | None = None,
    ) -> list[str]:
        """The input columns kept beside the results, in order: the id column, then `keep` (every column when
        None). Refuses a missing text, id or kept column, a text column of `text_type` that holds no text, and a
        kept column named like a result column."""
        names = [str(n) for n in names]
        listing = ", ".join(names)
        if self.text_column not in names:
            raise InputError(f"Column '{self.text_column}' not found; columns are: {listing}. {hints.text_column}")
        refused = not_text(text_type) if text_type is not None else None
        if refused is not None:
            raise InputError(
                f"Column '{self.text_column}' holds {refused}, not text; pass --text-column naming a string column."
            )
        if id_column is not None and id_column not in names:
            raise InputError(f"Column '{id_column}' not found; columns are: {listing}. Pass --id-column.")
        kept = list(names) if keep is None else list(keep)
        missing = [c for c in kept if c not in names]
        if missing:
            raise InputError(f"Column '{missing[0]}' not found; columns are: {listing}. Fix --keep-columns.")
        out = list(dict.fromkeys(([id_column] if id_column else []) + kept))
        results = self.result_names  # built once: a table may have a hundred thousand columns
        clash = [c for c in out if c in results]
        if clash:
            raise InputError(self._clash_message(clash[0], out, id_column, hints, results))
        return out

    def _clash_message(
        self, column: str, out: list[str], id_column: str | None, hints: ColumnHints, results: list[str]
    ) -> str:
        if not hints.cli:
            return (
                f"Input column '{column}' would clash with the result column of that name; "
                "pass result_prefix=..., e.g. result_prefix='pred_'."
            )
        # HF datasets nearly always have a `label` column: a prefix keeps it beside the prediction.
        import itertools

        prefix = self.result_prefix or ""
        candidates = itertools.chain(("pred_", "batchscore_"), (f"pred{i}_" for i in itertools.count(2)))
        names = result_names("all", multi_label=True)
        free = next(p for p in candidates if not any(p + name in out for name in names))
        fix = f"pass another --result-prefix, e.g. {free}" if prefix else f"pass --result-prefix {free}"
        if column != id_column:  # the id column is always kept
            others = ",".join(c for c in out if c not in results) or "none"
            fix += f" (or leave it out with --keep-columns {others})"
        given = f" (--result-prefix {prefix})" if prefix else ""
        return f"Input column '{column}' would clash with batchscore's output column of that name{given}; {fix}."


def model_rules(specs: Sequence[ModelSpec], text_column: str, batch_tokens: int | None) -> list[ScoringRules]:
    """The rules of each model of a run (its spec filled in), in order; refuses two models whose result columns
    share a name."""
    rules = [
        ScoringRules(
            text_column,
            str(spec.top_k),
            spec.prefix,
            batch_tokens,
            str(spec.long_text),
            int(spec.window_overlap or 0),
            str(spec.aggregate),
            int(spec.max_windows or MAX_WINDOWS),
            bool(spec.window_scores),
            DEFAULT_THRESHOLD if spec.threshold is None else spec.threshold,
        )
        for spec in specs
    ]
    check_result_names(rules)
    return rules


def load_scorers(
    specs: Sequence[ModelSpec],
    rules: Sequence[ScoringRules],
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    check: Callable[[ScoringRules], None] | None = None,
) -> ChunkScorers:
    """Every model of a run loaded, in order (several: their weights checked against free memory first)."""
    from .model import check_free_memory

    if len(specs) > 1:
        check_free_memory([(spec.model, spec.revision) for spec in specs])
    return ChunkScorers(
        [
            ChunkScorer.load(
                each,
                spec.model,
                spec.revision,
                precision=str(spec.precision),
                max_length=spec.max_length,
                allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code,
                check=check,
            )
            for each, spec in zip(rules, specs)
        ]
    )


def check_result_names(rules: Sequence[ScoringRules]) -> None:
    """Several models write side by side: no two may write a column of the same name (each needs its prefix)."""
    owner: dict[str, int] = {}
    for number, each in enumerate(rules, 1):
        # A head is not known before the load: the names any head may add are checked alike.
        for name in each.for_head(SIGMOID).result_names:
            if name in owner:
                prefix = each.result_prefix
                given = f"both have --result-prefix {prefix}" if prefix else "neither has a --result-prefix"
                raise ConfigError(
                    f"The results of model {owner[name]} and model {number} would both be named '{name}' ({given}); "
                    "give each model its own --result-prefix, in the order of --model (or prefix: in a config "
                    "file's models list)."
                )
            owner[name] = number


def not_text(kind: pa.DataType) -> pa.DataType | None:
    """The Arrow type (a dictionary's values) if a text column of this type is refused: bytes of any kind, lists,
    structs; None if its values are scored (strings, or numbers and the like as their string form)."""
    import pyarrow.types as t

    if t.is_dictionary(kind):
        kind = kind.value_type
    binary = t.is_binary(kind) or t.is_large_binary(kind) or t.is_fixed_size_binary(kind) or t.is_binary_view(kind)
    return kind if binary or t.is_nested(kind) else None


class ChunkScorer:
    """A loaded classifier and the rules for scoring one chunk of rows with it."""

    def __init__(self, loaded: LoadedModel, rules: ScoringRules):
        self.loaded = loaded
        self.function = score_function(loaded.model.config)
        self.rules = rules = rules.for_head(self.function)
        self.on_gpu = loaded.device.type == "cuda"
        self.batch_tokens = rules.batch_tokens or (GPU_BATCH_TOKENS if self.on_gpu else CPU_BATCH_TOKENS)
        self.fields = rules.fields
        self.encoder = Encoder(
            loaded.tokenizer,
            rules.text_column,
            loaded.max_length,
            self.batch_tokens,
            pad_multiple(loaded.precision),
            self._window_spec() if rules.windowed else None,
        )

    def _window_spec(self) -> WindowSpec:
        from .windows import WindowSpec

        rules, loaded = self.rules, self.loaded
        room = loaded.max_length - loaded.tokenizer.num_special_tokens_to_add()  # a window's text tokens
        if rules.window_overlap >= room:
            raise ConfigError(
                f"--window-overlap {rules.window_overlap} leaves no new text in a window: a window holds {room} "
                f"text tokens (--max-length {loaded.max_length}, less the special tokens); pass a smaller overlap."
            )
        return WindowSpec(rules.window_overlap, rules.max_windows, room, rules.window_scores)

    @classmethod
    def load(
        cls,
        rules: ScoringRules,
        model: str | None,
        revision: str | None = None,
        *,
        precision: str = "auto",
        max_length: int | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        check: Callable[[ScoringRules], None] | None = None,
    ) -> ChunkScorer:
        """Load `model` (the pinned reference model by default) to score by `rules`.

        `check` gets the rules completed by the model's head as soon as its config is read, before the weights
        load: the columns a head adds are refused in seconds, not after minutes of loading.
        """
        from .model import load_model

        model_id, revision = model_and_revision(model, revision)
        loaded = load_model(
            model_id,
            revision,
            precision,
            max_length,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            on_config=None if check is None else lambda config: check(rules.for_head(score_function(config))),
        )
        return cls(loaded, rules)

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels

    # --- scoring ------------------------------------------------------------------------------------------------

    def score(self, work: ChunkWork, on_batch: OnBatch | None = None) -> dict[str, pa.Array]:
        """The result columns of an encoded chunk, keyed by name, in the chunk's row order (null: no text).

        `on_batch(rows, tokens)` is called as each batch is scored: its share of the chunk's rows (its rows, or
        windows, out of the chunk's), and its real tokens."""
        from .postprocess import aggregate, window_columns

        windows = work.windows
        if windows is None or windows.spans is None:
            return self.columns(*self.row_scores(work, on_batch), work.valid)
        # --window-scores: each window's own scores make a column too.
        scores = self._window_scores(work, on_batch)
        rows = aggregate(scores, windows.row, windows.text_tokens, len(work.valid), self.rules.aggregate)
        counts = np.bincount(windows.row, minlength=len(work.valid))
        return self.columns(rows, counts, work.valid) | window_columns(
            scores, windows.row, windows.spans, work.valid, self.labels, self.rules.result_prefix
        )

    def row_scores(self, work: ChunkWork, on_batch: OnBatch | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Every label's score for each row of an encoded chunk, after the head's function, in label order (rows
        without text: zeros); with --long-text window, the windows' scores aggregated, and each row's window
        count (else None). What the result cache keeps of a row."""
        from .model import chunk_logits
        from .postprocess import aggregate, apply

        windows = work.windows
        if windows is None:
            batches = work.batches if on_batch is None else _reported(work, on_batch)
            return apply(self.function, chunk_logits(self.loaded, batches, len(work.valid))), None
        scores = self._window_scores(work, on_batch)
        rows = aggregate(scores, windows.row, windows.text_tokens, len(work.valid), self.rules.aggregate)
        return rows, np.bincount(windows.row, minlength=len(work.valid))

    def _window_scores(self, work: ChunkWork, on_batch: OnBatch | None) -> np.ndarray:
        from .model import chunk_logits
        from .postprocess import apply

        assert work.windows is not None
        batches = work.batches if on_batch is None else _reported(work, on_batch)
        return apply(self.function, chunk_logits(self.loaded, batches, len(work.windows.row)))

    def columns(self, scores: np.ndarray, windows: np.ndarray | None, valid: np.ndarray) -> dict[str, pa.Array]:
        """The result columns from each row's scores (and window count, with --long-text window)."""
        from .postprocess import result_columns, window_counts

        rules = self.rules
        threshold = rules.threshold if rules.multi_label else None  # `labels`: multi-label heads only
        # The aggregated scores decide `labels`, as they decide label and score.
        columns = result_columns(scores, valid, self.labels, rules.top_k, rules.result_prefix, threshold)
        if rules.windowed:
            assert windows is not None
            columns |= window_counts(windows, valid, rules.result_prefix)
        return columns

    def score_texts(self, texts: pa.Table) -> dict[str, pa.Array]:
        """Encode and score a table holding the text column, in this process."""
        from .plan import Chunk

        return self.score(self.encoder.encode(Chunk(0, 0, texts), [self.rules.text_column]))

    def chunk_stats(self, work: ChunkWork | None = None, results: dict | None = None) -> dict:
        """Counts stored in each part's footer (the manifest sums them over parts); no work: an empty chunk's."""
        if work is None or results is None:
            return {
                "rows": 0,
                "empty_text_rows": 0,
                "truncated_rows": 0,
                "truncated_tokens": 0,
                "windows": 0,
                "windowed_rows": 0,
                "real_tokens": 0,
                "padded_tokens": 0,
                "label_counts": {},
                **self._head_stats(None),
            }
        labels = results[self.fields[0].name]
        return {
            "rows": work.chunk.num_rows,
            "empty_text_rows": int((~work.valid).sum()),
            **row_counts(work.truncated, work.row_windows()),
            "real_tokens": work.real_tokens,
            "padded_tokens": work.padded_tokens,
            "label_counts": _value_counts(labels.drop_null()),
            **self._head_stats(results),
        }

    def _head_stats(self, results: dict | None) -> dict:
        """What a head's results add to a part's counts: a multi-label head counts every label over the threshold
        (`labels_counts`); a regression head's scores are values, summarized by count, min, max and sum (their
        quantiles cannot be summed over parts: the manifest computes them from the parts' score column)."""
        import numpy as np
        import pyarrow.compute as pc

        prefix = self.rules.result_prefix or ""
        if self.rules.multi_label:
            listed = {} if results is None else _value_counts(pc.list_flatten(results[prefix + LABELS]))
            return {"labels_counts": listed}
        if self.function != NONE:
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


OnBatch = Callable[[float, int], None]
T = TypeVar("T")


def row_counts(truncated: np.ndarray, windows: np.ndarray | None) -> dict[str, int]:
    """A part's truncation and window counts, summed from each row's own (the same whether a row was scored or
    taken from the result cache): `truncated` its text tokens never scored, `windows` (--long-text window, else
    None) the windows it was scored in."""
    return {
        "truncated_rows": int((truncated > 0).sum()),
        "truncated_tokens": int(truncated.sum()),
        "windows": 0 if windows is None else int(windows.sum()),
        "windowed_rows": 0 if windows is None else int((windows > 1).sum()),  # rows of more than one window
    }


def _reported(work: ChunkWork, on_batch: OnBatch) -> Iterator[Batch]:
    """The chunk's batches, reporting each one once the model has asked for the next (so once it is scored;
    on a GPU, once it is queued)."""
    positions = sum(batch.num_rows for batch in work.batches) or 1
    share = len(work.valid) / positions  # rows a position stands for: 1, or rows per window
    for batch in work.batches:
        yield batch
        mask = batch.inputs.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else batch.num_rows * int(batch.inputs["input_ids"].shape[1])
        on_batch(batch.num_rows * share, tokens)


def _value_counts(values: pa.Array) -> dict[str, int]:
    """How often each string occurs, counted in Arrow, not row by row in Python."""
    import pyarrow.compute as pc

    return {str(v["values"]): v["counts"] for v in pc.value_counts(values).to_pylist()}


class ChunkScorers:
    """The models of a run, in order, each scoring every chunk. Models whose encoders are alike (the same
    tokenizer by content, max length, token budget, windows) share one tokenization of each chunk.

    One model is the common case, and then this is that model's `ChunkScorer` and nothing more: its part footers
    and manifest are as they always were, plus `tokenizations`.
    """

    def __init__(self, scorers: list[ChunkScorer]):
        self.scorers = scorers
        self.names = [scorer.loaded.model_id for scorer in scorers]
        keys: dict[tuple, int] = {}
        self.encoders: list[Encoder] = []
        self.group: list[int] = []  # each model's encoder
        self.tokens_from: list[int] = []  # each model's first model of the same encoder
        for number, scorer in enumerate(scorers):
            key = scorer.encoder.sharing_key()
            if key not in keys:
                keys[key] = len(self.encoders)
                self.encoders.append(scorer.encoder)
                self.tokens_from.append(number)
            else:
                self.tokens_from.append(self.group.index(keys[key]))
            self.group.append(keys[key])
        self.fields = [f for scorer in scorers for f in scorer.fields]
        self.encoder = Encoders(tuple(self.encoders))  # what DataLoader workers get: no model
        self.first = scorers[0]
        self.seconds = [0.0] * len(scorers)  # each model's time in this chunk (set by score)

    @property
    def on_gpu(self) -> bool:
        return self.first.on_gpu

    @property
    def batch_tokens(self) -> int:
        return self.first.batch_tokens

    def score_texts(self, texts: pa.Table) -> dict[str, pa.Array]:
        """Encode and score a table holding the text column, in this process."""
        from .plan import Chunk

        return self.score(self.encoder.encode(Chunk(0, 0, texts), [self.first.rules.text_column]))

    def score(self, works: ChunkWorks, on_batch: OnBatch | None = None) -> dict[str, pa.Array]:
        """Every model's result columns, in model order. `on_batch` as for `ChunkScorer.score`, each model's
        batches counting for its share of the chunk (so the rows add up to the chunk's once)."""
        parts = self.each_model(lambda scorer, work, report: scorer.score(work, report), works, on_batch)
        results = {name: column for part in parts for name, column in part.items()}
        return {f.name: results[f.name] for f in self.fields}  # in the output's column order

    def each_model(
        self,
        step: Callable[[ChunkScorer, ChunkWork, OnBatch | None], T],
        works: ChunkWorks,
        on_batch: OnBatch | None = None,
    ) -> list[T]:
        """`step(scorer, its encoder's work, on_batch)` for every model, in model order: on CPU side by side, each
        on its share of the cores; each model's seconds in this chunk go to `seconds` (read by chunk_stats)."""
        import functools
        import time

        import torch

        from .threads import side_by_side

        count = len(self.scorers)
        report = None if on_batch is None or count == 1 else _shared(on_batch, count)

        def timed(number: int) -> T:
            started = time.perf_counter()
            result = step(self.scorers[number], works.items[self.group[number]], report or on_batch)
            self.seconds[number] = time.perf_counter() - started
            return result

        tasks = [functools.partial(timed, number) for number in range(count)]
        threads = 1 if self.on_gpu else torch.get_num_threads()
        if len(tasks) > 1 and threads > 1:  # CPU: each model on its share of the cores (threads.side_by_side)
            return side_by_side(tasks, threads)
        return [task() for task in tasks]  # one model, one core, or one GPU: one after the other, each with all

    def chunk_stats(self, works: ChunkWorks | None = None, results: dict | None = None) -> dict:
        """A part's counts: the first model's, as for one model, plus per model (several) and the tokenizations."""
        items = None if works is None else works.items
        first = self.first.chunk_stats(None if items is None else items[0], results)
        stats = {**first, "tokenizations": 0 if items is None else len(items)}
        if len(self.scorers) == 1:
            return stats
        shared = ("rows", "empty_text_rows")
        stats["models"] = [
            {
                "model": name,
                "prefix": scorer.rules.result_prefix,
                "tokens_from": self.tokens_from[number],
                "seconds": round(self.seconds[number], 3) if items is not None else 0.0,
                **{
                    k: v
                    for k, v in scorer.chunk_stats(
                        None if items is None else items[self.group[number]], results
                    ).items()
                    if k not in shared
                },
            }
            for number, (name, scorer) in enumerate(zip(self.names, self.scorers))
        ]
        return stats


def _shared(on_batch: OnBatch, count: int) -> OnBatch:
    """One of `count` models' batches: its share of the rows, all of its tokens."""

    def report(rows: float, tokens: int) -> None:
        on_batch(rows / count, tokens)

    return report


@dataclass(frozen=True)
class Encoders:
    """The distinct encoders of a run's models: a chunk is tokenized once by each (in a DataLoader worker)."""

    encoders: tuple[Encoder, ...]

    def encode(self, chunk: Chunk, out_columns: Sequence[str]) -> ChunkWorks:
        return ChunkWorks([encoder.encode(chunk, out_columns) for encoder in self.encoders])


class ChunkWorks:
    """One chunk, tokenized by each distinct encoder of a run (they share the chunk's table)."""

    def __init__(self, items: list[ChunkWork]):
        self.items = items

    @property
    def chunk(self) -> Chunk:
        return self.items[0].chunk

    def pin_memory(self) -> ChunkWorks:
        for item in self.items:
            item.pin_memory()
        return self

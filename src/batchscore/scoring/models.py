"""One loaded model and its rules: an encoded chunk in, its rows' scores out; those scores as result columns."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError
from ..options import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS
from .encode import Encoder, pad_multiple
from .heads import RowScores, WindowScores, score_function
from .stats import ModelCounts, head_counts, value_counts

if TYPE_CHECKING:
    import pyarrow as pa

    from .encode import Batch, EncodedChunk
    from .load import LoadedModel
    from .rules import ScoringRules
    from .windows import WindowSpec

# Called as each batch is scored: its share of the chunk's rows (rows, or windows, out of the chunk's), its tokens.
OnBatch = Callable[[float, int], None]


@dataclass(frozen=True)
class Recheck:
    """A second look in fp32 (--precision fastest): a row that the faster precision scores within `margin` of a tie
    (its top two logits closer than that) is scored again in `exact`, fp32, and takes fp32's scores. Such rows are
    the ones whose label the faster precision may have changed; the others are too far from a tie for its moves
    (scoring/calibrate.py measures both on the input's own rows)."""

    exact: LoadedModel
    margin: float


class ModelScorer:
    """A loaded classifier and the rules it scores by (completed by its head)."""

    def __init__(self, loaded: LoadedModel, rules: ScoringRules, recheck: Recheck | None = None):
        self.loaded = loaded
        self.recheck = recheck if recheck is not None and recheck.margin > 0 else None
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

        loaded, spec = self.loaded, self.rules.spec
        room = loaded.max_length - loaded.tokenizer.num_special_tokens_to_add()  # a window's text tokens
        if spec.window_overlap >= room:
            raise ConfigError(
                f"--window-overlap {spec.window_overlap} leaves no new text in a window: a window holds {room} "
                f"text tokens (--max-length {loaded.max_length}, less the special tokens); pass a smaller overlap."
            )
        return WindowSpec.of(spec, room)

    @property
    def recheck_margin(self) -> float | None:
        return None if self.recheck is None else self.recheck.margin

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels

    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    @functools.cached_property
    def fingerprint(self) -> dict[str, Any]:
        """The model by content (output.identity.model_fingerprint): hashed once, though the run identity and
        the cache identity both hold it (a 2 GB model hashes in about 2 s)."""
        from ..output.identity import model_fingerprint

        return model_fingerprint(self.loaded.model_id, self.loaded.revision)

    def run(self, work: EncodedChunk, on_batch: OnBatch | None = None) -> RowScores:
        """Every row's scores for an encoded chunk: the model's logits through its head's function, a long text's
        windows folded into its row (`aggregate`), and what each row left unscored."""
        from .heads import aggregate, apply
        from .run import chunk_logits

        batches = work.batches if on_batch is None else _reported(work, on_batch)
        windows = work.windows
        units = len(work.valid) if windows is None else len(windows.row)
        logits = chunk_logits(self.loaded, batches, units)
        if self.recheck is not None:
            self._recheck(work, logits)
        scores = apply(self.function, logits)
        if windows is None:
            scores[~work.valid] = 0.0  # rows without text: no scores (the head of zero logits is not one)
            return RowScores(scores, work.truncated)
        rows = aggregate(scores, windows.row, windows.text_tokens, len(work.valid), self.rules.spec.aggregate)
        per_window = None if windows.spans is None else WindowScores(scores, windows.row, windows.spans)
        return RowScores(rows, work.truncated, work.row_windows(), per_window)

    def _recheck(self, work: EncodedChunk, logits: np.ndarray) -> None:
        """The rows (with --long-text window, the windows) scored close to a tie, scored again in fp32, in place."""
        from .heads import top_two_gap
        from .run import rescore

        assert self.recheck is not None
        close = top_two_gap(logits) < self.recheck.margin
        if close.any():
            rescore(self.recheck.exact, work.batches, close, logits)

    def columns(self, rows: RowScores, valid: np.ndarray) -> dict[str, pa.Array]:
        """The result columns, keyed by name, in row order (null: no text). The (aggregated) scores decide label,
        score and a multi-label head's `labels` alike."""
        from .heads import result_columns, window_columns, window_counts

        rules = self.rules
        threshold = rules.spec.threshold if rules.multi_label else None  # `labels`: multi-label heads only
        columns = result_columns(rows.scores, valid, self.labels, rules.spec.top_k, rules.prefix, threshold)
        if rules.windowed:
            assert rows.windows is not None
            extra = rows.per_window
            if extra is None:
                columns |= window_counts(rows.windows, valid, rules.prefix)
            else:
                columns |= window_columns(extra.scores, extra.row, extra.spans, valid, self.labels, rules.prefix)
        return columns

    def counts(self, rows: RowScores, results: dict[str, pa.Array], work: EncodedChunk | None) -> ModelCounts:
        """This model's counts over a chunk: tokens of the encoding it ran (None: all from the cache), truncation
        and windows of every row, labels of every row."""
        counts = ModelCounts(
            real_tokens=0 if work is None else work.real_tokens,
            padded_tokens=0 if work is None else work.padded_tokens,
            label_counts=value_counts(results[self.fields[0].name].drop_null()),
            head=head_counts(self.function, self.rules.prefix, results),
        )
        return counts.rows_from(rows.truncated, rows.windows)

    def no_counts(self) -> ModelCounts:
        """An empty chunk's counts: every key, nothing counted."""
        return ModelCounts(head=head_counts(self.function, self.rules.prefix, None))


def _reported(work: EncodedChunk, on_batch: OnBatch) -> Iterator[Batch]:
    """The chunk's batches, reporting each one once the model has asked for the next (so once it is scored;
    on a GPU, once it is queued)."""
    positions = sum(batch.num_rows for batch in work.batches) or 1
    share = len(work.valid) / positions  # rows a position stands for: 1, or rows per window
    for batch in work.batches:
        yield batch
        mask = batch.inputs.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else batch.num_rows * int(batch.inputs["input_ids"].shape[1])
        on_batch(batch.num_rows * share, tokens)

"""Tokenize a chunk, sort its rows by length and cut token-budget batches.

Runs inside DataLoader workers (when num_workers > 0) so that reading and
tokenizing overlap with the model. Each item the DataLoader yields is a whole
chunk's worth of padded batches, so chunks come out in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

import numpy as np
import torch

from .errors import BatchscoreError
from .plan import Chunk, InputEnd, Plan

if TYPE_CHECKING:
    from types import FrameType

    import pyarrow as pa
    from transformers import PreTrainedTokenizerBase

    from .scoring import Encoder


@dataclass(frozen=True)
class WindowSpec:
    """--long-text window: how a long text is cut into the tokenizer's overflowing windows."""

    overlap: int  # tokens two consecutive windows share (the tokenizer's stride)
    max_windows: int  # windows kept per text; the rest is not scored (counted as truncated)
    spans: bool = False  # keep each window's character span (for --window-scores)


@dataclass
class Windows:
    """The windows of a chunk's texts, in order: the units its batches score instead of rows."""

    row: np.ndarray  # the chunk row of each window
    text_tokens: np.ndarray  # each window's tokens, special tokens excluded: its weight in a mean
    spans: np.ndarray | None = None  # [windows, 2] character offsets (start, end) into the row's text


@dataclass
class Batch:
    positions: np.ndarray  # row positions inside the chunk (window positions with --long-text window)
    inputs: dict  # name -> LongTensor [rows, padded_length]

    @property
    def num_rows(self) -> int:
        return len(self.positions)


@dataclass
class ChunkWork:
    chunk: Chunk  # table holds only the output's kept columns
    valid: np.ndarray  # bool per row: has text to score
    batches: list[Batch] = field(default_factory=list)
    truncated_rows: int = 0
    truncated_tokens: int = 0  # text tokens past --max-length (or past --max-windows): never scored
    windows: Windows | None = None  # --long-text window: what the batches' positions index
    real_tokens: int = 0
    padded_tokens: int = 0

    def pin_memory(self) -> ChunkWork:
        # DataLoader(pin_memory=True) calls this: page-locked host memory makes
        # the host-to-GPU copies asynchronous.
        for batch in self.batches:
            batch.inputs = {k: v.pin_memory() for k, v in batch.inputs.items()}
        return self


def text_mask(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True where a row has text worth scoring: not null, not empty, not all whitespace."""
    import pyarrow.compute as pc

    has_text = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0)
    return pc.fill_null(has_text, False).to_numpy(zero_copy_only=False)


MAX_PADDING = 0.1  # a batch is cut before more than this share of its tokens would be padding


def cut_batches(
    lengths: np.ndarray, batch_tokens: int, pad_multiple: int | None, max_padding: float = MAX_PADDING
) -> list[np.ndarray]:
    """Split row indices, sorted by length, into batches that fit the token budget and waste little on padding.

    A batch ends when one more row would take its padded size (rows x longest
    row) over `batch_tokens`, or its padding over `max_padding` of that size:
    a 3-token and a 55-token sentence in one batch would spend 95% of the
    first row's compute on padding. A row longer than the budget gets a batch of one.
    """
    order = np.argsort(lengths, kind="stable")
    real = lengths[order]
    padded = -(-real // pad_multiple) * pad_multiple if pad_multiple else real
    groups, start, filled = [], 0, 0
    for end in range(len(order)):
        rows = end - start + 1
        # Ascending lengths: the batch's padded length is its newest row's.
        area = rows * padded[end]
        if rows > 1 and (area > batch_tokens or filled + real[end] < (1 - max_padding) * area):
            groups.append(order[start:end])
            start, filled = end, 0
        filled += real[end]
    if start < len(order):
        groups.append(order[start:])
    return groups


def encode_chunk(
    chunk: Chunk,
    *,
    text_column: str,
    out_columns: list[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    batch_tokens: int,
    pad_multiple: int | None,
    windows: WindowSpec | None = None,
) -> ChunkWork:
    import pyarrow as pa

    texts = chunk.table.column(text_column)
    if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.string())  # numbers are scored as their text (see README)
    valid = text_mask(texts)
    positions = np.flatnonzero(valid)
    work = ChunkWork(Chunk(chunk.index, chunk.start, chunk.table.select(out_columns), chunk.rows_read), valid)
    if len(positions) == 0:
        return work

    strings = texts.filter(pa.array(valid)).to_pylist()
    if windows is None:
        encoded = tokenizer(strings, truncation=True, max_length=max_length)
        truncated = [e for e in encoded.encodings if e.overflowing]
        work.truncated_rows = len(truncated)
        # The tokenizer cuts what does not fit into overflowing pieces (no overlap: stride 0), each with its own
        # special tokens: their text tokens are what truncation dropped.
        work.truncated_tokens = sum(piece.special_tokens_mask.count(0) for e in truncated for piece in e.overflowing)
        units = {n: encoded[n] for n in tokenizer.model_input_names if n in encoded}
    else:
        units, work.windows = _windows(tokenizer, strings, positions, max_length, windows, work)
        positions = np.arange(len(work.windows.row))  # batches score windows; the scorer folds them into rows
    ids = units["input_ids"]
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    work.real_tokens = int(lengths.sum())
    names = list(units)
    flat = {n: _flatten(units[n], work.real_tokens) for n in names}
    pad_values = {n: _pad_value(tokenizer, n) for n in names}
    offsets = np.cumsum(lengths) - lengths  # where each row starts in the flat arrays
    for group in cut_batches(lengths, batch_tokens, pad_multiple):
        # Dynamic padding: to the batch's own longest row, never to the model max.
        inputs = pad_rows(
            flat, pad_values, offsets[group], lengths[group], pad_multiple, left=tokenizer.padding_side == "left"
        )
        work.padded_tokens += int(inputs["input_ids"].numel())
        work.batches.append(Batch(positions[group], inputs))
    return work


def _windows(
    tokenizer: PreTrainedTokenizerBase,
    strings: list[str],
    positions: np.ndarray,
    max_length: int,
    spec: WindowSpec,
    work: ChunkWork,
) -> tuple[dict[str, list[list[int]]], Windows]:
    """The tokenizer's own overflowing windows of each text (each with the model's special tokens), at most
    `spec.max_windows` per text; a text that fits is one window, exactly its truncate-mode tokens."""
    encoded = tokenizer(
        strings,
        truncation=True,
        max_length=max_length,
        stride=spec.overlap,
        return_overflowing_tokens=True,
        return_offsets_mapping=spec.spans,
    )
    text_of = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)  # windows come text by text
    rank = np.arange(len(text_of)) - np.searchsorted(text_of, text_of)  # a window's place in its text
    kept = np.flatnonzero(rank < spec.max_windows)
    text_tokens = np.fromiter((e.special_tokens_mask.count(0) for e in encoded.encodings), np.int64, len(text_of))
    dropped = rank >= spec.max_windows
    work.truncated_rows = len(np.unique(text_of[dropped]))
    # Each window after a text's first repeats `overlap` tokens of the one before: the rest is new text.
    work.truncated_tokens = int((text_tokens[dropped] - spec.overlap).sum())
    names = [n for n in tokenizer.model_input_names if n in encoded]
    units = {n: [encoded[n][i] for i in kept] for n in names}
    spans = None
    if spec.spans:
        spans = np.zeros((len(kept), 2), dtype=np.int64)
        for j, i in enumerate(kept):
            mask, offsets = encoded.encodings[i].special_tokens_mask, encoded["offset_mapping"][i]
            text = [span for span, special in zip(offsets, mask) if not special]
            spans[j] = (text[0][0], text[-1][1]) if text else (0, 0)
    return units, Windows(positions[text_of[kept]], text_tokens[kept], spans)


def _flatten(rows: list[list[int]], total: int) -> np.ndarray:
    import itertools

    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)


def _pad_value(tokenizer: PreTrainedTokenizerBase, name: str) -> int:
    # What tokenizer.pad fills in: the pad token's id, type id 0 (or the tokenizer's), mask 0.
    if name == "input_ids":
        return tokenizer.pad_token_id
    if name == "token_type_ids":
        return tokenizer.pad_token_type_id
    return 0


def pad_rows(
    flat: dict, pad_values: dict, starts: np.ndarray, lengths: np.ndarray, pad_multiple: int | None, left: bool = False
) -> dict:
    """Padded LongTensors [rows, longest] for the rows at `starts` (with `lengths`) in the flat token arrays.

    The same tensors as `tokenizer.pad`, built with whole-array numpy
    operations instead of a Python loop over rows and tokens.
    """
    width = int(lengths.max())
    if pad_multiple:
        width = -(-width // pad_multiple) * pad_multiple
    # Index of every real token in the flat arrays, row after row.
    total = int(lengths.sum())
    index = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    columns = np.arange(width)
    real = columns >= (width - lengths)[:, None] if left else columns < lengths[:, None]
    inputs = {}
    for name, values in flat.items():
        padded = np.full((len(lengths), width), pad_values[name], dtype=np.int64)
        padded[real] = values[index]  # row-major order: each row's tokens land in its own real slots
        inputs[name] = torch.from_numpy(padded)
    return inputs


def quiet_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a stop signal ends a worker quietly; the job's process alone reports it.

    SIGTERM or SIGHUP to the process group (a scheduler, a closed terminal) and
    Ctrl-C reach the workers too. torch's own SIGTERM handler re-raises the
    signal in a worker, and the job's process then prints a traceback ("worker
    is killed by signal") while it shuts the DataLoader down; SIGINT raises
    KeyboardInterrupt inside the worker. A worker holds nothing that needs
    cleaning up (the job's process commits and releases), so it just exits 0.
    A signal the job ignores (`nohup`'s SIGHUP) stays ignored here too.
    """
    import signal

    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _exit_quietly)


def _exit_quietly(signum: int, frame: FrameType | None) -> NoReturn:
    import os

    os._exit(0)


class ChunkDataset(torch.utils.data.IterableDataset):
    """Yields one ChunkWork per chunk this process still has to do, in chunk order, then an InputEnd.

    Which chunks, and which rows to read for them, is the plan's business
    (plan.py). With W DataLoader workers, worker w takes every W-th of them;
    the DataLoader's round-robin over workers then restores chunk order.
    """

    def __init__(
        self,
        plan: Plan,
        open_source: Callable[[], Any],
        read_columns: list[str],
        out_columns: list[str],
        encoder: Encoder,
        source: Any = None,
    ):
        self.plan = plan
        self.open_source = open_source  # picklable callable -> Source, for worker processes
        self.source = source  # the job's own open source: reused when there are no worker processes
        self.read_columns = read_columns
        self.out_columns = out_columns
        self.encoder = encoder

    def __getstate__(self) -> dict:
        return {**self.__dict__, "source": None}  # a Source holds open readers: each worker opens its own

    def __iter__(self) -> Iterator[ChunkWork | InputEnd | BatchscoreError]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        try:
            source = self.source if info is None and self.source is not None else self.open_source()
            for item in self.plan.read(source, self.read_columns, worker, workers):
                yield item if isinstance(item, InputEnd) else self.encoder.encode(item, self.out_columns)
        except BatchscoreError as exc:
            if info is None:
                raise
            # From a worker process, the DataLoader would re-raise it as a new exception whose message is a
            # traceback: hand it over whole instead, for the job to raise (in chunk order, after the chunks
            # before it).
            yield exc

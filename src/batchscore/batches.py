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
from .prefixes import return_freed_memory, seen_prefixes
from .windows import Windows, WindowSpec, cut_windows

if TYPE_CHECKING:
    from types import FrameType

    import pyarrow as pa
    from transformers import PreTrainedTokenizerBase

    from .cache.scoring import AsRead, Unencoded
    from .scoring import ChunkWorks, Encoders


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
    # int64 per row: its text tokens never scored (past --max-length or --max-windows, or past the prefix a very
    # long text was cut to); 0 for rows without text. A row is truncated when it is over 0.
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    windows: Windows | None = None  # --long-text window: what the batches' positions index
    real_tokens: int = 0
    padded_tokens: int = 0

    def row_windows(self) -> np.ndarray | None:
        """--long-text window: the windows scored for each row (0 without text); else None."""
        if self.windows is None:
            return None
        return np.bincount(self.windows.row, minlength=len(self.valid)).astype(np.int32)

    def pin_memory(self) -> ChunkWork:
        # DataLoader(pin_memory=True) calls this: page-locked host memory makes
        # the host-to-GPU copies asynchronous.
        for batch in self.batches:
            batch.inputs = {k: v.pin_memory() for k, v in batch.inputs.items()}
        return self


def text_mask(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True where a row has text worth scoring: not null, not empty, not all whitespace."""
    import pyarrow.compute as pc

    # Not empty and not all whitespace, asked without copying the text (a trim would copy a 50 MB text).
    has_text = pc.and_(pc.greater(pc.binary_length(texts), 0), pc.invert(pc.utf8_is_space(texts)))
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
    work.truncated = np.zeros(len(valid), np.int64)
    if len(positions) == 0:
        return work

    # Picked in Python, not by an Arrow filter: a filter would copy the texts (50 MB for a 50 MB text).
    every = texts.to_pylist()
    strings = [every[i] for i in positions]
    del every
    units, cut = _tokenize(tokenizer, strings, positions, max_length, windows, work)
    if cut:
        return_freed_memory()  # now that the tokenizer's work on the cut texts is freed
    if work.windows is not None:
        positions = np.arange(len(work.windows.row))  # batches score windows; the scorer folds them into rows
    ids = units["input_ids"]
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    work.real_tokens = int(lengths.sum())
    names = list(units)
    flat = {n: _flatten(units[n], work.real_tokens) for n in names}
    pad_values = {n: _pad_value(tokenizer, n) for n in names}
    offsets = np.cumsum(lengths) - lengths  # where each row starts in the flat arrays
    for group in _groups(lengths, batch_tokens, pad_multiple, work.windows):
        # Dynamic padding: to the batch's own longest row, never to the model max.
        inputs = pad_rows(
            flat, pad_values, offsets[group], lengths[group], pad_multiple, left=tokenizer.padding_side == "left"
        )
        work.padded_tokens += int(inputs["input_ids"].numel())
        work.batches.append(Batch(positions[group], inputs))
    return work


def _groups(
    lengths: np.ndarray, batch_tokens: int, pad_multiple: int | None, windows: Windows | None
) -> list[np.ndarray]:
    """The units' batches. With windows, each text's first window (its truncate-mode tokens) is batched with the
    other first windows exactly as truncate mode batches the rows, and the later windows after them: a text that
    fits one window is scored in the batch truncate mode scores it in, so its scores are truncate mode's bit for
    bit (on CPU, a batch's other rows and padding can change a row's scores in the last bits)."""
    if windows is None:
        return cut_batches(lengths, batch_tokens, pad_multiple)
    row = windows.row
    first = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]])) if len(row) else np.zeros(0, np.int64)
    later = np.setdiff1d(np.arange(len(row)), first)
    groups = [first[g] for g in cut_batches(lengths[first], batch_tokens, pad_multiple)]
    return groups + [later[g] for g in cut_batches(lengths[later], batch_tokens, pad_multiple)]


def _tokenize(
    tokenizer: PreTrainedTokenizerBase,
    strings: list[str],
    positions: np.ndarray,
    max_length: int,
    windows: WindowSpec | None,
    work: ChunkWork,
) -> tuple[dict[str, list[list[int]]], int]:
    """The model inputs of each text (or of each window), and how many very long texts were cut to a prefix;
    counts what was truncated of each row, and the windows, in `work`."""
    # A text far longer than the model sees is cut to a prefix first; the tokens cut off count as truncated.
    reach = windows.reach if windows else max_length - tokenizer.num_special_tokens_to_add()
    strings, left_out, cut = seen_prefixes(tokenizer, strings, reach)
    if windows is not None:
        windowed = cut_windows(tokenizer, strings, max_length, windows)
        work.windows = Windows(positions[windowed.text], windowed.text_tokens, windowed.spans)
        work.truncated[positions] = left_out + windowed.truncated
        return windowed.units, cut
    encoded = tokenizer(strings, truncation=True, max_length=max_length)
    # The tokenizer cuts what does not fit into overflowing pieces (no overlap: stride 0), each with its own
    # special tokens: their text tokens are what truncation dropped.
    overflow = [sum(piece.special_tokens_mask.count(0) for piece in e.overflowing) for e in encoded.encodings]
    work.truncated[positions] = left_out + np.asarray(overflow, np.int64)
    return {n: encoded[n] for n in tokenizer.model_input_names if n in encoded}, cut


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
        encoder: Encoders | Unencoded,  # Unencoded: --cache, which tokenizes only what it lacks, after the lookup
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

    def __iter__(self) -> Iterator[ChunkWorks | AsRead | InputEnd | BatchscoreError]:
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

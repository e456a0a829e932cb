"""Encode: a chunk's texts (or their windows) -> length-sorted, padded token-budget batches.

Holds no model, so it runs in DataLoader workers, overlapping reading and tokenizing with the model. Models
whose encoders are alike (the same tokenizer by content, max length, budget, windows) share one encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..plan import Chunk
from ..quarantine.rows import BAD
from .prefixes import return_freed_memory, seen_prefixes
from .windows import Windows, WindowSpec, cut_windows

if TYPE_CHECKING:
    import pyarrow as pa
    from transformers import PreTrainedTokenizerBase


@dataclass
class Batch:
    positions: np.ndarray  # row positions inside the chunk (window positions with --long-text window)
    inputs: dict  # name -> LongTensor [rows, padded_length]

    @property
    def num_rows(self) -> int:
        return len(self.positions)


@dataclass
class EncodedChunk:
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

    def pin_memory(self) -> EncodedChunk:
        # DataLoader(pin_memory=True) calls this: page-locked host memory makes
        # the host-to-GPU copies asynchronous.
        for batch in self.batches:
            batch.inputs = {k: v.pin_memory() for k, v in batch.inputs.items()}
        return self


def chunk_texts(table: pa.Table, text_column: str) -> tuple[np.ndarray, list[str]]:
    """Which rows of a chunk have text to score, and those rows' texts, in order. Numbers and the like are scored
    as their string form (see README)."""
    import pyarrow as pa

    texts = table.column(text_column)
    if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.string())
    valid = text_mask(texts)
    if BAD in table.column_names:  # a bad record's row (quarantine.rows) is never scored
        valid &= table.column(BAD).is_null().to_numpy(zero_copy_only=False)
    # Picked in Python, not by an Arrow filter: a filter would copy the texts (50 MB for a 50 MB text).
    every = texts.to_pylist()
    return valid, [every[i] for i in np.flatnonzero(valid)]


def _without_rejected(
    chunk: Chunk,
    text_column: str,
    tokenizer: PreTrainedTokenizerBase,
    strings: list[str],
    positions: np.ndarray,
    failure: Exception,
) -> Chunk:
    """The chunk with each text the tokenizer rejects marked bad (--on-bad-row quarantine: its row is kept, text
    null); without the BAD column (--on-bad-row fail) the first one is an error naming its row."""
    from ..errors import InputError
    from ..quarantine.rows import BAD, BadRecord, nulled

    rejected: dict[int, BadRecord] = {}
    for position, text in zip(positions, strings):
        try:
            tokenizer([text])
        except Exception as exc:  # whatever the tokenizer raises is its refusal of this text
            message = f"the tokenizer rejects this text: {type(exc).__name__}: {str(exc).splitlines()[0]}"[:500]
            if BAD not in chunk.table.column_names:
                raise InputError(
                    f"Row {chunk.start + int(position):,} of the input: {message}; fix that row, or pass "
                    "--on-bad-row quarantine to set such rows aside."
                ) from None
            raw = text.encode("utf-8", "surrogatepass")
            rejected[int(position)] = BadRecord("tokenizer_rejected", message, raw=raw, kept=True)
    if not rejected:
        raise failure  # not one text alone: the tokenizer's failure is not the input's
    return Chunk(chunk.index, chunk.start, nulled(chunk.table, text_column, rejected), chunk.rows_read)


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
) -> EncodedChunk:
    while True:
        valid, strings = chunk_texts(chunk.table, text_column)
        positions = np.flatnonzero(valid)
        work = EncodedChunk(chunk.select(out_columns), valid)
        work.truncated = np.zeros(len(valid), np.int64)
        if len(positions) == 0:
            return work
        try:
            units, cut = _tokenize(tokenizer, strings, positions, max_length, windows, work)
            break
        except Exception as exc:  # a text the tokenizer rejects (a lone surrogate, a custom tokenizer's refusal)
            # Marked bad (or an error naming it, or `exc` again when no text alone is refused), then once more.
            chunk = _without_rejected(chunk, text_column, tokenizer, strings, positions, exc)
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
    work: EncodedChunk,
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


def pad_multiple(precision: str) -> int | None:
    # Multiples of 8 let fp16/bf16 matmuls use tensor cores; fp32 gains nothing.
    return 8 if precision in ("bf16", "fp16") else None


@dataclass(frozen=True)
class Encoder:
    """One model's way of encoding a chunk: its tokenizer, max length, token budget, pad multiple and windows."""

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
        import json

        tokenizer = self.tokenizer
        # Without its truncation and padding settings: each call sets them, so they say what it was last asked.
        described = json.loads(tokenizer.backend_tokenizer.to_str())
        described.pop("truncation", None)
        described.pop("padding", None)
        content = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
        inputs = tuple(tokenizer.model_input_names)
        settings = (self.text_column, self.max_length, self.batch_tokens, self.pad_multiple, self.windows)
        return (content, tokenizer.padding_side, inputs, tokenizer.pad_token_id, *settings)

    def encode(self, chunk: Chunk, out_columns: Sequence[str]) -> EncodedChunk:
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


class ChunkEncodings:
    """One chunk, encoded by each distinct encoder of a run (they share the chunk's table)."""

    def __init__(self, items: list[EncodedChunk]):
        self.items = items

    @property
    def chunk(self) -> Chunk:
        return self.items[0].chunk

    def pin_memory(self) -> ChunkEncodings:
        for item in self.items:
            item.pin_memory()
        return self


@dataclass(frozen=True)
class Encoders:
    """The distinct encoders of a run's models: what DataLoader workers run on each chunk (no model)."""

    encoders: tuple[Encoder, ...]

    def encode(self, chunk: Chunk, out_columns: Sequence[str]) -> ChunkEncodings:
        return ChunkEncodings([encoder.encode(chunk, out_columns) for encoder in self.encoders])

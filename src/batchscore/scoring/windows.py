"""--long-text window: cut each text into the tokenizer's own overflowing windows, at most --max-windows each.

A text that fits is one window, exactly its truncate-mode tokens. (A text far
longer than its kept windows reach has already been cut to a prefix that holds
them: prefixes.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..config import ModelSpec


@dataclass(frozen=True)
class WindowSpec:
    """How a long text is cut into the tokenizer's overflowing windows."""

    overlap: int  # tokens two consecutive windows share (the tokenizer's stride)
    max_windows: int  # windows kept per text; the rest is not scored (counted as truncated)
    room: int  # text tokens a window holds (--max-length less the special tokens)
    spans: bool = False  # keep each window's character span (for --window-scores)

    @classmethod
    def of(cls, spec: ModelSpec, room: int) -> WindowSpec:
        """A model's windows, by its options, for windows of `room` text tokens."""
        return cls(spec.window_overlap, spec.max_windows, room, spec.window_scores)

    @property
    def reach(self) -> int:
        """Text tokens the kept windows of a text cover, at most: the rest of a text is never scored."""
        return self.room + (self.max_windows - 1) * (self.room - self.overlap)


@dataclass
class Windows:
    """The windows of a chunk's texts, in order: the units its batches score instead of rows."""

    row: np.ndarray  # the chunk row of each window
    text_tokens: np.ndarray  # each window's tokens, special tokens excluded: its weight in a mean
    spans: np.ndarray | None = None  # [windows, 2] character offsets (start, end) into the row's text


@dataclass
class WindowCut:
    """What cutting some texts into windows gave: the kept windows' model inputs, and what was left unscored."""

    text: np.ndarray  # which text (index into the texts cut) each kept window belongs to, ascending
    units: dict[str, list[list[int]]]  # model input name -> each kept window's tokens
    text_tokens: np.ndarray
    spans: np.ndarray | None
    truncated: np.ndarray  # int64 per text: its text tokens no kept window covers (past --max-windows)


def cut_windows(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, spec: WindowSpec) -> WindowCut:
    """The first `spec.max_windows` windows of each text, text by text."""
    encoded = tokenizer(
        texts,
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
    spans = None
    if spec.spans:
        spans = np.zeros((len(kept), 2), dtype=np.int64)
        for j, i in enumerate(kept):
            mask, offsets = encoded.encodings[i].special_tokens_mask, encoded["offset_mapping"][i]
            text = [span for span, special in zip(offsets, mask) if not special]
            spans[j] = (text[0][0], text[-1][1]) if text else (0, 0)
    return WindowCut(
        text=text_of[kept],
        units={n: [encoded[n][i] for i in kept] for n in tokenizer.model_input_names if n in encoded},
        text_tokens=text_tokens[kept],
        spans=spans,
        # Each window after a text's first repeats `overlap` tokens of the one before: the rest is new text.
        truncated=np.bincount(
            text_of[dropped], weights=text_tokens[dropped] - spec.overlap, minlength=len(texts)
        ).astype(np.int64),
    )

"""A text far longer than the model will ever see (a 50 MB log, a whole book) is cut to the prefix it can see.

Tokenizing a 50 MB text whole takes gigabytes: the tokenizer keeps every
token's offsets and, truncating, every overflowing piece. Such a text is
counted in small segments instead, so the run can still say how many of its
tokens were never scored, and only a prefix that reaches past what the model
sees (its --max-length, or its --max-windows windows) is tokenized for real.
The prefix is cut at a space, past a margin of tokens, so the tokens the
model sees are the whole text's tokens: the results are those of the whole text.

A run of more than SPACE_SEARCH characters without whitespace (a base64 blob, a
30 MB string of letters) has no space to cut at: it is cut where it is, and a
segment cut so counts its own tokens (a WordPiece tokenizer makes one [UNK] of
each). Such texts can hold very few tokens for their size, so counting alone
would never cut them (window mode reaches 114,000 tokens, a 30 MB word counts
1,831) and the whole text would be tokenized: 2.9 GB for 30 MB. A prefix also
ends at such a cut when the cut provably changes no token the model sees: the
text from the run's start to its end is one run of letters and digits (so no
tokenizer splits it further on whitespace or punctuation), and the tokenizer
gives the same tokens for its first GIANT_PROBE and 2 x GIANT_PROBE characters
(WordPiece makes one [UNK] of any word over 100 characters; a tokenizer whose
tokens grow with the run, byte-level BPE or a SentencePiece model, fails the
probe and reaches its tokens by counting). A run with punctuation in it, or
followed by more words, is counted to its needed tokens as any text: the
prefix then holds every token the whole text gives the model. Memory stays that
of a text with words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# A text longer than `reach` tokens at this many characters per token is cut (English runs about 4-6).
CHARS_PER_TOKEN = 4
# A prefix runs this many tokens past the reach, so that where it is cut cannot change the tokens seen.
MARGIN_TOKENS = 64
SEGMENT_CHARS = 1 << 14  # a long text is counted this many characters at a time...
SEGMENTS_PER_CALL = 8  # ...a few segments per tokenizer call (which tokenizes them in parallel)
SPACE_SEARCH = 4096  # how far back a cut looks for whitespace
# Characters of a run without whitespace tokenized twice (this many, then twice as many) to see whether the
# tokenizer makes the same tokens of any longer run (WordPiece: one [UNK] past 100 characters).
GIANT_PROBE = 1024
WHITESPACE = " \t\n\r\x0b\x0c"


class Seen(NamedTuple):
    texts: list[str]  # each very long text cut to a prefix that holds its first `reach` tokens and a margin
    left_out: np.ndarray  # int64 per text: its text tokens the cut left out (never scored: they count as truncated)
    cut: int  # how many texts were cut


def seen_prefixes(tokenizer: PreTrainedTokenizerBase, texts: list[str], reach: int) -> Seen:
    longest = (reach + MARGIN_TOKENS) * CHARS_PER_TOKEN
    left_out = np.zeros(len(texts), np.int64)
    long = [i for i, text in enumerate(texts) if len(text) > longest]
    if not long:
        return Seen(texts, left_out, 0)
    texts = list(texts)
    for i in long:
        end, left_out[i] = _prefix(tokenizer, texts[i], reach + MARGIN_TOKENS)
        texts[i] = texts[i][:end]
    return Seen(texts, left_out, len(long))


def _prefix(tokenizer: PreTrainedTokenizerBase, text: str, need: int) -> tuple[int, int]:
    """Where the first segments of `text` hold `need` tokens (or end at a cut inside one giant word that runs to
    the text's end, which adds no token past it: `_one_giant_word`), and how many tokens come after that."""
    total, end, before = 0, len(text), None
    start, run, refused = 0, 0, -1  # where the segment, and the run without whitespace it ends in, start
    for segment_end, tokens, forced in _segment_tokens(tokenizer, text):
        total += tokens
        space = max(text.rfind(c, start, segment_end) for c in WHITESPACE)  # other whitespace fails isalnum: no cut
        run = space + 1 if space >= 0 else run
        if before is None and total >= need:
            end, before = segment_end, total
        elif before is None and forced and run != refused and segment_end - run >= 2 * GIANT_PROBE:
            if _one_giant_word(tokenizer, text, run, segment_end):
                end, before = segment_end, total
            else:
                refused = run  # a later cut in the same run is refused for the same reason
        start = segment_end
    return end, total - before if before is not None else 0


def _one_giant_word(tokenizer: PreTrainedTokenizerBase, text: str, run: int, cut: int) -> bool:
    """True if cutting `text` at `cut`, inside the run without whitespace that starts at `run`, leaves the model the
    whole text's tokens: the run goes on to the text's end as letters and digits only, and its tokens do not
    change as it grows."""
    if not (text[run:cut].isalnum() and text[cut:].isalnum()):
        return False
    heads = [text[run : run + GIANT_PROBE], text[run : run + 2 * GIANT_PROBE]]
    ids = tokenizer(heads, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return bool(ids["input_ids"][0] == ids["input_ids"][1])


def _segment_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> Iterator[tuple[int, int, bool]]:
    """(where a segment ends, its text tokens, whether it ends inside a run without whitespace) for segments of
    `text` cut at spaces, tokenized a few at a time: memory follows the segment size, not the text's."""
    start = 0
    while start < len(text):
        segments: list[tuple[int, int, bool]] = []
        while start < len(text) and len(segments) < SEGMENTS_PER_CALL:
            end = _cut_at_space(text, start + SEGMENT_CHARS)
            end = end if end > start else min(start + SEGMENT_CHARS, len(text))
            segments.append((start, end, end < len(text) and not _at_space(text, end)))
            start = end
        ids = tokenizer(
            [text[a:b] for a, b, _ in segments],
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # a segment is no model input: no warning that it is longer than the model takes
        )["input_ids"]
        yield from zip((b for _, b, _ in segments), (len(row) for row in ids), (f for _, _, f in segments))


def _at_space(text: str, at: int) -> bool:
    return text[at].isspace() or text[at - 1].isspace()


def _cut_at_space(text: str, end: int) -> int:
    """Where to cut `text` near `end`: before a whitespace character, so no word is split and the tokens before
    the cut are the whole text's tokens (a text with no space nearby is cut where it is; the margin covers it)."""
    if end >= len(text):
        return len(text)
    for at in range(end, max(end - SPACE_SEARCH, 0), -1):
        if text[at].isspace():
            return at
    return end


def return_freed_memory() -> None:
    """Hand what tokenizing a huge text freed back to the system: glibc keeps it in per-thread arenas that
    the Arrow reader and writer cannot use, so a 50 MB text would raise the process's peak when it is written."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl): nothing to do
        pass

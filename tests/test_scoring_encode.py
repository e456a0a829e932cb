"""Unit tests of the encode stage (batchscore.scoring.encode): which rows have text, their batches, truncation,
windows, and which encoders share one encoding.

Oracles: Python's own str/strip for the text mask, the tokenizer called on each text alone for tokens and
counts, and the budget and window rules written out here as arithmetic; never encode's own helpers.
"""

import math
import random

import numpy as np
import pyarrow as pa
import pytest
from transformers import AutoTokenizer

from batchscore.plan import Chunk
from batchscore.scoring.encode import Encoder, Encoders, chunk_texts, encode_chunk
from batchscore.scoring.windows import WindowSpec
from helpers import tokenizer_dir

WORDS = "good bad movie plot actor great awful slow fun boring story music scene ending love hate".split()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tokenizer_dir())


def sentences(n: int, seed: int, most: int = 40) -> list:
    """`n` texts of 1 to `most` words; every 7th row has none (None, "" or blanks in turn)."""
    rng = random.Random(seed)
    blanks = [None, "", "  \t "]
    return [
        blanks[(i // 7) % 3] if i % 7 == 3 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, most)))
        for i in range(n)
    ]


def has_text(value) -> bool:
    return value is not None and str(value).strip() != ""


def text_tokens(tokenizer, text: str) -> list[int]:
    """The text's tokens, whole, without special tokens."""
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def chunk_of(column, **more) -> Chunk:
    table = pa.table({"id": list(range(len(column))), "text": pa.array(column, pa.string()), **more})
    return Chunk(0, 0, table)


def encode(tokenizer, column, *, max_length=512, batch_tokens=256, pad_multiple=None, windows=None):
    return encode_chunk(
        chunk_of(column),
        text_column="text",
        out_columns=["id"],
        tokenizer=tokenizer,
        max_length=max_length,
        batch_tokens=batch_tokens,
        pad_multiple=pad_multiple,
        windows=windows,
    )


def batch_rows(work, tokenizer):
    """(position, real input_ids, real token_type_ids, padded ids) of every row of every batch."""
    out = []
    for batch in work.batches:
        ids = batch.inputs["input_ids"].numpy()
        mask = batch.inputs["attention_mask"].numpy().astype(bool)
        types = batch.inputs.get("token_type_ids")
        for j, position in enumerate(batch.positions):
            real_types = None if types is None else types.numpy()[j][mask[j]].tolist()
            out.append((int(position), ids[j][mask[j]].tolist(), real_types, ids[j][~mask[j]].tolist()))
    return out


# --- chunk_texts -------------------------------------------------------------------------------------------------


def test_chunk_texts_masks_rows_without_text():
    column = ["first", None, "", "   ", "\t\n \r", "second one", "\u3000\u2003", " padded ", "x"]
    valid, texts = chunk_texts(pa.table({"text": pa.array(column, pa.string())}), "text")
    assert valid.dtype == bool
    assert valid.tolist() == [has_text(t) for t in column]
    # The texts themselves, untrimmed, in row order.
    assert texts == ["first", "second one", " padded ", "x"]


@pytest.mark.parametrize("kind", ["large_string", "chunked", "dictionary"])
def test_chunk_texts_other_string_columns(kind):
    column = ["zeta", None, "alpha", " ", "mid"]
    if kind == "large_string":
        array = pa.array(column, pa.large_string())
    elif kind == "chunked":
        array = pa.chunked_array([pa.array(column[:2], pa.string()), pa.array(column[2:], pa.string())])
    else:
        array = pa.array(column, pa.string()).dictionary_encode()
    valid, texts = chunk_texts(pa.table({"text": array}), "text")
    assert valid.tolist() == [True, False, True, False, True]
    assert texts == ["zeta", "alpha", "mid"]


@pytest.mark.parametrize(
    "values, kind",
    [([7, None, -3, 0, 1200], pa.int64()), ([1.5, None, -0.25, 10.0e-3], pa.float64()), ([3, None, 250], pa.int16())],
)
def test_chunk_texts_scores_numbers_as_their_string_form(values, kind):
    valid, texts = chunk_texts(pa.table({"text": pa.array(values, kind)}), "text")
    assert valid.tolist() == [v is not None for v in values]  # 0 is a text ("0"), not an empty row
    assert texts == [str(v) for v in values if v is not None]


def test_chunk_texts_keeps_row_order_among_other_columns():
    column = ["c third", None, "a first", "b second", "", "a first"]
    table = pa.table({"id": [9, 8, 7, 6, 5, 4], "text": column, "other": list("uvwxyz")})
    valid, texts = chunk_texts(table, "text")
    assert np.flatnonzero(valid).tolist() == [0, 2, 3, 5]
    assert texts == ["c third", "a first", "b second", "a first"]


# --- encode_chunk ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_multiple", [None, 8])
@pytest.mark.parametrize("batch_tokens", [40, 200])
def test_encode_chunk_batches_every_row_once_within_budget(tokenizer, pad_multiple, batch_tokens):
    column = sentences(40, seed=batch_tokens)
    work = encode(tokenizer, column, batch_tokens=batch_tokens, pad_multiple=pad_multiple)
    wanted = [i for i, t in enumerate(column) if has_text(t)]
    assert work.valid.tolist() == [has_text(t) for t in column]
    assert work.chunk.table.column_names == ["id"]
    rows = batch_rows(work, tokenizer)
    assert sorted(p for p, *_ in rows) == wanted  # every valid row, each in exactly one batch
    for position, ids, types, pads in rows:
        alone = tokenizer(column[position], truncation=True, max_length=512)
        assert ids == alone["input_ids"], position
        if types is not None:
            assert types == alone["token_type_ids"], position
        assert set(pads) <= {tokenizer.pad_token_id}
    real = padded = 0
    for batch in work.batches:
        count, width = batch.inputs["input_ids"].shape
        lengths = batch.inputs["attention_mask"].sum(dim=1).numpy()
        longest = int(lengths.max())
        # Padded to the batch's own longest row (to a multiple of 8 for 16-bit precisions), never further.
        assert width == (math.ceil(longest / pad_multiple) * pad_multiple if pad_multiple else longest)
        if count > 1:
            assert count * width <= batch_tokens
            assert lengths.sum() >= 0.9 * count * width  # at most 10% padding
        real += int(lengths.sum())
        padded += count * width
    assert work.real_tokens == real == sum(len(tokenizer(column[p])["input_ids"]) for p in wanted)
    assert work.padded_tokens == padded


def test_encode_chunk_packs_equal_rows_to_the_budget(tokenizer):
    column = ["good movie great story"] * 20  # 4 words -> 6 tokens with [CLS] and [SEP]
    assert len(tokenizer(column[0])["input_ids"]) == 6
    work = encode(tokenizer, column, batch_tokens=6 * 4)
    assert [b.num_rows for b in work.batches] == [4] * 5


def test_encode_chunk_gives_a_row_over_the_budget_a_batch_of_its_own(tokenizer):
    column = ["fun"] * 3 + [" ".join(WORDS * 3)]
    work = encode(tokenizer, column, batch_tokens=16)
    sizes = {int(p): b.num_rows for b in work.batches for p in b.positions}
    assert sizes[3] == 1
    assert sum(b.num_rows for b in work.batches) == 4


def test_encode_chunk_with_no_text(tokenizer):
    work = encode(tokenizer, [None, "", "  "])
    assert work.batches == [] and work.real_tokens == 0 and work.padded_tokens == 0
    assert work.valid.tolist() == [False] * 3
    assert work.truncated.tolist() == [0, 0, 0]


def test_encode_chunk_counts_truncated_tokens(tokenizer):
    max_length = 10  # 8 text tokens and [CLS], [SEP]
    column = sentences(30, seed=5) + ["good"] * 2 + [" ".join(WORDS * 40)]  # the last is cut to a prefix first
    work = encode(tokenizer, column, max_length=max_length)
    expected = [max(0, len(text_tokens(tokenizer, t)) - (max_length - 2)) if has_text(t) else 0 for t in column]
    assert work.truncated.dtype == np.int64
    assert work.truncated.tolist() == expected
    assert sum(e > 0 for e in expected) > 10 and expected[-1] > 500
    for position, ids, _, _ in batch_rows(work, tokenizer):
        assert ids == tokenizer(column[position], truncation=True, max_length=max_length)["input_ids"]


def expected_windows(count: int, room: int, overlap: int, most: int) -> tuple[int, int]:
    """(windows kept, tokens no kept window covers) for a text of `count` tokens."""
    step = room - overlap
    windows = 1 if count <= room else 1 + math.ceil((count - room) / step)
    reach = room + (most - 1) * step
    return min(windows, most), max(0, count - reach)


@pytest.mark.parametrize("spans", [False, True])
def test_encode_chunk_windows(tokenizer, spans):
    max_length, overlap, most = 12, 3, 3
    room = max_length - 2
    spec = WindowSpec(overlap=overlap, max_windows=most, room=room, spans=spans)
    rng = random.Random(11)
    column = [" ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 4, 10, 11, 17, 24, 25, 40]))) for _ in range(24)]
    column[5], column[9] = None, "  "
    column.append(" ".join(WORDS * 30))  # far past the windows' reach: cut to a prefix first
    work = encode(tokenizer, column, max_length=max_length, windows=spec, batch_tokens=64)
    windows = work.windows
    assert windows is not None
    assert (np.diff(windows.row) >= 0).all()  # windows come row by row
    counts, truncated = [], []
    for text in column:
        kept, left = (
            expected_windows(len(text_tokens(tokenizer, text)), room, overlap, most) if has_text(text) else (0, 0)
        )
        counts.append(kept)
        truncated.append(left)
    assert work.row_windows().tolist() == counts
    assert work.truncated.tolist() == truncated
    assert any(c == 1 for c in counts) and any(c == 2 for c in counts) and any(t > 0 for t in truncated)
    # Every window in exactly one batch; each window's tokens are its slice of the whole text's tokens.
    units = batch_rows(work, tokenizer)
    assert sorted(p for p, *_ in units) == list(range(len(windows.row)))
    place = np.arange(len(windows.row)) - np.searchsorted(windows.row, windows.row)  # a window's place in its row
    for unit, ids, _, _ in units:
        row = int(windows.row[unit])
        whole = text_tokens(tokenizer, column[row])
        start = int(place[unit]) * (room - overlap)
        text = whole[start : start + room]
        assert ids == [tokenizer.cls_token_id, *text, tokenizer.sep_token_id], (row, int(place[unit]))
        assert windows.text_tokens[unit] == len(text)
        if counts[row] == 1:  # one window: exactly its truncate-mode tokens
            assert ids == tokenizer(column[row], truncation=True, max_length=max_length)["input_ids"]
    if spans:
        assert windows.spans is not None and windows.spans.shape == (len(windows.row), 2)
        for unit, row in enumerate(windows.row):
            start, end = windows.spans[unit]
            assert column[row][start:end].strip() != ""
    else:
        assert windows.spans is None


def test_windows_first_windows_batched_as_truncate_rows(tokenizer):
    """A row's first window is batched with the other first windows exactly as truncate mode batches the rows."""
    max_length = 12
    spec = WindowSpec(overlap=2, max_windows=4, room=max_length - 2)
    column = sentences(30, seed=8, most=30)
    truncate = encode(tokenizer, column, max_length=max_length, batch_tokens=48)
    windowed = encode(tokenizer, column, max_length=max_length, batch_tokens=48, windows=spec)
    row = windowed.windows.row
    first = set(np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]])).tolist())
    firsts = [b for b in windowed.batches if set(b.positions.tolist()) <= first]
    assert len(firsts) == len(truncate.batches)
    assert all(a is b for a, b in zip(windowed.batches, firsts))
    for got, want in zip(firsts, truncate.batches):
        assert row[got.positions].tolist() == want.positions.tolist()
        for name, tensor in want.inputs.items():
            assert got.inputs[name].equal(tensor), name
    # The later windows come after, in batches of their own.
    later = windowed.batches[len(firsts) :]
    assert all(not set(b.positions.tolist()) & first for b in later)


# --- encoders ----------------------------------------------------------------------------------------------------


def test_sharing_key_by_tokenizer_content(multilabel_model, three_label_model):
    # Fresh loads: the key is asked as a run asks it, before any chunk is encoded (see the next test).
    tokenizer, again = (AutoTokenizer.from_pretrained(tokenizer_dir()) for _ in range(2))
    key = Encoder(tokenizer, "text", 128, 4096, None).sharing_key()
    assert Encoder(again, "text", 128, 4096, None).sharing_key() == key
    # The same tokenizer files saved beside two models: one encoding serves both.
    saved = [AutoTokenizer.from_pretrained(m) for m in (multilabel_model, three_label_model)]
    assert (
        Encoder(saved[0], "text", 128, 4096, None).sharing_key()
        == Encoder(saved[1], "text", 128, 4096, None).sharing_key()
    )
    # Anything that changes the batches changes the key.
    assert Encoder(tokenizer, "text", 64, 4096, None).sharing_key() != key
    assert Encoder(tokenizer, "text", 128, 2048, None).sharing_key() != key
    assert Encoder(tokenizer, "text", 128, 4096, 8).sharing_key() != key
    assert Encoder(tokenizer, "body", 128, 4096, None).sharing_key() != key
    assert Encoder(tokenizer, "text", 128, 4096, None, WindowSpec(16, 4, 126)).sharing_key() != key
    grown = AutoTokenizer.from_pretrained(tokenizer_dir())
    grown.add_tokens(["zzqxword"])
    assert Encoder(grown, "text", 128, 4096, None).sharing_key() != key
    left = AutoTokenizer.from_pretrained(tokenizer_dir())
    left.padding_side = "left"
    assert Encoder(left, "text", 128, 4096, None).sharing_key() != key


def test_sharing_key_unchanged_by_encoding():
    """Encoding a chunk leaves the tokenizer's key as it was (its content did not change)."""
    fresh = AutoTokenizer.from_pretrained(tokenizer_dir())
    used = AutoTokenizer.from_pretrained(tokenizer_dir())
    encoder = Encoder(used, "text", 16, 4096, None)
    encoder.encode(chunk_of(sentences(10, seed=2)), ["id"])
    assert encoder.sharing_key() == Encoder(fresh, "text", 16, 4096, None).sharing_key()


def test_encoders_encode_one_encoding_per_encoder(tokenizer):
    column = sentences(20, seed=4)
    long_one = Encoder(tokenizer, "text", 16, 4096, None)
    short_one = Encoder(tokenizer, "text", 8, 4096, None)
    encodings = Encoders((long_one, short_one)).encode(chunk_of(column), ["id"])
    assert len(encodings.items) == 2
    assert encodings.chunk.table.column_names == ["id"]
    for item, max_length in zip(encodings.items, (16, 8)):
        assert item.chunk.table.column("id").to_pylist() == list(range(len(column)))
        expected = [max(0, len(text_tokens(tokenizer, t)) - (max_length - 2)) if has_text(t) else 0 for t in column]
        assert item.truncated.tolist() == expected
        assert max(b.inputs["input_ids"].shape[1] for b in item.batches) <= max_length


def test_scoring_core_encodes_once_per_distinct_encoder(multilabel_model, three_label_model):
    from batchscore.config import ModelSpec
    from batchscore.scoring.core import ScoringCore
    from batchscore.scoring.load import load_model
    from batchscore.scoring.models import ModelScorer
    from batchscore.scoring.rules import ScoringRules

    def scorer(model, max_length=None):
        loaded = load_model(model, None, "fp32", max_length=max_length)
        spec = ModelSpec(model=model, max_length=max_length)
        return ModelScorer(loaded, ScoringRules(spec=spec, batch_tokens=512))

    models = [scorer(three_label_model), scorer(multilabel_model), scorer(three_label_model, max_length=16)]
    core = ScoringCore(models)
    assert len(core.encoders.encoders) == 2
    assert core.tokens_from == [0, 0, 2]
    column = sentences(12, seed=6)
    encodings = core.worker_step.encode(chunk_of(column), ["id"])
    assert len(encodings.items) == 2
    expected = [max(0, len(text_tokens(models[0].loaded.tokenizer, t)) - 14) if has_text(t) else 0 for t in column]
    assert encodings.items[1].truncated.tolist() == expected

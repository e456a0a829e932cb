"""The course's "Behind the pipeline" example, and our batching invariants on it."""

import numpy as np
import pyarrow as pa

from batchscore.plan import Chunk
from batchscore.scoring.encode import encode_chunk
from helpers import COURSE_SENTENCES

COURSE_IDS = [
    [101, 1045, 1005, 2310, 2042, 3403, 2005, 1037, 17662, 12172, 2607, 2026, 2878, 2166, 1012, 102],
    [101, 1045, 5223, 2023, 2061, 2172, 999, 102, 0, 0, 0, 0, 0, 0, 0, 0],
]


def test_course_input_ids_and_attention_mask(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded = tokenizer(COURSE_SENTENCES, padding=True, truncation=True, return_tensors="pt")
    assert encoded["input_ids"].tolist() == COURSE_IDS
    assert encoded["attention_mask"].tolist() == [[1 if t else 0 for t in row] for row in COURSE_IDS]


def test_encode_chunk_pads_each_batch_to_its_own_longest_row(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = COURSE_SENTENCES + ["", None, "ok"]
    chunk = Chunk(0, 0, pa.table({"text": pa.array(texts, pa.string())}))
    # Budget of 16 tokens: the 16-token sentence must sit alone, the short ones together.
    work = encode_chunk(
        chunk,
        text_column="text",
        out_columns=["text"],
        tokenizer=tokenizer,
        max_length=512,
        batch_tokens=16,
        pad_multiple=None,
    )
    assert work.valid.tolist() == [True, True, False, False, True]
    by_row = {}
    for batch in work.batches:
        ids = batch.inputs["input_ids"]
        assert ids.shape[0] * ids.shape[1] <= 16 or ids.shape[0] == 1
        # Padded to the batch's own longest row: some row has no padding.
        assert batch.inputs["attention_mask"].sum(dim=1).max().item() == ids.shape[1]
        for pos, row, mask in zip(batch.positions, ids.tolist(), batch.inputs["attention_mask"].tolist()):
            by_row[int(pos)] = [t for t, m in zip(row, mask) if m]
    assert by_row[0] == COURSE_IDS[0]
    assert by_row[1] == [t for t in COURSE_IDS[1] if t]
    assert by_row[4] == [101, 7929, 102]  # "ok"
    assert sorted(by_row) == [0, 1, 4]
    assert work.real_tokens == 16 + 8 + 3


def test_pad_multiple_of_8(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    chunk = Chunk(0, 0, pa.table({"text": ["ok", "I hate this so much!"]}))
    work = encode_chunk(
        chunk,
        text_column="text",
        out_columns=["text"],
        tokenizer=tokenizer,
        max_length=512,
        batch_tokens=1000,
        pad_multiple=8,
    )
    assert [b.inputs["input_ids"].shape[1] % 8 for b in work.batches] == [0] * len(work.batches)
    assert np.array_equal(np.sort(np.concatenate([b.positions for b in work.batches])), [0, 1])


def test_numpy_padding_equals_tokenizer_pad(tiny_model):
    """pad_rows builds the same tensors as tokenizer.pad, for either padding side and any multiple."""
    import torch
    from transformers import AutoTokenizer

    from batchscore.scoring.encode import _flatten, _pad_value, pad_rows

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["ok", "I hate this so much!", "a much longer sentence about nothing at all, really", "x y z"]
    encoded = tokenizer(texts, truncation=True, max_length=512)
    names = [n for n in tokenizer.model_input_names if n in encoded]
    assert "token_type_ids" in names and "attention_mask" in names
    lengths = np.array([len(r) for r in encoded["input_ids"]])
    flat = {n: _flatten(encoded[n], int(lengths.sum())) for n in names}
    starts = np.cumsum(lengths) - lengths
    group = np.array([3, 0, 2])  # any subset, in any order
    for side in ("right", "left"):
        tokenizer.padding_side = side
        for multiple in (None, 8):
            features = {n: [encoded[n][i] for i in group] for n in names}
            expected = tokenizer.pad(features, padding=True, pad_to_multiple_of=multiple, return_tensors="pt")
            got = pad_rows(
                flat,
                {n: _pad_value(tokenizer, n) for n in names},
                starts[group],
                lengths[group],
                multiple,
                left=side == "left",
            )
            for name in names:
                assert torch.equal(got[name], expected[name]), (side, multiple, name)

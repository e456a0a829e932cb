"""The course's "Behind the pipeline" example, and our batching invariants on it."""

import numpy as np
import pyarrow as pa

from batchscore.batches import encode_chunk
from batchscore.plan import Chunk
from conftest import COURSE_SENTENCES

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
    work = encode_chunk(chunk, text_column="text", out_columns=["text"], tokenizer=tokenizer, max_length=512,
                        batch_tokens=16, pad_multiple=None)
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
    work = encode_chunk(chunk, text_column="text", out_columns=["text"], tokenizer=tokenizer, max_length=512,
                        batch_tokens=1000, pad_multiple=8)
    assert [b.inputs["input_ids"].shape[1] % 8 for b in work.batches] == [0] * len(work.batches)
    assert np.array_equal(np.sort(np.concatenate([b.positions for b in work.batches])), [0, 1])

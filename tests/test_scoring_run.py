"""Unit tests of the run stage (batchscore.scoring.run): a chunk's batches through the model, logits in row order.

The oracle is the model itself run on each row alone (no padding, no batch), here in the test.
"""

import random

import numpy as np
import pyarrow as pa
import pytest
import torch

from batchscore.plan import Chunk
from batchscore.scoring.encode import Batch, encode_chunk
from batchscore.scoring.load import load_model
from batchscore.scoring.run import chunk_logits

WORDS = "good bad movie plot actor great awful slow fun boring story music scene ending love hate".split()
TOLERANCE = 1e-5

_loaded: dict = {}


@pytest.fixture(params=["tiny_model", "three_label_model"])
def loaded(request):
    """Each model loaded once for the module: DistilBERT (2 labels) and BERT (3 labels, token type ids)."""
    name = request.param
    if name not in _loaded:
        _loaded[name] = load_model(request.getfixturevalue(name), None, "fp32", max_length=32)
    return _loaded[name]


def column(n: int = 24, seed: int = 0) -> list:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 45))) for _ in range(n)]
    texts[3], texts[10], texts[17] = None, "", "   "
    return texts


def alone(loaded, text: str) -> np.ndarray:
    """The model's logits for one text, by itself."""
    inputs = loaded.tokenizer(text, truncation=True, max_length=loaded.max_length, return_tensors="pt")
    with torch.inference_mode():
        return loaded.model(**inputs).logits[0].float().numpy()


def encoded(loaded, texts, batch_tokens=64):
    return encode_chunk(
        Chunk(0, 0, pa.table({"text": pa.array(texts, pa.string())})),
        text_column="text",
        out_columns=[],
        tokenizer=loaded.tokenizer,
        max_length=loaded.max_length,
        batch_tokens=batch_tokens,
        pad_multiple=None,
    )


def check_rows(loaded, logits, texts):
    assert logits.shape == (len(texts), len(loaded.labels))
    assert logits.dtype == np.float32
    for i, text in enumerate(texts):
        if text is None or not text.strip():
            assert (logits[i] == 0).all(), i
        else:
            worst = float(np.abs(logits[i] - alone(loaded, text)).max())
            assert worst <= TOLERANCE, (i, worst)


def test_chunk_logits_in_row_order(loaded):
    texts = column()
    work = encoded(loaded, texts)
    assert len(work.batches) >= 3  # several batches, each of rows sorted by length, not by row
    logits = chunk_logits(loaded, work.batches, len(texts))
    check_rows(loaded, logits, texts)


def test_chunk_logits_whatever_the_batch_order(loaded):
    texts = column(seed=1)
    work = encoded(loaded, texts)
    expected = chunk_logits(loaded, work.batches, len(texts))
    order = list(range(len(work.batches)))
    random.Random(2).shuffle(order)
    for batches in (work.batches[::-1], [work.batches[i] for i in order]):
        got = chunk_logits(loaded, iter(batches), len(texts))  # any iterable, read once
        assert np.array_equal(got, expected)
    check_rows(loaded, expected, texts)


def test_chunk_logits_of_batches_built_by_hand(loaded):
    """Positions in any order inside a batch; rows in no batch keep zeros."""
    texts = ["awful boring plot", "great fun", "love the music and the ending", "slow", "good good good movie"]
    tokenizer = loaded.tokenizer

    def batch(rows):
        inputs = tokenizer([texts[r] for r in rows], padding=True, return_tensors="pt")
        return Batch(np.asarray(rows), dict(inputs))

    logits = chunk_logits(loaded, [batch([4, 1]), batch([0]), batch([3, 2])], 7)
    assert logits.shape == (7, len(loaded.labels))
    for r, text in enumerate(texts):
        assert np.abs(logits[r] - alone(loaded, text)).max() <= TOLERANCE, r
    assert (logits[5:] == 0).all()


@pytest.mark.parametrize("rows", [0, 1, 5])
def test_chunk_logits_without_batches(loaded, rows):
    logits = chunk_logits(loaded, [], rows)
    assert logits.shape == (rows, len(loaded.labels))
    assert logits.dtype == np.float32
    assert not logits.any()

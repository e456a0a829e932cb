"""Unit tests of the cache step (batchscore.scoring.cache_step): lookup, the misses scored once, add, and the
rows rebuilt from the cache.

Expected values come from the texts themselves (which repeat, in which order), from the tokenizer and the model
run on each text alone, and from scoring the same texts without any cache.
"""

import numpy as np
import pyarrow as pa
import pytest
import torch

from batchscore.cache.store import ResultCache
from batchscore.config import ModelSpec
from batchscore.plan import Chunk
from batchscore.scoring.cache_step import CacheStep, LookupFirst, ReadChunk
from batchscore.scoring.encode import chunk_texts
from batchscore.scoring.load import load_model
from batchscore.scoring.models import ModelScorer
from batchscore.scoring.rules import ScoringRules

MAX_LENGTH = 12  # 10 text tokens: the longer texts below are truncated
OVERLAP, MAX_WINDOWS = 2, 2  # window mode: windows of 10 text tokens, 8 new; 18 tokens reached

COLUMN = [
    "great fun",
    "awful boring plot",
    None,
    "great fun",
    "   ",
    "the story and the music and the ending were slow and the actor was bad and the plot made no sense at all",
    "awful boring plot",
    "great fun",
    "",
    "love it",
]
DISTINCT_IN_ORDER = [
    "great fun",
    "awful boring plot",
    "the story and the music and the ending were slow and the actor was bad and the plot made no sense at all",
    "love it",
]

_loaded: dict = {}


@pytest.fixture(params=[False, True], ids=["truncate", "window"])
def scorer(request, tiny_model):
    if "model" not in _loaded:
        _loaded["model"] = load_model(tiny_model, None, "fp32", max_length=MAX_LENGTH)
    options = {"long_text": "window", "window_overlap": OVERLAP, "max_windows": MAX_WINDOWS} if request.param else {}
    spec = ModelSpec(model=tiny_model, max_length=MAX_LENGTH, **options)
    return ModelScorer(_loaded["model"], ScoringRules(spec=spec, batch_tokens=256))


def read_chunk(column) -> Chunk:
    return Chunk(0, 0, pa.table({"id": list(range(len(column))), "text": pa.array(column, pa.string())}))


def softmax_alone(model: ModelScorer, text: str) -> np.ndarray:
    loaded = model.loaded
    inputs = loaded.tokenizer(text, truncation=True, max_length=loaded.max_length, return_tensors="pt")
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits[0].double().numpy()
    return np.exp(logits) / np.exp(logits).sum()


def text_tokens(model: ModelScorer, text: str) -> int:
    return len(model.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def score_fresh(step: CacheStep, model: ModelScorer, column):
    """One chunk through the step as the core puts it: lookup, the misses encoded and scored, added."""
    read = read_chunk(column)
    valid, texts = chunk_texts(read.table, "text")
    lookup = step.lookup(texts)
    misses = step.misses(read, "text", lookup, np.flatnonzero(valid))
    work = model.encoder.encode(misses, [])
    fresh = model.run(work)
    step.add(lookup, [fresh])
    return valid, lookup, misses, work, fresh


def test_first_lookup_misses_and_scores_each_text_once(tmp_path, scorer):
    step = CacheStep(ResultCache(str(tmp_path / "cache")), [scorer])
    read = read_chunk(COLUMN)
    valid, texts = chunk_texts(read.table, "text")
    lookup = step.lookup(texts)
    assert len(lookup.found) == 1 and not lookup.found[0].hit.any()
    assert len(lookup.distinct) == len(DISTINCT_IN_ORDER)
    # The texts to score, in the order of their first rows; every row with text counts, repeats too.
    assert [texts[i] for i in lookup.first[lookup.wanted]] == DISTINCT_IN_ORDER
    assert lookup.rows_scored == sum(t is not None and t.strip() != "" for t in COLUMN) == 7
    misses = step.misses(read, "text", lookup, np.flatnonzero(valid))
    assert misses.table.column_names == ["text"]
    assert misses.table.column("text").to_pylist() == DISTINCT_IN_ORDER
    work = scorer.encoder.encode(misses, [])
    units = len(DISTINCT_IN_ORDER) if work.windows is None else len(work.windows.row)
    assert sum(b.num_rows for b in work.batches) == units  # each distinct text (or window) scored once


def test_rows_from_the_cache_equal_the_fresh_scores(tmp_path, scorer):
    path = str(tmp_path / "cache")
    step = CacheStep(ResultCache(path), [scorer])
    valid, lookup, misses, work, fresh = score_fresh(step, scorer, COLUMN)
    assert step.flush() == []
    if not scorer.rules.windowed:  # one window each otherwise; the model alone is the oracle here
        for text, scores in zip(DISTINCT_IN_ORDER, fresh.scores):
            np.testing.assert_allclose(scores, softmax_alone(scorer, text), atol=1e-6)
    # Each row's scores: its text's fresh scores (zeros without text); truncation counted on every row.
    where = {text: i for i, text in enumerate(DISTINCT_IN_ORDER)}
    expected = np.zeros((len(COLUMN), 2), np.float32)
    truncated = np.zeros(len(COLUMN), np.int64)
    windows = np.zeros(len(COLUMN), np.int32)
    counts = np.ones(len(DISTINCT_IN_ORDER), np.int32) if fresh.windows is None else fresh.windows
    for row, text in enumerate(COLUMN):
        if valid[row]:
            expected[row] = fresh.scores[where[text]]
            windows[row] = counts[where[text]]
            room = MAX_LENGTH - 2
            reach = room + (MAX_WINDOWS - 1) * (room - OVERLAP) if scorer.rules.windowed else room
            truncated[row] = max(0, text_tokens(scorer, text) - reach)
    assert truncated.any() and (not scorer.rules.windowed or (windows > 1).any())
    assert fresh.truncated.tolist() == [truncated[COLUMN.index(text)] for text in DISTINCT_IN_ORDER]

    # The same step, from the lookup it filled...
    rows = step.rows(lookup, 0, valid, scorer.rules.windowed, 2)
    assert np.array_equal(rows.scores, expected)
    # ...and a new one over the same cache, which reads it from the cache's files.
    again = CacheStep(ResultCache(path), [scorer])
    read_again = chunk_texts(read_chunk(COLUMN).table, "text")[1]
    second = again.lookup(read_again)
    assert second.found[0].hit.all()
    assert len(second.wanted) == 0 and second.rows_scored == 0
    cached = again.rows(second, 0, valid, scorer.rules.windowed, 2)
    assert np.array_equal(cached.scores, expected)
    assert cached.truncated.tolist() == truncated.tolist()
    if scorer.rules.windowed:
        assert cached.windows.tolist() == windows.tolist()
    else:
        assert cached.windows is None


def test_cached_rows_equal_a_run_without_cache(tmp_path, scorer):
    """No repeats: with nothing cached the model sees the chunk's rows as it would without a cache, so the rows
    rebuilt from the cache equal a plain run's bit for bit."""
    column = [None, *DISTINCT_IN_ORDER[:2], "", *DISTINCT_IN_ORDER[2:], "   "]
    plain_work = scorer.encoder.encode(read_chunk(column), ["id"])
    plain = scorer.run(plain_work)

    path = str(tmp_path / "cache")
    step = CacheStep(ResultCache(path), [scorer])
    valid, *_ = score_fresh(step, scorer, column)
    assert step.flush() == []
    again = CacheStep(ResultCache(path), [scorer])
    lookup = again.lookup(chunk_texts(read_chunk(column).table, "text")[1])
    cached = again.rows(lookup, 0, valid, scorer.rules.windowed, 2)
    assert np.array_equal(cached.scores[valid], plain.scores[valid])
    assert not cached.scores[~valid].any()
    assert np.array_equal(cached.truncated, plain.truncated)
    if scorer.rules.windowed:
        assert np.array_equal(cached.windows, plain.windows)


def test_lookup_wants_only_new_texts(tmp_path, scorer):
    path = str(tmp_path / "cache")
    step = CacheStep(ResultCache(path), [scorer])
    score_fresh(step, scorer, COLUMN)
    step.flush()
    column = ["brand new text", "great fun", "brand new text", None, "love it", "another new one"]
    again = CacheStep(ResultCache(path), [scorer])
    texts = chunk_texts(read_chunk(column).table, "text")[1]
    lookup = again.lookup(texts)
    assert [texts[i] for i in lookup.first[lookup.wanted]] == ["brand new text", "another new one"]
    assert lookup.rows_scored == 3  # the new text's repeat counts
    hit = lookup.found[0].hit[lookup.inverse]  # per row with text
    assert hit.tolist() == [False, True, False, True, False]


def test_lookup_first_passes_the_chunk_on(tmp_path):
    read = read_chunk(COLUMN)
    item = LookupFirst().encode(read, ["id"])
    assert isinstance(item, ReadChunk)
    assert item.read.table.column_names == ["id", "text"]  # the text stays for the lookup
    assert item.chunk.table.column_names == ["id"]


def test_fresh_rows_without_text_score_zeros(scorer):
    rows = scorer.run(scorer.encoder.encode(read_chunk(COLUMN), ["id"]))
    valid = np.array([t is not None and t.strip() != "" for t in COLUMN])
    assert not rows.scores[~valid].any()

"""Unit tests of the stats stage (batchscore.scoring.stats): a chunk's counts as its part's footer holds them.

The footer's keys are the manifest's contract, written out here; counts are computed here from the arrays and
columns given (and, for a chunk scored by the core, from the tokenizer and the model run on each text alone).
"""

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import torch

from batchscore.scoring.stats import CacheCounts, ChunkStats, ModelCounts, ModelEntry, head_counts

COUNT_KEYS = [
    "truncated_rows",
    "truncated_tokens",
    "windows",
    "windowed_rows",
    "real_tokens",
    "padded_tokens",
    "label_counts",
]
CACHE_KEYS = ["rows_from_cache", "rows_scored", "distinct_texts_scored", "cache_files_skipped"]


def test_empty_footer_of_one_model():
    footer = ChunkStats().as_footer()
    assert list(footer) == ["rows", "empty_text_rows", *COUNT_KEYS, "tokenizations"]
    assert footer == {
        "rows": 0,
        "empty_text_rows": 0,
        "truncated_rows": 0,
        "truncated_tokens": 0,
        "windows": 0,
        "windowed_rows": 0,
        "real_tokens": 0,
        "padded_tokens": 0,
        "label_counts": {},
        "tokenizations": 0,
    }


def test_footer_of_one_model_with_its_head():
    first = ModelCounts(real_tokens=90, padded_tokens=100, label_counts={"joy": 3}, head={"labels_counts": {"joy": 4}})
    footer = ChunkStats(rows=5, empty_text_rows=1, first=first, tokenizations=1).as_footer()
    assert list(footer) == ["rows", "empty_text_rows", *COUNT_KEYS, "labels_counts", "tokenizations"]
    assert footer["rows"] == 5 and footer["empty_text_rows"] == 1 and footer["tokenizations"] == 1
    assert footer["real_tokens"] == 90 and footer["padded_tokens"] == 100
    assert footer["label_counts"] == {"joy": 3} and footer["labels_counts"] == {"joy": 4}
    assert "models" not in footer and "rows_scored" not in footer


def test_footer_of_several_models():
    one = ModelCounts(truncated_rows=1, truncated_tokens=7, label_counts={"POSITIVE": 2})
    two = ModelCounts(windows=5, windowed_rows=2, head={"values": {"column": "r_score", "count": 2}})
    stats = ChunkStats(
        rows=3,
        empty_text_rows=1,
        first=one,
        tokenizations=2,
        models=[
            ModelEntry(model="m1", prefix=None, tokens_from=0, seconds=0.123456, counts=one),
            ModelEntry(model="m2", prefix="r_", tokens_from=1, seconds=2.0004, counts=two),
        ],
    )
    footer = stats.as_footer()
    assert list(footer) == ["rows", "empty_text_rows", *COUNT_KEYS, "tokenizations", "models"]
    assert footer["truncated_tokens"] == 7  # the top level is the first model's
    entries = footer["models"]
    assert [list(e) for e in entries] == [
        ["model", "prefix", "tokens_from", "seconds", *COUNT_KEYS],
        ["model", "prefix", "tokens_from", "seconds", *COUNT_KEYS, "values"],
    ]
    assert [(e["model"], e["prefix"], e["tokens_from"], e["seconds"]) for e in entries] == [
        ("m1", None, 0, 0.123),
        ("m2", "r_", 1, 2.0),
    ]
    assert entries[0]["label_counts"] == {"POSITIVE": 2}
    assert entries[1]["windows"] == 5 and entries[1]["windowed_rows"] == 2
    assert entries[1]["values"] == {"column": "r_score", "count": 2}


def test_footer_with_cache_counts():
    cache = CacheCounts(rows_from_cache=6, rows_scored=4, distinct_texts_scored=3, cache_files_skipped=1)
    footer = ChunkStats(rows=11, empty_text_rows=1, cache=cache).as_footer()
    assert list(footer) == ["rows", "empty_text_rows", *COUNT_KEYS, "tokenizations", *CACHE_KEYS]
    assert [footer[k] for k in CACHE_KEYS] == [6, 4, 3, 1]


def test_rows_from_counts_truncation_and_windows():
    truncated = np.array([0, 3, 0, 5, 0, 120], np.int64)
    windows = np.array([1, 2, 0, 3, 1, 4], np.int32)
    counts = ModelCounts(real_tokens=10).rows_from(truncated, windows)
    assert counts.truncated_rows == 3
    assert counts.truncated_tokens == 128
    assert counts.windows == 11
    assert counts.windowed_rows == 3  # rows of more than one window
    assert counts.real_tokens == 10  # left as it was
    plain = ModelCounts().rows_from(np.zeros(4, np.int64), None)
    assert (plain.truncated_rows, plain.truncated_tokens, plain.windows, plain.windowed_rows) == (0, 0, 0, 0)
    counts.rows_from(np.zeros(2, np.int64), None)  # set anew, not added to
    assert (counts.truncated_rows, counts.windows) == (0, 0)


@pytest.mark.parametrize("prefix", [None, "m_"])
def test_head_counts_sigmoid(prefix):
    p = prefix or ""
    labels = pa.array([["joy", "fear"], ["fear"], None, [], ["fear", "anger"]], pa.list_(pa.string()))
    got = head_counts("sigmoid", prefix, {p + "labels": labels})
    assert got == {"labels_counts": {"joy": 1, "fear": 3, "anger": 1}}
    assert head_counts("sigmoid", prefix, None) == {"labels_counts": {}}


def test_head_counts_softmax():
    assert head_counts("softmax", None, {"label": pa.array(["a"]), "score": pa.array([0.5], pa.float32())}) == {}
    assert head_counts("softmax", "p_", None) == {}


@pytest.mark.parametrize("prefix", [None, "r_"])
def test_head_counts_none(prefix):
    p = prefix or ""
    values = [0.5, None, -1.25, 2.0, 0.125]
    got = head_counts("none", prefix, {p + "score": pa.array(values, pa.float32())})
    present = [v for v in values if v is not None]
    assert got == {
        "values": {"column": p + "score", "count": 4, "min": min(present), "max": max(present), "sum": sum(present)}
    }
    assert head_counts("none", prefix, None) == {
        "values": {"column": p + "score", "count": 0, "min": None, "max": None, "sum": 0.0}
    }


def test_model_counts_as_dict_merges_the_head():
    counts = ModelCounts(label_counts={"a": 1}, head={"labels_counts": {"a": 2}})
    assert counts.as_dict() == {
        "truncated_rows": 0,
        "truncated_tokens": 0,
        "windows": 0,
        "windowed_rows": 0,
        "real_tokens": 0,
        "padded_tokens": 0,
        "label_counts": {"a": 1},
        "labels_counts": {"a": 2},
    }


def test_core_stats_of_a_scored_chunk(tiny_model):
    """The core's footer for one chunk, checked against the texts: rows, truncation, tokens, labels."""
    from batchscore.config import ModelSpec
    from batchscore.plan import Chunk
    from batchscore.scoring.core import ScoringCore
    from batchscore.scoring.load import load_model
    from batchscore.scoring.models import ModelScorer
    from batchscore.scoring.rules import ScoringRules

    max_length = 10
    loaded = load_model(tiny_model, None, "fp32", max_length=max_length)
    core = ScoringCore([ModelScorer(loaded, ScoringRules(spec=ModelSpec(model=tiny_model), batch_tokens=64))])
    column = ["great fun", None, "the plot made no sense and the acting was worse than the script", "  ", "ok"]
    column += ["awful boring slow movie with a bad ending and bad music", "love it", ""]
    chunk = Chunk(0, 0, pa.table({"id": list(range(len(column))), "text": pa.array(column, pa.string())}))
    scored = core.score(core.worker_step.encode(chunk, ["id"]))
    footer = scored.stats.as_footer()

    tokenizer = loaded.tokenizer
    texts = [t for t in column if t is not None and t.strip()]
    over = [max(0, len(tokenizer(t, add_special_tokens=False)["input_ids"]) - (max_length - 2)) for t in texts]
    labels = []
    for text in texts:
        inputs = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            labels.append(loaded.labels[int(loaded.model(**inputs).logits[0].argmax())])
    assert footer["rows"] == len(column)
    assert footer["empty_text_rows"] == len(column) - len(texts)
    assert footer["truncated_rows"] == sum(o > 0 for o in over) == 2
    assert footer["truncated_tokens"] == sum(over)
    assert footer["real_tokens"] == sum(
        len(tokenizer(t, truncation=True, max_length=max_length)["input_ids"]) for t in texts
    )
    assert footer["padded_tokens"] >= footer["real_tokens"]
    assert footer["label_counts"] == dict(Counter(labels))
    assert footer["tokenizations"] == 1
    assert footer["windows"] == 0 and footer["windowed_rows"] == 0
    assert "models" not in footer
    # An empty chunk's stats have the same keys, nothing counted.
    empty = core.empty_stats().as_footer()
    assert list(empty) == list(footer)
    assert empty["rows"] == 0 and empty["label_counts"] == {} and empty["real_tokens"] == 0

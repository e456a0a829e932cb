"""Unit tests of the heads stage (batchscore.scoring.heads) and of ModelScorer.columns: score functions, window
aggregation, result columns.

Expected values are computed here: the score functions in float64 numpy, the aggregations and the
best-first listings with Python loops and sorts.
"""

import math

import numpy as np
import pyarrow as pa
import pytest
from transformers import PretrainedConfig

from batchscore.config import ModelSpec
from batchscore.scoring.heads import (
    RowScores,
    WindowScores,
    aggregate,
    apply,
    result_columns,
    score_function,
)
from batchscore.scoring.load import load_model
from batchscore.scoring.models import ModelScorer
from batchscore.scoring.rules import ScoringRules

# --- score functions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"num_labels": 3}, "softmax"),
        ({"num_labels": 2, "problem_type": "single_label_classification"}, "softmax"),
        ({"num_labels": 1}, "sigmoid"),
        ({"num_labels": 4, "problem_type": "multi_label_classification"}, "sigmoid"),
        ({"num_labels": 1, "problem_type": "regression"}, "none"),
        ({"num_labels": 3, "problem_type": "regression"}, "none"),
    ],
)
def test_score_function(settings, expected):
    assert score_function(PretrainedConfig(**settings)) == expected


def logits_sample() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 4.0, (8, 3)).astype(np.float32)


def test_apply_softmax():
    logits = logits_sample()
    x = logits.astype(np.float64)
    expected = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    got = apply("softmax", logits)
    assert got.dtype == np.float32 and got.shape == logits.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_apply_softmax_of_large_logits():
    """No overflow: exp(1000) would be inf; the scores are those of the logits' differences."""
    got = apply("softmax", np.array([[1000.0, 999.0, -1000.0], [-500.0, -500.0, -500.0]], np.float32))
    e = math.exp(-1.0)
    np.testing.assert_allclose(got[0], [1 / (1 + e), e / (1 + e), 0.0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got[1], [1 / 3] * 3, rtol=1e-6)
    assert np.isfinite(got).all()


def test_apply_sigmoid():
    logits = np.concatenate([logits_sample(), np.array([[80.0, -80.0, 0.0]], np.float32)])
    expected = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    got = apply("sigmoid", logits)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)
    assert got[-1, 2] == 0.5


def test_apply_none_keeps_the_logits():
    logits = logits_sample()
    assert np.array_equal(apply("none", logits), logits)
    wide = logits.astype(np.float64)
    got = apply("none", wide)
    assert got.dtype == np.float32 and np.array_equal(got, logits)


# --- aggregation of windows --------------------------------------------------------------------------------------


def windows_sample():
    rng = np.random.default_rng(1)
    # rows 1 and 4 have no windows; row 2 has one; rows 0 and 3 several
    row = np.array([0, 0, 0, 2, 3, 3, 3])
    weights = np.array([126, 126, 40, 7, 0, 126, 3])  # a window of no text tokens counts as one
    scores = rng.random((len(row), 3)).astype(np.float32)
    return scores, row, weights


def test_aggregate_mean_is_token_weighted():
    scores, row, weights = windows_sample()
    got = aggregate(scores, row, weights, 5, "mean")
    assert got.dtype == np.float32 and got.shape == (5, 3)
    for r in range(5):
        mine = [i for i in range(len(row)) if row[i] == r]
        if not mine:
            assert (got[r] == 0).all(), r
            continue
        total = sum(max(int(weights[i]), 1) for i in mine)
        for label in range(3):
            expected = sum(max(int(weights[i]), 1) * float(scores[i, label]) for i in mine) / total
            assert got[r, label] == pytest.approx(expected, rel=1e-6), (r, label)
    assert np.array_equal(got[2], scores[3])  # one window: exactly its scores


def test_aggregate_mean_of_one_window_is_that_window_exactly():
    rng = np.random.default_rng(2)
    scores = rng.random((500, 4)).astype(np.float32) * rng.choice([1e-6, 1.0, 1e3], (500, 1)).astype(np.float32)
    weights = rng.integers(0, 500, 500)
    got = aggregate(scores, np.arange(500), weights, 500, "mean")
    assert np.array_equal(got, scores)


def test_aggregate_max():
    scores, row, weights = windows_sample()
    scores = scores - 0.75  # negative scores too (a regression head's values): max is not clipped at zero
    got = aggregate(scores, row, weights, 5, "max")
    assert got.dtype == np.float32
    for r in range(5):
        mine = [i for i in range(len(row)) if row[i] == r]
        for label in range(3):
            expected = max((scores[i, label] for i in mine), default=0.0)
            assert got[r, label] == expected, (r, label)
    assert (got[[1, 4]] == 0).all()
    assert got[3].min() < 0


# --- result columns ----------------------------------------------------------------------------------------------

LABELS = ["neg", "neu", "pos"]
SCORES = np.array(
    [
        [0.1, 0.7, 0.2],
        [0.25, 0.5, 0.25],
        [0.9, 0.05, 0.05],  # no text: null
        [0.4, 0.2, 0.4],  # a tie for best: the first label
        [0.3, 0.3, 0.4],
        [1 / 3, 1 / 3, 1 / 3],
    ],
    np.float32,
)
VALID = np.array([True, True, False, True, True, True])


def f32(x) -> float:
    return float(np.float32(x))


def best_first(row) -> list[dict]:
    """Every label, best first, ties in label order (Python's sort is stable)."""
    pairs = sorted(zip(LABELS, (f32(s) for s in row)), key=lambda pair: -pair[1])
    return [{"label": label, "score": score} for label, score in pairs]


@pytest.mark.parametrize("prefix", [None, "p_"])
def test_result_columns_top_k_all(prefix):
    columns = result_columns(SCORES, VALID, LABELS, "all", prefix)
    p = prefix or ""
    assert list(columns) == [p + "label", p + "score", p + "scores"]
    labels, scores, listing = (columns[p + n].to_pylist() for n in ("label", "score", "scores"))
    for i, row in enumerate(SCORES):
        if not VALID[i]:
            assert labels[i] is None and scores[i] is None and listing[i] is None
            continue
        top = max(range(len(LABELS)), key=lambda j: (row[j], -j))  # the first of equal scores
        assert labels[i] == LABELS[top]
        assert scores[i] == f32(row[top])
        assert listing[i] == best_first(row)
    assert listing[3] == [
        {"label": "neg", "score": f32(0.4)},
        {"label": "pos", "score": f32(0.4)},
        {"label": "neu", "score": f32(0.2)},
    ]
    assert [e["label"] for e in listing[1]] == ["neu", "neg", "pos"]
    assert columns[p + "score"].type == pa.float32()
    assert columns[p + "scores"].type == pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))


def test_result_columns_top_k_one_and_threshold():
    threshold = 0.3
    columns = result_columns(SCORES, VALID, LABELS, "1", None, threshold)
    assert list(columns) == ["label", "score", "labels"]
    got = columns["labels"].to_pylist()
    for i, row in enumerate(SCORES):
        # What a reader finds comparing the written float32 score with the threshold, in label order.
        expected = [name for name, s in zip(LABELS, row) if f32(s) >= threshold] if VALID[i] else None
        assert got[i] == expected, i
    assert got[4] == ["neg", "neu", "pos"]  # float32(0.3) is just above 0.3
    assert got[1] == ["neu"]


def test_result_columns_of_no_rows():
    columns = result_columns(np.zeros((0, 3), np.float32), np.zeros(0, bool), LABELS, "all", None, 0.5)
    assert {name: len(column) for name, column in columns.items()} == {"label": 0, "score": 0, "scores": 0, "labels": 0}


# --- ModelScorer.columns -----------------------------------------------------------------------------------------

_loaded: dict = {}


def scorer(model_dir, **spec) -> ModelScorer:
    key = (model_dir, spec.get("max_length"))
    if key not in _loaded:
        _loaded[key] = load_model(model_dir, None, "fp32", max_length=spec.get("max_length"))
    return ModelScorer(_loaded[key], ScoringRules(spec=ModelSpec(model=model_dir, **spec), batch_tokens=256))


def check_schema(model: ModelScorer, columns: dict) -> None:
    """The columns are the fields the scorer declares, of their types."""
    assert sorted(columns) == sorted(f.name for f in model.fields)
    for field in model.fields:
        assert columns[field.name].type == field.type, field.name


def test_model_columns_multi_label(multilabel_model):
    model = scorer(multilabel_model, prefix="m_", top_k="all", threshold=0.5)
    labels = ["joy", "anger", "fear", "surprise"]
    assert model.labels == labels and model.function == "sigmoid"
    scores = np.array([[0.9, 0.5, 0.1, 0.2], [0.0, 0.0, 0.0, 0.0], [0.2, 0.3, 0.4, 0.45], [0.6, 0.7, 0.6, 0.1]])
    scores = scores.astype(np.float32)
    valid = np.array([True, False, True, True])
    columns = model.columns(RowScores(scores, np.zeros(4, np.int64)), valid)
    check_schema(model, columns)
    assert columns["m_label"].to_pylist() == ["joy", None, "surprise", "anger"]
    assert columns["m_score"].to_pylist() == [f32(0.9), None, f32(0.45), f32(0.7)]
    assert columns["m_labels"].to_pylist() == [["joy", "anger"], None, [], ["joy", "anger", "fear"]]
    listing = columns["m_scores"].to_pylist()
    assert [e["label"] for e in listing[3]] == ["anger", "joy", "fear", "surprise"]
    assert listing[1] is None


def test_model_columns_softmax_has_no_labels_column(tiny_model):
    model = scorer(tiny_model)
    columns = model.columns(RowScores(np.array([[0.2, 0.8], [0.6, 0.4]], np.float32), np.zeros(2, np.int64)), VALID[:2])
    check_schema(model, columns)
    assert list(columns) == ["label", "score"]
    assert columns["label"].to_pylist() == ["POSITIVE", "NEGATIVE"]


def test_model_columns_windows(tiny_model):
    model = scorer(tiny_model, long_text="window", max_length=16, window_overlap=2)
    scores = np.array([[0.2, 0.8], [0.0, 0.0], [0.7, 0.3]], np.float32)
    rows = RowScores(scores, np.array([5, 0, 0]), windows=np.array([3, 0, 1], np.int32))
    valid = np.array([True, False, True])
    columns = model.columns(rows, valid)
    check_schema(model, columns)
    assert columns["windows"].to_pylist() == [3, None, 1]
    assert columns["label"].to_pylist() == ["POSITIVE", None, "NEGATIVE"]


def test_model_columns_window_scores(tiny_model):
    model = scorer(tiny_model, long_text="window", max_length=16, window_overlap=2, window_scores=True, prefix="w_")
    per_window = np.array([[0.1, 0.9], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]], np.float32)
    row = np.array([0, 0, 0, 2])
    spans = np.array([[0, 40], [30, 75], [60, 90], [0, 12]])
    aggregated = np.array([[1 / 3, 2 / 3], [0, 0], [0.8, 0.2]], np.float32)
    rows = RowScores(
        aggregated, np.zeros(3, np.int64), np.array([3, 0, 1], np.int32), WindowScores(per_window, row, spans)
    )
    columns = model.columns(rows, np.array([True, False, True]))
    check_schema(model, columns)
    assert columns["w_windows"].to_pylist() == [3, None, 1]
    expected = [
        [
            {"start": 0, "end": 40, "label": "POSITIVE", "score": f32(0.9)},
            {"start": 30, "end": 75, "label": "NEGATIVE", "score": f32(0.6)},
            {"start": 60, "end": 90, "label": "POSITIVE", "score": f32(0.7)},
        ],
        None,
        [{"start": 0, "end": 12, "label": "NEGATIVE", "score": f32(0.8)}],
    ]
    assert columns["w_window_scores"].to_pylist() == expected
    # The row's label and score are the aggregated scores', not any one window's.
    assert columns["w_label"].to_pylist() == ["POSITIVE", None, "NEGATIVE"]
    assert columns["w_score"].to_pylist() == [f32(2 / 3), None, f32(0.8)]

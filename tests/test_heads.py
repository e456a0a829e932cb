"""Heads beyond single-label (issue 22): a multi-label head's `labels` column and counts, a regression head's
value summary.

The oracle is transformers.pipeline: every label's score (`top_k=None`) thresholded with numpy here, and the
regression values summarized with numpy here; never values batchscore produced.
"""

import json
import random
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import (
    assert_error,
    build_model,
    fails_untouched,
    invoke,
    manifest_of,
    pipeline_oracle,
    run_score,
    spark_session,
)

WORDS = "good bad movie plot actor great awful slow fun boring story music scene ending love hate".split()
MULTI_LABELS = ["joy", "anger", "fear", "surprise"]  # the multilabel_model fixture's id2label order
# The pipeline and batchscore agree to about 1e-6; a score this close to a threshold could fall either side.
CLOSE = 1e-5


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory):
    """One output, problem_type regression: the pipeline's function is none (raw values)."""
    return build_model(
        tmp_path_factory.mktemp("regression"), "distilbert", num_labels=1, problem_type="regression", labels=["VALUE"]
    )


def corpus(n: int = 90, seed: int = 3) -> list[str | None]:
    """Texts of 1 to 40 words; every 9th row has no text."""
    rng = random.Random(seed)
    return [None if i % 9 == 4 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for i in range(n)]


def write_input(tmp_path, texts, **columns) -> str:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": pa.array(texts, pa.string()), **columns}), src)
    return src


def score(tmp_path, model, texts, *extra, name="out"):
    out = tmp_path / name
    result = run_score(write_input(tmp_path, texts), model, out, "--chunk-rows", "16", *extra)
    assert result.exit_code == 0, result.output
    return pq.read_table(out), out


def label_scores(model, texts, labels, **call) -> np.ndarray:
    """The pipeline's score of every label, [texts, labels], columns in `labels` order."""
    results = pipeline_oracle(model, texts, top_k=None, **call)
    return np.array([[{e["label"]: e["score"] for e in row}[name] for name in labels] for row in results])


def over(scores: np.ndarray, labels: list[str], threshold: float) -> list[list[str]]:
    assert not (np.abs(scores - threshold) < CLOSE).any(), "a score sits on the threshold: pick other texts"
    return [[name for name, s in zip(labels, row) if s >= threshold] for row in scores]


# --- multi-label heads: the labels column and its counts ---------------------------------------------------------


@pytest.mark.parametrize(
    "model_fixture, labels, threshold",
    [
        ("multilabel_model", MULTI_LABELS, None),  # the default, 0.5
        ("multilabel_model", MULTI_LABELS, 0.4),
        ("one_label_model", ["LABEL_0"], None),  # one label: the pipeline's sigmoid, a yes/no per row
    ],
)
def test_labels_are_every_label_over_the_threshold(model_fixture, labels, threshold, tmp_path, request):
    model = request.getfixturevalue(model_fixture)
    texts = corpus()
    extra = ["--threshold", str(threshold)] if threshold is not None else []
    table, out = score(tmp_path, model, texts, *extra)
    scored = [i for i, t in enumerate(texts) if t is not None]
    scores = label_scores(model, [texts[i] for i in scored], labels)
    expected = over(scores, labels, threshold or 0.5)

    got = table.column("labels").to_pylist()
    assert [got[i] for i in scored] == expected  # in the model's label order
    assert all(got[i] is None for i, t in enumerate(texts) if t is None)
    assert len({len(e) for e in expected}) > 1, "the corpus should give rows with different numbers of labels"

    manifest = manifest_of(out)
    assert manifest["chunks"] > 1  # summed over parts
    assert manifest["labels_counts"] == dict(sorted(Counter(name for row in expected for name in row).items()))
    top = Counter(labels[k] for k in scores.argmax(axis=1))
    assert manifest["label_counts"] == dict(sorted(top.items()))  # still the top label, one per row
    assert manifest["config"]["threshold"] == (threshold or 0.5)


def test_labels_with_long_text_window_use_the_aggregated_scores(multilabel_model, tmp_path):
    """--long-text window --aggregate max: a label is listed when its highest window score reaches the threshold."""
    from transformers import AutoTokenizer

    max_length, overlap = 32, 8
    rng = random.Random(5)
    texts = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in (12, 70, 45, 100, 30, 88)]

    # Each text's windows as the tokenizer makes them, scored by the pipeline in one call, maxed per label here.
    tok = AutoTokenizer.from_pretrained(multilabel_model)
    ids = tok(texts, truncation=True, max_length=max_length, stride=overlap, return_overflowing_tokens=True)
    windows = [tok.decode(w, skip_special_tokens=True) for w in ids["input_ids"]]
    scores = label_scores(multilabel_model, windows, MULTI_LABELS, max_length=max_length)
    owner = np.array(ids["overflow_to_sample_mapping"])
    folded = np.array([scores[owner == row].max(axis=0) for row in range(len(texts))])
    # A threshold between a label's best and second-best window score, where a text has three windows or more:
    # that label is listed by its maximum, and not by any mean of its windows.
    gaps = [
        (top[0] - top[1], (top[0] + top[1]) / 2)
        for row in range(len(texts))
        if (owner == row).sum() >= 3
        for top in np.sort(scores[owner == row], axis=0)[::-1].T
    ]
    threshold = max(gaps)[1]
    means = np.array([scores[owner == row].mean(axis=0) for row in range(len(texts))])
    assert over(folded, MULTI_LABELS, threshold) != over(means, MULTI_LABELS, threshold)

    args = ["--long-text", "window", "--aggregate", "max", "--max-length", max_length, "--window-overlap", overlap]
    table, _ = score(tmp_path, multilabel_model, texts, *map(str, args), "--threshold", repr(float(threshold)))
    assert table.column("windows").to_pylist() == np.bincount(owner).tolist() != [1] * len(texts)
    assert table.column("labels").to_pylist() == over(folded, MULTI_LABELS, threshold)


def test_labels_honour_the_result_prefix_and_clash_with_an_input_labels_column(multilabel_model, tmp_path, outputs):
    texts = ["good film", "awful plot", None]
    src = write_input(tmp_path, texts, labels=pa.array([["a"], [], None], pa.list_(pa.string())))
    # An input `labels` column (go_emotions has one) clashes with the head's column: refused before any output.
    fails_untouched(src, multilabel_model, outputs, 3, "'labels'", "--result-prefix pred_")

    out = tmp_path / "prefixed"
    assert run_score(src, multilabel_model, out, "--result-prefix", "pred_").exit_code == 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "labels", "pred_label", "pred_score", "pred_labels"]
    expected = over(label_scores(multilabel_model, texts[:2], MULTI_LABELS), MULTI_LABELS, 0.5)
    assert table.column("pred_labels").to_pylist() == [*expected, None]
    assert table.column("labels").to_pylist() == [["a"], [], None]  # the input's, kept as it was


def test_single_label_heads_get_no_labels_column_and_ignore_the_threshold(tiny_model, tmp_path):
    src = write_input(tmp_path, ["good film", "awful plot"], labels=[1, 0])  # no clash: softmax adds no `labels`
    out = tmp_path / "out"
    assert run_score(src, tiny_model, out).exit_code == 0
    assert pq.read_table(out).column_names == ["id", "text", "labels", "label", "score"]
    assert "labels_counts" not in manifest_of(out) and "value_summary" not in manifest_of(out)
    again = run_score(src, tiny_model, out, "--threshold", "0.9")  # not part of a softmax run's identity
    assert again.exit_code == 0 and "Already complete" in again.stderr


def test_the_threshold_is_part_of_a_multi_label_run(multilabel_model, tmp_path):
    src = write_input(tmp_path, ["good film", "awful plot"])
    out = tmp_path / "out"
    assert run_score(src, multilabel_model, out).exit_code == 0
    assert_error(run_score(src, multilabel_model, out, "--threshold", "0.9"), 5, "threshold", "--overwrite")
    assert run_score(src, multilabel_model, out, "--threshold", "0.5").exit_code == 0  # the default, spelled out


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "half", "1_0"])
def test_a_bad_threshold_is_a_usage_error(value, tiny_model, tmp_path, outputs):
    src = write_input(tmp_path, ["good film"])
    fails_untouched(src, tiny_model, outputs, 2, "threshold", "from 0 to 1", extra=["--threshold", value])


def test_a_bad_threshold_from_the_environment(tiny_model, tmp_path):
    src = write_input(tmp_path, ["good film"])
    result = run_score(src, tiny_model, tmp_path / "out", env={"BATCHSCORE_THRESHOLD": "2"})
    assert_error(result, 2, "threshold (from environment)", "from 0 to 1")


def test_the_scorer_lists_labels(multilabel_model):
    from batchscore import Scorer
    from batchscore.errors import InputError

    texts = ["good film", "awful plot", "love hate music", None]
    scorer = Scorer(model=multilabel_model, threshold=0.4)
    got = scorer.score_table(pa.table({"text": texts}))
    assert got["labels"].to_pylist() == [
        *over(label_scores(multilabel_model, texts[:3], MULTI_LABELS), MULTI_LABELS, 0.4),
        None,
    ]
    with pytest.raises(InputError, match="result_prefix"):  # the head's column clashes with an input column
        scorer(pa.table({"text": texts, "labels": [1, 2, 3, 4]}))


@pytest.mark.slow  # starts a JVM
def test_spark_names_the_labels_column(multilabel_model, tmp_path, monkeypatch):
    pytest.importorskip("pyspark")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    from batchscore.spark import score as spark_score

    texts = corpus(30)
    src = write_input(tmp_path, texts)
    spark = spark_session()
    try:
        scored = spark_score(spark.read.parquet(str(src)).repartition(2), model=multilabel_model, threshold=0.4)
        assert scored.columns == ["id", "text", "label", "score", "labels"]  # named on the driver, from config.json
        scored.write.parquet(str(tmp_path / "spark"))
    finally:
        spark.stop()
    got = pq.read_table(tmp_path / "spark").sort_by("id").column("labels").to_pylist()
    scored_rows = [i for i, t in enumerate(texts) if t is not None]
    expected = over(label_scores(multilabel_model, [texts[i] for i in scored_rows], MULTI_LABELS), MULTI_LABELS, 0.4)
    assert [got[i] for i in scored_rows] == expected


# --- regression heads: the value summary -------------------------------------------------------------------------


QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}


def expected_summary(model, texts) -> tuple[np.ndarray, dict]:
    values = np.array([r["score"] for r in pipeline_oracle(model, [t for t in texts if t is not None])])
    return values, dict(zip(QUANTILES, np.quantile(values, list(QUANTILES.values()))))


def assert_summary(summary: dict, expected: tuple[np.ndarray, dict], column="score") -> None:
    values, quantiles = expected
    assert summary["column"] == column
    assert summary["count"] == len(values)
    assert summary["min"] == pytest.approx(values.min(), abs=1e-5)
    assert summary["max"] == pytest.approx(values.max(), abs=1e-5)
    assert summary["mean"] == pytest.approx(values.mean(), abs=1e-5)
    assert summary["quantiles"] == pytest.approx(quantiles, abs=1e-5)
    assert len(set(summary["quantiles"].values())) == len(QUANTILES), "the values should spread"


def test_a_regression_head_reports_its_values_distribution(regression_model, tmp_path):
    texts = corpus(150, seed=4)
    _, out = score(tmp_path, regression_model, texts, "--result-prefix", "pred_")
    manifest = manifest_of(out)
    assert manifest["chunks"] == 10
    assert_summary(manifest["value_summary"], expected_summary(regression_model, texts), column="pred_score")
    assert "labels_counts" not in manifest


def test_a_regression_summary_over_shards_and_finalize_and_a_rebuilt_manifest(regression_model, tmp_path):
    texts = corpus(150, seed=6)
    src, out = write_input(tmp_path, texts), tmp_path / "out"
    for shard in ("0", "1"):
        result = run_score(
            src, regression_model, out, "--chunk-rows", "16", "--num-shards", "2", "--shard-index", shard
        )
        assert result.exit_code == 0, result.output
    assert invoke(["finalize", out]).exit_code == 0
    expected = expected_summary(regression_model, texts)
    assert_summary(manifest_of(out)["value_summary"], expected)

    (out / "_manifest.parquet").unlink()  # lost: rebuilt from the parts' footers and score column
    rebuilt = json.loads(invoke(["manifest", out]).stdout)
    assert rebuilt["rebuilt_from_parts"]
    assert_summary(rebuilt["value_summary"], expected)


@pytest.mark.parametrize("texts", [[None, "  ", ""], []], ids=["no-text", "no-rows"])
def test_a_regression_summary_without_any_text(texts, regression_model, tmp_path):
    _, out = score(tmp_path, regression_model, texts)
    summary = manifest_of(out)["value_summary"]
    assert summary["count"] == 0
    assert summary["min"] is summary["max"] is summary["mean"] is None
    assert set(summary["quantiles"].values()) == {None}

"""--result-prefix: result columns named PREFIX+label/score/scores, so an input `label` column can be kept."""

from __future__ import annotations

import csv
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, manifest_of, pipeline_oracle, run_score

TEXTS = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!", "", "42 stars, fine"]
GOLD = [1, 0, 1, 1]  # an HF dataset's own `label` column: must come out untouched


def write_parquet(path):
    pq.write_table(pa.table({"id": [10, 11, 12, 13], "text": TEXTS, "label": GOLD}), path)
    return path


def write_csv(path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label"])
        writer.writerows(zip([10, 11, 12, 13], TEXTS, GOLD))
    return path


def pipeline_results(model_dir, top_k=1):
    # Rows without text get no prediction (batchscore's rule; the pipeline would score "").
    call = {"top_k": None} if top_k == "all" else {}
    scored = iter(pipeline_oracle(model_dir, [t for t in TEXTS if t], **call))
    return [next(scored) if t else None for t in TEXTS]


def as_text(column) -> list[str]:
    # CSV values may be read as numbers or as strings: "unchanged" means the same values.
    return [str(v) for v in column.to_pylist()]


def assert_nothing_written(outputs):
    assert os.listdir(outputs) == [], "a failed run left something in the output location"


@pytest.mark.parametrize("writer", [write_parquet, write_csv], ids=["parquet", "csv"])
def test_prefix_keeps_the_input_label_beside_the_prediction(tmp_path, tiny_model, writer):
    src = writer(tmp_path / ("in.parquet" if writer is write_parquet else "in.csv"))
    out = tmp_path / "out"
    result = run_score(src, tiny_model, out, "--result-prefix", "pred_")
    assert result.exit_code == 0, result.output
    table = pq.read_table(str(out))
    assert table.column_names == ["id", "text", "label", "pred_label", "pred_score"]
    assert as_text(table.column("label")) == [str(g) for g in GOLD]
    assert as_text(table.column("id")) == ["10", "11", "12", "13"]
    expected = pipeline_results(tiny_model)
    assert table.column("pred_label").to_pylist() == [e and e["label"] for e in expected]
    scores = table.column("pred_score").to_pylist()
    assert scores[2] is None  # no text: null prediction, row kept
    np.testing.assert_allclose([s for s in scores if s is not None], [e["score"] for e in expected if e], atol=1e-5)
    manifest = manifest_of(out)
    assert manifest["config"]["result_prefix"] == "pred_"
    # The manifest's label counts follow the prefixed column, not the input's `label`.
    assert sum(manifest["label_counts"].values()) == 3
    assert set(manifest["label_counts"]) <= {"NEGATIVE", "POSITIVE"}


def test_prefix_with_top_k_all_names_the_scores_column(tmp_path, tiny_model):
    src = write_csv(tmp_path / "in.csv")
    out = tmp_path / "out"
    result = run_score(src, tiny_model, out, "--result-prefix", "pred_", "--top-k", "all")
    assert result.exit_code == 0, result.output
    table = pq.read_table(str(out))
    assert table.column_names == ["id", "text", "label", "pred_label", "pred_score", "pred_scores"]
    assert as_text(table.column("label")) == [str(g) for g in GOLD]
    got = table.column("pred_scores").to_pylist()
    for row, expected in zip(got, pipeline_results(tiny_model, top_k="all")):
        if expected is None:
            assert row is None
            continue
        # Each entry keeps the pipeline's own keys, label and score, whatever the prefix.
        assert [e["label"] for e in row] == [e["label"] for e in expected]
        np.testing.assert_allclose([e["score"] for e in row], [e["score"] for e in expected], atol=1e-5)


def test_clash_without_prefix_names_the_option(tmp_path, tiny_model, outputs):
    src = write_parquet(tmp_path / "in.parquet")
    line = assert_error(run_score(src, tiny_model, outputs / "out"), 3)
    assert line == (
        "Error: Input column 'label' would clash with batchscore's output column of that name; "
        "pass --result-prefix pred_ (or leave it out with --keep-columns id,text)."
    )
    assert_nothing_written(outputs)


def test_prefix_that_still_clashes_suggests_a_free_one(tmp_path, tiny_model, outputs):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1], "pred_label": [1, 1]}), src)
    line = assert_error(run_score(src, tiny_model, outputs / "out", "--result-prefix", "pred_"), 3)
    assert line == (
        "Error: Input column 'pred_label' would clash with batchscore's output column of that name "
        "(--result-prefix pred_); pass another --result-prefix, e.g. batchscore_ "
        "(or leave it out with --keep-columns text,label)."
    )
    assert_nothing_written(outputs)
    # The suggestion works.
    result = run_score(src, tiny_model, outputs / "out", "--result-prefix", "batchscore_")
    assert result.exit_code == 0, result.output
    assert pq.read_table(str(outputs / "out")).column_names == [
        "text",
        "label",
        "pred_label",
        "batchscore_label",
        "batchscore_score",
    ]


def test_clash_with_the_id_column_offers_only_the_prefix(tmp_path, tiny_model, outputs):
    # The id column is always kept: --keep-columns cannot leave it out.
    src = write_parquet(tmp_path / "in.parquet")
    result = run_score(src, tiny_model, outputs / "out", "--id-column", "label", "--keep-columns", "none")
    line = assert_error(result, 3)
    assert line == (
        "Error: Input column 'label' would clash with batchscore's output column of that name; "
        "pass --result-prefix pred_."
    )
    assert_nothing_written(outputs)


def test_no_clash_when_the_label_column_is_left_out(tmp_path, tiny_model):
    src = write_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out"
    result = run_score(src, tiny_model, out, "--keep-columns", "id")
    assert result.exit_code == 0, result.output
    assert pq.read_table(str(out)).column_names == ["id", "label", "score"]


def test_prefix_from_env_and_config_file(tmp_path, tiny_model):
    src = write_parquet(tmp_path / "in.parquet")
    result = run_score(src, tiny_model, tmp_path / "env", env={"BATCHSCORE_RESULT_PREFIX": "env_"})
    assert result.exit_code == 0, result.output
    assert pq.read_table(str(tmp_path / "env")).column_names[-2:] == ["env_label", "env_score"]
    config = tmp_path / "job.yaml"
    config.write_text("result_prefix: file_\n", encoding="utf-8")
    result = run_score(src, tiny_model, tmp_path / "file", "--config", config)
    assert result.exit_code == 0, result.output
    assert pq.read_table(str(tmp_path / "file")).column_names[-2:] == ["file_label", "file_score"]


def test_empty_prefix_on_the_command_line_means_none(tmp_path, tiny_model):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["good", "bad"]}), src)
    out = tmp_path / "out"
    result = run_score(src, tiny_model, out, "--result-prefix", "", env={"BATCHSCORE_RESULT_PREFIX": "env_"})
    assert result.exit_code == 0, result.output
    assert pq.read_table(str(out)).column_names == ["text", "label", "score"]


@pytest.mark.parametrize("prefix", ["a,b", "pred\n", "my pred_", "\tp"])
def test_bad_prefix_is_a_usage_error(tmp_path, tiny_model, outputs, prefix):
    src = write_parquet(tmp_path / "in.parquet")
    line = assert_error(run_score(src, tiny_model, outputs / "out", "--result-prefix", prefix), 2)
    assert line == (
        "Error: result_prefix (from command line) may not hold commas, spaces or control characters "
        f"(pred_ gives pred_label, pred_score); got {prefix!r}."
    )
    assert_nothing_written(outputs)


def test_bad_prefix_in_env_names_the_environment(tmp_path, tiny_model, outputs):
    src = write_parquet(tmp_path / "in.parquet")
    result = run_score(src, tiny_model, outputs / "out", env={"BATCHSCORE_RESULT_PREFIX": "x,y"})
    assert_error(result, 2, "result_prefix (from environment)", "'x,y'")
    assert_nothing_written(outputs)


def test_rerun_with_another_prefix_is_another_run(tmp_path, tiny_model):
    src = write_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out"
    assert run_score(src, tiny_model, out, "--result-prefix", "pred_").exit_code == 0
    before = pq.read_table(str(out))
    # Same input, model and settings but other column names: resuming would mix two schemas.
    assert_error(run_score(src, tiny_model, out, "--result-prefix", "model_"), 5, "--overwrite")
    assert pq.read_table(str(out)).equals(before)
    result = run_score(src, tiny_model, out, "--result-prefix", "model_", "--overwrite")
    assert result.exit_code == 0, result.output
    assert pq.read_table(str(out)).column_names[-2:] == ["model_label", "model_score"]

"""Relative paths in a --config file resolve against the file's folder; command line and env stay cwd-relative."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchscore.config import build_config
from helpers import invoke, pipeline_oracle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def job_dir(tmp_path, monkeypatch):
    """tmp/jobs/job.yaml beside tmp/jobs/data.parquet; the test runs from tmp/elsewhere."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    pq.write_table(pa.table({"text": ["I love it", "I hate it"]}), jobs / "data.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return jobs


def config_in(folder: Path, text: str) -> str:
    path = folder / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_in_a_subfolder_scores_with_the_model_beside_it(job_dir, tiny_model):
    shutil.copytree(tiny_model, job_dir / "model")
    config = config_in(job_dir, "input: data.parquet\nmodel: model\noutput: scored\n")
    result = invoke(["score", "--config", config, "--no-progress"], env={})
    assert result.exit_code == 0, result.output
    out = job_dir / "scored"
    assert out.is_dir() and not os.listdir(".")  # written beside the config, nothing in the cwd
    table = pq.read_table(str(out))
    expected = pipeline_oracle(tiny_model, ["I love it", "I hate it"])
    assert table.column("label").to_pylist() == [e["label"] for e in expected]
    np.testing.assert_allclose(table.column("score").to_pylist(), [e["score"] for e in expected], atol=1e-5)


def test_relative_config_path_gives_cwd_relative_values(job_dir, tiny_model):
    shutil.copytree(tiny_model, job_dir / "model")
    config_in(job_dir, "input: data.parquet\nmodel: model\noutput: scored\n")
    cfg = build_config({}, env={}, config_file="../jobs/job.yaml")
    assert (cfg.input, cfg.model, cfg.output) == ("../jobs/data.parquet", "../jobs/model", "../jobs/scored")


def test_hub_names_that_do_not_exist_beside_the_config_pass_through(job_dir):
    config = config_in(job_dir, "input: stanfordnlp/imdb\nmodel: someone/sentiment-model\n")
    cfg = build_config({}, env={}, config_file=config)
    assert (cfg.input, cfg.model) == ("stanfordnlp/imdb", "someone/sentiment-model")


def test_a_local_folder_shaped_like_a_hub_name_wins_beside_the_config(job_dir):
    (job_dir / "someone" / "sentiment-model").mkdir(parents=True)
    cfg = build_config({}, env={}, config_file=config_in(job_dir, "model: someone/sentiment-model\n"))
    assert cfg.model == str(job_dir / "someone" / "sentiment-model")


def test_explicitly_relative_values_always_resolve(job_dir):
    # ./ and ../ are never Hub names: a missing folder is reported where the config says it is.
    cfg = build_config({}, env={}, config_file=config_in(job_dir, "model: ../models/missing\ninput: ./nope.csv\n"))
    assert cfg.model == str(job_dir.parent / "models" / "missing")
    assert cfg.input == str(job_dir / "nope.csv")


def test_a_glob_resolves_when_it_matches_beside_the_config(job_dir):
    cfg = build_config({}, env={}, config_file=config_in(job_dir, "input: '*.parquet'\n"))
    assert cfg.input == str(job_dir / "*.parquet")
    cfg = build_config({}, env={}, config_file=config_in(job_dir, "input: '*.jsonl'\n"))
    assert cfg.input == "*.jsonl"


@pytest.mark.parametrize("value", ["s3://bucket/scored/", "memory://out", "/abs/out"])
def test_urls_and_absolute_paths_are_kept(job_dir, value):
    cfg = build_config({}, env={}, config_file=config_in(job_dir, f"output: '{value}'\ninput: '{value}'\n"))
    assert (cfg.output, cfg.input) == (value, value)


def test_command_line_and_env_values_stay_relative_to_the_cwd(job_dir):
    shutil.copy(job_dir / "data.parquet", "data.parquet")
    (job_dir / "model").mkdir()
    config = config_in(job_dir, "text_column: text\n")
    cfg = build_config(
        {"input": "data.parquet", "output": "out"}, env={"BATCHSCORE_MODEL": "model"}, config_file=config
    )
    assert (cfg.input, cfg.output, cfg.model) == ("data.parquet", "out", "model")


def test_config_named_by_env_var_resolves_against_its_folder(job_dir):
    config_in(job_dir, "output: scored\n")
    cfg = build_config({}, env={"BATCHSCORE_CONFIG": str(job_dir / "job.yaml")})
    assert cfg.output == str(job_dir / "scored")


def test_shipped_default_config_points_at_the_repo_models_folder_from_any_cwd(job_dir, monkeypatch):
    cfg = build_config({}, env={}, config_file=str(REPO / "configs" / "default.yaml"))
    assert cfg.model == str(REPO / "models" / "minilm-vader-sentiment")
    # `make score` runs from the repo root with a relative --config: the same folder the Makefile builds.
    monkeypatch.chdir(REPO)
    cfg = build_config({}, env={}, config_file="configs/default.yaml")
    assert cfg.model == "models/minilm-vader-sentiment"

"""The command line: help, version, error lines and exit codes, the installed executable."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchscore import __version__
from helpers import assert_error, invoke

ROWS = [
    {"id": 1, "text": "I've been waiting for a HuggingFace course my whole life."},
    {"id": 2, "text": "I hate this so much!"},
    {"id": 3, "text": "42"},
]


@pytest.fixture
def small_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(ROWS)
    return path


def assert_output_rows(out, rows=ROWS, columns=("id", "text", "label", "score")):
    table = pq.read_table(str(out))
    assert table.column_names == list(columns)
    assert table.column("id").to_pylist() == [str(r["id"]) for r in rows]  # CSV: as written
    assert table.column("text").to_pylist() == [r["text"] for r in rows]
    assert set(table.column("label").to_pylist()) <= {"NEGATIVE", "POSITIVE"}
    assert table.column("label").null_count == 0
    return table


# ------------------------------------------------------------------ help, version


def test_main_help_shows_example():
    result = invoke(["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert "batchscore score " in result.output
    assert "score" in result.output.split("Commands:")[1]


def test_short_help_flag():
    assert invoke(["-h"]).exit_code == 0


def test_score_help_shows_examples_options_and_exit_codes():
    result = invoke(["score", "--help"])
    assert result.exit_code == 0
    out = result.output
    assert "Example" in out and "batchscore score " in out
    for flag in (
        "--model",
        "--text-column",
        "--keep-columns",
        "--id-column",
        "--top-k",
        "--batch-tokens",
        "--chunk-rows",
        "--limit",
        "--split",
        "--overwrite",
        "--config",
        "-o, --output",
    ):
        assert flag in out, flag
    assert "BATCHSCORE_BATCH_TOKENS" in out  # env vars are documented
    assert "Exit codes" in out and "3 input error" in out


def test_version():
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"batchscore, version {__version__}"


# ------------------------------------------------------------------ errors


def test_missing_input_file(tmp_path, tiny_model):
    result = invoke(["score", tmp_path / "nope.csv", "--model", tiny_model, "-o", tmp_path / "out"])
    assert_error(result, 3, "nope.csv", "not found")
    assert not (tmp_path / "out").exists()


def test_missing_input_folder(tmp_path, tiny_model):
    result = invoke(["score", tmp_path / "no_such_folder", "--model", tiny_model, "-o", tmp_path / "out"])
    assert_error(result, 3, "no_such_folder")


def test_folder_without_data_files(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing to score")
    result = invoke(["score", tmp_path / "empty", "--model", tiny_model, "-o", tmp_path / "out"])
    assert_error(result, 3, "No .csv")


@pytest.mark.parametrize("name", ["notes.txt", "reviews.csv.zip"])
def test_file_of_unknown_format(tmp_path, tiny_model, name):
    (tmp_path / name).write_bytes(b"text\nhello\n")
    result = invoke(["score", tmp_path / name, "--model", tiny_model, "-o", tmp_path / "out"])
    assert_error(result, 3, name, ".csv", ".parquet", ".jsonl")


def test_missing_text_column_lists_columns(tmp_path, tiny_model, small_csv):
    result = invoke(["score", small_csv, "--text-column", "body", "--model", tiny_model, "-o", tmp_path / "out"])
    line = assert_error(result, 3, "'body'", "--text-column")
    assert "id" in line and "text" in line  # the columns that do exist
    assert not (tmp_path / "out").exists()


def test_missing_id_column(tmp_path, tiny_model, small_csv):
    result = invoke(["score", small_csv, "--id-column", "uid", "--model", tiny_model, "-o", tmp_path / "out"])
    assert_error(result, 3, "'uid'", "--id-column")


def test_unknown_model_dir(tmp_path, small_csv):
    result = invoke(["score", small_csv, "--model", tmp_path / "no-model-here", "-o", tmp_path / "out"])
    assert_error(result, 4, "no-model-here", "--model")
    assert not (tmp_path / "out").exists()


def test_overwrite_leaves_old_output_alone_when_the_model_fails(tmp_path, small_csv, tiny_model):
    out = tmp_path / "out"
    assert invoke(["score", small_csv, "--model", tiny_model, "-o", out, "--no-progress"]).exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    result = invoke(["score", small_csv, "--model", tmp_path / "no-model-here", "-o", out, "--overwrite"])
    assert_error(result, 4, "no-model-here")
    assert sorted(p.name for p in out.iterdir()) == before


def test_no_input_at_all():
    result = invoke(["score"], env={"BATCHSCORE_INPUT": ""})
    assert_error(result, 2, "INPUT")


def test_bad_option_value_is_a_usage_error(small_csv):
    result = invoke(["score", small_csv, "--chunk-rows", "0"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--chunk-rows" in result.stderr


def test_bad_env_value_is_a_config_error(small_csv):
    result = invoke(["score", small_csv], env={"BATCHSCORE_BATCH_TOKENS": "lots"})
    assert_error(result, 2, "batch_tokens", "lots")


def test_existing_output_needs_overwrite(tmp_path, tiny_model, small_csv):
    out = tmp_path / "out"
    args = ["score", small_csv, "--model", tiny_model, "-o", out, "--no-progress"]
    assert invoke(args).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    again = invoke(args)  # the same job again: already complete, nothing rewritten
    assert again.exit_code == 0 and "Already complete" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    assert_error(invoke([*args, "--top-k", "all"]), 5, "--overwrite", str(out), "top_k")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched

    result = invoke([*args, "--top-k", "all", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert_output_rows(out, columns=["id", "text", "label", "score", "scores"])
    assert sorted(n for n in os.listdir(out) if not n.startswith(".")) == [
        "_SUCCESS",
        "_batchscore",
        "_manifest.parquet",
        "part-000000.parquet",
    ]


def test_existing_parquet_file_needs_overwrite(tmp_path, tiny_model, small_csv):
    out = tmp_path / "scored.parquet"
    out.write_bytes(b"previous results")
    result = invoke(["score", small_csv, "--model", tiny_model, "-o", out, "--no-progress"])
    assert_error(result, 5, "--overwrite")
    assert out.read_bytes() == b"previous results"


def test_overwrite_never_empties_a_foreign_folder(tmp_path, tiny_model, small_csv):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = invoke(["score", small_csv, "--model", tiny_model, "-o", out, "--overwrite", "--no-progress"])
    assert_error(result, 5, "thesis.tex")
    assert (out / "thesis.tex").read_text() == "precious"


def test_empty_existing_output_folder_is_fine(tmp_path, tiny_model, small_csv):
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(["score", small_csv, "--model", tiny_model, "-o", out, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert_output_rows(out)


# ------------------------------------------------------------------ the executable


def _executable() -> Path:
    exe = Path(sys.executable).parent / "batchscore"
    if not exe.exists():
        pytest.skip(f"no installed batchscore executable next to {sys.executable}")
    return exe


def _env():
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return {k: v for k, v in env.items() if not k.startswith("BATCHSCORE_")}


def test_installed_executable_scores_a_csv(tmp_path, tiny_model, small_csv):
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(_executable()), "score", str(small_csv), "--model", tiny_model, "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Scored 3 of 3 rows" in proc.stderr
    assert (out / "_SUCCESS").exists()
    assert_output_rows(out)


def test_installed_executable_error_exit_code(tmp_path, tiny_model):
    proc = subprocess.run(
        [
            str(_executable()),
            "score",
            str(tmp_path / "missing.jsonl"),
            "--model",
            tiny_model,
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "missing.jsonl" in lines[0]


def test_unreachable_hub_names_the_offline_model_and_make_model(small_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    result = invoke(["score", small_csv, "--model", "some-org/not-cached-model", "-o", tmp_path / "out"])
    # Works outside the repo too: the command to build it, and where it lands.
    built = tmp_path / "home" / "models" / "minilm-vader-sentiment"
    assert_error(result, 4, "batchscore build-model", f"--model {built}", "make model", "not-cached-model")


def test_build_model_writes_to_the_user_cache_by_default(monkeypatch, tmp_path):
    from batchscore.build_model import default_out

    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "bs"))
    assert default_out() == str(tmp_path / "bs" / "models" / "minilm-vader-sentiment")
    monkeypatch.delenv("BATCHSCORE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_out() == str(tmp_path / "xdg" / "batchscore" / "models" / "minilm-vader-sentiment")


def test_a_built_model_folder_is_readable_by_others(tmp_path, monkeypatch):
    """mkdtemp makes 0700 folders; the model folder gets the umask's usual mode, for other service accounts."""
    import stat

    import batchscore.build_model.builder as build_model

    class Saves:
        def save_pretrained(self, path):
            (Path(path) / "config.json").write_text("{}")

    monkeypatch.setattr(build_model, "model_card", lambda report: "card")
    out = tmp_path / "model"
    old = os.umask(0o022)
    try:
        build_model.save_atomically(str(out), Saves(), Saves(), {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert (out / "config.json").exists()

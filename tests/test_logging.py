"""Logs a scheduler can read: --quiet, --log-format json, internal errors as one line; threads that fit the CPUs."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import invoke, manifest_of


def score_args(src, model, out, *extra):
    return ["score", src, "-o", out, "--model", model, "--no-progress", *extra]


def test_quiet_prints_nothing_on_success(three_row_csv, tiny_model, tmp_path):
    result = invoke(score_args(three_row_csv, tiny_model, tmp_path / "out", "--quiet"))
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout == ""
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_quiet_still_reports_errors(tiny_model, tmp_path):
    result = invoke(score_args(tmp_path / "missing.csv", tiny_model, tmp_path / "out", "--quiet"))
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: Input") and len(result.stderr.strip().splitlines()) == 1


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line must be a JSON object


def test_json_log_lines(three_row_csv, tiny_model, tmp_path):
    out = tmp_path / "out"
    first = invoke(score_args(three_row_csv, tiny_model, out, "--log-format", "json", "--chunk-rows", "2"))
    assert first.exit_code == 0, first.output
    entries = json_lines(first.stderr)
    summary = entries[-1]
    assert {"time", "level", "message"} <= set(summary) and summary["level"] == "info"
    assert (summary["rows"], summary["scored_rows"], summary["chunks"]) == (3, 2, 2)
    assert summary["message"].startswith("Scored 2 of 3 rows")
    rerun = invoke(score_args(three_row_csv, tiny_model, out, "--log-format", "json", "--chunk-rows", "2"))
    again = json_lines(rerun.stderr)
    assert again[-1]["already_complete"] is True


def test_json_errors_are_one_object_with_the_exit_code(tiny_model, tmp_path):
    result = invoke(
        score_args(tmp_path / "missing.csv", tiny_model, tmp_path / "out"), env={"BATCHSCORE_LOG_FORMAT": "json"}
    )
    assert result.exit_code == 3
    (entry,) = json_lines(result.stderr)
    assert entry["level"] == "error" and entry["exit_code"] == 3 and "not found" in entry["message"]
    assert "Traceback" not in result.stderr


def test_finalize_and_manifest_take_the_log_options(tmp_path):
    result = invoke(["finalize", tmp_path / "nothing", "--log-format", "json"])
    assert result.exit_code == 5
    (entry,) = json_lines(result.stderr)
    assert entry["exit_code"] == 5
    assert invoke(["manifest", tmp_path / "nothing", "--quiet"]).exit_code == 5


def test_internal_error_is_one_line_exit_1_traceback_only_when_verbose(
    three_row_csv, tiny_model, tmp_path, monkeypatch
):
    import batchscore.job

    def broken(cfg, *args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(batchscore.job, "run_job", broken)
    plain = invoke(score_args(three_row_csv, tiny_model, tmp_path / "out"))
    assert plain.exit_code == 1
    assert plain.stderr.strip() == ("Error: internal error: RuntimeError: boom; rerun with --verbose and report it")
    verbose = invoke(score_args(three_row_csv, tiny_model, tmp_path / "out", "--verbose"))
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.stderr and "RuntimeError: boom" in verbose.stderr


# ------------------------------------------------------------------ threads


def test_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path):
    from batchscore.scoring.cpu import cgroup_cpu_quota

    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path / "v2")) == 1.5
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path / "v2")) is None
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(str(tmp_path / "v1")) == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(str(tmp_path / "v1")) is None
    assert cgroup_cpu_quota(str(tmp_path / "none")) is None


def test_threads_split_among_local_ranks_and_the_option_wins(monkeypatch):
    from batchscore.scoring import cpu as threads

    monkeypatch.setattr(threads, "allowed_cpus", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.model_threads(None) == 4
    assert threads.model_threads(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert threads.model_threads(None) == 1


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_one_cpu_under_taskset_means_one_thread(three_row_csv, tiny_model, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "batchscore",
            *map(str, score_args(three_row_csv, tiny_model, out, "--quiet")),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "LOCAL_WORLD_SIZE": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert manifest_of(out)["threads"] == 1

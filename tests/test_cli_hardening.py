"""The CLI's edges (issue 19): bad option, env and config values, readable error lines, JSON usage errors,
stop signals to any command, damaged model files, --max-length clamping, memory:// from the command line.

Each failure is one `Error:` line with the documented exit code (2 usage/config, 3 input, 4 model,
130 interrupted); exit 1 stays for bugs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, default_stop_signals, invoke, run_score

LINE = 1000 + len("Error: ")  # logs.MAX_LINE and the prefix


def config_file(tmp_path, text: str | bytes, name="job.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------ 1. bad option, env and config values: exit 2


@pytest.mark.parametrize("how", ["option", "env", "config"])
def test_threads_beyond_4096_is_a_usage_error_naming_the_bound(how, three_row_csv, tiny_model, tmp_path):
    extra, env = [], {}
    if how == "option":
        extra = ["--threads", "3000000000", "--log-format", "json"]  # Click's own check: one JSON line
    elif how == "env":
        env = {"BATCHSCORE_THREADS": "3000000000"}
    else:
        extra = ["--config", config_file(tmp_path, "threads: 3000000000\n")]
    result = run_score(three_row_csv, tiny_model, tmp_path / "out", *extra, env=env)
    if how == "option":
        (entry,) = json_lines(result.stderr)
        assert result.exit_code == 2 and entry["exit_code"] == 2 and "4096" in entry["message"]
    else:
        assert_error(result, 2, "threads", "at most 4096", "3000000000")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("1000000000000000000000000000000", "at most 9223372036854775807"),  # beyond int64: Arrow, numpy, manifest
        ("1e3", "whole number"),
        ("١٢", "whole number"),  # int() takes Arabic-Indic digits; an option takes ASCII digits only
        ("-5", "at least 1"),
    ],
)
def test_whole_number_options_take_ascii_digits_within_int64(value, fragment, three_row_csv, tiny_model, tmp_path):
    result = run_score(three_row_csv, tiny_model, tmp_path / "out", env={"BATCHSCORE_CHUNK_ROWS": value})
    assert_error(result, 2, "chunk_rows (from environment)", fragment)


def test_num_workers_from_a_config_file_is_bounded(three_row_csv, tiny_model, tmp_path):
    from batchscore.config import build_config
    from batchscore.errors import ConfigError

    cfg = config_file(tmp_path, "num_workers: -1\n")
    result = run_score(three_row_csv, tiny_model, tmp_path / "out", "--config", cfg)
    assert_error(result, 2, "num_workers (from config file", "at least 0")
    # Checked on the config alone: a job would fork them (100,000 processes, before the bound).
    with pytest.raises(ConfigError, match="at most 256, got 100000"):
        build_config(env={}, config_file=str(config_file(tmp_path, "num_workers: 100000\n")))


def test_a_config_path_that_is_a_folder_is_a_usage_error(three_row_csv, tiny_model, tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    result = run_score(three_row_csv, tiny_model, tmp_path / "out", env={"BATCHSCORE_CONFIG": str(folder)})
    assert_error(result, 2, "is a folder", "--config")
    cli = run_score(three_row_csv, tiny_model, tmp_path / "out", "--config", folder, "--log-format", "json")
    (entry,) = json_lines(cli.stderr)  # Click's own check, as one JSON line
    assert cli.exit_code == 2 and entry["exit_code"] == 2 and "directory" in entry["message"]


def test_a_config_file_that_is_not_utf8_is_a_usage_error(three_row_csv, tiny_model, tmp_path):
    cfg = config_file(tmp_path, b"\xff\xfe\x00t\x00h\x00r\x00e\x00a\x00d\x00s\x00:\x00 \x002\x00\n")
    result = run_score(three_row_csv, tiny_model, tmp_path / "out", "--config", cfg)
    assert_error(result, 2, "not UTF-8 text", "0xff", "save it as UTF-8")


# Eight levels of nine aliases inside one option's value: 9**8 (43 million) column names in 350 bytes.
BOMB = "keep_columns:\n- &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"- &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh")
)


def test_a_yaml_alias_bomb_is_refused_at_once(three_row_csv, tiny_model, tmp_path):
    """354 bytes of nested aliases stand for 9**8 values: refused before anything walks them (was 37 s, 3.4 GB)."""
    cfg = config_file(tmp_path, BOMB)
    assert len(BOMB) < 400
    started = time.time()
    result = run_score(three_row_csv, tiny_model, tmp_path / "out", "--config", cfg)
    assert_error(result, 2, "YAML alias (*a, line 3)", "write the value out")
    assert time.time() - started < 10


def test_any_yaml_alias_is_refused_and_deep_nesting_too(three_row_csv, tiny_model, tmp_path):
    aliased = config_file(tmp_path, "text_column: &t text\nid_column: *t\n", "alias.yaml")
    assert_error(run_score(three_row_csv, tiny_model, tmp_path / "out", "--config", aliased), 2, "YAML alias (*t")
    deep = config_file(tmp_path, "limit: " + "[" * 50_000 + "\n", "deep.yaml")
    assert_error(run_score(three_row_csv, tiny_model, tmp_path / "out", "--config", deep), 2, "nests too deeply")


def test_a_nul_character_in_a_config_value_is_a_usage_error(three_row_csv, tiny_model, tmp_path):
    cfg = config_file(tmp_path, 'input: "in\\0.csv"\n')
    result = invoke(["score", "--config", cfg, "--model", tiny_model, "-o", tmp_path / "out"])
    assert_error(result, 2, "input (from config file", "NUL character", "in\\x00.csv")


# ------------------------------------------------------------------ 2. one readable line, whatever the values


def test_a_newline_in_an_env_value_stays_on_one_line(three_row_csv, tiny_model, tmp_path):
    result = run_score(three_row_csv, tiny_model, tmp_path / "out", env={"BATCHSCORE_TEXT_COLUMN": "a\nb\x1b[31m"})
    assert_error(result, 3, "Column 'a\\nb\\x1b[31m' not found", "Pass --text-column.")


def test_a_5000_character_path_is_shown_as_head_and_tail(tiny_model, tmp_path):
    missing = str(tmp_path) + "/" + "/".join(["d" * 240] * 21) + "/reviews.csv"
    assert len(missing) > 5000
    line = assert_error(run_score(missing, tiny_model, tmp_path / "out"), 3, "not found")
    assert len(line) <= LINE
    assert line.startswith(f"Error: Input '{str(tmp_path)[:20]}") and "…" in line
    assert "d/reviews.csv' not found; check the path" in line  # the file name and the fix survive


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_listing_of_20000_columns_is_summarized(log_format, tiny_model, tmp_path):
    wide = tmp_path / "wide.csv"
    names = [f"column_{i}" for i in range(20_000)]
    wide.write_text(",".join(names) + "\n" + ",".join("x" for _ in names) + "\n")
    result = run_score(wide, tiny_model, tmp_path / "out", "--log-format", log_format)
    if log_format == "json":
        (entry,) = json_lines(result.stderr)
        assert result.exit_code == 3 and entry["exit_code"] == 3
        line = "Error: " + entry["message"]
    else:
        line = assert_error(result, 3)
    assert len(line) <= LINE
    assert line.startswith("Error: Column 'text' not found; columns are: column_0, column_1, column_2")
    assert line.endswith("column_19998, column_19999. Pass --text-column.")
    assert "… (19,988 more)" in line


def test_readable_escapes_control_characters_and_cuts_the_middle():
    from batchscore.logs import MAX_LINE, readable

    assert readable("a\nb\tc\r\x00\u2028\udcff é 中") == "a\\nb\\tc\\r\\x00\\u2028\\udcff é 中"
    assert readable("short, list, of, items") == "short, list, of, items"  # nothing to cut: unchanged
    long = "What failed: " + "word " * 400 + "; the fix."
    shown = readable(long)
    assert len(shown) == MAX_LINE and shown.startswith("What failed: word") and shown.endswith("; the fix.")


def test_python_warnings_are_one_warning_line(capsys):
    """A library's warnings.warn (torch's DataLoader advice, ...) is one `Warning:` line, once, not raw lines."""
    import warnings

    from batchscore.logs import configure

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure()
        warnings.warn("first line\nsecond line " + "x" * 2000, UserWarning, stacklevel=1)
        warnings.warn("first line\nsecond line " + "x" * 2000, UserWarning, stacklevel=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Warning: first line\\nsecond line xxx")
    assert len(lines[0]) <= 1000 + len("Warning: ")


# ------------------------------------------------------------------ 3. usage errors in JSON mode


USAGE_ERRORS = [
    (["score", "in.csv", "--bogus"], "No such option '--bogus'"),
    (["score", "in.csv", "--top-k", "3"], "Invalid value for '--top-k'"),
    (["finalize"], "Missing argument 'OUTPUT'"),
    (["manifest", "a", "b"], "Got unexpected extra argument"),
    (["nope"], "No such command 'nope'"),
]


@pytest.mark.parametrize("args, fragment", USAGE_ERRORS)
@pytest.mark.parametrize("how", ["option", "env"])
def test_usage_errors_are_one_json_object_in_json_mode(args, fragment, how):
    if how == "option":
        result = invoke([*args, "--log-format", "json"])
    else:
        result = invoke(args, env={"BATCHSCORE_LOG_FORMAT": "json"})
    assert result.exit_code == 2, result.output
    (entry,) = json_lines(result.stderr)  # nothing else on stderr: no Usage lines
    assert entry["level"] == "error" and entry["exit_code"] == 2 and fragment in entry["message"]
    assert result.stdout == ""


@pytest.mark.parametrize("args, fragment", USAGE_ERRORS[:2])  # the errors of `score`, which takes --config
@pytest.mark.parametrize("how", ["option", "env"])
def test_usage_errors_follow_a_log_format_set_only_in_the_config_file(args, fragment, how, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("log_format: JSON\n")
    if how == "option":
        result = invoke([*args, "--config", str(config)])
    else:
        result = invoke(args, env={"BATCHSCORE_CONFIG": str(config)})
    assert result.exit_code == 2, result.output
    (entry,) = json_lines(result.stderr)
    assert entry["exit_code"] == 2 and fragment in entry["message"]
    # Env vars come before the file, as for every option.
    text = invoke([*args, "--config", str(config)], env={"BATCHSCORE_LOG_FORMAT": "text"})
    assert text.exit_code == 2 and text.stderr.startswith("Usage: "), text.stderr


@pytest.mark.parametrize("args, fragment", USAGE_ERRORS)
def test_usage_errors_in_text_mode_keep_the_usage_and_end_in_one_error_line(args, fragment):
    result = invoke(args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: ") and fragment in lines[-1]
    assert [line for line in lines if line.startswith("Error: ")] == [lines[-1]]


def test_help_and_version_are_unchanged_in_json_mode():
    env = {"BATCHSCORE_LOG_FORMAT": "json"}
    for args in (["--help"], ["score", "-h"], ["finalize", "--help"]):
        shown = invoke(args, env=env)
        assert shown.exit_code == 0 and shown.stdout.startswith("Usage: ") and shown.stderr == ""
    version = invoke(["--version"], env=env)
    assert version.exit_code == 0 and version.stdout.startswith("batchscore, version ")
    bare = invoke([], env=env)  # Click's help for no command, as before
    assert bare.exit_code == 2 and "Commands:" in bare.output


# ------------------------------------------------------------------ 4. stop signals, real processes


def _stderr_is_one_interrupted_line(stderr: str):
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == ["Error: Interrupted; committed chunks are kept. Rerun the same command to finish."], stderr


def _wait_for(check, proc, seconds=120):
    deadline = time.time() + seconds
    while not check():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.005)


# finalize, held inside its merge: the first Parquet write of the merged file tells the test and waits.
PAUSED_FINALIZE = """
import pathlib, sys, time
import pyarrow.parquet as pq

ready, pause = pathlib.Path(sys.argv[1]), float(sys.argv[2])
write = pq.ParquetWriter.write_table

def paused(self, *args, **kwargs):
    if not ready.exists():
        ready.write_text("merging")
        time.sleep(pause)
    return write(self, *args, **kwargs)

pq.ParquetWriter.write_table = paused
from batchscore.cli import main
main(sys.argv[3:], prog_name="batchscore")
"""


def _sharded_single_file(tmp_path, model) -> Path:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"text number {i}" for i in range(60)]}), src)
    out = tmp_path / "scored.parquet"
    for shard in (0, 1):
        result = run_score(src, model, out, "--chunk-rows", "10", "--num-shards", "2", "--shard-index", str(shard))
        assert result.exit_code == 0, result.output
    return out


def _paused_finalize(out: Path, ready: Path, pause: float, **popen):
    popen.setdefault("preexec_fn", default_stop_signals)
    return subprocess.Popen(
        [sys.executable, "-c", PAUSED_FINALIZE, str(ready), str(pause), "finalize", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stop_signal_during_finalize_is_exit_130_and_a_rerun_finishes(sig, tiny_model, tmp_path):
    out = _sharded_single_file(tmp_path, tiny_model)
    ready = tmp_path / "merging"
    proc = _paused_finalize(out, ready, 120)
    _wait_for(ready.exists, proc)
    os.killpg(proc.pid, getattr(signal, sig))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    _stderr_is_one_interrupted_line(stderr)
    rerun = invoke(["finalize", out])
    assert rerun.exit_code == 0 and "Finalized" in rerun.stderr, rerun.output
    assert pq.read_table(out).num_rows == 60


def test_a_signal_the_process_was_started_ignoring_stays_ignored(tiny_model, tmp_path):
    """`nohup batchscore ...`: SIGHUP is ignored from the start, and a closed terminal must not stop the run."""
    out = _sharded_single_file(tmp_path, tiny_model)
    ready = tmp_path / "merging"

    def nohup() -> None:
        default_stop_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = _paused_finalize(out, ready, 2, preexec_fn=nohup)
    _wait_for(ready.exists, proc)
    os.killpg(proc.pid, signal.SIGHUP)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Finalized" in stderr, stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_to_the_group_of_a_run_with_dataloader_workers(sig, tiny_model, tmp_path):
    """The workers get the signal too: they end quietly and the job alone reports, once, with exit 130."""
    src = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": [f"some words for row {i}, and a few more" for i in range(40_000)]}), src)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchscore",
            "score",
            str(src),
            "--model",
            tiny_model,
            "-o",
            str(out),
            "--num-workers",
            "2",
            "--chunk-rows",
            "200",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_stop_signals,
    )
    _wait_for(lambda: out.is_dir() and any(n.startswith("part-") for n in os.listdir(out)), proc)
    os.killpg(proc.pid, getattr(signal, sig))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    _stderr_is_one_interrupted_line(stderr)
    assert not (out / "_SUCCESS").exists()
    for part in (p for p in out.iterdir() if p.name.startswith("part-")):
        assert pq.read_table(part).num_rows == 200  # each committed part whole: a rerun resumes from them


def test_dataloader_workers_end_quietly_on_a_stop_signal():
    """quiet_worker, the DataLoader's worker_init_fn: SIGTERM from anyone (not only the parent) is exit 0."""
    code = (
        "import os, signal, sys, time\n"
        "from batchscore.scoring.feed import quiet_worker\n"
        "quiet_worker(0)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_stop_signals,
        )
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0 and stderr == "", (sig, proc.returncode, stderr)


# ------------------------------------------------------------------ 5. damaged model files: exit 4


def _damaged_model(tiny_model, tmp_path, damage) -> str:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    damage(folder)
    return str(folder)


def _truncate(name, size):
    def damage(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:size])

    return damage


def _pickle_garbage(folder):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(bytes(range(256)) * 12)


def _edit_config(**changes):
    def damage(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return damage


@pytest.mark.parametrize(
    "damage, extra, fragments",
    [
        (_truncate("model.safetensors", 5000), (), ("weights (model.safetensors)", "SafetensorError")),
        (_truncate("model.safetensors", 0), (), ("weights (model.safetensors)",)),
        (_pickle_garbage, ("--allow-pickle",), ("weights (pytorch_model.bin)",)),
        (_truncate("config.json", 20), (), ("config.json", "not a valid JSON")),
        (_edit_config(id2label="NEGATIVE"), (), ("config.json",)),
        (_truncate("tokenizer.json", 100), (), ("tokenizer files",)),
    ],
    ids=[
        "truncated-safetensors",
        "empty-safetensors",
        "garbage-bin",
        "config-not-json",
        "config-wrong-shape",
        "truncated-tokenizer",
    ],
)
def test_damaged_model_files_are_a_model_error_naming_the_file_and_the_fix(
    damage, extra, fragments, three_row_csv, tiny_model, tmp_path, outputs
):
    model = _damaged_model(tiny_model, tmp_path, damage)
    result = run_score(three_row_csv, model, outputs / "out", *extra)
    assert_error(
        result,
        4,
        f"Model folder '{model}': cannot read its",
        *fragments,
        "damaged or incomplete: copy or download the model again",
    )
    assert os.listdir(outputs) == []


# ------------------------------------------------------------------ 6. --max-length beyond the model's limit


def test_max_length_beyond_the_model_is_clamped_with_one_warning(three_row_csv, tiny_model, tmp_path):
    from helpers import manifest_of

    result = run_score(three_row_csv, tiny_model, tmp_path / "out", "--max-length", "2048")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings == [
        f"Warning: --max-length 2048 is more than model '{tiny_model}' takes; texts are truncated "
        "to its limit of 512 tokens (pass --max-length 512 or less to silence this)."
    ]
    assert manifest_of(tmp_path / "out")["config"]["max_length"] == 512
    within = run_score(three_row_csv, tiny_model, tmp_path / "out2", "--max-length", "128")
    assert within.exit_code == 0 and "Warning" not in within.stderr


# ------------------------------------------------------------------ 7. memory:// from the command line


@pytest.mark.parametrize("how", ["option", "env", "chained"])
def test_memory_output_from_the_cli_is_refused(how, three_row_csv, tiny_model, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    if how == "option":
        result = run_score(three_row_csv, tiny_model, "memory://cli-refused/out")
    else:
        url = "memory://cli-refused/out" if how == "env" else "simplecache::memory://cli-refused/out"
        result = invoke(
            ["score", three_row_csv, "--model", tiny_model, "--no-progress"], env={"BATCHSCORE_OUTPUT": url}
        )
    assert_error(result, 2, "memory://", "only inside one Python process", "batchscore.score")
    assert not memory.exists("/cli-refused")


def test_memory_output_from_the_library_still_works(three_row_csv, tiny_model):
    import fsspec

    from batchscore import score

    memory = fsspec.filesystem("memory")
    try:
        assert score(str(three_row_csv), "memory://library-ok/out", model=tiny_model)["rows"] == 3
        assert memory.exists("/library-ok/out/_SUCCESS")
    finally:
        if memory.exists("/library-ok"):
            memory.rm("/library-ok", recursive=True)


# ------------------------------------------------------------------ 8. the sweep: none of these is exit 1


SWEEP = [  # (extra args, env, config file text or None, exit code)
    (["--threads", "3000000000"], {}, None, 2),
    ([], {"BATCHSCORE_THREADS": "3000000000"}, None, 2),
    ([], {"BATCHSCORE_NUM_WORKERS": "1e3"}, None, 2),
    ([], {"BATCHSCORE_LIMIT": "12.5"}, None, 2),
    ([], {"BATCHSCORE_BATCH_TOKENS": "9223372036854775808"}, None, 2),
    (["--chunk-rows", str(10**30)], {}, None, 2),
    (["--num-shards", str(10**30), "--shard-index", "0"], {}, None, 2),
    ([], {"BATCHSCORE_MAX_LENGTH": "inf"}, None, 2),
    ([], {}, "num_workers: -3\n", 2),
    ([], {}, "keep_columns: {a: 1}\n", 2),
    ([], {}, "text_column: [a, b]\n", 2),
    ([], {}, "chunk_rows: .inf\n", 2),
    ([], {}, "[a, b]\n", 2),
    ([], {}, "{a: 1}: b\n", 2),
    ([], {}, "threads: &x 2\nlimit: *x\n", 2),
    ([], {"BATCHSCORE_TEXT_COLUMN": "no\nsuch"}, None, 3),
    (["--output", "memory://sweep/out"], {}, None, 2),
]


@pytest.mark.parametrize("extra, env, config, code", SWEEP)
def test_option_env_and_config_errors_are_never_exit_1(extra, env, config, code, three_row_csv, tiny_model, tmp_path):
    args = ["score", three_row_csv, "--model", tiny_model, "--no-progress", "--log-format", "json", *extra]
    if "--output" not in extra:
        args += ["-o", tmp_path / "out"]
    if config is not None:
        args += ["--config", config_file(tmp_path, config)]
    result = invoke(args, env=env)
    (entry,) = json_lines(result.stderr)
    assert (result.exit_code, entry["exit_code"], entry["level"]) == (code, code, "error"), entry

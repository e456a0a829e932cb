"""Every error path we know of, from input, options, environment, model files or store contents: none is exit 1.

Exit 1 means "a bug in batchscore". Whatever a user, a scheduler or a damaged
store hands the job must end in one `Error:` line with the documented code
(2 usage/config, 3 input, 4 model, 5 output), or succeed. Each case below was
found by trying it (issue 19 and the "Bad input" table in docs/errors.md); a new one
goes here as well as into its own module's tests.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import invoke

TEXTS = ["good", "bad", "fine", "awful"]


def _csv(tmp_path, body="text\ngood\nbad\n", name="in.csv"):
    path = tmp_path / name
    path.write_text(body)
    return path


def _bytes(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _parquet(tmp_path, name="in.parquet", **columns):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns or {"text": TEXTS}), path)
    return path


def _finished(tmp_path, model, name="done"):
    """A complete output of in.csv, and the args that made it."""
    src = _csv(tmp_path)
    out = tmp_path / name
    args = ["score", src, "--model", model, "-o", out, "--no-progress"]
    assert invoke(args).exit_code == 0
    return out, args


def _shards(tmp_path, model):
    """Output of shard 0 of 2 (so finalize reads its marker)."""
    src = _parquet(tmp_path)
    out = tmp_path / "sharded"
    args = ["score", src, "--model", model, "-o", out, "--no-progress", "--chunk-rows", "2"]
    assert invoke([*args, "--num-shards", "2", "--shard-index", "0"]).exit_code == 0
    assert invoke([*args, "--num-shards", "2", "--shard-index", "1"]).exit_code == 0
    return out


def _compressed(tmp_path, opener, suffix):
    path = tmp_path / f"in.csv{suffix}"
    with opener(path, "wb") as fh:
        fh.write(b"text\ngood\nbad\n")
    with open(path, "ab") as fh:
        fh.write(b"\x00garbage after the stream" * 4)
    return path


def _zstd(tmp_path):
    path = tmp_path / "in.csv.zst"
    with pa.CompressedOutputStream(str(path), "zstd") as fh:  # no zstd in Python's standard library before 3.14
        fh.write(b"text\ngood\nbad\n")
    with open(path, "ab") as fh:
        fh.write(b"\x00garbage after the stream" * 4)
    return path


def _model_copy(tmp_path, model):
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    return copy


def _truncated_weights(tmp_path, model):
    copy = _model_copy(tmp_path, model)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return copy


def _garbage_bin(tmp_path, model):
    copy = _model_copy(tmp_path, model)
    (copy / "model.safetensors").unlink()
    (copy / "pytorch_model.bin").write_bytes(b"this is not a pickle" * 100)
    return copy


def _bad_config_json(tmp_path, model):
    copy = _model_copy(tmp_path, model)
    (copy / "config.json").write_text("{not json")
    return copy


def _alias_bomb(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    lines.append("model: *h")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def case(name, expected, build):
    return pytest.param(build, expected, id=name)


# Each build(tmp_path, model) -> (args, env). `expected`: the exit codes allowed (0 where it now succeeds).
CASES = [
    # --- input (3)
    case("input-missing", {3}, lambda t, m: (["score", t / "nope.csv", "--model", m], {})),
    case("input-empty-file", {3}, lambda t, m: (["score", _csv(t, ""), "--model", m], {})),
    case("csv-ragged", {3}, lambda t, m: (["score", _csv(t, "text,n\na,1\nb,2,3\n"), "--model", m], {})),
    case(
        "jsonl-not-json", {3}, lambda t, m: (["score", _csv(t, '{"text": "a"}\n{oops\n', "in.jsonl"), "--model", m], {})
    ),
    case(
        "jsonl-top-level-array",
        {3},
        lambda t, m: (["score", _csv(t, '[{"text": "a"}]\n', "in.jsonl"), "--model", m], {}),
    ),
    case("parquet-garbage", {3}, lambda t, m: (["score", _csv(t, "PAR1 not really", "in.parquet"), "--model", m], {})),
    case("text-column-missing", {3}, lambda t, m: (["score", _csv(t), "--model", m, "--text-column", "body"], {})),
    case("text-column-list", {3}, lambda t, m: (["score", _parquet(t, text=[[1], [2]]), "--model", m], {})),
    case(
        "text-column-fixed-size-binary",
        {3},
        lambda t, m: (["score", _parquet(t, text=pa.array([b"\xff\xfe", b"ok"], pa.binary(2))), "--model", m], {}),
    ),
    case("csv-bad-utf8", {3}, lambda t, m: (["score", _bytes(t, "in.csv", b"text\n\xff\xfe\n"), "--model", m], {})),
    case("gz-trailing-garbage", {3}, lambda t, m: (["score", _compressed(t, gzip.open, ".gz"), "--model", m], {})),
    case("bz2-trailing-garbage", {3}, lambda t, m: (["score", _compressed(t, bz2.open, ".bz2"), "--model", m], {})),
    case("xz-trailing-garbage", {3}, lambda t, m: (["score", _compressed(t, lzma.open, ".xz"), "--model", m], {})),
    case("zst-trailing-garbage", {3}, lambda t, m: (["score", _zstd(t), "--model", m], {})),
    case(
        "hive-beyond-int64",
        {0, 3},
        lambda t, m: (
            [
                "score",
                _parquet(t / "in", "n=99999999999999999999/a.parquet").parent.parent,
                "--model",
                m,
                "-o",
                t / "o",
            ],
            {},
        ),
    ),
    case(
        "text-column-with-newline-in-env",
        {3},
        lambda t, m: (["score", _csv(t), "--model", m], {"BATCHSCORE_TEXT_COLUMN": "body\nError: fake second line"}),
    ),
    case(
        "hundred-thousand-columns",
        {3},
        lambda t, m: (
            [
                "score",
                _csv(t, ",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("x" * 100_000) + "\n"),
                "--model",
                m,
            ],
            {},
        ),
    ),
    # --- options and environment (2)
    case("threads-huge", {2}, lambda t, m: (["score", _csv(t), "--model", m, "--threads", "3000000000"], {})),
    case("encoding-rot13", {2}, lambda t, m: (["score", _csv(t), "--model", m], {"BATCHSCORE_ENCODING": "rot13"})),
    case("encoding-zlib", {2}, lambda t, m: (["score", _csv(t), "--model", m], {"BATCHSCORE_ENCODING": "zlib"})),
    case("encoding-unknown", {2}, lambda t, m: (["score", _csv(t), "--model", m, "--encoding", "klingon"], {})),
    case("config-is-a-folder", {2}, lambda t, m: (["score", _csv(t), "--model", m, "--config", t], {})),
    case(
        "config-not-utf8",
        {2},
        lambda t, m: (["score", _csv(t), "--model", m, "--config", _bytes(t, "c.yaml", b"model: \xff\xfe\n")], {}),
    ),
    case("config-alias-bomb", {2}, lambda t, m: (["score", _csv(t), "--config", _alias_bomb(t)], {})),
    case(
        "lease-seconds-inf",
        {2},
        lambda t, m: (["score", _csv(t), "--model", m, "-o", t / "o"], {"BATCHSCORE_LEASE_SECONDS": "inf"}),
    ),
    case(
        "lease-seconds-text",
        {2},
        lambda t, m: (["score", _csv(t), "--model", m, "-o", t / "o"], {"BATCHSCORE_LEASE_SECONDS": "soon"}),
    ),
    case("output-memory-from-cli", {2}, lambda t, m: (["score", _csv(t), "--model", m, "-o", "memory://x/out"], {})),
    case(
        "shard-index-out-of-range",
        {2},
        lambda t, m: (["score", _csv(t), "--model", m, "--num-shards", "2", "--shard-index", "2"], {}),
    ),
    case("unknown-option", {2}, lambda t, m: (["score", _csv(t), "--model", m, "--no-such-option"], {})),
    case("two-models-no-prefix", {2}, lambda t, m: (["score", _csv(t), "--model", m, "--model", m], {})),
    case(
        "window-overlap-past-the-window",
        {2},
        lambda t, m: (
            ["score", _csv(t), "--model", m, "-o", t / "o", "--long-text", "window", "--max-length", "16"]
            + ["--window-overlap", "64"],
            {},
        ),
    ),
    # --- places (ownership.py): a writer where another owns the place (2; the output's own place is 5)
    case(
        "cache-inside-the-output",
        {2},
        lambda t, m: (["score", _csv(t), "--model", m, "-o", t / "o", "--cache", t / "o" / "cache"], {}),
    ),
    case(
        "cache-is-the-input-folder",
        {2},
        lambda t, m: (["score", _parquet(t / "data").parent, "--model", m, "-o", t / "o", "--cache", t / "data"], {}),
    ),
    case("report-png-inside-the-output", {2}, lambda t, m: _png_inside(t, m)),
    case("cache-admin-on-a-folder-not-a-cache", {5}, lambda t, m: (["cache", "info", _parquet(t / "d").parent], {})),
    # --- model files (4)
    case("model-missing", {4}, lambda t, m: (["score", _csv(t), "--model", t / "no-model"], {})),
    case(
        "model-truncated-safetensors",
        {4},
        lambda t, m: (["score", _csv(t), "--model", _truncated_weights(t, m), "-o", t / "o"], {}),
    ),
    case(
        "model-garbage-bin",
        {4},
        lambda t, m: (["score", _csv(t), "--model", _garbage_bin(t, m), "--allow-pickle", "-o", t / "o"], {}),
    ),
    case(
        "model-config-not-json",
        {4},
        lambda t, m: (["score", _csv(t), "--model", _bad_config_json(t, m), "-o", t / "o"], {}),
    ),
    # --- output and store contents (5)
    case(
        "output-unreachable-store",
        {5},
        lambda t, m: (["score", _csv(t), "--model", m, "-o", "ftp://127.0.0.1:1/out/"], {}),
    ),
    case("output-unknown-scheme", {5}, lambda t, m: (["score", _csv(t), "--model", m, "-o", "nope://x/out"], {})),
    case(
        "output-name-too-long",
        {5},
        lambda t, m: (["score", _csv(t), "--model", m, "-o", t / ("x" * 248 + ".parquet")], {}),
    ),
    case(
        "output-holds-the-input-folder",
        {5},
        lambda t, m: (["score", _parquet(t / "data").parent, "--model", m, "-o", t], {}),
    ),
    case("output-is-the-input", {5}, lambda t, m: (["score", _parquet(t), "--model", m, "-o", t / "in.parquet"], {})),
    case("output-foreign-part-file", {5}, lambda t, m: _foreign_part(t, m)),
    case("output-records-symlinked-outside", {5}, lambda t, m: _symlinked_records(t, m)),
    case("marker-empty", {5}, lambda t, m: _damaged_marker(t, m, b"")),
    case("marker-count-as-text", {5}, lambda t, m: _damaged_marker(t, m, "num_shards")),
]


def _png_inside(tmp_path, model):
    out, _ = _finished(tmp_path, model)
    return ["report", out, "--png", out / "charts"], {}


def _foreign_part(tmp_path, model):
    out, args = _finished(tmp_path, model)
    (out / "part-000099.parquet").write_text("my notes, not a part\n")
    return [*args, "--overwrite"], {}


def _symlinked_records(tmp_path, model):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    src = _csv(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "_batchscore")
    return ["score", src, "--model", model, "-o", out, "--no-progress"], {}


def _damaged_marker(tmp_path, model, damage):
    out = _shards(tmp_path, model)
    marker = out / "_batchscore" / "shard-00000-of-00002.json"
    if isinstance(damage, bytes):
        marker.write_bytes(damage)
    else:
        record = json.loads(marker.read_text())
        record[damage] = "two"
        marker.write_text(json.dumps(record))
    return ["finalize", out], {}


@pytest.mark.parametrize("build, expected", CASES)
def test_no_error_path_is_exit_1(build, expected, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output lands here, never in the repo
    work = tmp_path / "work"
    work.mkdir()
    args, env = build(work, tiny_model)
    result = invoke(args, env=env)
    assert result.exit_code != 1, result.output[-2000:]
    assert result.exit_code in expected, (result.exit_code, result.output[-2000:])
    assert "Traceback" not in result.output
    if result.exit_code:
        lines = result.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("Error: ")]
        # One line; Click's usage errors alone come with their "Usage:" and "Try ... --help" lines.
        assert len(errors) == 1 and (len(lines) == 1 or lines[0].startswith("Usage: ")), lines[:4]
        assert len(errors[0]) <= 1000, len(errors[0])  # readable, whatever the values
    if (work / "elsewhere").exists():  # nothing outside OUT is ever touched
        assert sorted(os.listdir(work / "elsewhere")) == ["keep.txt"]

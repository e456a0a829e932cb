"""--precision fastest beyond one local process: the choice recorded on S3 (a real moto server, never a mock),
taken by a second shard and gone once finalized; and under torchrun (gloo, CPU), where rank 0 alone calibrates
and every rank scores in its choice.

The oracle is a plain run in the chosen precision: calibrating decides the precision, never the scores.
"""

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchscore
from batchscore.output import Output
from batchscore.output.calibration import record, recorded
from batchscore.scoring import calibrate
from helpers import assert_same_table, invoke, manifest_of, with_rechecks

ROWS, CHUNK = 240, 40  # 6 chunks: 3 per shard
SAMPLE = 20  # --calibration-rows: an input under 10 x the sample keeps fp32 without calibrating
RECORD = "_batchscore/calibration.json"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    words = "good bad fine awful great boring loved hated plot service really".split()
    texts = [" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(3 + i % 9)) for i in range(ROWS)]
    texts[7] = None  # no text: no label, in every precision
    path = tmp_path_factory.mktemp("calibration_stores") / "in.parquet"
    pq.write_table(pa.table({"text": texts, "n": list(range(ROWS))}), path)
    return str(path)


def in_precision(corpus, model, out, precision):
    """The oracle: the same rows scored locally with a plain --precision."""
    batchscore.score(corpus, str(out), model=model, precision=precision, chunk_rows=CHUNK)
    return pq.read_table(out).sort_by("n")


# ------------------------------------------------------------------ S3


def choice(precision):
    return {"min_agreement": 0.999, "models": [{"model": "m", "precision": precision}]}


def test_first_record_wins_on_s3(s3_bucket, s3_fs, monkeypatch):
    output = Output.open(f"s3://{s3_bucket}/out")
    assert recorded(output) is None
    assert record(output, choice("int8")) == choice("int8")
    assert record(output, choice("fp32")) == choice("int8")  # found there: the first writer's choice
    # Two writers that both found no record: the conditional PUT (If-None-Match) refuses the second.
    with monkeypatch.context() as patch:
        patch.setattr(output.store, "exists", lambda path: False)
        assert record(output, choice("bf16")) == choice("int8")
    assert recorded(output) == choice("int8")
    assert record(output, choice("fp32"), replace=True) == choice("fp32")
    assert recorded(output) == choice("fp32")
    assert s3_fs.find(f"{s3_bucket}/out") == [f"{s3_bucket}/out/{RECORD}"]  # nothing else written


def test_s3_shards_take_the_first_shards_choice_and_finalize_removes_the_record(
    corpus, tiny_model, s3_bucket, s3_fs, monkeypatch, tmp_path
):
    folder = f"{s3_bucket}/out"

    def shard(index):
        return batchscore.score(
            corpus,
            f"s3://{folder}/",
            model=tiny_model,
            precision="fastest",
            chunk_rows=CHUNK,
            calibration_rows=SAMPLE,
            num_shards=2,
            shard_index=index,
        )

    monkeypatch.setattr(calibrate, "choose", lambda measured, bar: "int8")
    monkeypatch.setattr(calibrate, "recheck", lambda *args: (0.0, 0.0, None))  # int8 alone: its oracle is plain
    shard(0)
    s3_fs.invalidate_cache()
    assert recorded(Output.open(f"s3://{folder}"))["models"][0]["precision"] == "int8"  # on the bucket

    def refuse(*args, **kwargs):
        raise AssertionError("calibrated again, though the output records a choice")

    monkeypatch.setattr(calibrate, "calibrate", refuse)
    shard(1)
    done = invoke(["finalize", f"s3://{folder}/"])
    assert done.exit_code == 0, done.output

    manifest = manifest_of(folder, fs=s3_fs)
    assert manifest["calibration"]["models"][0]["precision"] == "int8"
    assert manifest["config"]["precision"] == "int8"
    got = pq.read_table(folder, filesystem=s3_fs).sort_by("n")
    expected = in_precision(corpus, tiny_model, tmp_path / "int8", "int8")
    assert got.column("label").to_pylist() == expected.column("label").to_pylist()
    assert got.column("score").to_pylist() == expected.column("score").to_pylist()
    s3_fs.invalidate_cache()
    assert not [k for k in s3_fs.find(folder) if k.endswith("calibration.json")]


# ------------------------------------------------------------------ ranks under torchrun (gloo)


def torchrun(nproc, args):
    """`batchscore ARGS` under torchrun; (exit code, stderr)."""
    import torch

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    # Each rank takes its share of this process's threads, as in test_scale.py: scores within SCORE_TOLERANCE.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run(
        [*cmd, "-m", "batchscore", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    return done.returncode, done.stderr


@pytest.mark.slow  # over 10 s: make test-slow
def test_two_ranks_calibrate_once_and_score_in_rank_zeros_choice(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    args = ["score", corpus, "--model", tiny_model, "-o", out, "--chunk-rows", CHUNK, "--no-progress"]
    code, err = torchrun(2, [*args, "--precision", "fastest", "--calibration-rows", SAMPLE])
    assert code == 0, err[-3000:]
    assert err.count(f"calibrated on {SAMPLE} rows") == 1, err[-3000:]  # rank 0 only...
    assert err.count("as the output records") == 1, err[-3000:]  # ...rank 1 reads its record
    manifest = manifest_of(out)
    (entry,) = manifest["calibration"]["models"]
    assert manifest["config"]["precision"] == entry["precision"]
    assert [(s["shard"], s["num_shards"]) for s in manifest["shards"]] == [(0, 2), (1, 2)]
    assert "calibration.json" not in os.listdir(out / "_batchscore")
    expected = in_precision(corpus, tiny_model, tmp_path / "plain", entry["precision"])
    got = pq.read_table(out).sort_by("n")
    if entry.get("recheck_margin"):  # rows the chosen precision scored close to a tie carry fp32's scores
        exact = in_precision(corpus, tiny_model, tmp_path / "fp32", "fp32")
        expected, _, unsure = with_rechecks(expected, exact, entry["recheck_margin"])
        got, expected = got.filter(~unsure), expected.filter(~unsure)
    assert_same_table(got, expected)

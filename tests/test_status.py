"""batchscore status: a live run (exit 10, its writer named), a killed one (exit 11, its shards counted), shards,
damage, an object store; and never a write: the output's files, bytes and mtimes, are the same after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, assert_ok, default_stop_signals, file_tree, invoke, run_score

ROWS, CHUNK = 6000, 100  # 60 chunks: a tiny model takes a few seconds over them


@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("status") / "in.parquet"
    texts = [f"a fairly ordinary sentence number {i} about a good or bad film" for i in range(ROWS)]
    pq.write_table(pa.table({"id": list(range(ROWS)), "text": texts}), path, row_group_size=CHUNK)
    return path


def status(out, *extra, live=False):
    """`batchscore status`, checked to leave every file of `out` as it was (content and mtime), unless a live
    writer is at work in it."""
    before = file_tree(out, mtimes=True)
    result = invoke(["status", out, *extra])
    assert live or file_tree(out, mtimes=True) == before, "status changed the output"
    assert "Traceback" not in result.output
    return result


def parts(out) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.startswith("part-"))


def test_a_live_run_then_a_killed_one(big_input, tiny_model, tmp_path):
    out = tmp_path / "out"
    args = ["score", big_input, "--model", tiny_model, "-o", out, "--chunk-rows", CHUNK, "--threads", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscore", *map(str, args), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=default_stop_signals,
    )
    try:
        deadline = time.time() + 120
        while len(parts(out) if out.exists() else []) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before status could see it live"
        live = status(out, "--json", live=True)
        assert live.exit_code == 10, live.output
        found = json.loads(live.stdout)
        assert found["state"] == "in progress"
        assert found["chunks_total"] == ROWS // CHUNK
        assert [h["pid"] for h in found["holders"]] == [proc.pid]
        assert found["holders"][0]["mode"] == "exclusive"
        assert found["rows_per_second"] > 0 and found["eta_seconds"] > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    committed = parts(out)
    assert 3 <= len(committed) < ROWS // CHUNK
    killed = status(out)
    assert killed.exit_code == 11, killed.output
    lines = killed.stdout.splitlines()
    assert lines[0] == f"{out}: stopped"
    assert lines[1].startswith(f"chunks: {len(committed)} of {ROWS // CHUNK} committed")
    assert f"rows: {len(committed) * CHUNK:,}" in lines[1]
    assert lines[2].startswith(f"  run: {len(committed)} of {ROWS // CHUNK} chunks")
    assert "  writer: none" in lines
    assert lines[-1] == "next: nobody is writing it: rerun the same batchscore score command to resume"
    # Then the run is finished: 0, and the counts are the manifest's.
    assert_ok(run_score(big_input, tiny_model, out, "--chunk-rows", CHUNK))
    done = status(out, "--json")
    assert done.exit_code == 0
    assert json.loads(done.stdout) | {"rows_per_second": None} == {
        "output": str(out),
        "state": "complete",
        "exit_code": 0,
        "chunks_total": ROWS // CHUNK,
        "chunks_committed": ROWS // CHUNK,
        "rows_done": ROWS,
        "shards": [],
        "holders": [],
        "rows_per_second": None,
        "eta_seconds": None,
        "damaged": [],
        "other_runs": [],
        "foreign": [],
        "next_step": None,
        "notes": [],
        "bad_records": None,  # --on-bad-row quarantine only
    }


def test_shards_damage_and_foreign_files(big_input, tiny_model, tmp_path):
    out = tmp_path / "sharded"
    shard = ["--chunk-rows", "1000", "--num-shards", "2"]
    assert_ok(run_score(big_input, tiny_model, out, *shard, "--shard-index", "0"))
    result = status(out, "--json")
    assert result.exit_code == 11
    found = json.loads(result.stdout)
    assert [(s["shard"], s["committed"], s["total"], s["rows"], s["finished"]) for s in found["shards"]] == [
        (0, 3, 3, 3000, True),
        (1, 0, 3, 0, False),
    ]
    assert found["next_step"] == f"nobody is writing it: run (or rerun) shard 1 of 2, then batchscore finalize {out}"
    assert_ok(run_score(big_input, tiny_model, out, *shard, "--shard-index", "1"))
    ready = json.loads(status(out, "--json").stdout)
    assert ready["state"] == "stopped" and ready["chunks_committed"] == 6
    assert ready["next_step"] == f"every shard has finished: run batchscore finalize {out}"
    # A part cut short (a power loss) and a file batchscore did not write.
    (out / "part-000004.parquet").write_bytes(b"")
    (out / "notes.txt").write_text("mine")
    damaged = json.loads(status(out, "--json").stdout)
    assert damaged["damaged"] == [4] and damaged["foreign"] == ["notes.txt"]
    assert damaged["chunks_committed"] == 5
    text = status(out).stdout
    assert "damaged parts (a rerun redoes them): chunks 4" in text
    assert "files batchscore did not write: notes.txt" in text


def test_bad_outputs(tmp_path):
    assert_error(invoke(["status", tmp_path / "nowhere"]), 5, "not found")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.csv").write_text("x")
    assert_error(invoke(["status", tmp_path / "mine"]), 5, "not a batchscore output")


def test_object_store_lease_heartbeat(s3_server, s3_bucket, big_input, tiny_model):
    from stores import s3fs_for

    fs = s3fs_for(s3_server)
    out = f"s3://{s3_bucket}/out"
    assert_ok(run_score(big_input, tiny_model, out, "--chunk-rows", "1000", "--limit", "3000"))
    assert invoke(["status", out]).exit_code == 0
    # As a run on another machine would leave it: parts 0..1 of a run, its lease beating now.
    fs.rm(f"{s3_bucket}/out/_SUCCESS")
    fs.rm(f"{s3_bucket}/out/part-000002.parquet")
    record = {"owner": "abc", "host": "elsewhere", "pid": 4242, "beat": 7, "time": time.time() - 5, "ttl": 60.0}
    fs.pipe(f"{s3_bucket}/out/_batchscore/lease-all.json", json.dumps(record).encode())
    before = {k: v["ETag"] for k, v in fs.find(s3_bucket, detail=True).items()}
    result = invoke(["status", out, "--json"])
    assert result.exit_code == 10, result.output
    found = json.loads(result.stdout)
    (holder,) = found["holders"]
    assert (holder["host"], holder["pid"], holder["beat"], holder["live"]) == ("elsewhere", 4242, 7, True)
    assert 4 <= holder["age"] < 60
    assert found["chunks_committed"] == 2 and found["rows_done"] == 2000
    # An expired heartbeat (silent for over 2 x ttl): nobody writes.
    fs.pipe(f"{s3_bucket}/out/_batchscore/lease-all.json", json.dumps(record | {"time": time.time() - 500}).encode())
    before = {k: v["ETag"] for k, v in fs.find(s3_bucket, detail=True).items()}
    stale = invoke(["status", out])
    assert stale.exit_code == 11
    assert "elsewhere pid 4242, heartbeat" in stale.stdout and "expired" in stale.stdout
    fs.invalidate_cache()
    assert {k: v["ETag"] for k, v in fs.find(s3_bucket, detail=True).items()} == before

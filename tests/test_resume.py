"""Crash safety: kill the job anywhere, rerun, and get every row exactly once with the same scores."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import invoke, manifest_of, output_names

ROWS, CHUNK = 3000, 20  # 150 chunks: many commit points to land a kill between


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(5)
    words = "good bad fine awful great boring loved hated the a plot food service".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(ROWS)]
    texts[7] = ""  # a row without text survives resumes too
    path = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    pq.write_table(pa.table({"row": list(range(ROWS)), "text": texts}), path)
    return str(path)


def job_args(corpus, model, out, *extra):
    return ["score", corpus, "--model", model, "-o", str(out), "--chunk-rows", str(CHUNK), "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    result = invoke(job_args(corpus, tiny_model, out))
    assert result.exit_code == 0, result.output
    return pq.read_table(out)


def parts(out: Path) -> int:
    try:
        return sum(1 for n in os.listdir(out) if n.startswith("part-"))
    except FileNotFoundError:
        return 0


def start_job(args):
    return subprocess.Popen(
        [sys.executable, "-m", "batchscore", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop_after(proc, out: Path, committed: int, sig) -> bool:
    """Send `sig` once `committed` parts exist (0: once the lock is taken). True if it landed mid-run."""
    lock = Path(out) / "_batchscore" / "lock"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (committed == 0 and lock.exists()) or (committed and parts(out) >= committed):
            break
        time.sleep(0.002)
    landed = proc.poll() is None
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return landed and not (Path(out) / "_SUCCESS").exists()


def assert_clean_and_complete(out: Path, reference):
    table = pq.read_table(out)
    assert table.column("row").to_pylist() == list(range(ROWS))  # every row once, in order
    assert table.equals(reference)  # identical scores to an uninterrupted run
    # Nothing but parts, the 0-row manifest and empty markers and locks: polars reads every non-empty file.
    leftovers = [n for n in output_names(out) if not n.endswith(".parquet") and os.path.getsize(out / n)]
    assert leftovers == [] and not [n for n in output_names(out) if n.endswith(".tmp")]
    manifest = manifest_of(out)
    assert manifest["rows"] == ROWS and manifest["empty_text_rows"] == 1
    assert manifest["chunks"] == ROWS // CHUNK


@pytest.mark.slow  # over 10 s: make test-slow
def test_sigkill_at_random_points_then_rerun(corpus, tiny_model, reference, tmp_path):
    rng = random.Random(11)
    chunks = ROWS // CHUNK
    points = [0, rng.randint(5, chunks // 2), rng.randint(chunks - 15, chunks - 5)]
    landed = []
    for point in points:
        out = tmp_path / f"killed-at-{point}"
        proc = start_job(job_args(corpus, tiny_model, out))
        landed.append(stop_after(proc, out, point, signal.SIGKILL))
        assert proc.returncode == -signal.SIGKILL
        before = parts(out)
        result = invoke(job_args(corpus, tiny_model, out))
        assert result.exit_code == 0, result.output
        if before:
            assert f"Resuming: {before} chunks already committed" in result.stderr
        assert_clean_and_complete(out, reference)
    assert sum(landed) >= 2, f"kills landed mid-run only {landed}"


def test_sigterm_exits_130_cleanly_then_resumes(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    proc = start_job(job_args(corpus, tiny_model, out))
    assert stop_after(proc, out, 30, signal.SIGTERM)
    assert proc.returncode == 130
    stderr = proc.stderr.read()
    assert "Interrupted" in stderr and "Traceback" not in stderr
    names = os.listdir(out)
    assert not [n for n in output_names(out) if n.endswith(".tmp")]
    assert "_SUCCESS" not in names
    assert 30 <= parts(out) < ROWS // CHUNK
    for part in sorted(n for n in names if n.startswith("part-")):
        assert pq.read_table(out / part).num_rows == CHUNK  # every committed part is whole
    result = invoke(job_args(corpus, tiny_model, out))
    assert result.exit_code == 0, result.output
    assert_clean_and_complete(out, reference)


def test_single_file_output_appears_only_when_complete(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "scored.parquet"
    proc = start_job(job_args(corpus, tiny_model, out))
    hidden = tmp_path / ".scored.parquet.parts"
    assert stop_after(proc, hidden, 40, signal.SIGKILL)
    assert not out.exists()
    result = invoke(job_args(corpus, tiny_model, out))
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).equals(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.parquet"]
    again = invoke(job_args(corpus, tiny_model, out))
    assert again.exit_code == 0 and "Already complete" in again.stderr


def test_second_run_is_refused_while_the_first_is_alive(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    first = start_job(job_args(corpus, tiny_model, out))
    try:
        deadline = time.time() + 120
        while parts(out) < 1 and time.time() < deadline:
            time.sleep(0.01)
        started = time.time()
        result = invoke(job_args(corpus, tiny_model, out))
        assert result.exit_code == 5, result.output
        assert "being written by another batchscore run" in result.stderr
        assert str(out / "_batchscore" / "lock") in result.stderr
        assert time.time() - started < 30  # exits at once, does not wait
        assert first.poll() is None  # and left the first run alone
    finally:
        first.kill()
        first.wait()


def test_lock_of_a_killed_run_never_blocks_a_retry(corpus, tiny_model, reference, tmp_path):
    """The kernel drops a dead process's lock: no stale lock file to delete by hand, on any host."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import fcntl, os, time
os.makedirs({str(out / "_batchscore")!r}, exist_ok=True)
fd = os.open({str(out / "_batchscore" / "lock")!r}, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    busy = invoke(job_args(corpus, tiny_model, out))
    assert busy.exit_code == 5 and "being written by another batchscore run" in busy.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = invoke(job_args(corpus, tiny_model, out))
    assert result.exit_code == 0, result.output
    assert_clean_and_complete(out, reference)


def test_rerun_with_another_model_or_input_is_refused(corpus, tiny_model, three_label_model, tmp_path):
    source, out = tmp_path / "in.parquet", tmp_path / "out"
    table = pq.read_table(corpus)
    pq.write_table(table, source)
    assert invoke(job_args(str(source), tiny_model, out)).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    other_model = invoke(job_args(str(source), three_label_model, out))
    assert other_model.exit_code == 5
    assert "--overwrite" in other_model.stderr and "model" in other_model.stderr

    pq.write_table(table.slice(0, ROWS - 1), source)  # same path, new content
    other_input = invoke(job_args(str(source), tiny_model, out))
    assert other_input.exit_code == 5 and "input" in other_input.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched

    replaced = invoke(job_args(str(source), three_label_model, out, "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    labels = pq.read_table(out).column("label")
    assert len(labels) == ROWS - 1
    assert set(labels.drop_null().to_pylist()) <= {"negative", "neutral", "positive"}


def test_partial_output_is_not_resumed_with_other_settings(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = start_job(job_args(corpus, tiny_model, out))
    stop_after(proc, out, 10, signal.SIGKILL)
    result = invoke(job_args(corpus, tiny_model, out, "--top-k", "all"))
    assert result.exit_code == 5
    assert "top_k" in result.stderr and "--overwrite" in result.stderr

"""Output safety: batchscore never destroys what it did not write, never reads its own output back
as input, repairs damage, survives a full or read-only disk, identifies runs by content, and leaves
outputs every common reader reads with every row exactly once.

Damage and kills are real: a `batchscore` subprocess SIGKILLed after some parts are committed,
parts truncated to 0 bytes, garbage written over records, and tmpfs mounts (tests/stores.py) that
fill up or are read-only, so ENOSPC and EROFS come from the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, assert_ok, file_tree, invoke, manifest_of

ROWS, CHUNK = 1200, 20  # 60 chunks: room for a kill, or a full disk, to land mid-run
NUM_CHUNKS = ROWS // CHUNK
WORDS = "good bad fine awful great boring loved hated the a plot food service was really not".split()


# ------------------------------------------------------------------ helpers


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)]


def score_args(src, model, out, *extra) -> list[str]:
    return [
        "score",
        str(src),
        "--model",
        str(model),
        "-o",
        str(out),
        "--chunk-rows",
        str(CHUNK),
        "--no-progress",
        *map(str, extra),
    ]


def score(src, model, out, *extra):
    return invoke(score_args(src, model, out, *extra))


def assert_already_complete(result):
    assert_ok(result)
    assert "Already complete" in result.stderr, result.stderr
    return result


def parts_folder(out) -> Path:
    """Where the parts are: the folder, or the hidden `.NAME.parquet.parts/` of the single-file form."""
    out = Path(out)
    return out.parent / f".{out.name}.parts" if out.name.endswith(".parquet") else out


def parts(folder) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if n.startswith("part-") and n.endswith(".parquet"))
    except FileNotFoundError:
        return []


def snapshot(root) -> dict:
    """Every file and folder under `root` (hidden ones too), with bytes and mtimes."""
    return file_tree(root, mtimes=True)


def start_job(args, log: Path):
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "batchscore", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )


def kill_mid_run(src, model, out, log_dir: Path, at: int = 5) -> list[str]:
    """Run `batchscore score` in a subprocess, SIGKILL it once `at` parts are committed; the committed parts."""
    folder = parts_folder(out)
    log = log_dir / f"killed-{Path(out).name}.log"
    proc = start_job(score_args(src, model, out), log)
    deadline = time.time() + 120
    while proc.poll() is None and len(parts(folder)) < at and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, log.read_text())
    committed = parts(folder)
    assert at <= len(committed) < NUM_CHUNKS, f"the kill did not land mid-run: {len(committed)} parts"
    assert not (folder / "_SUCCESS").exists() and not Path(out).is_file()
    return committed


def assert_equals_reference(out, reference):
    table = pq.read_table(str(out))
    assert table.column("id").to_pylist() == list(range(ROWS))  # every row once, in order
    assert table.equals(reference)  # and the scores of one uninterrupted run


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Warning:")]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    pq.write_table(pa.table({"id": list(range(ROWS)), "text": texts(ROWS, 3)}), path)
    return str(path)


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, tmp_path_factory):
    """The table of one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert_ok(score(corpus, tiny_model, out))
    return pq.read_table(str(out))


@pytest.fixture
def small_csv(tmp_path) -> Path:
    path = tmp_path / "small.csv"
    path.write_text("id,text\n1,I love it\n2,I hate it\n3,it is fine\n")
    return path


@pytest.fixture
def complete(corpus, tiny_model, reference, tmp_path) -> Path:
    """A complete output of the corpus."""
    out = tmp_path / "complete"
    assert_ok(score(corpus, tiny_model, out))
    assert (out / "_SUCCESS").exists()
    return out


# ------------------------------------------------------------------ 1. never destroy what batchscore did not write


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
def test_foreign_parquet_file_is_never_replaced(small_csv, tiny_model, tmp_path, overwrite):
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"id": [1, 2], "note": ["someone's", "data"]}), foreign)
    before = foreign.read_bytes()
    line = assert_error(score(small_csv, tiny_model, foreign, *overwrite), 5, "not a batchscore output")
    assert str(foreign) in line
    assert foreign.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["foreign.parquet", "small.csv"]  # no hidden parts folder either


def test_output_that_is_the_input_is_refused_naming_both(tiny_model, tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["good", "bad", "fine"]}), src)
    before = snapshot(tmp_path)
    line = assert_error(score(src, tiny_model, src, "--overwrite"), 5, "input")
    assert line.count(str(src)) >= 2, line  # the output, and the input
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
@pytest.mark.parametrize("beside", ["empty-folder", "complete-output"])
def test_output_folder_holding_a_foreign_file_is_refused(small_csv, tiny_model, tmp_path, overwrite, beside):
    out = tmp_path / "out"
    if beside == "complete-output":
        assert_ok(score(small_csv, tiny_model, out))
    else:
        out.mkdir()
    (out / "notes.txt").write_text("my notes, not batchscore's")
    before = snapshot(out)
    assert_error(score(small_csv, tiny_model, out, *overwrite), 5, str(out), "notes.txt", "did not write")
    assert snapshot(out) == before


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
def test_foreign_file_named_like_a_part_is_kept(small_csv, tiny_model, tmp_path, overwrite):
    """A readable Parquet file without batchscore's footer is not a damaged part: it is never removed."""
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / "part-000000.parquet"
    pq.write_table(pa.table({"id": [7, 8, 9], "text": ["someone", "else's", "rows"]}), foreign)
    before = foreign.read_bytes()
    line = assert_error(score(small_csv, tiny_model, out, *overwrite), 5)
    assert str(foreign) in line or str(out) in line, line
    assert foreign.read_bytes() == before
    assert parts(out) == ["part-000000.parquet"] and not (out / "_SUCCESS").exists()


def test_finalize_never_removes_a_foreign_part(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    for index in (0, 1):
        assert_ok(score(corpus, tiny_model, out, "--num-shards", 2, "--shard-index", index))
    foreign = out / "part-000099.parquet"  # someone's file, readable, without batchscore's footer
    pq.write_table(pa.table({"id": [7, 8, 9], "text": ["someone", "else's", "rows"]}), foreign)
    before = foreign.read_bytes()
    assert_error(invoke(["finalize", out]), 5)
    assert foreign.read_bytes() == before
    assert not (out / "_SUCCESS").exists()


# ------------------------------------------------------------------ 2. output inside the input folder


@pytest.fixture
def data_folder(tmp_path) -> Path:
    """data/ with two CSV files, 60 rows in all."""
    data = tmp_path / "data"
    data.mkdir()
    rows = texts(60, 8)
    for name, ids in (("a.csv", range(0, 30)), ("b.csv", range(30, 60))):
        pacsv.write_csv(pa.table({"id": list(ids), "text": [rows[i] for i in ids]}), data / name)
    return data


def assert_rows_once(out, n=60):
    ids = pq.read_table(str(out)).column("id").to_pylist()  # CSV ids, read as written
    assert sorted(ids, key=int) == [str(i) for i in range(n)], f"{len(ids)} rows"


@pytest.mark.parametrize("name", ["scored", "scored.parquet"])
def test_output_inside_the_input_folder_is_not_read_back(data_folder, tiny_model, name):
    out = data_folder / name
    assert_ok(score(data_folder, tiny_model, out))
    assert_rows_once(out)
    assert manifest_of(out)["rows"] == 60
    again = assert_already_complete(score(data_folder, tiny_model, out))
    assert "60 rows" in again.stderr
    assert_rows_once(out)
    assert sorted(os.listdir(data_folder)) == sorted(["a.csv", "b.csv", name])


def test_default_output_of_input_dot_is_not_read_back(data_folder, tiny_model, monkeypatch):
    monkeypatch.chdir(data_folder)
    args = ["score", ".", "--model", tiny_model, "--chunk-rows", CHUNK, "--no-progress"]
    assert_ok(invoke(args))
    created = sorted(set(os.listdir(data_folder)) - {"a.csv", "b.csv"})
    assert len(created) == 1, created  # the output, nothing else
    out = data_folder / created[0]
    assert_rows_once(out)
    again = assert_already_complete(invoke(args))
    assert "60 rows" in again.stderr
    assert_rows_once(out)
    assert sorted(os.listdir(data_folder)) == sorted(["a.csv", "b.csv", created[0]])


# ------------------------------------------------------------------ 3. damage


def test_part_truncated_to_zero_bytes_after_a_kill_is_redone(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    committed = kill_mid_run(corpus, tiny_model, out, tmp_path, at=6)
    damaged = out / committed[2]
    damaged.write_bytes(b"")  # power loss: the rename reached the disk, the data did not
    result = assert_ok(score(corpus, tiny_model, out))
    warnings = [w for w in warnings_of(result) if str(damaged) in w]
    assert len(warnings) == 1 and ("unreadable" in warnings[0] or "damaged" in warnings[0]), result.stderr
    assert f"Resuming: {len(committed) - 1} chunks already committed" in result.stderr
    assert_equals_reference(out, reference)
    assert manifest_of(out)["rows"] == ROWS


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_lost_or_damaged_manifest_is_written_again(corpus, tiny_model, complete, damage):
    """The corpus fills its last chunk: without the manifest, the parts cannot prove that no chunk follows, so
    the rerun reads the input again, finds every chunk committed and writes the manifest (an output whose
    parts do prove it is rebuilt with `Already complete`: test_output_hardening)."""
    manifest = complete / "_manifest.parquet"
    before = manifest_of(complete)
    if damage == "garbage":
        manifest.write_bytes(os.urandom(3000))
    else:
        manifest.unlink()
    result = assert_ok(score(corpus, tiny_model, complete))
    assert f"Resuming: {NUM_CHUNKS} chunks already committed" in result.stderr
    assert f"{ROWS} rows" in result.stderr
    rebuilt = manifest_of(complete)  # readable again, with plain pyarrow
    for key in ("rows", "scored_rows", "empty_text_rows", "chunks", "label_counts", "run"):
        assert rebuilt[key] == before[key], key
    assert pq.read_table(manifest).num_rows == 0
    shown = invoke(["manifest", complete])
    assert_ok(shown)
    assert json.loads(shown.stdout)["rows"] == ROWS


def test_damaged_shard_record_fails_finalize_naming_it(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    for index in (0, 1):
        assert_ok(score(corpus, tiny_model, out, "--num-shards", 2, "--shard-index", index))
    record = out / "_batchscore" / "shard-00000-of-00002.json"
    assert record.exists()
    record.write_bytes(b"\x00garbage{not json")
    assert_error(invoke(["finalize", out]), 5, str(record))
    assert not (out / "_SUCCESS").exists()
    record.unlink()  # as the message says; a rerun of shard 0 leaves its record again
    assert_ok(score(corpus, tiny_model, out, "--num-shards", 2, "--shard-index", 0))
    assert_ok(invoke(["finalize", out]))
    assert_equals_reference(out, reference)


def test_garbage_in_the_kernel_lock_file_does_not_matter(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    (out / "_batchscore").mkdir(parents=True)
    (out / "_batchscore" / "lock").write_bytes(b"pid 12345 on some-host, garbage \x00\xff")
    assert_ok(score(corpus, tiny_model, out))
    assert_equals_reference(out, reference)


# ------------------------------------------------------------------ 4. full disk, read-only file system


def test_disk_full_mid_run_then_grown_resumes(corpus, tiny_model, reference, mount_tmpfs):
    mount = mount_tmpfs("96k")  # a part is ~5 KB (2 pages on tmpfs): about a dozen of 60 fit
    out = mount / "out"
    result = score(corpus, tiny_model, out)
    line = assert_error(result, 5, "No space left", str(out))
    committed = parts(out)
    assert 0 < len(committed) < NUM_CHUNKS, committed
    assert not (out / "_SUCCESS").exists()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")], line
    for name in committed:  # every committed part is whole
        assert pq.read_table(out / name).num_rows == CHUNK
    grown = subprocess.run(["mount", "-o", "remount,size=8m", str(mount)], capture_output=True, text=True)
    assert grown.returncode == 0, grown.stderr
    again = assert_ok(score(corpus, tiny_model, out))
    assert f"Resuming: {len(committed)} chunks already committed" in again.stderr
    assert_equals_reference(out, reference)


@pytest.mark.parametrize("name", ["out", "out.parquet"])
def test_output_on_a_read_only_file_system(small_csv, tiny_model, readonly_fs, name):
    out = readonly_fs / name
    line = assert_error(score(small_csv, tiny_model, out), 5)
    assert "read-only" in line or "writable" in line, line
    assert str(readonly_fs) in line
    assert os.listdir(readonly_fs) == []


@pytest.mark.parametrize("name", ["out", "out.parquet"])
def test_complete_output_on_a_file_system_made_read_only(corpus, tiny_model, reference, mount_tmpfs, name):
    mount = mount_tmpfs("8m")
    out = mount / name
    assert_ok(score(corpus, tiny_model, out))
    before = snapshot(mount)
    ro = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
    if ro.returncode != 0:
        pytest.skip(f"cannot remount read-only: {ro.stderr.strip()}")
    result = assert_already_complete(score(corpus, tiny_model, out))
    assert f"{ROWS} rows" in result.stderr
    assert_ok(invoke(["manifest", out]))
    assert snapshot(mount) == before
    assert_equals_reference(out, reference)


# ------------------------------------------------------------------ 5. run identity by content


def test_copied_model_with_other_mtimes_resumes(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    committed = kill_mid_run(corpus, tiny_model, out, tmp_path)
    copy = tmp_path / "model-copy"
    shutil.copytree(tiny_model, copy)
    later = time.time() + 3600
    for path in copy.iterdir():
        os.utime(path, (later, later))
        assert path.stat().st_mtime_ns != (Path(tiny_model) / path.name).stat().st_mtime_ns
    result = assert_ok(score(corpus, copy, out))
    assert f"Resuming: {len(committed)} chunks already committed" in result.stderr
    assert_equals_reference(out, reference)


def test_changed_tokenizer_is_another_model(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    kill_mid_run(corpus, tiny_model, out, tmp_path)
    changed = tmp_path / "model-changed"
    shutil.copytree(tiny_model, changed)
    tokenizer = json.loads((changed / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False  # "Good" now tokenizes differently: other scores
    (changed / "tokenizer.json").write_text(json.dumps(tokenizer))
    before = snapshot(out)
    assert_error(score(corpus, changed, out), 5, "model", "--overwrite")
    assert {k: v for k, v in snapshot(out).items() if "_batchscore" not in k} == {
        k: v for k, v in before.items() if "_batchscore" not in k
    }


# ------------------------------------------------------------------ 6. readers on a complete output


def assert_readers_see_every_row_once(out):
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds

    expected = list(range(ROWS))
    seen = {
        "pandas.read_parquet": sorted(pd.read_parquet(str(out))["id"].tolist()),
        "pyarrow.dataset": sorted(ds.dataset(str(out)).to_table().column("id").to_pylist()),
        "polars.read_parquet": sorted(pl.read_parquet(str(out))["id"].to_list()),
        "polars.scan_parquet": sorted(pl.scan_parquet(str(out)).collect()["id"].to_list()),
    }
    for reader, ids in seen.items():
        assert ids == expected, f"{reader}: {len(ids)} rows, {len(set(ids))} distinct"
    pattern = str(out) if str(out).endswith(".parquet") else os.path.join(str(out), "*.parquet")
    with duckdb.connect() as con:
        counts = con.execute(f"select count(*), count(distinct id) from read_parquet('{pattern}')").fetchall()
    assert counts == [(ROWS, ROWS)], counts


@pytest.mark.parametrize("how", ["plain", "two-shards", "killed-resumed"])
def test_readers_see_every_row_exactly_once(corpus, tiny_model, reference, tmp_path, how):
    out = tmp_path / "out"
    if how == "plain":
        assert_ok(score(corpus, tiny_model, out))
    elif how == "two-shards":
        for index in (0, 1):
            assert_ok(score(corpus, tiny_model, out, "--num-shards", 2, "--shard-index", index))
        assert_ok(invoke(["finalize", out]))
    else:
        kill_mid_run(corpus, tiny_model, out, tmp_path)
        assert "Resuming:" in assert_ok(score(corpus, tiny_model, out)).stderr
    assert (out / "_SUCCESS").exists()
    assert_equals_reference(out, reference)
    assert_readers_see_every_row_once(out)


# ------------------------------------------------------------ 7. --overwrite with a bad input keeps the old output


READ_BLOCK = 1 << 22  # the CSV read block (input/text_format.py BLOCK_SIZE); schema inference parses only the first one


def test_overwrite_with_a_bad_row_near_the_end_keeps_the_old_output(tiny_model, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts(100, 4))))
    out = tmp_path / "out"
    assert_ok(score(src, tiny_model, out))
    old = pq.read_table(str(out))
    before = snapshot(out)
    # The input now: past the first read block, its last row is ragged.
    pad = "and the rest of this long review says it was really quite fine overall " * 20
    lines = [f"{i},review {i} {pad}" for i in range(3500)] + ["3500,too,many,fields"]
    data = ("id,text\n" + "\n".join(lines) + "\n").encode()
    assert data.index(b"3500,too,many,fields") > READ_BLOCK
    src.write_bytes(data)
    assert_error(score(src, tiny_model, out, "--overwrite"), 3, "in.csv", "Expected 2 columns")
    assert snapshot(out) == before  # same names, bytes and mtimes: nothing was cleared
    assert (out / "_SUCCESS").exists()
    assert pq.read_table(str(out)).equals(old)


def test_overwrite_with_a_damaged_page_late_in_parquet_keeps_the_old_output(tiny_model, tmp_path):
    """Parquet's footer reads fine; only reading the data finds the damage. --overwrite parses it all first."""
    src, out = tmp_path / "in.parquet", tmp_path / "out"
    table = pa.table({"id": list(range(4000)), "text": [f"review {t}" for t in texts(4000, 6)]})
    pq.write_table(table, src, row_group_size=1000, use_dictionary=False)
    assert_ok(score(src, tiny_model, out, "--limit", "50"))
    old, before = pq.read_table(str(out)), snapshot(out)
    pq.write_table(table, src, row_group_size=1000, use_dictionary=False)  # the input, rewritten...
    column = pq.ParquetFile(src).metadata.row_group(3).column(1)
    data = bytearray(src.read_bytes())
    for i in range(column.data_page_offset + 64, column.data_page_offset + column.total_compressed_size - 8):
        data[i] ^= 0x5A  # ...with its last row group's text pages damaged
    src.write_bytes(bytes(data))
    assert pq.ParquetFile(src).metadata.num_rows == 4000  # the footer alone sees nothing wrong
    assert_error(score(src, tiny_model, out, "--overwrite"), 3, "in.parquet")
    assert snapshot(out) == before  # nothing was cleared
    assert pq.read_table(str(out)).equals(old)


def test_a_forked_worker_does_not_keep_a_dead_writers_lock(tmp_path):
    """DataLoader workers are forked: when the writer is SIGKILLed, a worker still alive must not hold its lock."""
    import fcntl

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import os, time
from batchscore.output.lease import open_lease
from batchscore.output.store import open_layout
open_lease(open_layout({str(out)!r})).acquire()
if os.fork() == 0:
    # fork() returns here only after the at-fork hooks ran; saying so before the kill
    # keeps the test from racing a child that has not yet been scheduled.
    print(os.getpid(), flush=True)
    time.sleep(120)
    os._exit(0)
time.sleep(120)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(holder.stdout.readline())
    try:
        fd = os.open(out / "_batchscore" / "lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the writer holds it
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # the forked worker is still alive...
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ...and the lock is free all the same
        os.close(fd)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)

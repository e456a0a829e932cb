"""The output layer under attack (issue 19): completeness only from evidence, commits only by the output's
current writer, nothing outside OUT, names that scale, damaged records and unreachable stores as exit 5,
limits and settings checked before the model loads.

Everything is real: CLI runs (in-process or as killed and stopped subprocesses), files and symbolic links on
disk, and an S3-compatible server in its own process (tests/stores.py) for the object-store cases.
"""

from __future__ import annotations

import json
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

from helpers import assert_error, assert_ok, file_tree, invoke, manifest_of

CHUNK = 20
WORDS = "good bad fine awful great boring loved hated the a plot food service was really not".split()


def texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20))) for _ in range(n)]


def write_input(path: Path, rows: int) -> Path:
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts(rows)}), path)
    return path


def score(src, model, out, *extra, env=None):
    return invoke(
        [
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
        ],
        env=env,
    )


def part_names(out: Path) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.startswith("part-"))


@pytest.fixture(scope="module")
def rows_1190(tmp_path_factory) -> Path:
    """1,190 rows: 60 chunks, the last one short (10 rows)."""
    return write_input(tmp_path_factory.mktemp("in") / "short-last.parquet", 1190)


@pytest.fixture(scope="module")
def rows_1200(tmp_path_factory) -> Path:
    """1,200 rows: 60 full chunks."""
    return write_input(tmp_path_factory.mktemp("in") / "full-last.parquet", 1200)


@pytest.fixture(scope="module")
def reference_1190(rows_1190, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert_ok(score(rows_1190, tiny_model, out))
    return pq.read_table(out), manifest_of(out)


# ------------------------------------------------------------------ 1. completeness from evidence


def test_lost_manifest_and_lost_part_is_not_complete_and_resumes(rows_1190, tiny_model, reference_1190, tmp_path):
    """Issue 19: rebuilt into a manifest that said complete (with chunk 2 missing); the rerun said
    'Already complete'. The parts cannot prove completeness: the rerun scores the missing chunk."""
    out = tmp_path / "out"
    assert_ok(score(rows_1190, tiny_model, out))
    (out / "_manifest.parquet").unlink()
    (out / "part-000002.parquet").unlink()

    shown = invoke(["manifest", out])
    assert_error(shown, 5, "not complete")  # nobody takes it for complete meanwhile

    result = assert_ok(score(rows_1190, tiny_model, out))
    assert "Already complete" not in result.stderr
    assert "Resuming: 59 chunks already committed" in result.stderr
    table, manifest = reference_1190
    assert pq.read_table(out).equals(table)
    assert manifest_of(out)["rows"] == 1190 and manifest_of(out)["chunks"] == 60


def test_complete_output_that_lost_a_part_is_not_complete(rows_1190, tiny_model, reference_1190, tmp_path):
    """The manifest is intact but says 60 chunks; 59 parts are there: the rerun redoes the lost one."""
    out = tmp_path / "out"
    assert_ok(score(rows_1190, tiny_model, out))
    (out / "part-000031.parquet").unlink()
    result = assert_ok(score(rows_1190, tiny_model, out))
    assert "Already complete" not in result.stderr
    assert "Resuming: 59 chunks already committed" in result.stderr
    assert pq.read_table(out).equals(reference_1190[0])


def test_lost_manifest_whose_parts_prove_completeness_is_rebuilt(rows_1190, tiny_model, reference_1190, tmp_path):
    """Parts 0..59 of one run, every one full but the last (10 rows): proof that nothing follows."""
    out = tmp_path / "out"
    assert_ok(score(rows_1190, tiny_model, out))
    (out / "_manifest.parquet").unlink()
    result = assert_ok(score(rows_1190, tiny_model, out))
    assert "Already complete" in result.stderr
    rebuilt = manifest_of(out)
    assert rebuilt["rebuilt_from_parts"] is True
    for key in ("rows", "scored_rows", "chunks", "label_counts", "run"):
        assert rebuilt[key] == reference_1190[1][key], key


def test_lost_manifest_of_a_limited_run_is_rebuilt_when_the_limit_is_reached(rows_1200, tiny_model, tmp_path):
    out = tmp_path / "out"
    assert_ok(score(rows_1200, tiny_model, out, "--limit", 1000))
    (out / "_manifest.parquet").unlink()
    result = assert_ok(score(rows_1200, tiny_model, out, "--limit", 1000))
    assert "Already complete" in result.stderr
    assert manifest_of(out)["rows"] == 1000


def test_lost_manifest_of_an_input_without_rows_is_rebuilt(tiny_model, tmp_path):
    src = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), src)
    out = tmp_path / "out"
    assert_ok(score(src, tiny_model, out))
    (out / "_manifest.parquet").unlink()
    assert "Already complete" in assert_ok(score(src, tiny_model, out)).stderr
    assert manifest_of(out)["rows"] == 0


def test_a_stale_success_is_removed_before_the_rerun_writes_anything(rows_1190, tiny_model, tmp_path):
    """Between the start of the rerun and its manifest, no reader may take the folder for complete."""
    from batchscore.output import Output, OutputWriter

    out = tmp_path / "out"
    assert_ok(score(rows_1190, tiny_model, out))
    (out / "_manifest.parquet").unlink()
    (out / "part-000002.parquet").unlink()
    footer = pq.read_schema(out / "part-000000.parquet").metadata
    identity = json.loads(footer[b"batchscore.run"])
    schema = pq.read_schema(out / "part-000000.parquet").remove_metadata()
    writer = OutputWriter(Output.open(str(out)), schema, json.loads(footer[b"batchscore"]), identity)
    with writer:
        assert not writer.complete
        assert not (out / "_SUCCESS").exists()
        assert sorted(writer.committed) == [i for i in range(60) if i != 2]
        assert any("do not prove" in w for w in writer.warnings), writer.warnings


@pytest.mark.parametrize(
    "rows, chunk_rows, limit, proven",
    [
        ([20, 20, 10], 20, None, True),  # the last part is short: the input ended in it
        ([20, 20, 20], 20, None, False),  # a full last part: the input may go on
        ([20, 20, 20], 20, 60, True),  # exactly --limit rows
        ([20, 20, 20], 20, 80, False),
        ([0], 20, None, True),  # an input without rows: one empty part 0
        ([20, 0], 20, None, False),
        ([20, 10, 20], 20, None, False),  # a short part before the last: not one run's chunking
        ([], 20, None, False),
    ],
)
def test_what_proves_an_output_complete(rows, chunk_rows, limit, proven):
    from batchscore.output.manifest import proves_complete

    assert proves_complete({"chunk_rows": chunk_rows, "limit": limit}, rows) is proven


# ------------------------------------------------------------------ 3. never outside OUT, never what is not ours


@pytest.fixture
def complete_out(rows_1190, tiny_model, tmp_path) -> Path:
    out = tmp_path / "out"
    assert_ok(score(rows_1190, tiny_model, out))
    return out


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
def test_a_records_folder_that_links_elsewhere_is_refused(rows_1190, tiny_model, complete_out, tmp_path, overwrite):
    """Issue 19: --overwrite added and removed files in the folder the link pointed to."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shard-00000-of-00001.json").write_text('{"someone": "else"}')
    (elsewhere / "lock").write_bytes(b"")
    (elsewhere / "notes.txt").write_text("mine")
    records = complete_out / "_batchscore"
    if records.exists():
        for child in records.iterdir():
            child.unlink()
        records.rmdir()
    records.symlink_to(elsewhere, target_is_directory=True)
    (complete_out / "part-000003.parquet").unlink()  # not complete: the run would write
    before = file_tree(elsewhere, mtimes=True)
    assert_error(score(rows_1190, tiny_model, complete_out, *overwrite), 5, str(records), "symbolic link")
    assert file_tree(elsewhere, mtimes=True) == before
    assert records.is_symlink()


def test_a_part_that_links_elsewhere_is_never_followed(rows_1190, tiny_model, complete_out, tmp_path):
    """Even a link to what looks like one of our parts: what is outside OUT is never read as ours, or removed."""
    target = tmp_path / "a-part-of-another-output.parquet"
    link = complete_out / "part-000005.parquet"
    target.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(target)
    before = target.read_bytes()
    assert_error(score(rows_1190, tiny_model, complete_out, "--overwrite"), 5, str(link), "symbolic link")
    assert target.read_bytes() == before and link.is_symlink()


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["plain", "overwrite"])
def test_a_text_file_named_like_a_part_in_a_finished_output_is_kept(rows_1190, tiny_model, complete_out, overwrite):
    """Issue 19: --overwrite deleted a user's text file named part-000099.parquet (footer None: 'damaged')."""
    foreign = complete_out / "part-000099.parquet"
    foreign.write_text("my notes, in a file with an unlucky name\n")
    before = file_tree(complete_out, mtimes=True)
    assert_error(score(rows_1190, tiny_model, complete_out, *overwrite), 5, str(foreign), "not written by batchscore")
    assert file_tree(complete_out, mtimes=True) == before


def test_finalize_keeps_a_text_file_named_like_a_part(rows_1190, tiny_model, tmp_path):
    out = tmp_path / "out"
    for index in (0, 1):
        assert_ok(score(rows_1190, tiny_model, out, "--num-shards", 2, "--shard-index", index))
    foreign = out / "part-000060.parquet"
    foreign.write_text("not a part\n")
    assert_error(invoke(["finalize", out]), 5, str(foreign), "not written by batchscore")
    assert foreign.read_text() == "not a part\n"
    assert not (out / "_SUCCESS").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_part_damaged_the_way_a_commit_can_leave_it_is_redone(
    rows_1190, tiny_model, reference_1190, tmp_path, damage
):
    out = tmp_path / "out"
    assert_ok(score(rows_1190, tiny_model, out, "--num-shards", 2, "--shard-index", 0))
    part = out / "part-000004.parquet"
    data = part.read_bytes()
    part.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])  # starts with PAR1, unreadable
    assert_ok(score(rows_1190, tiny_model, out, "--num-shards", 2, "--shard-index", 0))
    assert_ok(score(rows_1190, tiny_model, out, "--num-shards", 2, "--shard-index", 1))
    assert_ok(invoke(["finalize", out]))
    assert pq.read_table(out).equals(reference_1190[0])


# ------------------------------------------------------------------ 4. names that scale


def test_part_and_shard_names_scale_and_only_the_canonical_spelling_counts():
    from batchscore.output.layout import part_index, part_name
    from batchscore.plan import Shard

    assert part_name(7) == "part-000007.parquet" and part_index("part-000007.parquet") == 7
    assert part_name(1_000_000) == "part-1000000.parquet" and part_index("part-1000000.parquet") == 1_000_000
    for name in ("part-0000007.parquet", "part-00007.parquet", "part-١٢٣٤٥٦.parquet", "part-000007.parquet.tmp"):
        assert part_index(name) is None, name
    shard = Shard(3, 100_000)
    assert (shard.marker_name, shard.lease_name, shard.lock_name) == (
        "shard-00003-of-100000.json",
        "lease-shard-00003-of-100000.json",
        "shard-00003-of-100000.lock",
    )
    assert Shard.from_marker(shard.marker_name) == shard and Shard.from_lease(shard.lease_name) == shard
    assert Shard.from_lock(shard.lock_name) == shard and Shard.from_tag(shard.tag) == shard
    assert Shard(0, 1).tag == "all" and Shard.from_lease("lease-all.json") == Shard(0, 1)
    assert Shard.from_marker("shard-00000-of-00001.json") == Shard(0, 1)  # a whole run's marker
    for name in (
        "shard-000003-of-100000.json",
        "shard-00003-of-0100000.json",
        "shard-00005-of-00005.json",
        "shard-٠٠٠٠١-of-٠٠٠٠٣.json",
    ):
        assert Shard.from_marker(name) is None, name
    assert Shard.from_lease("lease-shard-00000-of-00001.json") is None  # a whole writer's lease is lease-all
    assert Shard(1, 3).conflicts(Shard(0, 4)) and Shard(1, 3).conflicts(Shard(0, 1))
    assert not Shard(1, 3).conflicts(Shard(2, 3))
    assert [Shard(i, 3).owns(7) for i in range(3)] == [False, True, False]


def test_finalize_recognizes_the_markers_of_100000_shards(tiny_model, tmp_path):
    """Issue 19: `shard-00000-of-100000.json` never matched `\\d{5}`: 'No shard has finished yet'."""
    src = write_input(tmp_path / "in.parquet", 15)  # one chunk: shard 0 of 100,000 scores it all
    out = tmp_path / "out"
    result = assert_ok(score(src, tiny_model, out, "--num-shards", 100_000, "--shard-index", 0))
    assert (out / "_batchscore" / "shard-00000-of-100000.json").exists(), result.stderr
    done = assert_ok(invoke(["finalize", out]))
    assert "Finalized" in done.stderr
    assert manifest_of(out)["rows"] == 15


# ------------------------------------------------------------------ 5. damaged records: exit 5 naming the file


@pytest.fixture
def sharded(rows_1190, tiny_model, tmp_path) -> Path:
    out = tmp_path / "out"
    for index in (0, 1):
        assert_ok(score(rows_1190, tiny_model, out, "--num-shards", 2, "--shard-index", index))
    return out


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: {},
        lambda m: {**m, "num_shards": "2"},
        lambda m: {**m, "num_chunks": "60"},
        lambda m: {**m, "num_chunks": None},
        lambda m: {**m, "written": "yesterday"},
        lambda m: {**m, "shard": 1},  # the name says shard 0
    ],
    ids=["empty-object", "num-shards-text", "num-chunks-text", "num-chunks-null", "written-text", "other-shard"],
)
def test_a_damaged_shard_marker_is_exit_5_naming_it(sharded, damage):
    record = sharded / "_batchscore" / "shard-00000-of-00002.json"
    record.write_text(json.dumps(damage(json.loads(record.read_text()))))
    assert_error(invoke(["finalize", sharded]), 5, str(record), "delete that file")
    assert not (sharded / "_SUCCESS").exists()


def test_an_empty_shard_marker_is_exit_5_naming_it(sharded):
    record = sharded / "_batchscore" / "shard-00001-of-00002.json"
    record.write_bytes(b"")
    assert_error(invoke(["finalize", sharded]), 5, str(record), "delete that file")


@pytest.fixture
def s3_out(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("BATCHSCORE_LEASE_SECONDS", "2")
    return f"{s3_bucket}/out"


@pytest.mark.parametrize("time_value", ["an hour ago", None, [1]], ids=["text", "null", "list"])
def test_a_lease_record_with_a_bad_time_is_exit_5_naming_it(rows_1190, tiny_model, s3_out, s3_fs, time_value):
    lease = f"{s3_out}/_batchscore/lease-all.json"
    s3_fs.pipe_file(
        lease, json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "beat": 0, "time": time_value}).encode()
    )
    assert_error(score(rows_1190, tiny_model, f"s3://{s3_out}/"), 5, f"s3://{lease}", "'time'", "delete that file")
    assert s3_fs.cat(lease)  # left for a person to look at


# ------------------------------------------------------------------ 6, 7. unreachable stores, vanished records


@pytest.mark.parametrize("command", ["score", "finalize", "manifest"])
def test_an_unreachable_output_store_is_exit_5_naming_it(rows_1190, command):
    out = "ftp://127.0.0.1:1/out/"  # nothing listens on port 1: connection refused
    args = (
        [command, out]
        if command != "score"
        else ["score", rows_1190, "--model", "/nonexistent/model", "-o", out, "--no-progress"]
    )
    line = assert_error(invoke(args), 5, "127.0.0.1", "Cannot reach")
    assert "internal error" not in line


def test_a_missing_object_is_not_called_a_missing_bucket(s3_server, s3_bucket):
    from batchscore.output.store import describe, open_layout

    there = open_layout(f"s3://{s3_bucket}/out/")
    line = describe(there, there.record("lease-all.json"), FileNotFoundError(2, "Not found"), "read")
    assert "bucket" not in line and "removed meanwhile" in line
    missing = open_layout("s3://no-such-bucket-for-batchscore/out/")
    line = describe(missing, missing.record("lease-all.json"), FileNotFoundError(2, "Not found"), "read")
    assert "bucket 'no-such-bucket-for-batchscore' does not exist" in line


def test_a_lease_record_that_vanishes_during_a_take_over_is_created_afresh(s3_server, s3_out, s3_fs, monkeypatch):
    """Issue 19: a run starting just as another finished was told the bucket might not exist: the record it
    was about to take over had just been removed by its writer."""
    from batchscore.output.lease import LeaseRecord
    from batchscore.output.store import open_layout

    path = f"{s3_out}/_batchscore/lease-all.json"
    s3_fs.pipe_file(
        path, json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "beat": 0, "time": time.time() - 3600}).encode()
    )  # long silent: gone
    lease = LeaseRecord(open_layout(f"s3://{s3_out}/"))
    gone = lease._gone

    def finishes_meanwhile(record):  # the other writer releases its lease right after we judged it gone
        answer = gone(record)
        s3_fs.rm(path)
        return answer

    monkeypatch.setattr(lease, "_gone", finishes_meanwhile)
    with lease:
        assert json.loads(s3_fs.cat(path))["owner"] == lease.me["owner"]
    assert not s3_fs.exists(path)


# ------------------------------------------------------------------ 2. a stalled writer never commits into another run


def _s3_parts(fs, folder: str) -> dict[str, dict]:
    """Each part under `folder` and the run identity in its footer."""
    fs.invalidate_cache()
    try:
        keys = fs.ls(folder, detail=False, refresh=True)
    except FileNotFoundError:
        return {}
    found = {}
    for key in sorted(k for k in keys if "/part-" in k):
        with fs.open(key, "rb") as fh:
            found[key] = json.loads(pq.ParquetFile(fh).schema_arrow.metadata[b"batchscore.run"])
    return found


class SlowLink:
    """A TCP relay to the S3 server whose uploads crawl at `rate` bytes a second, as on a real link to a real
    store: a part's PUT stays in flight long enough for a SIGSTOP to land in the middle of it."""

    def __init__(self, endpoint: str, rate: int):
        import socket
        import threading

        self.upstream = endpoint.rsplit("//", 1)[1].split(":")
        self.rate = rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            threading.Thread(target=self._pump, args=(client, upstream, self.rate), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pump(source, sink, rate):
        block = 8192
        try:
            while data := source.recv(block):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(2)
                except OSError:
                    pass

    def close(self):
        self.server.close()


@pytest.mark.slow  # about 25 s: a model load in a subprocess, a lease to expire, a second run
def test_a_writer_stopped_past_its_lease_never_commits_into_the_run_that_replaced_it(
    s3_server, s3_bucket, s3_fs, tiny_model, tmp_path
):
    """Issue 19: SIGSTOP past the lease, an --overwrite run with other settings completes, SIGCONT: the stopped
    writer landed a part with its old settings in the finished output. Its uploads go through a slow link (each
    row carries 256 KiB that does not compress), so the stop lands in the middle of a part's PUT, which the
    store completes only after SIGCONT."""
    rows, rng = 40, random.Random(3)
    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "id": list(range(rows)),
                "text": texts(rows),
                "blob": pa.array([rng.randbytes(256 << 10) for _ in range(rows)], pa.binary()),
            }
        ),
        src,
        row_group_size=1,
    )
    folder, ttl = f"{s3_bucket}/out", "2"
    link = SlowLink(s3_server.endpoint, rate=1 << 20)  # 1 MiB/s: a part's PUT takes about a quarter second
    env = s3_server.subprocess_env(
        BATCHSCORE_LEASE_SECONDS=ttl, AWS_ENDPOINT_URL=link.endpoint, FSSPEC_S3_ENDPOINT_URL=link.endpoint
    )
    args = ["score", str(src), "--model", tiny_model, "-o", f"s3://{folder}/", "--no-progress"]
    stale = subprocess.Popen(
        [sys.executable, "-m", "batchscore", *args, "--chunk-rows", "1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while len(_s3_parts(s3_fs, folder)) < 3 and stale.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert stale.poll() is None, stale.communicate()
        time.sleep(0.1)  # into the next part's upload
        stale.send_signal(signal.SIGSTOP)
        # Other settings (20-row chunks: chunks 0 and 1), --overwrite: takes the silent lease over after ttl.
        replaced = invoke([*args, "--chunk-rows", "20", "--overwrite"], env={"BATCHSCORE_LEASE_SECONDS": ttl})
        assert_ok(replaced)
        manifest = manifest_of(folder, fs=s3_fs)
        assert manifest["chunks"] == 2
    finally:
        stale.send_signal(signal.SIGCONT)
    try:
        _, stderr = stale.communicate(timeout=120)
    finally:
        link.close()
    assert stale.returncode == 5, stderr
    assert "Lost the lease" in stderr and "Traceback" not in stderr
    parts = _s3_parts(s3_fs, folder)
    assert [k.rsplit("/", 1)[1] for k in parts] == ["part-000000.parquet", "part-000001.parquet"]
    assert all(identity == manifest["run"] for identity in parts.values())
    assert s3_fs.exists(f"{folder}/_SUCCESS") and not s3_fs.exists(f"{folder}/_batchscore/lease-all.json")
    assert pq.read_table(folder, filesystem=s3_fs, columns=["id"]).column("id").to_pylist() == list(range(rows))


# ------------------------------------------------------------------ 8. input inside the output


@pytest.mark.parametrize("given", ["data/in", "data/in/*.parquet"], ids=["folder", "glob"])
def test_an_output_holding_the_input_folder_is_exit_5_naming_both(tmp_path, monkeypatch, given):
    """Issue 19: the input folder, left out as part of the output, looked like no input at all: exit 3."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "in").mkdir(parents=True)
    write_input(tmp_path / "data" / "in" / "a.parquet", 5)
    before = file_tree(tmp_path)
    line = assert_error(
        invoke(["score", given, "--model", "/nonexistent/model", "-o", "data", "--no-progress"]),
        5,
        "would overwrite or hold the input",
        given,
        str(tmp_path / "data"),
    )
    assert "Error: Output" in line
    assert file_tree(tmp_path) == before


def test_an_output_bucket_holding_the_input_is_exit_5_naming_both(s3_server, s3_bucket, s3_fs, tmp_path):
    s3_fs.pipe_file(f"{s3_bucket}/in/a.parquet", _parquet_bytes(5))
    assert_error(
        invoke(
            [
                "score",
                f"s3://{s3_bucket}/in/",
                "--model",
                "/nonexistent/model",
                "-o",
                f"s3://{s3_bucket}/",
                "--no-progress",
            ]
        ),
        5,
        "would overwrite or hold the input",
        f"s3://{s3_bucket}/in/",
        f"s3://{s3_bucket}",
    )


def _parquet_bytes(rows: int) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts(rows)}), sink)
    return sink.getvalue().to_pybytes()


# ------------------------------------------------------------------ 9, 10. limits and settings, before the model loads


@pytest.mark.parametrize("length", [240, 250, 256])
def test_a_file_name_too_long_for_what_batchscore_makes_of_it_fails_first(rows_1190, tmp_path, length):
    """Issue 19: a 248-character name failed only at the final merge (`.NAME.parts`, `.NAME.<hex>.tmp`)."""
    out = tmp_path / "outs" / ("x" * (length - len(".parquet")) + ".parquet")
    out.parent.mkdir()
    line = assert_error(
        invoke(["score", rows_1190, "--model", "/nonexistent/model", "-o", out, "--no-progress"]),
        5,
        "too long",
        "pass a shorter --output",
    )
    assert len(line) < 400
    assert list(out.parent.iterdir()) == []


def test_a_folder_name_too_long_fails_first(rows_1190, tmp_path):
    out = tmp_path / ("y" * 256)
    assert_error(
        invoke(["score", rows_1190, "--model", "/nonexistent/model", "-o", out, "--no-progress"]), 5, "too long"
    )


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-5", "0", "0.1", "soon", "1e400"])
def test_a_bad_lease_seconds_value_is_exit_2_before_the_model_loads(rows_1190, tmp_path, value):
    """Issue 19: `inf` killed the heartbeat thread with a traceback while the run exited 0."""
    out = tmp_path / "out"
    result = invoke(
        ["score", rows_1190, "--model", "/nonexistent/model", "-o", out, "--no-progress"],
        env={"BATCHSCORE_LEASE_SECONDS": value},
    )
    assert_error(result, 2, "BATCHSCORE_LEASE_SECONDS", value)
    assert not out.exists()

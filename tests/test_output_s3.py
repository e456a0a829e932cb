"""Output on an object store: a real S3-compatible server (moto, its own process), never a mock.

The oracle is always a local run of the same rows with the same settings: the
store may change how parts are committed and who holds the output, never the
rows, their order or their scores.
"""

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, invoke, manifest_of
from stores import pending_uploads, s3fs_for

ROWS, CHUNK = 600, 10  # 60 chunks: many commit points to land a kill between
FILES = ("a.parquet", "b.parquet")  # the input: two Parquet files, ROWS // 2 rows each
TTL = "3"  # BATCHSCORE_LEASE_SECONDS: a silent lease expires after 3 s
LEASE = "_batchscore/lease-all.json"


# ------------------------------------------------------------------ input, reference, helpers


def _texts(n: int) -> list:
    rng = random.Random(17)
    words = (
        "good bad fine awful great boring loved hated the a plot food service café naïve 東京 "
        "don't !!! 10/10 :) emoji👍 well... really?"
    ).split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(n)]
    texts[5] = ""  # no text: kept, without a label
    texts[123] = None
    texts[321] = "long " * 900  # truncated to the model's limit
    texts[400] = 'line one\nline two, "quoted"'
    return texts


@pytest.fixture(scope="module")
def input_tables():
    table = pa.table({"id": pa.array(range(ROWS), pa.int64()), "text": pa.array(_texts(ROWS), pa.string())})
    half = ROWS // 2
    return {FILES[0]: table.slice(0, half), FILES[1]: table.slice(half)}


def _parquet_bytes(table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def job(source, model, out, *extra, chunk=CHUNK):
    return [
        "score",
        str(source),
        "--model",
        model,
        "-o",
        str(out),
        "--chunk-rows",
        str(chunk),
        "--id-column",
        "id",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def local_input(input_tables, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local") / "in"
    folder.mkdir()
    for name, table in input_tables.items():
        pq.write_table(table, folder / name)
    return folder


@pytest.fixture(scope="module")
def reference(local_input, tiny_model, tmp_path_factory):
    """The same rows scored from a local folder into a local folder: what every S3 run must equal."""
    out = tmp_path_factory.mktemp("ref") / "out"
    result = invoke(job(local_input, tiny_model, out))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == list(range(ROWS))
    return table, manifest_of(out)


@pytest.fixture(autouse=True)
def short_lease(monkeypatch):
    """In-process runs: leases expire after TTL seconds (subprocesses get it through `env`)."""
    monkeypatch.setenv("BATCHSCORE_LEASE_SECONDS", TTL)


@pytest.fixture
def bucket(s3_server, s3_bucket, input_tables):
    """A fresh bucket holding the input under in/."""
    client = s3_server.client()
    for name, table in input_tables.items():
        client.put_object(Bucket=s3_bucket, Key=f"in/{name}", Body=_parquet_bytes(table))
    return s3_bucket


@pytest.fixture
def env(s3_server):
    """Environment of a `batchscore` subprocess: only variables point it at the server."""
    return s3_server.subprocess_env(BATCHSCORE_LEASE_SECONDS=TTL)


def start_job(args, env, cwd=None):
    return subprocess.Popen(
        [sys.executable, "-m", "batchscore", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )


def run_job(args, env, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "batchscore", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def part_keys(fs, folder: str) -> list[str]:
    """Part objects under `folder` (bucket/prefix), listed afresh: a subprocess may have written since."""
    fs.invalidate_cache()
    try:
        names = fs.ls(folder, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.rsplit("/", 1)[-1].startswith("part-"))


def exists(fs, path: str) -> bool:
    fs.invalidate_cache()
    return fs.exists(path)


def stop_after(proc, fs, folder: str, committed: int) -> bool:
    """SIGKILL `proc` once `committed` parts exist under `folder` (0: once it holds the lease).
    True if the kill landed mid-run (the job was alive and the output not complete)."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if committed == 0 and exists(fs, f"{folder}/{LEASE}"):
            break
        if committed and len(part_keys(fs, folder)) >= committed:
            break
        time.sleep(0.01)
    landed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode in (-signal.SIGKILL, 0), (proc.returncode, stderr)
    return landed and not exists(fs, f"{folder}/_SUCCESS")


def read_s3_table(fs, path: str):
    return pq.read_table(path, filesystem=fs)


def assert_same_as_reference(table, reference):
    expected, _ = reference
    assert table.column("id").to_pylist() == list(range(ROWS))  # every row once, in order
    assert table.equals(expected)  # same schema, same scores as the local run


def assert_clean_folder(fs, folder: str):
    """Only Parquet (parts, the 0-row manifest) and empty objects: polars reads every non-empty file."""
    fs.invalidate_cache()
    found = fs.find(folder, detail=True)
    leftovers = [k for k, info in found.items() if info["size"] and not k.endswith(".parquet")]
    assert leftovers == [], leftovers
    assert f"{folder}/{LEASE}" not in found  # the lease is let go


# ------------------------------------------------------------------ 1. folder output, every reader


def test_s3_in_s3_out_equals_local_run_and_every_reader_sees_it(s3_server, bucket, s3_fs, tiny_model, reference):
    out = f"s3://{bucket}/out/"
    result = invoke(job(f"s3://{bucket}/in/", tiny_model, out))
    assert result.exit_code == 0, result.output
    assert "Scored 598 of 600 rows" in result.stderr

    assert_same_as_reference(read_s3_table(s3_fs, f"{bucket}/out"), reference)
    assert len(part_keys(s3_fs, f"{bucket}/out")) == ROWS // CHUNK
    assert s3_fs.info(f"{bucket}/out/_SUCCESS")["size"] == 0
    assert pending_uploads(s3_server, bucket) == []
    assert_clean_folder(s3_fs, f"{bucket}/out")

    shown = invoke(["manifest", out])
    assert shown.exit_code == 0, shown.output
    manifest, expected = json.loads(shown.stdout), reference[1]
    for key in ("rows", "scored_rows", "empty_text_rows", "truncated_rows", "label_counts", "chunks"):
        assert manifest[key] == expected[key], key
    assert manifest["rows"] == ROWS and manifest["empty_text_rows"] == 2 and manifest["truncated_rows"] >= 1

    again = invoke(job(f"s3://{bucket}/in/", tiny_model, out))
    assert again.exit_code == 0, again.output
    assert "Already complete" in again.stderr

    import pandas as pd
    import polars as pl

    frame = pl.read_parquet(out)  # AWS_ENDPOINT_URL, AWS_ALLOW_HTTP from the s3_server fixture
    assert frame.height == ROWS and sorted(frame["id"].to_list()) == list(range(ROWS))
    frame = pd.read_parquet(out, storage_options={"client_kwargs": {"endpoint_url": s3_server.endpoint}})
    assert len(frame) == ROWS and frame["id"].tolist() == list(range(ROWS))


# ------------------------------------------------------------------ 2. crash safety


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun(s3_server, bucket, s3_fs, tiny_model, reference, env):
    """Killed with the lease taken, a few parts in, most parts in: the same command finishes the output."""
    folder = f"{bucket}/out"
    args = job(f"s3://{bucket}/in/", tiny_model, f"s3://{folder}/")
    landed = []
    for point in (0, 8, 40):
        before = len(part_keys(s3_fs, folder))
        proc = start_job(args, env)
        landed.append(stop_after(proc, s3_fs, folder, max(point, before + 1) if point else 0))
    done = run_job(args, env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "Resuming:" in done.stderr
    assert_same_as_reference(read_s3_table(s3_fs, folder), reference)
    assert manifest_of(folder, fs=s3_fs)["rows"] == ROWS
    assert_clean_folder(s3_fs, folder)
    assert pending_uploads(s3_server, bucket) == []
    assert sum(landed) >= 2, f"kills landed mid-run only {landed}"


# ------------------------------------------------------------------ 3. leases


def footer_config(fs, keys: list[str]) -> dict[str, dict]:
    """The `config` each part's footer records (its writer's settings), fetched concurrently."""
    found = {}
    for key, data in fs.cat(keys).items():
        metadata = pq.ParquetFile(pa.BufferReader(data)).schema_arrow.metadata
        found[key] = json.loads(metadata[b"batchscore"])["config"]
    return found


@pytest.mark.slow  # over 10 s: make test-slow
def test_live_writer_keeps_a_second_run_out(s3_server, bucket, s3_fs, tiny_model, env):
    folder = f"{bucket}/out"
    args = job(f"s3://{bucket}/in/", tiny_model, f"s3://{folder}/", chunk=1)  # 600 tiny chunks: a slow writer
    first = start_job(args, env)
    try:
        deadline = time.time() + 120
        while len(part_keys(s3_fs, folder)) < 1 and first.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()
        # Another speed setting: not part of the run's identity (so it would resume this output), but
        # stamped in the footer of each part it writes.
        second_args = [*args, "--batch-tokens", "1234"]
        started = time.time()
        line = assert_error(
            invoke(second_args),
            5,
            "being written by another batchscore run",
            f"s3://{folder}/{LEASE}",
            f"pid {first.pid}",
        )
        assert line.startswith(f"Error: Output 's3://{folder}' is being written"), line
        assert time.time() - started < 2 * float(TTL) + 5  # sees the heartbeat move, does not wait it out
        # The real command line, as another process: the same one line, and only it, on stderr.
        other = run_job(second_args, env)
        assert (other.returncode, other.stdout) == (5, ""), other.stderr
        assert line in other.stderr.splitlines(), other.stderr
        assert first.poll() is None  # the first run is left alone
        holder = json.loads(s3_fs.cat(f"{folder}/{LEASE}"))
        assert holder["pid"] == first.pid
    finally:
        first.kill()  # at once: a part the refused runs wrote must not be rewritten by the first run
        first.communicate()
    written = footer_config(s3_fs, part_keys(s3_fs, folder))
    assert written and not [k for k, config in written.items() if config["batch_tokens"] == 1234]
    assert pending_uploads(s3_server, bucket) == []
    assert other.stderr.splitlines() == [line], other.stderr  # nothing but the error: no log line before it


def test_live_writer_on_another_host_keeps_a_run_out(s3_server, bucket, s3_fs, tiny_model):
    """A writer elsewhere (pid meaningless here) is alive as long as its heartbeat moves."""
    folder = f"{bucket}/out"
    stop = threading.Event()

    def beat():
        fs, record = s3fs_for(s3_server), {"owner": "x", "host": "elsewhere", "pid": 4242, "boot": "b", "ttl": 3.0}
        for count in range(10_000):
            fs.pipe_file(f"{folder}/{LEASE}", json.dumps({**record, "beat": count, "time": time.time()}).encode())
            if stop.wait(0.5):
                return

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        while not exists(s3_fs, f"{folder}/{LEASE}"):
            time.sleep(0.05)
        started = time.time()
        result = invoke(job(f"s3://{bucket}/in/", tiny_model, f"s3://{folder}/"))
        assert_error(
            result, 5, "being written by another batchscore run", "elsewhere pid 4242", f"s3://{folder}/{LEASE}"
        )
        assert time.time() - started < 2 * float(TTL) + 5
        assert json.loads(s3_fs.cat(f"{folder}/{LEASE}"))["owner"] == "x"  # not taken over
        assert part_keys(s3_fs, folder) == []
    finally:
        stop.set()
        beater.join()


def test_lease_of_a_dead_writer_on_another_host_is_taken_over_after_ttl(
    s3_server, bucket, s3_fs, tiny_model, reference
):
    folder = f"{bucket}/out"
    record = {
        "owner": "x",
        "host": "elsewhere",
        "pid": 1,
        "boot": "b",
        "beat": 0,
        "time": time.time(),
        "ttl": float(TTL),
    }
    s3_fs.pipe_file(f"{folder}/{LEASE}", json.dumps(record).encode())
    started = time.time()
    result = invoke(job(f"s3://{bucket}/in/", tiny_model, f"s3://{folder}/"))
    assert result.exit_code == 0, result.output
    # Its heartbeat might still move: the record is watched for a whole ttl before it is taken over.
    assert time.time() - started >= float(TTL)
    assert_same_as_reference(read_s3_table(s3_fs, folder), reference)
    assert not exists(s3_fs, f"{folder}/{LEASE}")
    assert_clean_folder(s3_fs, folder)


def test_lease_of_a_dead_writer_on_this_host_is_taken_over_at_once(
    s3_server, bucket, s3_fs, tiny_model, reference, monkeypatch
):
    folder = f"{bucket}/out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open("/proc/sys/kernel/random/boot_id") as fh:
        boot = fh.read().strip()
    record = {
        "owner": "x",
        "host": socket.gethostname(),
        "pid": dead.pid,
        "boot": boot,
        "beat": 0,
        "time": time.time(),
        "ttl": 600.0,
    }
    s3_fs.pipe_file(f"{folder}/{LEASE}", json.dumps(record).encode())
    monkeypatch.setenv("BATCHSCORE_LEASE_SECONDS", "600")  # waiting it out would time the test out
    started = time.time()
    result = invoke(job(f"s3://{bucket}/in/", tiny_model, f"s3://{folder}/"))
    assert result.exit_code == 0, result.output
    assert time.time() - started < 120
    assert_same_as_reference(read_s3_table(s3_fs, folder), reference)
    assert not exists(s3_fs, f"{folder}/{LEASE}")


def test_unreadable_lease_record_is_one_line_naming_it(s3_server, bucket, s3_fs, tiny_model):
    folder = f"{bucket}/out"
    s3_fs.pipe_file(f"{folder}/{LEASE}", b"\x00\xff garbage {")
    result = invoke(job(f"s3://{bucket}/in/", tiny_model, f"s3://{folder}/"))
    assert_error(result, 5, f"s3://{folder}/{LEASE}", "unreadable")
    assert part_keys(s3_fs, folder) == []
    assert s3_fs.cat(f"{folder}/{LEASE}") == b"\x00\xff garbage {"  # left for a person to look at


# ------------------------------------------------------------------ 4. single-file output


def bucket_keys(fs, bucket: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.find(bucket))


def test_single_file_output_lands_in_the_bucket_only(
    s3_server, bucket, s3_fs, tiny_model, reference, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # an s3:// URL mistaken for a local path would show up here
    target = f"s3://{bucket}/x.parquet"
    args = job(f"s3://{bucket}/in/", tiny_model, target)
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert f"-> {target}" in result.stderr

    assert_same_as_reference(read_s3_table(s3_fs, f"{bucket}/x.parquet"), reference)
    manifest = manifest_of(f"{bucket}/x.parquet", fs=s3_fs)
    assert manifest["rows"] == ROWS and manifest["chunks"] == ROWS // CHUNK
    assert bucket_keys(s3_fs, bucket) == [f"{bucket}/in/{name}" for name in FILES] + [f"{bucket}/x.parquet"]
    assert not exists(s3_fs, f"{bucket}/.x.parquet.parts")
    assert pending_uploads(s3_server, bucket) == []
    assert list(tmp_path.iterdir()) == []  # nothing written locally (no `s3:` folder)

    shown = invoke(["manifest", target])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["rows"] == ROWS
    again = invoke(args)
    assert again.exit_code == 0 and "Already complete" in again.stderr, again.output
    assert list(tmp_path.iterdir()) == []


def test_single_file_output_killed_then_rerun(
    s3_server, bucket, s3_fs, tiny_model, reference, tmp_path, env, monkeypatch
):
    target = f"s3://{bucket}/x.parquet"
    args = job(f"s3://{bucket}/in/", tiny_model, target)
    hidden = f"{bucket}/.x.parquet.parts"
    assert stop_after(start_job(args, env, cwd=tmp_path), s3_fs, hidden, 15)
    assert 15 <= len(part_keys(s3_fs, hidden)) < ROWS // CHUNK
    assert not exists(s3_fs, f"{bucket}/x.parquet")  # appears only when complete

    monkeypatch.chdir(tmp_path)
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "Resuming:" in result.stderr
    assert_same_as_reference(read_s3_table(s3_fs, f"{bucket}/x.parquet"), reference)
    assert bucket_keys(s3_fs, bucket) == [f"{bucket}/in/{name}" for name in FILES] + [f"{bucket}/x.parquet"]
    assert pending_uploads(s3_server, bucket) == []
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 5. bad outputs fail first


@pytest.mark.parametrize(
    "output, fragments",
    [
        ("foo://x", ["'foo://x'", "foo"]),
        ("gs://bucket/out", ["'gs://bucket/out'", "gcsfs"]),
        ("s3://no-such-bucket-xyz/out", ["no-such-bucket-xyz"]),
        ("s3://no-such-bucket-xyz/x.parquet", ["no-such-bucket-xyz"]),
    ],
)
def test_bad_output_fails_before_the_model_loads(s3_server, local_input, output, fragments):
    # The model does not exist either: the output's error (5) must come first, not the model's (4).
    result = invoke(job(local_input, "/nonexistent/model", output))
    assert_error(result, 5, *fragments)
    assert "no-such-bucket-xyz" not in {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}


# ------------------------------------------------------------------ 6. independent shards


def test_independent_shards_on_s3_then_finalize(s3_server, bucket, s3_fs, tiny_model, reference):
    folder, out = f"{bucket}/out", f"s3://{bucket}/out/"
    chunks = ROWS // CHUNK

    def shard(index):
        result = invoke(job(f"s3://{bucket}/in/", tiny_model, out, "--num-shards", "2", "--shard-index", index))
        assert result.exit_code == 0, result.output
        assert f"Shard {index} of 2:" in result.stderr and "batchscore finalize" in result.stderr
        assert not exists(s3_fs, f"{folder}/_SUCCESS")  # complete only once finalized

    shard(0)
    missing = [c for c in range(chunks) if c % 2 == 1]
    line = assert_error(
        invoke(["finalize", out]),
        5,
        f"missing {len(missing)} of {chunks} chunks",
        "(" + ", ".join(map(str, missing[:20])) + ", ...)",
        "rerun shard 1 of 2",
    )
    assert "--num-shards 2 --shard-index 1" in line
    assert not exists(s3_fs, f"{folder}/_SUCCESS")

    shard(1)
    done = invoke(["finalize", out])
    assert done.exit_code == 0, done.output
    assert f"Finalized {out}: 598 of 600 rows scored, in {chunks} chunks." in done.stderr
    assert_same_as_reference(read_s3_table(s3_fs, folder), reference)
    manifest = manifest_of(folder, fs=s3_fs)
    expected = reference[1]
    for key in ("rows", "scored_rows", "empty_text_rows", "truncated_rows", "label_counts", "chunks"):
        assert manifest[key] == expected[key], key
    assert [s["shard"] for s in manifest["shards"]] == [0, 1]
    assert_clean_folder(s3_fs, folder)  # shard markers and leases are gone
    assert pending_uploads(s3_server, bucket) == []
    again = invoke(["finalize", out])
    assert again.exit_code == 0 and "Already complete" in again.stderr, again.output


# ------------------------------------------------------------------ 7. memory://


@pytest.fixture
def memory_fs():
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists("/somewhere"):
        fs.rm("/somewhere", recursive=True)
    yield fs
    if fs.exists("/somewhere"):
        fs.rm("/somewhere", recursive=True)


def test_memory_output_in_process(memory_fs, local_input, tiny_model, reference):
    """memory:// lives inside one process: the library writes there (the CLI refuses it: nothing would survive)."""
    from batchscore import score

    out = "memory://somewhere/out"
    options = dict(model=tiny_model, chunk_rows=CHUNK, id_column="id")
    assert score(str(local_input), out, **options)["rows"] == ROWS
    shown = invoke(["manifest", out])  # the same process: the same memory store
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["rows"] == ROWS
    assert_same_as_reference(pq.read_table("/somewhere/out", filesystem=memory_fs), reference)
    assert not memory_fs.exists(f"/somewhere/out/{LEASE}")
    assert score(str(local_input), out, **options)["rows"] == ROWS  # already complete: nothing redone

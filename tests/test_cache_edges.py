"""The result cache at its edges: what it trusts, what its admin commands touch, and stores that fail.

- `batchscore cache compact | prune | info` refuse a folder that is not a cache, and inside a cache remove or
  rewrite only files whose footers prove they are batchscore's, for the identity their folder names.
- A cache file is used only for the identity its footer names: one copied from another identity's folder is a
  skipped, counted, warned file, never a hit.
- A missing bucket or an unusable cache folder is exit 5 before anything is scored; a cache that stops taking
  writes (a full disk, a read-only mount: real tmpfs mounts) is a warning in the log and the manifest.

Expected scores come from runs without the cache; expected files from what the test itself put there.
"""

import glob
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import (
    assert_error,
    assert_ok,
    assert_same_table,
    file_tree,
    invoke,
    manifest_of,
    repeating_corpus,
    run_score,
    write_texts,
)

FILE_NAME = re.compile(r"^\d{20}-[0-9a-f]{12}\.parquet$")


def identity_folders(cache) -> dict:
    """identity.json's max_length (or the record) -> the folder, for every identity in `cache`."""
    found = {}
    for record_path in glob.glob(os.path.join(str(cache), "*", "identity.json")):
        with open(record_path) as fh:
            record = json.load(fh)
        found[record["identity"]["max_length"]] = os.path.dirname(record_path)
    return found


def cache_files(folder) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(str(folder), "*.parquet")) if FILE_NAME.match(os.path.basename(p)))


def entries(path) -> dict:
    """A cache file's entries: (h1, h2) -> scores."""
    table = pq.read_table(path)
    keys = zip(table.column("h1").to_pylist(), table.column("h2").to_pylist())
    return dict(zip(keys, map(tuple, table.column("scores").to_pylist())))


def user_parquet(path, rows: int = 20) -> bytes:
    """A user's Parquet file named like a cache file, with cache-like columns but no batchscore footer."""
    table = pa.table(
        {
            "h1": pa.array(np.arange(rows, dtype=np.uint64)),
            "h2": pa.array(np.arange(rows, dtype=np.uint64)),
            "scores": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(rows * 2, np.float32)), 2),
            "windows": pa.array(np.ones(rows, np.int32)),
        }
    )
    pq.write_table(table, path)
    with open(path, "rb") as fh:
        return fh.read()


# --- 1. admin commands touch only what carries batchscore's marks -----------------------------------------------


def a_user_folder(root) -> None:
    """A folder that is no cache: a hex-named folder holding a Parquet file named like a cache file, a JSON file
    named identity.json that is not an identity record, and a note."""
    folder = root / "0123456789abcdef"
    folder.mkdir(parents=True)
    user_parquet(folder / "00000000000000000001-0123456789ab.parquet")
    (folder / "identity.json").write_text('{"name": "my own settings"}')
    (root / "notes.txt").write_text("mine")
    other = root / "fedcba9876543210"
    other.mkdir()
    user_parquet(other / "00000000000000000002-0123456789ab.parquet")


@pytest.mark.parametrize(
    "command",
    [
        ["cache", "compact"],
        ["cache", "info"],
        ["cache", "info", "--json"],
        ["cache", "prune", "--keep-identity", "fedcba9876543210"],
    ],
)
def test_cache_commands_refuse_a_folder_that_is_not_a_cache_and_touch_nothing(tmp_path, command):
    root = tmp_path / "mine"
    a_user_folder(root)
    before = file_tree(root, mtimes=True)
    line = assert_error(invoke([*command[:2], root, *command[2:]]), 5, "not a batchscore cache", str(root))
    assert "--cache" in line  # the fix: the folder the runs were given
    assert file_tree(root, mtimes=True) == before


def test_an_empty_folder_is_not_a_cache(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["compact"], ["info"], ["prune", "--keep-identity", "0123456789abcdef"]):
        assert_error(invoke(["cache", command[0], empty, *command[1:]]), 5, "not a batchscore cache")
    assert os.listdir(empty) == []


def damage_data_keep_footer(path) -> None:
    """Zero a cache file's data pages, leaving its footer (our key, our identity) whole."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    footer_len = int.from_bytes(data[-8:-4], "little")
    end = size - 8 - footer_len
    data[4:end] = b"\x00" * (end - 4)
    with open(path, "wb") as fh:
        fh.write(bytes(data))


def test_inside_a_cache_compact_and_prune_touch_only_files_whose_footer_names_the_folder(tmp_path, tiny_model):
    texts = repeating_corpus(80, "own", seed=3)
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    for length in ("512", "16"):  # two identities
        assert_ok(run_score(data, tiny_model, tmp_path / f"out{length}", "--cache", cache, "--max-length", length))
    folders = identity_folders(cache)
    mine, other = folders[512], folders[16]
    (other_file,) = cache_files(other)
    (own_file,) = cache_files(mine)
    # More of our own files, so that compaction has something to merge.
    more = write_texts(tmp_path / "more.parquet", repeating_corpus(40, "more", seed=4))
    assert_ok(run_score(more, tiny_model, tmp_path / "more", "--cache", cache))
    own = {}  # key -> scores, from this identity's own files
    for path in cache_files(mine):
        own.update(entries(path))
    assert set(entries(other_file)) <= set(own)  # the same texts: the other identity holds other scores for them

    user = os.path.join(mine, "00000000000000000001-0123456789ab.parquet")
    user_bytes = user_parquet(user)
    garbage = os.path.join(mine, "00000000000000000002-0123456789ab.parquet")
    with open(garbage, "wb") as fh:
        fh.write(b"PAR1 but not parquet" * 20)
    copied = os.path.join(mine, "00000000000000000003-0123456789ab.parquet")  # another identity's file
    shutil.copyfile(other_file, copied)
    damaged = os.path.join(mine, "00000000000000000004-0123456789ab.parquet")  # ours, its data unreadable
    shutil.copyfile(own_file, damaged)
    damage_data_keep_footer(damaged)
    left = {p: open(p, "rb").read() for p in (user, garbage, copied)}

    result = assert_ok(invoke(["cache", "compact", cache]))
    assert "1 damaged removed" in result.stderr
    assert not os.path.exists(damaged)
    for path, content in left.items():  # not proven ours for this folder: left as they were, and named
        with open(path, "rb") as fh:
            assert fh.read() == content, path
    assert "3 file(s)" in result.stderr and os.path.basename(user) in result.stderr
    merged = [p for p in cache_files(mine) if p not in left]
    assert len(merged) == 1  # the two runs' files merged into one
    assert entries(merged[0]) == own  # with their own scores: none of the copied file's were merged in
    metadata = pq.read_schema(merged[0]).metadata
    assert json.loads(metadata[b"batchscore.cache"])["identity"] == os.path.basename(mine)

    facts = {f["key"]: f for f in json.loads(assert_ok(invoke(["cache", "info", cache, "--json"])).stdout)}
    assert sorted(facts[os.path.basename(mine)]["foreign"]) == sorted(left)
    assert facts[os.path.basename(mine)]["files"] == 1

    result = assert_ok(invoke(["cache", "prune", cache, "--keep-identity", os.path.basename(other)]))
    assert sorted(os.listdir(mine)) == sorted(os.path.basename(p) for p in left)  # identity.json and ours gone
    with open(user, "rb") as fh:
        assert fh.read() == user_bytes
    assert "3 file(s) batchscore did not write" in result.stderr


def test_a_hex_folder_without_an_identity_record_is_left_alone(tmp_path, tiny_model):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(30, "h", seed=5))
    cache = tmp_path / "cache"
    assert_ok(run_score(data, tiny_model, tmp_path / "out", "--cache", cache))
    (key,) = os.listdir(cache)
    stranger = cache / "00000000deadbeef"
    stranger.mkdir()
    (own,) = cache_files(cache / key)
    shutil.copyfile(own, stranger / "00000000000000000001-0123456789ab.parquet")  # no identity.json beside it
    before = file_tree(stranger, mtimes=True)
    assert_ok(invoke(["cache", "compact", cache]))
    assert file_tree(stranger, mtimes=True) == before
    assert_error(invoke(["cache", "compact", cache, "--identity", "00000000deadbeef"]), 2, "00000000deadbeef")
    assert_ok(invoke(["cache", "prune", cache, "--keep-identity", key]))
    assert file_tree(stranger, mtimes=True) == before
    assert [f["key"] for f in json.loads(assert_ok(invoke(["cache", "info", cache, "--json"])).stdout)] == [key]


# --- 2. a cache file is used only for the identity its footer names ---------------------------------------------


def test_a_file_copied_from_another_identity_is_skipped_counted_and_warned(tmp_path, tiny_model):
    # Long texts: cut at 8 tokens they score otherwise than at 512.
    texts = [
        f"review {i}: {'great' if i % 3 else 'awful'}, and then it goes on for longer than eight tokens"
        for i in range(60)
    ]
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    assert_ok(run_score(data, tiny_model, tmp_path / "short", "--cache", cache, "--max-length", "8"))
    seed = write_texts(tmp_path / "seed.parquet", ["a text of its own"])  # makes the 512 identity's folder
    assert_ok(run_score(seed, tiny_model, tmp_path / "seed", "--cache", cache))
    folders = identity_folders(cache)
    (short_file,) = cache_files(folders[8])
    copied = os.path.join(folders[512], "00000000000000000001-0123456789ab.parquet")
    shutil.copyfile(short_file, copied)

    result = assert_ok(run_score(data, tiny_model, tmp_path / "long", "--cache", cache))
    assert_ok(run_score(data, tiny_model, tmp_path / "plain"))
    assert_ok(run_score(data, tiny_model, tmp_path / "plain8", "--max-length", "8"))
    plain, plain8 = pq.read_table(tmp_path / "plain"), pq.read_table(tmp_path / "plain8")
    assert not np.allclose(plain.column("score").to_numpy(), plain8.column("score").to_numpy(), atol=1e-3)
    assert_same_table(pq.read_table(tmp_path / "long"), plain)  # not the copied file's (max_length 8) scores
    m = manifest_of(tmp_path / "long")
    assert m["rows_from_cache"] == 0 and m["rows_scored"] == len(texts)
    assert m["cache_files_skipped"] == 1
    assert copied in result.stderr and os.path.basename(folders[8]) in result.stderr


def test_lookup_skips_a_file_whose_footer_names_another_identity_or_format(tmp_path):
    from batchscore.cache.store import FOOTER_KEY, ResultCache, entries_bytes

    cache = ResultCache(str(tmp_path / "cache"))
    scope = cache.scope({"test": 1}, 2)
    keys = np.array([[1, 2], [3, 4]], dtype=np.uint64)
    scores = np.ones((2, 2), np.float32)
    folder = tmp_path / "cache" / scope.key
    folder.mkdir(parents=True)
    (folder / "00000000000000000001-0123456789ab.parquet").write_bytes(
        entries_bytes(keys, scores, np.ones(2, np.int32), "0000000000000000")
    )
    table = pq.read_table(pa.BufferReader(entries_bytes(keys, scores, np.ones(2, np.int32), scope.key)))
    record = json.loads(table.schema.metadata[FOOTER_KEY])
    pq.write_table(
        table.replace_schema_metadata({FOOTER_KEY: json.dumps({**record, "format": 99})}),
        folder / "00000000000000000002-0123456789ab.parquet",
    )
    found = scope.lookup(keys)
    assert not found.hit.any()
    assert sorted(os.path.basename(p) for p in scope.skipped) == [
        "00000000000000000001-0123456789ab.parquet",
        "00000000000000000002-0123456789ab.parquet",
    ]
    assert any("0000000000000000" in why for why in scope.skipped.values())
    assert any("format 99" in why for why in scope.skipped.values())


# --- 3. store errors up front; a cache that stops taking writes is a warning ------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    """The job fails the test if it gets as far as loading the model."""
    from batchscore.job import Job

    def load(self):
        raise AssertionError("the model was loaded before the cache was checked")

    monkeypatch.setattr(Job, "load", load)


def test_a_missing_bucket_is_exit_5_before_the_model_loads(tmp_path, tiny_model, outputs, s3_server, no_model_load):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(20, "s3", seed=1))
    result = run_score(data, tiny_model, outputs / "out", "--cache", "s3://no-such-bucket-for-the-cache/cache")
    assert_error(result, 5, "bucket 'no-such-bucket-for-the-cache' does not exist", "--cache")
    assert os.listdir(outputs) == []


def test_an_unreachable_cache_store_is_exit_5(tmp_path, tiny_model, outputs):
    """A store that does not answer (nothing listens on the endpoint's port): one line, nothing written."""
    import sys

    data = write_texts(tmp_path / "in.parquet", repeating_corpus(10, "u", seed=1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    dead = "http://127.0.0.1:9"  # the discard port: refused at once
    env |= {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    env |= {"AWS_ENDPOINT_URL": dead, "FSSPEC_S3_ENDPOINT_URL": dead, "AWS_CONFIG_FILE": os.devnull}
    args = ["score", data, "--model", tiny_model, "-o", outputs / "out", "--cache", "s3://bucket/cache"]
    done = subprocess.run(
        [sys.executable, "-m", "batchscore", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 5, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: Cannot reach the store") and "s3://bucket/cache" in line and "Traceback" not in line
    assert os.listdir(outputs) == []


def test_a_new_cache_folder_in_an_existing_bucket_is_made(tmp_path, tiny_model, s3_server, s3_bucket, s3_fs):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(20, "s3", seed=2))
    cache = f"s3://{s3_bucket}/not/there/yet"
    assert_ok(run_score(data, tiny_model, tmp_path / "out", "--cache", cache))
    assert s3_fs.glob(f"{s3_bucket}/not/there/yet/*/identity.json")


@pytest.mark.parametrize("where", ["missing parent", "a file"])
def test_an_unusable_local_cache_path_is_exit_5_before_the_model_loads(tmp_path, tiny_model, outputs, where):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(20, "l", seed=3))
    if where == "a file":
        cache = tmp_path / "cache-file"
        cache.write_text("not a folder")
        fragments = ["is a file", str(cache), "--cache"]
    else:
        cache = tmp_path / "no" / "such" / "cache"
        fragments = ["does not exist", str(tmp_path / "no" / "such"), "--cache"]
    with pytest.MonkeyPatch.context() as patch:
        from batchscore.job import Job

        patch.setattr(Job, "load", lambda self: pytest.fail("the model was loaded before the cache was checked"))
        assert_error(run_score(data, tiny_model, outputs / "out", "--cache", cache), 5, *fragments)
    assert os.listdir(outputs) == []
    assert not (tmp_path / "no").exists()


def fill(folder) -> None:
    """Fill a small file system to the last byte."""
    with open(os.path.join(str(folder), "filler"), "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"x" * 4096)
                fh.flush()
        except OSError:
            pass


def test_a_cache_whose_disk_fills_mid_run_warns_in_the_log_and_manifest_and_the_run_goes_on(
    tmp_path, tiny_model, mount_tmpfs, monkeypatch
):
    import batchscore.cache.store as store

    disk = mount_tmpfs("512k")
    cache = disk / "cache"
    first = repeating_corpus(40, "first", seed=6)
    assert_ok(run_score(write_texts(tmp_path / "first.parquet", first), tiny_model, tmp_path / "one", "--cache", cache))
    (folder,) = glob.glob(str(cache / "*"))
    before = sorted(os.listdir(folder))
    fill(disk)
    monkeypatch.setattr(store, "FLUSH_ENTRIES", 10)  # flushes in the middle of the run, not only at its end
    texts = first + repeating_corpus(200, "second", seed=7)
    data = write_texts(tmp_path / "in.parquet", texts)
    result = assert_ok(run_score(data, tiny_model, tmp_path / "two", "--cache", cache, "--chunk-rows", "40"))
    assert_ok(run_score(data, tiny_model, tmp_path / "plain", "--chunk-rows", "40"))
    assert_same_table(pq.read_table(tmp_path / "two"), pq.read_table(tmp_path / "plain"))
    m = manifest_of(tmp_path / "two")
    warned = [line for line in result.stderr.splitlines() if "No space left" in line]
    assert all(line.startswith("Warning: ") and "--cache" in line for line in warned)
    assert m["cache_write_failures"] == len(warned) >= 2  # one per write the cache refused, mid-run ones too
    assert m["rows_from_cache"] >= len([t for t in first if t and t.strip()])  # reads still served
    assert sorted(os.listdir(folder)) == before  # nothing half-written left behind


def test_a_read_only_cache_still_serves_and_its_refused_write_is_counted(tmp_path, tiny_model, mount_tmpfs):
    disk = mount_tmpfs("2m")
    cache = disk / "cache"
    first = repeating_corpus(40, "ro", seed=8)
    assert_ok(run_score(write_texts(tmp_path / "first.parquet", first), tiny_model, tmp_path / "one", "--cache", cache))
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remounted.stderr.strip()}")
    texts = first + repeating_corpus(40, "new", seed=9)
    data = write_texts(tmp_path / "in.parquet", texts)
    result = assert_ok(run_score(data, tiny_model, tmp_path / "two", "--cache", cache))
    assert_ok(run_score(data, tiny_model, tmp_path / "plain"))
    assert_same_table(pq.read_table(tmp_path / "two"), pq.read_table(tmp_path / "plain"))
    m = manifest_of(tmp_path / "two")
    assert m["rows_from_cache"] == len([t for t in first if t and t.strip()])
    assert m["cache_write_failures"] == 1
    (line,) = [line for line in result.stderr.splitlines() if "read-only" in line]
    assert line.startswith("Warning: ") and "--cache" in line


def test_without_a_cache_no_write_failures_are_counted(tmp_path, tiny_model):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(10, "n", seed=10))
    assert_ok(run_score(data, tiny_model, tmp_path / "out"))
    assert manifest_of(tmp_path / "out")["cache_write_failures"] is None


def test_a_scorer_whose_cache_turns_read_only_warns_and_returns_its_results(tmp_path, tiny_model, mount_tmpfs, caplog):
    """Scorer(cache=) in Ray Data or Spark adds each call's new results before it returns: a cache that stops
    taking them costs a later call their scoring, not this call its results (a warning, not an exception)."""
    from batchscore import Scorer

    disk = mount_tmpfs("2m")
    cache = disk / "cache"
    warm = pa.table({"text": repeating_corpus(20, "warm", seed=11)})
    scorer = Scorer(model=tiny_model, cache=str(cache))
    scorer(warm)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remounted.stderr.strip()}")
    both = pa.table({"text": warm.column("text").to_pylist() + repeating_corpus(20, "new", seed=12)})
    with caplog.at_level("WARNING", logger="batchscore"):
        got = scorer(both)
    assert_same_table(got, Scorer(model=tiny_model)(both))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "The cache kept none of these new results" in warning and "read-only" in warning

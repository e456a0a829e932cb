"""The result cache's files, seen from outside: writers that run at once (shards, runs, local and on an S3 server),
writers and compactions killed with SIGKILL, damaged files, and `batchscore cache compact | info | prune`.

Expected keys come from the input's texts through hashlib here (never from batchscore's own key code), and
expected scores from runs without the cache.
"""

import contextlib
import glob
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import (
    assert_error,
    assert_ok,
    assert_same_table,
    invoke,
    manifest_of,
    repeating_corpus,
    run_score,
    write_texts,
)

FILE_NAME = r"^\d{20}-[0-9a-f]{12}\.parquet$"


def distinct_keys(texts) -> set:
    """The cache keys of the distinct texts with something to score: BLAKE2b-128 as two big-endian halves."""
    found = set()
    for text in texts:
        if text is None or not text.strip():
            continue
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        found.add((int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")))
    return found


def cache_files(cache, fs=None) -> list[str]:
    """Every cache file (by name) under every identity folder."""
    import re

    if fs is None:
        paths = glob.glob(os.path.join(str(cache), "*", "*.parquet"))
    else:
        fs.invalidate_cache()
        paths = fs.glob(f"{cache}/*/*.parquet")
    return sorted(p for p in paths if re.match(FILE_NAME, os.path.basename(p)))


def identity_folder(cache, identity=None) -> str:
    """An identity folder with the identity.json a run writes (its name: the identity's hash, computed here with
    hashlib): what `batchscore cache` commands need to see before they touch a folder. Returns its key."""
    identity = identity or {"test": 1}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    folder = os.path.join(str(cache), key)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "identity.json"), "w") as fh:
        json.dump({"identity": identity, "key": key, "model": "synthetic"}, fh)
    return key


def read_file(path, fs=None) -> pa.Table:
    if fs is None:
        return pq.read_table(path)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)


def cache_keys(cache, fs=None) -> list[tuple[int, int]]:
    """Every entry's key over every file: each file must read whole."""
    keys: list = []
    for path in cache_files(cache, fs):
        table = read_file(path, fs)
        keys.extend(zip(table.column("h1").to_pylist(), table.column("h2").to_pylist()))
    return keys


def score_process(input_path, model, out, cache, *extra, env=None) -> subprocess.Popen:
    args = [sys.executable, "-m", "batchscore", "score", str(input_path), "--model", model, "-o", str(out)]
    return subprocess.Popen(
        [*args, "--no-progress", "--cache", str(cache), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def finished(proc: subprocess.Popen, timeout: float = 300) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode(errors="replace")
    return err.decode(errors="replace")


def killed(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


# --- writers at once, local and on S3 ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_shards_and_an_overlapping_run_share_one_cache_and_compact_to_one_entry_per_text(
    tmp_path, tiny_model, where, request
):
    first = repeating_corpus(500, "a", seed=1)
    second = [t for t in first[::2]] + repeating_corpus(200, "b", seed=2)  # half of the first run's texts, and new ones
    data_a, data_b = write_texts(tmp_path / "a.parquet", first), write_texts(tmp_path / "b.parquet", second)
    both = write_texts(tmp_path / "both.parquet", first + second)
    fs = None
    env = None
    if where == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        fs = request.getfixturevalue("s3_fs")
        cache, root = f"s3://{bucket}/cache", f"{bucket}/cache"
        env = server.subprocess_env()
    else:
        cache = root = str(tmp_path / "cache")

    # Two shards of the first input (processes) and, meanwhile, a run over the second (in this process): each
    # looks up and adds its own file while the others do.
    procs = [
        score_process(data_a, tiny_model, tmp_path / "sharded", cache, "--chunk-rows", "60", *shard, env=env)
        for shard in (["--num-shards", "2", "--shard-index", "0"], ["--num-shards", "2", "--shard-index", "1"])
    ]
    assert_ok(run_score(data_b, tiny_model, tmp_path / "second", "--chunk-rows", "60", "--cache", cache))
    for proc in procs:
        finished(proc)
    expected = distinct_keys(first + second)
    assert set(cache_keys(root, fs)) == expected  # nothing lost, before compaction: duplicates allowed

    result = assert_ok(invoke(["cache", "compact", cache]))
    assert "Compacted" in result.stderr
    keys = cache_keys(root, fs)
    assert len(keys) == len(expected) and set(keys) == expected  # one entry per distinct text, none lost
    assert len(cache_files(root, fs)) == 1
    (facts,) = json.loads(assert_ok(invoke(["cache", "info", cache, "--json"])).stdout)
    assert facts["files"] == 1 and facts["entries"] == len(expected) and facts["record"]["model"] == tiny_model

    assert_ok(run_score(both, tiny_model, tmp_path / "rerun", "--chunk-rows", "60", "--cache", cache))
    assert_ok(run_score(both, tiny_model, tmp_path / "plain", "--chunk-rows", "60"))
    m = manifest_of(tmp_path / "rerun")
    assert m["rows_from_cache"] == m["scored_rows"] == len([t for t in first + second if t and t.strip()])
    assert m["rows_scored"] == 0 and m["distinct_texts_scored"] == 0
    assert_same_table(pq.read_table(tmp_path / "rerun"), pq.read_table(tmp_path / "plain"))


# --- SIGKILL --------------------------------------------------------------------------------------------------


def assert_cache_readable(cache) -> None:
    """Every cache file reads (footer and data); a killed writer leaves at most a temp file beside them."""
    from batchscore.cache.store import CacheFile, ResultCache

    store = ResultCache(str(cache)).store
    for path in cache_files(cache):
        CacheFile.read(store, path)
        pq.read_table(path)


def kill_in_the_cache_write(proc: subprocess.Popen, cache, timeout: float = 120) -> bool:
    """SIGKILL `proc` as soon as a new cache file's temp file shows (True), or when it ends without one (False)."""

    def temps() -> set:
        found = set()
        for folder in glob.glob(os.path.join(str(cache), "*")):
            with contextlib.suppress(FileNotFoundError):
                found |= {n for n in os.listdir(folder) if n.endswith(".tmp") and ".parquet." in n}
        return found

    before = temps()  # a killed writer's temp file stays (a later compaction removes it when an hour old)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if temps() - before:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            return True
    killed(proc)
    return False


def test_a_writer_killed_at_any_moment_leaves_a_readable_cache(tmp_path, tiny_model):
    cache = tmp_path / "cache"
    rng = random.Random(7)
    every: list = []
    hits = 0
    for attempt in range(3):  # each with texts of its own, so that each has new entries to add
        texts = repeating_corpus(600, f"k{attempt}", seed=attempt)
        every += texts
        data = write_texts(tmp_path / f"in{attempt}.parquet", texts)
        proc = score_process(data, tiny_model, tmp_path / f"killed{attempt}", cache, "--chunk-rows", "100")
        if attempt == 0:  # while it scores
            time.sleep(rng.uniform(2.0, 4.0))
            killed(proc)
        else:  # while it writes its new entries as a cache file
            hits += kill_in_the_cache_write(proc, cache)
        assert_cache_readable(cache)
        assert set(cache_keys(cache)) <= distinct_keys(every)
    assert hits >= 1  # a kill came between a temp file's creation and its rename
    assert_ok(invoke(["cache", "compact", str(cache)]))
    assert_cache_readable(cache)
    data = write_texts(tmp_path / "all.parquet", every)
    assert_ok(run_score(data, tiny_model, tmp_path / "rerun", "--chunk-rows", "500", "--cache", cache))
    assert_ok(run_score(data, tiny_model, tmp_path / "plain", "--chunk-rows", "500"))
    assert_same_table(pq.read_table(tmp_path / "rerun"), pq.read_table(tmp_path / "plain"))
    assert set(cache_keys(cache)) == distinct_keys(every)


def split_into_files(cache, pieces: int, extra_entries: int, seed: int = 0) -> set:
    """Rewrite the cache's entries as `pieces` overlapping files (each entry in one to three of them), plus
    `extra_entries` random keys of no text, through the cache's own writer; returns every key."""
    from batchscore.cache.store import ResultCache

    store = ResultCache(str(cache))
    (key,) = store.identities()
    old = cache_files(cache)
    table = pa.concat_tables([pq.read_table(p) for p in old])
    h = np.stack([table.column("h1").to_numpy(), table.column("h2").to_numpy()], axis=1)
    width = table.schema.field("scores").type.list_size
    scores = table.column("scores").combine_chunks().flatten().to_numpy().reshape(-1, width)
    windows = table.column("windows").to_numpy()
    rng = np.random.default_rng(seed)
    fake = rng.integers(0, np.iinfo(np.uint64).max, (extra_entries, 2), dtype=np.uint64, endpoint=True)
    h = np.concatenate([h, fake])
    scores = np.concatenate([scores, rng.random((extra_entries, width), dtype=np.float32)])
    windows = np.concatenate([windows, np.ones(extra_entries, np.int32)])
    for piece in range(pieces):
        take = np.flatnonzero((np.arange(len(h)) % pieces == piece) | (rng.random(len(h)) < 1.5 / pieces))
        store.add_file(key, h[take], scores[take], windows[take])
    for path in old:
        os.remove(path)
    return set(map(tuple, h.tolist()))


def test_a_compaction_killed_at_any_moment_loses_no_entry(tmp_path, tiny_model):
    texts = repeating_corpus(400, "c", seed=4)
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    assert_ok(run_score(data, tiny_model, tmp_path / "first", "--chunk-rows", "100", "--cache", cache))
    every = split_into_files(cache, pieces=80, extra_entries=300_000)
    assert len(cache_files(cache)) == 80
    delay, kills, states = 0.4, 0, []
    while delay < 8:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchscore", "cache", "compact", str(cache)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        time.sleep(delay)
        if proc.poll() is not None:  # finished before the kill: the last state is a whole compaction
            finished(proc)
            break
        killed(proc)
        kills += 1
        assert_cache_readable(cache)
        keys = cache_keys(cache)
        assert set(keys) == every  # no entry lost, whatever the moment
        states.append((len(cache_files(cache)), len(keys)))
        delay += 0.15
    assert kills >= 3, states
    assert_ok(invoke(["cache", "compact", str(cache)]))
    keys = cache_keys(cache)
    assert len(keys) == len(every) and set(keys) == every
    assert len(cache_files(cache)) == 1

    assert_ok(run_score(data, tiny_model, tmp_path / "rerun", "--chunk-rows", "100", "--cache", cache))
    assert_ok(run_score(data, tiny_model, tmp_path / "plain", "--chunk-rows", "100"))
    assert_same_table(pq.read_table(tmp_path / "rerun"), pq.read_table(tmp_path / "plain"))
    assert manifest_of(tmp_path / "rerun")["rows_scored"] == 0


def test_compaction_in_ranges_keeps_every_entry_once_and_a_second_one_changes_nothing(tmp_path):
    from batchscore.cache.admin import compact

    cache = tmp_path / "cache"
    key = identity_folder(cache)
    from batchscore.cache.store import ResultCache

    store = ResultCache(str(cache))
    rng = np.random.default_rng(1)
    keys = rng.integers(0, np.iinfo(np.uint64).max, (30_000, 2), dtype=np.uint64, endpoint=True)
    keys[:50, 0] = np.iinfo(np.uint64).max  # the ends of the key space land in the first and last ranges
    keys[50:100, 0] = 0
    expected = {}
    for _ in range(6):
        take = rng.choice(len(keys), 9000, replace=False)
        scores = np.stack([take, -take], axis=1).astype(np.float32)  # a key's scores name its row
        store.add_file(key, keys[take], scores, np.full(len(take), 2, np.int32))
        expected.update({tuple(keys[t].tolist()): float(t) for t in take})
    done = compact(str(cache), file_entries=5000)
    assert done.files_before == 6 and done.entries_before == 54_000
    assert done.entries_after == len(expected) and done.duplicates_dropped == 54_000 - len(expected)
    files = cache_files(cache)
    assert len(files) == done.files_after == -(-len(expected) // 5000)  # full files but the last
    seen = {}
    spans = []
    for path in files:
        table = pq.read_table(path)
        h1, h2 = table.column("h1").to_numpy(), table.column("h2").to_numpy()
        assert (np.lexsort((h2, h1)) == np.arange(len(h1))).all()  # sorted by key
        spans.append((int(h1[0]), int(h1[-1])))
        first = table.column("scores").combine_chunks().flatten().to_numpy().reshape(-1, 2)[:, 0]
        for a, b, s in zip(h1.tolist(), h2.tolist(), first.tolist()):
            assert (a, b) not in seen
            seen[(a, b)] = s
    assert seen == expected
    spans.sort()
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # disjoint ranges of h1
    again = compact(str(cache), file_entries=5000)
    assert cache_files(cache) == files and again.files_after == len(files)


# --- damaged files --------------------------------------------------------------------------------------------


def test_damaged_cache_files_are_skipped_with_a_warning_and_compaction_leaves_them_to_the_user(tmp_path, tiny_model):
    texts = repeating_corpus(300, "d", seed=5)
    data_half, data = write_texts(tmp_path / "half.parquet", texts[:150]), write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    assert_ok(run_score(data_half, tiny_model, tmp_path / "one", "--chunk-rows", "50", "--cache", cache))
    assert_ok(run_score(data, tiny_model, tmp_path / "two", "--chunk-rows", "50", "--cache", cache))
    first, second = cache_files(cache)
    with open(first, "r+b") as fh:
        fh.truncate(os.path.getsize(first) // 2)
    garbage = os.path.join(os.path.dirname(first), "00000000000000000001-0123456789ab.parquet")
    with open(garbage, "wb") as fh:
        fh.write(b"not parquet at all" * 50)

    result = assert_ok(run_score(data, tiny_model, tmp_path / "three", "--chunk-rows", "50", "--cache", cache))
    assert "Skipping cache file" in result.stderr and garbage in result.stderr
    assert manifest_of(tmp_path / "three")["cache_files_skipped"] == 2
    assert_ok(run_score(data, tiny_model, tmp_path / "plain", "--chunk-rows", "50"))
    assert_same_table(pq.read_table(tmp_path / "three"), pq.read_table(tmp_path / "plain"))

    # Neither has a footer left to prove it batchscore's: compaction merges and removes neither, and names them.
    result = assert_ok(invoke(["cache", "compact", str(cache)]))
    assert "Left 2 file(s)" in result.stderr and "damaged removed" not in result.stderr
    assert os.path.exists(first) and os.path.exists(garbage)
    os.remove(first)  # as the user would
    os.remove(garbage)
    assert_cache_readable(cache)
    assert set(cache_keys(cache)) == distinct_keys(texts)


def test_compaction_removes_only_stale_temp_files_of_ours(tmp_path, tiny_model):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(60, "t"))
    cache = tmp_path / "cache"
    assert_ok(run_score(data, tiny_model, tmp_path / "out", "--cache", cache))
    (path,) = cache_files(cache)
    folder, name = os.path.split(path)
    stale, fresh = os.path.join(folder, f".{name}.0123456789ab.tmp"), os.path.join(folder, f".{name}.ba9876543210.tmp")
    foreign = os.path.join(folder, ".notes.0123456789ab.tmp")
    not_parquet = os.path.join(folder, f".{name}.00000000000a.tmp")  # our temp name, but not what we write
    for made in (stale, fresh, foreign):
        with open(made, "wb") as fh:
            fh.write(b"PAR1half")  # a killed writer's half file starts with Parquet's magic
    with open(not_parquet, "wb") as fh:
        fh.write(b"my notes")
    hours_ago = time.time() - 2 * 3600
    for old in (stale, foreign, not_parquet):
        os.utime(old, (hours_ago, hours_ago))
    assert "1 stale temp files removed" in assert_ok(invoke(["cache", "compact", str(cache)])).stderr
    assert not os.path.exists(stale)
    assert os.path.exists(fresh) and os.path.exists(foreign) and os.path.exists(not_parquet)


# --- info and prune -------------------------------------------------------------------------------------------


def test_info_and_prune_on_a_real_cache(tmp_path, tiny_model, three_label_model):
    texts = repeating_corpus(120, "p", seed=6)
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    assert_ok(run_score(data, tiny_model, tmp_path / "tiny", "--cache", cache))
    assert_ok(run_score(data, three_label_model, tmp_path / "three", "--cache", cache))

    facts = json.loads(assert_ok(invoke(["cache", "info", str(cache), "--json"])).stdout)
    by_model = {f["record"]["model"]: f for f in facts}
    assert set(by_model) == {tiny_model, three_label_model}
    for f in facts:
        assert f["files"] == 1 and f["entries"] == len(distinct_keys(texts))
        assert f["bytes"] == sum(os.path.getsize(p) for p in glob.glob(str(cache / f["key"] / "*.parquet")))
        assert f["record"]["identity"]["precision"] and f["record"]["identity"]["device"] == "cpu"
    text = assert_ok(invoke(["cache", "info", str(cache)])).stdout
    assert by_model[tiny_model]["key"] in text and f"2 identities, {2 * len(distinct_keys(texts)):,} entries" in text

    keep, drop = by_model[tiny_model]["key"], by_model[three_label_model]["key"]
    foreign = cache / drop / "notes.txt"
    foreign.write_text("mine, not batchscore's")
    before = sorted(os.listdir(cache))
    assert_error(invoke(["cache", "prune", str(cache)]), 2, "--keep-identity")
    assert_error(invoke(["cache", "prune", str(cache), "--keep-identity", "ffffffffffffffff"]), 2, "ffffffffffffffff")
    assert_error(invoke(["cache", "prune", str(cache), "--keep-identity", keep[:-1]]), 2, keep)  # typo guard
    assert sorted(os.listdir(cache)) == before and len(os.listdir(cache / drop)) == 3

    result = assert_ok(invoke(["cache", "prune", str(cache), "--keep-identity", keep]))
    assert "removed 1 identities" in result.stderr and "notes.txt" in result.stderr
    assert os.listdir(cache / drop) == ["notes.txt"] and foreign.read_text() == "mine, not batchscore's"
    assert len(glob.glob(str(cache / keep / "*.parquet"))) == 1
    facts = {f["key"]: f for f in json.loads(assert_ok(invoke(["cache", "info", str(cache), "--json"])).stdout)}
    assert facts[keep]["entries"] == len(distinct_keys(texts))
    assert drop not in facts  # without its identity.json, the folder is no identity of ours any more

    assert_ok(run_score(data, tiny_model, tmp_path / "again", "--cache", cache))
    assert manifest_of(tmp_path / "again")["rows_scored"] == 0


def test_cache_commands_on_a_missing_cache_or_identity(tmp_path):
    missing = tmp_path / "nope"
    assert_error(invoke(["cache", "info", str(missing)]), 5, "No cache at", str(missing))
    assert_error(invoke(["cache", "compact", str(missing)]), 5, "No cache at")
    identity_folder(tmp_path / "cache")
    assert_error(invoke(["cache", "compact", str(tmp_path / "cache"), "--identity", "0123456789abcdef"]), 2, "not in")
    assert "1 identities, 0 entries" in assert_ok(invoke(["cache", "info", str(tmp_path / "cache")])).stdout


def synthetic_cache(cache, files: int, entries: int, seed: int = 0) -> set:
    """A cache of random keys in `files` overlapping files, through the cache's own writer; returns every key."""
    from batchscore.cache.store import ResultCache

    store = ResultCache(str(cache))
    key = identity_folder(cache)
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, np.iinfo(np.uint64).max, (entries, 2), dtype=np.uint64, endpoint=True)
    for _ in range(files):
        take = rng.choice(entries, entries // 3, replace=False)
        store.add_file(key, keys[take], rng.random((len(take), 2), dtype=np.float32), np.ones(len(take)))
    return set(map(tuple, keys.tolist()))


def test_two_compactions_at_once_lose_nothing(tmp_path):
    cache = tmp_path / "cache"
    every = synthetic_cache(cache, files=30, entries=90_000)
    assert set(cache_keys(cache)) == every
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchscore", "cache", "compact", str(cache)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    for proc in procs:
        finished(proc)  # the one that finds a file gone leaves the identity to the other: exit 0 either way
    assert_cache_readable(cache)
    assert set(cache_keys(cache)) == every
    assert_ok(invoke(["cache", "compact", str(cache)]))
    keys = cache_keys(cache)
    assert len(keys) == len(every) and set(keys) == every


def test_a_cache_on_a_read_only_file_system_is_one_error_naming_the_cache(tmp_path, mount_tmpfs):
    made = tmp_path / "made"
    synthetic_cache(made, files=3, entries=3000)
    files = {os.path.relpath(p, made): open(p, "rb").read() for p in glob.glob(str(made / "*" / "*"))}
    cache = mount_tmpfs("4m", readonly=True, files=files)
    line = assert_error(invoke(["cache", "compact", str(cache)]), 5, "read-only", "--cache")
    assert "--output" not in line
    assert len(cache_files(cache)) == 3

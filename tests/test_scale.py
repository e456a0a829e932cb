"""Scale-out: independent shards + finalize, and data-parallel ranks under torchrun (gloo, CPU).

The oracle is always a plain one-process run of the same job: sharding may
change who writes which part, never the rows, their order or their scores.
"""

import fcntl
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

from helpers import assert_error, assert_same_table, invoke, manifest_of, output_names

ROWS, CHUNK = 2000, 100  # 20 chunks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(6)
    words = "good bad fine awful great boring loved hated the a plot food service".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(ROWS)]
    texts[3] = None
    path = tmp_path_factory.mktemp("scale") / "corpus.parquet"
    pq.write_table(pa.table({"row": list(range(ROWS)), "text": texts}), path)
    return str(path)


def job(corpus, model, out, *extra):
    return ["score", corpus, "--model", model, "-o", str(out), "--chunk-rows", str(CHUNK), "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    result = invoke(job(corpus, tiny_model, out))
    assert result.exit_code == 0, result.output
    return pq.read_table(out), manifest_of(out)


def shard(corpus, model, out, index, count, *extra):
    result = invoke(job(corpus, model, out, "--num-shards", count, "--shard-index", index, *extra))
    assert result.exit_code == 0, result.output
    return result


def assert_same_as_reference(out, reference, exact=True):
    """`exact`: the same thread count and batches, so bit for bit; else (ranks with fewer threads each)
    labels identical and scores within the documented tolerance."""
    table, manifest = reference
    got = pq.read_table(out)
    assert got.column("row").to_pylist() == list(range(ROWS))  # every row once, in order
    if exact:
        assert got.equals(table)  # same scores, same schema
    else:
        assert_same_table(got, table)
    mine = manifest_of(out)
    if os.path.isdir(out):
        # No temp files or shard markers left behind: only parts, the 0-row manifest and empty files.
        assert [n for n in output_names(out) if not n.endswith(".parquet") and os.path.getsize(out / n)] == []
    for key in ("rows", "scored_rows", "empty_text_rows", "label_counts", "real_tokens"):
        assert mine[key] == manifest[key], key
    assert (mine["chunks"], mine["run"]) == (manifest["chunks"], manifest["run"])


# ------------------------------------------------------------------ independent shards + finalize


def test_three_shards_then_finalize_equal_one_process(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    for i in range(3):
        result = shard(corpus, tiny_model, out, i, 3)
        assert f"Shard {i} of 3:" in result.stderr and f"batchscore finalize {out}" in result.stderr
        # A shard writes no manifest: the output is not complete until finalize.
        assert not (out / "_SUCCESS").exists() and not (out / "_manifest.json").exists()
    parts = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    assert len(parts) == ROWS // CHUNK
    result = invoke(["finalize", out])
    assert result.exit_code == 0, result.output
    assert f"Finalized {out}: 1999 of 2000 rows scored, in 20 chunks." in result.stderr
    assert_same_as_reference(out, reference)
    manifest = manifest_of(out)
    assert [s["shard"] for s in manifest["shards"]] == [0, 1, 2]
    again = invoke(["finalize", out])
    assert again.exit_code == 0 and "Already complete" in again.stderr


def test_finalize_names_missing_chunks_and_shards(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    assert_error(invoke(["finalize", out]), 5, "not found")
    out.mkdir()
    shard(corpus, tiny_model, out, 0, 3)
    shard(corpus, tiny_model, out, 2, 3)
    missing = [c for c in range(ROWS // CHUNK) if c % 3 == 1]
    line = assert_error(
        invoke(["finalize", out]),
        5,
        f"missing {len(missing)} of 20 chunks",
        "(" + ", ".join(map(str, missing)) + ")",
        "rerun shard 1 of 3",
    )
    assert "(--num-shards 3 --shard-index 1)" in line
    assert not (out / "_SUCCESS").exists()
    shard(corpus, tiny_model, out, 1, 3)  # any worker can be rerun alone
    assert invoke(["finalize", out]).exit_code == 0
    assert_same_as_reference(out, reference)


def test_finalize_before_any_shard_finished(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    shard(corpus, tiny_model, out, 0, 2)
    os.remove(out / "_batchscore" / "shard-00000-of-00002.json")  # as if killed just before its end
    assert_error(invoke(["finalize", out]), 5, "No shard of", "has finished yet")


def test_killed_shard_reruns_only_its_missing_chunks(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    for i in range(2):
        shard(corpus, tiny_model, out, i, 2)
    # Shard 1 "died" after 3 of its 10 chunks: later parts and its marker never came.
    for c in (7, 9, 11, 13, 15, 17, 19):
        os.remove(out / f"part-{c:06d}.parquet")
    os.remove(out / "_batchscore" / "shard-00001-of-00002.json")
    kept = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.startswith("part-")}
    result = shard(corpus, tiny_model, out, 1, 2)
    assert "Resuming: 3 chunks" in result.stderr  # of its own
    assert all(os.stat(out / n).st_mtime_ns == t for n, t in kept.items())  # committed parts untouched
    assert invoke(["finalize", out]).exit_code == 0
    assert_same_as_reference(out, reference)


def test_shard_overwrite_with_other_settings_is_caught_by_finalize(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    for i in range(3):
        shard(corpus, tiny_model, out, i, 3)
    # Shard 1 alone is redone with another max length: the other shards' parts are now of another run.
    shard(corpus, tiny_model, out, 1, 3, "--max-length", "8", "--overwrite")
    assert sorted(int(n[5:11]) % 3 for n in os.listdir(out) if n.startswith("part-")).count(1) == 7
    assert_error(
        invoke(["finalize", out]),
        5,
        "holds 13 parts of another run",
        "rerun shard 0, 2 of 3",
        "--shard-index I for each) with --overwrite",
    )
    for i in (0, 2):
        shard(corpus, tiny_model, out, i, 3, "--max-length", "8", "--overwrite")
    assert invoke(["finalize", out]).exit_code == 0
    got = pq.read_table(out)
    assert got.column("row").to_pylist() == list(range(ROWS))
    assert manifest_of(out)["config"]["max_length"] == 8


def test_shards_of_a_single_file_output(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "scored.parquet"
    for i in range(2):
        shard(corpus, tiny_model, out, i, 2)
    assert not out.exists()  # nothing at the final path until finalize
    assert invoke(["finalize", out]).exit_code == 0
    assert_same_as_reference(out, reference)
    assert os.listdir(tmp_path) == ["scored.parquet"]


def test_shard_of_a_hub_style_dataset(tmp_path, tiny_model):
    folder = tmp_path / "my_dataset"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\n# Reviews\n", encoding="utf-8")
    rows = [{"id": i, "text": f"row {i} was {'good' if i % 3 else 'bad'}"} for i in range(45)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    base = ["score", folder, "--model", tiny_model, "--chunk-rows", "10", "--no-progress"]
    assert invoke([*base, "-o", tmp_path / "one"]).exit_code == 0
    for i in range(2):
        result = invoke([*base, "-o", tmp_path / "two", "--num-shards", "2", "--shard-index", i])
        assert result.exit_code == 0, result.output
    assert invoke(["finalize", tmp_path / "two"]).exit_code == 0
    assert pq.read_table(tmp_path / "two").equals(pq.read_table(tmp_path / "one"))


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--shard-index", "1"], ["--shard-index needs --num-shards"]),
        (["--num-shards", "3"], ["--num-shards 3 needs --shard-index I, from 0 to 2"]),
        (["--num-shards", "3", "--shard-index", "3"], ["--shard-index 3 is out of range", "use 0 to 2"]),
    ],
)
def test_bad_shard_options(corpus, tiny_model, tmp_path, args, fragments):
    assert_error(invoke(job(corpus, tiny_model, tmp_path / "out", *args)), 2, *fragments)
    assert not (tmp_path / "out").exists()


def hold_lock(path: Path, mode) -> int:
    """Hold a kernel lock as a live batchscore writer would (a second open file: flock treats it as another holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, mode)
    return fd


def test_shard_and_whole_runs_exclude_each_other(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    locks = out / "_batchscore"
    whole = hold_lock(locks / "lock", fcntl.LOCK_EX)  # a live whole-output run
    assert_error(
        invoke(job(corpus, tiny_model, out, "--num-shards", "2", "--shard-index", "0")),
        5,
        "being written by another batchscore run",
    )
    os.close(whole)
    one_of_two = hold_lock(locks / "shard-00001-of-00002.lock", fcntl.LOCK_EX)  # a live shard...
    shared = hold_lock(locks / "lock", fcntl.LOCK_SH)  # ...holds the whole-output lock shared
    assert_error(invoke(job(corpus, tiny_model, out)), 5, "being written by another batchscore run")
    assert_error(
        invoke(job(corpus, tiny_model, out, "--num-shards", "3", "--shard-index", "0")), 5, "shard-00001-of-00002.lock"
    )
    # Shards of the same job write side by side.
    shard(corpus, tiny_model, out, 0, 2)
    os.close(one_of_two)
    os.close(shared)
    # Once the holders are gone (a dead process's locks go with it), a shard of another K may start.
    shard(corpus, tiny_model, out, 0, 3, "--overwrite")


# ------------------------------------------------------------------ ranks under torchrun (gloo)


def torchrun(nproc, args, **kw):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "batchscore",
        *map(str, args),
    ]
    import torch

    # Each rank takes its share of the reference's threads (1 of 2 here): scores may move in the last bits,
    # so ranks are compared to one process with labels identical and scores within SCORE_TOLERANCE.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)  # a hang fails here, not forever
    return proc.returncode, err


def test_two_ranks_equal_one_process(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    code, err = finish(torchrun(2, job(corpus, tiny_model, out)))  # 1 thread per rank, the reference 2
    assert code == 0, err[-3000:]
    assert "Scored 1999 of 2000 rows" in err  # rank 0's summary, over all ranks
    assert_same_as_reference(out, reference, exact=False)
    manifest = manifest_of(out)
    assert [(s["shard"], s["num_shards"]) for s in manifest["shards"]] == [(0, 2), (1, 2)]
    # Each rank wrote its own chunks.
    assert all(os.path.exists(out / f"part-{c:06d}.parquet") for c in range(20))


@pytest.mark.slow  # over 10 s: make test-slow
def test_more_ranks_than_chunks(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    code, err = finish(torchrun(2, job(corpus, tiny_model, out, "--limit", "50")))
    assert code == 0, err[-3000:]
    table = pq.read_table(out)
    assert table.column("row").to_pylist() == list(range(50))
    assert manifest_of(out)["chunks"] == 1
    # --overwrite under a launcher: rank 0 clears the old output before rank 1 looks at it.
    code, err = finish(torchrun(2, job(corpus, tiny_model, out, "--limit", "150", "--overwrite")))
    assert code == 0, err[-3000:]
    assert pq.read_table(out).column("row").to_pylist() == list(range(150))
    assert manifest_of(out)["chunks"] == 2


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (torchrun's ranks), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


@pytest.mark.slow  # over 10 s: make test-slow
def test_kill_one_rank_then_rerun_gives_exactly_once(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    args = job(corpus, tiny_model, out, "--batch-tokens", "256")
    args[args.index("--chunk-rows") + 1] = "20"  # 100 chunks: a kill lands mid-run
    proc = torchrun(2, args, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if sum(n.startswith("part-") for n in os.listdir(out)) >= 3 if out.exists() else False:
            break
        time.sleep(0.01)
    ranks = children(proc.pid)
    assert proc.poll() is None and len(ranks) == 2, "the run ended before a rank could be killed"
    os.kill(ranks[1], signal.SIGKILL)
    code, err = finish(proc)
    assert code != 0  # torchrun stops the job when a rank dies
    assert not (out / "_SUCCESS").exists()
    committed = sum(n.startswith("part-") for n in os.listdir(out))
    assert 3 <= committed < ROWS // 20
    code, err = finish(torchrun(2, args))
    assert code == 0, err[-3000:]
    assert manifest_of(out)["resumed_chunks"] == committed
    # The oracle: one uninterrupted process with the same batches.
    single = tmp_path / "single"
    assert invoke([a if a != str(out) else str(single) for a in args]).exit_code == 0
    assert_same_as_reference(out, (pq.read_table(single), manifest_of(single)), exact=False)

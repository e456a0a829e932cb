"""The run facts each shard records are the ones the manifest knows how to combine (output/finalize.RUN_FACTS)."""

import pyarrow as pa
import pyarrow.parquet as pq

from batchscore.output.finalize import RUN_FACTS
from helpers import assert_ok, invoke, manifest_of, run_score


def test_every_run_fact_is_recorded_per_shard_and_combined(tmp_path, tiny_model):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"row {i} was fine" for i in range(30)]}), src, row_group_size=10)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert_ok(run_score(src, tiny_model, single, "--chunk-rows", "10"))
    for shard in (0, 1):
        assert_ok(
            run_score(src, tiny_model, sharded, "--chunk-rows", "10", "--num-shards", "2", "--shard-index", str(shard))
        )
    assert_ok(invoke(["finalize", sharded]))

    one = manifest_of(single)
    assert set(RUN_FACTS) <= set(one)  # a single run's own facts, as recorded
    both = manifest_of(sharded)
    for shard in both["shards"]:
        assert set(RUN_FACTS) <= set(shard), set(RUN_FACTS) - set(shard)
    combined = {name for name, how in RUN_FACTS.items() if how is not None}
    assert combined <= set(both)
    assert "host" not in both  # per shard only
    # Sums and maxima over the shards: shard 0 has chunks 0 and 2, shard 1 chunk 1.
    assert [s["rows_read"] for s in both["shards"]] == [20, 10]
    assert both["rows_read"] == 30 == one["rows_read"]
    assert both["seconds"] == max(s["seconds"] for s in both["shards"])
    assert both["startup_seconds"] == max(s["startup_seconds"] for s in both["shards"])
    assert both["rows_checked"] == sum(s["rows_checked"] for s in both["shards"])


def test_startup_seconds_count_from_the_process_start(tmp_path, tiny_model):
    """Interpreter start-up and imports included: more than the model load, less than the whole process."""
    import os
    import subprocess
    import sys
    import time

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["fine", "bad"]}), src)
    begun = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchscore",
            "score",
            str(src),
            "--model",
            tiny_model,
            "-o",
            str(tmp_path / "out"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wall = time.time() - begun
    assert done.returncode == 0, done.stderr
    manifest = manifest_of(tmp_path / "out")
    assert manifest["model_load_seconds"] < manifest["startup_seconds"] < wall

"""`make bench` end to end on a tiny model: it runs and reports every column (timings are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # over 10 s: make test-slow
def test_bench_smoke(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench.py"),
            "--rows",
            "24",
            "--repeats",
            "1",
            "--model",
            "tiny",
            "--out",
            str(out),
            "--plan-rows",
            "900",
            "--plan-chunk-rows",
            "100",
            "--plan-repeats",
            "1",
            # The CPU precisions on the tiny model itself: the section runs and renders (the real-text
            # agreement needs the trained offline model, make model).
            "--precision-model",
            str(ROOT / "build" / "bench" / "distilbert-tiny"),
            "--precision-rows",
            "40",
            # The result cache on the tiny model: 40 texts; the lookup against 5,000 synthetic entries.
            "--cache-rows",
            "40",
            "--cache-lookup-entries",
            "5000",
            "--cache-lookup-rows",
            "100",
            "--cache-lookup-repeats",
            "1",
            # The later sections small too (their defaults are minutes each): they run and render.
            "--several-rows",
            "200",
            "--table-rows",
            "2000",
            "--table-repeats",
            "1",
            "--bad-rows",
            "2000",
            "--bad-rows-repeats",
            "1",
            "--calibrated-rows",
            "400",
            "--doc",
            str(tmp_path / "performance.md"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    systems = [row["system"] for row in report["table"]]
    assert systems[0].startswith("pipeline") and systems[1].startswith("batchscore")
    assert any("int8" in s for s in systems) and any("bf16" in s for s in systems)
    assert 0 <= report["bf16"]["label_agreement_with_fp32"] <= 1
    precisions = report["precisions"]["precisions"]
    assert list(precisions) == ["fp32", "bf16", "int8"] and report["precisions"]["rows"] == 40
    assert "CPU precisions on real, mixed text" in (out / "bench.md").read_text()
    for row in report["table"]:
        assert row["rows"] == 24
        assert row["rows_per_s"] > 0 and 0 < row["fraction_of_matmul_peak"] < 5
    assert report["table"][1]["first_chunk_s"] is not None
    # Sorting and order restoration change nothing: the same labels as the pipeline.
    assert report["fp32_label_agreement_with_pipeline"] == 1.0
    assert report["memory"]["rows_10x"] == 240
    assert report["texts"]["rows_over_256_tokens"] >= 1
    assert "| system |" in (out / "bench.md").read_text()
    # The plan section: 9 parts; shards read only around their own chunks; a resume redoes 1 part.
    plan = report["plan"]
    assert (plan["rows"], plan["parts"], plan["redo_parts"]) == (900, 9, 1)
    assert plan["rows_read"]["one_run"] == 900 and plan["rows_read"]["redo"] <= 900
    assert len(plan["rows_read"]["shards"]) == 4
    assert plan["feed"]["rows_per_s"] > 0 and plan["startup_s"] > 0
    assert "Host feed rate" in (out / "bench.md").read_text()
    # The cache section: the warm rerun takes every row from the cache; the grown input scores only its 4 new
    # texts; of 40 rows with 12 copies, 28 texts are scored; the lookup's texts all miss.
    reuse = report["cache"]["reuse"]
    runs = reuse["runs"]
    assert (reuse["rows"], reuse["new_rows"], reuse["repeated_rows"]) == (40, 4, 12)
    assert (runs["first"]["rows_from_cache"], runs["first"]["distinct_texts_scored"]) == (0, 40)
    assert (runs["warm"]["rows_from_cache"], runs["warm"]["distinct_texts_scored"]) == (40, 0)
    assert (runs["grown"]["rows"], runs["grown"]["rows_from_cache"], runs["grown"]["distinct_texts_scored"]) == (
        44,
        40,
        4,
    )
    assert runs["repeated"]["distinct_texts_scored"] == 28 and runs["repeated_plain"]["rows_from_cache"] is None
    assert reuse["warm_vs_first"] > 0 and reuse["grown_vs_full"] > 0 and reuse["repeated_speedup"] > 0
    lookup = report["cache"]["lookup"]
    assert (lookup["entries"], lookup["files"], lookup["rows"], lookup["rows_from_cache"]) == (5000, 1, 100, 0)
    assert lookup["plain_rss_mb"] > 0 and lookup["cached_rss_mb"] > 0 and lookup["time_ratio"] > 0
    md = (out / "bench.md").read_text()
    assert "| rerun of the same input, warm cache | 40 |" in md
    assert "| input grown by 4 new texts, warm cache | 44 |" in md
    assert "| 12 rows copies of others (30%), empty cache | 40 |" in md
    assert "| cache of 5,000 entries |" in md and "| cache / no cache |" in md
    page = (tmp_path / "performance.md").read_text()
    assert "| cache: first run / rerun with the warm cache |" in page
    assert "| cache of 10 M entries, all misses, near-free: peak RSS added |" in page

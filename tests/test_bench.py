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

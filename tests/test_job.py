"""End-to-end behaviour of the wired job that the per-stage tests can't see."""

import pyarrow as pa
import pyarrow.parquet as pq

from helpers import cpu_only, manifest_of, pipeline_oracle, run_score
from test_parity import mixed_texts


def write_input(tmp_path, n=200):
    src = tmp_path / "in.parquet"
    texts = mixed_texts(n, seed=3)
    pq.write_table(pa.table({"row": list(range(n)), "text": pa.array(texts, pa.string())}), src)
    return src, texts


def test_dataloader_workers_give_the_same_output_as_none(tiny_model, tmp_path):
    src, _ = write_input(tmp_path)
    tables = []
    for workers in ("0", "2"):
        out = tmp_path / f"out{workers}"
        result = run_score(src, tiny_model, out, "--chunk-rows", "23", "--num-workers", workers)
        assert result.exit_code == 0, result.output
        tables.append(pq.read_table(out))
    assert tables[0].column("row").to_pylist() == list(range(200))
    assert tables[0].equals(tables[1])  # same rows, same order, same scores, bit for bit


def test_bf16_on_cpu_runs_and_mostly_agrees_with_fp32(tiny_model, tmp_path):
    src, texts = write_input(tmp_path)
    labels = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        result = run_score(src, tiny_model, out, "--precision", precision)
        assert result.exit_code == 0, result.output
        labels[precision] = pq.read_table(out).select(["label", "score"]).to_pylist()
    same = sum(a["label"] == b["label"] for a, b in zip(labels["fp32"], labels["bf16"]))
    assert same >= 0.9 * len(texts)
    # ... and it did run in bf16: fp32's scores bit for bit would pass the line above too
    assert any(a["score"] != b["score"] for a, b in zip(labels["fp32"], labels["bf16"]))


@cpu_only
def test_fp16_on_cpu_is_a_usage_error(tiny_model, tmp_path):
    src, _ = write_input(tmp_path, 5)
    result = run_score(src, tiny_model, tmp_path / "out", "--precision", "fp16")
    assert result.exit_code == 2
    assert "needs a GPU" in result.output
    assert not (tmp_path / "out").exists()


def test_max_length_truncates_and_changes_scores(tiny_model, tmp_path):
    src, texts = write_input(tmp_path, 50)
    out = tmp_path / "short"
    result = run_score(src, tiny_model, out, "--max-length", "8")
    assert result.exit_code == 0, result.output
    got = pq.read_table(out).to_pylist()
    scored = [(row, text) for row, text in zip(got, texts) if text and text.strip()]
    oracle = pipeline_oracle(tiny_model, [text for _, text in scored], max_length=8)
    for (row, _), expected in zip(scored, oracle, strict=True):
        assert row["label"] == expected["label"]
        assert abs(row["score"] - expected["score"]) < 1e-5
    # The option changed the scores: untruncated (the model's limit, 512 tokens), the 29 texts of more than
    # 8 tokens score otherwise. Without this, an option (and an oracle) that truncated nothing would pass.
    whole = pipeline_oracle(tiny_model, [text for _, text in scored])
    changed = sum(abs(row["score"] - w["score"]) > 1e-4 for (row, _), w in zip(scored, whole, strict=True))
    assert changed >= 20, changed


@cpu_only
def test_int8_runs_and_agrees_with_fp32(tiny_model, tmp_path):
    src, texts = write_input(tmp_path)
    tables = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / precision
        result = run_score(src, tiny_model, out, "--precision", precision)
        assert result.exit_code == 0, result.output
        tables[precision] = pq.read_table(out)
    fp32, int8 = (tables[p].column("label").to_pylist() for p in ("fp32", "int8"))
    assert sum(a == b for a, b in zip(fp32, int8)) >= 0.9 * len(texts)
    scored = [i for i, label in enumerate(fp32) if label is not None]
    gaps = [abs(tables["fp32"].column("score")[i].as_py() - tables["int8"].column("score")[i].as_py()) for i in scored]
    assert 0 < max(gaps) < 0.1  # approximate, not different; and quantized: fp32's scores would pass `< 0.1`
    assert manifest_of(tmp_path / "int8")["config"]["precision"] == "int8"


@cpu_only
def test_batch_tokens_default_depends_on_device(tiny_model, tmp_path):
    from batchscore.options import CPU_BATCH_TOKENS

    src, _ = write_input(tmp_path)
    for args, expected in (([], CPU_BATCH_TOKENS), (["--batch-tokens", "64"], 64)):
        out = tmp_path / f"out{expected}"
        result = run_score(src, tiny_model, out, *args)
        assert result.exit_code == 0, result.output
        assert manifest_of(out)["config"]["batch_tokens"] == expected


MMAPPED_AFTER_24MB = """
import ctypes, sys
from batchscore.scoring.cpu import reuse_large_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
took = reuse_large_buffers() if sys.argv[1] == "tuned" else None
block = libc.malloc(24 << 20)  # the size of a wide activation, allocated fresh
print(took, libc.mallinfo2().hblkhd)  # bytes glibc holds in mmapped blocks
"""


def test_cpu_allocator_keeps_large_activations_in_the_heap():
    """Without the setting glibc mmaps a 24 MB block (and unmaps it when freed); with it, it comes from the heap."""
    import os
    import platform
    import subprocess
    import sys

    import pytest

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    seen = {}
    for mode in ("default", "tuned"):
        done = subprocess.run(
            [sys.executable, "-c", MMAPPED_AFTER_24MB, mode], capture_output=True, text=True, env=env, check=True
        )
        took, mmapped = done.stdout.split()
        seen[mode] = (took, int(mmapped))
    assert seen["default"][1] >= 24 << 20
    assert seen["tuned"][0] == "True" and seen["tuned"][1] < 24 << 20

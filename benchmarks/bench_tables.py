"""What a table output costs: the same near-free run committed to a Parquet folder, a Delta table and an
Iceberg table (SQLite catalog), whole processes, alternating, in one run (bench.py's "tables" section).

    python benchmarks/bench.py --tables-only --table-rows 1000000 --out /tmp/bench
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

FORMATS = ("parquet", "delta", "iceberg")


def table_bench(
    rows: int,
    repeats: int,
    chunk_rows: int,
    model: Path,
    data: Path,
    timed_cli: Callable[..., float],
) -> dict:
    """Median whole-process seconds of each format over `repeats` rounds (parquet, delta, iceberg in turn), and
    each table's ratio to the Parquet folder."""
    common = ["--model", str(model), "--chunk-rows", str(chunk_rows), "--no-progress"]
    seconds: dict[str, list[float]] = {f: [] for f in FORMATS}
    with tempfile.TemporaryDirectory(prefix="bench-tables-") as scratch_name:
        scratch = Path(scratch_name)
        for round_ in range(repeats):
            for fmt in FORMATS:
                shutil.rmtree(scratch / "out", ignore_errors=True)
                shutil.rmtree(scratch / "catalog", ignore_errors=True)
                target = "bench.scores" if fmt == "iceberg" else str(scratch / "out")
                where = ["--output-format", fmt]
                if fmt == "iceberg":
                    where += ["--catalog", f"sqlite:///{scratch}/catalog/catalog.db"]
                seconds[fmt].append(timed_cli("score", str(data), "-o", target, *common, *where))
            print(
                f"  tables round {round_ + 1}: " + ", ".join(f"{f} {seconds[f][-1]:.1f}s" for f in FORMATS),
                flush=True,
            )
    median = {f: statistics.median(s) for f, s in seconds.items()}
    return {
        "machine": machine(),
        "rows": rows,
        "chunk_rows": chunk_rows,
        "trials": repeats,
        "seconds": {f: round(median[f], 2) for f in FORMATS},
        "trial_seconds": {f: [round(x, 1) for x in s] for f, s in seconds.items()},
        "delta_vs_parquet": round(median["delta"] / median["parquet"], 3),
        "iceberg_vs_parquet": round(median["iceberg"] / median["parquet"], 3),
    }


def machine() -> str:
    """This machine's CPU in words (the section may be run alone, on another machine than the rest of a report)."""
    import os

    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = next((f for f in ("amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags), "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores{', ' + simd if simd else ''}"


def tables_markdown(section: dict) -> str:
    s = section["seconds"]
    where = f" on {section['machine']}" if section.get("machine") else ""
    return "\n".join(
        [
            f"Table outputs ({section['rows']:,} rows, near-free model, whole processes{where}, chunks of "
            f"{section['chunk_rows']:,} rows, medians of {section['trials']} alternating rounds; the table runs "
            "stage parts as a folder run writes them, then commit once):",
            "",
            "| output | seconds | vs Parquet folder |",
            "| --- | ---: | ---: |",
            f"| Parquet folder | {s['parquet']:.1f} | 1.00x |",
            f"| Delta table (append, one version) | {s['delta']:.1f} | {section['delta_vs_parquet']:.2f}x |",
            f"| Iceberg table, SQLite catalog (append, one snapshot) | {s['iceberg']:.1f} "
            f"| {section['iceberg_vs_parquet']:.2f}x |",
        ]
    )

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
        "rows": rows,
        "chunk_rows": chunk_rows,
        "trials": repeats,
        "seconds": {f: round(median[f], 2) for f in FORMATS},
        "delta_vs_parquet": round(median["delta"] / median["parquet"], 3),
        "iceberg_vs_parquet": round(median["iceberg"] / median["parquet"], 3),
    }


def tables_markdown(section: dict) -> str:
    s = section["seconds"]
    return "\n".join(
        [
            f"Table outputs ({section['rows']:,} rows, near-free model, whole processes, chunks of "
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

"""What setting bad records aside costs: a near-free run over a CSV with 0.1% bad records of mixed kinds, with
--on-bad-row quarantine, against the same CSV without them (bench.py's "bad_rows" section), whole processes,
alternating, in one run.

    python benchmarks/bench.py --bad-rows-only --bad-rows 1000000 --out /tmp/bench
"""

from __future__ import annotations

import csv
import random
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

# The bad records, in turn: each a kind a real export has (see docs/errors.md).
BAD_KINDS = (
    ("unparseable_record", lambda i, text: f'{i},"{text}",extra field\n'.encode()),  # too many fields
    ("unparseable_record", lambda i, text: f"{i}\n".encode()),  # too few
    ("unparseable_record", lambda i, text: f'{i},"{text}\n'.encode()),  # a quote that never closes
    ("invalid_encoding", lambda i, text: f"{i},".encode() + text.encode()[:20] + b"\xff\xfe tail\n"),  # in the text
)


def corpora(texts: list[str], rows: int, bad_share: float, folder: Path) -> tuple[Path, Path, dict[str, int]]:
    """(clean CSV, the same with bad records among its rows, bad records by kind): `rows` good rows in both."""
    clean, bad = folder / f"bad-rows-clean-{rows}.csv", folder / f"bad-rows-{rows}-{bad_share:g}.csv"
    every = round(1 / bad_share)
    kinds: dict[str, int] = {}
    for n in range(rows // every):
        kind = BAD_KINDS[n % len(BAD_KINDS)][0]
        kinds[kind] = kinds.get(kind, 0) + 1
    if clean.exists() and bad.exists():
        return clean, bad, kinds
    folder.mkdir(parents=True, exist_ok=True)
    with open(clean, "w", newline="") as c, open(bad, "wb") as b:
        writer = csv.writer(c, lineterminator="\n")
        writer.writerow(["id", "text"])
        b.write(b"id,text\n")
        rng = random.Random(3)
        made = 0
        for i in range(rows):
            text = texts[i % len(texts)]
            line = _csv_line(i, text)
            writer.writerow([i, text])
            b.write(line)
            if (i + 1) % every == 0:  # a bad record after every `every` good ones, kinds in turn
                make = BAD_KINDS[made % len(BAD_KINDS)][1]
                b.write(make(rows + made, rng.choice(texts)[:40].replace('"', "").replace("\n", " ")))
                made += 1
    return clean, bad, kinds


def _csv_line(i: int, text: str) -> bytes:
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([i, text])
    return out.getvalue().encode()


def bad_rows_bench(
    rows: int,
    repeats: int,
    chunk_rows: int,
    model: Path,
    clean: Path,
    bad: Path,
    kinds: dict[str, int],
    timed_cli: Callable[..., float],
    machine: str = "",
) -> dict:
    """Median whole-process seconds of the clean corpus (default --on-bad-row fail) and of the corpus with bad
    records (--on-bad-row quarantine), alternating; the speed ratio in records read per second."""
    common = ["--model", str(model), "--chunk-rows", str(chunk_rows), "--no-progress"]
    seconds: dict[str, list[float]] = {"clean": [], "quarantine": []}
    bad_records = sum(kinds.values())
    with tempfile.TemporaryDirectory(prefix="bench-bad-rows-") as scratch_name:
        out = Path(scratch_name) / "out"
        for round_ in range(repeats):
            for name, data, extra in (
                ("clean", clean, []),
                ("quarantine", bad, ["--on-bad-row", "quarantine", "--max-bad-rows", "1%"]),
            ):
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(f"{out}.quarantine", ignore_errors=True)
                seconds[name].append(timed_cli("score", str(data), "-o", str(out), *common, *extra))
                if name == "quarantine":
                    found = _quarantined(out)
                    assert found == bad_records, f"the quarantine holds {found} records, not {bad_records}"
            print(
                f"  bad rows round {round_ + 1}: clean {seconds['clean'][-1]:.1f}s, "
                f"quarantine {seconds['quarantine'][-1]:.1f}s",
                flush=True,
            )
    median = {k: statistics.median(v) for k, v in seconds.items()}
    speed_clean = rows / median["clean"]
    speed_bad = (rows + bad_records) / median["quarantine"]
    return {
        "machine": machine,
        "rows": rows,
        "bad_records": bad_records,
        "bad_kinds": kinds,
        "chunk_rows": chunk_rows,
        "trials": repeats,
        "seconds": {k: round(v, 2) for k, v in median.items()},
        "trial_seconds": {k: [round(x, 1) for x in v] for k, v in seconds.items()},
        "records_per_s": {"clean": round(speed_clean), "quarantine": round(speed_bad)},
        "speed_vs_clean": round(speed_bad / speed_clean, 3),
    }


def _quarantined(out: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(f"{out}.quarantine", format="parquet").count_rows()


def bad_rows_markdown(section: dict) -> str:
    s = section["seconds"]
    where = f" on {section['machine']}" if section.get("machine") else ""
    kinds = ", ".join(f"{n:,} {k}" for k, n in section["bad_kinds"].items())
    return "\n".join(
        [
            f"Bad records set aside ({section['rows']:,} good rows, near-free model, CSV, whole processes{where}, "
            f"chunks of {section['chunk_rows']:,} rows, medians of {section['trials']} alternating rounds; "
            f"the second corpus holds {section['bad_records']:,} bad records besides: {kinds}):",
            "",
            "| corpus | seconds | records/s | speed vs clean |",
            "| --- | ---: | ---: | ---: |",
            f"| clean (default `--on-bad-row fail`) | {s['clean']:.1f} | "
            f"{section['records_per_s']['clean']:,} | 1.00x |",
            f"| 0.1% bad, `--on-bad-row quarantine` | {s['quarantine']:.1f} | "
            f"{section['records_per_s']['quarantine']:,} | {section['speed_vs_clean']:.2f}x |",
        ]
    )

"""What `--precision fastest` gives on this machine: whole jobs over real mixed text with the trained offline
model, fp32 against fastest (its calibration counted in its time), alternating, in one run; the precision it
chose, what it measured, and how many of fp32's labels the whole output kept (bench.py's "calibrated" section).
Every result is stamped with the CPU's flags: it holds for this class of CPU only.

    python benchmarks/bench.py --calibrated-only --calibrated-rows 20000 --repeats 1 --out /tmp/bench
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

# Environment variables that cap the instruction sets torch's kernels use (ATen's own, oneDNN, fbgemm, MKL): set,
# a run measures those code paths on this CPU, not this CPU's best; the stamp says so.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS", "MKL_ENABLE_INSTRUCTIONS")


def cpu_stamp() -> dict:
    """The CPU's model name, the flags that decide which precisions run natively (calibration.py's), and any
    instruction-set caps in force."""
    from batchscore.calibration import DECISIVE_FLAGS
    from batchscore.scoring.cpu import cpu_flags

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    caps = {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}
    return {"model": model, "flags": sorted(set(DECISIVE_FLAGS) & cpu_flags()), **({"capped": caps} if caps else {})}


def stamp_text(cpu: dict) -> str:
    caps = cpu.get("capped") or {}
    forced = f", its code paths capped by {' '.join(f'{k}={v}' for k, v in caps.items())}" if caps else ""
    return f"{cpu['model']}, flags {' '.join(cpu['flags']) or 'none of note'}{forced}"


def calibrated_bench(
    model_dir: Path,
    data: Path,
    rows: int,
    repeats: int,
    trial: Callable[..., dict],
    agreement: Callable[[list, list], dict],
) -> dict:
    """fp32 and --precision fastest, alternating, `repeats` rounds, whole jobs (top_k all, for row-by-row
    agreement); the chosen precision and its calibration from the first fastest run's manifest."""
    runs: dict[str, list[dict]] = {"fp32": [], "fastest": []}
    with tempfile.TemporaryDirectory(prefix="bench-calibrated-") as scratch:
        for rep in range(repeats):
            for precision in runs:
                runs[precision].append(trial("batchscore", model_dir, data, scratch, rows, precision=precision))
                print(f"  trial {rep + 1} --precision {precision}: {runs[precision][-1]['seconds']:.2f}s", flush=True)
    seconds = {p: statistics.median(r["seconds"] for r in trials) for p, trials in runs.items()}
    calibration = runs["fastest"][0]["calibration"]
    chosen = sorted({r["calibration"]["models"][0]["precision"] for r in runs["fastest"]})
    return {
        "model": model_dir.name,
        "rows": rows,
        "trials": repeats,
        "cpu": cpu_stamp(),
        "fp32_seconds": round(seconds["fp32"], 3),
        "fastest_seconds": round(seconds["fastest"], 3),
        "speed_vs_fp32": round(seconds["fp32"] / seconds["fastest"], 3),
        "chosen": chosen,  # one precision per trial; several if trials chose differently
        "calibration": calibration,
        "agreement": agreement(runs["fp32"][0]["scores"], runs["fastest"][0]["scores"]),
    }


def calibrated_markdown(section: dict) -> str:
    entry = section["calibration"]["models"][0]
    measured = entry.get("measured") or []
    base = measured[0]["rows_per_second"] if measured else None
    margin = entry.get("recheck_margin")
    rechecks = f" with rows within {margin:.3g} of a tie rechecked in fp32" if margin else ""
    lines = [
        f"`--precision fastest` on real, mixed text ({section['rows']:,} rows, the trained offline model "
        f"`{section['model']}`, whole jobs, calibration included in its time, medians of {section['trials']} "
        f"alternating rounds) on {stamp_text(section['cpu'])}: it chose **{', '.join(section['chosen'])}**"
        f"{rechecks}, ran at **{section['speed_vs_fp32']:.2f}x** fp32's speed "
        f"({section['fastest_seconds']:.1f} s against {section['fp32_seconds']:.1f} s) and kept "
        f"**{section['agreement']['agreement']:.2%}** of fp32's labels over the whole output "
        f"({section['agreement']['labels_changed']:,} changed).",
        "",
        f"What the calibration measured on its {section['calibration']['sample_rows']:,}-row sample "
        f"(--min-agreement {section['calibration']['min_agreement']:g}):",
        "",
        "| precision | rows measured | rows/s alone | vs fp32 alone | labels kept alone | rechecked in fp32 "
        "(margin) | vs fp32 with rechecks | labels kept with rechecks (predicted) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in measured:
        predicted = "" if m.get("predicted") is None else f"{m['predicted']:.3%}"
        with_rechecks = m.get("with_rechecks")
        rechecked = f"{m['rechecked']:.2%} (< {m['recheck_margin']:.3g})" if with_rechecks else ""
        lines.append(
            f"| {m['precision']} | {m['rows']:,} | {m['rows_per_second']:,.1f} | "
            f"{m['rows_per_second'] / base:.2f}x | {m['agreement']:.2%} | {rechecked} | "
            f"{'' if not with_rechecks else f'{with_rechecks / base:.2f}x'} | {predicted} |"
        )
    if not measured:
        lines.append(f"| (nothing measured: {entry.get('reason', '')}) | | | | | | | |")
    return "\n".join(lines)

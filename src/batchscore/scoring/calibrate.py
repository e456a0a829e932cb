"""--precision fastest: a model's precision chosen on a sample of the input's own rows, on this device.

The model is loaded in fp32. Each candidate this device runs natively (`candidates`) is made from it, the sample is
scored in fp32 and in each candidate, and the fastest candidate whose labels agree with fp32's on at least
`min_agreement` of the sample's rows wins, if it beats fp32 by MIN_SPEEDUP; else fp32 stays. The measuring is
here; where the choice is recorded, and how shards, ranks and resumes reuse it, is the job's (job.py,
output/calibration.py).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from .load import LoadedModel
    from .models import ModelScorer

log = logging.getLogger(__name__)

EXACT = "fp32"
# A candidate must beat fp32's rows per second by this much to be taken: a gain within the timing noise of a
# one-pass measurement is not worth approximate scores.
MIN_SPEEDUP = 1.05
# Rows scored once in every precision before the timing starts: the first forward pass builds kernels and grows
# the allocator's pools, which would count against whichever precision runs first.
WARM_UP_ROWS = 16
SLICES = 8


@dataclass(frozen=True)
class Measured:
    precision: str
    rows_per_second: float
    agreement: float  # the share of the rows it scored whose label equals fp32's
    rows: int  # of the sample: all of it, or as many as it took to drop it


@dataclass(frozen=True)
class Choice:
    """What calibrating one model found and chose (or, `measured` empty, what an earlier run recorded)."""

    precision: str
    measured: tuple[Measured, ...] = ()
    reason: str = ""  # why nothing was measured, where nothing was
    sample_rows: int = 0

    def record(self) -> dict[str, Any]:
        found = {
            "precision": self.precision,
            "measured": [dataclasses.asdict(m) for m in self.measured],
        }  # sample_rows: the record's
        return found | ({"reason": self.reason} if self.reason else {})

    def summary(self, min_agreement: float) -> str:
        """One line: what was chosen, and why the other candidates were not."""
        if not self.measured:
            return f"kept fp32: {self.reason}"
        base = self.measured[0]
        parts = []
        for m in self.measured[1:]:
            speed = m.rows_per_second / base.rows_per_second
            if m.precision == self.precision:
                verdict = "chosen"
            elif m.rows < self.sample_rows:
                why = "below the bar" if not qualifies(m.agreement, min_agreement) else "slower"
                verdict = f"{why}, dropped after {m.rows:,} rows"
            elif not qualifies(m.agreement, min_agreement):
                verdict = "below the bar"
            elif speed < MIN_SPEEDUP:
                verdict = "not faster"
            else:
                verdict = "slower than the chosen"
            parts.append(f"{m.precision} {speed:.2f}x fp32's speed, {m.agreement:.2%} of its labels ({verdict})")
        chosen = f"chose {self.precision}" if self.precision != EXACT else "kept fp32 (exact)"
        tried = "; ".join(parts) or "no faster precision runs natively here"
        return f"{chosen}: {tried}; --min-agreement {min_agreement:g}"


def qualifies(agreement: float, min_agreement: float) -> bool:
    """A bar of 1 asks for exact scores, which only fp32 gives: no candidate passes it, even one that agreed on
    every row of the sample."""
    return min_agreement < 1 and agreement >= min_agreement


def candidates(device_type: str) -> list[str]:
    """The precisions besides fp32 that this device runs natively: bf16 and fp16 on a GPU (bf16 where it has
    bf16 units); on a CPU, bf16 only with avx512_bf16 or AMX (software bf16 measured 5.5x slower than fp32), and
    int8, which the measurement keeps only where it pays."""
    if device_type == "cuda":
        import torch

        return ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    from .cpu import native_bf16

    return (["bf16"] if native_bf16() else []) + ["int8"]


def in_precision(loaded: LoadedModel, precision: str) -> LoadedModel:
    """The fp32 model `loaded`, made into `precision` (a copy: the fp32 one stays as it was). The same weights
    as a load in that precision: the cast rounds each fp32 weight as loading the checkpoint in it does."""
    import torch

    from .cpu import quantize_int8
    from .load import WEIGHT_DTYPES

    if precision == loaded.precision:
        return loaded
    device = loaded.device.type
    if precision == "int8" and device != "cpu":
        raise ConfigError(
            f"This output's precision was calibrated to int8, a CPU precision, but this run has a "
            f"{device}; rerun it on a CPU, or pass --overwrite to calibrate again here."
        )
    if precision == "fp16" and device == "cpu":
        raise ConfigError(
            "This output's precision was calibrated to fp16, a GPU precision, but this run has no "
            "GPU; rerun it on a GPU, or pass --overwrite to calibrate again here."
        )
    model = copy.deepcopy(loaded.model)
    model = quantize_int8(model) if precision == "int8" else model.to(getattr(torch, WEIGHT_DTYPES[precision]))
    return dataclasses.replace(loaded, model=model, precision=precision)


def calibrate(scorer: ModelScorer, sample: pa.Table, min_agreement: float) -> tuple[Choice, ModelScorer]:
    """Score `sample` (rows of the text column) in fp32 and each candidate; the choice, and the scorer in it.

    The sample is scored in SLICES slices, the precisions taking turns in opposite orders from one slice to the
    next, so a machine that slows down or speeds up during the measurement favours none of them. A candidate is
    dropped as soon as it cannot win: more labels changed than the bar allows on the whole sample, or (from the
    second slice) slower than fp32; once every candidate is out, so is the measuring.
    """
    from .models import ModelScorer

    if not qualifies(1.0, min_agreement):
        exact = f"--min-agreement {min_agreement:g} asks for exact scores, which only fp32 gives"
        return Choice(EXACT, reason=exact), scorer  # nothing but fp32 can pass the bar: nothing to measure
    scorers = {EXACT: scorer} | {
        p: ModelScorer(in_precision(scorer.loaded, p), scorer.rules) for p in candidates(scorer.loaded.device.type)
    }
    for each in scorers.values():
        _labels(each, sample.slice(0, WARM_UP_ROWS))
    texts = sample.num_rows
    allowed = int((1 - min_agreement) * texts + 1e-9)  # labels a candidate may change over the whole sample
    seconds, rows, changed = dict.fromkeys(scorers, 0.0), dict.fromkeys(scorers, 0), dict.fromkeys(scorers, 0)
    live = list(scorers)[1:]
    bounds = [texts * k // SLICES for k in range(SLICES + 1)]
    for turn, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        if not live or start == stop:
            continue
        piece = sample.slice(start, stop - start)
        labels = {}
        for precision in [EXACT, *live] if turn % 2 == 0 else [*reversed(live), EXACT]:
            started = time.perf_counter()
            labels[precision] = _labels(scorers[precision], piece)
            seconds[precision] += time.perf_counter() - started
            rows[precision] += piece.num_rows
        for precision in live:
            changed[precision] += sum(a != b for a, b in zip(labels[precision], labels[EXACT]))
        rate = {p: rows[p] / max(seconds[p], 1e-9) for p in scorers}
        live = [p for p in live if changed[p] <= allowed and (turn == 0 or rate[p] >= rate[EXACT])]
    measured = [
        Measured(p, round(rows[p] / max(seconds[p], 1e-9), 2), round(1 - changed[p] / max(rows[p], 1), 6), rows[p])
        for p in scorers
        if rows[p]
    ]
    chosen = choose(measured, min_agreement)
    return Choice(chosen, tuple(measured), sample_rows=texts), scorers[chosen]


def choose(measured: list[Measured], min_agreement: float) -> str:
    """The fastest precision measured on every row fp32 (`measured[0]`) was that keeps the bar and beats fp32 by
    MIN_SPEEDUP; else fp32."""
    base = measured[0]
    passed = [
        m
        for m in measured[1:]
        if m.rows >= base.rows
        and qualifies(m.agreement, min_agreement)
        and m.rows_per_second >= base.rows_per_second * MIN_SPEEDUP
    ]
    return max(passed, key=lambda m: m.rows_per_second).precision if passed else EXACT


def _labels(scorer: ModelScorer, texts: pa.Table) -> list:
    """Each row's label (None: no text): the first result column, which every head fills with the top label."""
    from .core import ScoringCore

    columns = ScoringCore([scorer]).score_texts(texts)
    return columns[scorer.fields[0].name].to_pylist()

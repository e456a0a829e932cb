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


@dataclass(frozen=True)
class Measured:
    precision: str
    rows_per_second: float
    agreement: float  # the share of the sample's rows whose label equals fp32's


@dataclass(frozen=True)
class Choice:
    """What calibrating one model found and chose (or, `measured` empty, what an earlier run recorded)."""

    precision: str
    measured: tuple[Measured, ...] = ()

    def record(self) -> dict[str, Any]:
        return {"precision": self.precision, "measured": [dataclasses.asdict(m) for m in self.measured]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Choice:
        return cls(str(record["precision"]), tuple(Measured(**m) for m in record.get("measured") or ()))

    def summary(self, min_agreement: float) -> str:
        """One line: what was chosen, and why the other candidates were not."""
        base = next(m for m in self.measured if m.precision == EXACT)
        chosen = f"chose {self.precision}" if self.precision != EXACT else "kept fp32 (exact)"
        parts = []
        for m in self.measured:
            if m.precision == EXACT:
                continue
            speed = m.rows_per_second / base.rows_per_second
            verdict = (
                "chosen"
                if m.precision == self.precision
                else "below the bar"
                if not qualifies(m.agreement, min_agreement)
                else "not faster"
                if speed < MIN_SPEEDUP
                else "slower than the chosen"
            )
            parts.append(f"{m.precision} {speed:.2f}x fp32's speed, {m.agreement:.2%} of its labels ({verdict})")
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

    The sample is timed in two halves, the precisions taking turns in opposite orders, so a machine that slows
    down or speeds up during the measurement favours none of them.
    """
    from .models import ModelScorer

    scorers = {EXACT: scorer} | {
        p: ModelScorer(in_precision(scorer.loaded, p), scorer.rules) for p in candidates(scorer.loaded.device.type)
    }
    order = list(scorers)
    middle = sample.num_rows // 2
    halves = [sample.slice(0, middle), sample.slice(middle)]
    for each in scorers.values():
        _labels(each, sample.slice(0, WARM_UP_ROWS))
    seconds = dict.fromkeys(order, 0.0)
    labels: dict[str, list] = {p: [None, None] for p in order}
    for turn, half in enumerate(halves):
        for precision in order if turn == 0 else reversed(order):
            started = time.perf_counter()
            labels[precision][turn] = _labels(scorers[precision], half)
            seconds[precision] += time.perf_counter() - started
    exact = labels[EXACT][0] + labels[EXACT][1]
    scored = [n for n, label in enumerate(exact) if label is not None] or [0]
    measured = []
    for precision in order:
        mine = labels[precision][0] + labels[precision][1]
        agreement = sum(mine[n] == exact[n] for n in scored) / len(scored)
        rate = sample.num_rows / max(seconds[precision], 1e-9)
        measured.append(Measured(precision, round(rate, 2), round(agreement, 6)))
    chosen = choose(measured, min_agreement)
    return Choice(chosen, tuple(measured)), scorers[chosen]


def choose(measured: list[Measured], min_agreement: float) -> str:
    """The fastest precision that keeps the bar and beats fp32 (`measured[0]`) by MIN_SPEEDUP; else fp32."""
    floor = measured[0].rows_per_second * MIN_SPEEDUP
    passed = [m for m in measured[1:] if qualifies(m.agreement, min_agreement) and m.rows_per_second >= floor]
    return max(passed, key=lambda m: m.rows_per_second).precision if passed else EXACT


def _labels(scorer: ModelScorer, texts: pa.Table) -> list:
    """Each row's label (None: no text): the first result column, which every head fills with the top label."""
    from .core import ScoringCore

    columns = ScoringCore([scorer]).score_texts(texts)
    return columns[scorer.fields[0].name].to_pylist()

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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from .load import LoadedModel
    from .models import ModelScorer

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
    # The share of labels it would keep over the whole input, predicted from how close each sampled row is to
    # fp32's decision boundary and how far this precision moves rows (`predicted_agreement`); None: not known.
    predicted: float | None = None

    def agreement_at_worst(self) -> float:
        return self.agreement if self.predicted is None else min(self.agreement, self.predicted)


@dataclass(frozen=True)
class Choice:
    """What calibrating one model found and chose (or, `measured` empty, what an earlier run recorded)."""

    precision: str
    measured: tuple[Measured, ...] = ()
    reason: str = ""  # why nothing was measured, where nothing was
    sample_rows: int = 0

    def record(self) -> dict[str, Any]:
        found = {"precision": self.precision, "measured": [dataclasses.asdict(m) for m in self.measured]}
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
                why = "below the bar" if not qualifies(m.agreement_at_worst(), min_agreement) else "slower"
                verdict = f"{why}, dropped after {m.rows:,} rows"
            elif not qualifies(m.agreement_at_worst(), min_agreement):
                verdict = "below the bar"
            elif speed < MIN_SPEEDUP:
                verdict = "not faster"
            else:
                verdict = "slower than the chosen"
            predicted = "" if m.predicted is None else f" ({m.predicted:.2%} predicted from the margins)"
            parts.append(
                f"{m.precision} {speed:.2f}x fp32's speed, {m.agreement:.2%} of its labels{predicted} ({verdict})"
            )
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
    import numpy as np

    from .models import ModelScorer

    if not qualifies(1.0, min_agreement):
        why = f"--min-agreement {min_agreement:g} asks for exact scores, which only fp32 gives"
        return Choice(EXACT, reason=why), scorer  # nothing but fp32 can pass the bar: nothing to measure
    scorers = {EXACT: scorer} | {
        p: ModelScorer(in_precision(scorer.loaded, p), scorer.rules) for p in candidates(scorer.loaded.device.type)
    }
    for each in scorers.values():
        _scores(each, sample.slice(0, WARM_UP_ROWS))
    texts = sample.num_rows
    allowed = int((1 - min_agreement) * texts + 1e-9)  # labels a candidate may change over the whole sample
    seconds, rows, changed = dict.fromkeys(scorers, 0.0), dict.fromkeys(scorers, 0), dict.fromkeys(scorers, 0)
    exact: list[np.ndarray] = []
    moved: dict[str, list[np.ndarray]] = {p: [] for p in scorers}
    live = list(scorers)[1:]
    bounds = [texts * k // SLICES for k in range(SLICES + 1)]
    for turn, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        if not live or start == stop:
            continue
        piece = sample.slice(start, stop - start)
        scores = {}
        for precision in [EXACT, *live] if turn % 2 == 0 else [*reversed(live), EXACT]:
            started = time.perf_counter()
            scores[precision] = _scores(scorers[precision], piece)
            seconds[precision] += time.perf_counter() - started
            rows[precision] += piece.num_rows
        exact.append(scores[EXACT])
        for precision in live:
            moved[precision].append(scores[precision])
            changed[precision] += _changed(scores[EXACT], scores[precision])
        speed = {p: rows[p] / max(seconds[p], 1e-9) for p in scorers}
        live = [p for p in live if changed[p] <= allowed and (turn == 0 or speed[p] >= speed[EXACT])]
    measured = [Measured(EXACT, round(rows[EXACT] / max(seconds[EXACT], 1e-9), 2), 1.0, rows[EXACT])]
    for precision in list(scorers)[1:]:
        if not rows[precision]:
            continue
        base, mine = np.concatenate(exact[: len(moved[precision])]), np.concatenate(moved[precision])
        valid = max(int((~np.isnan(base[:, 0])).sum()), 1)
        rate = round(rows[precision] / max(seconds[precision], 1e-9), 2)
        agreement = round(1 - changed[precision] / valid, 6)
        measured.append(Measured(precision, rate, agreement, rows[precision], predicted_agreement(base, mine)))
    chosen = choose(measured, min_agreement)
    return Choice(chosen, tuple(measured), sample_rows=texts), scorers[chosen]


def choose(measured: list[Measured], min_agreement: float) -> str:
    """The fastest precision measured on every row fp32 (`measured[0]`) was that keeps the bar, as counted and as
    predicted (`Measured.agreement_at_worst`), and beats fp32 by MIN_SPEEDUP; else fp32."""
    base = measured[0]
    passed = [
        m
        for m in measured[1:]
        if m.rows >= base.rows
        and qualifies(m.agreement_at_worst(), min_agreement)
        and m.rows_per_second >= base.rows_per_second * MIN_SPEEDUP
    ]
    return max(passed, key=lambda m: m.rows_per_second).precision if passed else EXACT


def predicted_agreement(exact: np.ndarray, other: np.ndarray) -> float | None:
    """The share of labels `other` keeps, predicted from the rows' margins rather than counted.

    A sample of 1,000 rows where no label changed cannot tell a precision that keeps 99.95% of labels from one
    that keeps 99.8%. Every row says more than whether it flipped: how close it is to fp32's decision boundary
    (its margin, the top score less the runner-up's) and how far the other precision moved it (the change in
    that difference). A row flips when a move larger than its margin goes the wrong way. Taking the moves as
    independent of the margins, each row's chance is the share of the sample's moves larger than its margin,
    halved for the direction; their mean is the expected share of changed labels. On 20,000 real rows (the
    offline MiniLM, bf16 on an AVX-512 CPU) it predicted 99.892% on average over 1,000-row samples, against
    99.895% counted on all of them, with a spread a third of the count's. None for a head of one score.
    """
    import numpy as np

    rows = ~np.isnan(exact[:, 0])
    exact, other = exact[rows], other[rows]
    if exact.shape[1] < 2 or not len(exact):
        return None
    top = np.argsort(-exact, axis=1)[:, :2]
    picked = np.arange(len(exact))
    margin = exact[picked, top[:, 0]] - exact[picked, top[:, 1]]
    move = np.sort(np.abs((other[picked, top[:, 0]] - other[picked, top[:, 1]]) - margin))
    larger = 1 - np.searchsorted(move, margin, side="right") / len(move)
    return round(float(1 - larger.mean() / 2), 6)


def _changed(exact: np.ndarray, other: np.ndarray) -> int:
    """Rows whose label (the top score) differs between two score matrices; rows without text (NaN) left out."""
    import numpy as np

    rows = ~np.isnan(exact[:, 0])
    return int((exact[rows].argmax(1) != other[rows].argmax(1)).sum())


def _scores(scorer: ModelScorer, texts: pa.Table) -> np.ndarray:
    """Each row's scores, every label (the head's function applied, a long text's windows folded in, as the run
    computes them), float64; NaN for a row without text."""
    import numpy as np

    from ..plan import Chunk
    from .core import ScoringCore

    work = ScoringCore([scorer]).encoders.encode(Chunk(0, 0, texts), []).items[0]
    scores = np.array(scorer.run(work).scores, dtype=np.float64).reshape(len(work.valid), -1)
    scores[~work.valid] = np.nan
    return scores

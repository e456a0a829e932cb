"""--precision fastest: a model's precision chosen on a sample of the input's own rows, on this device.

The model is loaded in fp32. Each candidate this device runs natively (`candidates`) is made from it, the sample is
scored in fp32 and in each candidate, and each candidate gets the recheck margin it needs (`recheck`): rows it
scores closer to a tie than that are scored again in fp32 (models.Recheck), so that it keeps at least
`min_agreement` of fp32's labels. The fastest candidate, its rechecks counted in its time, wins if it beats fp32 by
MIN_SPEEDUP; else fp32 stays. The measuring is here; where the choice is recorded, and how shards, ranks and
resumes reuse it, is the job's (job.py, output/calibration.py).
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

    from .encode import EncodedChunk
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
# A faster precision's label is trusted only for rows further from a tie than it moved all but FLOOR_SHARE x the
# allowed share of the sample's rows (for --min-agreement 0.999, its 99th percentile move; `recheck`).
FLOOR_SHARE = 10


@dataclass(frozen=True)
class Measured:
    precision: str
    rows_per_second: float  # scoring the sample in this precision alone
    agreement: float  # the share of the rows it scored whose label equals fp32's, in this precision alone
    rows: int  # of the sample: all of it, or as many as it took to drop it
    # The share of labels it keeps over the whole input with its rechecks, predicted from the sample (`recheck`);
    # None: not known (a head of one score).
    predicted: float | None = None
    recheck_margin: float = 0.0  # rows it scores closer than this to a tie are scored again in fp32; 0: none
    rechecked: float = 0.0  # the share of the sample's rows under that margin
    # Rows per second with its rechecks' fp32 scoring counted in; None: fp32, which rechecks nothing.
    with_rechecks: float | None = None

    def speed(self) -> float:
        return self.rows_per_second if self.with_rechecks is None else self.with_rechecks

    def kept(self) -> float:
        return self.agreement if self.predicted is None else self.predicted


@dataclass(frozen=True)
class Choice:
    """What calibrating one model found and chose (or, `measured` empty, what an earlier run recorded)."""

    precision: str
    measured: tuple[Measured, ...] = ()
    reason: str = ""  # why nothing was measured, where nothing was
    sample_rows: int = 0

    def record(self) -> dict[str, Any]:
        found: dict[str, Any] = {"precision": self.precision}
        margin = self.recheck_margin()
        if margin:
            found["recheck_margin"] = margin
        found["measured"] = [dataclasses.asdict(m) for m in self.measured]
        return found | ({"reason": self.reason} if self.reason else {})

    def summary(self, min_agreement: float) -> str:
        """One line: what was chosen, and why the other candidates were not."""
        if not self.measured:
            return f"kept fp32: {self.reason}"
        base = self.measured[0]
        parts = []
        for m in self.measured[1:]:
            speed = m.speed() / base.rows_per_second
            if m.precision == self.precision:
                verdict = "chosen"
            elif m.rows < self.sample_rows:
                verdict = f"slower, dropped after {m.rows:,} rows"
            elif not qualifies(m.kept(), min_agreement):
                verdict = "below the bar"
            elif speed < MIN_SPEEDUP:
                verdict = "not faster"
            else:
                verdict = "slower than the chosen"
            alone = m.rows_per_second / base.rows_per_second
            alone_text = f"alone {alone:.2f}x fp32's speed, {m.agreement:.2%} of its labels"
            rechecks = (
                f"; rechecking in fp32 the {m.rechecked:.1%} of rows within {m.recheck_margin:.3g} of a tie"
                if m.recheck_margin
                else "; no rechecks needed"
            )
            kept = "" if m.predicted is None else f", {m.predicted:.2%} of labels predicted"
            parts.append(f"{m.precision} {speed:.2f}x ({alone_text}{rechecks}{kept}; {verdict})")
        chosen = f"chose {self.precision}" if self.precision != EXACT else "kept fp32 (exact)"
        tried = "; ".join(parts) or "no faster precision runs natively here"
        return f"{chosen}: {tried}; --min-agreement {min_agreement:g}"

    def recheck_margin(self) -> float:
        return next((m.recheck_margin for m in self.measured if m.precision == self.precision), 0.0)


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
    next, so a machine that slows down or speeds up during the measurement favours none of them. From the second
    slice on, a candidate is dropped as soon as it is slower than fp32 with its rechecks counted in; once every
    candidate is out, so is the measuring.
    """
    import numpy as np

    from .models import ModelScorer, Recheck

    if not qualifies(1.0, min_agreement):
        why = f"--min-agreement {min_agreement:g} asks for exact scores, which only fp32 gives"
        return Choice(EXACT, reason=why), scorer  # nothing but fp32 can pass the bar: nothing to measure
    scorers = {EXACT: scorer} | {
        p: ModelScorer(in_precision(scorer.loaded, p), scorer.rules) for p in candidates(scorer.loaded.device.type)
    }
    for each in scorers.values():
        _scores(each, _encoded(each, sample.slice(0, WARM_UP_ROWS)))
    function = scorer.function
    seconds, rows = dict.fromkeys(scorers, 0.0), dict.fromkeys(scorers, 0)
    scored: dict[str, list[np.ndarray]] = {p: [] for p in scorers}
    found: dict[str, Measured] = {}
    live = list(scorers)[1:]
    bounds = [sample.num_rows * k // SLICES for k in range(SLICES + 1)]
    for turn, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        if not live or start == stop:
            continue
        piece = sample.slice(start, stop - start)
        for precision in [EXACT, *live] if turn % 2 == 0 else [*reversed(live), EXACT]:
            work = _encoded(scorers[precision], piece)  # untimed: the same for every precision, and in a job
            started = time.perf_counter()  # tokenizing runs beside the model
            scored[precision].append(_scores(scorers[precision], work))
            seconds[precision] += time.perf_counter() - started
            rows[precision] += piece.num_rows
        fp32_speed = rows[EXACT] / max(seconds[EXACT], 1e-9)
        exact = np.concatenate(scored[EXACT])
        for precision in live:
            mine = np.concatenate(scored[precision])
            speed = rows[precision] / max(seconds[precision], 1e-9)
            found[precision] = _measured(precision, exact, mine, function, speed, fp32_speed, min_agreement)
        live = [p for p in live if turn == 0 or found[p].speed() >= fp32_speed]
    measured = [Measured(EXACT, round(rows[EXACT] / max(seconds[EXACT], 1e-9), 2), 1.0, rows[EXACT])]
    measured += [found[p] for p in list(scorers)[1:] if p in found]
    chosen = choose(measured, min_agreement)
    choice = Choice(chosen, tuple(measured), sample_rows=sample.num_rows)
    if chosen == EXACT:
        return choice, scorer
    return choice, ModelScorer(scorers[chosen].loaded, scorer.rules, Recheck(scorer.loaded, choice.recheck_margin()))


def _measured(
    precision: str,
    exact: np.ndarray,
    mine: np.ndarray,
    function: str,
    speed: float,
    fp32_speed: float,
    min_agreement: float,
) -> Measured:
    """What a candidate showed on the rows it scored so far: its speed and agreement alone, the recheck margin it
    needs, and its speed with those rechecks (each rechecked row costs fp32's time once more)."""
    valid = max(int((~_no_text(exact)).sum()), 1)
    margin, rechecked, predicted = recheck(exact[: len(mine)], mine, function, min_agreement)
    return Measured(
        precision,
        round(speed, 2),
        round(1 - _changed(exact[: len(mine)], mine) / valid, 6),
        len(mine),
        None if predicted is None else round(predicted, 6),
        margin,
        round(rechecked, 6),
        round(1 / (1 / speed + rechecked / fp32_speed), 2),
    )


def choose(measured: list[Measured], min_agreement: float) -> str:
    """The fastest precision, its rechecks counted in, measured on every row fp32 (`measured[0]`) was, that keeps
    the bar (`Measured.kept`) and beats fp32 by MIN_SPEEDUP; else fp32."""
    base = measured[0]
    passed = [
        m
        for m in measured[1:]
        if m.rows >= base.rows
        and qualifies(m.kept(), min_agreement)
        and m.speed() >= base.rows_per_second * MIN_SPEEDUP
    ]
    return max(passed, key=lambda m: m.speed()).precision if passed else EXACT


def recheck(
    exact: np.ndarray, other: np.ndarray, function: str, min_agreement: float
) -> tuple[float, float, float | None]:
    """The recheck margin a precision needs to keep `min_agreement` of fp32's labels, the share of the sample's
    rows it rechecks, and the share of labels it is predicted to keep (None: a head of one score, whose label
    cannot change; nothing to recheck).

    A row's label changes when the other precision moves it across the tie: when the move (the change in the gap
    between fp32's top two logits) is larger than the row's gap and goes the wrong way. Rows are taken from the
    one scored closest to a tie upward, each rechecked one scored in fp32 and so keeping its label, until the rest
    meet two conditions: (1) the rest are predicted to change at most half the allowed share of labels, each
    row's chance being the share of the sample's moves larger than its gap, halved for the direction (counted on
    the sample, rows that did change are rechecked as well); (2) none of the rest is closer to a tie than all but
    FLOOR_SHARE x the allowed share of the moves: the prediction leans on the sample's rows near a tie, and a
    sample of 1,000 may have met too few of them. Gaps and moves are on the logits' scale, where a move does not
    shrink with how sure the row is. On 20,000 real rows (the offline MiniLM, 1,000-row samples, 40 of them each,
    on an AVX-512 EPYC) that kept every bar tried: bf16 rechecked 0.8% of rows and kept 100% of the labels (99.895%
    alone); int8 with 7-bit activations, for a bar of 0.99, rechecked 10.7% and kept 99.63% (97.3% alone).
    """
    import numpy as np

    from .heads import as_logits, top_two_gap

    rows = ~_no_text(exact)
    exact, other = as_logits(function, exact[rows]), as_logits(function, other[rows])
    count = len(exact)
    if exact.shape[1] < 2 or not count:
        return 0.0, 0.0, None
    top = np.argsort(-exact, axis=1)[:, :2]
    picked = np.arange(count)
    gap_exact = exact[picked, top[:, 0]] - exact[picked, top[:, 1]]
    moves = np.sort(np.abs(other[picked, top[:, 0]] - other[picked, top[:, 1]] - gap_exact))
    gap = top_two_gap(other)
    order = np.argsort(gap, kind="stable")
    gap = gap[order]
    chance = (1 - np.searchsorted(moves, gap, side="right") / count) / 2
    changed = (exact.argmax(1) != other.argmax(1))[order]
    # k rows rechecked: the predicted changes and the changes counted among the rest.
    predicted = np.append(np.cumsum(chance[::-1])[::-1], 0.0) / count
    counted = np.append(np.cumsum(changed[::-1])[::-1], 0)
    allowed = 1 - min_agreement
    floor = float(np.quantile(moves, min(1.0, max(0.0, 1 - FLOOR_SHARE * allowed))))
    start = int(np.searchsorted(gap, floor, side="left"))
    ok = (predicted[start:] <= allowed / 2) & (counted[start:] <= int(allowed * count + 1e-9))
    k = start + int(np.argmax(ok))  # ok holds at k = count: every row rechecked
    # Rows below the k-th gap; with none rechecked, still those closer to a tie than any the sample met.
    margin = float(gap[k]) if k < count else float(gap[-1]) + 1.0
    return margin, k / count, float(1 - predicted[k])


def _no_text(scores: np.ndarray) -> np.ndarray:
    """Rows without text: `_scores` gives them NaN."""
    import numpy as np

    return np.isnan(scores[:, 0])


def _changed(exact: np.ndarray, other: np.ndarray) -> int:
    """Rows whose label (the top score) differs between two score matrices; rows without text (NaN) left out."""
    rows = ~_no_text(exact)
    return int((exact[rows].argmax(1) != other[rows].argmax(1)).sum())


def _encoded(scorer: ModelScorer, texts: pa.Table) -> EncodedChunk:
    """The texts tokenized and batched as the run does it for this model."""
    from ..plan import Chunk
    from .core import ScoringCore

    return ScoringCore([scorer]).encoders.encode(Chunk(0, 0, texts), []).items[0]


def _scores(scorer: ModelScorer, work: EncodedChunk) -> np.ndarray:
    """Each row's scores, every label (the head's function applied, a long text's windows folded in, as the run
    computes them), float64; NaN for a row without text."""
    import numpy as np

    scores = np.array(scorer.run(work).scores, dtype=np.float64).reshape(len(work.valid), -1)
    scores[~work.valid] = np.nan
    return scores

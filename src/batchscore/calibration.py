"""--precision fastest, the job's step before its first chunk (DESIGN.md): a sample of the input's own rows, each
such model calibrated on it (scoring/calibrate.py), the choice recorded in the output or taken from it
(output/calibration.py), and the run's models in the precisions chosen.

Only a writer that will score anything gets here: a rerun of a complete output scores nothing and calibrates
nothing. Under torchrun / accelerate launch, rank 0 settles the choice and the other ranks read its record.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any, Callable

from .errors import OutputError
from .options import CALIBRATION_ROWS, DEFAULT_MIN_AGREEMENT

PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # what a calibration may choose

if TYPE_CHECKING:
    import pyarrow as pa

    from .config import JobConfig
    from .output import Output
    from .plan import Plan, Source
    from .scoring import Scorers
    from .scoring.models import ModelScorer

log = logging.getLogger(__name__)

# The sample: SPANS runs of rows evenly spaced over an input that can be read from any row (Parquet, saved
# datasets, tables); else every k-th row of the first SCAN_FACTOR x N rows, not to read a whole CSV twice.
SPANS = 10
SCAN_FACTOR = 50
# Calibrating scores the sample in two or three precisions, about two to three times the sample's rows in fp32's
# time; a faster precision saves 20% to 50% of the rest, so an input under this many times the sample would lose.
ROWS_PER_SAMPLE_ROW = 10
# The CPU flags that decide which precisions run natively, kept in the record beside the choice.
DECISIVE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


def min_agreement(cfg: JobConfig) -> float:
    return DEFAULT_MIN_AGREEMENT if cfg.min_agreement is None else cfg.min_agreement


def calibrating(scorers: Scorers) -> list[int]:
    """The numbers of the run's models that --precision fastest asks to calibrate."""
    return [n for n, model in enumerate(scorers.models) if model.rules.spec.precision == "fastest"]


def settle(
    cfg: JobConfig, scorers: Scorers, output: Output, open_source: Callable[[], Source], plan: Plan
) -> tuple[dict[str, Any] | None, list[ModelScorer]]:
    """The record of the precisions the output's writers use (calibrating first where there is none yet) and the
    run's models in them; None and the models as they are when no model asks for --precision fastest. The input
    is opened again (`open_source`) only to calibrate: a writer that takes a recorded choice never reads it."""
    which = calibrating(scorers)
    if not which:
        return None, scorers.models
    from .output.calibration import record, recorded

    accelerator = scorers.models[0].loaded.accelerator
    ranks = accelerator.num_processes > 1
    chosen: dict[int, ModelScorer] = {}
    settled: dict[str, Any] = {}
    if accelerator.is_main_process:
        # A whole --overwrite starts the output afresh: its old record goes with it.
        fresh = plan.overwrite == "all"
        found = None if fresh else recorded(output)
        if found is not None and _fits(found, cfg, scorers):
            settled = found
        else:
            mine, chosen = _calibrate(cfg, scorers, which, open_source(), plan)
            settled = record(output, mine, replace=fresh or found is not None)
    if ranks:
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            settled = recorded(output) or {}
            if not _fits(settled, cfg, scorers):
                raise OutputError(
                    f"Rank 0 recorded no usable calibration in '{output.layout.url()}'; put the output where "
                    "every rank sees rank 0's writes (a shared disk or an object store) and rerun."
                )
    models = list(scorers.models)
    for n in which:
        entry = settled["models"][n]
        precision, margin = entry["precision"], _margin(entry)
        model = chosen.get(n)
        if model is None or model.loaded.precision != precision or model.recheck_margin != (margin or None):
            writer = "another writer of this output calibrated it first" if chosen else "the output records"
            rechecks = f", rows within {margin:.3g} of a tie rechecked in fp32" if margin else ""
            log.info(
                f"{_named(models[n], len(models))}precision {precision}{rechecks}, as {writer} (--precision fastest)."
            )
            model = _in(models[n], precision, margin)
        models[n] = model
    return settled, models


def sample(
    source: Source, column: str, rows: int, limit: int | None, num_rows: int | None
) -> tuple[pa.Table, int | None]:
    """Up to `rows` texts of `column` (nulls and empty texts left out), spread over the input; and the input's
    row count where it is known (after --limit), or the sample's reading saw its end."""
    import pyarrow as pa

    texts: list[str] = []
    total: int | None = None
    if source.read_rows is not None and num_rows:
        total = min(num_rows, limit) if limit else num_rows
        spans = min(SPANS, total)
        each = -(-rows // spans)
        starts = [span * total // spans for span in range(spans)] + [total]
        for start, following in zip(starts, starts[1:]):
            for piece in source.read_rows([column], start, min(following, start + each)):
                texts.extend(_texts(piece, column))
    else:
        scan = rows * SCAN_FACTOR if limit is None else min(limit, rows * SCAN_FACTOR)
        seen: list[str] = []
        count = 0
        for piece in source.batches([column]):
            piece = piece.slice(0, scan - count)
            count += piece.num_rows
            seen.extend(_texts(piece, column))
            if count >= scan:
                break
        if count < scan or scan == limit:  # read to its end, or to --limit: the rows the run will read
            total = count
        step = max(1, len(seen) // rows)
        texts = seen[::step]
    return pa.table({column: pa.array(texts[:rows], pa.string())}), total


def _texts(piece: Any, column: str) -> list[str]:
    return [t for t in piece.column(column).to_pylist() if isinstance(t, str) and t.strip()]


def _calibrate(
    cfg: JobConfig, scorers: Scorers, which: list[int], source: Source, plan: Plan
) -> tuple[dict[str, Any], dict[int, ModelScorer]]:
    """Calibrate each model of `which` on one sample; the record to keep and the models in their choices."""
    import torch

    from .scoring.calibrate import EXACT, Choice, calibrate
    from .scoring.cpu import cpu_flags

    bar = min_agreement(cfg)
    column = scorers.models[which[0]].rules.text_column
    wanted = cfg.calibration_rows or CALIBRATION_ROWS
    texts, total = sample(source, column, wanted, cfg.limit, plan.num_rows)
    small = total is not None and total < ROWS_PER_SAMPLE_ROW * wanted
    entries: list[dict[str, Any] | None] = [None] * len(scorers.models)
    chosen: dict[int, ModelScorer] = {}
    for n in which:
        model = scorers.models[n]
        if texts.num_rows == 0 or small:
            why = (
                f"the input's {total:,} rows are fewer than {ROWS_PER_SAMPLE_ROW} x --calibration-rows {wanted:,}, "
                "too few to win back what calibrating costs (a smaller --calibration-rows calibrates anyway)"
                if small
                else "the input has no text to calibrate on"
            )
            choice, chosen[n] = Choice(EXACT, reason=why), model
            log.info(f"{_named(model, len(entries))}precision fp32: {why}.")
        else:
            choice, chosen[n] = calibrate(model, texts, bar)
            log.info(
                f"{_named(model, len(entries))}precision calibrated on {texts.num_rows:,} rows of the input: "
                f"{choice.summary(bar)}."
            )
        entries[n] = {"model": model.model_id, **choice.record()}
    device = scorers.models[0].loaded.device.type
    facts: dict[str, Any] = {"device": device, "host": socket.gethostname()}
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
    else:
        facts["cpu_flags"] = sorted(set(DECISIVE_FLAGS) & cpu_flags())
    return {"min_agreement": bar, "sample_rows": texts.num_rows, **facts, "models": entries}, chosen


def _fits(found: dict[str, Any], cfg: JobConfig, scorers: Scorers) -> bool:
    """A record made for this run's request: its bar, and a choice for each model that asks for one."""
    entries = found.get("models")
    if found.get("min_agreement") != min_agreement(cfg) or not isinstance(entries, list):
        return False
    if len(entries) != len(scorers.models):
        return False
    return all(
        isinstance(entries[n], dict)
        and entries[n].get("model") == scorers.models[n].model_id
        and entries[n].get("precision") in PRECISIONS
        for n in calibrating(scorers)
    )


def _margin(entry: dict[str, Any]) -> float | None:
    """The recorded recheck margin (scoring/models.Recheck); None where there is none (fp32, or recorded before
    rechecks were). ModelScorer drops a margin of 0 or less."""
    margin = entry.get("recheck_margin")
    return float(margin) if isinstance(margin, (int, float)) else None


def _in(model: ModelScorer, precision: str, margin: float | None) -> ModelScorer:
    from .scoring.calibrate import in_precision
    from .scoring.load import warn_slow_bf16
    from .scoring.models import ModelScorer, Recheck

    if precision == "bf16" and model.loaded.device.type == "cpu":
        warn_slow_bf16()  # recorded where bf16 was native; this shard's CPU may not be
    recheck = None if margin is None or precision == "fp32" else Recheck(model.loaded, margin)
    return ModelScorer(in_precision(model.loaded, precision), model.rules, recheck)


def _named(model: ModelScorer, count: int) -> str:
    return f"Model {model.model_id}: " if count > 1 else ""

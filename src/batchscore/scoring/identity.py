"""What a loaded model's scores depend on, read from its `ModelSpec` and what the load resolved: its part of the
run's identity (which outputs it may resume) and of the result cache's (which cached scores it may take)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .heads import SIGMOID

if TYPE_CHECKING:
    from .models import ModelScorer


def run_part(scorer: ModelScorer) -> dict[str, Any]:
    """The model's part of the run identity. Keys appear only where they change results, so that outputs written
    before an option existed keep their identity: the prefix when set, the window options in window mode, the
    threshold for a multi-label head (only its `labels` column depends on it)."""
    loaded, spec = scorer.loaded, scorer.rules.spec
    identity: dict[str, Any] = {
        "model": scorer.fingerprint,
        "top_k": spec.top_k,
        **({"result_prefix": spec.prefix} if spec.prefix else {}),
        "max_length": loaded.max_length,
        # --precision fastest: the request (with the run's --min-agreement, job.py); each writer of the output
        # scores in the precision the output's record names (output/calibration.py).
        "precision": "fastest" if spec.precision == "fastest" else loaded.precision,
    }
    if scorer.rules.windowed:
        identity["long_text"] = spec.window_options()
    if scorer.function == SIGMOID:
        identity["threshold"] = spec.threshold
    return identity


def cache_part(scorer: ModelScorer, cache_format: int) -> dict[str, Any]:
    """Everything that changes a row's cached scores: the model by content (its tokenizer files included), its
    labels and head function, the max length, the precision and the device kind (bf16 on a GPU and on a CPU
    differ), the margin under which rows are rechecked in fp32 where there is one, and the window options. top_k
    and the threshold only choose from the kept scores; the batch size only regroups rows (see docs/cache.md for
    what that changes)."""
    loaded = scorer.loaded
    identity: dict[str, Any] = {
        "format": cache_format,
        "model": scorer.fingerprint,
        "labels": list(loaded.labels),
        "head": scorer.function,
        "max_length": loaded.max_length,
        "precision": loaded.precision,
        "device": loaded.device.type,
    }
    if scorer.recheck_margin is not None:
        identity["recheck_margin"] = scorer.recheck_margin
    if scorer.rules.windowed:
        identity["long_text"] = scorer.rules.spec.window_options(cached_only=True)
    return identity

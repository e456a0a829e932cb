"""Heads: logits -> label, score (and every label's score), exactly as `transformers.pipeline("text-classification")`
computes them; a long text's window scores folded into its row's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    from transformers import PretrainedConfig

SIGMOID, SOFTMAX, NONE = "sigmoid", "softmax", "none"


@dataclass
class WindowScores:
    """--window-scores: each window's own scores, the row it belongs to and its character span in the text."""

    scores: np.ndarray  # [windows, labels]
    row: np.ndarray
    spans: np.ndarray


@dataclass
class RowScores:
    """One model's scores for every row of a chunk, after its head's function (rows without text: zeros): what
    the result columns are built from, whether the rows were scored now or taken from the result cache."""

    scores: np.ndarray  # [rows, labels] in label order; with --long-text window, the windows' aggregated
    truncated: np.ndarray  # int64 per row: its text tokens never scored
    windows: np.ndarray | None = None  # --long-text window: the windows scored for each row; else None
    per_window: WindowScores | None = None  # --window-scores only


def score_function(config: PretrainedConfig) -> str:
    """The pipeline's default choice, in the pipeline's order of checks."""
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        return NONE
    if problem == "multi_label_classification" or config.num_labels == 1:
        return SIGMOID
    if problem == "single_label_classification" or config.num_labels > 1:
        return SOFTMAX
    return getattr(config, "function_to_apply", None) or NONE


def apply(function: str, logits: np.ndarray) -> np.ndarray:
    """Row-wise scores in float32, the same formulas the pipeline applies in numpy."""
    logits = logits.astype(np.float32, copy=False)
    if function == SIGMOID:
        return 1.0 / (1.0 + np.exp(-logits))
    if function == SOFTMAX:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return logits


def top_two_gap(logits: np.ndarray) -> np.ndarray:
    """Per row, how far its top logit is above the runner-up: how close its label is to changing. A head of one
    score has no runner-up: infinitely far."""
    if logits.shape[-1] < 2:
        return np.full(logits.shape[0], np.inf)
    two = np.partition(logits, -2, axis=-1)[:, -2:]
    return two[:, 1] - two[:, 0]


def as_logits(function: str, scores: np.ndarray) -> np.ndarray:
    """Scores back on the logits' scale, as far as their differences go: the top-two gap of the result equals
    that of the logits the scores came from (softmax: log scores differ by the logits' differences; sigmoid:
    its inverse; none: the logits themselves). Float64; a score rounded to 0 or 1 comes back large, not infinite.
    """
    scores = scores.astype(np.float64)
    tiny = np.finfo(np.float32).tiny
    if function == SOFTMAX:
        return np.log(np.maximum(scores, tiny))
    if function == SIGMOID:
        held = np.clip(scores, tiny, 1 - np.finfo(np.float32).eps)
        return np.log(held) - np.log1p(-held)
    return scores


RESULT_NAMES = ("label", "score", "scores")
LABELS = "labels"  # a multi-label (sigmoid) head's column: every label scoring at least the threshold


def result_names(top_k: str, prefix: str | None = None, multi_label: bool = False) -> list[str]:
    """The output's result columns, in order: `prefix` + label, score, labels (a multi-label head), scores
    (top_k=all)."""
    names = ["label", "score", *([LABELS] if multi_label else []), *(["scores"] if top_k == "all" else [])]
    return [(prefix or "") + name for name in names]


def result_columns(
    scores: np.ndarray,
    valid: np.ndarray,
    labels: list[str],
    top_k: str,
    prefix: str | None = None,
    threshold: float | None = None,
) -> dict:
    """Arrow columns for one chunk, keyed by `result_names`: label, score, for top_k=all scores, and given a
    `threshold` (a multi-label head) labels.

    `scores` has a row for every row of the chunk; rows where `valid` is False
    (no text) get nulls. `scores` lists every label, best first, like
    `pipeline(..., top_k=None)`; its entries keep the pipeline's own keys,
    label and score, whatever the prefix.
    """
    import pyarrow as pa

    invalid = ~valid
    names = np.asarray(labels, dtype=object)
    best = scores.argmax(axis=-1) if len(scores) else np.zeros(0, dtype=np.int64)
    label, score, listing = result_names("all", prefix)
    columns = {
        label: pa.array(names[best], type=pa.string(), mask=invalid),
        score: pa.array(
            scores.max(axis=-1) if len(scores) else np.zeros(0, np.float32), type=pa.float32(), mask=invalid
        ),
    }
    if top_k == "all":
        rows, width = scores.shape
        # Stable descending sort: ties keep label order, like Python's sort(reverse=True).
        order = np.argsort(-scores, axis=-1, kind="stable")
        entries = pa.StructArray.from_arrays(
            [
                pa.array(names[order].ravel(), pa.string()),
                pa.array(np.take_along_axis(scores, order, axis=-1).ravel(), pa.float32()),
            ],
            names=["label", "score"],
        )
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
        columns[listing] = pa.ListArray.from_arrays(offsets, entries, mask=pa.array(invalid))
    if threshold is not None:
        columns[(prefix or "") + LABELS] = labels_at_least(scores, valid, names, threshold)
    return columns


def labels_at_least(scores: np.ndarray, valid: np.ndarray, names: np.ndarray, threshold: float) -> pa.Array:
    """list<string>: each row's labels scoring at least `threshold`, in label order; null for rows without text.

    Compared in float64, where every float32 score is exact: a reader comparing the written score with the
    threshold (a Python float) finds the same labels.
    """
    import pyarrow as pa

    over = (scores.astype(np.float64) >= threshold).reshape(len(valid), len(names)) & valid[:, None]
    offsets = np.zeros(len(valid) + 1, dtype=np.int32)
    np.cumsum(over.sum(axis=1), out=offsets[1:])
    values = pa.array(np.broadcast_to(names, over.shape)[over], pa.string())  # row by row, label order within
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))


def result_fields(top_k: str, prefix: str | None = None, multi_label: bool = False) -> list:
    import pyarrow as pa

    label, score, listing = result_names("all", prefix)
    fields = [pa.field(label, pa.string()), pa.field(score, pa.float32())]
    if multi_label:
        fields.append(pa.field((prefix or "") + LABELS, pa.list_(pa.string())))
    if top_k == "all":
        entry = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])
        fields.append(pa.field(listing, pa.list_(entry)))
    return fields


# --- long texts: window scores folded into one row ------------------------------------------------------------

MEAN, MAX = "mean", "max"
WINDOW_NAMES = ("windows", "window_scores")


def aggregate(scores: np.ndarray, row: np.ndarray, weights: np.ndarray, rows: int, how: str) -> np.ndarray:
    """Per-row scores [rows, labels] from per-window scores (after the score function), float32.

    mean: weighted by each window's text tokens (a window of none counts as one); max: per label, the highest.
    Summed in float64, so a row of one window gets exactly that window's scores (its truncate-mode result).
    """
    width = scores.shape[1]
    if how == MAX:
        out = np.full((rows, width), -np.inf)
        np.maximum.at(out, row, scores.astype(np.float64))
        out[~np.isfinite(out)] = 0.0  # rows without windows: no text, null results
        return out.astype(np.float32)
    weight = np.maximum(weights, 1).astype(np.float64)
    out = np.zeros((rows, width))
    np.add.at(out, row, scores.astype(np.float64) * weight[:, None])
    totals = np.bincount(row, weights=weight, minlength=rows)
    return (out / np.where(totals > 0, totals, 1.0)[:, None]).astype(np.float32)


def window_columns(
    scores: np.ndarray,
    row: np.ndarray,
    spans: np.ndarray | None,
    valid: np.ndarray,
    labels: list[str],
    prefix: str | None,
) -> dict[str, pa.Array]:
    """`windows` (how many windows each row's text had, null without text) and, given the spans,
    `window_scores`: each window's character span in the text, its best label and that label's score."""
    import pyarrow as pa

    counts = np.bincount(row, minlength=len(valid))
    listing = (prefix or "") + WINDOW_NAMES[1]
    columns = window_counts(counts, valid, prefix)
    if spans is not None:
        names = np.asarray(labels, dtype=object)
        best = scores.argmax(axis=-1) if len(scores) else np.zeros(0, dtype=np.int64)
        entries = pa.StructArray.from_arrays(
            [
                pa.array(spans[:, 0], pa.int32()),
                pa.array(spans[:, 1], pa.int32()),
                pa.array(names[best], pa.string()),
                pa.array(scores.max(axis=-1) if len(scores) else np.zeros(0, np.float32), pa.float32()),
            ],
            fields=_window_entry(),
        )
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        columns[listing] = pa.ListArray.from_arrays(offsets, entries, mask=pa.array(~valid))
    return columns


def window_counts(counts: np.ndarray, valid: np.ndarray, prefix: str | None) -> dict[str, pa.Array]:
    """`windows`: how many windows each row's text had (null without text)."""
    import pyarrow as pa

    name = (prefix or "") + WINDOW_NAMES[0]
    return {name: pa.array(np.asarray(counts, np.int32), type=pa.int32(), mask=~valid)}


def window_fields(prefix: str | None, spans: bool) -> list[pa.Field]:
    import pyarrow as pa

    windows, listing = ((prefix or "") + name for name in WINDOW_NAMES)
    fields = [pa.field(windows, pa.int32())]
    if spans:
        fields.append(pa.field(listing, pa.list_(pa.struct(_window_entry()))))
    return fields


def _window_entry() -> list[pa.Field]:
    """One window of `window_scores`: its character span in the text, its best label and that label's score."""
    import pyarrow as pa

    return [
        pa.field("start", pa.int32()),
        pa.field("end", pa.int32()),
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
    ]

"""Logits -> label, score (and every label's score), exactly as
`transformers.pipeline("text-classification")` computes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SIGMOID, SOFTMAX, NONE = "sigmoid", "softmax", "none"


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


RESULT_NAMES = ("label", "score", "scores")


def result_names(top_k: str, prefix: str | None = None) -> list[str]:
    """The output's result columns, in order: `prefix` + label, score (and scores for top_k=all)."""
    return [(prefix or "") + name for name in RESULT_NAMES[: 3 if top_k == "all" else 2]]


def result_columns(
    scores: np.ndarray, valid: np.ndarray, labels: list[str], top_k: str, prefix: str | None = None
) -> dict:
    """Arrow columns for one chunk, keyed by `result_names`: label, score and, for top_k=all, scores.

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
    return columns


def result_fields(top_k: str, prefix: str | None = None) -> list:
    import pyarrow as pa

    label, score, listing = result_names("all", prefix)
    fields = [pa.field(label, pa.string()), pa.field(score, pa.float32())]
    if top_k == "all":
        entry = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])
        fields.append(pa.field(listing, pa.list_(entry)))
    return fields

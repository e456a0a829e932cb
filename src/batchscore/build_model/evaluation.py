"""The held-out evaluation: the model against VADER's lexicon on the same sentences."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .vader import Split

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def accuracy_and_macro_f1(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    f1s = []
    for label in (0, 1):
        tp = np.sum((predicted == label) & (truth == label))
        fp = np.sum((predicted == label) & (truth != label))
        fn = np.sum((predicted != label) & (truth == label))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(truth == predicted)), float(np.mean(f1s))


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int = 128,
    batch_size: int = 64,
) -> np.ndarray:
    import torch

    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    out = np.zeros(len(texts), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            inputs = tokenizer.pad({k: [encoded[k][i] for i in rows] for k in encoded.keys()}, return_tensors="pt")
            out[rows] = model(**inputs).logits.argmax(-1).numpy()
    return out


def vader_predict(texts: list[str]) -> np.ndarray:
    """The VADER lexicon's call: compound > 0 is POSITIVE, else NEGATIVE."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.array([int(analyzer.polarity_scores(t)["compound"] > 0) for t in texts])


def evaluation_table(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, split: Split) -> list[dict[str, Any]]:
    rows = []
    for name, sentences in split.test.items():
        texts = [s.text for s in sentences]
        truth = np.array([s.label for s in sentences])
        polar = np.array([abs(s.rating) >= 0.5 for s in sentences])
        ours, vader = predict(model, tokenizer, texts), vader_predict(texts)
        row: dict[str, Any] = {"set": name, "test_sentences": len(texts)}
        for who, pred in (("model", ours), ("vader", vader)):
            row[f"{who}_accuracy"], row[f"{who}_macro_f1"] = accuracy_and_macro_f1(truth, pred)
            row[f"{who}_accuracy_polar"], _ = accuracy_and_macro_f1(truth[polar], pred[polar])
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| held-out set | sentences | model accuracy | VADER accuracy | model macro-F1 | VADER macro-F1 "
        "| model acc. (abs rating >= 0.5) | VADER acc. (abs rating >= 0.5) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['test_sentences']} | {r['model_accuracy']:.3f} | {r['vader_accuracy']:.3f} "
            f"| {r['model_macro_f1']:.3f} | {r['vader_macro_f1']:.3f} | {r['model_accuracy_polar']:.3f} "
            f"| {r['vader_accuracy_polar']:.3f} |"
        )
    mean = {k: np.mean([r[k] for r in rows]) for k in rows[0] if k not in ("set", "test_sentences")}
    lines.append(
        f"| **mean of 4** | {sum(r['test_sentences'] for r in rows)} | **{mean['model_accuracy']:.3f}** "
        f"| {mean['vader_accuracy']:.3f} | {mean['model_macro_f1']:.3f} | {mean['vader_macro_f1']:.3f} "
        f"| {mean['model_accuracy_polar']:.3f} | {mean['vader_accuracy_polar']:.3f} |"
    )
    return "\n".join(lines)

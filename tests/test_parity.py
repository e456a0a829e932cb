"""Scores must equal transformers.pipeline("text-classification"): our oracle."""

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import manifest_of, pipeline_oracle, run_score

WORDS = (
    "the movie was great awful boring brilliant plot acting I loved hated it this so much not really "
    "a an of to and service food delivery late fast cheap broken works perfectly never again would "
    "recommend five stars terrible experience"
).split()
UNICODE = [
    "Très bien, j'adore ce café ☕",
    "素晴らしい映画でした",
    "Отличный продукт!",
    "😀😀 best day ever 🎉",
    "naïve façade — coöperate",
    "Ünïcödé ẞ straße",
    "👍",
    "mañana será mejor",
]


def mixed_texts(n=300, seed=7):
    """Very mixed lengths: empty, whitespace, unicode, short, medium, 10k-character texts."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            texts.append(rng.choice(["", "   ", "\n\t", None]))
        elif kind == 1:
            texts.append(rng.choice(UNICODE))
        elif kind == 2:
            # ~10k characters: far over 512 tokens, must be truncated, not crash.
            texts.append(" ".join(rng.choice(WORDS) for _ in range(1800))[:10_000])
        else:
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3 ** rng.randint(1, 5)))))
    return texts


@pytest.fixture(scope="module")
def texts():
    return mixed_texts()


def score_with_batchscore(tmp_path, model_dir, texts, top_k):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"row": list(range(len(texts))), "text": pa.array(texts, pa.string())}), src)
    out = tmp_path / f"out-{top_k}"
    # Small chunks and a small token budget: many chunks, many sorted batches to reorder.
    result = run_score(src, model_dir, out, "--top-k", top_k, "--chunk-rows", "64", "--batch-tokens", "2048")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column("row").to_pylist() == list(range(len(texts)))
    return table


def scoreable(text):
    return text is not None and text.strip() != ""


@pytest.mark.parametrize("model_fixture", ["tiny_model", "multilabel_model", "three_label_model", "one_label_model"])
def test_top1_matches_pipeline(model_fixture, texts, tmp_path, request):
    model_dir = request.getfixturevalue(model_fixture)
    table = score_with_batchscore(tmp_path, model_dir, texts, "1")
    labels, scores = table.column("label").to_pylist(), table.column("score").to_pylist()
    idx = [i for i, t in enumerate(texts) if scoreable(t)]
    expected = pipeline_oracle(model_dir, [texts[i] for i in idx], batch_size=8)
    for i, exp in zip(idx, expected):
        assert labels[i] == exp["label"], (i, texts[i][:50])
        assert scores[i] == pytest.approx(exp["score"], abs=1e-5), (i, texts[i][:50])
    # Rows without text are kept, with nulls, never dropped.
    for i, t in enumerate(texts):
        if not scoreable(t):
            assert labels[i] is None and scores[i] is None


@pytest.mark.parametrize("model_fixture", ["tiny_model", "multilabel_model", "three_label_model", "one_label_model"])
def test_all_scores_match_pipeline(model_fixture, texts, tmp_path, request):
    model_dir = request.getfixturevalue(model_fixture)
    table = score_with_batchscore(tmp_path, model_dir, texts, "all")
    got = table.column("scores").to_pylist()
    idx = [i for i, t in enumerate(texts) if scoreable(t)]
    expected = pipeline_oracle(model_dir, [texts[i] for i in idx], top_k=None, batch_size=8)
    for i, exp in zip(idx, expected):
        assert [e["label"] for e in got[i]] == [e["label"] for e in exp], i
        np.testing.assert_allclose([e["score"] for e in got[i]], [e["score"] for e in exp], atol=1e-5)
        # top-1 columns agree with the first entry of the full list
        assert table.column("label")[i].as_py() == exp[0]["label"]
    assert all(got[i] is None for i, t in enumerate(texts) if not scoreable(t))


def test_truncated_rows_and_their_dropped_tokens_are_counted(tiny_model, texts, tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), src)
    result = run_score(src, tiny_model, tmp_path / "out", "--chunk-rows", "64")
    assert result.exit_code == 0, result.output
    manifest = manifest_of(tmp_path / "out")
    from transformers import AutoTokenizer

    # Independently: each long text's tokens without truncation, less the 510 text tokens a 512-token window holds.
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text_tokens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts if scoreable(t)]
    over = [n for n in text_tokens if n > 512 - 2]
    assert len(over) > 0
    assert manifest["truncated_rows"] == len(over)
    assert manifest["truncated_tokens"] == sum(n - (512 - 2) for n in over) > 0
    dropped = f"{len(over)} truncated: {manifest['truncated_tokens']:,} tokens past --max-length not scored"
    assert dropped in result.stderr, result.stderr
    assert manifest["empty_text_rows"] == sum(1 for t in texts if not scoreable(t))
    assert manifest["rows"] == len(texts)

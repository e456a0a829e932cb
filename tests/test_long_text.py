"""--long-text window: every window of a long text scored, then folded into one row (issue 21).

The oracle is transformers.pipeline: each window the tokenizer makes
(`return_overflowing_tokens=True, stride=overlap`) is decoded and scored by the
pipeline alone, and the window scores are averaged (weighted by text tokens) or
maxed here, in the test, by hand.
"""

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, build_model, manifest_of, pipeline_oracle, run_score

MAX_LENGTH, OVERLAP = 64, 16
WORDS = "good bad movie plot actor great awful slow fun boring story music scene ending love hate".split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory):
    """One output, problem_type regression: the pipeline's function is none (raw values)."""
    return build_model(
        tmp_path_factory.mktemp("regression"), "distilbert", num_labels=1, problem_type="regression", labels=["VALUE"]
    )


def score_windows(tmp_path, model, texts, *extra, name="out"):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), src)
    out = tmp_path / name
    args = ["--max-length", str(MAX_LENGTH), "--window-overlap", str(OVERLAP), "--top-k", "all", *extra]
    result = run_score(src, model, out, *args)
    assert result.exit_code == 0, result.output
    return pq.read_table(out), result


def test_texts_that_fit_one_window_score_exactly_as_truncate(tiny_model, tmp_path):
    rng = random.Random(1)
    texts = [words(rng, rng.randint(1, 60)) for _ in range(150)] + [None, " "]
    truncate, _ = score_windows(tmp_path, tiny_model, texts, name="truncate")
    window, _ = score_windows(tmp_path, tiny_model, texts, "--long-text", "window", name="window")
    for column in ("label", "score", "scores"):
        assert window.column(column).equals(truncate.column(column)), column  # bit for bit
    assert window.column("windows").to_pylist() == [1] * 150 + [None, None]


def oracle(model, texts, how):
    """Per text: the pipeline's score of each window, then the token-weighted mean or the per-label max."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    expected = []
    for text in texts:
        ids = tok(text, truncation=True, max_length=MAX_LENGTH, stride=OVERLAP, return_overflowing_tokens=True)
        windows = ids["input_ids"]
        decoded = [tok.decode(w, skip_special_tokens=True) for w in windows]
        assert [tok(d)["input_ids"] for d in decoded] == windows  # the decoded window is the window
        results = pipeline_oracle(model, decoded, max_length=MAX_LENGTH, top_k=None)
        labels = sorted(r["label"] for r in results[0])
        scores = np.array([[next(r["score"] for r in res if r["label"] == lab) for lab in labels] for res in results])
        weights = np.array([len(w) - 2 for w in windows], dtype=np.float64)
        folded = (scores * weights[:, None]).sum(0) / weights.sum() if how == "mean" else scores.max(0)
        expected.append((dict(zip(labels, folded)), len(windows)))
    return expected


@pytest.mark.parametrize("how", ["mean", "max"])
@pytest.mark.parametrize("model_fixture", ["tiny_model", "multilabel_model", "regression_model"])
def test_long_texts_match_the_pipeline_window_by_window(model_fixture, how, tmp_path, request):
    model = request.getfixturevalue(model_fixture)
    rng = random.Random(2)
    texts = [words(rng, n) for n in (40, 200, 61, 333, 90)]
    table, _ = score_windows(
        tmp_path, model, texts, "--long-text", "window", "--window-overlap", str(OVERLAP), "--aggregate", how
    )
    for row, (expected, windows) in zip(table.to_pylist(), oracle(model, texts, how)):
        assert row["windows"] == windows
        got = {entry["label"]: entry["score"] for entry in row["scores"]}
        assert got.keys() == expected.keys()
        for label, score in expected.items():
            assert abs(got[label] - score) <= 1e-5, (label, got[label], score)
        best = max(expected, key=expected.get)
        assert row["label"] == best and abs(row["score"] - expected[best]) <= 1e-5
    assert sum(1 for t in table.column("windows").to_pylist() if t > 1) == 3  # 200, 333 and 90 words


def test_window_scores_point_at_their_passage(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    rng = random.Random(3)
    texts = ["  " + words(rng, 150) + ".", words(rng, 20)]
    table, _ = score_windows(
        tmp_path, tiny_model, texts, "--long-text", "window", "--window-overlap", str(OVERLAP), "--window-scores"
    )
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    for text, entries in zip(texts, table.column("window_scores").to_pylist()):
        windows = tok(text, truncation=True, max_length=MAX_LENGTH, stride=OVERLAP, return_overflowing_tokens=True)
        assert len(entries) == len(windows["input_ids"])
        for entry, ids in zip(entries, windows["input_ids"]):
            passage = text[entry["start"] : entry["end"]]
            assert passage == passage.strip() and passage  # starts and ends on a word
            assert tok(passage)["input_ids"] == ids  # the characters are the window's tokens
            assert entry["label"] in ("NEGATIVE", "POSITIVE") and 0.5 <= entry["score"] <= 1


def test_max_windows_is_counted(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    rng = random.Random(4)
    texts = [words(rng, 400), words(rng, 30), words(rng, 250)]
    table, _ = score_windows(
        tmp_path, tiny_model, texts, "--long-text", "window", "--window-overlap", str(OVERLAP), "--max-windows", "3"
    )
    assert table.column("windows").to_pylist() == [3, 1, 3]
    # Three windows of 62 text tokens, each after the first repeating 16 of the one before: 62 + 2 * 46 tokens
    # seen; the rest of each long text is never scored.
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    seen = (MAX_LENGTH - 2) + 2 * (MAX_LENGTH - 2 - OVERLAP)
    unseen = sum(len(tok(t, add_special_tokens=False)["input_ids"]) - seen for t in (texts[0], texts[2]))
    manifest = manifest_of(tmp_path / "out")
    assert manifest["truncated_rows"] == 2 and manifest["truncated_tokens"] == unseen
    assert manifest["windows"] == 7 and manifest["windowed_rows"] == 2


def test_an_overlap_that_leaves_no_new_text_is_a_usage_error(tiny_model, tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["some text"]}), src)
    result = run_score(src, tiny_model, tmp_path / "out", "--long-text", "window", "--max-length", "64")
    assert result.exit_code == 2
    assert_error(result, 2, "--window-overlap 64", "62 text tokens", "smaller overlap")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("part-*"))

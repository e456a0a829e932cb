"""Counts from the row, not from the path it took (issue 33): truncation and window counts are the same whether a
row's result came from the model or from the result cache, repeats included; a text cut to a prefix counts as a
truncated row whatever cut it.

Expected counts come from the tokenizer over the input (or from a run without the cache), never from the code
under test.
"""

import glob
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_ok, invoke, manifest_of, pipeline_oracle, run_score, write_texts

MAX_LENGTH, OVERLAP = 64, 16
ROOM = MAX_LENGTH - 2  # a window's text tokens
WORDS = "good bad movie plot actor great awful slow fun boring story music scene ending love hate".split()
COUNTS = ("truncated_rows", "truncated_tokens", "windows", "windowed_rows")


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def corpus() -> list:
    """Short and long texts (up to five windows of 64 tokens), each long one repeated inside a chunk and across
    chunks, and rows without text."""
    rng = random.Random(33)
    long = [words(rng, n) for n in (70, 150, 400)]
    short = [words(rng, rng.randint(3, 40)) for _ in range(20)]
    texts = short + long + long[:2] + [None, " "] + long + short[:5] + [long[0]] * 3
    rng.shuffle(texts)
    return texts


def expected_counts(model, texts, mode, max_windows=4) -> dict:
    """What a run over `texts` must count, from the tokenizer alone: every row, repeats included."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    counts = dict.fromkeys(COUNTS, 0)
    for text in texts:
        if text is None or not text.strip():
            continue
        tokens = len(tok(text, add_special_tokens=False)["input_ids"])
        if mode == "truncate":
            unseen = max(0, tokens - ROOM)
        else:
            windows = 1 + max(0, -(-(tokens - ROOM) // (ROOM - OVERLAP)))
            kept = min(windows, max_windows)
            unseen = max(0, tokens - ROOM - (kept - 1) * (ROOM - OVERLAP))
            counts["windows"] += kept
            counts["windowed_rows"] += kept > 1
        counts["truncated_rows"] += unseen > 0
        counts["truncated_tokens"] += unseen
    return counts


@pytest.mark.parametrize("mode", ["truncate", "window"])
def test_warm_and_cold_cache_runs_count_what_a_run_without_cache_counts(tmp_path, tiny_model, mode):
    texts = corpus()
    data = write_texts(tmp_path / "in.parquet", texts)
    args = ["--max-length", str(MAX_LENGTH), "--chunk-rows", "20", "--long-text", mode]
    if mode == "window":
        args += ["--window-overlap", str(OVERLAP), "--max-windows", "4"]
    cache = tmp_path / "cache"
    # A first run over half the texts, so that the cache holds two files and compaction merges them.
    half = write_texts(tmp_path / "half.parquet", texts[:30])
    assert_ok(run_score(half, tiny_model, tmp_path / "half", *args, "--cache", cache))
    runs = {}
    for name, extra in (("plain", []), ("cold", ["--cache", cache]), ("warm", ["--cache", cache])):
        if name == "warm":
            assert_ok(invoke(["cache", "compact", cache]))  # merged entries keep their counts
            assert len(glob.glob(str(cache / "*" / "*.parquet"))) == 1
        result = assert_ok(run_score(data, tiny_model, tmp_path / name, *args, *extra))
        runs[name] = (manifest_of(tmp_path / name), result.stderr)
    expected = expected_counts(tiny_model, texts, mode)
    assert expected["truncated_rows"] > 0 and (mode == "truncate" or expected["windowed_rows"] > 0)
    for name, (manifest, stderr) in runs.items():
        assert {k: manifest[k] for k in COUNTS} == expected, name
        assert f"{expected['truncated_rows']} truncated: {expected['truncated_tokens']:,} tokens" in stderr, name
    assert runs["warm"][0]["rows_scored"] == 0  # every row from the cache, and still counted


def test_a_cache_written_with_several_models_counts_each_models_own_truncation(tmp_path, tiny_model):
    """Two models: the counts, the run's and each model's (the manifest's `models`), warm as cold as without the
    cache."""
    texts = corpus()
    data = write_texts(tmp_path / "in.parquet", texts)
    both = ["--model", tiny_model, "--result-prefix", "a_", "--model", tiny_model, "--result-prefix", "b_"]
    cache = tmp_path / "cache"
    for name, extra in (("plain", []), ("cold", ["--cache", cache]), ("warm", ["--cache", cache])):
        common = ["score", data, "--no-progress", "--max-length", str(MAX_LENGTH), "--chunk-rows", "20", *both]
        assert_ok(invoke([*common, "-o", tmp_path / name, *extra]))
    plain = manifest_of(tmp_path / "plain")
    for name in ("cold", "warm"):
        got = manifest_of(tmp_path / name)
        assert {k: got[k] for k in COUNTS} == {k: plain[k] for k in COUNTS}, name
        for each, alone in zip(got["models"], plain["models"], strict=True):
            assert {k: each[k] for k in COUNTS} == {k: alone[k] for k in COUNTS}, name
    assert plain["truncated_rows"] == expected_counts(tiny_model, texts, "truncate")["truncated_rows"]


def giant(kind: str, size: int) -> str:
    """A text of no whitespace: the WordPiece tokenizer makes one [UNK] of it, tokenized whole."""
    if kind == "one letter":
        return "a" * size
    rng = random.Random(9)
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=size))


@pytest.mark.parametrize("kind", ["one letter", "random letters"])
@pytest.mark.parametrize("mode", ["truncate", "window"])
def test_a_one_token_giant_cut_to_a_prefix_is_a_truncated_row(tmp_path, tiny_model, kind, mode):
    """A 3 MB text without whitespace is cut to a prefix (it is never tokenized whole): the tokens the cut left out
    are counted, and so is the row. Its score is the pipeline's over the whole text."""
    texts = [giant(kind, 3_000_000), "a short one"]
    data = write_texts(tmp_path / "in.parquet", texts)
    args = ["--max-length", str(MAX_LENGTH), "--window-overlap", str(OVERLAP), "--long-text", mode, "--top-k", "all"]
    result = assert_ok(run_score(data, tiny_model, tmp_path / "out", *args))
    manifest = manifest_of(tmp_path / "out")
    assert manifest["truncated_tokens"] > 0
    assert manifest["truncated_rows"] == 1
    assert f"1 truncated: {manifest['truncated_tokens']:,} tokens" in result.stderr
    got = pq.read_table(tmp_path / "out").column("scores").to_pylist()
    expected = pipeline_oracle(tiny_model, texts, max_length=MAX_LENGTH, top_k=None)
    for row, results in zip(got, expected):
        scores = {entry["label"]: entry["score"] for entry in row}
        assert all(abs(scores[r["label"]] - r["score"]) <= 1e-5 for r in results), (scores, results)


def runs_with_more_tokens() -> list[str]:
    """Texts whose first 20,000 characters hold no whitespace, yet give the model more than one token: a letter run
    followed by words, and words of 150 letters between commas (one [UNK] each, with the commas between). A cut
    inside the run must not end the prefix there."""
    rng = random.Random(5)
    return [
        "a" * 20_000 + " " + words(rng, 3000),
        "x" * 150 + ("," + "x" * 150) * 300 + " " + words(rng, 200),
        "b" * 20_000 + "," + words(rng, 3000),
    ]


@pytest.mark.parametrize("mode", ["truncate", "window"])
def test_a_run_without_whitespace_followed_by_more_tokens_keeps_them(tmp_path, tiny_model, mode):
    """The pipeline's scores over the whole text (truncate), and the windows the whole text's tokens make (window):
    the prefix a long text is cut to holds every token the model sees."""
    texts = runs_with_more_tokens()
    data = write_texts(tmp_path / "in.parquet", texts)
    args = ["--max-length", str(MAX_LENGTH), "--window-overlap", str(OVERLAP), "--long-text", mode, "--top-k", "all"]
    assert_ok(run_score(data, tiny_model, tmp_path / "out", *args, "--max-windows", "4"))
    manifest = manifest_of(tmp_path / "out")
    expected = expected_counts(tiny_model, texts, mode)
    assert manifest["windows"] == expected["windows"]
    assert manifest["truncated_rows"] == expected["truncated_rows"] == len(texts)
    if mode == "truncate":
        got = pq.read_table(tmp_path / "out").column("scores").to_pylist()
        oracle = pipeline_oracle(tiny_model, texts, max_length=MAX_LENGTH, top_k=None)
        for row, results in zip(got, oracle):
            scores = {entry["label"]: entry["score"] for entry in row}
            assert all(abs(scores[r["label"]] - r["score"]) <= 1e-5 for r in results), (scores, results)


def test_one_window_rows_are_bit_identical_to_truncate_beside_long_texts(tmp_path, tiny_model):
    """Rows that fit one window, in chunks that also hold texts of several windows: label, score and scores are
    truncate mode's bit for bit (not only when every text of the chunk fits)."""
    rng = random.Random(21)
    texts = [words(rng, rng.randint(1, 62)) for _ in range(300)] + [words(rng, rng.randint(63, 600)) for _ in range(40)]
    rng.shuffle(texts)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), src)
    tables = {}
    for mode in ("truncate", "window"):
        args = ["--max-length", str(MAX_LENGTH), "--window-overlap", str(OVERLAP), "--top-k", "all"]
        assert_ok(run_score(src, tiny_model, tmp_path / mode, *args, "--long-text", mode, "--batch-tokens", "1024"))
        tables[mode] = pq.read_table(tmp_path / mode)
    one = [i for i, n in enumerate(tables["window"].column("windows").to_pylist()) if n == 1]
    assert 250 < len(one) < len(texts)
    for column in ("label", "score", "scores"):
        window, truncate = tables["window"].column(column).take(one), tables["truncate"].column(column).take(one)
        assert window.equals(truncate), column

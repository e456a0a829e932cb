"""--long-text window: every window of a long text scored, then folded into one row (issue 21).

The oracle is transformers.pipeline: each window the tokenizer makes
(`return_overflowing_tokens=True, stride=overlap`) is decoded and scored by the
pipeline alone, and the window scores are averaged (weighted by text tokens) or
maxed here, in the test, by hand.
"""

import random
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, build_model, manifest_of, pipeline_oracle, run_score, spark_session

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


def oracle(model, texts, how, max_windows=None):
    """Per text: the pipeline's score of each window (the first `max_windows`), then the token-weighted mean
    or the per-label max."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    expected = []
    for text in texts:
        ids = tok(text, truncation=True, max_length=MAX_LENGTH, stride=OVERLAP, return_overflowing_tokens=True)
        windows = ids["input_ids"][:max_windows]
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


def messy_text(rng: random.Random, n: int) -> str:
    """Words with the whitespace, accents, CJK and punctuation a scraped document has."""
    gaps = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \u00a0"]
    extra = ["café", "naïve", "東京", "(plot)", "end.", "u.s.", "don't"]
    return "".join(rng.choice(WORDS + extra) + rng.choice(gaps) for _ in range(n))


def test_a_very_long_text_is_cut_to_a_prefix_that_scores_as_the_whole_text(tiny_model, tmp_path):
    """Texts far past what is scored are tokenized only as far as needed (prefixes.py): the windows, their
    scores and spans, and the count of tokens never scored are those of the whole text."""
    from transformers import AutoTokenizer

    rng = random.Random(5)
    texts = [messy_text(rng, 30_000), words(rng, 40), messy_text(rng, 12_000)]  # ~170k and ~70k characters
    assert min(len(texts[0]), len(texts[2])) > 4 * 16_384  # more than a few of the segments it is counted in
    max_windows = 4
    table, _ = score_windows(
        tmp_path, tiny_model, texts, "--long-text", "window", "--max-windows", str(max_windows), "--window-scores"
    )
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    expected = oracle(tiny_model, texts, "mean", max_windows=max_windows)
    for text, row, (scores, windows) in zip(texts, table.to_pylist(), expected):
        assert row["windows"] == windows
        got = {entry["label"]: entry["score"] for entry in row["scores"]}
        assert all(abs(got[label] - score) <= 1e-5 for label, score in scores.items()), (got, scores)
        whole = tok(text, truncation=True, max_length=MAX_LENGTH, stride=OVERLAP, return_overflowing_tokens=True)
        for entry, ids in zip(row["window_scores"], whole["input_ids"]):
            assert tok(text[entry["start"] : entry["end"]])["input_ids"] == ids
    seen = (MAX_LENGTH - 2) + (max_windows - 1) * (MAX_LENGTH - 2 - OVERLAP)
    unseen = sum(len(tok(t, add_special_tokens=False)["input_ids"]) - seen for t in (texts[0], texts[2]))
    manifest = manifest_of(tmp_path / "out")
    assert manifest["truncated_rows"] == 2 and manifest["truncated_tokens"] == unseen


def test_a_very_long_text_truncated_scores_as_the_pipeline(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    rng = random.Random(6)
    texts = [messy_text(rng, 20_000), words(rng, 10)]
    table, _ = score_windows(tmp_path, tiny_model, texts)
    expected = pipeline_oracle(tiny_model, texts, max_length=MAX_LENGTH, top_k=None)
    for row, results in zip(table.to_pylist(), expected):
        got = {entry["label"]: entry["score"] for entry in row["scores"]}
        assert all(abs(got[r["label"]] - r["score"]) <= 1e-5 for r in results), (got, results)
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    manifest = manifest_of(tmp_path / "out")
    assert manifest["truncated_rows"] == 1
    assert manifest["truncated_tokens"] == len(tok(texts[0], add_special_tokens=False)["input_ids"]) - (MAX_LENGTH - 2)


# Prints the process's own high-water mark (VmHWM) as it exits. Not ru_maxrss: that counts the test process's
# memory too, which the child held for a moment between fork and exec.
REPORT_PEAK = """
import atexit, re, runpy, sys
atexit.register(lambda: print("VmHWM", re.search(r"VmHWM:\\s*(\\d+)", open("/proc/self/status").read())[1]))
sys.argv = ["batchscore", *sys.argv[1:]]
runpy.run_module("batchscore", run_name="__main__")
"""


def peak_rss_mb(args) -> float:
    """Run batchscore in a process of its own; its peak resident memory, in MB."""
    import subprocess
    import sys

    args = [sys.executable, "-c", REPORT_PEAK, "score", *map(str, args), "--no-progress"]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split("VmHWM")[-1]) / 1024


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["window", "truncate"])
def test_a_50_mb_text_takes_the_memory_of_50_mb_of_short_texts(tiny_model, tmp_path, mode):
    """One 50 MB text is read, cut and written in about the memory that the same 50 MB in short texts takes:
    it is never tokenized whole (which took 7 GB)."""
    from transformers import AutoTokenizer

    rng = random.Random(7)
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in WORDS)  # one token a word
    size = 50_000_000
    long_words = words(rng, size // 6).split(" ")
    while sum(map(len, long_words)) + len(long_words) < size:
        long_words += words(rng, 100_000).split(" ")
    pq.write_table(pa.table({"text": [" ".join(long_words)]}), tmp_path / "long.parquet")
    short, total = [], 0
    while total < size:
        short.append(words(rng, rng.randint(5, 60)))
        total += len(short[-1])
    pq.write_table(pa.table({"text": short}), tmp_path / "short.parquet")
    options = ["--model", tiny_model, "--long-text", mode]
    long_peak = peak_rss_mb([tmp_path / "long.parquet", "-o", tmp_path / "long", *options])
    short_peak = peak_rss_mb([tmp_path / "short.parquet", "-o", tmp_path / "short", *options])
    print(f"{mode}: peak RSS {long_peak:.0f} MB for one 50 MB text, {short_peak:.0f} MB for 50 MB of short texts")
    assert long_peak <= 1.2 * short_peak
    manifest = manifest_of(tmp_path / "long")
    room = 512 - 2
    seen = room + (255 * (room - 64) if mode == "window" else 0)
    assert manifest["truncated_rows"] == 1 and manifest["truncated_tokens"] == len(long_words) - seen
    assert pq.read_table(tmp_path / "long").column("text")[0].as_py() == " ".join(long_words)  # the text, whole


def test_a_part_with_a_long_text_keeps_the_statistics_of_its_other_columns(tiny_model, tmp_path):
    """A column holding a value over 4 KiB is written without min/max (pyarrow would drop them anyway, after
    copying the value several times to compute them); every other column keeps its statistics."""
    rng = random.Random(8)
    texts = [words(rng, 2_000), words(rng, 5), words(rng, 9)]
    score_windows(tmp_path, tiny_model, texts, "--long-text", "window", "--window-scores")
    part = next((tmp_path / "out").glob("part-*.parquet"))
    group = pq.ParquetFile(part).metadata.row_group(0)
    kept = {
        group.column(i).path_in_schema
        for i in range(group.num_columns)
        if group.column(i).statistics is not None and group.column(i).statistics.has_min_max
    }
    leaves = {group.column(i).path_in_schema for i in range(group.num_columns)}
    assert "text" not in kept
    assert kept == leaves - {"text"}, leaves - kept
    assert {"label", "score", "windows", "window_scores.list.element.start"} <= kept


WINDOW_OPTIONS = dict(
    long_text="window", window_overlap=OVERLAP, aggregate="max", max_windows=3, window_scores=True, top_k="all"
)


def window_corpus(tmp_path):
    rng = random.Random(9)
    texts = [words(rng, n) for n in (5, 150, 40, 400, 70)] + [None, " "]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": pa.array(texts, pa.string())}), src)
    return src, texts


def test_the_library_takes_the_window_options(tiny_model, tmp_path):
    """Scorer and batchscore.score() with the long-text options give the CLI's output, column by column."""
    import batchscore

    src, _ = window_corpus(tmp_path)
    cli_args = ["--max-length", str(MAX_LENGTH), "--long-text", "window", "--window-overlap", str(OVERLAP)]
    cli_args += ["--aggregate", "max", "--max-windows", "3", "--window-scores", "--top-k", "all"]
    result = run_score(src, tiny_model, tmp_path / "cli", *cli_args)
    assert result.exit_code == 0, result.output
    cli = pq.read_table(tmp_path / "cli")
    results = ["label", "score", "scores", "windows", "window_scores"]
    assert cli.column("windows").to_pylist() == [1, 3, 1, 3, 2, None, None]

    scorer = batchscore.Scorer(model=tiny_model, max_length=MAX_LENGTH, **WINDOW_OPTIONS)
    got = scorer.score_table(pq.read_table(src))
    for name in results:
        assert got[name].to_pylist() == cli.column(name).to_pylist(), name
    batchscore.score(str(src), str(tmp_path / "lib"), model=tiny_model, max_length=MAX_LENGTH, **WINDOW_OPTIONS)
    assert pq.read_table(tmp_path / "lib").select(results).equals(cli.select(results))


@pytest.mark.slow  # starts a JVM
def test_spark_takes_the_window_options(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("pyspark")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    import batchscore
    from batchscore.spark import score

    src, _ = window_corpus(tmp_path)
    expected = batchscore.Scorer(model=tiny_model, max_length=MAX_LENGTH, **WINDOW_OPTIONS).score_table(
        pq.read_table(src)
    )
    spark = spark_session()
    try:
        df = spark.read.parquet(str(src)).repartition(2)
        scored = score(df, model=tiny_model, max_length=MAX_LENGTH, **WINDOW_OPTIONS)
        assert scored.columns == ["id", "text", "label", "score", "scores", "windows", "window_scores"]
        scored.write.parquet(str(tmp_path / "spark"))
    finally:
        spark.stop()
    table = pq.read_table(tmp_path / "spark").sort_by("id")
    for name in ("label", "windows"):
        assert table.column(name).to_pylist() == expected[name].to_pylist(), name
    for got, want in zip(table.column("score").to_pylist(), expected["score"].to_pylist()):
        assert (got is None and want is None) or abs(got - want) <= 1e-5
    spans = [[(w["start"], w["end"]) for w in row or []] for row in table.column("window_scores").to_pylist()]
    assert spans == [[(w["start"], w["end"]) for w in row or []] for row in expected["window_scores"].to_pylist()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["window", "truncate"])
def test_a_30_mb_text_without_whitespace_takes_the_memory_of_30_mb_of_words(tiny_model, tmp_path, mode):
    """A text of one 30 MB word (one [UNK] to WordPiece) has no space to cut a prefix at: it is cut where it is,
    never tokenized whole (window mode took 2.9 GB for it, against 0.73 GB for 30 MB of words), and counts as a
    truncated row."""
    rng = random.Random(10)
    size = 30_000_000
    pq.write_table(pa.table({"text": ["a" * size]}), tmp_path / "giant.parquet")
    pq.write_table(pa.table({"text": [words(rng, size // 5)[:size]]}), tmp_path / "words.parquet")
    options = ["--model", tiny_model, "--long-text", mode]
    giant_peak = peak_rss_mb([tmp_path / "giant.parquet", "-o", tmp_path / "giant", *options])
    words_peak = peak_rss_mb([tmp_path / "words.parquet", "-o", tmp_path / "words", *options])
    print(f"{mode}: peak RSS {giant_peak:.0f} MB for a 30 MB word, {words_peak:.0f} MB for 30 MB of words")
    assert giant_peak <= 1.2 * words_peak
    manifest = manifest_of(tmp_path / "giant")
    assert manifest["truncated_rows"] == 1 and manifest["truncated_tokens"] > 0

"""The result cache, seen from a run: the output with --cache equals the output without it, texts the cache holds
are not scored again, and the manifest says where each row's result came from.

Expected counts come from the input (numpy over its texts), never from the code under test; scores from runs
without the cache (and, once, from transformers.pipeline).
"""

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import (
    assert_error,
    assert_ok,
    assert_same_table,
    invoke,
    manifest_of,
    pipeline_oracle,
    repeating_corpus,
    run_score,
    write_texts,
)


def has_text(texts) -> list[str]:
    return [t for t in texts if t is not None and t.strip()]


def cache_entries(cache) -> int:
    files = glob.glob(os.path.join(str(cache), "*", "*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def test_cold_and_warm_runs_equal_a_run_without_cache_and_count_where_rows_came_from(tmp_path, tiny_model):
    texts = repeating_corpus(120)
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    assert_ok(run_score(data, tiny_model, tmp_path / "plain", "--chunk-rows", "50"))
    assert_ok(run_score(data, tiny_model, tmp_path / "cold", "--chunk-rows", "50", "--cache", cache))
    warm = assert_ok(run_score(data, tiny_model, tmp_path / "warm", "--chunk-rows", "50", "--cache", cache))
    plain = pq.read_table(tmp_path / "plain")
    assert_same_table(pq.read_table(tmp_path / "cold"), plain)
    assert_same_table(pq.read_table(tmp_path / "warm"), plain)

    valid = has_text(texts)
    distinct = len(set(valid))
    # A text seen in an earlier chunk of the same run comes from the cache too (its entry is held in memory).
    seen: set = set()
    from_earlier_chunks = 0
    for start in range(0, len(texts), 50):
        chunk = has_text(texts[start : start + 50])
        from_earlier_chunks += sum(t in seen for t in chunk)
        seen.update(chunk)
    cold = manifest_of(tmp_path / "cold")
    assert cold["distinct_texts_scored"] == distinct
    assert cold["rows_from_cache"] == from_earlier_chunks
    assert cold["rows_scored"] == len(valid) - from_earlier_chunks
    assert cold["cache_files_skipped"] == 0
    assert cache_entries(cache) == distinct  # one entry per distinct text, none twice

    hot = manifest_of(tmp_path / "warm")
    assert (hot["rows_from_cache"], hot["rows_scored"], hot["distinct_texts_scored"]) == (len(valid), 0, 0)
    assert hot["real_tokens"] == 0  # nothing was tokenized for the model
    assert hot["label_counts"] == manifest_of(tmp_path / "plain")["label_counts"]
    assert cache_entries(cache) == distinct  # the warm run added nothing
    assert f"{len(valid):,} from the cache" in warm.stderr


def test_cached_scores_match_the_pipeline(tmp_path, tiny_model):
    texts = [t for t in repeating_corpus(40, seed=3) if t is not None and t.strip()]
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    for out in ("cold", "warm"):
        assert_ok(run_score(data, tiny_model, tmp_path / out, "--cache", cache))
    got = pq.read_table(tmp_path / "warm")
    expected = pipeline_oracle(tiny_model, texts)
    assert got.column("label").to_pylist() == [e["label"] for e in expected]
    worst = np.max(np.abs(got.column("score").to_numpy() - np.array([e["score"] for e in expected])))
    assert worst <= 1e-5


def test_a_grown_input_scores_only_its_new_texts(tmp_path, tiny_model):
    old = repeating_corpus(100, seed=1, repeat_share=0.0)
    new = [f"brand new text {i}" for i in range(10)]
    cache = tmp_path / "cache"
    assert_ok(run_score(write_texts(tmp_path / "day1.parquet", old), tiny_model, tmp_path / "d1", "--cache", cache))
    grown = write_texts(tmp_path / "day2.parquet", old + new)
    assert_ok(run_score(grown, tiny_model, tmp_path / "d2", "--cache", cache))
    assert_ok(run_score(grown, tiny_model, tmp_path / "plain"))
    assert_same_table(pq.read_table(tmp_path / "d2"), pq.read_table(tmp_path / "plain"))
    m = manifest_of(tmp_path / "d2")
    assert (m["rows_scored"], m["distinct_texts_scored"]) == (len(new), len(new))
    assert m["rows_from_cache"] == len(has_text(old))


def test_top_k_prefix_and_several_models_share_the_cache_per_model(tmp_path, tiny_model, three_label_model):
    texts = repeating_corpus(60, seed=2)
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    both = ["--model", tiny_model, "--result-prefix", "a_", "--model", three_label_model, "--result-prefix", "b_"]
    common = ["score", data, "--no-progress", "--top-k", "all", *both]
    assert_ok(invoke([*common, "-o", tmp_path / "plain"]))
    assert_ok(invoke([*common, "-o", tmp_path / "cold", "--cache", cache]))
    assert_ok(invoke([*common, "-o", tmp_path / "warm", "--cache", cache]))
    plain = pq.read_table(tmp_path / "plain")
    assert_same_table(pq.read_table(tmp_path / "cold"), plain)
    assert_same_table(pq.read_table(tmp_path / "warm"), plain)
    assert len(glob.glob(os.path.join(str(cache), "*", "identity.json"))) == 2  # one identity per model
    assert manifest_of(tmp_path / "warm")["rows_scored"] == 0

    # The first model's entries serve a run of that model alone, with another top_k.
    assert_ok(run_score(data, tiny_model, tmp_path / "alone", "--cache", cache))
    assert_ok(run_score(data, tiny_model, tmp_path / "alone-plain"))
    assert_same_table(pq.read_table(tmp_path / "alone"), pq.read_table(tmp_path / "alone-plain"))
    assert manifest_of(tmp_path / "alone")["rows_scored"] == 0


def test_another_model_or_max_length_is_another_identity(tmp_path, tiny_model, three_label_model):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(30, seed=4))
    cache = tmp_path / "cache"
    assert_ok(run_score(data, tiny_model, tmp_path / "a", "--cache", cache))
    for name, model, extra in (("b", three_label_model, []), ("c", tiny_model, ["--max-length", "8"])):
        assert_ok(run_score(data, model, tmp_path / name, "--cache", cache, *extra))
        assert_ok(run_score(data, model, tmp_path / f"{name}-plain", *extra))
        assert_same_table(pq.read_table(tmp_path / name), pq.read_table(tmp_path / f"{name}-plain"))
        assert manifest_of(tmp_path / name)["rows_from_cache"] == 0
    assert len(glob.glob(os.path.join(str(cache), "*", "identity.json"))) == 3


def test_windows_are_cached_and_window_scores_refused(tmp_path, tiny_model, outputs):
    long = " ".join(f"word{i} is great" for i in range(200))
    texts = [long, "short one", long + " more", "short one"]
    data = write_texts(tmp_path / "in.parquet", texts)
    cache = tmp_path / "cache"
    args = ["--long-text", "window", "--max-length", "64", "--window-overlap", "16"]
    assert_ok(run_score(data, tiny_model, tmp_path / "plain", *args))
    for out in ("cold", "warm"):
        assert_ok(run_score(data, tiny_model, tmp_path / out, "--cache", cache, *args))
        assert_same_table(pq.read_table(tmp_path / out), pq.read_table(tmp_path / "plain"))
    assert pq.read_table(tmp_path / "warm").column("windows").to_pylist()[0] > 1
    result = run_score(data, tiny_model, outputs / "out", "--cache", cache, *args, "--window-scores")
    assert_error(result, 2, "--window-scores")
    assert os.listdir(outputs) == []


def test_a_cache_path_naming_a_parquet_file_is_refused(tmp_path, tiny_model, outputs):
    data = write_texts(tmp_path / "in.parquet", repeating_corpus(5))
    assert_error(run_score(data, tiny_model, outputs / "out", "--cache", tmp_path / "c.parquet"), 2, "--cache")


def test_library_scorer_and_score_take_cache(tmp_path, tiny_model):
    import batchscore
    from batchscore import Scorer

    texts = repeating_corpus(40, seed=5)
    table = pa.table({"text": texts})
    cache = str(tmp_path / "cache")
    plain = Scorer(model=tiny_model)(table)
    cached = Scorer(model=tiny_model, cache=cache)
    assert_same_table(cached(table), plain)
    assert cache_entries(cache) == len(set(has_text(texts)))  # added before the call returned
    assert_same_table(Scorer(model=tiny_model, cache=cache)(table), plain)
    assert cache_entries(cache) == len(set(has_text(texts)))

    data = write_texts(tmp_path / "in.parquet", texts)
    manifest = batchscore.score(data, str(tmp_path / "out"), model=tiny_model, cache=cache)
    assert manifest["rows_scored"] == 0 and manifest["rows_from_cache"] == len(has_text(texts))


@pytest.mark.parametrize("top_k", ["1", "all"])
def test_cache_rows_are_bit_identical_when_the_batches_are(tmp_path, tiny_model, top_k):
    """No repeats and a cold cache: the misses are the whole chunk, batched as without the cache."""
    texts = repeating_corpus(50, seed=6, repeat_share=0.0)
    data = write_texts(tmp_path / "in.parquet", texts)
    assert_ok(run_score(data, tiny_model, tmp_path / "plain", "--top-k", top_k))
    assert_ok(run_score(data, tiny_model, tmp_path / "cold", "--top-k", top_k, "--cache", tmp_path / "cache"))
    cold, plain = pq.read_table(tmp_path / "cold"), pq.read_table(tmp_path / "plain")
    assert cold.column_names == plain.column_names
    for name in plain.column_names:  # the columns bit for bit (the footers differ: one run lists its cache)
        assert cold.column(name).equals(plain.column(name)), name


def test_lookup_finds_keys_sharing_h1_and_keys_above_two_to_the_63(tmp_path):
    """Keys built by hand: two that share their first half, and halves with the top bit set (unsigned order)."""
    from batchscore.cache.store import ResultCache

    top = np.uint64(1 << 63)
    keys = np.array([[5, 1], [5, 9], [top + np.uint64(7), 3], [top, 2], [2, 2]], dtype=np.uint64)
    scores = np.arange(10, dtype=np.float32).reshape(5, 2)
    cache = ResultCache(str(tmp_path / "cache"))
    scope = cache.scope({"test": 1}, 2)
    scope.add(keys, scores, np.arange(5, dtype=np.int32))
    scope.flush()
    fresh = ResultCache(str(tmp_path / "cache")).scope({"test": 1}, 2)  # reads the file, not the held entries
    asked = np.array([[5, 9], [top, 2], [5, 1], [5, 4], [top + np.uint64(7), 3], [3, 3]], dtype=np.uint64)
    found = fresh.lookup(asked)
    assert found.hit.tolist() == [True, True, True, False, True, False]
    assert found.scores[found.hit].tolist() == [
        scores[1].tolist(),
        scores[3].tolist(),
        scores[0].tolist(),
        scores[2].tolist(),
    ]
    assert found.windows[found.hit].tolist() == [1, 3, 0, 2]

"""Several classifiers in one pass (issue 22): read, tokenize and write once, each model with its own columns.

The oracle for every model's columns is `transformers.pipeline` on that model
alone, and a separate single-model run of batchscore with the same settings.
"""

import json
import random
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchscore.scoring.cpu import model_threads, thread_share
from helpers import assert_error, build_model, file_tree, invoke, manifest_of, pipeline_oracle, run_score, spark_session

ROWS, CHUNK = 300, 64
WORDS = "good bad movie plot actor great awful slow fun boring story music scene ending love hate".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(22)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 80))) for _ in range(ROWS)]
    texts[5], texts[9] = None, "  "
    path = tmp_path_factory.mktemp("several") / "in.parquet"
    pq.write_table(pa.table({"id": list(range(ROWS)), "text": pa.array(texts, pa.string())}), path)
    return path, texts


@pytest.fixture(scope="module")
def cased_regression_model(tmp_path_factory):
    """A regression head whose tokenizer differs from the others (it keeps case): it cannot share their tokens."""
    path = tmp_path_factory.mktemp("cased")
    build_model(path, "bert", num_labels=1, problem_type="regression", labels=["VALUE"], seed=3)
    for name, edit in (
        ("tokenizer.json", ("normalizer", "lowercase")),
        ("tokenizer_config.json", (None, "do_lower_case")),
    ):
        spec = json.loads((path / name).read_text())
        (spec[edit[0]] if edit[0] else spec)[edit[1]] = False
        (path / name).write_text(json.dumps(spec))
    return str(path)


def pipeline_scores(model, texts, **call):
    """Per row: {label: score} from the pipeline on this model alone (None for a row without text)."""
    rows = [i for i, t in enumerate(texts) if t and t.strip()]
    results = pipeline_oracle(model, [texts[i] for i in rows], top_k=None, **call)
    scores = [None] * len(texts)
    for i, result in zip(rows, results):
        scores[i] = {r["label"]: r["score"] for r in result}
    return scores


def assert_columns_match(table, prefix, expected):
    for label, score, want in zip(
        table.column(prefix + "label").to_pylist(), table.column(prefix + "score").to_pylist(), expected
    ):
        if want is None:
            assert label is None and score is None
            continue
        best = max(want, key=want.get)
        assert label == best and abs(score - want[best]) <= 1e-5, (label, score, want)


def test_three_models_in_one_pass_equal_each_model_alone(
    corpus, tiny_model, multilabel_model, cased_regression_model, tmp_path
):
    """A softmax and a multi-label head share a tokenizer (tokenized once); a regression head with its own
    tokenizer is tokenized apart. Every column equals the pipeline on that model alone, and a one-model run."""
    src, texts = corpus
    out = tmp_path / "out"
    models = [(tiny_model, "sent_"), (multilabel_model, "topic_"), (cased_regression_model, "value_")]
    args = [a for model, prefix in models for a in ("--model", model, "--result-prefix", prefix)]
    result = invoke(["score", src, "-o", out, "--chunk-rows", CHUNK, "--no-progress", *args])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    names = ["id", "text", "sent_label", "sent_score", "topic_label", "topic_score", "topic_labels"]
    assert table.column_names == [*names, "value_label", "value_score"]
    for model, prefix in models:
        assert_columns_match(table, prefix, pipeline_scores(model, texts))
        alone = tmp_path / f"alone-{prefix}"
        # On CPU the models ran side by side, each on its share of the threads: with that share, bit for bit.
        threads = str(thread_share(model_threads(None), len(models)))
        run = run_score(src, model, alone, "--chunk-rows", CHUNK, "--result-prefix", prefix, "--threads", threads)
        assert run.exit_code == 0
        single = pq.read_table(alone)
        for column in single.column_names[2:]:
            assert table.column(column).equals(single.column(column)), column  # bit for bit
    manifest = manifest_of(out)
    chunks = -(-ROWS // CHUNK)
    assert manifest["chunks"] == chunks
    assert manifest["tokenizations"] == 2 * chunks  # two of the three models shared one tokenization
    assert [m["prefix"] for m in manifest["models"]] == ["sent_", "topic_", "value_"]
    assert [m["tokens_from"] for m in manifest["models"]] == [0, 0, 2]
    sent = table.column("sent_label").drop_null().to_pylist()
    assert manifest["models"][0]["label_counts"] == {k: sent.count(k) for k in sorted(set(sent))}


def test_a_config_file_lists_the_models_with_their_own_settings(corpus, tiny_model, multilabel_model, tmp_path):
    src, texts = corpus
    config = tmp_path / "job.yaml"
    config.write_text(
        "chunk_rows: 100\n"
        "models:\n"
        f"  - {{model: {tiny_model}, prefix: sentiment_}}\n"
        f"  - {{model: {multilabel_model}, prefix: topic_, top_k: all, long_text: window, aggregate: max,"
        " max_length: 32, window_overlap: 8}\n"
    )
    out = tmp_path / "out"
    result = invoke(["score", src, "-o", out, "--config", config, "--no-progress"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert {"sentiment_label", "sentiment_score", "topic_label", "topic_scores", "topic_windows"} <= set(
        table.column_names
    )
    assert "sentiment_scores" not in table.column_names and "sentiment_windows" not in table.column_names
    assert_columns_match(table, "sentiment_", pipeline_scores(tiny_model, texts))
    alone = tmp_path / "alone"
    single = ["--top-k", "all", "--long-text", "window", "--aggregate", "max", "--max-length", "32"]
    single += ["--window-overlap", "8", "--result-prefix", "topic_", "--chunk-rows", "100"]
    single += ["--threads", str(thread_share(model_threads(None), 2))]  # the share each of the two models ran with
    assert run_score(src, multilabel_model, alone, *single).exit_code == 0
    expected = pq.read_table(alone)
    for column in ("topic_label", "topic_score", "topic_scores", "topic_windows"):
        assert table.column(column).equals(expected.column(column)), column
    assert max(table.column("topic_windows").drop_null().to_pylist()) > 1  # some texts took several windows
    manifest = manifest_of(out)
    assert [m["tokens_from"] for m in manifest["models"]] == [0, 1]  # other max_length: tokenized apart


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--result-prefix", "a_"], ["2 --model", "1 --result-prefix", "one --result-prefix per --model"]),
        ([], ["model 1 and model 2", "'label'", "--result-prefix"]),
        (["--result-prefix", "a_", "--result-prefix", "a_"], ["model 1 and model 2", "'a_label'"]),
    ],
    ids=["fewer-prefixes", "no-prefixes", "same-prefix"],
)
def test_models_without_their_own_prefix_are_refused(corpus, tiny_model, multilabel_model, tmp_path, extra, fragments):
    out = tmp_path / "out"
    args = ["score", corpus[0], "-o", out, "--model", tiny_model, "--model", multilabel_model, *extra]
    assert_error(invoke(args), 2, *fragments)
    assert not out.exists()


def test_every_model_is_checked_before_anything_is_written(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "no-such-model"
    args = ["score", corpus[0], "-o", out, "--model", tiny_model, "--result-prefix", "a_"]
    args += ["--model", missing, "--result-prefix", "b_"]
    assert_error(invoke(args), 4, str(missing))
    assert not out.exists() or file_tree(out) == {}


def test_a_changed_model_list_is_another_run(corpus, tiny_model, multilabel_model, three_label_model, tmp_path):
    src = corpus[0]
    out = tmp_path / "out"

    def run(*models, extra=()):
        args = [a for i, m in enumerate(models) for a in ("--model", m, "--result-prefix", f"m{i}_")]
        return invoke(["score", src, "-o", out, "--chunk-rows", CHUNK, "--no-progress", *args, *extra])

    assert run(tiny_model, multilabel_model).exit_code == 0
    assert run(tiny_model, multilabel_model).exit_code == 0  # the same run: already complete
    line = assert_error(run(tiny_model, three_label_model), 5, "model 2 of 2", "--overwrite")
    assert "model 1" not in line
    assert_error(run(multilabel_model, tiny_model), 5, "model 1 of 2", "model 2 of 2")  # reordered
    assert_error(run(tiny_model), 5, "--overwrite")  # one removed
    assert run(tiny_model, three_label_model, extra=["--overwrite"]).exit_code == 0
    assert "m1_label" in pq.read_table(out).column_names


def test_memory_for_the_weights_is_checked_up_front(corpus, tiny_model, multilabel_model, tmp_path, monkeypatch):
    """The models' weights together must fit the device's free memory: refused before any model loads."""
    import batchscore.scoring.load

    monkeypatch.setattr(batchscore.scoring.load, "free_memory_bytes", lambda device: 1000)
    out = tmp_path / "out"
    args = ["score", corpus[0], "-o", out, "--model", tiny_model, "--result-prefix", "a_"]
    args += ["--model", multilabel_model, "--result-prefix", "b_"]
    assert_error(invoke(args), 4, "2 models", "free memory")
    assert not out.exists() or file_tree(out) == {}


@pytest.mark.slow
def test_a_kill_and_rerun_with_several_models_resumes_exactly_once(corpus, tiny_model, multilabel_model, tmp_path):
    from test_resume import parts, start_job, stop_after

    src = corpus[0]
    args = ["score", src, "--chunk-rows", "5", "--no-progress", "--model", tiny_model, "--result-prefix", "a_"]
    args += ["--model", multilabel_model, "--result-prefix", "b_"]
    reference = tmp_path / "reference"
    assert invoke([*args, "-o", reference]).exit_code == 0
    out = tmp_path / "killed"
    proc = start_job([*args, "-o", str(out)])
    assert stop_after(proc, out, 20, signal.SIGKILL)
    before = parts(out)
    result = invoke([*args, "-o", out])
    assert result.exit_code == 0, result.output
    assert f"Resuming: {before} chunks already committed" in result.stderr
    assert pq.read_table(out).equals(pq.read_table(reference))
    assert manifest_of(out)["rows"] == ROWS


def test_several_models_write_to_an_object_store(
    s3_server, s3_bucket, s3_fs, corpus, tiny_model, multilabel_model, tmp_path
):
    bucket = s3_bucket
    out = f"s3://{bucket}/out/"
    args = ["score", corpus[0], "-o", out, "--chunk-rows", CHUNK, "--no-progress"]
    args += ["--model", tiny_model, "--result-prefix", "a_", "--model", multilabel_model, "--result-prefix", "b_"]
    result = invoke(args, env=s3_server.subprocess_env())
    assert result.exit_code == 0, result.output
    local = tmp_path / "local"
    assert invoke([*args[:3], str(local), *args[4:]]).exit_code == 0
    remote = pq.read_table(f"{bucket}/out", filesystem=s3_fs)
    assert remote.equals(pq.read_table(local))
    assert manifest_of(out, fs=s3_fs)["models"][1]["prefix"] == "b_"


def test_the_library_takes_a_list_of_models(corpus, tiny_model, multilabel_model, tmp_path):
    import batchscore

    src, texts = corpus
    models = [{"model": tiny_model, "prefix": "a_"}, {"model": multilabel_model, "prefix": "b_", "top_k": "all"}]
    scorer = batchscore.Scorer(models=models)
    got = scorer.score_table(pq.read_table(src))
    assert list(got) == ["a_label", "a_score", "b_label", "b_score", "b_labels", "b_scores"]
    batchscore.score(str(src), str(tmp_path / "lib"), models=models, chunk_rows=CHUNK)
    written = pq.read_table(tmp_path / "lib")
    for name in ("a_label", "b_label", "b_labels"):
        assert written.column(name).to_pylist() == got[name].to_pylist(), name
    for name in ("a_score", "b_score"):  # other batches (chunks of 64 rows, or one of 300): float noise only
        assert np.allclose(written.column(name).drop_null().to_numpy(), got[name].drop_null().to_numpy(), atol=1e-5)
    assert_columns_match(written, "a_", pipeline_scores(tiny_model, texts))
    assert_columns_match(written, "b_", pipeline_scores(multilabel_model, texts))


@pytest.mark.slow  # starts a JVM
def test_spark_takes_a_list_of_models(corpus, tiny_model, multilabel_model, tmp_path, monkeypatch):
    import sys

    pytest.importorskip("pyspark")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    import batchscore
    from batchscore.spark import score

    src, _ = corpus
    models = [{"model": tiny_model, "prefix": "a_"}, {"model": multilabel_model, "prefix": "b_", "top_k": "all"}]
    expected = batchscore.Scorer(models=models).score_table(pq.read_table(src))
    spark = spark_session()
    try:
        scored = score(spark.read.parquet(str(src)).repartition(2), models=models)
        assert scored.columns == ["id", "text", "a_label", "a_score", "b_label", "b_score", "b_labels", "b_scores"]
        scored.write.parquet(str(tmp_path / "spark"))
    finally:
        spark.stop()
    table = pq.read_table(tmp_path / "spark").sort_by("id")
    for name in ("a_label", "b_label", "b_labels"):
        assert table.column(name).to_pylist() == expected[name].to_pylist(), name

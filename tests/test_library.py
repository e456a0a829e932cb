"""batchscore as a library: Scorer on tables, frames and numpy dicts, score(), Ray Data and Spark.

Every path is checked against what the CLI writes for the same 400 rows of
real text (sentences of Python's own documentation, with empty and null rows
mixed in): every row once, the same labels, scores within 1e-5. Ray and Spark
start a cluster or a JVM, so those tests are slow (`make test-slow` installs
their extras).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchscore
from batchscore.errors import InputError
from helpers import assert_error, assert_ok, run_score, spark_session

REPO = Path(__file__).resolve().parent.parent
ROWS = 400


def real_texts(n=ROWS):
    """Sentences of Python's documentation, of every length; every 25th row empty or null."""
    import pydoc_data.topics

    sentences = [
        s.strip()
        for doc in pydoc_data.topics.topics.values()
        for s in re.split(r"(?<=[.!?])\s+", doc)
        if 20 < len(s.strip()) < 2000
    ]
    texts = [sentences[(i * 7919) % len(sentences)] for i in range(n)]
    for i in range(0, n, 25):
        texts[i] = None if i % 50 == 0 else "   "
    return texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    table = pa.table({"id": np.arange(ROWS), "text": pa.array(real_texts(), pa.string())})
    pq.write_table(table, folder / "in.parquet", row_group_size=128)
    return folder / "in.parquet", table


@pytest.fixture(scope="module")
def cli_output(corpus, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "out"
    assert_ok(run_score(corpus[0], tiny_model, out, "--chunk-rows", "100", "--top-k", "all"))
    return pq.read_table(out)


def assert_same_results(got, expected, ids=None):
    """Same rows (by id), same labels, scores within 1e-5, nulls where the CLI has nulls."""
    expected = expected.to_pydict()
    got = got if isinstance(got, dict) else got.to_pydict()
    ids = list(got["id"]) if ids is None else ids
    assert sorted(ids) == list(range(ROWS))  # every row exactly once
    position = {int(i): k for k, i in enumerate(expected["id"])}
    for k, row in enumerate(ids):
        e = position[int(row)]
        if expected["label"][e] is None:  # pandas may show a missing label as NaN or pd.NA
            assert got["label"][k] is None or got["label"][k] != got["label"][k] or str(got["label"][k]) == "<NA>"
        else:
            assert got["label"][k] == expected["label"][e], row
        if expected["score"][e] is None:
            assert got["score"][k] is None or np.isnan(got["score"][k])
        else:
            assert abs(got["score"][k] - expected["score"][e]) < 1e-5, row


def test_scorer_on_a_table_equals_the_cli(corpus, tiny_model, cli_output):
    scorer = batchscore.Scorer(model=tiny_model, top_k="all")
    scored = scorer(corpus[1])
    assert scored.column_names == ["id", "text", "label", "score", "scores"]
    assert scored.column("id").to_pylist() == list(range(ROWS))  # the input's order
    assert_same_results(scored, cli_output)
    for got, want in zip(scored.column("scores").to_pylist(), cli_output.column("scores").to_pylist()):
        assert (got is None) == (want is None)
        if want is not None:  # every label, best first, as the CLI lists them
            assert [x["label"] for x in got] == [x["label"] for x in want]
            assert np.allclose([x["score"] for x in got], [x["score"] for x in want], atol=1e-5)
    # A RecordBatch comes back as a RecordBatch, the same rows.
    batch = scorer(corpus[1].to_batches()[0])
    assert isinstance(batch, pa.RecordBatch)
    assert (
        batch.column(batch.schema.get_field_index("label")).to_pylist()
        == scored.column("label").to_pylist()[: batch.num_rows]
    )


def test_scorer_on_a_dataframe_and_on_numpy_dicts(corpus, tiny_model, cli_output):
    scorer = batchscore.Scorer(model=tiny_model)
    frame = corpus[1].to_pandas().iloc[::-1]  # reversed, with its index: kept as it is
    scored = scorer(frame)
    assert list(scored.columns) == ["id", "text", "label", "score"]
    assert list(scored.index) == list(frame.index)
    assert_same_results({c: scored[c].tolist() for c in scored.columns}, cli_output)
    numpy_batch = {
        "id": corpus[1].column("id").to_numpy(),
        "text": np.array(corpus[1].column("text").to_pylist(), dtype=object),
    }
    out = scorer(numpy_batch)
    assert set(out) == {"id", "text", "label", "score"}
    assert isinstance(out["label"], np.ndarray) and len(out["score"]) == ROWS
    assert_same_results({k: list(v) for k, v in out.items()}, cli_output)
    listed = batchscore.Scorer(model=tiny_model, top_k="all")(numpy_batch)["scores"]
    assert listed.shape == (ROWS,) and listed[1][0]["label"] in ("NEGATIVE", "POSITIVE") and listed[0] is None


def test_scorer_refuses_clear_mistakes(tiny_model):
    from batchscore.errors import ConfigError

    scorer = batchscore.Scorer(model=tiny_model)
    with pytest.raises(InputError, match="Column 'text' not found; columns are: body"):
        scorer(pa.table({"body": ["x"]}))
    with pytest.raises(InputError, match="result_prefix"):
        scorer(pa.table({"text": ["x"], "label": ["gold"]}))
    assert batchscore.Scorer(model=tiny_model, result_prefix="pred_")(
        pa.table({"text": ["x"], "label": ["gold"]})
    ).column_names == ["text", "label", "pred_label", "pred_score"]
    with pytest.raises(ConfigError, match="top_k"):
        batchscore.Scorer(model=tiny_model, top_k=3)
    with pytest.raises(TypeError, match="pandas DataFrame"):
        scorer(["a list"])


def test_score_function_is_the_cli_job(corpus, tiny_model, cli_output, tmp_path):
    from batchscore.errors import ConfigError

    manifest = batchscore.score(str(corpus[0]), str(tmp_path / "out"), model=tiny_model, chunk_rows=100, top_k="all")
    assert manifest["rows"] == ROWS and manifest["empty_text_rows"] == ROWS // 25
    assert pq.read_table(tmp_path / "out").equals(cli_output)  # bit for bit: the same job
    with pytest.raises(ConfigError, match="Unknown option 'chunk_size'"):
        batchscore.score(str(corpus[0]), str(tmp_path / "other"), model=tiny_model, chunk_size=10)


def test_score_logs_the_warnings_the_cli_prints(tmp_path, tiny_model, caplog):
    """batchscore.score() returns the manifest; the warnings the CLI prints (here: an input without rows) are
    logged, not dropped."""
    import logging

    empty = tmp_path / "empty.csv"
    empty.write_text("text\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="batchscore"):
        manifest = batchscore.score(str(empty), str(tmp_path / "out"), model=tiny_model)
    assert manifest["rows"] == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "batchscore.job" and r.levelno == logging.WARNING]
    assert logged == ["The input has no rows; wrote an empty output with the schema."]


def test_score_with_report_writes_the_page_its_manifest_names(corpus, tiny_model, tmp_path):
    """The page `report=True` records in the manifest is written by the library too, not only by the CLI."""
    out = tmp_path / "lib"
    manifest = batchscore.score(str(corpus[0]), str(out), model=str(tiny_model), report=True, progress=False)
    page = Path(manifest["report"])
    assert page == tmp_path / "lib.report.html"
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and f"{manifest['rows']:,}" in text


def test_import_stays_light():
    """`import batchscore` must not pull in torch: `batchscore --help` and notebooks stay instant."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, batchscore; print('torch' in sys.modules)"], capture_output=True, text=True
    )
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.slow  # starts a local Ray cluster
def test_ray_data_map_batches_with_two_actors(corpus, tiny_model, cli_output, tmp_path):
    ray = pytest.importorskip("ray")
    sys.path.insert(0, str(REPO / "jobs"))
    from ray_score import score_dataset

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        ds = ray.data.read_parquet(str(corpus[0])).repartition(4)  # 4 blocks: both actors get work
        # 2 actors of half a CPU each: the read tasks that feed them get the rest of the 2 CPUs.
        # With a result cache (cold): both actors add their batches' results, the output is the same.
        cache = tmp_path / "cache"
        scored = score_dataset(
            ds, tiny_model, actors=2, cpus_per_actor=0.5, batch_size=64, top_k="all", cache=str(cache)
        )
        scored.write_parquet(str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    table = pq.read_table(tmp_path / "ray")
    assert table.num_rows == ROWS
    assert_same_results(table, cli_output)
    assert cache_entries(cache) == distinct_texts(corpus[0])


@pytest.mark.slow  # starts a JVM
def test_spark_score_in_local_mode(corpus, tiny_model, cli_output, tmp_path, monkeypatch):
    pytest.importorskip("pyspark")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers: this environment
    from batchscore.spark import score

    spark = spark_session()
    try:
        df = spark.read.parquet(str(corpus[0])).repartition(3)  # rows spread over partitions, out of order
        scored = score(df, model=tiny_model, top_k="all")
        assert scored.columns == ["id", "text", "label", "score", "scores"]
        scored.write.parquet(str(tmp_path / "spark"))
        with pytest.raises(InputError, match="Column 'body' not found"):
            score(df, model=tiny_model, text_column="body")
        cache = tmp_path / "cache"
        for run in ("cold", "warm"):  # a result cache: the same output, each text's entry added once
            score(df, model=tiny_model, top_k="all", cache=str(cache)).write.parquet(str(tmp_path / run))
    finally:
        spark.stop()
    for run in ("spark", "cold", "warm"):
        table = pq.read_table(tmp_path / run)
        assert table.num_rows == ROWS
        assert_same_results(table, cli_output)
    assert cache_entries(cache) == distinct_texts(corpus[0])


def cache_entries(cache) -> int:
    """Entries after a compaction: workers running at once may each have added a text both scored."""
    import glob

    from batchscore.cache.admin import compact

    compact(str(cache))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(os.path.join(str(cache), "*", "*.parquet")))


def distinct_texts(path) -> int:
    texts = pq.read_table(path).column("text").to_pylist()
    return len({t for t in texts if t is not None and t.strip()})


README_SNIPPETS = [
    "Use it from Python",
    pytest.param("Ray Data", marks=pytest.mark.slow),
    pytest.param("Spark", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("section", README_SNIPPETS)
def test_readme_snippets_run_as_written(section, tiny_model, tmp_path):
    """Each section's Python block runs unchanged, in a folder where models/minilm-vader-sentiment is a model."""
    if section == "Ray Data":
        pytest.importorskip("ray")
    if section == "Spark":
        pytest.importorskip("pyspark")
    text = (REPO / "docs" / "python.md").read_text()
    start = text.index(f"#{'#' if section == 'Use it from Python' else '##'} {section}\n")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    (tmp_path / "models").mkdir()
    os.symlink(tiny_model, tmp_path / "models" / "minilm-vader-sentiment")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYSPARK_PYTHON": sys.executable},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if section == "Use it from Python":
        assert (tmp_path / "scored" / "_SUCCESS").exists()
        assert "NEGATIVE" in done.stdout or "POSITIVE" in done.stdout
    if section == "Ray Data":
        assert pq.read_table(tmp_path / "scored-ray").num_rows == 300


def test_cli_error_for_a_library_user_is_the_same_line(tmp_path, tiny_model):
    """What the library raises is what the CLI prints."""
    src = tmp_path / "in.csv"
    src.write_text("body\nhello\n")
    line = assert_error(run_score(src, tiny_model, tmp_path / "out"), 3, "Column 'text' not found")
    with pytest.raises(InputError) as raised:
        batchscore.score(str(src), str(tmp_path / "out2"), model=tiny_model)
    assert line == f"Error: {raised.value.message}"
    assert raised.value.exit_code == 3

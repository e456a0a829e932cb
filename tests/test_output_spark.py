"""Spark reads a batchscore output folder as one table (slow: starts a JVM; needs `pip install pyspark`)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import invoke, spark_session

pytestmark = pytest.mark.slow


def test_spark_reads_the_output_folder_as_one_table(tiny_model, tmp_path):
    pytest.importorskip("pyspark")
    source, out = tmp_path / "in.parquet", tmp_path / "out"
    texts = [f"review number {i}: {'great' if i % 3 else 'awful'} product" for i in range(250)]
    pq.write_table(pa.table({"id": list(range(250)), "text": texts}), source)
    for i in range(2):  # sharded, then finalized: the layout a scheduler leaves
        result = invoke(
            [
                "score",
                source,
                "-o",
                out,
                "--model",
                tiny_model,
                "--chunk-rows",
                "40",
                "--num-shards",
                "2",
                "--shard-index",
                i,
            ]
        )
        assert result.exit_code == 0, result.output
    assert invoke(["finalize", out]).exit_code == 0

    spark = spark_session()
    try:
        rows = spark.read.parquet(str(out)).orderBy("id").collect()
    finally:
        spark.stop()
    expected = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == list(range(250))
    assert [(r["label"], pytest.approx(r["score"])) for r in rows] == [(e["label"], e["score"]) for e in expected]

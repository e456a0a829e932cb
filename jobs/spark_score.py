"""Score a Parquet table with Spark (Databricks, EMR, Dataproc, or local[*]): batchscore.spark.score.

    spark-submit jobs/spark_score.py INPUT OUTPUT --model /models/minilm-vader-sentiment
    python jobs/spark_score.py INPUT OUTPUT --model ... --master 'local[2]'

Each Python worker loads the model once (a `Scorer` per worker process, reused
by every partition it runs) and scores Arrow batches through `mapInArrow`;
every row comes back once with `label` and `score` appended, the scores
`batchscore score` writes. The model directory must be readable on every
executor. Spark writes its own output layout (no batchscore manifest, no
resume): use the batchscore CLI with shards where you want those.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model", required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--top-k", default="1", choices=["1", "all"])
    parser.add_argument("--master", default=None, help="e.g. local[2]; default: what spark-submit gives")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    from batchscore.spark import score

    builder = SparkSession.builder.appName("batchscore")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    scored = score(spark.read.parquet(args.input), model=args.model, text_column=args.text_column,
                   top_k=args.top_k)
    scored.write.mode("errorifexists").parquet(args.output)
    spark.stop()


if __name__ == "__main__":
    main()

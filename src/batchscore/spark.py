"""Score a Spark DataFrame where it lives: `mapInArrow` with one `Scorer` per Python worker process.

    from batchscore.spark import score

    scored = score(spark.read.parquet("s3://bucket/reviews/"), model="/models/minilm-vader-sentiment")
    scored.write.parquet("s3://bucket/scored/")

Every row comes back once, with the input's columns unchanged and the result
columns appended (`label`, `score`, and `scores` for top_k="all"); the labels
and scores are those `batchscore score` writes. The model directory must be
readable on every executor (a shared path, or the same path on each node).
"""

from __future__ import annotations

_SCORERS: dict = {}  # one loaded model per Python worker process and settings: Spark reuses its workers


def _scorer(settings: tuple):
    from .scorer import Scorer

    if settings not in _SCORERS:
        _SCORERS[settings] = Scorer(**dict(settings))
    return _SCORERS[settings]


def result_schema(input_schema, top_k: int | str = 1, result_prefix: str | None = None):
    """The output's Spark schema: the input's fields, then the result columns."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    from .postprocess import result_fields

    fields = list(input_schema.fields)
    taken = {f.name for f in fields}
    for field in result_fields(str(top_k).lower(), result_prefix):
        if field.name in taken:
            from .errors import InputError

            raise InputError(f"Input column '{field.name}' would clash with the result column of that name; "
                             "pass result_prefix=..., e.g. result_prefix='pred_'.")
        fields.append(StructField(field.name, from_arrow_type(field.type), nullable=True))
    return StructType(fields)


def score(df, model: str | None = None, text_column: str = "text", top_k: int | str = 1, **options):
    """`df` with label and score columns appended, computed on the executors; lazy, like any transformation.

    `options` are the other `Scorer` arguments (revision, max_length,
    batch_tokens, precision, result_prefix, allow_pickle, trust_remote_code).
    """
    if text_column not in df.columns:
        from .errors import InputError

        raise InputError(f"Column '{text_column}' not found; columns are: {', '.join(df.columns)}. "
                         "Pass text_column=...")
    settings = tuple(sorted({"model": model, "text_column": text_column, "top_k": top_k, **options}.items()))
    schema = result_schema(df.schema, top_k, options.get("result_prefix"))

    def score_partition(batches):
        scorer = _scorer(settings)  # loaded once per worker process, reused by every partition it runs
        for batch in batches:
            yield scorer(batch)

    return df.mapInArrow(score_partition, schema)

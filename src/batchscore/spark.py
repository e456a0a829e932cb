"""Score a Spark DataFrame where it lives: `mapInArrow` with one `Scorer` per Python worker process.

    from batchscore.spark import score

    scored = score(spark.read.parquet("s3://bucket/reviews/"), model="/models/minilm-vader-sentiment")
    scored.write.parquet("s3://bucket/scored/")

Every row comes back once, with the input's columns unchanged and the result
columns appended (`label`, `score`, `labels` for a multi-label head, and
`scores` for top_k="all"); the labels and scores are those `batchscore score`
writes. The model directory must be readable on every executor (a shared path,
or the same path on each node), and its config.json on the driver, which names
the result columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

    from .scorer import Scorer
    from .scoring import ScoringRules

_SCORERS: dict[
    tuple[tuple[str, Any], ...], Scorer
] = {}  # one loaded model per Python worker process and settings: Spark reuses its workers


def _scorer(settings: tuple[tuple[str, Any], ...]) -> Scorer:
    from .scorer import Scorer

    if settings not in _SCORERS:
        arguments = dict(settings)
        if arguments.get("models") is not None:  # kept hashable in `settings`: tuples of (key, value) pairs
            arguments["models"] = [dict(m) for m in arguments["models"]]
        _SCORERS[settings] = Scorer(**arguments)
    return _SCORERS[settings]


# The Scorer arguments that decide the result columns (and their names).
RESULT_OPTIONS = (
    "result_prefix",
    "long_text",
    "window_overlap",
    "aggregate",
    "max_windows",
    "window_scores",
    "threshold",
    "head",
)


def _rules(text_column: str, top_k: int | str, options: dict[str, Any]) -> ScoringRules:
    from .scoring import ScoringRules

    return ScoringRules(text_column, str(top_k), **{k: options[k] for k in RESULT_OPTIONS if k in options})


def result_schema(
    input_schema: StructType, top_k: int | str = 1, result_prefix: str | None = None, **options: Any
) -> StructType:
    """The output's Spark schema: the input's fields, then the result columns (`options`: the Scorer's
    long-text arguments, which add `windows` and `window_scores`; `head`, the model's score function
    (model.model_head), "sigmoid" adding a multi-label head's `labels`)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    results = _rules("text", top_k, {**options, "result_prefix": result_prefix}).fields
    return StructType(
        [*input_schema.fields, *(StructField(f.name, from_arrow_type(f.type), nullable=True) for f in results)]
    )


def score(
    df: DataFrame, model: str | None = None, text_column: str = "text", top_k: int | str = 1, **options: Any
) -> DataFrame:
    """`df` with label and score columns appended, computed on the executors; lazy, like any transformation.

    `options` are the other `Scorer` arguments (revision, max_length,
    batch_tokens, precision, result_prefix, allow_pickle, trust_remote_code,
    threshold, and long_text="window" with its window_overlap, aggregate, max_windows, window_scores),
    or `models=[{"model": ..., "prefix": ...}, ...]`: several models in one pass, as `Scorer(models=...)`.
    """
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    from .model import model_head
    from .scoring import check_result_names

    # On the driver, before any executor loads a model: the same checks the Scorer makes. The head's columns
    # (a multi-label head's `labels`) come from the model's config.json, read here: the schema must name them.
    models = options.pop("models", None)
    entries = [{"model": model}] if models is None else [dict(m) for m in models]
    rules = []
    for entry in entries:  # several models: each entry's own settings, the rest from the arguments
        own = {**options, **{("result_prefix" if k == "prefix" else k): v for k, v in entry.items()}}
        trust = own.get("trust_remote_code", False)
        head = model_head(own.get("model"), own.get("revision"), trust)
        rules.append(_rules(text_column, own.pop("top_k", top_k), {**own, "head": head}))
    check_result_names(rules)
    for each in rules:
        each.check_columns(df.columns)
    listed = None if models is None else tuple(tuple(sorted(e.items())) for e in entries)
    given = {"model": model, "text_column": text_column, "top_k": top_k, **options, "models": listed}
    settings = tuple(sorted(given.items()))
    results = [f for each in rules for f in each.fields]
    schema = StructType(
        [*df.schema.fields, *(StructField(f.name, from_arrow_type(f.type), nullable=True) for f in results)]
    )

    def score_partition(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = _scorer(settings)  # loaded once per worker process, reused by every partition it runs
        for batch in batches:
            yield scorer(batch)

    return df.mapInArrow(score_partition, schema)

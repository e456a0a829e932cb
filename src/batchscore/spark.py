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


def _rules(text_column: str, arguments: dict[str, Any], models: Any = None) -> list[ScoringRules]:
    """Each model's result rules, as the Scorer's: `arguments` are the Scorer's; `head` (load.model_head), when
    given, completes a single model's rules; else each model's head is read from its config.json, here."""
    from .config import library_specs
    from .scoring import rules_for
    from .scoring.load import model_head

    own = {k: v for k, v in arguments.items() if k not in _scorer_keywords() | {"head"}}
    specs = library_specs(own, models)
    rules = rules_for(specs, text_column, arguments.get("batch_tokens"))
    trust = arguments.get("trust_remote_code", False)
    heads = [arguments.get("head") or model_head(spec.model, spec.revision, trust) for spec in specs]
    return [each.for_head(head) for each, head in zip(rules, heads)]


def _scorer_keywords() -> set[str]:
    """The Scorer's own keywords, which are not a model's options: its keyword-only parameters."""
    import inspect

    from .scorer import Scorer

    parameters = inspect.signature(Scorer.__init__).parameters.values()
    return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}


def _schema(input_schema: StructType, rules: list[ScoringRules]) -> StructType:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    results = [f for each in rules for f in each.fields]
    return StructType(
        [*input_schema.fields, *(StructField(f.name, from_arrow_type(f.type), nullable=True) for f in results)]
    )


def result_schema(
    input_schema: StructType, top_k: int | str = 1, result_prefix: str | None = None, **options: Any
) -> StructType:
    """The output's Spark schema: the input's fields, then the result columns (`options`: the Scorer's
    long-text arguments, which add `windows` and `window_scores`; `head`, the model's score function
    (scoring.load.model_head), "sigmoid" adding a multi-label head's `labels`)."""
    head = options.pop("head", None) or "none"  # no head named: no column a head adds
    return _schema(
        input_schema, _rules("text", {**options, "top_k": top_k, "result_prefix": result_prefix, "head": head})
    )


def score(
    df: DataFrame, model: str | None = None, text_column: str = "text", top_k: int | str = 1, **options: Any
) -> DataFrame:
    """`df` with label and score columns appended, computed on the executors; lazy, like any transformation.

    `options` are the other `Scorer` arguments (each model option the CLI has,
    batch_tokens, allow_pickle, trust_remote_code), or
    `models=[{"model": ..., "prefix": ...}, ...]`: several models in one pass, as `Scorer(models=...)`.
    """
    # On the driver, before any executor loads a model: the same checks the Scorer makes. The heads' columns
    # (a multi-label head's `labels`) come from each model's config.json, read here: the schema must name them.
    models = options.pop("models", None)
    rules = _rules(text_column, {"model": model, "top_k": top_k, **options}, models)
    for each in rules:
        each.check_columns(df.columns)
    listed = None if models is None else tuple(tuple(sorted(dict(m).items())) for m in models)
    given = {"model": model, "text_column": text_column, "top_k": top_k, **options, "models": listed}
    settings = tuple(sorted(given.items()))
    schema = _schema(df.schema, rules)

    def score_partition(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = _scorer(settings)  # loaded once per worker process, reused by every partition it runs
        for batch in batches:
            yield scorer(batch)

    return df.mapInArrow(score_partition, schema)

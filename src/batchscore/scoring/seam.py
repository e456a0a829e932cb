"""The seam between the scoring core and its callers: what they use of a run's scorers (`Scorers`), and the one
factory that makes them (`open_scorers`: specs and a cache -> scorers), used by the job, `Scorer`, and through it
Ray Data and Spark."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ..errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from ..cache.store import ResultCache
    from .cache_step import ReadChunk
    from .core import CacheReport, ScoredChunk
    from .encode import ChunkEncodings
    from .feed import WorkerStep
    from .models import ModelScorer, OnBatch
    from .rules import ScoringRules
    from .stats import ChunkStats


class Scorers(Protocol):
    """A run's loaded models, scoring chunk after chunk."""

    models: list[ModelScorer]  # in the run's order, each with its rules completed by its head
    fields: list[pa.Field]  # every model's result columns, in the output's order
    worker_step: WorkerStep  # what DataLoader workers do to each chunk they read (no model)

    @property
    def on_gpu(self) -> bool: ...

    @property
    def batch_tokens(self) -> int: ...

    def score(self, item: ChunkEncodings | ReadChunk, on_batch: OnBatch | None = None) -> ScoredChunk: ...

    def score_texts(self, texts: pa.Table) -> dict[str, pa.Array]: ...

    def empty_stats(self) -> ChunkStats: ...

    def identity_parts(self) -> list[dict[str, Any]]: ...

    def with_models(self, models: list[ModelScorer]) -> Scorers: ...

    def finish(self) -> CacheReport | None: ...


def open_scorers(
    rules: Sequence[ScoringRules],
    *,
    cache: ResultCache | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    check: Callable[[ScoringRules], None] | None = None,
    calibrating: bool = False,
) -> Scorers:
    """Every model of a run loaded, in order (several: their weights checked against free memory first), with
    the result cache in front of them when one is given.

    `check` gets each model's rules completed by its head as soon as its config is read, before the weights
    load: the columns a head adds are refused in seconds, not after minutes of loading. A model of `--precision
    fastest` is loaded in fp32 for a caller that then calibrates it (`calibrating`: the job); any other caller is
    refused it, since only a job has an input to calibrate on and an output to record the choice in.
    """
    import functools

    from ..options import model_and_revision
    from .cache_step import refuse_window_scores
    from .core import ScoringCore
    from .load import check_free_memory, load_model
    from .models import ModelScorer

    specs = [each.spec for each in rules]
    if not calibrating and any(spec.precision == "fastest" for spec in specs):
        raise ConfigError(
            "precision 'fastest' is calibrated on a job's input (batchscore score, batchscore.score); here "
            "pass the precision it chose (the manifest's calibration says which), or fp32, bf16, fp16, int8."
        )
    if cache is not None:
        refuse_window_scores(specs)
    if len(specs) > 1:
        check_free_memory([(spec.model, spec.revision) for spec in specs])
    models = []
    for each in rules:
        model_id, revision = model_and_revision(each.spec.model, each.spec.revision)
        loaded = load_model(
            model_id,
            revision,
            "fp32" if each.spec.precision == "fastest" else each.spec.precision,  # calibration starts from fp32
            each.spec.max_length,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            on_config=None if check is None else functools.partial(_check_head, check, each),
        )
        models.append(ModelScorer(loaded, each))
    return ScoringCore(models, cache)


def _check_head(check: Callable[[ScoringRules], None], rules: ScoringRules, config: Any) -> None:
    """`check` on `rules` completed by the head of the model whose config was just read."""
    from .heads import score_function

    check(rules.for_head(score_function(config)))

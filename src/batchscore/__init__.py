"""batchscore: score whole text corpora with a Hugging Face sequence classifier.

From Python::

    import batchscore

    manifest = batchscore.score("reviews.csv", "scored/", model="models/minilm-vader-sentiment")
    scorer = batchscore.Scorer(model="models/minilm-vader-sentiment")
    scored = scorer(table)  # a pyarrow Table / RecordBatch, pandas DataFrame or dict of numpy arrays

`batchscore.spark.score(df, model=...)` scores a Spark DataFrame.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports them on first use
    from .job import score
    from .scorer import Scorer

__all__ = ["Scorer", "__version__", "score"]


def __getattr__(name: str) -> Any:  # Any: a class or a function, whichever `name` is
    # Imported on first use: `import batchscore` (and `batchscore --help`) stays instant.
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    if name == "score":
        from .job import score

        return score
    raise AttributeError(f"module 'batchscore' has no attribute {name!r}")

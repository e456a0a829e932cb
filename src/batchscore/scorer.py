"""Score a batch of rows in memory: the CLI's stages, called on one table instead of a file.

`Scorer` loads the model once and is then called on batches: a pyarrow Table
or RecordBatch, a pandas DataFrame, or a dict of numpy arrays (Ray Data's
"numpy" batch format). A batch is scored as a job scores a chunk, by the same
scoring core (`scoring.open_scorers`), so its labels and scores are the ones
the CLI writes.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, TypeAlias

from .errors import InputError
from .scoring import LIBRARY_HINTS, not_text

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from .scoring import Scorers

    # What a Scorer is called on, and gives back as the same type: a pyarrow Table or RecordBatch, a pandas
    # DataFrame, or a dict of numpy arrays (Ray Data's "numpy" batch format).
    ScorerBatch: TypeAlias = pa.Table | pa.RecordBatch | pd.DataFrame | dict[str, np.ndarray]


class Scorer:
    """A sequence classifier, loaded once, that appends label and score columns to batches of rows.

    Example::

        import pyarrow as pa
        from batchscore import Scorer

        scorer = Scorer(model="models/minilm-vader-sentiment")
        scorer(pa.table({"text": ["I love it", "I hate it", None]}))
        # -> the same table plus `label` and `score` (null where there is no text)

    It is also the callable class that Ray Data instantiates once per actor::

        ds.map_batches(Scorer, fn_constructor_kwargs={"model": path}, batch_format="pyarrow", concurrency=2)

    Keyword arguments mean what the CLI options of the same names mean
    (`batchscore score --help`), checked as those are: `top_k` is 1 (label and
    score) or "all" (also `scores`, every label's score, best first);
    `result_prefix` names the result columns (`pred_label`, ...); `precision` is
    "auto" (fp32 on CPU, bf16 on GPU), "fp32", "bf16", "fp16" or "int8";
    `long_text="window"` scores every window of a long text (with the window
    options) and adds `windows`. A multi-label head (sigmoid:
    multi_label_classification, or one label) also gets `labels`: every label
    scoring at least `threshold`, in label order. `models` lists several models
    (each a mapping of model, prefix and its own options). `cache` (a folder or
    fsspec URL) is the CLI's --cache: texts it holds take their results from it;
    each call adds its new results as one file.

    Text values as in the CLI: numbers (and other scalars) are scored as their
    string form; bytes, lists, structs, invalid UTF-8 or a column of mixed
    types raise `InputError` naming the column.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        text_column: str = "text",
        batch_tokens: int | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        models: Sequence[Mapping[str, Any]] | None = None,
        cache: str | None = None,
        **options: Any,
    ):
        from .cache import ResultCache
        from .config import library_specs
        from .scoring import open_scorers, rules_for

        # Several models: each entry's own settings, the others from the options.
        specs = library_specs({"model": model, **options}, models)
        self.core: Scorers = open_scorers(
            rules_for(specs, text_column, batch_tokens),  # checked before any load
            # Each call's new results are added to the cache as one file before it returns.
            cache=None if cache is None else ResultCache(cache),
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
        )
        # The loaded heads complete the rules: a multi-label head adds `labels`, checked against every batch.
        self.all_rules = [each.rules for each in self.core.models]
        self.rules, self.fields = self.all_rules[0], self.core.fields
        self.text_column = text_column

    @property
    def labels(self) -> list[str]:
        """The (first) model's labels, in id2label order."""
        return self.core.models[0].labels

    def _check_columns(self, names: Iterable[Any]) -> None:
        for rules in self.all_rules:
            rules.check_columns(names, hints=LIBRARY_HINTS)

    def score_table(self, table: pa.Table) -> dict[str, pa.Array]:
        """The result columns for a pyarrow Table, as a dict name -> Arrow array, in the table's row order."""
        self._check_columns(table.column_names)
        return self._results(table.column(self.text_column))

    def _results(self, column: pa.Array | pa.ChunkedArray) -> dict[str, pa.Array]:
        """The result columns for the text column, as Arrow values (names already checked)."""
        import pyarrow as pa

        results = self.core.score_texts(pa.table({self.text_column: text_values(column, self.text_column)}))
        # Ray actors and Spark workers have no "end" to wait for: each call writes its new results to the cache.
        report = self.core.finish()
        for message in [] if report is None else report.refused:
            # A cache that refuses the write costs a later call the scoring, not this one.
            log.warning(f"The cache kept none of these new results: {message}")
        return results

    def __call__(self, batch: ScorerBatch) -> ScorerBatch:
        """`batch` with the result columns appended, as the same type (Table, RecordBatch, DataFrame, dict)."""
        import pyarrow as pa

        if isinstance(batch, pa.RecordBatch):
            return _as_batch(self(pa.Table.from_batches([batch])), batch.schema, self.fields)
        if isinstance(batch, pa.Table):
            columns = self.score_table(batch)
            for field in self.fields:
                batch = batch.append_column(field, columns[field.name])
            return batch
        if isinstance(batch, dict):
            return self._score_numpy(batch)
        if type(batch).__module__.startswith("pandas"):
            return self._score_pandas(batch)
        raise TypeError(
            f"Scorer takes a pyarrow Table or RecordBatch, a pandas DataFrame or a dict of numpy "
            f"arrays, not {type(batch).__name__}."
        )

    def _score_pandas(self, frame: pd.DataFrame) -> pd.DataFrame:
        import pyarrow as pa

        self._check_columns(frame.columns)
        with _converting(self.text_column):
            column = pa.Table.from_pandas(frame[[self.text_column]], preserve_index=False).column(0)
        columns = self._results(column)
        # The input frame is kept as it is (index, dtypes); only the results are converted.
        return frame.assign(**{f.name: columns[f.name].to_pandas().to_numpy() for f in self.fields})

    def _score_numpy(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import pyarrow as pa

        self._check_columns(batch)
        values = np.asarray(batch[self.text_column])
        if values.ndim != 1:
            raise InputError(f"Column '{self.text_column}' must be a 1-d array of texts, not of shape {values.shape}.")
        with _converting(self.text_column):
            column = pa.array(values, from_pandas=True)  # NaN is numpy's (and pandas') missing value
        columns = self._results(column)
        # Numbers as float arrays (NaN where there is no text), labels and listings as object arrays (None).
        results = {
            f.name: columns[f.name].to_numpy(zero_copy_only=False)
            if pa.types.is_floating(f.type)
            else _object_array(columns[f.name].to_pylist())
            for f in self.fields
        }
        return {**batch, **results}


def text_values(column: pa.Array | pa.ChunkedArray, name: str) -> pa.Array | pa.ChunkedArray:
    """`column` (Arrow) as valid UTF-8 strings, by the CLI's rule: numbers, booleans, dates and the like are
    scored as their string form (5 -> "5"); lists, structs and bytes are refused, as is invalid UTF-8."""
    import pyarrow as pa
    import pyarrow.types as t

    kind = not_text(column.type)
    if kind is not None:
        fix = "pass text_column=... naming a string column" if t.is_nested(kind) else "decode the bytes to str first"
        raise InputError(f"Column '{name}' holds {kind}, not text; {fix}.")
    if not (t.is_string(column.type) or t.is_large_string(column.type)):
        with _converting(name):
            column = column.cast(pa.string())
    try:
        column.validate(full=True)  # Arrow does not check UTF-8 when strings are made from buffers
    except pa.ArrowInvalid:
        raise InputError(
            f"Column '{name}' holds invalid UTF-8; decode the bytes with their real encoding "
            "(or errors='replace') before scoring."
        ) from None
    return column


@contextlib.contextmanager
def _converting(name: str) -> Iterator[None]:
    """Arrow's conversion errors (values of mixed types, a cast it has not) as one InputError naming the column."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        # pandas' conversion errors carry (reason, where) as their arguments
        reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        reason = (reason.strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"Column '{name}' cannot be read as text ({reason}); make every value a str (None where there is no text)."
        ) from None


def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-d object array (numpy would make a list of equal-length lists 2-d)."""
    import numpy as np

    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _as_batch(table: pa.Table, schema: pa.Schema, fields: list[pa.Field]) -> pa.RecordBatch:
    import pyarrow as pa

    out = pa.schema(list(schema) + list(fields))
    return pa.RecordBatch.from_arrays([table.column(n).combine_chunks() for n in out.names], schema=out)

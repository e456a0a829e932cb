"""The report's numbers, computed by streaming an output's data files once, a record batch at a time.

Only the columns a chart needs are read (each model's label and score, `scores` for the margin, `windows`, the
--by columns); histograms and counts are added up per batch, so memory stays bounded whatever the output's
size. The samples are picked in the same pass by position only (the lowest scores, and the rows with the
smallest random keys per label: a uniform sample), then their texts are read in a second, short pass over
the few files that hold them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..output.manifest import sum_stats

if TYPE_CHECKING:
    import pyarrow as pa

    from ..output.survey import Survey

BINS = 40  # score histogram bins over [0, 1]
BATCH_ROWS = 65536  # rows decoded at a time
MAX_GROUPS = 100_000  # distinct --by values kept; the rest are counted as "other", so memory stays bounded
MAX_OTHER_VALUES = 100_000  # distinct values past MAX_GROUPS counted (by hash); past this, "more than"
TOP_GROUPS = 30  # groups drawn, the rest summed as "other"
MAX_WINDOW_BIN = 32  # windows per row: the last bin holds this many and more
TEXT_CHARS = 300  # a sample's text, cut to this many characters
OTHER = "other"
NULL = "(null)"
TRUNCATIONS = {"year": (4, "%Y"), "month": (7, "%Y-%m"), "day": (10, "%Y-%m-%d")}
# What text must start with for a :unit: an ISO date (or its year, or year and month), then nothing, a '-' or a
# time. Anything else would be cut to its first 4, 7 or 10 characters and grouped as if it were a date.
ISO_TEXT = {
    "year": r"^\d{4}(-|$)",
    "month": r"^\d{4}-(0[1-9]|1[0-2])(-|$)",
    "day": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([T ]|$)",
}
ISO_FORM = {"year": "YYYY", "month": "YYYY-MM", "day": "YYYY-MM-DD"}
UNITS = ", ".join(f":{unit}" for unit in TRUNCATIONS)


@dataclass(frozen=True)
class By:
    """A --by COLUMN[:year|month|day] grouping."""

    column: str
    unit: str | None = None

    @classmethod
    def parse(cls, text: str) -> By:
        column, _, unit = text.rpartition(":") if text.rpartition(":")[2] in TRUNCATIONS else (text, "", "")
        if not column:
            raise ConfigError(f"--by {text!r} names no column; pass --by COLUMN or --by COLUMN:month.")
        return cls(column, unit or None)

    @property
    def title(self) -> str:
        return self.column + (f" (by {self.unit})" if self.unit else "")

    @property
    def spec(self) -> str:
        return self.column + (f":{self.unit}" if self.unit else "")

    def check(self, schema: pa.Schema) -> None:
        """Refuse, before any row is read, a column the output lacks or one this grouping cannot use (exit 2)."""
        import pyarrow as pa

        if self.column not in schema.names:
            column, _, unit = self.column.rpartition(":")
            if column in schema.names:
                raise ConfigError(f"--by {self.column}: '{unit}' is not a unit; units are {UNITS}.")
            shown = ", ".join(schema.names)
            raise ConfigError(f"--by column '{self.column}' is not in the output; its columns are: {shown}.")
        kind = _plain(schema.field(self.column).type)
        if self.unit is not None and not (pa.types.is_timestamp(kind) or pa.types.is_date(kind) or _is_text(kind)):
            raise ConfigError(
                f"--by {self.spec}: column '{self.column}' holds {kind}, not dates; a :unit applies to a date or "
                f"timestamp column (or ISO date text); pass --by {self.column} to group by its values."
            )
        binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
        if pa.types.is_nested(kind) or binary or pa.types.is_binary_view(kind):
            raise ConfigError(
                f"--by {self.spec}: column '{self.column}' holds {kind}; pass a column of text, numbers or dates."
            )

    def keys(self, values: pa.Array) -> pa.Array:
        """The group of each row, as text: the value, or its date truncated to the unit (`check` has passed)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        kind = values.type
        if self.unit is not None:
            width, fmt = TRUNCATIONS[self.unit]
            if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
                values = pc.strftime(values, format=fmt)
            else:
                self._check_iso(values)
                values = pc.utf8_slice_codeunits(values, 0, width)  # ISO dates and times: 2024-05-17...
        elif not _is_text(kind):
            values = pc.cast(values, pa.string())
        return pc.fill_null(values, NULL)

    def _check_iso(self, values: pa.Array) -> None:
        import pyarrow.compute as pc

        assert self.unit is not None
        dates = pc.match_substring_regex(values, ISO_TEXT[self.unit])
        if pc.all(dates).as_py() is False:  # None: only nulls
            first = pc.filter(values, pc.invert(dates))[0].as_py()
            shown = first if len(first) <= 40 else first[:39] + "…"
            raise ConfigError(
                f"--by {self.spec}: column '{self.column}' holds text that is not an ISO date ({shown!r}); a :unit "
                f"applies to a date or timestamp column, or text starting {ISO_FORM[self.unit]}; pass "
                f"--by {self.column} to group by its values."
            )


def _plain(kind: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


@dataclass
class Overflow:
    """The rows of one --by whose value came after MAX_GROUPS others: counted per label, in "other"."""

    counts: list[int] = field(default_factory=list)  # rows per label
    seen: set[int] = field(default_factory=set)  # the distinct values' hashes, up to MAX_OTHER_VALUES
    more: bool = False  # more distinct values came than `seen` holds

    @property
    def rows(self) -> int:
        return sum(self.counts)

    @property
    def values(self) -> int:
        """Distinct values counted; with `more`, a lower bound."""
        return len(self.seen)

    def add(self, name: str, row: np.ndarray) -> None:
        self.counts += [0] * (len(row) - len(self.counts))
        for label in np.flatnonzero(row):
            self.counts[label] += int(row[label])
        if len(self.seen) < MAX_OTHER_VALUES:
            # 64-bit hashes: two of 100,000 values collide with a chance under 1e-9.
            self.seen.add(hash(name))
        elif hash(name) not in self.seen:
            self.more = True


@dataclass
class Sample:
    file: int  # index into the survey's data files
    row: int  # row in that file
    score: float
    label: str
    key: float = 0.0  # the random key of a random sample
    text: str | None = None
    id: Any = None
    number: int | None = None  # the row's number in the output (input order)


@dataclass
class ModelFacts:
    """One model's columns and everything counted over them."""

    prefix: str
    label_column: str
    score_column: str
    scores_column: str | None  # --top-k all
    windows_column: str | None  # --long-text window
    regression: bool
    low: float  # histogram range (0..1 for probabilities, the values' range for regression)
    high: float
    labels: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # rows per label
    hist: dict[int, np.ndarray] = field(default_factory=dict)  # label -> BINS counts
    low_confidence: list[int] = field(default_factory=list)  # rows per label under the threshold
    margin: np.ndarray | None = None  # BINS counts of first minus second score
    windows: np.ndarray | None = None  # rows per number of windows (1..MAX_WINDOW_BIN)
    groups: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # --by title -> value -> per-label
    overflow: dict[str, Overflow] = field(default_factory=dict)  # --by title -> rows past MAX_GROUPS values
    lowest: list[Sample] = field(default_factory=list)
    random: dict[int, list[Sample]] = field(default_factory=dict)

    def label_index(self, name: str) -> int:
        try:
            return self.labels.index(name)
        except ValueError:
            self.labels.append(name)
            self.counts.append(0)
            self.low_confidence.append(0)
            for per_value in self.groups.values():
                for counts in per_value.values():
                    counts.append(0)
            for overflow in self.overflow.values():
                overflow.counts.append(0)
            return len(self.labels) - 1

    @property
    def scored(self) -> int:
        return sum(self.counts)


@dataclass
class Facts:
    """Everything the page shows, as plain data."""

    survey: Survey
    summary: dict[str, Any]  # the manifest, or the parts' counts summed (a run in progress)
    models: list[ModelFacts]
    by: list[By]
    threshold: float
    samples: int
    files: list[str]
    rows_read: int
    seconds: float  # time to compute the report
    text_column: str | None
    id_column: str | None
    chunk_times: list[dict[str, Any]]  # {chunk, shard, seconds, finished}


def collect(survey: Survey, by: list[By], threshold: float = 0.6, samples: int = 10, seed: int = 0) -> Facts:
    started = time.perf_counter()
    files = survey.data_files
    summary = survey.manifest or sum_stats([p.stats for p in survey.parts])
    schema = _schema(survey, files)
    models = _models(survey, summary, schema)
    for grouping in by:
        grouping.check(schema)
        for model in models:
            model.groups[grouping.title] = {}
            model.overflow[grouping.title] = Overflow([0] * len(model.labels))
    rng = np.random.default_rng(seed)
    rows_read = 0
    for number, path in enumerate(files):
        rows_read += _stream(survey, number, path, models, by, threshold, samples, rng)
    config = survey.config
    text_column = config.get("text_column") if config.get("text_column") in schema.names else None
    id_column = config.get("id_column") if config.get("id_column") in schema.names else None
    _read_samples(survey, files, models, text_column, id_column)
    return Facts(
        survey=survey,
        summary=summary,
        models=models,
        by=by,
        threshold=threshold,
        samples=samples,
        files=files,
        rows_read=rows_read,
        seconds=time.perf_counter() - started,
        text_column=text_column,
        id_column=id_column,
        chunk_times=_chunk_times(survey),
    )


def _schema(survey: Survey, files: list[str]) -> pa.Schema:
    import pyarrow as pa

    if not files:
        return pa.schema([])
    return survey.store.schema(files[0])


def _models(survey: Survey, summary: dict[str, Any], schema: pa.Schema) -> list[ModelFacts]:
    """Each model's columns: one model (its prefix from the config), or each entry of `models`."""
    listed = summary.get("models") if isinstance(summary.get("models"), list) else None
    if listed:
        prefixes = [m.get("prefix") or "" for m in listed]
        summaries = listed
    else:
        prefixes = [survey.config.get("result_prefix") or ""]
        summaries = [summary]
    found = []
    for prefix, own in zip(prefixes, summaries):
        names = schema.names
        label, score = prefix + "label", prefix + "score"
        if label not in names or score not in names:
            continue
        values = own.get("value_summary") if isinstance(own.get("value_summary"), dict) else None
        low, high = 0.0, 1.0
        if values is not None and values.get("min") is not None:
            low, high = float(values["min"]), float(values["max"])
            high = high if high > low else low + 1.0
        found.append(
            ModelFacts(
                prefix=prefix,
                label_column=label,
                score_column=score,
                scores_column=prefix + "scores" if prefix + "scores" in names else None,
                windows_column=prefix + "windows" if prefix + "windows" in names else None,
                regression=values is not None,
                low=low,
                high=high,
                margin=np.zeros(BINS, np.int64) if prefix + "scores" in names else None,
                windows=np.zeros(MAX_WINDOW_BIN + 1, np.int64) if prefix + "windows" in names else None,
            )
        )
    return found


def _stream(
    survey: Survey,
    number: int,
    path: str,
    models: list[ModelFacts],
    by: list[By],
    threshold: float,
    samples: int,
    rng: np.random.Generator,
) -> int:
    """Add one data file's rows to every model's counts; the file's rows."""
    import pyarrow.parquet as pq

    columns: list[str] = []
    for model in models:
        columns += [model.label_column, model.score_column]
        columns += [c for c in (model.scores_column, model.windows_column) if c]
    columns += [g.column for g in by]
    columns = list(dict.fromkeys(columns))
    offset = 0
    with survey.store.fs.open(path, "rb") as fh:
        reader = pq.ParquetFile(fh, read_dictionary=[m.label_column for m in models])
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            keys = {g.title: g.keys(batch.column(g.column)) for g in by}
            for model in models:
                _add(model, batch, number, offset, keys, threshold, samples, rng)
            offset += batch.num_rows
    return offset


def _label_codes(model: ModelFacts, column: pa.Array) -> np.ndarray:
    """Each row's label as an index into model.labels; -1 for no label (no text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    lookup = np.array([model.label_index(str(v)) for v in column.dictionary.to_pylist()] + [-1], dtype=np.int64)
    codes = pc.fill_null(column.indices, len(lookup) - 1).to_numpy(zero_copy_only=False).astype(np.int64)
    return lookup[codes]


def _add(
    model: ModelFacts,
    batch: pa.RecordBatch,
    number: int,
    offset: int,
    keys: dict[str, pa.Array],
    threshold: float,
    samples: int,
    rng: np.random.Generator,
) -> None:
    import pyarrow.compute as pc

    codes = _label_codes(model, batch.column(model.label_column))
    scores = pc.fill_null(batch.column(model.score_column), float("nan")).to_numpy(zero_copy_only=False)
    valid = (codes >= 0) & ~np.isnan(scores)
    labels = len(model.labels)
    code, score = codes[valid], scores[valid].astype(np.float64)
    counts = np.bincount(code, minlength=labels)
    span = model.high - model.low
    bins = np.clip(((score - model.low) / span * BINS).astype(np.int64), 0, BINS - 1)
    hist = np.bincount(code * BINS + bins, minlength=labels * BINS).reshape(labels, BINS)
    under = np.bincount(code[score < threshold], minlength=labels)
    for found in np.flatnonzero(counts):
        label = int(found)
        model.counts[label] += int(counts[label])
        model.low_confidence[label] += int(under[label])
        model.hist[label] = model.hist.get(label, np.zeros(BINS, np.int64)) + hist[label]
    if model.margin is not None and model.scores_column is not None:
        model.margin += _margins(batch.column(model.scores_column))
    if model.windows is not None and model.windows_column is not None:
        windows = pc.fill_null(batch.column(model.windows_column), 0).to_numpy(zero_copy_only=False)
        windows = np.clip(windows[windows > 0], 1, MAX_WINDOW_BIN)
        model.windows += np.bincount(windows, minlength=MAX_WINDOW_BIN + 1)
    for title, values in keys.items():
        _add_groups(model, title, values, codes, valid)
    rows = np.flatnonzero(valid)
    _keep_lowest(model, rows, score, code, number, offset, samples)
    _keep_random(model, rows, score, code, number, offset, samples, rng)


def _margins(column: pa.Array) -> np.ndarray:
    """BINS counts of (best score - second score) over rows with at least two labels in `scores`."""
    offsets = column.offsets.to_numpy()
    flat = column.values.field("score").to_numpy(zero_copy_only=False).astype(np.float64)
    starts, lengths = offsets[:-1], np.diff(offsets)
    firsts = starts[lengths >= 2]
    margin = flat[firsts] - flat[firsts + 1]
    return np.bincount(np.clip((margin * BINS).astype(np.int64), 0, BINS - 1), minlength=BINS)


def _add_groups(model: ModelFacts, title: str, values: pa.Array, codes: np.ndarray, valid: np.ndarray) -> None:
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(values)
    names = encoded.dictionary.to_pylist()
    index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    labels = len(model.labels)
    table = np.bincount(index[valid] * labels + codes[valid], minlength=len(names) * labels).reshape(-1, labels)
    groups = model.groups[title]
    for value_index in np.flatnonzero(table.sum(axis=1)):
        name = str(names[value_index])
        row = table[value_index]
        if name not in groups:
            if len(groups) >= MAX_GROUPS:
                model.overflow[title].add(name, row)
                continue
            groups[name] = [0] * labels
        counts = groups[name]
        for label in np.flatnonzero(row):
            counts[label] += int(row[label])


def _keep_lowest(
    model: ModelFacts, rows: np.ndarray, score: np.ndarray, code: np.ndarray, number: int, offset: int, samples: int
) -> None:
    if not samples or not len(rows):
        return
    if model.lowest and len(model.lowest) >= samples:
        bar = model.lowest[-1].score
        candidates = np.flatnonzero(score < bar)
    else:
        candidates = np.arange(len(rows))
    if len(candidates) > samples:
        candidates = candidates[np.argpartition(score[candidates], samples - 1)[:samples]]
    found = [Sample(number, offset + int(rows[i]), float(score[i]), model.labels[int(code[i])]) for i in candidates]
    model.lowest = sorted(model.lowest + found, key=lambda s: (s.score, s.file, s.row))[:samples]


def _keep_random(
    model: ModelFacts,
    rows: np.ndarray,
    score: np.ndarray,
    code: np.ndarray,
    number: int,
    offset: int,
    samples: int,
    rng: np.random.Generator,
) -> None:
    """A uniform sample per label: the `samples` rows with the smallest random keys (one key per row)."""
    if not samples or not len(rows):
        return
    keys = rng.random(len(rows))
    order = np.lexsort((keys, code))
    sorted_codes = code[order]
    for label in np.unique(sorted_codes):
        start = np.searchsorted(sorted_codes, label, "left")
        stop = min(np.searchsorted(sorted_codes, label, "right"), start + samples)
        kept = model.random.get(int(label), [])
        picked = [
            Sample(number, offset + int(rows[i]), float(score[i]), model.labels[int(label)], key=float(keys[i]))
            for i in order[start:stop]
        ]
        model.random[int(label)] = sorted(kept + picked, key=lambda s: s.key)[:samples]


def _read_samples(
    survey: Survey, files: list[str], models: list[ModelFacts], text_column: str | None, id_column: str | None
) -> None:
    """Fill each sample's text, id and row number, reading only the row groups that hold a sample."""
    import pyarrow.parquet as pq

    wanted: dict[int, list[Sample]] = {}
    for model in models:
        for sample in [*model.lowest, *(s for kept in model.random.values() for s in kept)]:
            wanted.setdefault(sample.file, []).append(sample)
    columns = [c for c in (text_column, id_column) if c]
    chunk_rows = survey.identity.get("chunk_rows") if survey.identity else None
    for number, found in sorted(wanted.items()):
        part = survey.parts[number] if not (survey.complete and survey.layout.single_file) else None
        first = part.index * chunk_rows if part is not None and isinstance(chunk_rows, int) else 0
        for sample in found:
            sample.number = first + sample.row
        if not columns:
            continue
        with survey.store.fs.open(files[number], "rb") as fh:
            reader = pq.ParquetFile(fh)
            starts = np.cumsum([0] + [reader.metadata.row_group(i).num_rows for i in range(reader.num_row_groups)])
            by_group: dict[int, list[Sample]] = {}
            for sample in found:
                by_group.setdefault(int(np.searchsorted(starts, sample.row, "right") - 1), []).append(sample)
            for group, in_group in by_group.items():
                table = reader.read_row_group(group, columns=columns)
                for sample in in_group:
                    row = sample.row - int(starts[group])
                    if text_column:
                        text = table.column(text_column)[row].as_py()
                        sample.text = None if text is None else _cut(str(text))
                    if id_column:
                        sample.id = table.column(id_column)[row].as_py()


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…"


def _chunk_times(survey: Survey) -> list[dict[str, Any]]:
    """When and where each chunk was scored: from the parts' footers, or the merged file's manifest."""
    if survey.parts:
        return [
            {
                "chunk": p.index,
                "shard": (p.shard or (0, 1))[0],
                "seconds": p.progress.get("seconds"),
                "finished": p.progress.get("finished"),
            }
            for p in survey.parts
            if p.progress.get("finished") is not None
        ]
    times = (survey.manifest or {}).get("chunk_times")
    if not isinstance(times, dict):
        return []
    names = ("chunk", "shard", "seconds", "finished")
    return [dict(zip(names, values)) for values in zip(*(times.get(n, []) for n in names))]

"""The report's numbers, computed by streaming an output's data files once, a record batch at a time.

Only the columns a chart needs are read (each model's label and score, `scores` for the margin, `windows`, the
--by columns); histograms and counts are added up per batch, so memory stays bounded whatever the output's
size. The samples are picked in the same pass by position only (the lowest scores, and the rows with the
smallest random keys per label: a uniform sample), then their texts are read in a second, short pass over
the few files that hold them (report.samples). The --by groupings are parsed and checked in report.grouping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..output.manifest import sum_stats
from .bad_rows import bad_samples
from .grouping import By
from .samples import Sample, keep_lowest, keep_random, read_samples

if TYPE_CHECKING:
    import pyarrow as pa

    from ..output.survey import Survey

BINS = 40  # score histogram bins over [0, 1]
BATCH_ROWS = 65536  # rows decoded at a time
MAX_GROUPS = 100_000  # distinct --by values kept; the rest are counted as "other", so memory stays bounded
MAX_OTHER_VALUES = 100_000  # distinct values past MAX_GROUPS counted (by hash); past this, "more than"
TOP_GROUPS = 30  # groups drawn, the rest summed as "other"
MAX_WINDOW_BIN = 32  # windows per row: the last bin holds this many and more
OTHER = "other"


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

    @property
    def picked(self) -> list[Sample]:
        """The samples kept: the lowest scores, then each label's random ones."""
        return [*self.lowest, *(s for kept in self.random.values() for s in kept)]


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
    bad_samples: list[dict[str, Any]] = field(default_factory=list)  # --on-bad-row quarantine: a few of each kind


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
    read_samples(survey, files, [s for model in models for s in model.picked], text_column, id_column)
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
        bad_samples=bad_samples(survey, summary.get("bad_row_kinds") or {}) if summary.get("bad_rows") else [],
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
    model.lowest = keep_lowest(model.lowest, model.labels, rows, score, code, number, offset, samples)
    keep_random(model.random, model.labels, rows, score, code, number, offset, samples, rng)


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

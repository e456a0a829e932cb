"""The report's sample rows: picked by position while the data streams past, then their texts read.

The lowest scores, and the rows with the smallest random keys per label (a uniform sample), are kept as file
and row numbers only; `read_samples` then reads their text and id from just the row groups that hold them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..output.survey import Survey

TEXT_CHARS = 300  # a sample's text, cut to this many characters


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


def keep_lowest(
    kept: list[Sample],
    labels: list[str],
    rows: np.ndarray,
    score: np.ndarray,
    code: np.ndarray,
    number: int,
    offset: int,
    samples: int,
) -> list[Sample]:
    """The `samples` lowest-scored rows of those `kept` and this batch's."""
    if not samples or not len(rows):
        return kept
    if kept and len(kept) >= samples:
        bar = kept[-1].score
        candidates = np.flatnonzero(score < bar)
    else:
        candidates = np.arange(len(rows))
    if len(candidates) > samples:
        candidates = candidates[np.argpartition(score[candidates], samples - 1)[:samples]]
    found = [Sample(number, offset + int(rows[i]), float(score[i]), labels[int(code[i])]) for i in candidates]
    return sorted(kept + found, key=lambda s: (s.score, s.file, s.row))[:samples]


def keep_random(
    kept: dict[int, list[Sample]],
    labels: list[str],
    rows: np.ndarray,
    score: np.ndarray,
    code: np.ndarray,
    number: int,
    offset: int,
    samples: int,
    rng: np.random.Generator,
) -> None:
    """A uniform sample per label: the `samples` rows with the smallest random keys (one key per row), into `kept`."""
    if not samples or not len(rows):
        return
    keys = rng.random(len(rows))
    order = np.lexsort((keys, code))
    sorted_codes = code[order]
    for label in np.unique(sorted_codes):
        start = np.searchsorted(sorted_codes, label, "left")
        stop = min(np.searchsorted(sorted_codes, label, "right"), start + samples)
        before = kept.get(int(label), [])
        picked = [
            Sample(number, offset + int(rows[i]), float(score[i]), labels[int(label)], key=float(keys[i]))
            for i in order[start:stop]
        ]
        kept[int(label)] = sorted(before + picked, key=lambda s: s.key)[:samples]


def read_samples(
    survey: Survey, files: list[str], picked: list[Sample], text_column: str | None, id_column: str | None
) -> None:
    """Fill each sample's text, id and row number, reading only the row groups that hold a sample."""
    import pyarrow.parquet as pq

    wanted: dict[int, list[Sample]] = {}
    for sample in picked:
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

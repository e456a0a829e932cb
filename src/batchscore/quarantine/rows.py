"""Bad records as readers meet them: one reserved column, `BAD`, that rides along with the rows they read.

A lenient reader (`--on-bad-row quarantine`) adds `BAD` to every batch it
yields: null for a good row; for a bad record, a struct saying where it was
(file, line, row, byte offset), what it was (its raw bytes) and what is wrong
with it (kind, message). A record that could not be parsed is a row of nulls
with `kept` false: it has a place in the input's order (so chunks are cut
the same on every run, and the quarantine entry is committed with the chunk
that met it) but no output row. A record that was parsed but whose text is bad
(wrong type, invalid bytes) is a row whose text is null, `kept` true: it keeps
its output row, with null results and an error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import pyarrow as pa

BAD = "_batchscore_bad"

# Every kind of bad record, and what it is: the quarantine's `error_kind`, the manifest's counts, docs/errors.md.
KINDS = {
    "unparseable_record": "a CSV/TSV record that cannot be parsed: an unbalanced quote, too many or too few fields",
    "not_json_object": "a JSON Lines line that is not JSON, or not a JSON object",
    "wrong_type": "a value of the wrong type: text that is a number, list or object, or a column's value that "
    "does not fit its type",
    "invalid_encoding": "text bytes that are not valid in the input's encoding (UTF-8)",
    "undecodable_parquet": "a Parquet page or row group that cannot be decoded: each of its rows",
    "tokenizer_rejected": "a text the model's tokenizer rejects",
}


@dataclass(frozen=True)
class BadRecord:
    kind: str  # one of KINDS
    message: str
    file: str | None = None  # as the user would type it
    line: int | None = None  # 1-based line where the record begins (text files)
    row: int | None = None  # 0-based record number in its file, bad records included
    byte_offset: int | None = None  # where the record begins in the (decompressed) file
    raw: bytes | None = None  # the record as read
    kept: bool = False  # parsed, with its text nulled: it keeps an output row


@functools.cache  # asked for every block a lenient reader reads
def bad_type() -> pa.DataType:
    import pyarrow as pa

    return pa.struct(
        [
            ("kind", pa.string()),
            ("message", pa.string()),
            ("file", pa.string()),
            ("line", pa.int64()),
            ("row", pa.int64()),
            ("byte_offset", pa.int64()),
            ("raw", pa.binary()),
            ("kept", pa.bool_()),
        ]
    )


def bad_array(entries: Sequence[BadRecord | None]) -> pa.Array:
    """One BAD value per row: None for a good row."""
    import pyarrow as pa

    # The few bad records built as structs, then put in place by a take (a null index: a good row's null).
    found = [e for e in entries if e is not None]
    if not found:
        return pa.nulls(len(entries), bad_type())
    places, n = [], 0
    for e in entries:
        places.append(None if e is None else n)
        n += e is not None
    return pa.array([e.__dict__ for e in found], bad_type()).take(pa.array(places, pa.int64()))


def with_bad(batch: pa.RecordBatch | pa.Table, entries: Sequence[BadRecord | None] | None = None) -> pa.Table:
    """`batch` as a table with its BAD column (all null when `entries` is None)."""
    import pyarrow as pa

    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    column = pa.nulls(table.num_rows, bad_type()) if entries is None else bad_array(entries)
    return table.append_column(pa.field(BAD, bad_type()), column)


def null_rows(schema: pa.Schema, entries: Sequence[BadRecord]) -> pa.Table:
    """Records that could not be parsed: rows of nulls in `schema`, each with its BAD value."""
    import pyarrow as pa

    table = pa.table({f.name: pa.nulls(len(entries), f.type) for f in schema}, schema=pa.schema(list(schema)))
    return with_bad(table, entries)


def in_order(parsed: pa.Table, places: Sequence[int | BadRecord], bad: Sequence[BadRecord | None]) -> pa.Table:
    """The records of a block in file order: `places` holds, per record, its row in `parsed` (a record that
    parsed) or a BadRecord (one that did not: a row of nulls); `bad` the BAD value of each row of `parsed`."""
    import pyarrow as pa

    indices = pa.array([p if isinstance(p, int) else None for p in places], pa.int64())
    entries = [bad[p] if isinstance(p, int) else p for p in places]
    return with_bad(parsed.take(indices), entries)


def nulled(table: pa.Table, column: str, rows: dict[int, BadRecord]) -> pa.Table:
    """`table` (with its BAD column) where each of `rows` has `column` null and its BadRecord (kept) as BAD."""
    import pyarrow as pa

    if not rows:
        return table
    # A take with null indices, not a mask over the column: the bad bytes must go, not just be hidden under a
    # null (Arrow's string kernels read every value's bytes, and refuse invalid UTF-8 even in a null slot).
    picks = pa.array([None if i in rows else i for i in range(table.num_rows)], pa.int64())
    index = table.column_names.index(column)
    table = table.set_column(index, table.schema.field(column), table.column(column).take(picks))
    old = table.column(BAD).to_pylist()
    entries = [rows[i] if i in rows else (None if old[i] is None else BadRecord(**old[i])) for i in range(len(old))]
    return table.set_column(table.column_names.index(BAD), pa.field(BAD, bad_type()), bad_array(entries))

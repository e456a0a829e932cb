"""A scored chunk's bad records, set aside: the rows that keep an output row (with an error), and the entries of
the quarantine, which the writer commits with the chunk's part (output/writer.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .rows import BAD

if TYPE_CHECKING:
    import pyarrow as pa

ERROR_COLUMN = "error"  # --on-bad-row quarantine: why a row has no results ("kind: message"), null for a scored row


def quarantine_schema() -> pa.Schema:
    """The quarantine's columns: where each bad record was, what it was, what is wrong with it."""
    import pyarrow as pa

    return pa.schema(
        [
            ("input_row", pa.int64()),  # the record's place among all records of the input (0-based)
            ("source_file", pa.string()),
            ("line", pa.int64()),  # text files: the 1-based line the record begins on
            ("row", pa.int64()),  # the 0-based record number in its file (bad records counted)
            ("byte_offset", pa.int64()),  # text files: where the record begins in the (decompressed) file
            ("raw", pa.binary()),  # the record as read; null where it could not be read (an undecodable page)
            ("error_kind", pa.string()),
            ("error_message", pa.string()),
            ("has_output_row", pa.bool_()),  # kept in the output, results null, `error` set
        ]
    )


def error_field() -> pa.Field:
    import pyarrow as pa

    return pa.field(ERROR_COLUMN, pa.string())


@dataclass
class SplitChunk:
    keep: pa.Array  # bool per row of the chunk: it has an output row
    errors: pa.Array  # per kept row: "kind: message", or null
    entries: pa.Table  # the quarantine's rows for this chunk (quarantine_schema)
    kinds: dict[str, int]  # bad records by kind
    kept: int  # of them, those with an output row

    @property
    def stats(self) -> dict:
        """For the part's footer; the manifest sums them (output/manifest.py)."""
        bad = sum(self.kinds.values())
        return {"bad_rows": bad, "bad_rows_kept": self.kept, "bad_row_kinds": dict(sorted(self.kinds.items()))}


def split_chunk(table: pa.Table, start: int) -> SplitChunk:
    """`table` (a chunk with its BAD column, rows from input record `start` on) into what goes where."""
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = table.column(BAD).combine_chunks() if table.num_rows else pa.array([], table.schema.field(BAD).type)
    found = pc.invert(bad.is_null())
    kept_flag = pc.fill_null(bad.field("kept"), True)
    keep = pc.or_(bad.is_null(), kept_flag)
    where = pc.indices_nonzero(found)
    entries = bad.take(where)
    kinds = Counter(entries.field("kind").to_pylist())
    quarantine = pa.Table.from_arrays(
        [
            pc.add(where.cast(pa.int64()), start),
            entries.field("file"),
            entries.field("line"),
            entries.field("row"),
            entries.field("byte_offset"),
            entries.field("raw"),
            entries.field("kind"),
            entries.field("message"),
            entries.field("kept"),
        ],
        schema=quarantine_schema(),
    )
    errors = pc.if_else(
        found, pc.binary_join_element_wise(bad.field("kind"), bad.field("message"), ": "), pa.scalar(None, pa.string())
    ).filter(keep)
    kept = int(pc.sum(entries.field("kept")).as_py() or 0)
    return SplitChunk(keep, errors, quarantine, dict(kinds), kept)

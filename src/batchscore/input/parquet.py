"""Parquet files, read row group by row group; any range of rows is found through the footers' row counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from ..errors import InputError
from ..location import display
from ..quarantine.rows import BAD
from .base import READ_BATCH_ROWS
from .encoding import invalid_utf8
from .files import FileReader
from .messages import unreadable

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds

    from .resolve import FileSet


@dataclass
class _RowGroupCursor:
    """Where the open row group's reader stands."""

    position: int  # index of the row group in ParquetReader.groups
    batches: Iterator  # its remaining record batches
    row: int  # global index of the next row it hands out
    columns: list[str] | None
    leftover: pa.RecordBatch | pa.Table | None = None  # the rest of a batch a request stopped inside; starts at `row`


class ParquetReader(FileReader):
    fmt = "parquet"

    def __init__(
        self,
        found: FileSet,
        spec: str,
        *,
        encoding: str | None = None,
        infer_types: bool = False,
        lenient: bool = False,
    ) -> None:
        import pyarrow as pa
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(found.paths, format="parquet", filesystem=found.fs)
            self.fragments = {f.path: f for f in dataset.get_fragments()}
            self.total_rows = sum(f.metadata.num_rows for f in self.fragments.values())
        except (pa.ArrowException, OSError) as exc:
            one = found.paths[0] if len(found.paths) == 1 else None
            raise InputError(unreadable(spec, "parquet", exc, found.fs, one)) from None
        super().__init__(found, spec, encoding=encoding, infer_types=infer_types, lenient=lenient)
        # Every row group of every file, in input order, and the global index of its first row.
        self.groups: list[tuple[str, ds.Fragment]] = []  # (file, one of its row groups)
        self.starts: list[int] = []
        self.rows_before: dict[tuple[str, int], int] = {}  # (file, row group id) -> the file's rows before it
        row = 0
        for path in self.paths:
            file_start = row
            for group, rows in self._row_groups(path):
                self.groups.append((path, group))
                self.starts.append(row)
                self.rows_before[path, group.row_groups[0].id] = row - file_start
                row += rows
        self._cursor: _RowGroupCursor | None = None

    def file_schemas(self) -> dict[str, pa.Schema]:
        return {path: self.fragments[path].physical_schema for path in self.paths}

    def known_rows(self) -> int | None:
        return self.total_rows

    def read_file(self, path: str, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        # Row group by row group, so that a bad value is reported with where it is.
        for group, _ in self._row_groups(path):
            yield from self._group_batches(path, group, columns)

    def read_rows(self, columns: list[str] | None, start: int, stop: int) -> Iterator[pa.RecordBatch | pa.Table]:
        """Rows [start, stop): only the row groups that hold them are read.

        A request that starts at or after where the previous one stopped, in the
        same row group, continues that row group's reader, so a process that reads
        its chunks in order decodes each row group once.
        """
        import bisect

        if not self.groups:
            return
        position = max(bisect.bisect_right(self.starts, start) - 1, 0)
        cursor = self._cursor
        if cursor is None or cursor.position != position or cursor.row > start or cursor.columns != columns:
            cursor = self._open_group(position, columns)
        while cursor.row < stop:
            batch, cursor.leftover = cursor.leftover, None
            if batch is None:
                batch = next(cursor.batches, None)
                if batch is None:  # this row group is done: on to the next, if any
                    if cursor.position + 1 >= len(self.groups):
                        return
                    cursor = self._open_group(cursor.position + 1, columns)
                    continue
                self.rows_decoded += batch.num_rows
            low, high = max(start - cursor.row, 0), min(stop - cursor.row, batch.num_rows)
            piece = batch.slice(low, high - low) if low < high else None
            # The cursor moves before the rows are handed out: a caller that stops early loses nothing.
            done = high < batch.num_rows
            if done:  # the rest waits for the next request
                cursor.leftover = batch.slice(high)
                cursor.row += high
            else:
                cursor.row += batch.num_rows
            if piece is not None:
                yield piece
            if done:
                return

    def _open_group(self, position: int, columns: list[str] | None) -> _RowGroupCursor:
        path, group = self.groups[position]
        batches = (
            self.partitions.add(b, path, columns)
            for b in self._group_batches(path, group, self.partitions.in_files(columns))
        )
        self._cursor = _RowGroupCursor(position, batches, self.starts[position], columns)
        return self._cursor

    def _row_groups(self, path: str) -> list[tuple[ds.Fragment, int]]:
        """(fragment of one row group, its row count) for each row group of `path`, in file order."""
        return [(group, group.row_groups[0].num_rows) for group in self.fragments[path].split_by_row_group()]

    def _group_batches(
        self, path: str, group: ds.Fragment, columns: list[str] | None
    ) -> Iterator[pa.RecordBatch | pa.Table]:
        import pyarrow as pa

        at = f"{display(self.fs, path)}, row group {group.row_groups[0].id}"
        if self.lenient:
            yield from self._lenient_group(path, group, [c for c in columns if c != BAD] if columns else columns, at)
            return
        try:
            schema = self.files_schema.remove_metadata()
            for batch in group.to_batches(schema=schema, columns=columns, batch_size=READ_BATCH_ROWS):
                _check_utf8(batch, at)
                yield batch
        except (pa.ArrowException, OSError) as exc:
            raise InputError(unreadable(at, "parquet", exc)) from None

    def _lenient_group(self, path: str, group: ds.Fragment, columns: list[str] | None, at: str) -> Iterator[pa.Table]:
        """--on-bad-row quarantine: a row group's batches with the BAD column. Rows with invalid UTF-8 keep their
        row with the text (and any other bad string) null; the rows of a page that cannot be decoded, from the
        first row not yet read to the end of the row group, are bad records without a row."""
        import pyarrow as pa

        from ..quarantine.rows import BadRecord, null_rows, with_bad

        where = display(self.fs, path)
        first = self.rows_before[path, group.row_groups[0].id]
        total = group.row_groups[0].num_rows
        done = 0
        schema = self.files_schema.remove_metadata()
        wanted = pa.schema([schema.field(c) for c in columns]) if columns is not None else schema
        try:
            for batch in group.to_batches(schema=schema, columns=columns, batch_size=READ_BATCH_ROWS):
                table = with_bad(batch)
                invalid = invalid_utf8(batch)
                if invalid:
                    from ..quarantine.rows import nulled

                    for row, values in invalid.items():
                        message = "invalid UTF-8 in column " + ", ".join(f"'{n}'" for n, _ in values)
                        # `raw`: the first bad value's bytes, as read (a Parquet row has no bytes of its own)
                        entry = BadRecord(
                            "invalid_encoding", message, where, row=first + done + row, raw=values[0][1], kept=True
                        )
                        for name, _ in values:
                            table = nulled(table, name, {row: entry})
                done += batch.num_rows
                yield table
        except (pa.ArrowException, OSError) as exc:
            message = f"{at}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            entries = [BadRecord("undecodable_parquet", message, where, row=first + row) for row in range(done, total)]
            if entries:
                yield null_rows(wanted, entries)


def _check_utf8(batch: pa.RecordBatch, where: str) -> None:
    """Parquet readers do not validate strings: invalid UTF-8 would crash the tokenizer or be copied out."""
    import pyarrow as pa

    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raise InputError(
                    f"Cannot read '{where}' as parquet: column '{name}' holds invalid UTF-8; "
                    "export it again as valid UTF-8 text (or as binary, if it is not text)."
                ) from None

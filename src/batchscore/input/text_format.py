"""How pyarrow reads CSV, TSV and JSON Lines, row for row as written.

- CSV (RFC 4180): quoted fields may hold commas, quotes ("") and newlines. Every
  column is read as text, exactly as written (`007` stays `007`), unless the
  user asks for type inference. A quote that never closes is an error naming
  the line where its field began, never a silent merge of the rest of the file.
- TSV (IANA text/tab-separated-values): no quoting at all; a `"` is an ordinary
  character, and a field cannot hold a tab or a newline.
- JSON Lines: types as written; a column whose type changes between lines is
  an error naming the line.
- An empty line is a record in a one-column CSV/TSV (an empty field: pyarrow and
  polars write a null so, and Python's csv module reads it so); in a file of two
  or more columns it holds no record and is skipped (as pandas, Spark and
  csv.DictReader skip it).
- A field larger than the read block (tens of MB): the block grows and the file
  is read again from its start, skipping the rows already given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Iterator

from ..errors import InputError
from .locate import find_open_quote
from .streams import open_for_arrow

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

BLOCK_SIZE = 1 << 22
MAX_BLOCK_SIZE = 1 << 30


@dataclass(frozen=True)
class TextFormat:
    fmt: str  # "csv", "tsv" or "json"
    text_column: str = "text"
    encoding: str | None = None
    infer_types: bool = False  # CSV/TSV: type columns from their values instead of reading them as text

    # --- options --------------------------------------------------------------------------------------------

    def _csv_options(
        self,
        block_size: int,
        column_types: dict | None = None,
        columns: list[str] | None = None,
        one_column: bool = False,
    ) -> tuple:
        import pyarrow.csv as pacsv

        # One column: an empty line is a record holding an empty field (pyarrow and polars write a null so).
        # More columns: an empty line holds no record (a writer writes `,` for two empty fields).
        empty_lines = {"ignore_empty_lines": not one_column}
        if self.fmt == "tsv":  # IANA TSV: no quoting, so no field spans lines
            parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, newlines_in_values=False, **empty_lines)
        else:  # reviews and comments often hold quoted newlines: slower, but correct
            parse = pacsv.ParseOptions(delimiter=",", newlines_in_values=True, **empty_lines)
        convert = pacsv.ConvertOptions(column_types=column_types or {}, include_columns=columns or [])
        # One thread: fewer of pyarrow's threads reading a Python stream (see open_for_arrow).
        # Measured: no slower here.
        read = pacsv.ReadOptions(block_size=block_size, encoding=self.encoding or "utf8", use_threads=False)
        return read, parse, convert

    def _reader(
        self,
        stream: IO[bytes],
        block_size: int,
        schema: pa.Schema | None = None,
        columns: list[str] | None = None,
        one_column: bool = False,
    ) -> pa.RecordBatchReader:
        import pyarrow as pa
        import pyarrow.json as pajson

        if self.fmt == "json":
            parse = pajson.ParseOptions(
                explicit_schema=_project(schema, columns),
                unexpected_field_behavior="ignore" if schema is not None else "infer",
            )
            return pajson.open_json(
                stream, read_options=pajson.ReadOptions(block_size=block_size, use_threads=False), parse_options=parse
            )
        import pyarrow.csv as pacsv

        if schema is None:  # first look: the header, and first-block types when inferring
            types = {self.text_column: pa.string()}
        else:
            types = {f.name: f.type for f in schema}
        return pacsv.open_csv(stream, *self._csv_options(block_size, types, columns, one_column))

    def parse_block(
        self,
        data: bytes,
        schema: pa.Schema,
        columns: list[str] | None,
        one_column: bool = False,
    ) -> pa.Table:
        """Records held whole in `data` (CSV/TSV: the header first), read as `batches` reads them; a record with
        too many or too few fields is pyarrow's error."""
        import io

        block_size = max(len(data) + 1, 1 << 16)  # every record in one block: none straddles
        return self._reader(io.BytesIO(data), block_size, schema, columns, one_column).read_all()

    # --- reading --------------------------------------------------------------------------------------------

    def schema(self, fs: AbstractFileSystem, path: str, where: str = "", sample: bytes | None = None) -> pa.Schema:
        """The file's columns and their types as they will be read; from `sample` where given (the header and
        the good records of the first block, under --on-bad-row quarantine)."""
        import pyarrow as pa

        found = self._first_look(fs, path, where, sample=sample)
        if self.fmt != "json" and len(found) == 1:  # read again as its records will be: empty lines count
            strict = self._first_look(fs, path, where, one_column=True, sample=sample)
            if strict.names != found.names:
                raise InputError(
                    f"Cannot read '{where or path}' as {self.fmt}: line 1 is empty where the header "
                    "belongs (in a one-column file an empty line is a record); remove the empty "
                    "lines above the header."
                )
            found = strict
        if self.fmt == "json" or self.infer_types:
            return found
        return pa.schema([pa.field(name, pa.string()) for name in found.names])

    def _first_look(
        self, fs: AbstractFileSystem, path: str, where: str, one_column: bool = False, sample: bytes | None = None
    ) -> pa.Schema:
        import io

        import pyarrow as pa

        if sample is not None:
            size = max(len(sample) + 1, 1 << 16)
            return self._reader(io.BytesIO(sample), size, one_column=one_column).schema
        block_size = BLOCK_SIZE
        while True:
            try:
                stream, _ = open_for_arrow(fs, path)
                with stream:
                    return self._reader(stream, block_size, one_column=one_column).schema
            except pa.ArrowInvalid as exc:
                block_size = self._larger_block(exc, block_size, fs, path, where)  # a first row larger than the block

    def batches(
        self,
        fs: AbstractFileSystem,
        path: str,
        schema: pa.Schema,
        columns: list[str] | None = None,
        where: str = "",
        one_column: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of `columns` (all if None), typed as `schema`, in file order.

        `one_column`: the file itself has one column (then its empty lines are records).
        """
        import pyarrow as pa

        given, block_size = 0, BLOCK_SIZE
        while True:
            stream, counter = open_for_arrow(fs, path)
            try:
                with stream:
                    skip = given
                    for batch in self._reader(stream, block_size, schema, columns, one_column):
                        if skip:  # rows already given before the block grew
                            cut = min(skip, batch.num_rows)
                            batch, skip = batch.slice(cut), skip - cut
                            if not batch.num_rows:
                                continue
                        given += batch.num_rows
                        yield batch
                break
            except pa.ArrowInvalid as exc:
                # a field larger than the block: read again with room for it
                block_size = self._larger_block(exc, block_size, fs, path, where)
        if self.fmt == "csv" and counter is not None and counter.quotes % 2:
            find_open_quote(fs, path, where or path, self.encoding)

    def _larger_block(self, exc: Exception, block_size: int, fs: AbstractFileSystem, path: str, where: str) -> int:
        """The block to read again with, where a row did not fit in `block_size`; else `exc`, raised (a CSV quote
        left open first, which makes rows look ragged, raised as that)."""
        if "straddl" in str(exc) and block_size < MAX_BLOCK_SIZE:
            return block_size * 4
        if self.fmt == "csv":
            find_open_quote(fs, path, where or path, self.encoding)
        raise exc

    def verify(self, fs: AbstractFileSystem, path: str, where: str, rows: int | None) -> None:
        """The up-front check of a local CSV: no quote left open, and as many records as pyarrow read (`rows`).

        Python's csv module is the second reader: where the two disagree, some
        rows would be lost or shifted without a word.
        """
        counted = find_open_quote(fs, path, where, self.encoding)
        if rows is not None and counted is not None and counted != rows:
            raise InputError(
                f"Cannot read '{where}' as csv: Python's csv module reads {counted:,} records where "
                f"pyarrow read {rows:,}; check the file's quotes and line breaks, or export it "
                "again."
            )


def _project(schema: pa.Schema | None, columns: list[str] | None) -> pa.Schema | None:
    import pyarrow as pa

    if schema is None:
        return None
    if columns is None:
        return schema
    return pa.schema([schema.field(c) for c in columns])

"""Stream CSV, TSV and JSON Lines files, plain or compressed, as Arrow record batches, row for row as written.

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
- `.gz`, `.bz2`, `.zst`, `.xz`: decompressed while streaming, never to disk.
  Whole streams back to back (`cat a.gz b.gz`) are read whole; any byte after
  the last whole stream is an error, for every codec.
- A field larger than the read block (tens of MB): the block grows and the file
  is read again from its start, skipping the rows already given.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Iterator

from .errors import InputError

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".xz": "xz"}
BLOCK_SIZE = 1 << 22
MAX_BLOCK_SIZE = 1 << 30


def split_compression(path: str) -> tuple[str, str | None]:
    """'a.csv.gz' -> ('a.csv', 'gzip'); 'a.csv' -> ('a.csv', None)."""
    lower = path.lower()
    for ext, codec in COMPRESSIONS.items():
        if lower.endswith(ext):
            return path[: -len(ext)], codec
    return path, None


def open_stream(fs, path: str):
    """A binary stream of the file's (decompressed) bytes; iterating it gives lines."""
    raw = fs.open(path, "rb")
    codec = split_compression(path)[1]
    if codec == "zstd":  # no zstd in Python's standard library (before 3.14): Arrow's decoder
        import pyarrow as pa

        return io.BufferedReader(pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), codec), 1 << 20)
    if codec:
        return io.BufferedReader(_Streams(raw, codec), 1 << 20)
    return raw


class TrailingData(OSError):
    """Bytes after the last whole compressed stream."""


def _decompressor(codec: str, first: bool = True):
    if codec == "gzip":
        import zlib

        return zlib.decompressobj(wbits=31)  # 16 + 15: deflate data inside a gzip header and trailer
    if codec == "bz2":
        import bz2

        return bz2.BZ2Decompressor()
    import lzma

    # The first stream: .xz, or the older .lzma format; later ones only .xz (to the auto-detector a run of
    # zero bytes is a series of empty .lzma streams).
    return lzma.LZMADecompressor(lzma.FORMAT_AUTO if first else lzma.FORMAT_XZ)


class _Streams(io.RawIOBase):
    """The decompressed bytes of a gzip, bz2 or xz file: whole streams back to back, and nothing after them.

    One policy for every codec: Arrow's gzip, bz2 and zstd readers refuse bytes
    after the last stream, while Python's lzma and bz2 modules drop them without
    a word (a damaged or appended-to file would pass for a shorter one).
    """

    def __init__(self, raw, codec: str):
        super().__init__()
        self.raw, self.codec = raw, codec
        self.decoder = _decompressor(codec)
        self.offset = 0  # compressed bytes read so far
        self.stream_start, self.stream_out = 0, 0  # where the current stream starts; bytes it has given

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._read(len(buffer)) if len(buffer) else b""
        buffer[: len(data)] = data
        return len(data)

    def _read(self, size: int) -> bytes:
        while True:
            if self.decoder.eof:  # a stream ended: the file ends too, or another stream starts
                rest = self.decoder.unused_data or self._raw()
                if not rest:
                    return b""
                self.decoder = _decompressor(self.codec, first=False)
                self.stream_start, self.stream_out = self.offset - len(rest), 0
                data = self._feed(rest, size)
            else:
                zlib_style = hasattr(self.decoder, "unconsumed_tail")  # zlib hands unread input back
                hungry = not self.decoder.unconsumed_tail if zlib_style else self.decoder.needs_input
                more = self._raw() if hungry else b""
                data = self._feed(more, size)
                if hungry and not more and not data and not self.decoder.eof:
                    if self.stream_start and not self.stream_out:
                        raise self._trailing()
                    raise EOFError("truncated compressed stream: the file ends inside it")
            if data:
                self.stream_out += len(data)
                return data

    def _raw(self) -> bytes:
        data = self.raw.read(1 << 16)
        self.offset += len(data)
        return data

    def _feed(self, data: bytes, size: int) -> bytes:
        import lzma
        import zlib

        decoder = self.decoder
        try:
            if hasattr(decoder, "unconsumed_tail"):
                return decoder.decompress(decoder.unconsumed_tail + data, size)
            return decoder.decompress(data, size)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            if self.stream_start and not self.stream_out:  # after a whole stream, bytes that start none
                raise self._trailing() from None
            raise OSError(f"{self.codec} data is corrupt ({exc})") from None

    def _trailing(self) -> TrailingData:
        return TrailingData(f"trailing data after the compressed stream (from byte {self.stream_start:,})")

    def close(self):
        self.raw.close()
        super().close()


def _zstd_end(fh, size: int) -> int | None:
    """Where the file's whole zstd frames end, from frame and block headers alone (nothing is decompressed);
    None where the file ends inside a frame."""

    def take(count: int) -> bytes:
        data = fh.read(count)
        if len(data) < count:
            raise EOFError
        return data

    def skip(count: int) -> None:
        fh.seek(count, 1)
        if fh.tell() > size:
            raise EOFError

    end = 0
    try:
        while True:
            head = fh.read(4)
            magic = int.from_bytes(head, "little")
            if len(head) == 4 and magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: its length, then any bytes
                skip(int.from_bytes(take(4), "little"))
            elif len(head) == 4 and magic == 0xFD2FB528:
                descriptor = take(1)[0]
                single_segment = descriptor >> 5 & 1
                # window descriptor, dictionary id, content size: their lengths are in the descriptor
                skip(1 - single_segment + (0, 1, 2, 4)[descriptor & 3] + (single_segment, 2, 4, 8)[descriptor >> 6])
                while True:
                    block = int.from_bytes(take(3), "little")
                    skip(1 if block >> 1 & 3 == 1 else block >> 3)  # an RLE block holds one byte
                    if block & 1:  # the frame's last block
                        break
                if descriptor >> 2 & 1:
                    skip(4)  # content checksum
            else:
                return end
            end = fh.tell()
    except EOFError:
        return None


def trailing_data(fs, path: str) -> str | None:
    """The reason, when a compressed file holds bytes after its last whole stream; else None.

    Run when reading a compressed file failed, so that every codec's refusal
    reads the same (Arrow's own messages differ by codec).
    """
    codec = split_compression(path)[1]
    try:
        if codec == "zstd":
            size = fs.size(path)
            with fs.open(path, "rb") as fh:
                end = _zstd_end(fh, size)
            return f"trailing data after the compressed stream (from byte {end:,})" if end and end < size else None
        if codec:
            with _Streams(fs.open(path, "rb"), codec) as stream:
                while stream.read(1 << 20):
                    pass
    except TrailingData as exc:
        return str(exc)
    except (OSError, EOFError, ValueError):
        return None
    return None


def open_for_arrow(fs, path: str):
    """The stream pyarrow's readers get, and whether its quotes are counted.

    Local files (plain, gzip, bz2, zstd) open as native Arrow streams: no reader
    thread ever calls into Python, which at interpreter exit (after an error) can
    abort the process. Anything else is a Python stream through fsspec, passing
    through a quote counter (remote CSV is not given the strict check up front).
    """
    import pyarrow as pa

    codec = split_compression(path)[1]
    if _is_local(fs) and codec != "xz":
        return pa.input_stream(path, compression=codec), None
    counter = _QuoteCounter(open_stream(fs, path))
    return io.BufferedReader(counter, 1 << 20), counter


def _is_local(fs) -> bool:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return protocol in ("file", "local")


class _QuoteCounter(io.RawIOBase):
    """Passes bytes through, counting `"`: an odd count at the end means a quote may never close."""

    def __init__(self, raw):
        super().__init__()
        self.raw, self.quotes = raw, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.raw.read(len(buffer))
        self.quotes += data.count(b'"')
        buffer[: len(data)] = data
        return len(data)

    def close(self):
        self.raw.close()
        super().close()


@dataclass(frozen=True)
class TextFormat:
    fmt: str  # "csv", "tsv" or "json"
    text_column: str = "text"
    encoding: str | None = None
    infer_types: bool = False  # CSV/TSV: type columns from their values instead of reading them as text

    # --- options --------------------------------------------------------------------------------------------

    def _csv_options(self, block_size: int, column_types: dict | None = None, columns=None, one_column=False):
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

    def _reader(self, stream, block_size: int, schema=None, columns=None, one_column=False):
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

    # --- reading --------------------------------------------------------------------------------------------

    def schema(self, fs, path: str, where: str = ""):
        """The file's columns and their types as they will be read."""
        import pyarrow as pa

        found = self._first_look(fs, path, where)
        if self.fmt != "json" and len(found) == 1:  # read again as its records will be: empty lines count
            strict = self._first_look(fs, path, where, one_column=True)
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

    def _first_look(self, fs, path: str, where: str, one_column=False):
        import pyarrow as pa

        block_size = BLOCK_SIZE
        while True:
            try:
                stream, _ = open_for_arrow(fs, path)
                with stream:
                    return self._reader(stream, block_size, one_column=one_column).schema
            except pa.ArrowInvalid as exc:
                if "straddl" in str(exc) and block_size < MAX_BLOCK_SIZE:
                    block_size *= 4  # a first row larger than the block
                    continue
                if self.fmt == "csv":  # a quote left open makes rows look ragged: say which it is
                    self.find_open_quote(fs, path, where or path)
                raise

    def batches(self, fs, path: str, schema, columns=None, where: str = "", one_column=False) -> Iterator:
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
                if "straddl" in str(exc) and block_size < MAX_BLOCK_SIZE:
                    block_size *= 4  # a field larger than the block: read again with room for it
                    continue
                if self.fmt == "csv":  # a quote left open makes rows look ragged: say which it is
                    self.find_open_quote(fs, path, where or path)
                raise
        if self.fmt == "csv" and counter is not None and counter.quotes % 2:
            self.find_open_quote(fs, path, where or path)

    def verify(self, fs, path: str, where: str, rows: int | None) -> None:
        """The up-front check of a local CSV: no quote left open, and as many records as pyarrow read (`rows`).

        Python's csv module is the second reader: where the two disagree, some
        rows would be lost or shifted without a word.
        """
        counted = self.find_open_quote(fs, path, where)
        if rows is not None and counted is not None and counted != rows:
            raise InputError(
                f"Cannot read '{where}' as csv: Python's csv module reads {counted:,} records where "
                f"pyarrow read {rows:,}; check the file's quotes and line breaks, or export it "
                "again."
            )

    def find_open_quote(self, fs, path: str, where: str) -> int | None:
        """Raise naming the line where a quoted field starts that never closes properly; else count the records.

        pyarrow ends such a field at the next quote it finds, however many lines on,
        and keeps whatever follows: rows vanish into one text. Python's strict csv
        parser refuses text after a closing quote. Run on every local CSV by the
        up-front scan, and on any CSV whose quote count is odd or that fails to parse
        (a quote inside an unquoted field, like 5" screen, is legal).
        """
        import csv

        csv.field_size_limit(1 << 30)
        errors = "replace" if self.encoding and "replace" in self.encoding.lower() else "strict"
        encoding = "utf-8" if errors == "replace" else (self.encoding or "utf-8")
        with open_stream(fs, path) as raw, io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="") as fh:
            reader = csv.reader(fh, strict=True)
            start, width, records = 1, None, 0
            try:
                for row in reader:
                    start = reader.line_num + 1
                    if width is None:  # the header: the first line that is not empty, as pyarrow reads it
                        width = len(row) or None
                    elif row or width == 1:  # the empty-line rule of _csv_options
                        records += 1
            except UnicodeDecodeError:
                return None  # not a quote problem: pyarrow's own error (invalid UTF-8, line located) stands
            except csv.Error:
                raise InputError(
                    f"Cannot read '{where}' as csv: the quoted field that starts on line {start} is "
                    "never closed properly; close its quote (a quote inside a quoted field is "
                    'written ""), or export the file again.'
                ) from None
        return records

    def locate_csv_error(self, fs, path: str, message: str) -> int | None:
        """The line where pyarrow's streaming CSV reader (which numbers nothing) stopped."""
        import csv

        if "invalid UTF8" in message and not self.encoding:
            with open_stream(fs, path) as fh:
                for number, raw in enumerate(fh, 1):
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError:
                        return number
            return None
        ragged = re.search(r"Expected (\d+) columns, got (\d+)", message)
        bad_value = re.search(
            r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to \w+: invalid value '(.*)'$", message
        )
        if not (ragged or bad_value):
            return None
        csv.field_size_limit(1 << 30)
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if self.fmt == "tsv" else {}
        encoding = "utf-8" if not self.encoding or "replace" in self.encoding.lower() else self.encoding
        with open_stream(fs, path) as raw, io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="") as fh:
            reader = csv.reader(fh, **dialect)
            start, width = 1, None
            for row in reader:
                if width is None:
                    width = len(row)
                elif (ragged and len(row) != width) or (
                    bad_value
                    and len(row) > int(bad_value.group(1))
                    and row[int(bad_value.group(1))] == bad_value.group(2)
                ):
                    return start
                start = reader.line_num + 1
        return None

    def locate_type_change(self, fs, path: str, message: str) -> str | None:
        """JSON Lines: where a column's type changes ("changed from number to string", or an
        integer column meeting 2.5: "Failed to convert JSON to int64"), as two line numbers."""
        match = re.search(r"Column\(/([^)]*)\) changed from", message)
        if not match and "Failed to convert JSON" not in message:
            return None
        only = match.group(1) if match else None
        kinds = {
            str: "string",
            bool: "boolean",
            list: "array",
            dict: "object",
            int: "number" if only else "whole number",
            float: "number" if only else "fractional number",
        }
        first: dict = {}
        with open_stream(fs, path) as fh:
            for number, raw in enumerate(fh, 1):
                try:
                    row = json.loads(raw)
                except ValueError:
                    return None
                if not isinstance(row, dict):
                    return None
                for column, value in row.items() if only is None else [(only, row.get(only))]:
                    if value is None:
                        continue
                    kind = kinds.get(type(value), type(value).__name__)
                    seen = first.setdefault(column, (kind, number))
                    if kind != seen[0]:
                        return (
                            f"column '{column}' is a {seen[0]} on line {seen[1]} and a {kind} on line "
                            f"{number}; give the column one type in every line (e.g. quote the numbers)"
                        )
        return None


def _project(schema, columns):
    import pyarrow as pa

    if schema is None:
        return None
    if columns is None:
        return schema
    return pa.schema([schema.field(c) for c in columns])

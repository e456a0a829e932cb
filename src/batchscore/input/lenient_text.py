"""CSV, TSV and JSON Lines under `--on-bad-row quarantine`: every record read, the bad ones marked, none fatal.

The file is read in blocks that end where a record ends (CSV: at a line break
outside quotes). A block is first parsed whole by pyarrow, exactly as the
strict reader parses it (text_format.py): the fast path, taken by every block
without a bad record. A block that fails (an error, a ragged row, invalid
UTF-8, a quote left open) is read again record by record: each record is
classified in Python (csv module, json module), the bad ones become BAD rows
(quarantine.rows) at their place in the file, and the good ones are parsed by
pyarrow together, so good rows are typed the same on both paths.

A quote that never closes (CSV) makes only the line it opens on bad: reading
starts again at the next line, so one stray quote loses one record, not the
rest of the file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from ..quarantine.rows import BadRecord, in_order, nulled, with_bad

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

    from .text_format import TextFormat

# What a block is read in: small, so that at 0.1% bad records most blocks are still read whole by pyarrow (the
# fast path); a block with a bad record is read record by record, at Python's pace.
BLOCK_BYTES = 1 << 16
MAX_OPEN_QUOTE_BYTES = 1 << 26  # a CSV quote still open after this much: cut the block anyway (resynchronize)


@dataclass
class _Where:
    """Where the next block starts in its file."""

    offset: int = 0  # bytes
    line: int = 1  # 1-based line
    row: int = 0  # records before it, bad ones included


@dataclass
class _Records:
    """A block, record by record: the good ones' bytes (for pyarrow), and each record's place."""

    good: list[bytes] = field(default_factory=list)
    places: list[int | BadRecord] = field(default_factory=list)  # index into good, or the bad record
    kept: dict[int, BadRecord] = field(default_factory=dict)  # index into good -> its bad text (row kept)
    spots: list[tuple[int, int, int]] = field(default_factory=list)  # each good record's (line, row, byte offset)
    used: int = 0  # bytes of the block these records are (the rest: a record the next block begins with)


class LenientText:
    """One file of a text format read leniently; `batches` yields tables with the BAD column."""

    def __init__(
        self,
        text: TextFormat,
        fs: AbstractFileSystem,
        path: str,
        where: str,
        schema: pa.Schema | None,
        columns: list[str] | None,
        width: int,
        names: list[str] | None = None,
    ) -> None:
        self.text, self.fs, self.path, self.where = text, fs, path, where
        self.schema, self.columns = schema, columns
        self.width = width  # fields in the file's header
        self.one_column = width == 1
        self.names = names if names is not None else schema.names if schema is not None else []
        out = schema if columns is None or schema is None else _project(schema, columns)
        self.out_schema: pa.Schema = out if out is not None else _project(None, [])
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a field of a 50 MB text is a field

    def batches(self) -> Iterator[pa.Table]:
        from .streams import open_stream

        with open_stream(self.fs, self.path) as stream:
            header = b""
            at = _Where()
            if self.text.fmt != "json":
                header = stream.readline()
                at = _Where(offset=len(header), line=2)
            buffer, eof, want = b"", False, BLOCK_BYTES
            while buffer or not eof:  # `buffer` always starts where a record starts
                if not eof:
                    data = stream.read(want)
                    eof = not data
                    buffer += data
                cut = self._cut(buffer, eof)
                if not cut:
                    # Not one whole record yet: read on, as much again as held (a 50 MB record is read in a few
                    # reads, and its bytes scanned a few times, not once per 64 KB).
                    want = max(BLOCK_BYTES, len(buffer))
                    continue
                want = BLOCK_BYTES
                table, used = self._block(header, buffer[:cut], at, final=eof and cut == len(buffer))
                block, buffer = buffer[:used], buffer[used:]
                at = _Where(at.offset + used, at.line + block.count(b"\n"), at.row + table.num_rows)
                if table.num_rows:
                    yield table

    # --- blocks -------------------------------------------------------------------------------------------------

    def _cut(self, buffer: bytes, eof: bool) -> int:
        """Where the block ends: after the last line break that ends a record (everything at the end)."""
        if eof:
            return len(buffer)
        end = buffer.rfind(b"\n")
        if end < 0 or self.text.fmt != "csv":
            return end + 1
        # CSV: a line break ends a record only outside quotes (an even count of quotes before it). The buffer's
        # quotes are counted once; each line given back from the end takes its own off.
        quotes = buffer.count(b'"', 0, end)
        for _ in range(64):
            if quotes % 2 == 0:
                return end + 1
            before = buffer.rfind(b"\n", 0, end)
            if before < 0:
                break
            quotes -= buffer.count(b'"', before, end)
            end = before
        if len(buffer) > MAX_OPEN_QUOTE_BYTES:  # a quote open this long is a stray one: read on from a line break
            return buffer.rfind(b"\n") + 1
        return 0

    def _block(self, header: bytes, block: bytes, at: _Where, final: bool) -> tuple[pa.Table, int]:
        """The block's records (with BAD), and how many of its bytes they are: all of them, but where a record
        that began after a bad one runs past the block (a stray quote moved the cut), which the next block
        begins with. `final`: the block ends the file."""
        import pyarrow as pa

        fast = self._fast(header, block)
        if fast is not None:
            return with_bad(fast), len(block)
        records = self._records(block, at, final)
        if not records.kept and len(records.good) == len(records.places):  # every record good: parse as it is
            try:
                return with_bad(self._parse(header, records.good, block[: records.used])), records.used
            except (ValueError, pa.ArrowException):
                pass  # pyarrow refuses one of them: found one by one below
        parsed = self._parse_good(header, records)
        bad: list[BadRecord | None] = [records.kept.get(i) for i in range(len(records.good))]
        table = in_order(parsed, records.places, bad)
        rows = {n: records.kept[p] for n, p in enumerate(records.places) if isinstance(p, int) and p in records.kept}
        if rows and self.text.text_column in table.column_names:
            table = nulled(table, self.text.text_column, rows)
        return table, records.used

    def _fast(self, header: bytes, block: bytes) -> pa.Table | None:
        """The block parsed whole by pyarrow, or None where it holds a bad record."""
        import pyarrow as pa

        if not block.strip() and not (self.one_column and block):
            return self.out_schema.empty_table()
        if self.text.fmt == "csv" and block.count(b'"') % 2:
            return None  # a quote left open would swallow the records after it
        try:  # a ragged row is pyarrow's error (its row handler prints a traceback for a row of bad bytes)
            table = self.text.parse_block(header + block, self.schema, self.columns, self.one_column)
        except (pa.ArrowException, ValueError):
            return None
        if not _valid_utf8(table):
            return None
        if self.text.fmt == "csv" and not self._strictly_csv(block, table.num_rows):
            return None  # a stray quote pairs with the next one and joins the records between: one by one
        return table

    def _strictly_csv(self, block: bytes, rows: int) -> bool:
        """Does Python's csv module, strictly (RFC 4180: a quoted field ends at a delimiter or a line break), read
        the block as `rows` records of the header's width, as pyarrow did?"""
        found = 0
        try:
            for record in csv.reader(io.StringIO(block.decode("utf-8"), newline=""), strict=True):
                if len(record) == self.width or (self.one_column and not record):
                    found += 1
                elif record:  # (an empty line holds no record in a file of several columns)
                    return False
        except (csv.Error, UnicodeDecodeError):
            return False
        return found == rows

    # --- record by record ---------------------------------------------------------------------------------------

    def _records(self, block: bytes, at: _Where, final: bool = True) -> _Records:
        """The block record by record; where a record may run past the block (not `final`), up to it."""
        import itertools

        lines = block.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # after the block's last line break
        offsets = list(itertools.accumulate((len(line) + 1 for line in lines), initial=at.offset))
        units = self._csv_units(block, lines, final) if self.text.fmt == "csv" else self._line_units(lines)
        found = _Records(used=len(block))
        row = at.row
        for first, end, record in units:
            if record is _STOP:  # runs past the block: the next block begins with it
                found.used = offsets[first] - at.offset
                break
            if record is _NO_RECORD:
                continue
            raw = lines[first] if end == first + 1 else b"\n".join(lines[first:end])
            if record is None:
                found.good.append(raw)
                found.spots.append((at.line + first, row, offsets[first]))
                found.places.append(len(found.good) - 1)
                row += 1
                continue
            assert isinstance(record, tuple)
            kind, message, good = record
            entry = BadRecord(kind, message, self.where, at.line + first, row, offsets[first], raw, good is not None)
            row += 1
            if good is None:
                found.places.append(entry)
                continue
            found.good.append(good)
            found.spots.append((at.line + first, row - 1, offsets[first]))
            found.kept[len(found.good) - 1] = entry
            found.places.append(len(found.good) - 1)
        return found

    def _line_units(self, lines: list[bytes]) -> Iterator[tuple[int, int, object]]:
        """JSON Lines and TSV: a record is a line."""
        for i, line in enumerate(lines):
            if not line.strip(b"\r") if self.text.fmt == "tsv" else not line.strip():
                yield i, i + 1, None if self.one_column else _NO_RECORD  # an empty line (see text_format.py)
            elif self.text.fmt == "json":
                yield i, i + 1, self._json_line(line)
            else:
                yield i, i + 1, self._fields(line, line.split(b"\t"))

    def _csv_units(self, block: bytes, lines: list[bytes], final: bool) -> Iterator[tuple[int, int, object]]:
        """CSV: each record's lines [first, end) and what is wrong with it, read by Python's csv module strictly
        (RFC 4180: a quoted field ends at a delimiter or a line break). A record that does not parse makes only
        its first line bad: reading starts again on the next line, so a stray quote costs one record."""
        text = block.decode("utf-8", "surrogateescape").split("\n")  # the same lines: "\n" is one byte in UTF-8
        valid = _decodes(block)
        i = 0
        while i < len(lines):
            feed = _Feed(text, i, len(lines))
            reader = csv.reader(feed, strict=True)
            while True:
                first = feed.next
                if first >= len(lines):
                    return
                if not lines[first].strip(b"\r"):
                    feed.next += 1
                    yield first, first + 1, None if self.one_column else _NO_RECORD  # an empty line
                    continue
                try:
                    fields = next(reader)
                except csv.Error as exc:
                    if feed.next >= len(lines) and not final:
                        yield first, first, _STOP  # a quote still open at the block's end: it may close later
                        return
                    yield first, first + 1, ("unparseable_record", _csv_why(str(exc), feed.next - first), None)
                    i = first + 1
                    break  # a new reader from the next line
                end = feed.next
                if len(fields) != self.width and end - first > 1:  # a quote that opened no field: a stray one
                    yield first, first + 1, ("unparseable_record", _csv_why("", end - first), None)
                    i = first + 1
                    break
                raw = lines[first] if end == first + 1 else b"\n".join(lines[first:end])
                if len(fields) != self.width:
                    yield first, end, self._ragged(len(fields))
                elif valid:
                    yield first, end, None
                else:
                    yield first, end, self._fields(raw, [f.encode("utf-8", "surrogateescape") for f in fields])

    def _ragged(self, count: int) -> tuple[str, str, None]:
        return "unparseable_record", f"{count} fields where the header has {self.width}", None

    def _fields(self, raw: bytes, fields: list[bytes]) -> tuple[str, str, bytes | None] | None:
        """A CSV/TSV record split into fields: its field count, then its bytes' encoding."""
        if len(fields) != self.width:
            if self.one_column and not raw.strip(b"\r"):
                return None
            return self._ragged(len(fields))
        try:
            raw.decode("utf-8")
            return None
        except UnicodeDecodeError:
            pass
        bad = [n for n, f in zip(self.names, fields) if not _decodes(f)]
        message = f"invalid UTF-8 in column '{bad[0]}'" if bad else "invalid UTF-8"
        if bad != [self.text.text_column]:
            return "invalid_encoding", message, None  # other columns would be copied out wrong: no row
        index = self.names.index(self.text.text_column)
        kept = [f.decode("utf-8") if j != index else "" for j, f in enumerate(fields)]
        return "invalid_encoding", message, _serialize(kept, self.text.fmt)

    def _json_line(self, raw: bytes) -> tuple[str, str, bytes | None] | None:
        if not raw.strip():
            return None
        text = raw.decode("utf-8", "surrogateescape")
        try:
            value = json.loads(text)
        except ValueError as exc:
            return "not_json_object", f"not JSON: {exc}", None
        if value is None:
            return None  # `null`: pyarrow reads it as a row of nulls, as the strict reader does
        if not isinstance(value, dict):
            return "not_json_object", f"a JSON {type(value).__name__}, not an object", None
        column = self.text.text_column
        got = value.get(column)
        if got is not None and not isinstance(got, str):
            value[column] = None
            what = {list: "list", dict: "object", bool: "boolean"}.get(type(got), "number")
            return "wrong_type", f"'{column}' is a {what}, not text", json.dumps(value).encode()
        broken = [k for k in _undecodable(value) if k in self.names]  # a field that is no column is never read
        if broken:
            message = f"invalid UTF-8 (or a lone surrogate) in '{broken[0]}'"
            if broken != [column]:
                return "invalid_encoding", message, None
            value[column] = None
            return "invalid_encoding", message, json.dumps(value).encode()
        return None

    def _parse_good(self, header: bytes, records: _Records) -> pa.Table:
        """The good records parsed by pyarrow together; one that pyarrow alone refuses (a value that does not fit
        its column's type, which Python's parsers do not see) becomes a bad record in its place."""
        import pyarrow as pa

        if not records.good:
            return self.out_schema.empty_table()
        try:
            return self._parse(header, records.good)
        except (pa.ArrowException, ValueError):
            pass
        tables: list[pa.Table] = []
        places: list[int | BadRecord] = []
        kept: dict[int, BadRecord] = {}
        row_of: dict[int, int] = {}  # good record -> its row among those pyarrow parsed alone
        refused: dict[int, str] = {}  # good record -> why pyarrow refused it
        for i, raw in enumerate(records.good):
            try:
                tables.append(self._parse(header, [raw]))
            except (pa.ArrowException, ValueError) as exc:
                # Without the row numbers of a one-record parse
                why = re.sub(r" (in|at) row \d+$|Row #\d+: ", "", str(exc).splitlines()[0])
                refused[i] = f"a value that does not fit its column's type: {why}"
                continue
            row_of[i] = len(tables) - 1
        for place in records.places:
            if isinstance(place, int) and place in refused:
                line, row, offset = records.spots[place]
                raw = (records.kept[place].raw or b"") if place in records.kept else records.good[place]
                places.append(BadRecord("wrong_type", refused[place], self.where, line, row, offset, raw))
            elif isinstance(place, int):
                places.append(row_of[place])
                if place in records.kept:
                    kept[row_of[place]] = records.kept[place]
            else:
                places.append(place)
        records.places, records.kept = places, kept
        return pa.concat_tables(tables) if tables else self.out_schema.empty_table()

    def _parse(self, header: bytes, good: list[bytes], data: bytes | None = None) -> pa.Table:
        """`good` records parsed by pyarrow together (`data`: the same records as they are in the file)."""
        table = self.text.parse_block(
            header + (data if data is not None else b"\n".join(good) + b"\n"),
            self.schema,
            self.columns,
            self.one_column,
        )
        if table.num_rows != len(good):
            raise ValueError("the records do not parse one row each")
        return table


_STOP = object()  # a unit's record: it may run past the block
_NO_RECORD = object()  # a unit's record: none (an empty line)


class _Feed:
    """Lines for csv.reader, one at a time, so that after each record `next` is the line after it."""

    def __init__(self, lines: list[str], start: int, count: int) -> None:
        self.lines, self.next, self.count = lines, start, count

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self.next >= self.count:
            raise StopIteration
        self.next += 1
        return self.lines[self.next - 1] + "\n"


def _csv_why(error: str, lines: int) -> str:
    if lines > 1 or "expected after" in error:
        return f"a stray quote: the field it opens does not end where a quote closes it ({error or 'too few fields'})"
    if "end of data" in error:
        return "a quote opens a field that never closes"
    return error or "the record does not parse as CSV"


def good_sample(text: TextFormat, fs: AbstractFileSystem, path: str, where: str) -> bytes:
    """The header and the good records of the file's first block: what its columns' types are found from."""
    from .streams import open_stream
    from .text_format import BLOCK_SIZE

    with open_stream(fs, path) as stream:
        header = b"" if text.fmt == "json" else stream.readline()
        data = stream.read(BLOCK_SIZE)  # as much as the strict reader's first look reads
        more = bool(stream.read(1))
    line = header.decode("utf-8", "replace").removeprefix("\ufeff").rstrip("\r\n")
    names = line.split("\t") if text.fmt == "tsv" else next(csv.reader([line]), [])
    reader = LenientText(text, fs, path, where, None, None, len(names), names)
    cut = reader._cut(data, eof=not more) or data.rfind(b"\n") + 1
    good = reader._records(data[:cut], _Where()).good
    if text.fmt == "json":  # JSON types are found as pyarrow reads them: from the first lines that agree
        good = _agreeing(good)
    return header + b"".join(line + b"\n" for line in good)


def _agreeing(lines: list[bytes]) -> list[bytes]:
    """The longest run of the first JSON lines whose types pyarrow reads as one schema."""
    import pyarrow as pa
    import pyarrow.json as pajson

    while len(lines) > 1:
        try:
            pajson.read_json(io.BytesIO(b"\n".join(lines)))
            return lines
        except pa.ArrowInvalid:
            lines = lines[: len(lines) // 2]
    return lines


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _undecodable(value: dict) -> list[str]:
    """The keys of a parsed JSON object whose strings are not valid Unicode text (bad bytes, lone surrogates)."""

    def broken(item: object) -> bool:
        if isinstance(item, str):
            try:
                item.encode("utf-8")
                return False
            except UnicodeEncodeError:
                return True
        if isinstance(item, list):
            return any(broken(v) for v in item)
        if isinstance(item, dict):
            return any(broken(k) or broken(v) for k, v in item.items())
        return False

    return [k for k, v in value.items() if broken(k) or broken(v)]


def _serialize(fields: list[str], fmt: str) -> bytes:
    if fmt == "tsv":
        return "\t".join(fields).encode()
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode()


def _valid_utf8(table: pa.Table) -> bool:
    """pyarrow's JSON reader copies invalid UTF-8 into its strings unchecked."""
    import pyarrow as pa

    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                return False
    return True


def _project(schema: pa.Schema | None, columns: list[str]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([schema.field(c) for c in columns] if schema is not None else [])

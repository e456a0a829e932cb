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

BLOCK_BYTES = 1 << 20  # what a block is read in
# A block with a bad record is parsed again in pieces of about this many lines: few records go one by one.
PIECE_LINES = 64
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
    spots: list[BadRecord] = field(default_factory=list)  # each good record's place in the file


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

    def batches(self) -> Iterator[pa.Table]:
        from .streams import open_stream

        with open_stream(self.fs, self.path) as stream:
            header = b""
            at = _Where()
            if self.text.fmt != "json":
                header = stream.readline()
                at = _Where(offset=len(header), line=2)
            buffer = b""
            while True:
                data = stream.read(BLOCK_BYTES)
                buffer += data
                cut = self._cut(buffer, eof=not data)
                if cut:
                    block, buffer = buffer[:cut], buffer[cut:]
                    table = self._block(header, block, at)
                    if table.num_rows:
                        yield table
                    at = _Where(at.offset + len(block), at.line + block.count(b"\n"), at.row + table.num_rows)
                if not data:
                    return

    # --- blocks -------------------------------------------------------------------------------------------------

    def _cut(self, buffer: bytes, eof: bool) -> int:
        """Where the block ends: after the last line break that ends a record (everything at the end)."""
        if eof:
            return len(buffer)
        end = buffer.rfind(b"\n")
        if end < 0 or self.text.fmt != "csv":
            return end + 1
        # CSV: a line break ends a record only outside quotes (an even count of quotes before it).
        for _ in range(64):
            if buffer.count(b'"', 0, end) % 2 == 0:
                return end + 1
            end = buffer.rfind(b"\n", 0, end)
            if end < 0:
                break
        if len(buffer) > MAX_OPEN_QUOTE_BYTES:  # a quote open this long is a stray one: read on from a line break
            return buffer.rfind(b"\n") + 1
        return 0

    def _block(self, header: bytes, block: bytes, at: _Where) -> pa.Table:
        import pyarrow as pa

        fast = self._fast(header, block)
        if fast is not None:
            return with_bad(fast)
        tables = []
        for piece in self._pieces(block):
            table = self._fast(header, piece)
            table = with_bad(table) if table is not None else self._slow(header, piece, at)
            tables.append(table)
            at = _Where(at.offset + len(piece), at.line + piece.count(b"\n"), at.row + table.num_rows)
        return pa.concat_tables(tables)

    def _pieces(self, block: bytes) -> list[bytes]:
        """The block in pieces of about PIECE_LINES lines, each ending where a record ends (CSV: outside quotes)."""
        lines = block.split(b"\n")
        ends_with_break = lines[-1] == b""
        if ends_with_break:
            lines.pop()
        pieces, start, quotes = [], 0, 0
        for i, line in enumerate(lines):
            if self.text.fmt == "csv":
                quotes += line.count(b'"')
            if i + 1 - start >= PIECE_LINES and quotes % 2 == 0:
                pieces.append(b"\n".join(lines[start : i + 1]) + b"\n")
                start = i + 1
        if start < len(lines):
            pieces.append(b"\n".join(lines[start:]) + (b"\n" if ends_with_break else b""))
        return pieces

    def _slow(self, header: bytes, block: bytes, at: _Where) -> pa.Table:
        """A piece with a bad record, record by record."""
        records = self._records(block, at)
        parsed = self._parse_good(header, records)
        bad: list[BadRecord | None] = [records.kept.get(i) for i in range(len(records.good))]
        table = in_order(parsed, records.places, bad)
        rows = {n: records.kept[p] for n, p in enumerate(records.places) if isinstance(p, int) and p in records.kept}
        if rows and self.text.text_column in table.column_names:
            table = nulled(table, self.text.text_column, rows)
        return table

    def _fast(self, header: bytes, block: bytes) -> pa.Table | None:
        """The block parsed whole by pyarrow, or None where it holds a bad record."""
        import pyarrow as pa

        if not block.strip() and not (self.one_column and block):
            return self.out_schema.empty_table()
        if self.text.fmt == "csv" and block.count(b'"') % 2:
            return None  # a quote left open would swallow the records after it
        invalid: list[object] = []

        def ragged(row: object) -> str:
            invalid.append(row)
            return "skip"

        try:
            table = self.text.parse_block(
                header + block, self.schema, self.columns, self.one_column, ragged if self.text.fmt != "json" else None
            )
        except (pa.ArrowException, ValueError):
            return None
        if invalid or not _valid_utf8(table):
            return None
        if self.text.fmt == "csv" and _spans_lines(table):
            return None  # a stray quote pairs with the next one and joins the records between: checked one by one
        return table

    # --- record by record ---------------------------------------------------------------------------------------

    def _records(self, block: bytes, at: _Where) -> _Records:
        lines = block.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # after the block's last line break
        offsets = [at.offset]
        for line in lines:
            offsets.append(offsets[-1] + len(line) + 1)
        found = _Records()
        row = at.row
        i = 0
        while i < len(lines):
            first = i
            if not lines[i].strip(b"\r") and self.text.fmt != "json":
                i += 1
                if not self.one_column:
                    continue  # an empty line holds no record (see text_format.py)
                record = None
            else:
                i, record = self._next_record(lines, i)
            raw = b"\n".join(lines[first:i])
            spot = BadRecord("", "", self.where, at.line + first, row, offsets[first], raw)
            row += 1
            if record is None and not raw.strip() and self.text.fmt == "json":
                row -= 1  # a blank line in JSON Lines holds no record
                continue
            if record is None:
                found.good.append(raw)
                found.spots.append(spot)
                found.places.append(len(found.good) - 1)
                continue
            kind, message, good = record
            entry = BadRecord(kind, message, spot.file, spot.line, spot.row, spot.byte_offset, raw, good is not None)
            if good is None:
                found.places.append(entry)
                continue
            found.good.append(good)
            found.spots.append(spot)
            found.kept[len(found.good) - 1] = entry
            found.places.append(len(found.good) - 1)
        return found

    def _next_record(self, lines: list[bytes], i: int) -> tuple[int, tuple[str, str, bytes | None] | None]:
        """(the line after the record that starts at line i, None for a good record or (kind, message, the bytes
        to parse in its place where it keeps a row, else None))."""
        if self.text.fmt == "json":
            return i + 1, self._json_line(lines[i])
        if self.text.fmt == "tsv":
            return i + 1, self._fields(lines[i], lines[i].split(b"\t"))
        end, quotes = i, lines[i].count(b'"')
        while quotes % 2 and end + 1 < len(lines):
            end += 1
            quotes += lines[end].count(b'"')
        if quotes % 2:
            return i + 1, ("unparseable_record", "a quote opens a field that never closes", None)
        raw = b"\n".join(lines[i : end + 1])
        try:
            # Over several lines, strictly: a quote closed where no field ends (`5,"multi`) was a stray one.
            rows = list(csv.reader(io.StringIO(raw.decode("utf-8", "surrogateescape"), newline=""), strict=end > i))
        except csv.Error as exc:
            rows, why = [], str(exc)
        else:
            why = ""
        if len(rows) == 1 and len(rows[0]) == self.width:
            fields = [f.encode("utf-8", "surrogateescape") for f in rows[0]]
            return end + 1, self._fields(raw, fields)
        if len(rows) == 1 and not why:
            why = f"{len(rows[0])} fields where the header has {self.width}"
        if end > i:  # the record as quoted runs over several lines and does not fit: the quote on line i was stray
            why = f"a stray quote: the field it opens runs to line {end - i + 1} of the record and does not end there"
        return i + 1, ("unparseable_record", why or "the record does not parse as CSV", None)

    def _fields(self, raw: bytes, fields: list[bytes]) -> tuple[str, str, bytes | None] | None:
        """A CSV/TSV record split into fields: its field count, then its bytes' encoding."""
        if len(fields) != self.width:
            if self.one_column and not raw.strip(b"\r"):
                return None
            return "unparseable_record", f"{len(fields)} fields where the header has {self.width}", None
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
        if not isinstance(value, dict):
            return "not_json_object", f"a JSON {type(value).__name__}, not an object", None
        column = self.text.text_column
        got = value.get(column)
        if got is not None and not isinstance(got, str):
            value[column] = None
            what = {list: "list", dict: "object", bool: "boolean"}.get(type(got), "number")
            return "wrong_type", f"'{column}' is a {what}, not text", json.dumps(value).encode()
        broken = _undecodable(value)
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
                why = re.sub(r" (in|at) row \d+$", "", str(exc).splitlines()[0])  # the row of a one-row parse
                refused[i] = f"a value that does not fit its column's type: {why}"
                continue
            row_of[i] = len(tables) - 1
        for place in records.places:
            if isinstance(place, int) and place in refused:
                spot = records.spots[place]
                why = refused[place]
                places.append(BadRecord("wrong_type", why, spot.file, spot.line, spot.row, spot.byte_offset, spot.raw))
            elif isinstance(place, int):
                places.append(row_of[place])
                if place in records.kept:
                    kept[row_of[place]] = records.kept[place]
            else:
                places.append(place)
        records.places, records.kept = places, kept
        return pa.concat_tables(tables) if tables else self.out_schema.empty_table()

    def _parse(self, header: bytes, good: list[bytes]) -> pa.Table:
        invalid: list[object] = []

        def ragged(row: object) -> str:
            invalid.append(row)
            return "skip"

        table = self.text.parse_block(
            header + b"\n".join(good) + b"\n",
            self.schema,
            self.columns,
            self.one_column,
            ragged if self.text.fmt != "json" else None,
        )
        if invalid or table.num_rows != len(good):
            raise ValueError("the records do not parse one row each")
        return table


def good_sample(text: TextFormat, fs: AbstractFileSystem, path: str, where: str) -> bytes:
    """The header and the good records of the file's first block: what its columns' types are found from."""
    from .streams import open_stream

    with open_stream(fs, path) as stream:
        header = b"" if text.fmt == "json" else stream.readline()
        data = stream.read(BLOCK_BYTES)
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


def _spans_lines(table: pa.Table) -> bool:
    """Does any string value hold a line break (a quoted field over several lines)?"""
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if pc.any(pc.match_substring(column, "\n")).as_py():
                return True
    return False


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

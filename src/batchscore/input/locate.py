"""Where in a text file a read failed: pyarrow's streaming readers number nothing, so the file is read again.

Python's csv and json modules are the second readers; each helper answers a
line number (or a sentence naming lines), or None where it finds nothing.
"""

from __future__ import annotations

import io
import json
import re
from typing import TYPE_CHECKING

from ..errors import InputError
from .streams import open_stream

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def find_open_quote(fs: AbstractFileSystem, path: str, where: str, encoding: str | None) -> int | None:
    """Raise naming the line where a quoted field starts that never closes properly; else count the records.

    pyarrow ends such a field at the next quote it finds, however many lines on,
    and keeps whatever follows: rows vanish into one text. Python's strict csv
    parser refuses text after a closing quote. Run on every local CSV by the
    up-front scan, and on any CSV whose quote count is odd or that fails to parse
    (a quote inside an unquoted field, like 5" screen, is legal).
    """
    import csv

    csv.field_size_limit(1 << 30)
    errors = "replace" if encoding and "replace" in encoding.lower() else "strict"
    codec = "utf-8" if errors == "replace" else (encoding or "utf-8")
    with open_stream(fs, path) as raw, io.TextIOWrapper(raw, encoding=codec, errors=errors, newline="") as fh:
        reader = csv.reader(fh, strict=True)
        start, width, records = 1, None, 0
        try:
            for row in reader:
                start = reader.line_num + 1
                if width is None:  # the header: the first line that is not empty, as pyarrow reads it
                    width = len(row) or None
                elif row or width == 1:  # the empty-line rule of TextFormat._csv_options
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


def locate_csv_error(fs: AbstractFileSystem, path: str, message: str, fmt: str, encoding: str | None) -> int | None:
    """The line where pyarrow's streaming CSV reader (which numbers nothing) stopped."""
    import csv

    if "invalid UTF8" in message and not encoding:
        with open_stream(fs, path) as fh:
            for number, line in enumerate(fh, 1):
                try:
                    line.decode("utf-8")
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
    dialect: dict = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    codec = "utf-8" if not encoding or "replace" in encoding.lower() else encoding
    with open_stream(fs, path) as raw, io.TextIOWrapper(raw, encoding=codec, errors="replace", newline="") as fh:
        reader = csv.reader(fh, **dialect)
        start, width = 1, None
        for row in reader:
            if width is None:
                width = len(row)
            elif (ragged and len(row) != width) or (
                bad_value and len(row) > int(bad_value.group(1)) and row[int(bad_value.group(1))] == bad_value.group(2)
            ):
                return start
            start = reader.line_num + 1
    return None


def locate_type_change(fs: AbstractFileSystem, path: str, message: str) -> str | None:
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


def first_bad_json_line(fs: AbstractFileSystem, path: str) -> tuple[int, str | None] | None:
    """The first line that is not a JSON object: (its number, what it is instead, if it is JSON)."""
    kinds = {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number"}
    with open_stream(fs, path) as fh:
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                try:
                    value = json.loads(raw)
                except ValueError:
                    return number, None
                if not isinstance(value, dict):
                    return number, kinds.get(type(value), "null")
    return None

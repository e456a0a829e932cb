"""One-line error messages about an input file: what the reader found, where (as a line number), and the fix."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, TypeVar

from ..errors import InputError, first_line
from .locate import first_bad_json_line, locate_csv_error, locate_type_change
from .streams import TrailingData, split_compression, trailing_data

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from .text_format import TextFormat

T = TypeVar("T")

_HINTS = {  # matched against the lower-cased reason
    "invalid utf8": "pass --encoding latin-1 (or the file's encoding), or --encoding utf-8-replace",
    "expected": "fix that row, or quote its text (a ragged CSV row)",
    "magic bytes": "the file is corrupt or truncated; export it again",
    "json parse error": "each line must be one JSON object (JSON Lines)",
    "not a json object": "each line must be one JSON object (JSON Lines)",
    "is corrupt": "the file is corrupt or not what its name says; export it again",
    "truncated": "the file is corrupt or truncated; export it again",
    "inflate": "the file is corrupt or not what its name says; export it again",
    "decompress failed": "the file is corrupt or not what its name says; export it again",
}


def unreadable(
    where: str,
    fmt: str,
    exc: BaseException,
    fs: AbstractFileSystem | None = None,
    path: str | None = None,
    text: TextFormat | None = None,
) -> str:
    """One line: what pyarrow found, without its wrapper text, where (as a line number), and the fix."""
    if isinstance(exc, InputError):
        return exc.message
    reason = printable(first_line(exc))
    if path and split_compression(path)[1] and isinstance(exc, (OSError, EOFError)):
        # Arrow's gzip/bz2/zstd errors read differently from our xz/gzip/bz2 reader's: say it one way.
        found = str(exc) if isinstance(exc, TrailingData) else quietly(trailing_data, fs, path)
        if found:
            return (
                f"Cannot read '{where}' as {fmt}: {found}; remove the bytes after the stream's end, or "
                "compress the file again."
            )
    if fmt == "json" and text is not None:
        found = quietly(locate_type_change, fs, path, reason)
        if found:
            return f"Cannot read '{where}' as json: {found}."
    if fmt in ("csv", "tsv") and text is not None:
        line = quietly(locate_csv_error, fs, path, reason, text.fmt, text.encoding)
        # pyarrow counts records, not lines (a quoted newline makes them differ): say the line instead.
        reason = re.sub(r"^CSV parse error: |Row #\d+: ", "", reason)
        if line:
            reason += f" on line {line}"
    for marker in ("Invalid: ", "input source '"):
        if marker in reason:
            reason = reason.rsplit(marker, 1)[-1].split("': ", 1)[-1]
    reason = reason.replace(". Either the file is corrupted or this is not a parquet file", "")
    if "JSON parse error" in reason:
        # pyarrow's JSON row number restarts in every read block: find the real line.
        reason = re.sub(r"\.? in row \d+", "", reason)
        found_line = quietly(first_bad_json_line, fs, path) if fs is not None and path else None
        number, what = found_line or (None, None)
        if what:  # JSON, but not an object: pyarrow's "Column() changed from object to array" says it darkly
            reason = f"line {number} is {what}, not a JSON object"
        elif number:
            reason += f" at line {number}"
    if fmt != "parquet" and fs is not None and path and _is_parquet(fs, path):
        return f"Cannot read '{where}' as {fmt}: it is a Parquet file; give it a .parquet name."
    hint = next((h for key, h in _HINTS.items() if key in reason.lower()), f"check that it is a valid {fmt} file")
    return f"Cannot read '{where}' as {fmt}: {reason.rstrip('.')}; {hint}."


def _is_parquet(fs: AbstractFileSystem, path: str) -> bool:
    try:
        with fs.open(path, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def quietly(locate: Callable[..., T], *args: object) -> T | None:
    """A locating helper's answer, or None where reading the file again fails too: the first error stands."""
    import csv

    from pyarrow import ArrowException

    try:
        return locate(*args)
    except (OSError, EOFError, ValueError, csv.Error, ArrowException):
        return None


def printable(text: str, limit: int = 300) -> str:
    """No raw bytes in a message: a binary file read as text shows as escapes, cut short."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."

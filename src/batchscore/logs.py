"""Log lines for people and for schedulers: one logger per module, configured once by the CLI.

Text (the default): a summary line, `Warning: ...`, `Error: ...`, as before.
JSON (`--log-format json`): one object per line on stderr, with time, level,
message and the record's structured fields (rows, chunk, seconds, exit_code, ...),
for a scheduler's log store. `--quiet` shows errors only; `--verbose` adds debug
lines and the traceback of an internal error.

Every message passes `readable` on its way out: one line of at most
`MAX_LINE` characters whatever the values in it (a path of 5,000 characters,
a listing of 100,000 column names, a column name holding a newline).
"""

from __future__ import annotations

import json
import logging
import re
import time
import warnings
from typing import Any, TextIO

import click

ROOT = "batchscore"
MAX_LINE = 1000  # characters of a message: the start says what failed, the end names the fix
MAX_TOKEN = 160  # a longer word (a path, a URL, a column name) is shown as its head and tail
LISTED = 8  # a longer comma-separated listing keeps its first and last items, the rest counted
_LONG_TOKEN = re.compile(r"\S{%d,}" % (MAX_TOKEN + 1))


def readable(message: str, limit: int = MAX_LINE) -> str:
    """`message` as one line a person can read: control characters escaped, then, only when it is longer than
    `limit`, long words shown as head…tail, long listings summarized and finally the middle cut.

    Done here, where every line is printed, rather than in each message: the
    values come from users' files, options and environments.
    """
    text = "".join(c if c.isprintable() else _escape(c) for c in str(message))
    if len(text) <= limit:
        return text
    text = _LONG_TOKEN.sub(lambda m: _cut(m.group(), MAX_TOKEN), text)
    if len(text) > limit:
        text = _summarize_listing(text)
    return _cut(text, limit)


def _escape(char: str) -> str:
    # \n, \t, \x1b, \u2028, \udcff (an undecodable byte in a file name or argument): visible, never a line break.
    return char.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def _cut(text: str, limit: int) -> str:
    """Head and tail of `text` joined by "…" when it is longer than `limit`: the what and the fix both stay."""
    if len(text) <= limit:
        return text
    tail = (limit - 1) * 2 // 5
    return text[: limit - 1 - tail] + "…" + text[len(text) - tail :]


def _summarize_listing(text: str) -> str:
    """ "columns are: a, b, c, ..., z. Pass --text-column." keeps the first and last items and counts the rest."""
    parts = text.split(", ")
    if len(parts) <= 2 * LISTED:
        return text
    head, tail = parts[:LISTED], parts[-LISTED // 2 :]
    hidden = len(parts) - len(head) - len(tail)
    return ", ".join([*head, f"… ({hidden:,} more)", *tail])


def duration(seconds: float) -> str:
    """A duration for people: 42s, 3m05s, 1h02m."""
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def fields(**values: Any) -> dict[str, Any]:
    """`log.info(msg, extra=fields(rows=3))`: structured fields, shown in JSON lines."""
    return {"extra": {"fields": values}}


class _TextFormatter(logging.Formatter):
    PREFIX = {logging.DEBUG: "Debug: ", logging.WARNING: "Warning: ", logging.ERROR: "Error: "}

    def format(self, record: logging.LogRecord) -> str:
        line = self.PREFIX.get(record.levelno, "") + readable(record.getMessage())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": readable(record.getMessage()),
            "logger": record.name,
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        try:
            click.echo(line, err=True)  # today's stderr (CliRunner swaps it), not import-time's
        except (OSError, ValueError):
            pass  # stderr is gone (the terminal closed, the reader quit): the exit code still tells


_warned: set[str] = set()


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A library's Python warning as one `Warning:` line (or JSON object), once, instead of several raw lines."""
    text = str(message)
    if text not in _warned:
        _warned.add(text)
        logging.getLogger(ROOT + ".warnings").warning(text, extra={"fields": {"category": category.__name__}})


def configure(quiet: bool = False, verbose: bool = False, log_format: str = "text") -> None:
    """Send batchscore's records to stderr in the chosen shape; other libraries' stay off it."""
    root = logging.getLogger()
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers) and not root.handlers:
        # Other libraries' unconfigured records (an fsspec back end's retries, with
        # tracebacks) would reach stderr through logging's last resort.
        root.addHandler(logging.NullHandler())
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    # torch's and transformers' warnings.warn lines (the DataLoader's worker-count advice, ...) are
    # several raw lines each, and plain text in JSON mode: they take the same path as ours.
    warnings.showwarning = _show_warning

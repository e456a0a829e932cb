"""Log lines for people and for schedulers: one logger per module, configured once by the CLI.

Text (the default): a summary line, `Warning: ...`, `Error: ...`, as before.
JSON (`--log-format json`): one object per line on stderr, with time, level,
message and the record's structured fields (rows, chunk, seconds, exit_code, ...),
for a scheduler's log store. `--quiet` shows errors only; `--verbose` adds debug
lines and the traceback of an internal error.
"""

from __future__ import annotations

import json
import logging
import time

import click

ROOT = "batchscore"


def fields(**values) -> dict:
    """`log.info(msg, extra=fields(rows=3))`: structured fields, shown in JSON lines."""
    return {"extra": {"fields": values}}


class _TextFormatter(logging.Formatter):
    PREFIX = {logging.DEBUG: "Debug: ", logging.WARNING: "Warning: ", logging.ERROR: "Error: "}

    def format(self, record):
        line = self.PREFIX.get(record.levelno, "") + record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "logger": record.name,
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StderrHandler(logging.Handler):
    def emit(self, record):
        click.echo(self.format(record), err=True)  # today's stderr (CliRunner swaps it), not import-time's


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

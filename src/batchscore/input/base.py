"""What every input reader is: a description, its files and columns, and its rows as Arrow batches in input order.

A format implements `batches` (and, where it can start at any row, `read_rows`);
the base checks columns and scans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from .schema import require_columns

if TYPE_CHECKING:
    import pyarrow as pa

READ_BATCH_ROWS = 8192


class Reader:
    """An open input."""

    # (columns, start, stop) -> batches of rows [start, stop), where the input can start at any row (Parquet,
    # saved datasets, which define it as a method); None where it must be read from the start (CSV, TSV, JSONL,
    # Hub streams).
    read_rows: Callable[[list[str] | None, int, int], Iterator] | None = None
    # --on-bad-row quarantine, where a format has bad records (CSV, TSV, JSON Lines, Parquet): every batch has the
    # BAD column (quarantine.rows) and a bad record is never an error.
    lenient: bool = False

    def __init__(
        self,
        description: str,
        files: list[str],
        schema: pa.Schema | None,
        num_rows: int | None,
        fingerprint: dict,
        *,
        local: bool = False,
        root: str | None = None,
        file_columns: dict[str, list[str]] | None = None,
    ) -> None:
        self.description = description  # shown in logs and recorded in the manifest
        self.files = files  # resolved file paths/URLs as the user would type them ([] for Hub datasets)
        self.schema = schema  # pa.Schema when known before reading
        self.num_rows = num_rows  # known up front for Parquet and saved datasets, for the progress bar
        self.fingerprint = fingerprint  # what identifies this input's content, for resume
        self.local = local  # local files: cheap to scan once before scoring
        self.root = root  # the file, folder or glob base the files were found under
        self.file_columns = file_columns or {}  # file -> its columns (folders and globs of files)
        self.rows_decoded = 0  # rows read_rows has parsed in this process, skipped ones included

    def require(self, columns: list[str], text_column: str) -> None:
        """Every file must have every column the output keeps: a file without one is refused, not filled with nulls."""
        require_columns(self.file_columns, columns, text_column)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch | pa.Table]:
        """pyarrow RecordBatches (or Tables) holding `columns` (all if None), in input order."""
        raise NotImplementedError

    def scan(self, columns: list[str], limit: int | None = None) -> int:
        """Parse every row (the first `limit`) once, converting `columns`, those the output keeps; count them.

        Catches ragged rows, bad UTF-8 and broken JSON lines before any output
        is written, and gives the progress bar its total.
        """
        rows = 0
        for batch in self.batches(columns):
            rows += batch.num_rows
            if limit is not None and rows >= limit:
                break
        self.verify()
        return rows

    def verify(self) -> None:
        """A stricter check than parsing, run at the end of a scan (CSV: quotes that never close)."""

"""CSV, TSV and JSON Lines files, plain or compressed, read as they are written (see text_format.py)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from ..errors import ConfigError, InputError
from ..location import display
from .files import FileReader
from .messages import unreadable
from .text_format import TextFormat

if TYPE_CHECKING:
    import pyarrow as pa

    from .resolve import FileSet


class TextReader(FileReader):
    def __init__(
        self,
        found: FileSet,
        spec: str,
        fmt: str,
        text_column: str,
        *,
        encoding: str | None = None,
        infer_types: bool = False,
        lenient: bool = False,
    ) -> None:
        from .encoding import is_utf8

        if lenient and not is_utf8(encoding):
            raise ConfigError(
                f"--on-bad-row quarantine reads UTF-8 text files, and this input is --encoding {encoding}; "
                "convert it to UTF-8 (iconv), or leave out --on-bad-row quarantine."
            )
        self.fmt = fmt
        self.text = TextFormat(fmt, text_column, encoding, infer_types)
        self.widths: dict[str, int] = {}  # file -> how many columns it has itself
        self.rows: dict[str, int] = {}  # file -> rows read, once a read of the whole file ends
        super().__init__(found, spec, encoding=encoding, infer_types=infer_types, lenient=lenient)

    def file_schemas(self) -> dict[str, pa.Schema]:
        found = {}
        for path in self.paths:
            with self._reading(path):
                sample = None
                if self.lenient:  # types from the good records only
                    from .lenient_text import good_sample

                    sample = good_sample(self.text, self.fs, path, self._where(path))
                found[path] = self.text.schema(self.fs, path, self._where(path), sample)
            self.widths[path] = len(found[path])
        return found

    def read_file(self, path: str, columns: list[str] | None) -> Iterator[pa.RecordBatch | pa.Table]:
        if self.lenient:
            from .lenient_text import LenientText

            width = self.widths.get(path, len(self.files_schema))
            lenient = LenientText(self.text, self.fs, path, self._where(path), self.files_schema, columns, width)
            with self._reading(path):
                yield from lenient.batches()
            return
        rows = 0
        one_column = self.widths.get(path) == 1  # then its empty lines are records
        with self._reading(path):
            for batch in self.text.batches(self.fs, path, self.files_schema, columns, self._where(path), one_column):
                if self.fmt == "json":
                    self._check_utf8(batch, path, rows)
                rows += batch.num_rows
                yield batch
        self.rows[path] = rows

    def _check_utf8(self, batch: pa.RecordBatch, path: str, before: int) -> None:
        """JSON Lines: pyarrow copies invalid UTF-8 into its strings unchecked; the first such value is an error."""
        from .encoding import invalid_utf8

        found = invalid_utf8(batch)
        if found:
            row = min(found)
            raise InputError(
                f"Cannot read '{self._where(path)}' as json: record {before + row + 1:,} has invalid UTF-8 in "
                f"'{found[row][0][0]}'; export the file again as UTF-8, or pass --on-bad-row quarantine to set "
                "such records aside."
            )

    def verify(self) -> None:
        """CSV, local files: Python's strict csv module reads each file again (see TextFormat.verify)."""
        if self.fmt != "csv" or self.lenient:  # lenient: a record the csv module reads otherwise is quarantined
            return
        for path in self.paths:
            with self._reading(path):
                self.text.verify(self.fs, path, self._where(path), self.rows.get(path))

    def _where(self, path: str) -> str:
        return display(self.fs, path)

    @contextlib.contextmanager
    def _reading(self, path: str) -> Iterator[None]:
        # Every way a text file can fail to read (bad bytes, bad compression, gone since it was listed) is one
        # InputError naming it.
        from pyarrow import ArrowException

        try:
            yield
        except (ArrowException, OSError, EOFError, UnicodeError, ValueError) as exc:
            raise InputError(unreadable(self._where(path), self.fmt, exc, self.fs, path, self.text)) from None

"""Open the input and stream it as Arrow record batches, never whole.

Files (local, glob, folder, any fsspec URL) are read by pyarrow.dataset, one
file after another in sorted order so row order is stable across runs. Hub
datasets, Hub-style dataset folders and `save_to_disk` folders go through the
`datasets` library.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from pyarrow import ArrowException as ArrowError  # noqa: N812 - this module runs only inside a job

from .errors import BatchscoreError, ConfigError, InputError, first_line
from .text_reader import TextFormat, TrailingData, open_stream, split_compression, trailing_data

# Extension -> pyarrow.dataset format name. `.json` must be JSON Lines.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}
READ_BATCH_ROWS = 8192
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
REPLACE_CODEC = "utf-8-replace"  # --encoding value: UTF-8 with bad bytes replaced by U+FFFD


def _replace_codec(name: str):
    # pyarrow transcodes CSV through Python's codec registry; this name gives
    # UTF-8 that never fails, for users who prefer a replaced byte to an error.
    if name.replace("_", "-").lower() != REPLACE_CODEC:
        return None
    utf8 = codecs.lookup("utf-8")

    class Decoder(codecs.IncrementalDecoder):
        def __init__(self, errors="replace"):
            super().__init__("replace")
            self._inner = utf8.incrementaldecoder("replace")

        def decode(self, data, final=False):
            return self._inner.decode(data, final)

        def reset(self):
            self._inner.reset()

    return codecs.CodecInfo(
        utf8.encode,
        lambda b, errors="replace": utf8.decode(b, "replace"),
        incrementaldecoder=Decoder,
        name=REPLACE_CODEC,
    )


codecs.register(_replace_codec)


@dataclass
class Source:
    description: str  # shown in logs and recorded in the manifest
    files: list[str]  # resolved file paths/URLs ([] for Hub datasets)
    schema: "object | None"  # pa.Schema when known before reading
    num_rows: int | None  # known up front for Parquet and saved datasets, for the progress bar
    _open: Callable[[list[str] | None], Iterator]  # columns -> record batches
    fingerprint: dict = field(default_factory=dict)  # what identifies this input's content, for resume
    local: bool = False  # local files: cheap to scan once before scoring
    verify: Callable | None = None  # a stricter check than parsing, run by scan (CSV: quotes that never close)
    root: str | None = None  # the file, folder or glob base the files were found under

    file_columns: dict = field(default_factory=dict)  # file -> its columns (folders and globs of files)
    # (columns, start, stop) -> batches of rows [start, stop), where the input can start at any row (Parquet,
    # saved datasets); None where it must be read from the start (CSV, TSV, JSONL, Hub streams).
    read_rows: Callable | None = None
    rows_decoded: int = 0  # rows read_rows has parsed in this process, skipped ones included

    def require(self, columns: list[str], text_column: str) -> None:
        """Every file must have every column the output keeps: a file without one is refused, not filled with nulls."""
        for path, names in self.file_columns.items():
            missing = [c for c in columns if c not in names]
            if missing:
                fix = (
                    "Pass --text-column, or fix that file"
                    if missing[0] == text_column
                    else "Fix that file, or leave the column out with --keep-columns"
                )
                raise InputError(
                    f"Input file '{path}' has no column '{missing[0]}' (its columns: {', '.join(names)}); {fix}."
                )

    def batches(self, columns: list[str] | None = None) -> Iterator:
        """Yield pyarrow RecordBatches (or Tables) holding `columns`, in input order."""
        yield from self._open(columns)

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
        if self.verify is not None:
            self.verify()
        return rows


def _format_of(path: str) -> str | None:
    name, compression = split_compression(path)
    lower = name.lower()
    if compression and lower.endswith(".parquet"):
        return None  # Parquet compresses inside the file
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    return None


def _visible(path: str, base: str) -> bool:
    # Skip _SUCCESS, .crc files, _batchscore/ records, hidden folders and the like (Spark/Hadoop
    # habits), in every folder below the one the user named.
    relative = path[len(base) :] if path.startswith(base) else path.rsplit("/", 1)[-1]
    return not any(part.startswith((".", "_")) for part in relative.replace("\\", "/").split("/") if part)


def _is_url(text: str) -> bool:
    return "://" in text


def open_source(
    spec: str,
    *,
    text_column: str,
    split: str = "train",
    dataset_config: str | None = None,
    encoding: str | None = None,
    exclude=None,
    csv_infer_types: bool = False,
):
    """Resolve `spec` to a Source. Raises InputError with the fix named.

    `exclude(url) -> bool` drops files found in a folder or glob (this job's own
    output, when it lies inside the input folder).
    """
    check_encoding(encoding)
    if _is_url(spec) or os.path.exists(spec) or any(ch in spec for ch in "*?["):
        if not _is_url(spec) and os.path.isdir(spec):
            if _is_saved_dataset(spec):
                return _open_saved_dataset(spec, split)
            if os.path.exists(os.path.join(spec, "README.md")):
                return _open_hub_dataset(spec, split, dataset_config)
        return _open_files(spec, text_column, encoding, exclude, csv_infer_types)
    if _format_of(spec) is None and _HUB_NAME.match(spec):
        return _open_hub_dataset(spec, split, dataset_config)
    raise InputError(f"Input '{spec}' not found; check the path (or pass a Hub dataset name like user/name).")


def _resolve_files(spec: str, exclude=None) -> tuple[object, list[str], str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(spec)
    except (ImportError, ValueError) as exc:
        raise InputError(f"Cannot open '{spec}': {exc}. Install the fsspec backend for that URL scheme.") from None
    try:
        # An existing file or folder wins over glob syntax: 'data[1].csv' is a name.
        if fs.isfile(path):
            if _format_of(path) is None:
                raise InputError(
                    f"Cannot tell the format of '{spec}' from its name; batchscore reads "
                    ".csv, .tsv, .parquet, .jsonl and .json files (text formats also as .gz, .bz2, .zst, .xz)."
                )
            return fs, [path], path
        if fs.isdir(path):
            base = path.rstrip("/") + "/"
            candidates = fs.find(path)
        elif any(ch in path for ch in "*?["):
            base = path[: min(path.find(ch) for ch in "*?[" if ch in path)].rpartition("/")[0] + "/"
            candidates = fs.glob(path)
        else:
            raise InputError(f"Input '{spec}' not found; check the path.")
    except OSError as exc:
        raise InputError(f"Cannot read '{spec}': {exc}.") from None
    files = sorted(
        p for p in candidates if _format_of(p) and _visible(p, base) and not (exclude and exclude(_display(fs, p)))
    )
    if not files:
        raise InputError(f"No .csv, .tsv, .parquet, .jsonl or .json files found at '{spec}'; check the path or glob.")
    return fs, files, base.rstrip("/")


def check_encoding(encoding: str | None) -> None:
    """`encoding` must name a text codec (bytes -> str): ConfigError otherwise.

    Python's registry also holds bytes-to-bytes and str-to-str codecs (zlib,
    base64, rot13) that fail deep inside the CSV reader.
    """
    if not encoding:
        return
    fix = f"use a text encoding such as latin-1, cp1252, utf-16, or {REPLACE_CODEC}"
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError, TypeError):  # ValueError: a NUL in the name
        raise ConfigError(f"Unknown --encoding {_printable(repr(encoding), 80)}; {fix}.") from None
    try:
        text = getattr(info, "_is_text_encoding", True) and codecs.getincrementaldecoder(encoding)().decode(
            b"", final=True
        )
    except (UnicodeError, TypeError, ValueError, LookupError):
        text = None
    if not isinstance(text, str):
        raise ConfigError(f"--encoding '{encoding}' is not a text encoding (bytes to text); {fix}.")


def _check_encoding(fmt: str, encoding: str | None) -> None:
    check_encoding(encoding)
    if fmt not in ("csv", "tsv") and encoding and encoding.replace("-", "").lower() not in ("utf8",):
        raise InputError(f"--encoding applies to CSV/TSV files only; {fmt} input must be UTF-8.")


def _open_files(
    spec: str, text_column: str, encoding: str | None = None, exclude=None, infer_types: bool = False
) -> Source:

    fs, files, root = _resolve_files(spec, exclude)
    empty = [f for f in files if _stat(fs, f)["size"] == 0]
    if empty:
        raise InputError(f"Input file '{_display(fs, empty[0])}' is empty (0 bytes); remove it or fix the export.")
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise InputError(f"'{spec}' mixes file formats ({', '.join(sorted(formats))}); point at one format.")
    fmt = formats.pop()
    _check_encoding(fmt, encoding)
    partitions = _hive_partitions(files, root)
    if fmt == "parquet":
        reader = _ParquetFiles(fs, files, spec)
    else:
        reader = _TextFiles(fs, files, TextFormat(fmt, text_column, encoding, infer_types))
    schemas = reader.schemas()
    schema = files_schema = _unify(fs, schemas, lossless=not (infer_types and fmt in ("csv", "tsv")))
    for name, partition in partitions.fields.items():
        if name in schema.names:
            raise InputError(
                f"Column '{name}' is both in the files and in their partition folders ({name}=...); rename one of them."
            )
        schema = schema.append(partition)

    def open_batches(columns):
        # File by file, batch by batch: keeps input order without a sort.
        for path in files:
            wanted = None if columns is None else [c for c in columns if c not in partitions.fields]
            for batch in reader.batches(path, files_schema, wanted):
                yield partitions.add(batch, path, columns)

    desc = spec if len(files) == 1 else f"{spec} ({len(files)} {fmt} files)"
    local = _display(fs, files[0]) == files[0]
    source = Source(
        desc,
        [_display(fs, f) for f in files],
        schema,
        reader.num_rows,
        open_batches,
        fingerprint={
            "files": _file_stats(fs, files),
            "encoding": encoding,
            **({"csv_infer_types": True} if infer_types else {}),
        },
        local=local,
        root=_display(fs, root),
    )
    if fmt == "csv":
        source.verify = reader.verify
    if fmt == "parquet":
        source.read_rows = _ParquetRows(reader, files_schema, partitions, source).read
    source.file_columns = {_display(fs, f): [*schemas[f].names, *partitions.fields] for f in files}
    return source


class _TextFiles:
    def __init__(self, fs, files: list[str], text: TextFormat):
        self.fs, self.files, self.text = fs, files, text
        self.num_rows = None  # known only after a scan
        self.widths: dict = {}  # file -> how many columns it has itself
        self.rows: dict = {}  # file -> rows read, once a read of the whole file ends

    def schemas(self) -> dict:
        found = {}
        for path in self.files:
            with self._reading(path):
                found[path] = self.text.schema(self.fs, path, _display(self.fs, path))
            self.widths[path] = len(found[path])
        return found

    def batches(self, path: str, schema, columns):
        rows = 0
        with self._reading(path):
            for batch in self.text.batches(
                self.fs, path, schema, columns, _display(self.fs, path), one_column=self.widths.get(path) == 1
            ):
                rows += batch.num_rows
                yield batch
        self.rows[path] = rows

    def verify(self) -> None:
        """CSV, local files: Python's strict csv module reads each file again (see TextFormat.verify)."""
        for path in self.files:
            with self._reading(path):
                self.text.verify(self.fs, path, _display(self.fs, path), self.rows.get(path))

    @contextlib.contextmanager
    def _reading(self, path: str):
        # Every way a text file can fail to read (bad bytes, bad compression, gone since it was listed) is one
        # InputError naming it.
        try:
            yield
        except (ArrowError, OSError, EOFError, UnicodeError, ValueError) as exc:
            raise InputError(
                _unreadable(_display(self.fs, path), self.text.fmt, exc, self.fs, path, self.text)
            ) from None


class _ParquetFiles:
    def __init__(self, fs, files: list[str], spec: str):
        import pyarrow.dataset as ds

        self.fs, self.files = fs, files
        try:
            self.dataset = ds.dataset(files, format="parquet", filesystem=fs)
            self.fragments = {f.path: f for f in self.dataset.get_fragments()}
            self.num_rows = sum(f.metadata.num_rows for f in self.fragments.values())
        except (ArrowError, OSError) as exc:
            raise InputError(_unreadable(spec, "parquet", exc, fs, files[0] if len(files) == 1 else None)) from None

    def schemas(self) -> dict:
        return {path: self.fragments[path].physical_schema for path in self.files}

    def row_groups(self, path: str) -> list:
        """(fragment of one row group, its row count) for each row group of `path`, in file order."""
        return [(group, group.row_groups[0].num_rows) for group in self.fragments[path].split_by_row_group()]

    def batches(self, path: str, schema, columns):
        # Row group by row group, so that a bad value is reported with where it is.
        for group, _ in self.row_groups(path):
            yield from self.group_batches(path, group, schema, columns)

    def group_batches(self, path: str, group, schema, columns):
        at = f"{_display(self.fs, path)}, row group {group.row_groups[0].id}"
        try:
            for batch in group.to_batches(schema=schema.remove_metadata(), columns=columns, batch_size=READ_BATCH_ROWS):
                _check_utf8(batch, at)
                yield batch
        except (ArrowError, OSError) as exc:
            raise InputError(_unreadable(at, "parquet", exc)) from None


@dataclass
class _RowGroupCursor:
    """Where the open row group's reader stands."""

    position: int  # index of the row group in _ParquetRows.groups
    batches: Iterator  # its remaining record batches
    row: int  # global index of the next row it hands out
    columns: list[str] | None
    leftover: object = None  # the rest of a batch a request stopped inside; its first row is `row`


class _ParquetRows:
    """Rows [start, stop) of Parquet files, found through their footers' row counts: only the row groups
    that hold them are read.

    A request that starts at or after where the previous one stopped, in the
    same row group, continues that row group's reader, so a process that reads
    its chunks in order decodes each row group once.
    """

    def __init__(self, reader: _ParquetFiles, schema, partitions, source: Source):
        self.reader, self.schema, self.partitions, self.source = reader, schema, partitions, source
        self.groups, self.starts = [], []
        row = 0
        for path in reader.files:
            for group, rows in reader.row_groups(path):
                self.groups.append((path, group))
                self.starts.append(row)
                row += rows
        self._cursor: _RowGroupCursor | None = None

    def _open(self, position: int, columns) -> _RowGroupCursor:
        path, group = self.groups[position]
        wanted = None if columns is None else [c for c in columns if c not in self.partitions.fields]
        batches = (
            self.partitions.add(b, path, columns) for b in self.reader.group_batches(path, group, self.schema, wanted)
        )
        self._cursor = _RowGroupCursor(position, batches, self.starts[position], columns)
        return self._cursor

    def read(self, columns, start: int, stop: int):
        import bisect

        if not self.groups:
            return
        position = max(bisect.bisect_right(self.starts, start) - 1, 0)
        cursor = self._cursor
        if cursor is None or cursor.position != position or cursor.row > start or cursor.columns != columns:
            cursor = self._open(position, columns)
        while cursor.row < stop:
            batch, cursor.leftover = cursor.leftover, None
            if batch is None:
                batch = next(cursor.batches, None)
                if batch is None:  # this row group is done: on to the next, if any
                    if cursor.position + 1 >= len(self.groups):
                        return
                    cursor = self._open(cursor.position + 1, columns)
                    continue
                self.source.rows_decoded += batch.num_rows
            low, high = max(start - cursor.row, 0), min(stop - cursor.row, batch.num_rows)
            piece = batch.slice(low, high - low) if low < high else None
            # The cursor moves before the rows are handed out: a caller that stops early loses nothing.
            done = high < batch.num_rows
            if done:  # the rest waits for the next request
                cursor.leftover = batch.slice(high)
                cursor.row += high
            else:
                cursor.row += batch.num_rows
            if piece is not None:
                yield piece
            if done:
                return


def _check_utf8(batch, where: str) -> None:
    """Parquet readers do not validate strings: invalid UTF-8 would crash the tokenizer or be copied out."""
    import pyarrow as pa

    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raise InputError(
                    f"Cannot read '{where}' as parquet: column '{name}' holds invalid UTF-8; "
                    "export it again as valid UTF-8 text (or as binary, if it is not text)."
                ) from None


@dataclass
class _Partitions:
    """Hive partition folders (`lang=en/part-0.parquet`) as columns, as pyarrow.dataset and Spark read them."""

    fields: dict  # name -> pa.Field
    values: dict  # file -> {name: value}

    def add(self, batch, path: str, columns):
        import pyarrow as pa

        names = [n for n in self.fields if columns is None or n in columns]
        if not names:
            return batch
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        for name in names:
            value = self.values[path].get(name)
            table = table.append_column(self.fields[name], pa.array([value] * table.num_rows, self.fields[name].type))
        if columns is not None:
            table = table.select(columns)
        return table


def _hive_partitions(files: list[str], root: str) -> _Partitions:
    import urllib.parse

    import pyarrow as pa

    values: dict = {}
    for path in files:
        relative = path[len(root) :].strip("/").split("/")[:-1] if path.startswith(root) else []
        found = {}
        for part in relative:
            key, sep, value = part.partition("=")
            if sep and key:
                value = urllib.parse.unquote(value)
                found[key] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
        values[path] = found
    keys = list(dict.fromkeys(k for found in values.values() for k in found))
    fields = {}
    for key in keys:
        seen = [v[key] for v in values.values() if v.get(key) is not None]
        # As pyarrow.dataset's hive discovery types them: int32 where every value is ASCII digits (an optional
        # '-') within int32, else text. Python's int() would also take '١٢' or '１２', or a number past int64.
        numbers = seen and all(re.fullmatch(r"-?[0-9]+", v) and -(2**31) <= int(v) < 2**31 for v in seen)
        kind = pa.string()
        if numbers:
            kind = pa.int32()
            for found in values.values():
                if found.get(key) is not None:
                    found[key] = int(found[key])
        fields[key] = pa.field(key, kind)
    return _Partitions(fields, values)


def _unify(fs, schemas: dict, lossless: bool):
    """One schema for all files; a column whose types differ is widened only where no value can change."""
    import pyarrow as pa

    firsts = list(schemas.values())
    try:
        unified = pa.unify_schemas(firsts, promote_options="permissive")
    except (ArrowError, TypeError) as exc:
        raise InputError(
            f"The input files' columns cannot be combined ({first_line(exc)}); give each column one type in every file."
        ) from None
    if lossless:
        for path, schema in schemas.items():
            for field in schema:
                target = unified.field(field.name).type
                if not _widens(field.type, target):
                    others = [
                        p
                        for p, s in schemas.items()
                        if field.name in s.names and s.field(field.name).type != field.type
                    ]
                    other = others[0] if others else path
                    raise InputError(
                        f"Column '{field.name}' is {field.type} in '{_display(fs, path)}' but "
                        f"{schemas[other].field(field.name).type} in '{_display(fs, other)}'; no type holds both "
                        "without changing values: give the column one type in every file."
                    )
    return unified.remove_metadata()


def _widens(source, target) -> bool:
    """True if every value of `source` is exactly representable in `target`."""
    import pyarrow as pa
    import pyarrow.types as t

    if source == target or t.is_null(source):
        return True
    if t.is_integer(source) and t.is_integer(target):
        if t.is_signed_integer(source) == t.is_signed_integer(target):
            return target.bit_width >= source.bit_width
        return t.is_signed_integer(target) and target.bit_width > source.bit_width
    if t.is_integer(source) and t.is_floating(target):
        return source.bit_width < (target.bit_width == 64 and 53 or 24)
    if t.is_floating(source) and t.is_floating(target):
        return target.bit_width >= source.bit_width
    if (t.is_string(source) and t.is_large_string(target)) or (t.is_binary(source) and t.is_large_binary(target)):
        return True
    if t.is_dictionary(source):
        return _widens(source.value_type, target)
    return pa.types.is_list(source) and pa.types.is_list(target) and _widens(source.value_type, target.value_type)


def _stat(fs, path: str) -> dict:
    """fs.info of a listed file; one that is gone since (or a link to nothing) is an InputError naming it."""
    try:
        return fs.info(path)
    except OSError as exc:
        raise InputError(
            f"Cannot read input file '{_display(fs, path)}' ({first_line(exc)}); it was listed but "
            "is gone or unreadable: fix or remove it, then rerun."
        ) from None


def _file_stats(fs, files: list[str]) -> list[dict]:
    """Path, size and modification stamp of each file: a changed file means another input.

    Object stores: the ETag (or GCS generation), which changes with the content and,
    unlike a listing's LastModified, reads the same from every client and time zone.
    """
    stamps = ("ETag", "etag", "generation", "mtime", "LastModified", "last_modified", "updated")
    stats = []
    for path in files:
        info = _stat(fs, path)
        stamp = next((info[k] for k in stamps if info.get(k) is not None), None)
        stats.append({"path": _display(fs, path), "size": info.get("size"), "modified": str(stamp)})
    return stats


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


def _is_parquet(fs, path: str) -> bool:
    try:
        with fs.open(path, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def _unreadable(where: str, fmt: str, exc: BaseException, fs=None, path: str | None = None, text=None) -> str:
    """One line: what pyarrow found, without its wrapper text, where (as a line number), and the fix."""
    if isinstance(exc, InputError):
        return exc.message
    reason = _printable(first_line(exc))
    if path and split_compression(path)[1] and isinstance(exc, (OSError, EOFError)):
        # Arrow's gzip/bz2/zstd errors read differently from our xz/gzip/bz2 reader's: say it one way.
        found = str(exc) if isinstance(exc, TrailingData) else _quietly(trailing_data, fs, path)
        if found:
            return (
                f"Cannot read '{where}' as {fmt}: {found}; remove the bytes after the stream's end, or "
                "compress the file again."
            )
    if fmt == "json" and text is not None:
        found = _quietly(text.locate_type_change, fs, path, reason)
        if found:
            return f"Cannot read '{where}' as json: {found}."
    if fmt in ("csv", "tsv") and text is not None:
        line = _quietly(text.locate_csv_error, fs, path, reason)
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
        found = _quietly(_first_bad_json_line, fs, path) if fs is not None and path else None
        line, what = found or (None, None)
        if what:  # JSON, but not an object: pyarrow's "Column() changed from object to array" says it darkly
            reason = f"line {line} is {what}, not a JSON object"
        elif line:
            reason += f" at line {line}"
    if fmt != "parquet" and fs is not None and path and _is_parquet(fs, path):
        return f"Cannot read '{where}' as {fmt}: it is a Parquet file; give it a .parquet name."
    hint = next((h for key, h in _HINTS.items() if key in reason.lower()), f"check that it is a valid {fmt} file")
    return f"Cannot read '{where}' as {fmt}: {reason.rstrip('.')}; {hint}."


def _first_bad_json_line(fs, path: str) -> tuple[int, str | None] | None:
    """The first line that is not a JSON object: (its number, what it is instead, if it is JSON)."""
    import json

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


def _quietly(locate, *args):
    """A locating helper's answer, or None where reading the file again fails too: the first error stands."""
    import csv

    try:
        return locate(*args)
    except (OSError, EOFError, ValueError, csv.Error, ArrowError):
        return None


def _printable(text: str, limit: int = 300) -> str:
    """No raw bytes in a message: a binary file read as text shows as escapes, cut short."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _display(fs, path: str) -> str:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def _is_saved_dataset(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, n)) for n in ("state.json", "dataset_dict.json"))


def _arrow_iter(dataset, columns):
    if columns is not None:
        dataset = dataset.select_columns(columns)
    # .iter() on an arrow-formatted dataset yields pa.Tables and, unlike
    # __iter__, does not re-shard itself when called inside a DataLoader worker.
    return dataset.with_format("arrow").iter(batch_size=READ_BATCH_ROWS)


def _open_saved_dataset(path: str, split: str) -> Source:
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"Cannot load saved dataset '{path}': {first_line(exc)}.") from None
    except Exception as exc:  # a damaged folder fails inside `datasets` and pyarrow in many classes
        raise InputError(
            f"Cannot load saved dataset '{path}' ({type(exc).__name__}: {_printable(first_line(exc))});"
            " the folder is damaged: save the dataset again."
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"Split '{split}' not in '{path}'; splits are: {', '.join(loaded)}. Pass --split.")
        loaded = loaded[split]
    source = Source(
        f"{path} (saved dataset, split {split})",
        [path],
        loaded.features.arrow_schema,
        loaded.num_rows,
        lambda columns: _arrow_iter(loaded, columns),
        fingerprint={
            "saved_dataset": os.path.abspath(path),
            "split": split,
            "dataset_fingerprint": loaded._fingerprint,
        },
    )

    def read_rows(columns, start, stop):
        # Memory-mapped Arrow files: a slice reads only its own rows.
        source.rows_decoded += max(min(stop, loaded.num_rows) - start, 0)
        dataset = loaded if columns is None else loaded.select_columns(columns)
        yield dataset.with_format("arrow")[start:stop]

    source.read_rows = read_rows
    return source


def _open_hub_dataset(name: str, split: str, dataset_config: str | None) -> Source:
    import datasets

    try:
        streamed = datasets.load_dataset(name, dataset_config, split=split, streaming=True)
    except ValueError as exc:
        # datasets raises ValueError for an unknown split or config; say which.
        raise InputError(f"Cannot open dataset '{name}': {first_line(exc)} Pass --split / --dataset-config.") from None
    except Exception as exc:  # Hub errors come in many classes (HTTP, offline, not found)
        raise InputError(
            f"Cannot open Hub dataset '{name}' ({type(exc).__name__}: {first_line(exc)}); "
            "check the name, or pass a local file."
        ) from None
    if streamed.features is not None:
        schema = streamed.features.arrow_schema
    else:  # some streamed formats only know their columns once read: peek at the first rows
        first = next(_streamed(streamed.take(1).with_format("arrow").iter(batch_size=1), name), None)
        if first is None:
            raise InputError(
                f"Dataset '{name}' (split {split}) has no rows and declares no columns; check the name and --split."
            )
        schema = first.schema
    return Source(
        f"{name} (Hub dataset, split {split})",
        [],
        schema,
        None,
        lambda columns: _streamed(_arrow_iter(streamed, columns), name),
        fingerprint={"dataset": name, "config": dataset_config, "split": split, "revision": _dataset_revision(name)},
    )


def _streamed(batches, name: str):
    """A streamed dataset's batches; `datasets` parses files while streaming and fails in its readers' own
    classes (pandas' ParserError, JSON and HTTP errors): one InputError naming the dataset."""
    try:
        yield from batches
    except BatchscoreError:
        raise
    except Exception as exc:
        raise InputError(
            f"Cannot read dataset '{name}' ({type(exc).__name__}: {_printable(first_line(exc))}); "
            "fix the file it names, or check the dataset."
        ) from None


def _dataset_revision(name: str) -> str | None:
    """The Hub commit of a dataset repo, or file stamps of a local Hub-style folder."""
    if os.path.isdir(name):
        import fsspec

        fs = fsspec.filesystem("file")
        return str(_file_stats(fs, sorted(fs.find(name))))
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name).sha
    except Exception:  # offline or private: resume then trusts name + split
        return None

"""Open the input and stream it as Arrow record batches, never whole.

Files (local, glob, folder, any fsspec URL) are read by pyarrow.dataset, one
file after another in sorted order so row order is stable across runs. Hub
datasets, Hub-style dataset folders and `save_to_disk` folders go through the
`datasets` library.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .errors import InputError

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

    return codecs.CodecInfo(utf8.encode, lambda b, errors="replace": utf8.decode(b, "replace"),
                            incrementaldecoder=Decoder, name=REPLACE_CODEC)


codecs.register(_replace_codec)


@dataclass
class Source:
    description: str  # shown in logs and recorded in the manifest
    files: list[str]  # resolved file paths/URLs ([] for Hub datasets)
    schema: "object | None"  # pa.Schema when known before reading
    num_rows: int | None  # known up front for Parquet and saved datasets, for the progress bar
    _open: Callable[[list[str] | None], Iterator]  # columns -> record batches
    fingerprint: dict = field(default_factory=dict)  # what identifies this input's content, for resume
    local_text: bool = False  # local CSV/TSV/JSONL: cheap to scan once before scoring
    text_files: bool = False  # CSV/TSV/JSONL anywhere: a parse error can hide in any row
    root: str | None = None  # the file, folder or glob base the files were found under

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
        return rows


def _format_of(path: str) -> str | None:
    lower = path.lower()
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    return None


def _visible(path: str, base: str) -> bool:
    # Skip _SUCCESS, .crc files, _batchscore/ records, hidden folders and the like (Spark/Hadoop
    # habits), in every folder below the one the user named.
    relative = path[len(base):] if path.startswith(base) else path.rsplit("/", 1)[-1]
    return not any(part.startswith((".", "_")) for part in relative.replace("\\", "/").split("/") if part)


def _is_url(text: str) -> bool:
    return "://" in text


def open_source(spec: str, *, text_column: str, split: str = "train", dataset_config: str | None = None,
                encoding: str | None = None, exclude=None):
    """Resolve `spec` to a Source. Raises InputError with the fix named.

    `exclude(url) -> bool` drops files found in a folder or glob (this job's own
    output, when it lies inside the input folder).
    """
    if _is_url(spec) or os.path.exists(spec) or any(ch in spec for ch in "*?["):
        if not _is_url(spec) and os.path.isdir(spec):
            if _is_saved_dataset(spec):
                return _open_saved_dataset(spec, split)
            if os.path.exists(os.path.join(spec, "README.md")):
                return _open_hub_dataset(spec, split, dataset_config)
        return _open_files(spec, text_column, encoding, exclude)
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
                    ".csv, .tsv, .parquet, .jsonl and .json files."
                )
            return fs, [path], path
        if fs.isdir(path):
            base = path.rstrip("/") + "/"
            candidates = fs.find(path)
        elif any(ch in path for ch in "*?["):
            base = path[:min(path.find(ch) for ch in "*?[" if ch in path)].rpartition("/")[0] + "/"
            candidates = fs.glob(path)
        else:
            raise InputError(f"Input '{spec}' not found; check the path.")
    except OSError as exc:
        raise InputError(f"Cannot read '{spec}': {exc}.") from None
    files = sorted(p for p in candidates if _format_of(p) and _visible(p, base)
                   and not (exclude and exclude(_display(fs, p))))
    if not files:
        raise InputError(
            f"No .csv, .tsv, .parquet, .jsonl or .json files found at '{spec}'; check the path or glob."
        )
    return fs, files, base.rstrip("/")


def _file_format(fmt: str, text_column: str, encoding: str | None = None):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds

    if fmt in ("csv", "tsv"):
        return ds.CsvFileFormat(
            # Reviews and comments often hold quoted newlines; slower, but correct.
            parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
            # Texts like "10" must stay strings, not become integers.
            convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}),
            read_options=pacsv.ReadOptions(block_size=1 << 22, encoding=encoding or "utf8"),
        )
    if encoding and encoding.replace("-", "").lower() not in ("utf8",):
        raise InputError(f"--encoding applies to CSV/TSV files only; {fmt} input must be UTF-8.")
    return fmt


def _open_files(spec: str, text_column: str, encoding: str | None = None, exclude=None) -> Source:
    import pyarrow as pa
    import pyarrow.dataset as ds

    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(f"Unknown --encoding '{encoding}'; use a Python codec name such as latin-1, cp1252, "
                             f"or {REPLACE_CODEC}.") from None
    fs, files, root = _resolve_files(spec, exclude)
    empty = [f for f in files if fs.size(f) == 0]
    if empty:
        raise InputError(f"Input file '{_display(fs, empty[0])}' is empty (0 bytes); remove it or fix the export.")
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise InputError(f"'{spec}' mixes file formats ({', '.join(sorted(formats))}); point at one format.")
    fmt = formats.pop()
    file_format = _file_format(fmt, text_column, encoding)
    try:
        dataset = ds.dataset(files, format=file_format, filesystem=fs)
        if len(files) > 1:
            # pyarrow infers the schema from the first file only; a column that is
            # int in one shard and float (or empty) in another would then fail to
            # read. Unify every file's schema, promoting types where needed.
            schema = pa.unify_schemas([f.physical_schema for f in dataset.get_fragments()],
                                      promote_options="permissive")
            dataset = ds.dataset(files, format=file_format, filesystem=fs, schema=schema)
        schema = dataset.schema
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(_unreadable(spec, fmt, exc, fs, files[0] if len(files) == 1 else None)) from None
    num_rows = None
    if fmt == "parquet":
        num_rows = sum(frag.metadata.num_rows for frag in dataset.get_fragments())

    def open_batches(columns):
        # Fragment by fragment, batch by batch: keeps input order without a sort.
        for fragment in dataset.get_fragments():
            try:
                for batch in fragment.to_batches(schema=schema, columns=columns, batch_size=READ_BATCH_ROWS):
                    yield batch
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(_unreadable(_display(fs, fragment.path), fmt, exc, fs, fragment.path)) from None

    desc = spec if len(files) == 1 else f"{spec} ({len(files)} {fmt} files)"
    local = _display(fs, files[0]) == files[0]
    return Source(desc, [_display(fs, f) for f in files], schema, num_rows, open_batches,
                  fingerprint={"files": _file_stats(fs, files), "encoding": encoding},
                  local_text=local and fmt != "parquet", text_files=fmt != "parquet", root=_display(fs, root))


def _file_stats(fs, files: list[str]) -> list[dict]:
    """Path, size and modification stamp of each file: a changed file means another input.

    Object stores: the ETag (or GCS generation), which changes with the content and,
    unlike a listing's LastModified, reads the same from every client and time zone.
    """
    stamps = ("ETag", "etag", "generation", "mtime", "LastModified", "last_modified", "updated")
    stats = []
    for path in files:
        info = fs.info(path)
        stamp = next((info[k] for k in stamps if info.get(k) is not None), None)
        stats.append({"path": _display(fs, path), "size": info.get("size"), "modified": str(stamp)})
    return stats


_HINTS = {
    "invalid UTF8": "pass --encoding latin-1 (or the file's encoding), or --encoding utf-8-replace",
    "Expected": "fix that row, or quote its text (a ragged CSV row)",
    "magic bytes": "the file is corrupt or truncated; export it again",
    "JSON parse error": "each line must be one JSON object (JSON Lines)",
    "truncated": "the file is corrupt or truncated; export it again",
}


def _unreadable(where: str, fmt: str, exc: BaseException, fs=None, path: str | None = None) -> str:
    """One line: what pyarrow found, without its wrapper text, where (as a line number), and the fix."""
    reason = _first_line(exc)
    for marker in ("Invalid: ", "input source '"):
        if marker in reason:
            reason = reason.rsplit(marker, 1)[-1].split("': ", 1)[-1]
    # pyarrow counts CSV records with the header as #1; say so rather than renumber
    # (a quoted newline makes records and lines differ).
    reason = re.sub(r"Row #(\d+)", r"record #\1 (the header is #1)", reason)
    reason = reason.replace(". Either the file is corrupted or this is not a parquet file", "")
    if "JSON parse error" in reason:
        # pyarrow's JSON row number restarts in every read block: find the real line.
        reason = re.sub(r"\.? in row \d+", "", reason)
        line = _first_bad_json_line(fs, path) if fs is not None and path else None
        if line:
            reason += f" at line {line}"
    hint = next((h for key, h in _HINTS.items() if key in reason), f"check that it is a valid {fmt} file")
    return f"Cannot read '{where}' as {fmt}: {reason.rstrip('.')}; {hint}."


def _first_bad_json_line(fs, path: str) -> int | None:
    import json

    try:
        with fs.open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if raw.strip():
                    try:
                        json.loads(raw)
                    except ValueError:
                        return number
    except OSError:
        return None
    return None


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
        raise InputError(f"Cannot load saved dataset '{path}': {_first_line(exc)}.") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"Split '{split}' not in '{path}'; splits are: {', '.join(loaded)}. Pass --split.")
        loaded = loaded[split]
    return Source(f"{path} (saved dataset, split {split})", [path], loaded.features.arrow_schema,
                  loaded.num_rows, lambda columns: _arrow_iter(loaded, columns),
                  fingerprint={"saved_dataset": os.path.abspath(path), "split": split,
                               "dataset_fingerprint": loaded._fingerprint})


def _open_hub_dataset(name: str, split: str, dataset_config: str | None) -> Source:
    import datasets

    try:
        streamed = datasets.load_dataset(name, dataset_config, split=split, streaming=True)
    except ValueError as exc:
        # datasets raises ValueError for an unknown split or config; say which.
        raise InputError(f"Cannot open dataset '{name}': {_first_line(exc)} Pass --split / --dataset-config.") \
            from None
    except Exception as exc:  # Hub errors come in many classes (HTTP, offline, not found)
        raise InputError(
            f"Cannot open Hub dataset '{name}' ({type(exc).__name__}: {_first_line(exc)}); "
            "check the name, or pass a local file."
        ) from None
    if streamed.features is not None:
        schema = streamed.features.arrow_schema
    else:  # some streamed formats only know their columns once read: peek at the first rows
        schema = next(iter(streamed.take(1).with_format("arrow").iter(batch_size=1))).schema
    return Source(f"{name} (Hub dataset, split {split})", [], schema, None,
                  lambda columns: _arrow_iter(streamed, columns),
                  fingerprint={"dataset": name, "config": dataset_config, "split": split,
                               "revision": _dataset_revision(name)})


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")

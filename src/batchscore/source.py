"""Open the input and stream it as Arrow record batches, never whole.

Files (local, glob, folder, any fsspec URL) are read by pyarrow.dataset, one
file after another in sorted order so row order is stable across runs. Hub
datasets, Hub-style dataset folders and `save_to_disk` folders go through the
`datasets` library.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from .errors import InputError

# Extension -> pyarrow.dataset format name. `.json` must be JSON Lines.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}
READ_BATCH_ROWS = 8192
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Source:
    description: str  # shown in logs and recorded in the manifest
    files: list[str]  # resolved file paths/URLs ([] for Hub datasets)
    schema: "object | None"  # pa.Schema when known before reading
    num_rows: int | None  # known up front for Parquet and saved datasets, for the progress bar
    _open: Callable[[list[str] | None], Iterator]  # columns -> record batches

    def batches(self, columns: list[str] | None = None) -> Iterator:
        """Yield pyarrow RecordBatches (or Tables) holding `columns`, in input order."""
        yield from self._open(columns)

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names) if self.schema is not None else []


def _format_of(path: str) -> str | None:
    lower = path.lower()
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    return None


def _visible(path: str) -> bool:
    # Skip _SUCCESS, _manifest.json, .crc files and the like: Spark/Hadoop habits.
    return not any(part.startswith((".", "_")) for part in path.replace("\\", "/").split("/")[-1:])


def _is_url(text: str) -> bool:
    return "://" in text


def open_source(spec: str, *, text_column: str, split: str = "train", dataset_config: str | None = None):
    """Resolve `spec` to a Source. Raises InputError with the fix named."""
    if _is_url(spec) or os.path.exists(spec) or any(ch in spec for ch in "*?["):
        if not _is_url(spec) and os.path.isdir(spec):
            if _is_saved_dataset(spec):
                return _open_saved_dataset(spec, split)
            if os.path.exists(os.path.join(spec, "README.md")):
                return _open_hub_dataset(spec, split, dataset_config)
        return _open_files(spec, text_column)
    if _format_of(spec) is None and _HUB_NAME.match(spec):
        return _open_hub_dataset(spec, split, dataset_config)
    raise InputError(f"Input '{spec}' not found; check the path (or pass a Hub dataset name like user/name).")


def _resolve_files(spec: str) -> tuple[object, list[str]]:
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
            return fs, [path]
        if fs.isdir(path):
            candidates = fs.find(path)
        elif any(ch in path for ch in "*?["):
            candidates = fs.glob(path)
        else:
            raise InputError(f"Input '{spec}' not found; check the path.")
    except OSError as exc:
        raise InputError(f"Cannot read '{spec}': {exc}.") from None
    files = sorted(p for p in candidates if _format_of(p) and _visible(p))
    if not files:
        raise InputError(
            f"No .csv, .tsv, .parquet, .jsonl or .json files found at '{spec}'; check the path or glob."
        )
    return fs, files


def _file_format(fmt: str, text_column: str):
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.csv as pacsv

    if fmt in ("csv", "tsv"):
        return ds.CsvFileFormat(
            # Reviews and comments often hold quoted newlines; slower, but correct.
            parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
            # Texts like "10" must stay strings, not become integers.
            convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}),
            read_options=pacsv.ReadOptions(block_size=1 << 22),
        )
    return fmt


def _open_files(spec: str, text_column: str) -> Source:
    import pyarrow as pa
    import pyarrow.dataset as ds

    fs, files = _resolve_files(spec)
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise InputError(f"'{spec}' mixes file formats ({', '.join(sorted(formats))}); point at one format.")
    fmt = formats.pop()
    file_format = _file_format(fmt, text_column)
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
        raise InputError(f"Cannot read '{spec}' as {fmt}: {_first_line(exc)}.") from None
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
                raise InputError(f"Cannot read '{fragment.path}': {_first_line(exc)}.") from None

    desc = spec if len(files) == 1 else f"{spec} ({len(files)} {fmt} files)"
    return Source(desc, [_display(fs, f) for f in files], schema, num_rows, open_batches)


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
                  loaded.num_rows, lambda columns: _arrow_iter(loaded, columns))


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
                  lambda columns: _arrow_iter(streamed, columns))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")

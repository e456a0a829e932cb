"""What an input spec names: files (a path, folder, glob or fsspec URL), a saved dataset, a Hub dataset, or a
Delta Lake or Apache Iceberg table."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError, first_line
from ..location import WILDCARDS, Location, display, is_local
from .streams import split_compression

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# Extension -> pyarrow.dataset format name. `.json` must be JSON Lines.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
FILES, SAVED_DATASET, HUB_DATASET = "files", "saved dataset", "Hub dataset"
DELTA_TABLE, ICEBERG_TABLE = "Delta table", "Iceberg table"
ICEBERG_PREFIX = "iceberg:"  # iceberg:NAMESPACE.TABLE, a table of --catalog
DELTA_LOG = "_delta_log"


class VersionGone(InputError):
    """A table's version or snapshot that is not there (never was, or cleaned up since). `why` says so without
    the fix, for a message that names another one (the version came from the output's earlier run)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


def kind_of(spec: str) -> str:
    """FILES, SAVED_DATASET (a `save_to_disk` folder), HUB_DATASET (a Hub name, or a Hub-style folder with a
    README.md), DELTA_TABLE (a folder holding `_delta_log/`) or ICEBERG_TABLE (`iceberg:NAMESPACE.TABLE`);
    InputError where it names nothing."""
    if spec.startswith(ICEBERG_PREFIX):
        return ICEBERG_TABLE
    if is_delta_table(spec):
        return DELTA_TABLE
    if is_url(spec) or os.path.exists(spec) or any(ch in spec for ch in WILDCARDS):
        if not is_url(spec):
            _refuse_inside_delta(spec)
        if not is_url(spec) and os.path.isdir(spec):
            if any(os.path.exists(os.path.join(spec, n)) for n in ("state.json", "dataset_dict.json")):
                return SAVED_DATASET
            if os.path.exists(os.path.join(spec, "README.md")):
                return HUB_DATASET
        return FILES
    if format_of(spec) is None and HUB_NAME.match(spec):
        return HUB_DATASET
    raise InputError(f"Input '{spec}' not found; check the path (or pass a Hub dataset name like user/name).")


def is_url(text: str) -> bool:
    return "://" in text


def is_delta_table(spec: str) -> bool:
    """A folder holding a Delta log. Checked before the folder is taken for files: its Parquet files include
    those the log has removed, and read as files they would be scored as rows."""
    if any(ch in spec for ch in WILDCARDS) or format_of(spec) is not None:
        return False
    if not is_url(spec):
        return os.path.isdir(os.path.join(spec, DELTA_LOG))
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(spec)
        return bool(fs.isdir(path.rstrip("/") + "/" + DELTA_LOG))
    except (ImportError, ValueError, OSError):
        return False  # resolve_files says what is wrong with the URL


def _refuse_inside_delta(spec: str) -> None:
    """A folder or file inside a local Delta table (a partition folder, one of its data files) is refused: read
    as plain Parquet it would bring back rows the log has deleted or replaced."""
    here = os.path.abspath(spec)
    while True:
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent
        if os.path.isdir(os.path.join(here, DELTA_LOG)):
            raise InputError(
                f"'{spec}' is inside the Delta table '{here}'; pass the table's folder, which reads its current "
                "rows (its files alone would include deleted ones)."
            )


def format_of(path: str) -> str | None:
    """The format a file's name says, compressed or not; None for a name batchscore does not read."""
    name, compression = split_compression(path)
    lower = name.lower()
    if compression and lower.endswith(".parquet"):
        return None  # Parquet compresses inside the file
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    return None


@dataclass(frozen=True)
class FileSet:
    """The files an input spec names, sorted, so row order is stable across runs."""

    fs: AbstractFileSystem
    paths: list[str]  # on fs
    root: str  # the file, folder or glob base they were found under (fs path)

    def display(self, path: str) -> str:
        return display(self.fs, path)

    @property
    def local(self) -> bool:
        return is_local(self.fs)

    def locations(self) -> list[Location]:
        """Each file and the root, to compare with the output."""
        return [Location(self.fs, p, self.display(p)) for p in (*self.paths, self.root)]

    def format(self, spec: str) -> str:
        """The one format of every file; InputError for an empty file or a mix of formats."""
        empty = [f for f in self.paths if stat(self.fs, f)["size"] == 0]
        if empty:
            raise InputError(f"Input file '{self.display(empty[0])}' is empty (0 bytes); remove it or fix the export.")
        formats = {format_of(f) for f in self.paths}
        if len(formats) > 1:
            raise InputError(
                f"'{spec}' mixes file formats ({', '.join(sorted(map(str, formats)))}); point at one format."
            )
        return str(formats.pop())


def resolve_files(spec: str, output: Location | None = None) -> FileSet:
    """The files at `spec`: a file, every readable file in a folder, or a glob's matches. Files inside `output`
    (this job's own, when it lies inside the input folder) are left out."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(spec)
    except (ImportError, ValueError) as exc:
        raise InputError(f"Cannot open '{spec}': {exc}. Install the fsspec backend for that URL scheme.") from None
    try:
        # An existing file or folder wins over glob syntax: 'data[1].csv' is a name.
        if fs.isfile(path):
            if format_of(path) is None:
                raise InputError(
                    f"Cannot tell the format of '{spec}' from its name; batchscore reads "
                    ".csv, .tsv, .parquet, .jsonl and .json files (text formats also as .gz, .bz2, .zst, .xz)."
                )
            return FileSet(fs, [path], path)
        if fs.isdir(path):
            base = path.rstrip("/") + "/"
            candidates = fs.find(path)
        elif any(ch in path for ch in WILDCARDS):
            base = path[: min(path.find(ch) for ch in WILDCARDS if ch in path)].rpartition("/")[0] + "/"
            candidates = fs.glob(path)
        else:
            raise InputError(f"Input '{spec}' not found; check the path.")
    except OSError as exc:
        raise InputError(f"Cannot read '{spec}': {exc}.") from None
    files = sorted(
        p
        for p in candidates
        if format_of(p) and _visible(p, base) and not (output and output.contains(Location(fs, p, p)))
    )
    if not files:
        raise InputError(f"No .csv, .tsv, .parquet, .jsonl or .json files found at '{spec}'; check the path or glob.")
    return FileSet(fs, files, base.rstrip("/"))


def _visible(path: str, base: str) -> bool:
    # Skip _SUCCESS, .crc files, _batchscore/ records, hidden folders and the like (Spark/Hadoop
    # habits), in every folder below the one the user named.
    relative = path[len(base) :] if path.startswith(base) else path.rsplit("/", 1)[-1]
    return not any(part.startswith((".", "_")) for part in relative.replace("\\", "/").split("/") if part)


def stat(fs: AbstractFileSystem, path: str) -> dict:
    """fs.info of a listed file; one that is gone since (or a link to nothing) is an InputError naming it."""
    try:
        return fs.info(path)
    except OSError as exc:
        raise InputError(
            f"Cannot read input file '{display(fs, path)}' ({first_line(exc)}); it was listed but "
            "is gone or unreadable: fix or remove it, then rerun."
        ) from None


def file_stats(fs: AbstractFileSystem, files: list[str]) -> list[dict]:
    """Path, size and modification stamp of each file: a changed file means another input.

    Object stores: the ETag (or GCS generation), which changes with the content and,
    unlike a listing's LastModified, reads the same from every client and time zone.
    """
    stamps = ("ETag", "etag", "generation", "mtime", "LastModified", "last_modified", "updated")
    stats = []
    for path in files:
        info = stat(fs, path)
        stamp = next((info[k] for k in stamps if info.get(k) is not None), None)
        stats.append({"path": display(fs, path), "size": info.get("size"), "modified": str(stamp)})
    return stats

"""A Delta Lake table as input: one version of it, its data files read like Parquet, row group by row group.

deltalake reads the log once, in the process that opens the input: which files make up the version, each
file's partition values, the table's schema. Everything after that is pyarrow over fsspec, as for Parquet
files: delta-rs's runtime panics in a forked process, and DataLoader workers are forked, so a worker reopens
the version from that plain record (`DeltaFiles`), never through deltalake.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError, first_line
from ..location import display, is_local
from ..tables.extras import require
from .base import Reader
from .hive import Partitions
from .messages import unreadable
from .parquet import ParquetReader
from .resolve import VersionGone

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds
    from fsspec import AbstractFileSystem

# Reader features of the log alone: the kernel that loaded the table read them; the data files are plain.
LOG_FEATURES = {"v2Checkpoint", "vacuumProtocolCheck"}


@dataclass(frozen=True)
class DeltaFiles:
    """One version of a Delta table as plain, picklable data: enough to read it without deltalake."""

    uri: str  # the table, as deltalake resolved it (absolute), for messages and the fingerprint
    table_id: str  # the table's id (metaData.id): a table deleted and made again at the same path is another
    version: int
    # The store by URL, opened again by each reader: an fsspec instance made before a fork is not usable after it
    # (s3fs's event loop belongs to the parent), and DataLoader workers inherit the parent's objects.
    location: str
    paths: list[str]  # the data files on the store, in reading order
    partitions: list[dict[str, Any]]  # each file's partition values, typed as the schema says
    schema: pa.Schema


class DeltaReader(ParquetReader):
    """ParquetReader's row-group reading over the data files of one table version.

    The partition columns are the schema's: pyarrow fills them from each file's partition values as Delta
    records them in the log (typed, null as null), never from folder names.
    """

    version_key = "version"  # the fingerprint's key that pins the table's rows

    def __init__(self, table: DeltaFiles) -> None:
        import fsspec
        import pyarrow as pa
        import pyarrow.dataset as ds

        self.table = table
        self.fs, self.paths = fsspec.core.url_to_fs(table.location)[0], table.paths
        self.files_schema = table.schema
        self.partitions = Partitions({}, {})  # the schema already holds them; nothing to add from folders
        try:
            dataset = ds.FileSystemDataset.from_paths(
                table.paths,
                schema=table.schema,
                format=ds.ParquetFileFormat(),
                filesystem=_arrow_fs(self.fs),
                partitions=[_partition_expression(values, table.schema) for values in table.partitions],
            )
            fragments = list(dataset.get_fragments())
        except (pa.ArrowException, OSError) as exc:
            raise InputError(unreadable(table.uri, "Delta table", exc)) from None
        self.fragments: dict[str, ds.Fragment] = dict(zip(table.paths, fragments))
        self.groups = []
        self.starts = []
        row = 0
        for path in self.paths:
            for group, rows in self._footer_groups(path):
                self.groups.append((path, group))
                self.starts.append(row)
                row += rows
        self.total_rows = row
        self._cursor = None
        # Reader's own: ParquetReader's and FileReader's find files in folders, where a table's log lists them.
        Reader.__init__(
            self,
            f"Delta table {table.uri} at version {table.version}",
            [display(self.fs, p) for p in table.paths],
            table.schema,
            row,
            {"delta": table.uri, "table_id": table.table_id, "version": table.version},
            local=is_local(self.fs),
            root=table.uri,
        )

    def pinned(self) -> Callable[[], DeltaReader]:
        """Opens this version again, in a DataLoader worker, without deltalake (see the module's docstring)."""
        return functools.partial(DeltaReader, self.table)

    def _footer_groups(self, path: str) -> list[tuple[ds.Fragment, int]]:
        import pyarrow as pa

        try:
            return self._row_groups(path)
        except FileNotFoundError:
            why = f"its data file '{display(self.fs, path)}' is gone: VACUUM removes the files of old versions"
            raise VersionGone(
                f"Cannot read version {self.table.version} of the Delta table {self.table.uri}: {why}; pass a newer "
                "--input-version, or leave it out for the latest.",
                why,
            ) from None
        except (pa.ArrowException, OSError) as exc:
            raise InputError(unreadable(display(self.fs, path), "parquet", exc)) from None


def open_delta(spec: str, version: int | None) -> DeltaReader:
    """The Delta table at `spec` (a path or URL of its folder), at `version` (None: the latest)."""
    require("deltalake")
    import fsspec
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    uri = spec if "://" in spec else os.path.abspath(spec)
    try:
        # Storage options come from the environment (AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, ...): delta-rs reads it.
        table = DeltaTable(uri, version=version)
    except (DeltaError, OSError, ValueError) as exc:
        latest = _latest(uri) if version is not None else None
        if latest is not None:  # the table is there, that version is not (or its log was cleaned up)
            why = f"its latest is {latest}; the log of old versions may have been cleaned up"
            raise VersionGone(
                f"The Delta table '{spec}' has no version {version} ({why}); pass an existing --input-version, "
                "or leave it out for the latest.",
                why,
            ) from None
        if isinstance(exc, TableNotFoundError):
            raise InputError(f"No Delta table at '{spec}' ({first_line(exc)}); check the path.") from None
        raise InputError(f"Cannot read the Delta table '{spec}': {first_line(exc)}.") from None
    _refuse_unreadable(table, spec)
    resolved = table.table_uri.rstrip("/")
    try:
        fs, root = fsspec.core.url_to_fs(resolved)
    except (ImportError, ValueError) as exc:
        raise InputError(f"Cannot open '{spec}': {exc}. Install the fsspec backend for that URL scheme.") from None
    schema = pa.schema(table.schema().to_arrow())
    actions = pa.table(table.get_add_actions(flatten=False))
    paths = [_data_path(fs, root, p) for p in actions.column("path").to_pylist()]
    values = (
        actions.column("partition").to_pylist()
        if "partition" in actions.column_names
        else [{} for _ in range(actions.num_rows)]
    )
    # The log lists a version's files in the order it replays them, which a checkpoint can change: sorted by
    # when each file was added (then by path), the rows of one version come in one order, on every read.
    stamps = actions.column("modification_time").to_pylist()
    order = sorted(range(len(paths)), key=lambda i: (stamps[i], paths[i]))
    return DeltaReader(
        DeltaFiles(
            uri=display(fs, root) if not is_local(fs) else root,
            table_id=str(table.metadata().id),
            version=table.version(),
            location=resolved,
            paths=[paths[i] for i in order],
            partitions=[values[i] or {} for i in order],
            schema=schema,
        )
    )


def _refuse_unreadable(table: Any, spec: str) -> None:
    """Refuse a table whose files, read alone, would give other rows or columns than the table holds.

    Deletion vectors mark deleted rows outside the files, column mapping renames columns: deltalake's own
    pyarrow dataset refuses both features outright. Here a table with deletion vectors enabled is read while
    none of its files has one (the files are then the rows), and refused once one has.
    """
    from deltalake.table import MAX_SUPPORTED_READER_VERSION, SUPPORTED_READER_FEATURES

    protocol = table.protocol()
    if protocol.min_reader_version > MAX_SUPPORTED_READER_VERSION:
        raise InputError(
            f"Cannot read the Delta table '{spec}': it needs a Delta reader of version "
            f"{protocol.min_reader_version}; upgrade deltalake, or export the table."
        )
    features = set(protocol.reader_features or ()) - set(SUPPORTED_READER_FEATURES) - LOG_FEATURES
    mapping = (table.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if mapping not in (None, "", "none"):
        features.add("columnMapping")  # reader version 2 has no feature list: the table's setting tells
    if "deletionVectors" in features:
        marked = _files_with_deletion_vectors(table)
        if not marked:
            features.discard("deletionVectors")
        else:
            raise InputError(
                f"Cannot read the Delta table '{spec}': {marked} of its files have deletion vectors (deleted rows "
                "the files still hold), which batchscore cannot apply; purge them (REORG TABLE ... APPLY "
                "(PURGE)) and rerun, or export the table."
            )
    if features:
        raise InputError(
            f"Cannot read the Delta table '{spec}': it uses {', '.join(sorted(features))}, which batchscore "
            "cannot apply reading its files; export it (e.g. to Parquet) and score the export."
        )


def _files_with_deletion_vectors(table: Any) -> int:
    import pyarrow as pa

    return pa.table(table.deletion_vectors()).num_rows


def _latest(uri: str) -> int | None:
    """The table's latest version; None where it cannot be read either."""
    from deltalake import DeltaTable

    try:
        return DeltaTable(uri).version()
    except Exception:  # the first error says why
        return None


def _data_path(fs: AbstractFileSystem, root: str, path: str) -> str:
    """A data file's path on `fs`: the log writes paths as URIs, relative to the table, percent-encoded."""
    path = urllib.parse.unquote(path)
    if "://" in path:  # an absolute path (a shallow clone's files)
        return str(fs._strip_protocol(path))
    return root.rstrip("/") + "/" + path


def _partition_expression(values: dict[str, Any], schema: pa.Schema) -> ds.Expression:
    """The file's partition values as the expression pyarrow fills the partition columns from (true: none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    terms = [
        pc.field(name).is_null() if value is None else pc.field(name) == pa.scalar(value, schema.field(name).type)
        for name, value in values.items()
    ]
    return functools.reduce(lambda a, b: a & b, terms, pc.scalar(True))


def _arrow_fs(fs: AbstractFileSystem) -> Any:
    """pyarrow's file system for an fsspec one: its own for local files, else fsspec's behind pyarrow's handler."""
    import pyarrow.fs as pa_fs

    if is_local(fs):
        return pa_fs.LocalFileSystem()
    return pa_fs.PyFileSystem(pa_fs.FSSpecHandler(fs))

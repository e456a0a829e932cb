"""An Apache Iceberg table as input (`iceberg:NAMESPACE.TABLE` of --catalog): one snapshot of it, file by file.

pyiceberg plans the snapshot's data files once; each file is then read on its own through pyiceberg's
ArrowScan, which applies what a plain Parquet read would miss: delete files, renamed and added columns (by
field id), identity partition values not stored in the file. Its whole-table readers fetch every file at once
in threads and hold them all, so they are not used: memory holds one data file's rows at a time.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import InputError, first_line
from ..tables.catalog import catalog_properties, open_catalog, shown, table_identifier
from ..tables.extras import require
from .base import Reader
from .hive import Partitions
from .messages import unreadable
from .parquet import ParquetReader, _check_utf8, _RowGroupCursor
from .resolve import ICEBERG_PREFIX, VersionGone

if TYPE_CHECKING:
    import pyarrow as pa


class IcebergReader(ParquetReader):
    """ParquetReader's cursor (any range of rows, read on from where the last request stopped) over whole data
    files instead of row groups: pyiceberg reads a file at a time.

    `snapshot` None with `pinned`: the table as it was before its first snapshot (no rows), even if it has
    one now.
    """

    version_key = "snapshot"  # the fingerprint's key that pins the table's rows

    def __init__(self, spec: str, catalog: str | None, snapshot: int | None, *, pinned: bool = False) -> None:
        require("pyiceberg")
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        name = spec[len(ICEBERG_PREFIX) :] if spec.startswith(ICEBERG_PREFIX) else spec
        namespace, table_name = table_identifier(name, error=InputError)
        name = f"{namespace}.{table_name}"
        where = shown(catalog)
        self.spec = spec
        self.catalog = catalog
        try:
            table = open_catalog(catalog, error=InputError).load_table(name)
        except (NoSuchTableError, NoSuchNamespaceError):
            raise InputError(
                f"No Iceberg table '{name}' in {where}; check the name (NAMESPACE.TABLE) and --catalog."
            ) from None
        except InputError:
            raise
        except Exception as exc:  # the catalog's client: SQL, HTTP, cloud errors alike
            raise InputError(f"Cannot read the Iceberg table '{name}' of {where}: {first_line(exc)}.") from None
        if snapshot is None and not pinned:
            current = table.current_snapshot()
            snapshot = current.snapshot_id if current is not None else None
        elif snapshot is not None and table.snapshot_by_id(snapshot) is None:
            raise _no_snapshot(name, where, snapshot, table)
        self.table, self.snapshot_id = table, snapshot
        try:
            if snapshot is None:  # no snapshot yet: the schema, no rows
                self.projection = table.schema()
                self.tasks: list[Any] = []
            else:
                scan = table.scan(snapshot_id=snapshot)
                self.projection = scan.projection()
                self.tasks = list(scan.plan_files())  # in manifest order: one snapshot plans one order
        except Exception as exc:  # pyiceberg refuses what it cannot read (equality deletes, a format) here
            raise InputError(f"Cannot read the Iceberg table '{name}' of {where}: {first_line(exc)}.") from None
        schema = _plain_types(schema_to_pyarrow(self.projection, include_field_ids=False))
        self.files_schema = schema
        self.partitions = Partitions({}, {})  # identity partition columns are columns of the schema already
        paths = [task.file.file_path for task in self.tasks]
        self.paths = paths
        self.groups = [(path, task) for path, task in zip(paths, self.tasks)]
        self.starts = []
        rows = 0
        for task in self.tasks:
            self.starts.append(rows)
            rows += task.file.record_count
        self._cursor = None
        # Delete files take rows out that the file's count still holds: the count is known only once read, and
        # a range of rows can only be found by reading from the start.
        counted = not any(task.delete_files for task in self.tasks)
        if not counted:
            self.read_rows = None  # type: ignore[assignment]
        Reader.__init__(
            self,
            f"Iceberg table {name} of {where} at snapshot {snapshot}"
            if snapshot is not None
            else f"Iceberg table {name} of {where} (no snapshot yet: empty)",
            [_shown_path(p) for p in paths],
            schema,
            rows if counted else None,
            {
                "iceberg": name,
                "catalog": catalog_key(catalog),
                "uuid": str(table.metadata.table_uuid),
                "snapshot": snapshot,
            },
            local=all(_shown_path(p) != p or p.startswith("/") for p in paths),
            root=_shown_path(str(table.metadata.location)),
        )

    def pinned(self) -> Callable[[], IcebergReader]:
        """Opens this snapshot again (in a DataLoader worker), whatever the table's current one is by then."""
        return functools.partial(IcebergReader, self.spec, self.catalog, self.snapshot_id, pinned=True)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch | pa.Table]:
        for position in range(len(self.tasks)):
            yield from self._task_batches(position, columns)

    def _open_group(self, position: int, columns: list[str] | None) -> _RowGroupCursor:
        self._cursor = _RowGroupCursor(position, self._task_batches(position, columns), self.starts[position], columns)
        return self._cursor

    def _task_batches(self, position: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import ArrowScan

        task = self.tasks[position]
        wanted = self.files_schema if columns is None else pa.schema([self.files_schema.field(c) for c in columns])
        projection = self.projection if columns is None else self.projection.select(*columns)
        where = _shown_path(task.file.file_path)
        scan = ArrowScan(self.table.metadata, self.table.io, projection, AlwaysTrue())
        try:
            for batch in scan.to_record_batches([task]):
                # pyiceberg gives each file's own string types (string or large_string): one type for the input.
                table = pa.Table.from_batches([batch]).select(wanted.names).cast(wanted)
                for piece in table.to_batches():
                    _check_utf8(piece, where)
                    yield piece
        except InputError:
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputError(unreadable(where, "Iceberg data", exc)) from None


def catalog_key(catalog: str | None) -> str:
    """The catalog as the run identity records it: its URI (without a password) or name; the default's file."""
    if not catalog:
        return catalog_properties(None)[1]["uri"]
    text = shown(catalog)
    return text[len("catalog '") : -1] if text.startswith("catalog '") else text


def _no_snapshot(name: str, where: str, snapshot: int, table: Any) -> VersionGone:
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    why = f"its newest: {', '.join(map(str, ids[-3:]))}; expired snapshots are gone" if ids else "it has none yet"
    return VersionGone(
        f"The Iceberg table '{name}' of {where} has no snapshot {snapshot} ({why}); pass one of its snapshot ids "
        "to --input-version, or leave it out for the current one.",
        why,
    )


def _shown_path(path: str) -> str:
    """A data file as the user would type it: plain on local disk."""
    return path[len("file://") :] if path.startswith("file:///") else path


def _plain_types(schema: pa.Schema) -> pa.Schema:
    """pyiceberg's Arrow schema with large_string/large_binary/large_list as their plain kinds, as Parquet and
    Delta inputs give them."""
    import pyarrow as pa

    def plain(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(kind):
            return pa.string()
        if pa.types.is_large_binary(kind):
            return pa.binary()
        if pa.types.is_large_list(kind) or pa.types.is_list(kind):
            return pa.list_(kind.value_field.with_type(plain(kind.value_type)))
        if pa.types.is_struct(kind):
            return pa.struct([f.with_type(plain(f.type)) for f in kind])
        if pa.types.is_map(kind):
            return pa.map_(
                kind.key_field.with_type(plain(kind.key_type)), kind.item_field.with_type(plain(kind.item_type))
            )
        return kind

    return pa.schema([f.with_type(plain(f.type)) for f in schema], metadata=schema.metadata)

"""An Apache Iceberg table as the output, through pyiceberg: one snapshot per run.

The snapshot's summary carries the commit id and the run's manifest. A catalog
commit is atomic (a SQL catalog swaps the metadata pointer in one UPDATE ...
WHERE the old pointer), so a run's rows appear in one snapshot or not at all;
a commit that finds another writer's snapshot first raises CommitFailedException,
and `publish` tries again on the new state. A new model's columns are added by
name before the rows go in (older rows read them as null).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, OutputError
from ..location import Location
from ..tables import first_line
from ..tables.catalog import open_catalog, shown, table_identifier, warehouse_of
from .table_base import COMMIT_KEY, MANIFEST_KEY, STAGING, Committed, commit_errors, manifest_of, refuse_clashes

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog


@dataclass
class IcebergOutput:
    spec: str  # NAMESPACE.TABLE
    catalog_spec: str | None
    catalog: Catalog = field(repr=False)
    namespace: str
    name: str
    table_location: str  # the table's, or where batchscore will create it
    format: str = "iceberg"

    @classmethod
    def open(cls, spec: str, catalog_spec: str | None) -> IcebergOutput:
        namespace, name = table_identifier(spec)
        catalog = open_catalog(catalog_spec)
        table = _load(catalog, spec, catalog_spec)
        if table is not None:
            location = table.location().rstrip("/")
        else:
            warehouse = warehouse_of(catalog)
            if warehouse is None:
                raise ConfigError(
                    f"Iceberg table '{spec}' does not exist yet and {shown(catalog_spec)} names no warehouse to "
                    "create it in; create the table first, or set the catalog's warehouse."
                )
            location = f"{warehouse}/{namespace.replace('.', '/')}/{name}"
        return cls(spec, catalog_spec, catalog, namespace, name, location)

    @property
    def location(self) -> Location:
        return Location.at(_fsspec_url(self.table_location))

    def staging_root(self) -> str:
        return f"{_fsspec_url(self.table_location)}/{STAGING}"

    def exists(self) -> bool:
        return self._table() is not None

    def _table(self) -> Any:
        return _load(self.catalog, self.spec, self.catalog_spec)

    def check_schema(self, schema: pa.Schema) -> None:
        table = self._table()
        if table is None:
            return
        refuse_clashes(self, table.schema().as_arrow(), schema)

    def committed(self, commit_id: str) -> Committed | None:
        table = self._table()
        if table is None:
            return None
        found = [c for c in self._commits(table) if c.commit_id == commit_id]
        return found[-1] if found else None

    def latest_commit(self) -> Committed | None:
        table = self._table()
        commits = self._commits(table) if table is not None else []
        return commits[-1] if commits else None

    @staticmethod
    def _commits(table: Any) -> list[Committed]:
        """batchscore's snapshots, oldest first (an overwrite's delete snapshot carries the id too: the last is
        the one with the rows)."""
        commits = []
        for snapshot in sorted(table.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0)):
            summary = snapshot.summary
            if summary is not None and summary.get(COMMIT_KEY):
                manifest = manifest_of(summary.get(MANIFEST_KEY))
                commits.append(Committed(snapshot.snapshot_id, manifest, summary[COMMIT_KEY]))
        return commits

    def commit(
        self, rows: pa.RecordBatchReader, mode: str, key: str | None, commit_id: str, manifest: dict[str, Any]
    ) -> None:
        from pyiceberg.exceptions import CommitFailedException

        properties = {COMMIT_KEY: commit_id, MANIFEST_KEY: json.dumps(manifest, sort_keys=True)}
        with commit_errors(self, key, (CommitFailedException,)):  # another writer's snapshot first: tried again
            table = self._table() or self._create(rows.schema)
            if {f.name for f in rows.schema} - set(table.schema().column_names):
                with table.update_schema() as update:  # its own metadata commit, before the rows' snapshot
                    update.union_by_name(rows.schema)
            if mode == "merge":
                assert key is not None, "config checks --table-mode merge has --id-column"
                # pyiceberg's upsert takes a whole Arrow table: the run's rows are held in memory for it.
                table.upsert(rows.read_all(), join_cols=[key], snapshot_properties=properties)
            elif mode == "overwrite":
                table.overwrite(rows, snapshot_properties=properties)
            else:
                table.append(rows, snapshot_properties=properties)

    def _create(self, schema: pa.Schema) -> Any:
        """The table, made with the run's columns. Another run's first commit may make the namespace or the table
        at the same moment (a SQL catalog checks, then inserts): theirs is as good as ours."""
        try:
            self.catalog.create_namespace_if_not_exists(self.namespace)
        except Exception:
            if not self.catalog.namespace_exists(self.namespace):
                raise
        try:
            return self.catalog.create_table_if_not_exists(
                (self.namespace, self.name), schema=schema, location=self.table_location
            )
        except Exception:
            table = self._table()
            if table is None:
                raise
            return table


def _load(catalog: Catalog, spec: str, catalog_spec: str | None) -> Any:
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    try:
        return catalog.load_table(table_identifier(spec))
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    except Exception as exc:
        raise OutputError(f"Cannot read Iceberg table '{spec}' in {shown(catalog_spec)}: {first_line(exc)}") from None


def _fsspec_url(location: str) -> str:
    """A table location as fsspec opens it: file:///x is the local path /x."""
    return location[len("file://") :] if location.startswith("file://") else location

"""A Delta Lake table as the output, through deltalake (delta-rs): one version per run.

The version carries an application transaction (`batchscore-<commit id>`,
version 1) that delta-rs records in the table's log, and the manifest in its
commit info. `transaction_version` answers "is this run in?" from the log's
latest state, without reading data. Concurrent appenders are delta-rs's to
reconcile (a blind append is retried on a newer version); a commit that still
loses is retried by `publish`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import OutputError
from ..location import Location
from ..tables import first_line
from ..tables.extras import require
from .table_base import COMMIT_KEY, MANIFEST_KEY, STAGING, Committed, commit_errors, manifest_of, refuse_clashes

if TYPE_CHECKING:
    import pyarrow as pa


def app_id(commit_id: str) -> str:
    return f"batchscore-{commit_id}"


@dataclass
class DeltaOutput:
    spec: str
    uri: str  # absolute path, or URL
    format: str = "delta"

    @classmethod
    def open(cls, spec: str) -> DeltaOutput:
        require("deltalake")
        uri = spec.rstrip("/") if "://" in spec else os.path.abspath(spec)
        table = cls(spec, uri)
        if not table.exists() and "://" not in uri and os.path.isfile(uri):
            raise OutputError(f"Delta output '{spec}' is a file; pass a folder path (the table's root).")
        return table

    @property
    def location(self) -> Location:
        return Location.at(self.uri)

    def staging_root(self) -> str:
        return f"{self.uri}/{STAGING}"

    def exists(self) -> bool:
        from deltalake import DeltaTable

        try:
            return DeltaTable.is_deltatable(self.uri)
        except Exception as exc:  # an unreachable store
            raise OutputError(f"Cannot read Delta table '{self.spec}': {first_line(exc)}") from None

    def _table(self) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(self.uri) if self.exists() else None

    def check_schema(self, schema: pa.Schema) -> None:
        import pyarrow as pa

        table = self._table()
        if table is None:
            return
        refuse_clashes(self, pa.schema(table.schema().to_arrow()), schema)

    def committed(self, commit_id: str) -> Committed | None:
        table = self._table()
        if table is None or table.transaction_version(app_id(commit_id)) is None:
            return None
        for entry in table.history():  # newest first
            if entry.get(COMMIT_KEY) == commit_id:
                return Committed(int(entry["version"]), manifest_of(entry.get(MANIFEST_KEY)), commit_id)
        return Committed(table.version(), {}, commit_id)  # history cleaned up since: the transaction proves it

    def latest_commit(self) -> Committed | None:
        table = self._table()
        for entry in table.history() if table is not None else []:  # newest first
            if entry.get(COMMIT_KEY):
                return Committed(int(entry["version"]), manifest_of(entry.get(MANIFEST_KEY)), entry[COMMIT_KEY])
        return None

    def commit(
        self, rows: pa.RecordBatchReader, mode: str, key: str | None, commit_id: str, manifest: dict[str, Any]
    ) -> None:
        from deltalake import CommitProperties, Transaction
        from deltalake.exceptions import CommitFailedError

        properties = CommitProperties(
            app_transactions=[Transaction(app_id(commit_id), 1)],
            custom_metadata={COMMIT_KEY: commit_id, MANIFEST_KEY: json.dumps(manifest, sort_keys=True)},
        )
        with commit_errors(self, key, (CommitFailedError,)):  # a race delta-rs could not reconcile: tried again
            self._write(rows, mode, key, properties)

    def _write(self, rows: pa.RecordBatchReader, mode: str, key: str | None, properties: Any) -> None:
        from deltalake import DeltaTable, write_deltalake

        if mode == "merge" and self.exists():
            assert key is not None, "config checks --table-mode merge has --id-column"
            column = "`" + key.replace("`", "``") + "`"
            (
                DeltaTable(self.uri)
                .merge(
                    rows,
                    predicate=f"t.{column} = s.{column}",
                    source_alias="s",
                    target_alias="t",
                    merge_schema=True,
                    commit_properties=properties,
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            return
        # A merge into a table not made yet is its first append. schema_mode "merge": a new model's columns are
        # added (older rows read them as null); no column is ever dropped, even by an overwrite.
        write_deltalake(
            self.uri,
            rows,
            mode="overwrite" if mode == "overwrite" else "append",
            schema_mode="merge",
            commit_properties=properties,
        )

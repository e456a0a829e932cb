"""What every table output is, and what the two formats share: the `Table` protocol, where a commit keeps its
id and manifest, a library's errors in batchscore's words, and which column types clash. `table.py` uses tables;
`delta_table.py` and `iceberg_table.py` are the two kinds."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import OutputError

if TYPE_CHECKING:
    import pyarrow as pa

    from ..location import Location

STAGING = "_batchscore_staging"
COMMIT_KEY = "batchscore.commit"  # the commit id, in Delta's commit info and Iceberg's snapshot summary
MANIFEST_KEY = "batchscore.manifest"  # the run's manifest, as JSON, beside it


class CommitConflict(Exception):
    """Another writer committed first in a way this commit cannot build on; trying again may succeed."""


@dataclass(frozen=True)
class Committed:
    """A run's commit found in the table: its version (Delta) or snapshot id (Iceberg), and the run's manifest."""

    version: int
    manifest: dict[str, Any]
    commit_id: str = ""


class Table(Protocol):
    """One Delta or Iceberg table, as the job and finalize use it."""

    format: str  # "delta" or "iceberg"
    spec: str  # as the user named it

    @property
    def location(self) -> Location:
        """The table's own place: the input may not be in it."""
        ...

    def staging_root(self) -> str:
        """The folder (path or URL) holding every job's staging folder."""
        ...

    def exists(self) -> bool:
        """Has the table been created (by a first commit, or by its owner)?"""
        ...

    def check_schema(self, schema: pa.Schema) -> None:
        """Refuse (exit 5) a table whose columns clash with the run's."""
        ...

    def committed(self, commit_id: str) -> Committed | None:
        """The commit that carries `commit_id`, if the table has it."""
        ...

    def latest_commit(self) -> Committed | None:
        """The newest commit batchscore made to the table."""
        ...

    def commit(
        self, rows: pa.RecordBatchReader, mode: str, key: str | None, commit_id: str, manifest: dict[str, Any]
    ) -> None:
        """Add, replace or merge (on column `key`) `rows` in one commit carrying `commit_id`, inside
        `commit_errors`."""
        ...


@contextlib.contextmanager
def commit_errors(table: Table, key: str | None, conflicts: tuple[type[BaseException], ...]) -> Iterator[None]:
    """A table library's errors during a commit, in batchscore's words: `conflicts` (another writer won a race)
    become CommitConflict, for `publish` to try again; a merge refused for keys the run repeats is the input
    error it is (exit 3); anything else the library raises, exit 5 naming the table."""
    from ..errors import BatchscoreError, InputError
    from ..tables import first_line

    try:
        yield
    except conflicts as exc:
        raise CommitConflict(first_line(exc)) from None
    except BatchscoreError:
        raise
    except Exception as exc:
        said = str(exc)
        if "multiple source rows" in said or "Duplicate rows" in said:  # delta-rs's MERGE, pyiceberg's upsert
            raise InputError(
                f"--table-mode merge into {table.format} table '{table.spec}' needs each --id-column value once, "
                f"but this run's '{key}' repeats some; remove the duplicates from the input, or use --table-mode "
                "append. The staged rows are kept."
            ) from None
        raise OutputError(
            f"Cannot commit to {table.format.capitalize()} table '{table.spec}': {first_line(exc)}"
        ) from None


def manifest_of(text: str | None) -> dict[str, Any]:
    """A commit's stored manifest; {} if it cannot be read (a hand-made commit with our key)."""
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def refuse_clashes(table: Table, table_schema: pa.Schema, schema: pa.Schema) -> None:
    """Exit 5 naming the first column the table holds with another type than the run's (the one wording of
    both formats)."""
    clash = clashes(table_schema, schema)
    if clash:
        raise OutputError(
            f"{table.format.capitalize()} table '{table.spec}' does not fit this run: {clash}; pass --result-prefix "
            "(or other --keep-columns) so the columns differ, or choose another table."
        )


def clashes(table_schema: pa.Schema, schema: pa.Schema) -> str | None:
    """The first column both have with types a table cannot hold together, in words; None if they fit."""
    have = {f.name: f.type for f in table_schema}
    for field in schema:
        if field.name in have and not same_kind(have[field.name], field.type):
            return (
                f"column '{field.name}' is {_plain(have[field.name])} in the table but {_plain(field.type)} in this run"
            )
    return None


def same_kind(a: pa.DataType, b: pa.DataType) -> bool:
    """Types a table stores alike: string and large_string, list and large_list, ... (field names aside)."""
    return _plain(a) == _plain(b)


def _plain(kind: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "string"
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return "binary"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        return f"list<{_plain(kind.value_type)}>"
    if pa.types.is_struct(kind):
        fields = (kind.field(i) for i in range(kind.num_fields))
        return "struct<" + ",".join(f"{f.name}:{_plain(f.type)}" for f in fields) + ">"
    if pa.types.is_timestamp(kind):
        return f"timestamp[{kind.tz is not None}]"  # units differ by format (Iceberg: us); the zone does not
    return str(kind)

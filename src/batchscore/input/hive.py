"""Hive partition folders (`lang=en/part-0.parquet`) as columns, as pyarrow.dataset and Spark read them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..quarantine.rows import BAD

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # Hive's name for a null value


@dataclass
class Partitions:
    fields: dict[str, pa.Field]  # name -> its field
    values: dict[str, dict]  # file -> {name: value}

    def add(self, batch: pa.RecordBatch | pa.Table, path: str, columns: list[str] | None) -> pa.RecordBatch | pa.Table:
        """`batch` of file `path`, with its partition values as columns where `columns` (all if None) name them."""
        import pyarrow as pa

        names = [n for n in self.fields if columns is None or n in columns]
        if not names:
            return batch
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        for name in names:
            value = self.values[path].get(name)
            table = table.append_column(self.fields[name], pa.array([value] * table.num_rows, self.fields[name].type))
        if columns is not None:  # the BAD column of a lenient reader rides along (quarantine.rows)
            table = table.select(columns + [n for n in table.column_names if n == BAD])
        return table

    def in_files(self, columns: list[str] | None) -> list[str] | None:
        """Of `columns` (all if None), those the files themselves hold."""
        return None if columns is None else [c for c in columns if c not in self.fields]


def hive_partitions(files: list[str], root: str) -> Partitions:
    """The `key=value` folders between `root` and each file."""
    import urllib.parse

    import pyarrow as pa

    values: dict[str, dict] = {}
    for path in files:
        relative = path[len(root) :].strip("/").split("/")[:-1] if path.startswith(root) else []
        found: dict = {}
        for part in relative:
            key, sep, value = part.partition("=")
            if sep and key:
                value = urllib.parse.unquote(value)
                found[key] = None if value == DEFAULT_PARTITION else value
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
    return Partitions(fields, values)

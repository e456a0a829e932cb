"""Inputs of files (Parquet, CSV, TSV, JSON Lines): one schema over all files, read file by file in sorted order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from ..errors import InputError
from .base import Reader
from .hive import hive_partitions
from .resolve import file_stats
from .schema import unify

if TYPE_CHECKING:
    import pyarrow as pa

    from .resolve import FileSet


class FileReader(Reader):
    """The shared work of file formats: partitions, one schema, the fingerprint; a format reads one file."""

    fmt: str  # "parquet", "csv", "tsv" or "json"

    def __init__(
        self,
        found: FileSet,
        spec: str,
        *,
        encoding: str | None = None,
        infer_types: bool = False,
        lenient: bool = False,
    ) -> None:
        self.lenient = lenient
        self.fs, self.paths = found.fs, found.paths
        self.partitions = hive_partitions(found.paths, found.root)
        schemas = self.file_schemas()
        # Only CSV/TSV with inferred types may change a value to fit one type (as pandas would).
        self.files_schema = unify(self.fs, schemas, lossless=not (infer_types and self.fmt in ("csv", "tsv")))
        schema = self.files_schema
        for name, partition in self.partitions.fields.items():
            if name in schema.names:
                raise InputError(
                    f"Column '{name}' is both in the files and in their partition folders ({name}=...); "
                    "rename one of them."
                )
            schema = schema.append(partition)
        super().__init__(
            spec if len(self.paths) == 1 else f"{spec} ({len(self.paths)} {self.fmt} files)",
            [found.display(p) for p in self.paths],
            schema,
            self.known_rows(),
            {
                "files": file_stats(self.fs, self.paths),
                "encoding": encoding,
                **({"csv_infer_types": True} if infer_types else {}),
            },
            local=found.local,
            root=found.display(found.root),
            file_columns={found.display(p): [*schemas[p].names, *self.partitions.fields] for p in self.paths},
        )

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch | pa.Table]:
        # File by file, batch by batch: keeps input order without a sort.
        wanted = self.partitions.in_files(columns)
        for path in self.paths:
            for batch in self.read_file(path, wanted):
                yield self.partitions.add(batch, path, columns)

    # --- what a format implements -----------------------------------------------------------------------------

    def file_schemas(self) -> dict[str, pa.Schema]:
        """Each file's own columns and types, as they will be read."""
        raise NotImplementedError

    def known_rows(self) -> int | None:
        """The row count, where the files tell it without a read."""
        return None

    def read_file(self, path: str, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        """The batches of one file, holding `columns` of it (all if None), typed as `files_schema`."""
        raise NotImplementedError

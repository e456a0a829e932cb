"""open_source: an input spec, checked against the output, to the reader of its format."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..errors import ConfigError, OutputError
from ..location import Location
from ..ownership import Place, input_place, input_places
from .encoding import check_encoding, check_format_encoding
from .resolve import DELTA_TABLE, FILES, ICEBERG_TABLE, SAVED_DATASET, kind_of, resolve_files

if TYPE_CHECKING:
    from .base import Reader


def open_source(
    spec: str,
    *,
    text_column: str,
    split: str = "train",
    dataset_config: str | None = None,
    encoding: str | None = None,
    csv_infer_types: bool = False,
    output: Location | None = None,
    catalog: str | None = None,
    input_version: int | None = None,
    lenient: bool = False,
) -> Reader:
    """Open the input `spec` names. Raises InputError with the fix named.

    `output`, this job's output: an input inside it is refused (OutputError) before anything is read; its files
    inside an input folder are left out. `catalog`: the Iceberg catalog of an `iceberg:NAMESPACE.TABLE` input;
    `input_version`: a table's version (Delta) or snapshot id (Iceberg), None for the latest. Module-level and
    keyword-only, so that functools.partial of it pickles for DataLoader workers (a table's reader pins its
    version with its own `pinned()`). `lenient`: --on-bad-row quarantine (see Reader.lenient).
    """
    if output is not None:
        # Before reading: an input inside the output would be left out whole and look like no input at all.
        _refuse_overlap(output, input_places(spec))
    check_encoding(encoding)
    kind = kind_of(spec)
    if kind in (DELTA_TABLE, ICEBERG_TABLE):
        return _open_table(spec, kind, output, encoding, catalog, input_version)
    if input_version is not None:
        raise ConfigError(
            f"--input-version applies to a Delta or Iceberg table INPUT; '{spec}' is a {kind}: leave it out."
        )
    if kind == SAVED_DATASET:
        from .saved import SavedDatasetReader

        return SavedDatasetReader(spec, split)
    if kind != FILES:
        from .hub import HubDatasetReader

        return HubDatasetReader(spec, split, dataset_config)
    found = resolve_files(spec, output)
    if output is not None:
        _refuse_overlap(output, map(input_place, found.locations()))
    fmt = found.format(spec)
    check_format_encoding(fmt, encoding)
    if fmt == "parquet":
        from .parquet import ParquetReader

        return ParquetReader(found, spec, encoding=encoding, infer_types=csv_infer_types, lenient=lenient)
    from .text import TextReader

    return TextReader(found, spec, fmt, text_column, encoding=encoding, infer_types=csv_infer_types, lenient=lenient)


def _open_table(
    spec: str,
    kind: str,
    output: Location | None,
    encoding: str | None,
    catalog: str | None,
    version: int | None,
) -> Reader:
    check_format_encoding(kind, encoding)
    if kind == ICEBERG_TABLE:
        from .iceberg import IcebergReader

        return IcebergReader(spec, catalog, version)
    table = Location.of(spec)
    if output is not None and table is not None and table.relation(output) == "holds":
        raise OutputError(
            f"The output '{output.url}' would be inside the Delta table '{spec}', whose VACUUM deletes every "
            "file its log does not list; choose another --output."
        )
    from .delta import open_delta

    return open_delta(spec, version)


def _refuse_overlap(output: Location, inputs: Iterable[Place]) -> None:
    """The output may never be the input, nor hold it (an output inside the input folder is left out instead):
    ownership's rule, exit 5."""
    from ..ownership import check, output_place

    check([output_place(output, "write the output outside the input")], list(inputs))

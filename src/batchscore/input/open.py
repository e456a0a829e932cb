"""open_source: an input spec, checked against the output, to the reader of its format."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..location import Location
from ..ownership import Place, input_place, input_places
from .encoding import check_encoding, check_format_encoding
from .resolve import FILES, SAVED_DATASET, kind_of, resolve_files

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
) -> Reader:
    """Open the input `spec` names. Raises InputError with the fix named.

    `output`, this job's output: an input inside it is refused (OutputError) before anything is read; its files
    inside an input folder are left out. Module-level and keyword-only, so that functools.partial of it pickles
    for DataLoader workers.
    """
    if output is not None:
        # Before reading: an input inside the output would be left out whole and look like no input at all.
        _refuse_overlap(output, input_places(spec))
    check_encoding(encoding)
    kind = kind_of(spec)
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

        return ParquetReader(found, spec, encoding=encoding, infer_types=csv_infer_types)
    from .text import TextReader

    return TextReader(found, spec, fmt, text_column, encoding=encoding, infer_types=csv_infer_types)


def _refuse_overlap(output: Location, inputs: Iterable[Place]) -> None:
    """The output may never be the input, nor hold it (an output inside the input folder is left out instead):
    ownership's rule, exit 5."""
    from ..ownership import check, output_place

    check([output_place(output, "write the output outside the input")], list(inputs))

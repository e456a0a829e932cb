"""The columns of an input of many files: one schema for all, and every needed column in every file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError, first_line
from ..location import display

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem


def require_columns(file_columns: dict[str, list[str]], columns: list[str], text_column: str) -> None:
    """Every file must have every column the output keeps: a file without one is refused, not filled with nulls."""
    for path, names in file_columns.items():
        missing = [c for c in columns if c not in names]
        if missing:
            fix = (
                "Pass --text-column, or fix that file"
                if missing[0] == text_column
                else "Fix that file, or leave the column out with --keep-columns"
            )
            raise InputError(
                f"Input file '{path}' has no column '{missing[0]}' (its columns: {', '.join(names)}); {fix}."
            )


def unify(fs: AbstractFileSystem, schemas: dict[str, pa.Schema], lossless: bool) -> pa.Schema:
    """One schema for all files; a column whose types differ is widened only where no value can change."""
    import pyarrow as pa

    firsts = list(schemas.values())
    try:
        unified = pa.unify_schemas(firsts, promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        raise InputError(
            f"The input files' columns cannot be combined ({first_line(exc)}); give each column one type in every file."
        ) from None
    if lossless:
        for path, schema in schemas.items():
            for field in schema:
                target = unified.field(field.name).type
                if not widens(field.type, target):
                    others = [
                        p
                        for p, s in schemas.items()
                        if field.name in s.names and s.field(field.name).type != field.type
                    ]
                    other = others[0] if others else path
                    raise InputError(
                        f"Column '{field.name}' is {field.type} in '{display(fs, path)}' but "
                        f"{schemas[other].field(field.name).type} in '{display(fs, other)}'; no type holds both "
                        "without changing values: give the column one type in every file."
                    )
    return unified.remove_metadata()


def widens(source: pa.DataType, target: pa.DataType) -> bool:
    """True if every value of `source` is exactly representable in `target`."""
    import pyarrow.types as t

    if source == target or t.is_null(source):
        return True
    if t.is_integer(source) and t.is_integer(target):
        if t.is_signed_integer(source) == t.is_signed_integer(target):
            return target.bit_width >= source.bit_width
        return t.is_signed_integer(target) and target.bit_width > source.bit_width
    if t.is_integer(source) and t.is_floating(target):
        return source.bit_width < (target.bit_width == 64 and 53 or 24)
    if t.is_floating(source) and t.is_floating(target):
        return target.bit_width >= source.bit_width
    if (t.is_string(source) and t.is_large_string(target)) or (t.is_binary(source) and t.is_large_binary(target)):
        return True
    if t.is_dictionary(source):
        return widens(source.value_type, target)
    return t.is_list(source) and t.is_list(target) and widens(source.value_type, target.value_type)

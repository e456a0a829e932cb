"""--by COLUMN[:year|month|day]: which columns the report groups rows by, checked, and each row's group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

NULL = "(null)"
TRUNCATIONS = {"year": (4, "%Y"), "month": (7, "%Y-%m"), "day": (10, "%Y-%m-%d")}
# What text must start with for a :unit: an ISO date (or its year, or year and month), then nothing, a '-' or a
# time. Anything else would be cut to its first 4, 7 or 10 characters and grouped as if it were a date.
ISO_TEXT = {
    "year": r"^\d{4}(-|$)",
    "month": r"^\d{4}-(0[1-9]|1[0-2])(-|$)",
    "day": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([T ]|$)",
}
ISO_FORM = {"year": "YYYY", "month": "YYYY-MM", "day": "YYYY-MM-DD"}
UNITS = ", ".join(f":{unit}" for unit in TRUNCATIONS)


@dataclass(frozen=True)
class By:
    """A --by COLUMN[:year|month|day] grouping."""

    column: str
    unit: str | None = None

    @classmethod
    def parse(cls, text: str) -> By:
        column, _, unit = text.rpartition(":") if text.rpartition(":")[2] in TRUNCATIONS else (text, "", "")
        if not column:
            raise ConfigError(f"--by {text!r} names no column; pass --by COLUMN or --by COLUMN:month.")
        return cls(column, unit or None)

    @property
    def title(self) -> str:
        return self.column + (f" (by {self.unit})" if self.unit else "")

    @property
    def spec(self) -> str:
        return self.column + (f":{self.unit}" if self.unit else "")

    def check(self, schema: pa.Schema) -> None:
        """Refuse, before any row is read, a column the output lacks or one this grouping cannot use (exit 2)."""
        import pyarrow as pa

        if self.column not in schema.names:
            column, _, unit = self.column.rpartition(":")
            if column in schema.names:
                raise ConfigError(f"--by {self.column}: '{unit}' is not a unit; units are {UNITS}.")
            shown = ", ".join(schema.names)
            raise ConfigError(f"--by column '{self.column}' is not in the output; its columns are: {shown}.")
        kind = _plain(schema.field(self.column).type)
        if self.unit is not None and not (pa.types.is_timestamp(kind) or pa.types.is_date(kind) or _is_text(kind)):
            raise ConfigError(
                f"--by {self.spec}: column '{self.column}' holds {kind}, not dates; a :unit applies to a date or "
                f"timestamp column (or ISO date text); pass --by {self.column} to group by its values."
            )
        binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
        if pa.types.is_nested(kind) or binary or pa.types.is_binary_view(kind):
            raise ConfigError(
                f"--by {self.spec}: column '{self.column}' holds {kind}; pass a column of text, numbers or dates."
            )

    def keys(self, values: pa.Array) -> pa.Array:
        """The group of each row, as text: the value, or its date truncated to the unit (`check` has passed)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        kind = values.type
        if self.unit is not None:
            width, fmt = TRUNCATIONS[self.unit]
            if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
                values = pc.strftime(values, format=fmt)
            else:
                self._check_iso(values)
                values = pc.utf8_slice_codeunits(values, 0, width)  # ISO dates and times: 2024-05-17...
        elif not _is_text(kind):
            values = pc.cast(values, pa.string())
        return pc.fill_null(values, NULL)

    def _check_iso(self, values: pa.Array) -> None:
        import pyarrow.compute as pc

        assert self.unit is not None
        dates = pc.match_substring_regex(values, ISO_TEXT[self.unit])
        if pc.all(dates).as_py() is False:  # None: only nulls
            first = pc.filter(values, pc.invert(dates))[0].as_py()
            shown = first if len(first) <= 40 else first[:39] + "…"
            raise ConfigError(
                f"--by {self.spec}: column '{self.column}' holds text that is not an ISO date ({shown!r}); a :unit "
                f"applies to a date or timestamp column, or text starting {ISO_FORM[self.unit]}; pass "
                f"--by {self.column} to group by its values."
            )


def _plain(kind: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)

"""--encoding: the codec names batchscore accepts, and `utf-8-replace`, UTF-8 that never fails."""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

from ..errors import ConfigError, InputError
from .messages import printable

if TYPE_CHECKING:
    import pyarrow as pa

REPLACE_CODEC = "utf-8-replace"  # --encoding value: UTF-8 with bad bytes replaced by U+FFFD


def _replace_codec(name: str) -> codecs.CodecInfo | None:
    # pyarrow transcodes CSV through Python's codec registry; this name gives
    # UTF-8 that never fails, for users who prefer a replaced byte to an error.
    if name.replace("_", "-").lower() != REPLACE_CODEC:
        return None
    utf8 = codecs.lookup("utf-8")

    class Decoder(codecs.IncrementalDecoder):
        def __init__(self, errors: str = "replace") -> None:
            super().__init__("replace")
            self._inner = utf8.incrementaldecoder("replace")

        def decode(self, data: bytes, final: bool = False) -> str:  # type: ignore[override]
            return self._inner.decode(data, final)

        def reset(self) -> None:
            self._inner.reset()

    return codecs.CodecInfo(
        utf8.encode,
        lambda b, errors="replace": utf8.decode(b, "replace"),
        incrementaldecoder=Decoder,
        name=REPLACE_CODEC,
    )


codecs.register(_replace_codec)


def check_encoding(encoding: str | None) -> None:
    """`encoding` must name a text codec (bytes -> str): ConfigError otherwise.

    Python's registry also holds bytes-to-bytes and str-to-str codecs (zlib,
    base64, rot13) that fail deep inside the CSV reader.
    """
    if not encoding:
        return
    fix = f"use a text encoding such as latin-1, cp1252, utf-16, or {REPLACE_CODEC}"
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError, TypeError):  # ValueError: a NUL in the name
        raise ConfigError(f"Unknown --encoding {printable(repr(encoding), 80)}; {fix}.") from None
    try:
        text = getattr(info, "_is_text_encoding", True) and codecs.getincrementaldecoder(encoding)().decode(
            b"", final=True
        )
    except (UnicodeError, TypeError, ValueError, LookupError):
        text = None
    if not isinstance(text, str):
        raise ConfigError(f"--encoding '{encoding}' is not a text encoding (bytes to text); {fix}.")


def check_format_encoding(fmt: str, encoding: str | None) -> None:
    """--encoding is for CSV/TSV: pyarrow reads JSON Lines and Parquet text as UTF-8 only."""
    check_encoding(encoding)
    if fmt not in ("csv", "tsv") and encoding and encoding.replace("-", "").lower() not in ("utf8",):
        raise InputError(f"--encoding applies to CSV/TSV files only; {fmt} input must be UTF-8.")


def is_utf8(encoding: str | None) -> bool:
    """Is `encoding` (None: the default) plain UTF-8, the bytes pyarrow reads text files as without transcoding?"""
    return not encoding or codecs.lookup(encoding).name == "utf-8"


def invalid_utf8(batch: pa.RecordBatch | pa.Table) -> dict[int, list[tuple[str, bytes]]]:
    """Row -> (column, its bytes) of each string value there that is not valid UTF-8: pyarrow's Parquet and JSON
    readers copy bytes into strings unchecked."""
    import pyarrow as pa

    found: dict[int, list[tuple[str, bytes]]] = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        as_bytes = column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
        for row, value in enumerate(as_bytes.to_pylist()):
            if value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    found.setdefault(row, []).append((name, value))
    return found

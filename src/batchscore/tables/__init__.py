"""Lakehouse tables (Delta Lake, Apache Iceberg): what input and output share about them.

`extras` loads the optional library a table needs (exit 2 naming the extra
when it is missing); `catalog` turns `--catalog` into a pyiceberg catalog and
says where a table's files live. The table as output is the output layer's
(`output/table.py`); the table as input is a reader (`input/`).
"""

TABLE_FORMATS = ("delta", "iceberg")


def first_line(exc: BaseException) -> str:
    """A library's error, its first line, for a one-line message."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

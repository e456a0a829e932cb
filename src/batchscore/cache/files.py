"""A cache file: the entries one writer added at one time, as one immutable Parquet file.

Its entries are sorted by key (h1, h2) and cut into row groups of ROW_GROUP entries, so the footer's h1
statistics say which row group can hold a key: a lookup reads the keys of those row groups only, and the
scores of the rows it found. The footer's FOOTER_KEY record (format, identity, entries) proves the file
batchscore's, written for the identity its folder names.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import OutputError
from .store_errors import cache_message, store_failure

if TYPE_CHECKING:
    import pyarrow as pa

    from ..output.store import Store

FORMAT = 2  # 2: each entry holds its text's truncated tokens (format 1 entries had none)
FOOTER_KEY = b"batchscore.cache"
ROW_GROUP = 8192  # entries per row group: a key lookup reads at most this many keys of a file
FILE_NAME = re.compile(r"^(\d{20})-([0-9a-f]{12})\.parquet$")


def new_file_name() -> str:
    """Names sort by creation time; the token keeps two writers in the same nanosecond apart."""
    return f"{time.time_ns():020d}-{secrets.token_hex(6)}.parquet"


def entries_schema(num_labels: int) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("h1", pa.uint64(), nullable=False),
            pa.field("h2", pa.uint64(), nullable=False),
            # Every label's score after the head's function (softmax, sigmoid or none), in label order: top_k
            # and the threshold pick from it, so they are not part of the identity.
            pa.field("scores", pa.list_(pa.float32(), num_labels), nullable=False),
            pa.field("windows", pa.int32(), nullable=False),  # --long-text window: the row's window count
            # Text tokens never scored (past --max-length or --max-windows, or past a very long text's prefix): a
            # row taken from the cache counts as truncated as it did when scored.
            pa.field("truncated", pa.int64(), nullable=False),
        ]
    )


def entries_bytes(
    keys: np.ndarray, scores: np.ndarray, windows: np.ndarray, identity: str, truncated: np.ndarray | None = None
) -> bytes:
    """One cache file's bytes: the entries sorted by key, in row groups of ROW_GROUP."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.lexsort((keys[:, 1], keys[:, 0]))
    num_labels = scores.shape[1]
    flat = pa.array(np.ascontiguousarray(scores[order], dtype=np.float32).ravel(), pa.float32())
    table = pa.table(
        [
            pa.array(keys[order, 0], pa.uint64()),
            pa.array(keys[order, 1], pa.uint64()),
            pa.FixedSizeListArray.from_arrays(flat, num_labels),
            pa.array(np.asarray(windows, dtype=np.int32)[order], pa.int32()),
            pa.array(truncated_tokens(truncated, len(keys))[order], pa.int64()),
        ],
        schema=entries_schema(num_labels).with_metadata(
            {FOOTER_KEY: json.dumps({"format": FORMAT, "identity": identity, "entries": len(keys)}).encode()}
        ),
    )
    sink = pa.BufferOutputStream()
    # Keys are random bytes: compressing them gains nothing and costs time on every lookup.
    pq.write_table(
        table,
        sink,
        row_group_size=ROW_GROUP,
        compression={"h1": "NONE", "h2": "NONE", "scores": "ZSTD", "windows": "ZSTD", "truncated": "ZSTD"},
        write_statistics=["h1"],
    )
    return sink.getvalue().to_pybytes()


def truncated_tokens(truncated: np.ndarray | None, entries: int) -> np.ndarray:
    """Each entry's truncated tokens (None: entries of texts that were scored whole)."""
    return np.zeros(entries, np.int64) if truncated is None else np.asarray(truncated, dtype=np.int64)


class DamagedFile(Exception):
    """A cache file that is not one of ours or cannot be read: skipped, its entries scored again.

    `ours`: its footer proved it batchscore's, for the identity its folder names (our key, our format, that
    identity), so `batchscore cache compact` may remove it; a file without that proof is never removed."""

    def __init__(self, why: str, ours: bool = False):
        super().__init__(why)
        self.ours = ours


@dataclass
class CacheFile:
    """One cache file's footer: where each row group starts and the h1 range it holds."""

    path: str
    rows: int
    starts: np.ndarray  # first row of each row group
    low: np.ndarray  # each row group's smallest h1
    high: np.ndarray  # and largest

    @classmethod
    def read(cls, store: Store, path: str, identity: str | None = None) -> CacheFile:
        """The footer of a cache file that proves itself batchscore's and, given `identity` (the folder's key),
        that identity's: a file copied from another identity's folder holds another setting's scores."""
        import pyarrow.parquet as pq

        with _reading(store, path):
            with store.fs.open(path, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
        footer = meta.metadata or {}
        try:
            record = json.loads(footer[FOOTER_KEY])
        except (KeyError, ValueError):
            record = None
        names = meta.schema.to_arrow_schema().names if meta.num_columns else []
        if not isinstance(record, dict) or names[:2] != ["h1", "h2"]:
            raise DamagedFile("not a batchscore cache file")
        if identity is not None and record.get("identity") != identity:
            raise DamagedFile(f"its footer names identity {record.get('identity')!r}, not this folder's {identity}")
        version = record.get("format")
        if version != FORMAT:
            # An older format is ours to compact away; a newer one is a newer batchscore's, beside this one.
            older = identity is not None and isinstance(version, int) and version < FORMAT
            raise DamagedFile(f"cache file format {version!r}; this batchscore reads format {FORMAT}", ours=older)
        starts, low, high = [], [], []
        row = 0
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            stats = group.column(0).statistics
            if stats is None or not stats.has_min_max:
                raise DamagedFile(f"row group {index} has no key statistics", ours=identity is not None)
            starts.append(row)
            low.append(stats.min)
            high.append(stats.max)
            row += group.num_rows
        return cls(path, row, np.asarray(starts, np.int64), np.asarray(low, np.uint64), np.asarray(high, np.uint64))


def read_groups(store: Store, path: str, groups: list[int], columns: list[str]) -> pa.Table:
    """Row groups of a cache file; FileNotFoundError if it is gone (compacted), DamagedFile if unreadable."""
    import pyarrow.parquet as pq

    with _reading(store, path):
        with store.fs.open(path, "rb") as fh:
            return pq.ParquetFile(fh).read_row_groups(groups, columns=columns)


@contextlib.contextmanager
def _reading(store: Store, path: str) -> Iterator[None]:
    """A cache file's read: gone is FileNotFoundError, a failing store one line (exit 5), anything else about the
    bytes a DamagedFile."""
    import pyarrow as pa

    from ..output.store import describe

    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as exc:
        if store_failure(exc):
            raise OutputError(cache_message(describe(store.layout, path, exc, "read"))) from None
        if isinstance(exc, (pa.ArrowException, ValueError, EOFError, OSError)):
            raise DamagedFile(f"{type(exc).__name__}: {exc}") from None
        raise

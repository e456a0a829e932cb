"""Cut a stream of record batches into chunks of consecutive rows.

Chunk k holds rows [k*N, (k+1)*N). It is the unit of sorting, writing,
resuming and sharding: a chunk's part file exists whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Iterable


@dataclass
class Chunk:
    index: int
    start: int  # global index of the chunk's first row
    table: "object"  # pa.Table of the columns the job reads

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def iter_chunks(batches: Iterable, chunk_rows: int, limit: int | None = None,
                owns=lambda index: True) -> Generator[Chunk, None, int]:
    """Regroup `batches` into chunks; only chunks with `owns(index)` are built.

    Unowned chunks are still read (row positions depend on them) but never
    concatenated, so skipping costs only the parse. Returns (as the
    generator's return value) how many chunks the input has.
    """
    pending: list = []
    pending_rows = 0
    index = 0
    seen = 0

    for batch in batches:
        if limit is not None and seen >= limit:
            break
        if limit is not None and seen + batch.num_rows > limit:
            batch = batch.slice(0, limit - seen)
        seen += batch.num_rows
        offset = 0
        while offset < batch.num_rows:
            take = min(chunk_rows - pending_rows, batch.num_rows - offset)
            if owns(index):
                pending.append(batch.slice(offset, take))
            pending_rows += take
            offset += take
            if pending_rows == chunk_rows:
                if owns(index):
                    yield Chunk(index, index * chunk_rows, _concat(pending))
                pending, pending_rows, index = [], 0, index + 1
    if pending_rows:
        if owns(index):
            yield Chunk(index, index * chunk_rows, _concat(pending))
        index += 1
    return index


def _concat(parts: list):
    import pyarrow as pa

    tables = [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in parts]
    return pa.concat_tables(tables).combine_chunks()

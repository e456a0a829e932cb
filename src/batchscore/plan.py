"""The plan: which chunks exist, which this process scores, and which input rows it reads for them.

Chunk k holds rows [k*N, (k+1)*N) of the input. It is the unit of sorting,
writing, resuming and sharding: a chunk's part file exists whole or not at
all. The rule that says which shard scores a chunk is `owner`, here and
nowhere else; the writer, finalize, the DataLoader workers and the job ask
this module.

Where the input can be read from any row (Parquet, through its footers' row
counts; saved datasets, memory-mapped Arrow), a process reads only the rows of
its own chunks: a shard of K, a DataLoader worker or a resume parses its share
plus at most one row group per chunk boundary. Other inputs (CSV, TSV, JSONL,
Hub streams) are read from the start by every process, and the chunks it does
not own are parsed but never built.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from typing import Callable, Generator, Iterable


def owner(chunk: int, num_shards: int) -> int:
    """The shard that scores `chunk`. Round-robin: every shard gets an even share of any prefix of the input."""
    return chunk % num_shards


@dataclass
class Chunk:
    index: int
    start: int  # global index of the chunk's first row
    table: "object"  # pa.Table of the columns the job reads
    rows_read: int = 0  # input rows parsed to build this chunk since the previous one (skipped rows included)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


@dataclass
class InputEnd:
    """Yielded after a reader's last chunk: the input has `num_chunks` chunks; `rows_read` parsed after the last."""

    num_chunks: int
    rows_read: int = 0


@dataclass
class Plan:
    """One process's part of a job: its chunks, its role, and what it still has to do.

    Under `accelerate launch` / `torchrun` each rank is a shard; with
    --num-shards K --shard-index I, rank r of W is shard I + K*r of K*W, so a
    distributed run can itself be one independent worker.
    """

    chunk_rows: int
    shard: int = 0
    num_shards: int = 1
    num_rows: int | None = None  # input rows (after --limit) when known before reading; else None
    limit: int | None = None
    committed: frozenset = frozenset()  # this shard's chunks already written by an earlier run
    main: bool = True  # rank 0: shows progress; finalizes a distributed run
    finalizes: bool = True  # False for independent workers: `batchscore finalize` comes later
    overwrite: str | None = None  # None | "all" | "shard", see OutputWriter
    clear_first: bool = False  # distributed --overwrite: rank 0 clears before the others look
    wait: Callable[[], None] = field(default=lambda: None, repr=False)  # a barrier across ranks

    # --- which chunks ------------------------------------------------------------------------------------------

    def owns(self, chunk: int) -> bool:
        return owner(chunk, self.num_shards) == self.shard

    def todo(self, chunk: int) -> bool:
        return self.owns(chunk) and chunk not in self.committed

    @property
    def num_chunks(self) -> int | None:
        return None if self.num_rows is None else -(-self.num_rows // self.chunk_rows)

    def span(self, chunk: int) -> tuple[int, int]:
        """Rows [start, stop) of `chunk`."""
        start = chunk * self.chunk_rows
        stop = start + self.chunk_rows
        return start, stop if self.num_rows is None else min(stop, self.num_rows)

    def todo_chunks(self) -> list[int] | None:
        if self.num_chunks is None:
            return None
        return [c for c in range(self.shard, self.num_chunks, self.num_shards) if c not in self.committed]

    def rows_to_do(self) -> int | None:
        chunks = self.todo_chunks()
        return None if chunks is None else sum(self.span(c)[1] - self.span(c)[0] for c in chunks)

    def worker_todo(self, worker: int, workers: int) -> Callable[[int], bool]:
        """DataLoader worker w of W builds the j-th chunk still to do when j % W == w.

        The DataLoader collects from its workers round-robin, so the chunks come back in order.
        """
        skipped = sorted(c for c in self.committed if self.owns(c))

        def todo(chunk: int) -> bool:
            if not self.todo(chunk):
                return False
            position = chunk // self.num_shards - bisect.bisect_left(skipped, chunk)
            return position % workers == worker

        return todo

    def with_committed(self, committed: Iterable[int]) -> "Plan":
        return replace(self, committed=frozenset(c for c in committed if self.owns(c)))

    @property
    def label(self) -> str:
        return f" (shard {self.shard} of {self.num_shards})" if self.num_shards > 1 else ""

    # --- which rows to read ------------------------------------------------------------------------------------

    def read(self, source, columns: list[str], worker: int = 0, workers: int = 1) -> Generator:
        """Yield this reader's chunks in order, then an InputEnd.

        Reads only their rows where the source can start at any row;
        otherwise reads the input from the start and builds only these chunks.
        """
        todo = self.worker_todo(worker, workers)
        if source.read_rows is not None and self.num_chunks is not None:
            for chunk in filter(todo, range(self.num_chunks)):
                start, stop = self.span(chunk)
                before = source.rows_decoded
                table = _concat(list(source.read_rows(columns, start, stop)), columns, source.schema)
                yield Chunk(chunk, start, table, rows_read=source.rows_decoded - before)
            yield InputEnd(self.num_chunks)
            return
        num_chunks, tail = yield from iter_chunks(source.batches(columns), self.chunk_rows, self.limit, todo)
        yield InputEnd(num_chunks, tail)

    def check(self, source, columns: list[str]) -> int:
        """Parse, before any output, the rows this process will score; return how many rows the input has.

        Catches ragged rows, bad UTF-8 and broken JSON lines before the model
        loads and before --overwrite clears anything. Where the source can
        start at any row, only this process's chunks still to do are read.
        """
        if source.read_rows is None or self.num_chunks is None:
            return source.scan(columns, self.limit)
        for chunk in self.todo_chunks():
            for _ in source.read_rows(columns, *self.span(chunk)):
                pass
        return self.num_rows


def iter_chunks(
    batches: Iterable, chunk_rows: int, limit: int | None = None, owns=lambda index: True
) -> Generator[Chunk, None, tuple[int, int]]:
    """Regroup `batches` into chunks; only chunks with `owns(index)` are built.

    Unowned chunks are still read (row positions depend on them) but never
    concatenated, so skipping costs only the parse. Returns (as the
    generator's return value) how many chunks the input has, and how many rows
    were parsed after the last chunk built.
    """
    pending: list = []
    pending_rows = 0
    index = 0
    seen = 0
    since = 0  # rows parsed since the last chunk built

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
            since += take
            if pending_rows == chunk_rows:
                if owns(index):
                    yield Chunk(index, index * chunk_rows, _concat(pending), rows_read=since)
                    since = 0
                pending, pending_rows, index = [], 0, index + 1
    if pending_rows:
        if owns(index):
            yield Chunk(index, index * chunk_rows, _concat(pending), rows_read=since)
            since = 0
        index += 1
    return index, since


def _concat(parts: list, columns: list[str] | None = None, schema=None):
    import pyarrow as pa

    tables = [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in parts]
    if not tables:  # a chunk past the end of the input (cannot happen with a true row count): no rows
        return pa.schema([schema.field(c) for c in columns]).empty_table()
    return pa.concat_tables(tables).combine_chunks()


def for_process(cfg, num_rows: int | None, rank: int = 0, world: int = 1, wait=None) -> Plan:
    """The plan of rank `rank` of `world` processes (1 of 1 without a launcher), from the job's options."""
    independent = cfg.num_shards is not None
    shard, num_shards = (
        (cfg.shard_index + cfg.num_shards * rank, cfg.num_shards * world) if independent else (rank, world)
    )
    overwrite = None
    if cfg.overwrite:
        overwrite = "shard" if independent else ("all" if rank == 0 else None)
    if num_rows is not None and cfg.limit is not None:
        num_rows = min(num_rows, cfg.limit)
    return Plan(
        cfg.chunk_rows,
        shard,
        num_shards,
        num_rows=num_rows,
        limit=cfg.limit,
        main=rank == 0,
        finalizes=not independent,
        overwrite=overwrite,
        clear_first=bool(cfg.overwrite) and not independent and world > 1,
        wait=wait or (lambda: None),
    )


def launcher_ranks() -> tuple[int, int]:
    """(rank, world size) as torchrun / accelerate launch / Slurm's srun-with-torchrun set them; (0, 1) alone.

    Known before accelerate starts, so the input check can cover this rank's share before the model loads.
    """
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))

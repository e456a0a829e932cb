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
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Generator, Iterable, Protocol

from .quarantine.rows import BAD

if TYPE_CHECKING:
    import pyarrow as pa

    from .config import JobConfig


class Source(Protocol):
    """What the plan reads an input through: the part of an input reader (input/base.py's Reader) it uses,
    named here so that the plan, a layer below input/, imports nothing from it."""

    # (columns, start, stop) -> batches of rows [start, stop) where the input can start at any row; else None.
    @property
    def read_rows(self) -> Callable[[list[str], int, int], Iterable[pa.RecordBatch | pa.Table]] | None: ...

    @property
    def rows_decoded(self) -> int: ...  # rows read_rows has parsed in this process, skipped ones included

    @property
    def schema(self) -> pa.Schema | None: ...

    def batches(self, columns: list[str]) -> Iterable[pa.RecordBatch | pa.Table]: ...

    def scan(self, columns: list[str], limit: int | None) -> int: ...


def owner(chunk: int, num_shards: int) -> int:
    """The shard that scores `chunk`. Round-robin: every shard gets an even share of any prefix of the input."""
    return chunk % num_shards


# A shard's records are named shard-00001-of-00003 (zero-padded to 5, wider past 99999); only the canonical
# spelling of a pair of numbers names a shard.
_SHARD = re.compile(r"^shard-([0-9]{5,})-of-([0-9]{5,})$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (a whole-output writer is shard 0 of 1): which chunks it owns, and the names
    of its records. Names are made and read back here only."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}")

    @property
    def label(self) -> str:
        """For progress bars and logs: ' (shard 1 of 3)', or nothing for a whole run."""
        return "" if self.whole else f" (shard {self.index} of {self.count})"

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, chunk: int) -> bool:
        return owner(chunk, self.count) == self.index

    @classmethod
    def owning(cls, chunk: int, count: int) -> Shard:
        """The shard of `count` that scores `chunk`."""
        return cls(owner(chunk, count), count)

    @property
    def _numbered(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    @property
    def tag(self) -> str:
        """'all' for a whole-output writer, 'shard-00001-of-00003' for a shard."""
        return "all" if self.whole else self._numbered

    @property
    def marker_name(self) -> str:
        """The record a shard leaves once all its chunks are committed (a whole run is shard 0 of 1)."""
        return f"{self._numbered}.json"

    @property
    def lease_name(self) -> str:
        return f"lease-{self.tag}.json"

    @property
    def lock_name(self) -> str:
        return "lock" if self.whole else f"{self.tag}.lock"

    def conflicts(self, other: Shard) -> bool:
        """Do writers of these shards overlap? Shards of one count never do; a whole-output writer always."""
        if self == other:
            return False
        return self.whole or other.whole or self.count != other.count

    @classmethod
    def _parse(cls, numbered: str) -> Shard | None:
        match = _SHARD.match(numbered)
        if not match:
            return None
        index, count = int(match.group(1)), int(match.group(2))
        shard = cls(index, count) if index < count else None
        return shard if shard is not None and shard._numbered == numbered else None

    @classmethod
    def from_tag(cls, tag: str) -> Shard | None:
        shard = cls() if tag == "all" else cls._parse(tag)
        return shard if shard is not None and shard.tag == tag else None

    @classmethod
    def from_marker(cls, name: str) -> Shard | None:
        return cls._parse(name[: -len(".json")]) if name.endswith(".json") else None

    @classmethod
    def from_lease(cls, name: str) -> Shard | None:
        if name.startswith("lease-") and name.endswith(".json"):
            return cls.from_tag(name[len("lease-") : -len(".json")])
        return None

    @classmethod
    def from_lock(cls, name: str) -> Shard | None:
        """A shard's own lock file (the whole-output `lock` is not one)."""
        shard = cls._parse(name[: -len(".lock")]) if name.endswith(".lock") else None
        return shard if shard is not None and not shard.whole else None


WHOLE = Shard()  # a whole-output writer: shard 0 of 1


@dataclass
class Chunk:
    index: int
    start: int  # global index of the chunk's first row
    table: pa.Table  # the columns the job reads
    rows_read: int = 0  # input rows parsed to build this chunk since the previous one (skipped rows included)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def select(self, columns: list[str]) -> Chunk:
        """The same chunk holding only `columns` (what the output keeps of it)."""
        kept = columns + [BAD] if BAD in self.table.column_names else columns  # bad records ride along to the sink
        return Chunk(self.index, self.start, self.table.select(kept), self.rows_read)


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
    shard: Shard = WHOLE
    num_rows: int | None = None  # input rows (after --limit) when known before reading; else None
    limit: int | None = None
    committed: frozenset = frozenset()  # this shard's chunks already written by an earlier run
    main: bool = True  # rank 0: shows progress; finalizes a distributed run
    finalizes: bool = True  # False for independent workers: `batchscore finalize` comes later
    overwrite: str | None = None  # None | "all" | "shard", see OutputWriter
    clear_first: bool = False  # distributed --overwrite: rank 0 clears before the others look

    # --- which chunks ------------------------------------------------------------------------------------------

    def owns(self, chunk: int) -> bool:
        return self.shard.owns(chunk)

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
        return [c for c in range(self.shard.index, self.num_chunks, self.shard.count) if c not in self.committed]

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
            position = chunk // self.shard.count - bisect.bisect_left(skipped, chunk)
            return position % workers == worker

        return todo

    def with_committed(self, committed: Iterable[int]) -> "Plan":
        return replace(self, committed=frozenset(c for c in committed if self.owns(c)))

    def with_rows(self, num_rows: int | None) -> "Plan":
        """This plan once the input's row count is known (after --limit)."""
        if num_rows is not None and self.limit is not None:
            num_rows = min(num_rows, self.limit)
        return replace(self, num_rows=num_rows)

    def whole(self) -> "Plan":
        """The same chunks, all of them: what a whole --overwrite clears, whichever rank clears it."""
        return replace(self, shard=WHOLE, committed=frozenset())

    # --- which rows to read ------------------------------------------------------------------------------------

    def read(
        self, source: Source, columns: list[str], worker: int = 0, workers: int = 1
    ) -> Generator[Chunk | InputEnd, None, None]:
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

    def check(self, source: Source, columns: list[str]) -> int:
        """Parse, before any output, the rows this process will score; return how many rows the input has.

        Catches ragged rows, bad UTF-8 and broken JSON lines before the model
        loads and before --overwrite clears anything. Where the source can
        start at any row, only this process's chunks still to do are read.
        """
        if source.read_rows is None or self.num_rows is None:
            return source.scan(columns, self.limit)
        for chunk in self.todo_chunks() or []:
            for _ in source.read_rows(columns, *self.span(chunk)):
                pass
        return self.num_rows


def iter_chunks(
    batches: Iterable[pa.RecordBatch | pa.Table],
    chunk_rows: int,
    limit: int | None = None,
    owns: Callable[[int], bool] = lambda index: True,
) -> Generator[Chunk, None, tuple[int, int]]:
    """Regroup `batches` into chunks; only chunks with `owns(index)` are built.

    Unowned chunks are still read (row positions depend on them) but never
    concatenated, so skipping costs only the parse. Returns (as the
    generator's return value) how many chunks the input has, and how many rows
    were parsed after the last chunk built.
    """
    pending: list[pa.RecordBatch | pa.Table] = []
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


def _concat(
    parts: list[pa.RecordBatch | pa.Table], columns: list[str] | None = None, schema: pa.Schema | None = None
) -> pa.Table:
    import pyarrow as pa

    tables = [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in parts]
    if not tables:  # a chunk past the end of the input (cannot happen with a true row count): no rows
        assert schema is not None  # sources that read by row (Parquet, saved datasets) know their schema
        return pa.schema([schema.field(c) for c in columns or []]).empty_table()
    return pa.concat_tables(tables).combine_chunks()


def for_process(cfg: JobConfig, num_rows: int | None, rank: int = 0, world: int = 1) -> Plan:
    """The plan of rank `rank` of `world` processes (1 of 1 without a launcher), from the job's options."""
    independent = cfg.num_shards is not None
    shard = Shard(rank, world)
    if cfg.num_shards is not None:  # config sets --shard-index with it
        shard = Shard((cfg.shard_index or 0) + cfg.num_shards * rank, cfg.num_shards * world)
    overwrite = None
    if cfg.overwrite:
        overwrite = "shard" if independent else ("all" if rank == 0 else None)
    return Plan(
        cfg.chunk_rows,
        shard,
        limit=cfg.limit,
        main=rank == 0,
        finalizes=not independent,
        overwrite=overwrite,
        clear_first=bool(cfg.overwrite) and not independent and world > 1,
    ).with_rows(num_rows)


def launcher_ranks() -> tuple[int, int]:
    """(rank, world size) as torchrun / accelerate launch / Slurm's srun-with-torchrun set them; (0, 1) alone.

    Known before accelerate starts, so the input check can cover this rank's share before the model loads.
    """
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))

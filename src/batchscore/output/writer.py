"""Write one shard of an output: take the lease, reconcile with what is there, commit parts, leave a marker.

A chunk's part is committed whole or not at all (store.py), so a rerun of the
same job skips the committed chunks and redoes only what was in flight. Each
part carries the run's identity and its own counts in its footer: the
manifest is their sum however many runs, shards or ranks wrote them, and a
lost manifest can be rebuilt. Writes run on a background thread so the model
never waits for the store.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import OutputError
from ..plan import WHOLE, Shard
from .identity import run_hash
from .layout import CHUNK_KEY, MANIFEST, METADATA_KEY, RECORDS, RUN_KEY, SUCCESS, part_index, part_name
from .lease import lease_seconds, open_lease
from .manifest import (
    is_ours,
    listed_parts,
    our_footer,
    part_identity,
    part_stats,
    read_complete,
    sum_stats,
    tidy_complete,
)
from .store import Output

if TYPE_CHECKING:
    from types import TracebackType

    import pyarrow as pa

log = logging.getLogger(__name__)
MAX_PENDING_WRITES = 2  # bounds memory: at most this many chunks wait for the store


def _our_name(name: str) -> bool:
    return part_index(name) is not None or name in (SUCCESS, MANIFEST, RECORDS)


@dataclass(frozen=True)
class Existing:
    """What an output holds before a run starts."""

    state: str | None  # "complete", "started" (an unfinished run), or None (nothing yet)
    chunks: frozenset[int] = frozenset()  # parts listed now, footers unread: what a resume will most likely skip


def check_output(output: Output, overwrite: bool) -> Existing:
    """Fail early, touching nothing, if the output can't be used at all (before the model loads); say what it
    holds already."""
    import os

    lease_seconds()  # a bad BATCHSCORE_LEASE_SECONDS is exit 2 now, not a dead heartbeat hours in
    layout, store = output.layout, output.store
    layout.check_names()
    if layout.single_file:
        store.guard(layout.root)  # the hidden parts folder may not be a link out of the output
    if layout.target is not None and store.exists(layout.target) and store.isdir(layout.target):
        raise OutputError(f"Output '{layout.url()}' is a folder; pass a file path ending in .parquet, or another name.")
    if not layout.single_file and store.exists(layout.root):
        if not store.isdir(layout.root):
            raise OutputError(f"Output '{layout.url()}' is a file; pass a folder path, or a path ending in .parquet.")
        names = store.names()
        foreign = [n for n in names if not _our_name(n) and not n.startswith(".")]
        if foreign:
            # Never write into, or --overwrite, a folder that is not a batchscore output.
            raise OutputError(
                f"Output '{layout.url()}' holds files batchscore did not write (e.g. {foreign[0]}); "
                "choose another --output."
            )
        for name in (SUCCESS, MANIFEST, RECORDS):
            if name in names:
                store.guard(layout.path(name))  # a link out of the output is refused before anything else
        parts = [n for n in names if part_index(n) is not None]
        if parts and not set(names) & {SUCCESS, MANIFEST, RECORDS}:  # part-like names only: are they ours?
            our_footer(layout, store, layout.path(parts[0]))
    # Refuses a single file batchscore did not write; a complete output needs no write access.
    complete = read_complete(layout, store) is not None
    if complete and not overwrite:
        return Existing("complete")
    exists = complete or store.exists(layout.final) or (layout.single_file and store.exists(layout.root))
    if layout.local:
        existing = layout.root
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"Cannot write under '{existing}'; pass a writable --output.")
    else:
        bucket = layout.root.split("/", 1)[0]
        if not store.exists(bucket):
            raise OutputError(
                f"Cannot write output '{layout.url()}': the bucket '{bucket}' does not exist or "
                "cannot be reached; create it, or check the credentials and endpoint."
            )
    if complete:
        return Existing("complete")
    return Existing("started", frozenset(listed_parts(store))) if exists else Existing(None)


def _differences(before: dict, now: dict) -> list[str]:
    found = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) == now.get(key):
            continue
        was, now_models = before.get(key), now.get(key)
        if key == "models" and isinstance(was, list) and isinstance(now_models, list) and len(was) == len(now_models):
            # Several models: say which of them changed, and in what.
            count = len(now_models)
            for number, (a, b) in enumerate(zip(was, now_models), 1):
                if a != b:
                    changed = _differences(a, b) if isinstance(a, dict) and isinstance(b, dict) else ["all"]
                    found.append(f"model {number} of {count} ({', '.join(changed)})")
        elif key == "models" or (key in ("model",) and ("models" in before) != ("models" in now)):
            found.append("the list of models")
        else:
            found.append(key)
    return list(dict.fromkeys(found))


class OutputWriter:
    """Context manager over one shard of an output. A whole-output run is shard 0 of 1.

    `overwrite` is None, "all" (clear the whole output) or "shard" (clear only
    this shard's parts, for an independent worker rerun alone). After
    __enter__: `complete` (with `manifest`) says the output already holds this
    exact run; `committed` holds this shard's chunks already written (to skip);
    `warnings` says what was repaired.
    """

    def __init__(
        self,
        output: Output,
        schema: pa.Schema,
        metadata: dict,
        identity: dict,
        overwrite: str | None = None,
        shard: Shard = WHOLE,
    ):
        self.layout = layout = output.layout
        self.store = output.store
        self.identity = identity
        self.run = run_hash(identity)
        self.schema = schema.with_metadata(
            {METADATA_KEY: json.dumps(metadata, sort_keys=True), RUN_KEY: json.dumps(identity, sort_keys=True)}
        )
        self.overwrite = overwrite
        self.shard = shard
        self.lease = open_lease(layout, self.shard)
        self.committed: set[int] = set()
        self.complete = False
        self.manifest: dict | None = None
        self.warnings: list[str] = []
        self._stats: dict[int, dict] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    # --- set-up ---------------------------------------------------------------------------------------------

    def __enter__(self) -> OutputWriter:
        if not self.overwrite and self._already_complete():
            return self  # needs no lease: a finished output may sit on read-only storage
        self.lease.acquire()
        try:
            self._reconcile()
        except BaseException:
            self.lease.release()
            raise
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        return self

    def _already_complete(self) -> bool:
        manifest = read_complete(self.layout, self.store)
        if manifest is None:
            return False
        self._check_identity(manifest.get("run"), "already holds a complete run")
        tidy_complete(self.layout, self.store)
        self.complete, self.manifest = True, manifest
        return True

    def _reconcile(self) -> None:
        if self.overwrite:
            self._clear()
        elif self._already_complete():  # finished by another run while we waited
            return
        self.store.makedirs(self.layout.root)
        checked = False
        for index in listed_parts(self.store):
            mine = self.shard.owns(index)
            if not mine and checked:
                continue
            path = self.layout.path(part_name(index))
            footer = our_footer(self.layout, self.store, path)
            stats = part_stats(footer)
            if stats is None:
                if not mine:
                    continue
                # A 0-byte or truncated part: a power loss before the data reached the disk.
                self.warnings.append(f"{self.layout.url(path)} is unreadable (damaged); redoing chunk {index}.")
                self.store.remove(path)
                continue
            if not self.overwrite:
                self._check_identity(part_identity(footer), "holds part of another run")
            checked = True
            if mine and stats.get("run") == self.run:
                self.committed.add(index)
                self._stats[index] = stats
        if not self.overwrite and self.store.exists(self.layout.path(SUCCESS)):
            # Marked complete, yet parts are missing (lost since, or never proven): not complete. No reader may
            # take the folder for complete while this run scores what is missing.
            self.warnings.append(
                f"{self.layout.url()} was marked complete, but its parts do not prove it (a part "
                "or the manifest was lost); redoing what is missing."
            )
            self.store.remove(self.layout.path(SUCCESS))
        # Leftovers of a killed writer, removed only once this run may use the output: a refused run
        # changes nothing.
        self.store.remove_temp_files(self._mine_name)

    def _mine_name(self, name: str) -> bool:
        """A temp file's final name is this writer's to clean up (a whole-output writer owns every one)."""
        if self.shard.whole:
            return True
        index = part_index(name)
        return index is not None and self.shard.owns(index)

    def _check_identity(self, before: dict | None, what: str) -> None:
        if before == self.identity:
            return
        changed = (
            ", ".join(_differences(before, self.identity)) if isinstance(before, dict) else "unknown: no run identity"
        )
        raise OutputError(
            f"Output '{self.layout.url()}' {what} with other settings (differs in: {changed}); "
            "pass --overwrite to replace it, or choose another --output."
        )

    def _clear(self) -> None:
        """--overwrite: remove what batchscore wrote (all of it, or this shard's share); refuse anything else."""
        layout, store = self.layout, self.store
        if layout.target is not None and store.exists(layout.target):
            read_complete(layout, store)  # raises unless batchscore wrote it
            store.remove(layout.target)
        records = [
            layout.record(n)
            for n in store.names(layout.path(RECORDS))
            if Shard.from_marker(n) and (self.overwrite != "shard" or n == self.shard.marker_name)
        ]
        parts = [
            layout.path(part_name(i)) for i in listed_parts(store) if self.overwrite != "shard" or self.shard.owns(i)
        ]
        set_aside = [  # the quarantine beside the output: its files of the chunks cleared
            f"{layout.quarantine}/{n}"
            for n in store.names(layout.quarantine)
            if part_index(n) is not None and (self.overwrite != "shard" or self.shard.owns(part_index(n) or 0))
        ]
        for path in set_aside:
            if not is_ours(store.footer(path)):
                raise OutputError(
                    f"'{layout.url(path)}' was not written by batchscore; it is never removed or replaced, even "
                    "with --overwrite: move it, or choose another --output."
                )
        for path in parts:  # every one checked before any is removed: a foreign file stops the clearing untouched
            our_footer(layout, store, path)
        manifest = layout.path(MANIFEST)
        footer = store.footer(manifest)
        if footer is not None and not is_ours(footer):
            raise OutputError(
                f"'{layout.url(manifest)}' was not written by batchscore; it is never removed or "
                "replaced, even with --overwrite: move it, or choose another --output."
            )
        for path in parts + set_aside:
            store.remove(path)
        for path in [layout.path(SUCCESS), manifest, *records]:
            store.remove(path)

    # --- writing --------------------------------------------------------------------------------------------

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self._pool is None:
            return False
        try:
            # Let in-flight writes finish: each is a whole chunk, and a commit is atomic.
            self._pool.shutdown(wait=True)
            self.store.remove_temp_files(self._mine_name)
        finally:
            self.lease.release()
        return False

    def write(self, index: int, table: pa.Table, stats: dict, quarantine: pa.Table | None = None) -> None:
        """Commit chunk `index`: its bad records (`quarantine`, when it met any) first, then its part. A chunk is
        committed once its part is there, so a kill between the two leaves a quarantine file that the rerun,
        redoing the chunk, writes again the same: each entry is there once."""
        while len(self._pending) >= MAX_PENDING_WRITES:
            self._pending.pop(0).result()
        assert self._pool is not None, "write() outside the with block"
        self._pending.append(self._pool.submit(self._write_part, index, table, stats, quarantine))

    def _write_quarantine(self, index: int, entries: pa.Table) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = f"{self.layout.quarantine}/{part_name(index)}"
        if self.store.exists(path) and not is_ours(self.store.footer(path)):
            raise OutputError(
                f"'{self.layout.url(path)}' was not written by batchscore; it is never replaced: move it, or "
                "choose another --output (the quarantine is beside it)."
            )
        marks = {METADATA_KEY: json.dumps({"quarantine_of": self.layout.url(), "run": self.run, "chunk": index})}
        buffer = pa.BufferOutputStream()
        pq.write_table(entries.replace_schema_metadata(marks), buffer)
        self.store.makedirs(self.layout.quarantine)
        self.lease.commit(path, buffer.getvalue().to_pybytes())

    def _write_part(self, index: int, table: pa.Table, stats: dict, quarantine: pa.Table | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if quarantine is not None and quarantine.num_rows:
            self._write_quarantine(index, quarantine)
        stats = {**stats, "run": self.run}
        schema = self.schema.with_metadata({**self.schema.metadata, CHUNK_KEY: json.dumps(stats)})
        buffer = pa.BufferOutputStream()
        pq.write_table(table.cast(schema), buffer, write_statistics=_statistics(table))
        # Asks the store: never commit into an output another run has taken over (or finished) meanwhile.
        self.lease.commit(self.layout.path(part_name(index)), buffer.getvalue().to_pybytes())
        self._stats[index] = stats

    def flush(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    def committed_stats(self) -> list[dict]:
        """The footer counts of this shard's chunks an earlier run committed."""
        return [self._stats[i] for i in sorted(self.committed) if i in self._stats]

    def shard_stats(self) -> dict:
        """The counts over this shard's committed parts."""
        return sum_stats([self._stats[i] for i in sorted(self._stats) if self.shard.owns(i)])

    def finish_shard(self, info: dict, num_chunks: int, empty_stats: dict) -> None:
        """Every chunk of this shard is committed: leave the marker that finalize looks for."""
        import pyarrow as pa

        self.flush()
        if num_chunks == 0 and self.shard.index == 0 and 0 not in self._stats:
            # Zero rows: still leave a schema behind so readers get the columns.
            self._write_part(0, pa.Table.from_batches([], schema=self.schema), empty_stats)
        marker = {
            **info,
            "shard": self.shard.index,
            "num_shards": self.shard.count,
            "num_chunks": num_chunks,
            "run": self.run,
            "written": time.time(),
        }
        self.lease.commit(self.layout.record(self.shard.marker_name), json.dumps(marker, indent=2).encode())


# pyarrow leaves out a column chunk's min/max when either is longer than this (its max_statistics_size)...
STATISTICS_VALUE_BYTES = 4096


def _statistics(table: pa.Table) -> bool | list[str]:
    """Which columns get min/max statistics: all, unless a text column holds a value too long to keep them.

    ...but it computes them first, copying the values several times over: a part holding one 50 MB text
    took 190 MB more to write. A column with such a value rarely keeps its statistics anyway (only when the
    long value is neither its min nor its max), so it gets none.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    long_values = {
        field.name
        for field, column in zip(table.schema, table.columns)
        if _text_like(field.type) and (pc.max(pc.binary_length(column)).as_py() or 0) > STATISTICS_VALUE_BYTES
    }
    if not long_values:
        return True
    # Statistics are named by leaf column ("scores.list.element.label"): the schema's own Parquet paths.
    buffer = pa.BufferOutputStream()
    pq.write_table(table.schema.empty_table(), buffer)
    paths = pq.read_metadata(pa.BufferReader(buffer.getvalue())).schema
    return [paths.column(i).path for i in range(len(paths)) if paths.column(i).path.split(".")[0] not in long_values]


def _text_like(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return any(
        check(kind)
        for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    )

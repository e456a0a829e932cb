"""The output folder's protocol: committed parts, resume, run identity, manifest.

    OUT/part-000000.parquet   rows [0, N) in input order, committed by an atomic rename
    OUT/_manifest.json        config, model, input fingerprint, counts, timings
    OUT/_SUCCESS              written last: its presence means complete
    OUT/.batchscore-run.json  what this output is a run of (input, model, options that change scores)
    OUT/.batchscore-shard-00001-of-00003.json   shard 1 of 3 has written all its chunks
    OUT/.batchscore.lock      held while a run writes here (a shard holds a lock of its own, see lock.py)

A chunk's part exists whole or not at all, so a rerun of the same job skips the
committed chunks and redoes only what was in flight. Each part carries its own
counts and its run's hash in its footer, so the manifest is the sum over parts,
however many runs, shards or ranks wrote them. A shard that has written all its
chunks leaves a marker naming how many chunks the input has; finalize.py
checks that every chunk is there before it writes the manifest. A `.parquet`
output is assembled from parts kept in a hidden folder beside it and renamed
into place only when complete. Writes run on a background thread so the model
never waits for the disk.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

from .errors import OutputError
from .lock import LOCK_NAME, OutputLock, is_lock, shard_lock_name

METADATA_KEY = b"batchscore"
CHUNK_KEY = b"batchscore.chunk"
MANIFEST_KEY = b"batchscore.manifest"
SUCCESS, MANIFEST, RUN_RECORD = "_SUCCESS", "_manifest.json", ".batchscore-run.json"
PART = re.compile(r"^part-(\d{6})\.parquet$")
MARKER = re.compile(r"^\.batchscore-shard-(\d+)-of-(\d+)\.json$")
MAX_PENDING_WRITES = 2  # bounds memory: at most this many chunks wait for the disk


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def marker_name(shard: int, num_shards: int) -> str:
    return f".batchscore-shard-{shard:05d}-of-{num_shards:05d}.json"


def run_hash(identity: dict) -> str:
    """A short fingerprint of a run's identity, stamped on each part it writes."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write_bytes(path: str, data: bytes) -> None:
    # The pid keeps two shards writing the same run record from sharing a temp file.
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def parts_dir(output: str) -> str:
    """Where part files go: the output folder, or a hidden folder beside a .parquet output."""
    if output.endswith(".parquet"):
        return os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.parts")
    return output


def _ours(name: str) -> bool:
    return name in (SUCCESS, MANIFEST) or name.startswith((".", "part-"))


def check_output(output: str, overwrite: bool) -> None:
    """Fail early, touching nothing, if the output location can't be used at all."""
    single_file = output.endswith(".parquet")
    if os.path.isfile(output) and not single_file:
        raise OutputError(f"Output '{output}' is a file; pass a folder path, or a path ending in .parquet.")
    if os.path.isdir(output) and single_file:
        raise OutputError(f"Output '{output}' is a folder; pass a file path ending in .parquet, or another name.")
    if not single_file and os.path.isdir(output):
        foreign = [n for n in os.listdir(output) if not _ours(n)]
        if foreign:
            # Never write into, or --overwrite, a folder that is not a batchscore output.
            raise OutputError(f"Output '{output}' holds files batchscore did not write (e.g. {foreign[0]}); "
                              "choose another --output.")
    existing = os.path.abspath(parts_dir(output))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write under '{existing}'; pass a writable --output.")


def _differences(before: dict, now: dict) -> list[str]:
    return [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]


class ParquetSink:
    """Context manager over one shard of an output: lock, reconcile with what is there, write, finish.

    A whole-output run is shard 0 of 1. `overwrite` is None, "all" (clear the
    whole output) or "shard" (clear only this shard's parts, for an
    independent worker rerun alone). After __enter__: `complete` says the
    output already holds this exact run; `committed` holds this shard's chunk
    indices already written (to skip).
    """

    def __init__(self, output: str, schema, metadata: dict, identity: dict, overwrite: str | None = None,
                 shard: int = 0, num_shards: int = 1):
        self.output = output
        self.single_file = output.endswith(".parquet")
        self.parts_dir = parts_dir(output)
        self.schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
        self.identity = identity
        self.run = run_hash(identity)
        self.overwrite = overwrite
        self.shard, self.num_shards = shard, num_shards
        lock_name = LOCK_NAME if num_shards == 1 else shard_lock_name(shard, num_shards)
        self.lock = OutputLock(self.parts_dir, output, lock_name)
        self.committed: set[int] = set()
        self.complete = False
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    # --- set-up ---------------------------------------------------------------------------------------------

    def __enter__(self):
        try:
            self.lock.acquire()
        except OSError as exc:
            raise OutputError(f"Cannot create '{self.parts_dir}' ({exc.strerror}); pass a writable --output.") \
                from None
        try:
            self._reconcile()
        except BaseException:
            self.lock.release()
            raise
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        return self

    def _reconcile(self) -> None:
        self._remove_temp_files()  # what a killed run had in flight
        if self.overwrite == "all":
            self._clear(lambda name: True)
        elif self.overwrite == "shard":
            self._clear(self._mine)
        elif self.single_file and os.path.isfile(self.output):
            self._check_identity(self._file_identity(), "already exists")
            self.complete = True
            return
        elif self._has_content():
            self._check_identity(read_run_record(self.parts_dir), "holds part of another run")
        if self.overwrite or not os.path.exists(os.path.join(self.parts_dir, RUN_RECORD)):
            atomic_write_bytes(os.path.join(self.parts_dir, RUN_RECORD),
                                json.dumps(self.identity, indent=2, sort_keys=True).encode())
        self.committed = {i for i in self._committed_indices() if i % self.num_shards == self.shard}
        self.complete = not self.single_file and os.path.exists(os.path.join(self.output, SUCCESS))

    def _check_identity(self, before: dict | None, what: str) -> None:
        if before == self.identity:
            return
        changed = ", ".join(_differences(before, self.identity)) if before else "unknown: no run record"
        raise OutputError(f"Output '{self.output}' {what} with other settings (differs in: {changed}); "
                          "pass --overwrite to replace it, or choose another --output.")

    def _has_content(self) -> bool:
        # Another shard starting this same moment may have only its lock and a temp file here yet.
        return any(not is_lock(n) and not n.endswith(".tmp") for n in os.listdir(self.parts_dir))

    def _file_identity(self) -> dict | None:
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(self.output).metadata or {}
            return json.loads(meta[MANIFEST_KEY])["run"]
        except (OSError, KeyError, ValueError, TypeError):
            return None

    def _mine(self, name: str) -> bool:
        """This shard's parts and marker, and the files that say the output is complete."""
        part = PART.match(name)
        if part:
            return int(part.group(1)) % self.num_shards == self.shard
        return name in (SUCCESS, MANIFEST, marker_name(self.shard, self.num_shards))

    def _clear(self, which) -> None:
        if self.single_file and os.path.isfile(self.output):
            os.remove(self.output)
        for name in os.listdir(self.parts_dir):
            if is_lock(name) or not which(name):
                continue
            path = os.path.join(self.parts_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def _remove_temp_files(self) -> None:
        """Remove what a killed run had in flight; a shard touches only its own parts' temp files."""
        remove_temp_files(self.parts_dir, lambda index: index % self.num_shards == self.shard,
                          everything=self.num_shards == 1)

    def _committed_indices(self) -> set[int]:
        return {int(m.group(1)) for m in map(PART.match, os.listdir(self.parts_dir)) if m}

    # --- writing --------------------------------------------------------------------------------------------

    def __exit__(self, exc_type, exc, tb):
        try:
            if self._pool is not None:
                # Let in-flight writes finish: each is a whole chunk, and a commit is atomic.
                self._pool.shutdown(wait=True)
            self._remove_temp_files()
        finally:
            self.lock.release()
        return False

    def write(self, index: int, table, stats: dict) -> None:
        while len(self._pending) >= MAX_PENDING_WRITES:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write_part, index, table, stats))

    def _write_part(self, index: int, table, stats: dict) -> None:
        import pyarrow.parquet as pq

        stats = {**stats, "run": self.run}
        schema = self.schema.with_metadata({**self.schema.metadata, CHUNK_KEY: json.dumps(stats).encode()})
        path = os.path.join(self.parts_dir, part_name(index))
        tmp = os.path.join(self.parts_dir, "." + part_name(index) + ".tmp")
        pq.write_table(table.cast(schema), tmp)
        os.replace(tmp, path)  # the commit: the part exists whole or not at all

    def flush(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    def shard_stats(self) -> dict:
        """The counts over this shard's committed parts."""
        return sum_stats([read_part_stats(self.parts_dir, i) for i in sorted(self._committed_indices())
                          if i % self.num_shards == self.shard])

    def existing_manifest(self) -> dict:
        return read_manifest(self.output)

    def finish_shard(self, info: dict, num_chunks: int, empty_stats: dict) -> None:
        """Every chunk of this shard is committed: leave the marker that finalize looks for."""
        import pyarrow as pa

        self.flush()
        if num_chunks == 0 and self.shard == 0 and 0 not in self._committed_indices():
            # Zero rows: still leave a schema behind so readers get the columns.
            self._write_part(0, pa.Table.from_batches([], schema=self.schema), empty_stats)
        marker = {**info, "shard": self.shard, "num_shards": self.num_shards, "num_chunks": num_chunks,
                  "run": self.run}
        atomic_write_bytes(os.path.join(self.parts_dir, marker_name(self.shard, self.num_shards)),
                            json.dumps(marker, indent=2).encode())


TEMP_PART = re.compile(r"^\.part-(\d{6})\.parquet\.tmp$")


def remove_temp_files(directory: str, owns=lambda index: True, everything: bool = True) -> None:
    """Remove temp files; `everything` only when no other writer can be at work here (an exclusive lock)."""
    for path in glob.glob(os.path.join(directory, ".*.tmp")):
        part = TEMP_PART.match(os.path.basename(path))
        if everything or (part and owns(int(part.group(1)))):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def read_run_record(directory: str) -> dict | None:
    try:
        with open(os.path.join(directory, RUN_RECORD)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def read_part_stats(directory: str, index: int) -> dict:
    import pyarrow.parquet as pq

    meta = pq.read_schema(os.path.join(directory, part_name(index))).metadata or {}
    return json.loads(meta.get(CHUNK_KEY, b"{}"))


def read_manifest(output: str) -> dict:
    import pyarrow.parquet as pq

    if output.endswith(".parquet"):
        return json.loads(pq.read_schema(output).metadata[MANIFEST_KEY])
    with open(os.path.join(output, MANIFEST)) as fh:
        return json.load(fh)


def sum_stats(stats: list[dict]) -> dict:
    totals: Counter = Counter()
    labels: Counter = Counter()
    for s in stats:
        labels.update(s.get("label_counts", {}))
        totals.update({k: v for k, v in s.items() if isinstance(v, int)})
    return {
        "rows": totals["rows"],
        "scored_rows": totals["rows"] - totals["empty_text_rows"],
        "empty_text_rows": totals["empty_text_rows"],
        "truncated_rows": totals["truncated_rows"],
        "chunks": len(stats),
        "label_counts": dict(sorted(labels.items())),
        "real_tokens": totals["real_tokens"],
        "padded_tokens": totals["padded_tokens"],
    }

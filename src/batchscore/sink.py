"""The output folder's protocol: committed parts, resume, run identity, manifest.

    OUT/part-000000.parquet   rows [0, N) in input order, committed by an atomic rename
    OUT/_manifest.json        config, model, input fingerprint, counts, timings
    OUT/_SUCCESS              written last: its presence means complete
    OUT/.batchscore-run.json  what this output is a run of (input, model, options that change scores)
    OUT/.batchscore.lock      held while a run writes here

A chunk's part exists whole or not at all, so a rerun of the same job skips the
committed chunks and redoes only what was in flight. Each part carries its own
counts in its footer, so the manifest is the sum over parts, however many runs
wrote them. A `.parquet` output is assembled from parts kept in a hidden folder
beside it and renamed into place only when complete. Writes run on a background
thread so the model never waits for the disk.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

from .errors import OutputError
from .lock import LOCK_NAME, OutputLock

METADATA_KEY = b"batchscore"
CHUNK_KEY = b"batchscore.chunk"
MANIFEST_KEY = b"batchscore.manifest"
SUCCESS, MANIFEST, RUN_RECORD = "_SUCCESS", "_manifest.json", ".batchscore-run.json"
PART = re.compile(r"^part-(\d{6})\.parquet$")
MAX_PENDING_WRITES = 2  # bounds memory: at most this many chunks wait for the disk


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
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
    """Context manager over one output: lock, reconcile with what is there, write, finish.

    After __enter__: `complete` says the output already holds this exact run;
    `committed` holds the chunk indices already written (to skip).
    """

    def __init__(self, output: str, schema, metadata: dict, identity: dict, overwrite: bool = False):
        self.output = output
        self.single_file = output.endswith(".parquet")
        self.parts_dir = parts_dir(output)
        self.schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
        self.identity = identity
        self.overwrite = overwrite
        self.lock = OutputLock(self.parts_dir, output)
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
        if self.overwrite:
            self._clear()
        elif self.single_file and os.path.isfile(self.output):
            self._check_identity(self._file_identity(), "already exists")
            self.complete = True
            return
        elif self._has_content():
            self._check_identity(self._read_run_record(), "holds part of another run")
        if not os.path.exists(os.path.join(self.parts_dir, RUN_RECORD)):
            _atomic_write_bytes(os.path.join(self.parts_dir, RUN_RECORD),
                                json.dumps(self.identity, indent=2, sort_keys=True).encode())
        self.committed = self._committed_indices()
        self.complete = not self.single_file and os.path.exists(os.path.join(self.output, SUCCESS))

    def _check_identity(self, before: dict | None, what: str) -> None:
        if before == self.identity:
            return
        changed = ", ".join(_differences(before, self.identity)) if before else "unknown: no run record"
        raise OutputError(f"Output '{self.output}' {what} with other settings (differs in: {changed}); "
                          "pass --overwrite to replace it, or choose another --output.")

    def _has_content(self) -> bool:
        return any(n != LOCK_NAME for n in os.listdir(self.parts_dir))

    def _read_run_record(self) -> dict | None:
        try:
            with open(os.path.join(self.parts_dir, RUN_RECORD)) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def _file_identity(self) -> dict | None:
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(self.output).metadata or {}
            return json.loads(meta[MANIFEST_KEY])["run"]
        except (OSError, KeyError, ValueError, TypeError):
            return None

    def _clear(self) -> None:
        if self.single_file and os.path.isfile(self.output):
            os.remove(self.output)
        for name in os.listdir(self.parts_dir):
            if name == LOCK_NAME:
                continue
            path = os.path.join(self.parts_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def _remove_temp_files(self) -> None:
        for tmp in glob.glob(os.path.join(self.parts_dir, ".*.tmp")):
            os.remove(tmp)

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

        schema = self.schema.with_metadata({**self.schema.metadata, CHUNK_KEY: json.dumps(stats).encode()})
        path = os.path.join(self.parts_dir, part_name(index))
        tmp = os.path.join(self.parts_dir, "." + part_name(index) + ".tmp")
        pq.write_table(table.cast(schema), tmp)
        os.replace(tmp, path)  # the commit: the part exists whole or not at all

    def flush(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    def committed_stats(self) -> list[dict]:
        """Each committed part's counts, read from its footer."""
        import pyarrow.parquet as pq

        stats = []
        for index in sorted(self._committed_indices()):
            meta = pq.read_schema(os.path.join(self.parts_dir, part_name(index))).metadata or {}
            stats.append(json.loads(meta.get(CHUNK_KEY, b"{}")))
        return stats

    def existing_manifest(self) -> dict:
        import pyarrow.parquet as pq

        if self.single_file:
            return json.loads(pq.read_schema(self.output).metadata[MANIFEST_KEY])
        with open(os.path.join(self.output, MANIFEST)) as fh:
            return json.load(fh)

    def finish(self, manifest: dict, empty_stats: dict) -> dict:
        """Sum the parts' counts into the manifest, then commit: _manifest.json, _SUCCESS (or merge)."""
        import pyarrow as pa

        self.flush()
        if not self._committed_indices():
            # Zero rows: still leave a schema behind so readers get the columns.
            self._write_part(0, pa.Table.from_batches([], schema=self.schema), empty_stats)
        manifest = {**manifest, **sum_stats(self.committed_stats()), "run": self.identity}
        if self.single_file:
            self._merge(manifest)
        else:
            _atomic_write_bytes(os.path.join(self.output, MANIFEST), json.dumps(manifest, indent=2).encode())
            _atomic_write_bytes(os.path.join(self.output, SUCCESS), b"")
        return manifest

    def _merge(self, manifest: dict) -> None:
        import pyarrow.parquet as pq

        schema = self.schema.with_metadata({**self.schema.metadata,
                                            MANIFEST_KEY: json.dumps(manifest, sort_keys=True).encode()})
        tmp = os.path.join(os.path.dirname(os.path.abspath(self.output)),
                           "." + os.path.basename(self.output) + ".tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            for index in sorted(self._committed_indices()):  # one part in memory at a time
                writer.write_table(pq.read_table(os.path.join(self.parts_dir, part_name(index))).cast(schema))
        os.replace(tmp, self.output)
        self.lock.release()
        shutil.rmtree(self.parts_dir)


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

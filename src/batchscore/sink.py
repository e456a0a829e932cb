"""Write scored chunks as Parquet parts, each committed by an atomic rename.

    OUT/part-000000.parquet   rows [0, N) in input order
    OUT/_manifest.json        config, model, counts, timings
    OUT/_SUCCESS              written last: its presence means complete

A `.parquet` output is assembled from parts kept in a hidden folder beside it
and renamed into place only when complete. Writes run on a background thread
so the model never waits for the disk.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor

from .errors import OutputError

METADATA_KEY = b"batchscore"
SUCCESS, MANIFEST = "_SUCCESS", "_manifest.json"
MAX_PENDING_WRITES = 2  # bounds memory: at most this many chunks wait for the disk


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def parts_dir(output: str) -> str:
    """Where part files go: the output folder, or a hidden folder beside a .parquet output."""
    if output.endswith(".parquet"):
        return os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.parts")
    return output


def check_output(output: str, overwrite: bool) -> None:
    """Fail early, touching nothing, if the output location can't be used."""
    single_file = output.endswith(".parquet")
    if os.path.isfile(output) and not single_file:
        raise OutputError(f"Output '{output}' is a file; pass a folder path, or a path ending in .parquet.")
    if os.path.isdir(output) and single_file:
        raise OutputError(f"Output '{output}' is a folder; pass a file path ending in .parquet, or another name.")
    if _taken(output):
        if not overwrite:
            raise OutputError(f"Output '{output}' already exists; pass --overwrite to replace it.")
        foreign = [] if single_file else [
            n for n in os.listdir(output) if n not in (SUCCESS, MANIFEST) and not n.startswith((".", "part-"))
        ]
        if foreign:
            # --overwrite must never empty a folder that is not a batchscore output.
            raise OutputError(f"Output '{output}' holds files batchscore did not write (e.g. {foreign[0]}); "
                              "choose another --output.")
    existing = os.path.abspath(parts_dir(output))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write under '{existing}'; pass a writable --output.")


def _taken(output: str) -> bool:
    if output.endswith(".parquet"):
        return os.path.isfile(output)
    return os.path.isdir(output) and bool(os.listdir(output))


class ParquetSink:
    """Context manager: `write(index, table)` per chunk, then `finish(manifest)`.

    The output location must have been vetted by `check_output`.
    """

    def __init__(self, output: str, schema, metadata: dict):
        self.output = output
        self.single_file = output.endswith(".parquet")
        self.parts_dir = parts_dir(output)
        self.schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
        self.metadata = metadata
        self._clear_previous()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: list[Future] = []
        self.written: list[int] = []

    def _clear_previous(self) -> None:
        # check_output has vetted the location; --overwrite takes effect only now,
        # after the model loaded, so a failed start leaves an old output alone.
        if _taken(self.output) and self.single_file:
            os.remove(self.output)
        elif _taken(self.output):
            shutil.rmtree(self.output)
        if self.single_file and os.path.isdir(self.parts_dir):
            shutil.rmtree(self.parts_dir)
        try:
            os.makedirs(self.parts_dir, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create '{self.parts_dir}' ({exc.strerror}); pass a writable --output.") \
                from None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._pool.shutdown(wait=exc_type is None, cancel_futures=exc_type is not None)
        for tmp in glob.glob(os.path.join(self.parts_dir, ".*.tmp")):
            os.remove(tmp)
        return False

    def write(self, index: int, table) -> None:
        while len(self._pending) >= MAX_PENDING_WRITES:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write_part, index, table))

    def _write_part(self, index: int, table) -> None:
        import pyarrow.parquet as pq

        path = os.path.join(self.parts_dir, part_name(index))
        tmp = os.path.join(self.parts_dir, "." + part_name(index) + ".tmp")
        pq.write_table(table.cast(self.schema), tmp)
        os.replace(tmp, path)  # the commit: the part exists whole or not at all
        self.written.append(index)

    def flush(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    def finish(self, manifest: dict) -> None:
        import pyarrow as pa

        self.flush()
        if not self.written:
            # Zero rows: still leave a schema behind so readers get the columns.
            self._write_part(0, pa.Table.from_batches([], schema=self.schema))
        if self.single_file:
            self._merge(manifest)
            return
        _atomic_write_bytes(os.path.join(self.output, MANIFEST), json.dumps(manifest, indent=2).encode())
        _atomic_write_bytes(os.path.join(self.output, SUCCESS), b"")

    def _merge(self, manifest: dict) -> None:
        import pyarrow.parquet as pq

        meta = dict(self.schema.metadata)
        meta[b"batchscore.manifest"] = json.dumps(manifest, sort_keys=True).encode()
        tmp = os.path.join(os.path.dirname(os.path.abspath(self.output)),
                           "." + os.path.basename(self.output) + ".tmp")
        parts = sorted(glob.glob(os.path.join(self.parts_dir, "part-*.parquet")))
        with pq.ParquetWriter(tmp, self.schema.with_metadata(meta)) as writer:
            for part in parts:  # one part in memory at a time
                writer.write_table(pq.read_table(part).cast(self.schema.with_metadata(meta)))
        os.replace(tmp, self.output)
        shutil.rmtree(self.parts_dir)

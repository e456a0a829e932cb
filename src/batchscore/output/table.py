"""A table (Delta Lake, Apache Iceberg) as the output: staged like parts, published in one commit.

A run's chunks are staged exactly as a folder output's parts are (same commit,
resume, lease and finalize), in a hidden folder of the table's own place:

    TABLE/_batchscore_staging/<job key>/part-000000.parquet ...   (Iceberg: under the table's location)

The job key names the job (input, options), so every shard of it and every
rerun finds the same folder, and two different jobs appending to one table at
once stage apart. Readers of the table never see staged files: a table is read
through its log (Delta) or its snapshots (Iceberg), never by listing.

When the staged output is complete, `publish` makes it one table commit (one
Delta version, one Iceberg snapshot) that carries the run's commit id (Delta: an
application transaction and the commit info; Iceberg: a snapshot summary
property). A rerun asks the table first: if the commit id is there, the rows
are in and nothing is committed again. Then the staging folder goes. So a kill
before, during or right after the commit, then a rerun, leaves each row in the
table exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import OutputError
from .identity import run_hash
from .layout import part_name
from .manifest import listed_parts, output_schema
from .table_base import CommitConflict, Table

if TYPE_CHECKING:
    import pyarrow as pa

    from ..config import JobConfig
    from .store import Output

# Options that change neither the rows nor the scores: a rerun that changes them is the same job.
_NOT_THE_JOB = {
    "batch_tokens", "num_workers", "threads", "progress", "progress_every", "report", "quiet", "verbose",
    "log_format", "shard_index", "num_shards", "overwrite", "cache", "config_file",
}  # fmt: skip


COMMIT_TRIES = 5  # a commit that loses a race with another writer is tried again, the table checked first


def open_table(output_format: str, spec: str, catalog: str | None = None) -> Table:
    """The table `spec` names in `output_format` (opened; not created before the first commit)."""
    from ..errors import ConfigError
    from ..tables import TABLE_FORMATS

    if output_format not in TABLE_FORMATS:
        raise ConfigError(f"--output-format must be parquet, delta or iceberg; got '{output_format}'.")
    if output_format == "delta":
        from .delta_table import DeltaOutput

        return DeltaOutput.open(spec)
    from .iceberg_table import IcebergOutput

    return IcebergOutput.open(spec, catalog)


def staging_folder(table: Table, cfg: JobConfig, source: Any) -> str:
    """Where this job stages its parts in `table`: named by the input (its content's fingerprint, else its
    description) and the options that change results. A table input's version is left out of the name, so a
    rerun after that table moved on finds the staged run and reads the version it recorded (preflight pins it)."""
    job = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_THE_JOB}
    found = source.fingerprint or source.description
    version = getattr(source, "version_key", None)
    if version is not None and isinstance(found, dict):
        found = {k: v for k, v in found.items() if k != version}
    return f"{table.staging_root()}/{run_hash({'input': found, 'job': job})}"


def commit_id(identity: dict[str, Any], mode: str) -> str:
    """What a table commit carries: the run (its identity) and how its rows went in. The same rows appended and
    then merged are two commits; the same run appended twice is one."""
    return run_hash({"run": identity, "table_mode": mode})


def staged_rows(output: Output) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The staged parts' rows in chunk order, one part in memory at a time, with the schema a table stores
    (batchscore's footer keys left out)."""
    import pyarrow.parquet as pq

    store, layout = output.store, output.layout
    parts = listed_parts(store)
    schema = output_schema(store, layout.path(part_name(parts[0]))).with_metadata(None)

    def batches() -> Iterator[pa.RecordBatch]:
        for index in parts:
            with store.fs.open(layout.path(part_name(index)), "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches():
                    yield batch.cast(schema)

    return schema, batches()


def publish(table: Table, staged: Output, manifest: dict[str, Any]) -> dict[str, Any]:
    """Commit a complete staged output into the table once, then remove the staging folder; the manifest, with
    the commit's version (or snapshot id) under "table". Under the staging folder's lease: two finalizes of one
    job never both commit."""
    from .lease import open_lease

    config = manifest.get("config", {})
    mode, key = config.get("table_mode", "append"), config.get("id_column")
    identity = manifest.get("run")
    if not isinstance(identity, dict):
        raise OutputError(f"Staged run '{staged.layout.url()}' has no run identity; rerun with --overwrite.")
    cid = commit_id(identity, mode)
    with open_lease(staged.layout, wait=True):
        _publish_quarantine(table, staged, cid)  # before the commit: a kill between the two redoes the copy
        version, already = _commit_once(table, staged, mode, key, cid, manifest)
        _remove_staging(staged)
    table_facts = described(table, version, mode, cid) | ({"already_committed": True} if already else {})
    return {**manifest, "table": table_facts}


def quarantine_of(table: Table, cid: str) -> str:
    """Where a table output's run keeps its bad records (--on-bad-row quarantine): beside the table, in a folder
    of the run's commit, TABLE.quarantine/<commit id>/ (several runs append to one table)."""
    from .layout import quarantine_path

    return f"{quarantine_path(table.location.url)}/{cid}"


def _publish_quarantine(table: Table, staged: Output, cid: str) -> None:
    """The staged run's quarantine files, copied to `quarantine_of` the table (each whole; the same names and
    bytes again on a rerun), so the table's rows and the run's bad records come out together."""
    from .layout import part_index
    from .store import Output

    names = [n for n in staged.store.names(staged.layout.quarantine) if part_index(n) is not None]
    if not names:
        return
    target = Output.open(quarantine_of(table, cid))
    target.store.makedirs(target.layout.root)
    for name in names:
        with staged.layout.fs.open(f"{staged.layout.quarantine}/{name}", "rb") as fh:
            target.store.put_bytes(target.layout.path(name), fh.read())


def latest_manifest(table: Table) -> dict[str, Any]:
    """`batchscore manifest` of a table: the manifest of batchscore's newest commit to it, with that commit."""
    found = table.latest_commit()
    if found is None:
        raise OutputError(
            f"{table.format.capitalize()} table '{table.spec}' has no commit by batchscore; score into it first."
        )
    info = found.manifest.get("table") or {}
    mode = (found.manifest.get("config") or {}).get("table_mode", "append")
    return {**found.manifest, "table": {**info, **described(table, found.version, mode, found.commit_id)}}


def staged_runs(table: Table) -> list[str]:
    """The staging folders (paths or URLs) of the jobs staged in the table, committed or not."""
    from .store import Output

    root = Output.open(table.staging_root())
    names = sorted(name for name in root.store.names() if not name.startswith((".", "_")))
    return [f"{table.staging_root()}/{name}" for name in names]


def finalize_table(table: Table) -> tuple[list[dict[str, Any]], list[str]]:
    """`batchscore finalize` of a table: each job staged in it is finalized as a folder output is (every chunk
    checked) and published in its one commit. Its manifests, and why the others were not (another job's shards
    still running, or a chunk missing: exit 5 naming the shards to rerun when no job could be finalized)."""
    from .finalize import finalize
    from .store import Output

    folders = staged_runs(table)
    if not folders and table.exists():  # a finalize run again (a retried task): its commit is in the table
        return [], []
    if not folders:
        raise OutputError(
            f"{table.format.capitalize()} table '{table.spec}' has no staged run to finalize; run every shard "
            f"(batchscore score ... --output-format {table.format} --num-shards K --shard-index I) first."
        )
    done, refused = [], []
    for folder in folders:
        staged = Output.open(folder)
        try:
            done.append(publish(table, staged, finalize(staged).manifest))
        except OutputError as exc:
            refused.append(exc)
    if not done:
        raise refused[0]
    return done, [f"Left a staged run as it is: {exc}" for exc in refused]


def drop_staging(staged: Output) -> None:
    """Remove a staging folder whose rows the table has (a kill came after the commit), once nobody writes it."""
    from .lease import open_lease

    if staged.store.exists(staged.layout.root):
        with open_lease(staged.layout, wait=True):
            _remove_staging(staged)


def _remove_staging(staged: Output) -> None:
    """The job's staging folder, then the folder of staging folders if no other job stages there (local disks;
    object stores have no empty folders)."""
    import os

    staged.store.remove(staged.layout.root)
    staged.store.remove(staged.layout.quarantine)  # published with the commit (_publish_quarantine)
    if staged.layout.local:
        try:
            os.rmdir(os.path.dirname(staged.layout.root))  # only ever removes an empty folder
        except OSError:
            pass


def _commit_once(
    table: Table, staged: Output, mode: str, key: str | None, cid: str, manifest: dict[str, Any]
) -> tuple[int, bool]:
    """Commit the staged rows unless the table has them; (version, whether they were in already)."""
    import time

    import pyarrow as pa

    kept = {k: v for k, v in manifest.items() if k != "chunk_times"}  # per-chunk detail: the report's, not the log's
    conflict = ""
    for attempt in range(COMMIT_TRIES):
        found = table.committed(cid)
        if found is not None:
            return found.version, True
        schema, batches = staged_rows(staged)
        table.check_schema(schema)
        try:
            table.commit(pa.RecordBatchReader.from_batches(schema, batches), mode, key, cid, kept)
        except CommitConflict as exc:
            conflict = str(exc)
            time.sleep(0.2 * 2**attempt)
            continue
        found = table.committed(cid)
        assert found is not None, "the commit just made carries its id"
        return found.version, False
    raise OutputError(
        f"{table.format.capitalize()} table '{table.spec}' kept changing under this run's commit ({conflict}); "
        "rerun when the other writers are done: the staged rows are kept and committed then."
    )


def described(table: Table, version: int, mode: str, cid: str) -> dict[str, Any]:
    """The manifest's "table": which table, which commit."""
    where = "version" if table.format == "delta" else "snapshot_id"
    return {"format": table.format, "table": table.spec, where: version, "mode": mode, "commit": cid}

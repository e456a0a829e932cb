"""The last step of a job: check that every chunk is committed, then write the manifest and _SUCCESS.

A whole-output run calls it when its own loop ends; a distributed run's rank 0
calls it once every rank has finished; independent shards leave it to
`batchscore finalize OUT`. In every case the truth is on disk: the input has
as many chunks as the shards' markers say, and each chunk is done when its part
exists and carries this run's hash. So any shard can be rerun alone, by any
launcher, and finalize needs nothing but the output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass

from .errors import OutputError
from .lock import OutputLock, shard_lock_name
from .sink import (
    CHUNK_KEY,
    MANIFEST,
    MANIFEST_KEY,
    MARKER,
    PART,
    SUCCESS,
    atomic_write_bytes,
    marker_name,
    part_name,
    parts_dir,
    read_manifest,
    read_part_stats,
    read_run_record,
    remove_temp_files,
    run_hash,
    sum_stats,
)

SHOWN = 20  # chunk numbers listed in an error before "..."


@dataclass
class Finalized:
    manifest: dict
    already_complete: bool = False


def is_complete(output: str) -> bool:
    if output.endswith(".parquet"):
        return os.path.isfile(output)
    return os.path.exists(os.path.join(output, SUCCESS))


def finalize(output: str) -> Finalized:
    """Check the output holds every chunk of one run; write its manifest and _SUCCESS (or merge the .parquet)."""
    if is_complete(output):
        return Finalized(read_manifest(output), already_complete=True)
    directory = parts_dir(output)
    if not os.path.isdir(directory):
        raise OutputError(f"Output '{output}' not found; run `batchscore score` (every shard of it) first.")
    lock = OutputLock(directory, output)
    lock.acquire()
    try:
        if is_complete(output):  # finished by another finalize while we waited for the lock
            return Finalized(read_manifest(output), already_complete=True)
        return Finalized(_finalize_locked(output, directory))
    finally:
        lock.release()


def wait_for_shards(output: str, num_shards: int, poll_seconds: float = 0.5) -> None:
    """Block until each of the shards has left its marker and released its lock."""
    directory = parts_dir(output)
    markers = {marker_name(i, num_shards) for i in range(num_shards)}
    locks = {shard_lock_name(i, num_shards) for i in range(num_shards)}
    while True:
        names = set(os.listdir(directory))
        if markers <= names and not locks & names:
            return
        time.sleep(poll_seconds)


def _read_markers(directory: str) -> list[dict]:
    markers = []
    for name in sorted(os.listdir(directory)):
        if MARKER.match(name):
            with open(os.path.join(directory, name)) as fh:
                markers.append(json.load(fh))
    return markers


def _listing(chunks: list[int]) -> str:
    shown = ", ".join(str(c) for c in chunks[:SHOWN])
    return shown + (", ..." if len(chunks) > SHOWN else "")


def _rerun_hint(chunks: list[int], markers: list[dict]) -> str:
    counts = {m["num_shards"] for m in markers}
    if len(counts) != 1 or counts == {1}:
        return "rerun the shards that own them"
    k = counts.pop()
    shards = sorted({c % k for c in chunks})
    flag = f"--shard-index {shards[0]}" if len(shards) == 1 else "--shard-index I for each"
    return f"rerun shard {_listing(shards)} of {k} (--num-shards {k} {flag})"


def _finalize_locked(output: str, directory: str) -> dict:
    remove_temp_files(directory)  # leftovers of killed shards; the lock keeps every writer out
    identity = read_run_record(directory)
    if identity is None:
        raise OutputError(f"Output '{output}' has no batchscore run record; it is not a batchscore output.")
    markers = _read_markers(directory)
    if not markers:
        raise OutputError(f"No shard of '{output}' has finished yet; run every shard "
                          "(batchscore score ... --num-shards K --shard-index I), then finalize.")
    sizes = sorted({m["num_chunks"] for m in markers})
    if len(sizes) > 1:
        raise OutputError(f"Shards of '{output}' saw inputs of different sizes ({' vs '.join(map(str, sizes))} "
                          "chunks): the input changed between shards; rerun every shard with --overwrite.")
    # An input with no rows still has one (empty) part, so readers get the schema.
    expected = max(sizes[0], 1)
    committed = sorted(int(m.group(1)) for m in map(PART.match, os.listdir(directory)) if m)
    stats = {index: read_part_stats(directory, index) for index in committed}
    run = run_hash(identity)
    foreign = [i for i in committed if stats[i].get("run") != run or i >= expected]
    if foreign:
        raise OutputError(f"Output '{output}' holds {len(foreign)} parts of another run (chunks {_listing(foreign)}); "
                          f"{_rerun_hint(foreign, markers)} with --overwrite, then finalize again.")
    missing = [i for i in range(expected) if i not in stats]
    if missing:
        raise OutputError(f"Output '{output}' is missing {len(missing)} of {expected} chunks "
                          f"({_listing(missing)}); {_rerun_hint(missing, markers)}, then finalize again.")

    schema = _output_schema(directory, committed[0])
    manifest = {**json.loads(schema.metadata[b"batchscore"]), **_combine(markers),
                **sum_stats([stats[i] for i in committed]), "run": identity}
    if output.endswith(".parquet"):
        _merge(output, directory, committed, schema, manifest)
    else:
        atomic_write_bytes(os.path.join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
        atomic_write_bytes(os.path.join(output, SUCCESS), b"")
        for name in os.listdir(directory):
            if MARKER.match(name):  # their content is in the manifest now
                os.remove(os.path.join(directory, name))
    return manifest


def _output_schema(directory: str, index: int):
    import pyarrow.parquet as pq

    schema = pq.read_schema(os.path.join(directory, part_name(index)))
    return schema.with_metadata({k: v for k, v in schema.metadata.items() if k != CHUNK_KEY})


def _combine(markers: list[dict]) -> dict:
    """One shard's run facts, or the facts of all shards together."""
    markers = sorted(markers, key=lambda m: (m["num_shards"], m["shard"]))
    facts = [{k: v for k, v in m.items() if k not in ("num_chunks", "run")} for m in markers]
    if len(facts) == 1:
        return {k: v for k, v in facts[0].items() if k not in ("shard", "num_shards")}
    firsts = [f["seconds_to_first_chunk"] for f in facts if f.get("seconds_to_first_chunk") is not None]
    return {
        "input": facts[0].get("input"),
        "input_files": facts[0].get("input_files"),
        "seconds": max(f.get("seconds", 0) for f in facts),  # the slowest shard's wall time
        "model_load_seconds": max(f.get("model_load_seconds", 0) for f in facts),
        "seconds_to_first_chunk": min(firsts) if firsts else None,
        "device": ", ".join(sorted({str(f.get("device")) for f in facts})),
        "resumed_chunks": sum(f.get("resumed_chunks", 0) for f in facts),
        "shards": facts,
    }


def _merge(output: str, directory: str, committed: list[int], schema, manifest: dict) -> None:
    import pyarrow.parquet as pq

    schema = schema.with_metadata({**schema.metadata, MANIFEST_KEY: json.dumps(manifest, sort_keys=True).encode()})
    tmp = os.path.join(os.path.dirname(os.path.abspath(output)), "." + os.path.basename(output) + ".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for index in committed:  # one part in memory at a time
            writer.write_table(pq.read_table(os.path.join(directory, part_name(index))).cast(schema))
    os.replace(tmp, output)
    shutil.rmtree(directory)

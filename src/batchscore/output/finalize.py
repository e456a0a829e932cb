"""The last step of a job: check that every chunk is committed, then write the manifest and _SUCCESS.

A whole-output run calls it when its own loop ends; a distributed run's rank 0
calls it once every rank has finished; independent shards leave it to
`batchscore finalize OUT`. In every case the truth is in the store: the input
has as many chunks as the shards' markers say, and each chunk is done when
its part exists, is readable and carries this run's hash. So any shard can be
rerun alone, by any launcher, and finalize needs nothing but the output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import OutputError
from ..plan import Shard
from .layout import MANIFEST, MANIFEST_KEY, RECORDS, SUCCESS, Layout, finished_record, part_name
from .lease import Lease, open_lease
from .manifest import (
    listed_parts,
    manifest_bytes,
    our_footer,
    output_schema,
    part_identity,
    part_stats,
    read_complete,
    sum_stats,
    tidy_complete,
    with_quantiles,
)
from .store import Output, Store

if TYPE_CHECKING:
    import pyarrow as pa

SHOWN = 20  # chunk numbers listed in an error before "..."


@dataclass
class Finalized:
    manifest: dict[str, Any]
    already_complete: bool = False
    warnings: list[str] = field(default_factory=list)


def finalize(output: str | Output, wait: bool = False, report: str | None = None) -> Finalized:
    """Check the output holds every chunk of one run; write its manifest and _SUCCESS (or merge the .parquet).

    `wait`: for rank 0 of a distributed run, wait for the other ranks to let go of the output. `report`: where
    the report page will be written (`score --report`), recorded in the manifest.
    """
    output = Output.of(output)
    layout, store = output.layout, output.store
    manifest = read_complete(layout, store)
    if manifest is not None:
        tidy_complete(layout, store)
        return Finalized(manifest, already_complete=True)
    if not store.exists(layout.root):
        raise OutputError(f"Output '{layout.url()}' not found; run `batchscore score` (every shard of it) first.")
    with open_lease(layout, wait=wait) as lease:
        manifest = read_complete(layout, store)
        if manifest is not None:  # finished by another finalize while we waited
            return Finalized(manifest, already_complete=True)
        return _finalize_held(layout, store, lease, report)


def wait_for_shards(output: Output, num_shards: int, poll_seconds: float = 0.5) -> None:
    """Block until each of the shards has left its marker (their leases are waited for by finalize)."""
    markers = {Shard(i, num_shards).marker_name for i in range(num_shards)}
    while not markers <= set(output.store.names(output.layout.path(RECORDS))):
        time.sleep(poll_seconds)


def _listing(chunks: list[int]) -> str:
    shown = ", ".join(str(c) for c in chunks[:SHOWN])
    return shown + (", ..." if len(chunks) > SHOWN else "")


def _rerun_hint(chunks: list[int], markers: list[dict[str, Any]]) -> str:
    counts = {m["num_shards"] for m in markers}  # checked: a whole number >= 1
    if len(counts) != 1 or counts == {1}:
        return "rerun the shards that own them"
    k = counts.pop()
    shards = sorted({Shard.owning(c, k).index for c in chunks})
    flag = f"--shard-index {shards[0]}" if len(shards) == 1 else "--shard-index I for each"
    return f"rerun shard {_listing(shards)} of {k} (--num-shards {k} {flag})"


# What a shard's marker must hold for finalize to judge it (the rest are run facts, see RUN_FACTS).
MARKER_FIELDS = {"shard": "count", "num_shards": "positive", "num_chunks": "count", "run": "text", "written": "time"}


def _markers(layout: Layout, store: Store) -> list[dict[str, Any]]:
    """The shards' markers, each checked: fields of the right kind, and the shard its name says."""
    markers: list[dict[str, Any]] = []
    for name in store.names(layout.path(RECORDS)):
        shard = Shard.from_marker(name)
        if shard is None:
            continue
        path = layout.record(name)
        marker = store.read_record(path, MARKER_FIELDS)
        if (marker["shard"], marker["num_shards"]) != (shard.index, shard.count):
            raise OutputError(
                f"Run record '{layout.url(path)}' is damaged: it says shard {marker['shard']} of "
                f"{marker['num_shards']}; if no batchscore run is writing this output, delete that "
                "file and rerun."
            )
        markers.append(marker)
    return markers


def _finalize_held(layout: Layout, store: Store, lease: Lease, report: str | None = None) -> Finalized:
    store.remove_temp_files()  # leftovers of killed shards; the lease keeps every writer out
    where = layout.url()
    markers = _markers(layout, store)
    if not markers:
        raise OutputError(
            f"No shard of '{where}' has finished yet; run every shard "
            "(batchscore score ... --num-shards K --shard-index I), then finalize."
        )
    sizes = sorted({m["num_chunks"] for m in markers})
    if len(sizes) > 1:
        raise OutputError(
            f"Shards of '{where}' saw inputs of different sizes ({' vs '.join(map(str, sizes))} "
            "chunks): the input changed between shards; rerun every shard with --overwrite."
        )
    # An input with no rows still has one (empty) part, so readers get the schema.
    expected = max(sizes[0], 1)
    run = max(markers, key=lambda m: m["written"])["run"]  # the latest shard's run is the reference
    warnings: list[str] = []
    footers: dict[int, dict[bytes, bytes] | None] = {}
    stats: dict[int, dict[str, Any]] = {}
    for index in listed_parts(store):
        path = layout.path(part_name(index))
        footer = our_footer(layout, store, path)  # someone else's file: exit 5, untouched
        part = part_stats(footer)
        if part is None:  # damaged (power loss): its shard must redo it
            warnings.append(f"{layout.url(path)} is unreadable (damaged); removed it.")
            store.remove(path)
        else:
            footers[index], stats[index] = footer, part
    foreign = [i for i, s in stats.items() if s.get("run") != run or i >= expected]
    if foreign:
        raise OutputError(
            f"Output '{where}' holds {len(foreign)} parts of another run (chunks {_listing(foreign)}); "
            f"{_rerun_hint(foreign, markers)} with --overwrite, then finalize again."
        )
    missing = [i for i in range(expected) if i not in footers]
    if missing:
        raise OutputError(
            f"Output '{where}' is missing {len(missing)} of {expected} chunks "
            f"({_listing(missing)}); {_rerun_hint(missing, markers)}, then finalize again."
        )

    committed = sorted(footers)
    first = layout.path(part_name(committed[0]))
    schema = output_schema(store, first)
    paths = [layout.path(part_name(i)) for i in committed]
    manifest = {
        **json.loads(schema.metadata[b"batchscore"]),
        **_combine(markers),
        **with_quantiles(sum_stats([stats[i] for i in committed]), store, paths),
        "run": part_identity(footers[committed[0]]),
        **({"report": report} if report else {}),
    }
    # Each commit asks the store whether the output is still ours: a finalize that stalled past its lease
    # writes nothing more.
    if layout.single_file:
        # The parts' footers go with the parts: the merged file keeps when and where each chunk was scored.
        manifest["chunk_times"] = chunk_times([(i, stats[i]) for i in committed])
        _merge(layout, store, committed, schema, manifest, lease)
    else:
        lease.commit(layout.path(MANIFEST), manifest_bytes(schema, manifest))
        lease.commit(layout.path(SUCCESS), b"")  # last: from here on the output is complete
        for name in store.names(layout.path(RECORDS)):
            if finished_record(name):  # their content is in the manifest now
                store.remove(layout.record(name))
    return Finalized(manifest, warnings=warnings)


def chunk_times(parts: list[tuple[int, dict[str, Any]]]) -> dict[str, list[Any]]:
    """Each chunk's `progress` footer entry (shard, seconds, finish time), as columns, for the report's time plot."""
    timed = [(i, s["progress"]) for i, s in parts if isinstance(s.get("progress"), dict)]
    return {
        "chunk": [i for i, _ in timed],
        "shard": [(p.get("shard") or [0, 1])[0] for _, p in timed],
        "seconds": [p.get("seconds") for _, p in timed],
        "finished": [p.get("finished") for _, p in timed],
    }


# The run facts a shard records in its marker (job.py), and how the manifest of a sharded output combines
# them; each shard's own facts are kept under "shards".
RUN_FACTS = {
    "input": "first",
    "input_files": "first",
    "seconds": "max",  # the slowest shard's wall time
    "startup_seconds": "max",
    "model_load_seconds": "max",
    "seconds_to_first_chunk": "min",
    "device": "join",
    "host": None,  # per shard only
    "resumed_chunks": "sum",
    "rows_read": "sum",
    "rows_checked": "sum",
    "threads": "max",  # per shard; each shard's is in "shards"
    "cache_write_failures": "sum",  # --cache: writes the cache refused (full, read-only), each a warning
}
_COMBINE: dict[str, Callable[[list[Any]], Any]] = {
    "first": lambda values: values[0],
    "max": max,
    "min": min,
    "sum": sum,
    "join": lambda values: ", ".join(sorted({str(v) for v in values})),
}


def _combine(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """One shard's run facts, or the facts of all shards together."""
    markers = sorted(markers, key=lambda m: (m["num_shards"], m["shard"]))
    facts = [{k: v for k, v in m.items() if k not in ("num_chunks", "run", "written")} for m in markers]
    if len(facts) == 1:
        return {k: v for k, v in facts[0].items() if k not in ("shard", "num_shards")}
    combined: dict[str, Any] = {}
    for name, how in RUN_FACTS.items():
        values = [f[name] for f in facts if f.get(name) is not None]
        if how in ("max", "min", "sum"):  # a hand-edited marker's text is left out, not a crash
            values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if how is not None:
            combined[name] = _COMBINE[how](values) if values else None
    return {**combined, "shards": facts}


def _merge(
    layout: Layout, store: Store, committed: list[int], schema: pa.Schema, manifest: dict[str, Any], lease: Lease
) -> None:
    """Stream the parts into the one file: renamed into place locally, uploaded once on object stores."""
    import pyarrow.parquet as pq

    target = layout.target
    assert target is not None, "merging is for the single-file form"

    schema = schema.with_metadata({**schema.metadata, MANIFEST_KEY: json.dumps(manifest, sort_keys=True)})

    def write(fh: BinaryIO) -> None:
        with pq.ParquetWriter(fh, schema) as writer:
            for index in committed:  # one part in memory at a time
                with store.fs.open(layout.path(part_name(index)), "rb") as part:
                    writer.write_table(pq.read_table(part).cast(schema))
        lease.check()  # the merged file appears when the stream closes: only if the output is still ours

    store.put_stream(target, write)
    store.remove(layout.root)

"""The manifest: the sum of what each part's footer says, stored where every reader skips it or reads 0 rows.

Folder form: `OUT/_manifest.parquet`, a 0-row Parquet file with the output's
schema and the manifest (JSON) in its footer under `batchscore.manifest`.
Single-file form: the same key in the merged file's footer. `batchscore
manifest OUT` prints it. A complete output whose manifest is lost or damaged
gets it rebuilt from the parts' footers, which carry the run's identity and
each chunk's counts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from ..errors import OutputError
from .layout import (
    CHUNK_KEY,
    MANIFEST,
    MANIFEST_KEY,
    MARKER,
    METADATA_KEY,
    RECORDS,
    RUN_KEY,
    SUCCESS,
    Layout,
    part_index,
    part_name,
)
from .store import Store

log = logging.getLogger(__name__)


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


def _load(footer: dict | None, key: bytes):
    try:
        return json.loads(footer[key])
    except (KeyError, TypeError, ValueError):
        return None


def part_stats(footer: dict | None) -> dict | None:
    return _load(footer, CHUNK_KEY)


def part_identity(footer: dict | None) -> dict | None:
    return _load(footer, RUN_KEY)


def is_ours(footer: dict | None) -> bool:
    """A Parquet file batchscore wrote: its footer carries our metadata."""
    return bool(footer) and (METADATA_KEY in footer or MANIFEST_KEY in footer)


def manifest_bytes(schema, manifest: dict) -> bytes:
    """A 0-row Parquet file with the output's schema, the manifest in its footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema.with_metadata({**_plain(schema.metadata), MANIFEST_KEY: json.dumps(manifest, sort_keys=True)})
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([], schema=schema), sink)
    return sink.getvalue().to_pybytes()


def _plain(metadata) -> dict:
    return {k: v for k, v in (metadata or {}).items() if k not in (CHUNK_KEY, MANIFEST_KEY)}


def output_schema(store: Store, path: str):
    """A part's schema without its own chunk counts: the output's schema."""
    schema = store.schema(path)
    return schema.with_metadata(_plain(schema.metadata))


def read_complete(layout: Layout, store: Store | None = None) -> dict | None:
    """The manifest of a complete output; None if the output is not complete.

    A lost or damaged manifest beside a `_SUCCESS` is rebuilt from the parts.
    """
    store = store or Store(layout)
    if layout.single_file:
        if not store.exists(layout.target):
            return None
        manifest = _load(store.footer(layout.target), MANIFEST_KEY)
        if manifest is None:
            raise OutputError(f"Output '{layout.url()}' exists but is not a batchscore output (or is damaged); "
                              "batchscore never replaces it, even with --overwrite: choose another --output.")
        return manifest
    if not store.exists(layout.path(SUCCESS)):
        return None
    manifest = _load(store.footer(layout.path(MANIFEST)), MANIFEST_KEY)
    return manifest if manifest is not None else rebuild(layout, store)


def rebuild(layout: Layout, store: Store) -> dict:
    """A complete output lost its manifest (a crash, a hand edit): sum the parts' footers again."""
    from .lease import open_lease

    indices = sorted(i for i in map(part_index, store.names()) if i is not None)
    footers = {i: store.footer(layout.path(part_name(i))) for i in indices}
    bad = [i for i, f in footers.items() if part_stats(f) is None]
    if not indices or bad:
        what = f"part {part_name(bad[0])} is unreadable" if bad else "it holds no parts"
        raise OutputError(f"Output '{layout.url()}' is marked complete but {what}; rerun with --overwrite.")
    runs = {part_stats(f).get("run") for f in footers.values()}
    if len(runs) > 1:
        raise OutputError(f"Output '{layout.url()}' is marked complete but holds parts of {len(runs)} runs; "
                          "rerun with --overwrite.")
    first = footers[indices[0]]
    manifest = {**(_load(first, METADATA_KEY) or {}), **sum_stats([part_stats(f) for f in footers.values()]),
                "run": part_identity(first), "rebuilt_from_parts": True}
    log.warning("Rebuilt the lost or damaged manifest of %s from its parts' footers.", layout.url())
    try:
        with open_lease(layout, "all"):
            store.put_bytes(layout.path(MANIFEST), manifest_bytes(output_schema(store, layout.path(part_name(0))),
                                                                  manifest))
    except OutputError:
        pass  # busy or read-only: the rebuilt manifest is still right, just not saved
    return manifest


def tidy_complete(layout: Layout, store: Store) -> None:
    """Remove records a crash left in a complete output (after _SUCCESS, before the clean-up), if nobody writes."""
    from .lease import open_lease

    if layout.single_file:
        leftovers = store.exists(layout.root)
    else:
        leftovers = any(n.endswith(".json") for n in store.names(layout.path(RECORDS)))  # markers, stale leases
    if not leftovers:
        return
    try:
        with open_lease(layout, "all"):
            if layout.single_file:
                store.remove(layout.root)
            else:
                for name in store.names(layout.path(RECORDS)):
                    if MARKER.match(name):
                        store.remove(layout.record(name))
    except OutputError:
        pass


def read_manifest(spec: str) -> dict:
    """The manifest of a complete output at `spec` (a path or URL)."""
    layout = Layout.open(spec)
    manifest = read_complete(layout)
    if manifest is None:
        raise OutputError(f"Output '{spec}' is not complete (no _SUCCESS); run or finalize it first.")
    return manifest

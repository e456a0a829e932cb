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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import OutputError
from .layout import (
    CHUNK_KEY,
    MANIFEST,
    MANIFEST_KEY,
    METADATA_KEY,
    RECORDS,
    RUN_KEY,
    SUCCESS,
    Layout,
    finished_record,
    part_index,
    part_name,
)
from .store import Store, open_layout

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

CACHE_COUNTS = ("rows_from_cache", "rows_scored", "distinct_texts_scored", "cache_files_skipped")


def sum_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts' counts added up; a regression head's `value_summary` gets its quantiles from `with_quantiles`."""
    totals: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    listed: Counter[str] = Counter()
    for s in stats:
        labels.update(s.get("label_counts", {}))
        listed.update(s.get("labels_counts", {}))
        totals.update({k: v for k, v in s.items() if isinstance(v, int)})
    head: dict[str, Any] = {}
    if any("labels_counts" in s for s in stats):  # a multi-label head: every label over the threshold
        head["labels_counts"] = dict(sorted(listed.items()))
    values = [s["values"] for s in stats if isinstance(s.get("values"), dict)]
    if values:  # a regression head
        head["value_summary"] = _value_summary(values)
    return {
        "rows": totals["rows"],
        "scored_rows": totals["rows"] - totals["empty_text_rows"] - totals["bad_rows_kept"],
        "empty_text_rows": totals["empty_text_rows"],
        "truncated_rows": totals["truncated_rows"],
        "truncated_tokens": totals["truncated_tokens"],
        "windows": totals["windows"],
        "windowed_rows": totals["windowed_rows"],
        "chunks": len(stats),
        "label_counts": dict(sorted(labels.items())),
        "real_tokens": totals["real_tokens"],
        "padded_tokens": totals["padded_tokens"],
        # Tokenization passes over the chunks: one a chunk per distinct tokenizer of the run's models.
        **({"tokenizations": totals["tokenizations"]} if any("tokenizations" in s for s in stats) else {}),
        # --cache: where the rows' results came from, and the damaged cache files skipped.
        **{k: totals[k] for k in CACHE_COUNTS if any(k in s for s in stats)},
        **head,
        **_models(stats),
        **_bad_rows(stats, totals),
    }


def _bad_rows(stats: list[dict[str, Any]], totals: Counter[str]) -> dict[str, Any]:
    """--on-bad-row quarantine: the bad records by kind; every record read is an output row or one of them."""
    if not any("bad_rows" in s for s in stats):
        return {}
    kinds: Counter[str] = Counter()
    for s in stats:
        kinds.update(s.get("bad_row_kinds", {}))
    return {
        "records": totals["records"],  # rows + quarantined_rows
        "bad_rows": totals["bad_rows"],
        "bad_row_kinds": dict(sorted(kinds.items())),
        "quarantined_rows": totals["bad_rows"] - totals["bad_rows_kept"],  # bad records without an output row
        "error_rows": totals["bad_rows_kept"],  # output rows with null results and an `error`
    }


def _models(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """A run of several models: each model's counts over the parts (its footers' `models` entries, in order)."""
    listed = [s["models"] for s in stats if isinstance(s.get("models"), list)]
    if not listed:
        return {}
    models = []
    for number, first in enumerate(listed[0]):
        mine = [entries[number] for entries in listed if number < len(entries)]
        summed = sum_stats([{**m, "rows": 0, "empty_text_rows": 0} for m in mine])
        for shared in ("rows", "scored_rows", "empty_text_rows", "chunks"):
            summed.pop(shared)
        models.append(
            {
                "model": first.get("model"),
                "prefix": first.get("prefix"),
                "tokens_from": first.get("tokens_from"),
                "seconds": round(sum(m.get("seconds", 0.0) for m in mine), 3),
                **summed,
            }
        )
    return {"models": models}


def _value_summary(values: list[dict[str, Any]]) -> dict[str, Any]:
    """Count, min, max and mean of a regression head's values over parts, from each part's exact count, min, max
    and sum (added with math.fsum: one rounding, whatever the number of parts)."""
    import math

    count = sum(v["count"] for v in values)
    found = [v for v in values if v["count"]]
    return {
        "column": values[0]["column"],
        "count": count,
        "min": min(v["min"] for v in found) if found else None,
        "max": max(v["max"] for v in found) if found else None,
        "mean": math.fsum(v["sum"] for v in found) / count if count else None,
    }


# The quantiles a regression head's value_summary holds, by name.
QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}


def with_quantiles(summed: dict[str, Any], store: Store, paths: list[str]) -> dict[str, Any]:
    """`summed` (sum_stats of the parts at `paths`) with a regression head's quantiles, which no sum of per-part
    numbers gives: exact, numpy's (linear interpolation) over the parts' score column, read alone, every value
    in memory at once as float32 (4 bytes a row)."""
    import numpy as np
    import pyarrow.parquet as pq

    if "models" in summed:  # several models: each regression head's own
        summed = {**summed, "models": [with_quantiles(m, store, paths) for m in summed["models"]]}
    summary = summed.get("value_summary")
    if summary is None:
        return summed
    values = np.empty(summary["count"], dtype=np.float32)
    filled = 0
    for path in paths:
        with store.fs.open(path, "rb") as fh:
            column = pq.read_table(fh, columns=[summary["column"]]).column(0).drop_null().to_numpy()
        assert filled + len(column) <= len(values), "each part's footer counts the values its score column holds"
        values[filled : filled + len(column)] = column
        filled += len(column)
    values = values[:filled]
    found = np.quantile(values, list(QUANTILES.values()), overwrite_input=True) if filled else [None] * len(QUANTILES)
    quantiles = {name: None if q is None else float(q) for name, q in zip(QUANTILES, found)}
    return {**summed, "value_summary": {**summary, "quantiles": quantiles}}


def _load(footer: Mapping[bytes, bytes] | None, key: bytes) -> Any:
    """The JSON under `key` in a footer; None if it is missing or not JSON."""
    if footer is None:
        return None
    try:
        return json.loads(footer[key])
    except (KeyError, TypeError, ValueError):
        return None


def part_stats(footer: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    return _load(footer, CHUNK_KEY)


def part_identity(footer: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    return _load(footer, RUN_KEY)


def is_ours(footer: Mapping[bytes, bytes] | None) -> bool:
    """A Parquet file batchscore wrote: its footer carries our metadata."""
    return footer is not None and (METADATA_KEY in footer or MANIFEST_KEY in footer)


PARQUET_MAGIC = b"PAR1"


def our_footer(layout: Layout, store: Store, path: str) -> dict[bytes, bytes] | None:
    """The footer of a file named like one of ours (a part, the manifest) that batchscore wrote; None if it is
    damaged the way an interrupted commit can leave one (0 bytes, or Parquet's magic but unreadable: a power
    loss before the data reached the disk), to be redone. Anything else is someone else's file: exit 5 naming
    it, and it is never removed or replaced."""
    footer = store.footer(path)
    if is_ours(footer):
        return footer
    if footer is None:
        head = store.head(path, len(PARQUET_MAGIC))
        if head == PARQUET_MAGIC or PARQUET_MAGIC.startswith(head):  # b"" included: 0 bytes
            return None
        what = "it is not a Parquet file"
    else:
        what = "a Parquet file without batchscore's metadata"
    raise OutputError(
        f"'{layout.url(path)}' was not written by batchscore ({what}); it is never removed or "
        "replaced, even with --overwrite: move it, or choose another --output."
    )


def listed_parts(store: Store) -> list[int]:
    """Chunk numbers of the part files in the parts folder, in order, unchecked."""
    return sorted(i for i in map(part_index, store.names()) if i is not None)


def manifest_bytes(schema: pa.Schema, manifest: dict[str, Any]) -> bytes:
    """A 0-row Parquet file with the output's schema, the manifest in its footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema.with_metadata({**_plain(schema.metadata), MANIFEST_KEY: json.dumps(manifest, sort_keys=True)})
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([], schema=schema), sink)
    return sink.getvalue().to_pybytes()


def _plain(metadata: Mapping[bytes, bytes] | None) -> dict[bytes, bytes]:
    return {k: v for k, v in (metadata or {}).items() if k not in (CHUNK_KEY, MANIFEST_KEY)}


def output_schema(store: Store, path: str) -> pa.Schema:
    """A part's schema without its own chunk counts: the output's schema."""
    schema = store.schema(path)
    return schema.with_metadata(_plain(schema.metadata))


def read_complete(layout: Layout, store: Store | None = None) -> dict[str, Any] | None:
    """The manifest of a complete output; None if the output is not complete.

    Complete means a part exists for every chunk the run expects: the manifest, written only once every
    chunk was committed, says how many; parts lost since then make the output incomplete again (a rerun of
    the same command redoes them). A lost or damaged manifest beside a `_SUCCESS` is rebuilt from the parts,
    if they prove the output complete (see `rebuild`).
    """
    store = store or Store(layout)
    if layout.target is not None:  # the single-file form
        if not store.exists(layout.target):
            return None
        manifest = _load(store.footer(layout.target), MANIFEST_KEY)
        if manifest is None:
            raise OutputError(
                f"Output '{layout.url()}' exists but is not a batchscore output (or is damaged); "
                "batchscore never replaces it, even with --overwrite: choose another --output."
            )
        return manifest
    if not store.exists(layout.path(SUCCESS)):
        return None
    footer = store.footer(layout.path(MANIFEST))
    manifest = _load(footer, MANIFEST_KEY) if is_ours(footer) else None
    if not isinstance(manifest, dict) or not _count(manifest.get("chunks")):
        return rebuild(layout, store)
    return manifest if listed_parts(store) == list(range(manifest["chunks"])) else None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def proves_complete(identity: dict[str, Any] | None, rows: list[Any]) -> bool:
    """Do parts 0..n-1 of one run, holding `rows` rows each, prove that no chunk after them exists?

    Every part but the last holds chunk_rows rows (from the run's identity), and the last one is short (the
    input ended inside it), or the parts hold exactly the run's --limit rows, or the only part is an empty
    part 0 (an input without rows). A full last part proves nothing: the input may go on.
    """
    chunk_rows = (identity or {}).get("chunk_rows")
    limit = (identity or {}).get("limit")
    if not rows or not _count(chunk_rows) or not chunk_rows or not all(map(_count, rows)):
        return False
    if any(r != chunk_rows for r in rows[:-1]) or rows[-1] > chunk_rows:
        return False
    if rows == [0]:
        return True
    if rows[-1] == 0:
        return False
    return rows[-1] < chunk_rows or (_count(limit) and sum(rows) == limit)


def rebuild(layout: Layout, store: Store) -> dict[str, Any] | None:
    """A complete output lost its manifest (a crash, a hand edit): sum the parts' footers again.

    Only if the parts prove the output complete (`proves_complete`): otherwise None, not complete, and a rerun
    of the same command scores what is missing and writes the manifest.
    """
    from .lease import open_lease

    indices = listed_parts(store)
    if indices != list(range(len(indices))):
        return None
    footers = {i: our_footer(layout, store, layout.path(part_name(i))) for i in indices}
    parsed = [part_stats(footers[i]) for i in indices]
    stats = [s for s in parsed if s is not None]
    if not indices or len(stats) < len(parsed) or len({s.get("run") for s in stats}) != 1:
        return None
    first = footers[indices[0]]
    if not proves_complete(part_identity(first), [s.get("records", s.get("rows")) for s in stats]):
        return None
    manifest = {
        **(_load(first, METADATA_KEY) or {}),
        **with_quantiles(sum_stats(stats), store, [layout.path(part_name(i)) for i in indices]),
        "run": part_identity(first),
        "rebuilt_from_parts": True,
    }
    log.warning("Rebuilt the lost or damaged manifest of %s from its parts' footers.", layout.url())
    try:
        with open_lease(layout) as lease:
            lease.commit(
                layout.path(MANIFEST), manifest_bytes(output_schema(store, layout.path(part_name(0))), manifest)
            )
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
        with open_lease(layout):
            if layout.single_file:
                store.remove(layout.root)
            else:
                for name in store.names(layout.path(RECORDS)):
                    if finished_record(name):
                        store.remove(layout.record(name))
    except OutputError:
        pass


def read_manifest(spec: str) -> dict[str, Any]:
    """The manifest of a complete output at `spec` (a path or URL)."""
    layout = open_layout(spec)
    manifest = read_complete(layout)
    if manifest is None:
        raise OutputError(f"Output '{spec}' is not complete (no _SUCCESS, or parts missing); run or finalize it first.")
    return manifest

"""What an output holds, read without writing anything: for `batchscore status` and `batchscore report`.

Unlike `read_complete` (which rebuilds a lost manifest, and so writes), a
survey only lists and reads: the parts and their footers, the shards'
markers, the manifest, the lease records or the kernel locks' holders. It
works on a complete output, on one a run is writing now, and on one a killed
run left behind, on any store.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import OutputError
from ..plan import Shard
from .layout import MANIFEST, MANIFEST_KEY, METADATA_KEY, RECORDS, SUCCESS, Layout, part_name
from .lease import holders
from .manifest import _load, is_ours, listed_parts, our_footer, part_identity, part_stats
from .store import Store, open_layout


@dataclass
class Part:
    """One committed part of the survey's run: its chunk number, where it is, its footer's counts."""

    index: int
    path: str
    stats: dict[str, Any]

    @property
    def rows(self) -> int:
        rows = self.stats.get("rows")
        return rows if isinstance(rows, int) else 0

    @property
    def progress(self) -> dict[str, Any]:
        """Where and when the chunk was scored (footers written before batchscore recorded it: {})."""
        found = self.stats.get("progress")
        return found if isinstance(found, dict) else {}

    @property
    def shard(self) -> tuple[int, int] | None:
        shard = self.progress.get("shard")
        return (shard[0], shard[1]) if isinstance(shard, list) and len(shard) == 2 else None


@dataclass
class Survey:
    layout: Layout
    store: Store
    complete: bool  # _SUCCESS (or the merged file) and every chunk the manifest counts
    manifest: dict[str, Any] | None  # a complete output's, else None
    metadata: dict[str, Any]  # the run's: model, revision, config (from the manifest or a part's footer)
    identity: dict[str, Any] | None  # the run's identity (what makes two runs the same)
    parts: list[Part] = field(default_factory=list)  # readable parts of the run, in chunk order
    damaged: list[int] = field(default_factory=list)  # part files that cannot be read (a rerun redoes them)
    other_runs: list[int] = field(default_factory=list)  # parts left by a run with other settings
    foreign: list[str] = field(default_factory=list)  # files batchscore did not write
    markers: list[dict[str, Any]] = field(default_factory=list)  # shards that have committed all their chunks
    holders: list[dict[str, Any]] = field(default_factory=list)  # writers holding the output now
    notes: list[str] = field(default_factory=list)  # what a reader of the survey should know (a lost manifest)

    @property
    def data_files(self) -> list[str]:
        """What holds the rows, in order: the merged file of a complete single-file output, else the parts."""
        if self.complete and self.layout.single_file:
            assert self.layout.target is not None
            return [self.layout.target]
        return [p.path for p in self.parts]

    @property
    def config(self) -> dict[str, Any]:
        config = self.metadata.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def num_chunks(self) -> int | None:
        """The run's number of chunks: known once complete, once a shard finished, or from the plan in a part's
        footer when the input's size was known before reading; else None."""
        if self.manifest is not None and isinstance(self.manifest.get("chunks"), int):
            return self.manifest["chunks"]
        for marker in self.markers:
            if isinstance(marker.get("num_chunks"), int):
                return max(marker["num_chunks"], 1)
        for part in self.parts:
            planned = part.progress.get("input_chunks")
            if isinstance(planned, int):
                return max(planned, 1)
        return None


def survey(spec: str, *, with_holders: bool = True) -> Survey:
    """Read what the output at `spec` holds. Missing, or not a batchscore output: OutputError (exit 5)."""
    layout = open_layout(spec)
    store = Store(layout)
    if layout.single_file:
        assert layout.target is not None
        if store.exists(layout.target):
            return _merged(layout, store)
    if not store.exists(layout.root):
        raise OutputError(f"Output '{spec}' not found; pass the --output of a batchscore run.")
    if not layout.single_file and not store.isdir(layout.root):
        raise OutputError(f"Output '{spec}' is a file, not a batchscore output; pass an output folder or .parquet.")
    names = store.names()
    found = Survey(layout, store, complete=False, manifest=None, metadata={}, identity=None)
    found.foreign = [n for n in names if not _ours(n)]
    indices = listed_parts(store)
    readable: dict[int, tuple[dict[str, Any], dict[bytes, bytes]]] = {}
    for index in indices:
        path = layout.path(part_name(index))
        try:
            footer = our_footer(layout, store, path)
        except OutputError:  # a file named like a part that batchscore did not write
            found.foreign.append(part_name(index))
            continue
        stats = part_stats(footer)
        if stats is None or footer is None:
            found.damaged.append(index)
        else:
            readable[index] = (stats, footer)
    if not indices and not set(names) & {SUCCESS, MANIFEST, RECORDS}:
        what = f"holds files batchscore did not write (e.g. {found.foreign[0]})" if found.foreign else "is empty"
        raise OutputError(f"Output '{spec}' is not a batchscore output: it {what}.")
    manifest = _manifest(layout, store) if SUCCESS in names else None
    found.markers = _markers(layout, store)
    # The run whose parts count: the manifest's, else the newest marker's, else the one most parts carry.
    runs = Counter(stats.get("run") for stats, _ in readable.values())
    run = None
    if manifest is not None:
        first = min(readable) if readable else None
        run = readable[first][0].get("run") if first is not None else None
    elif found.markers:
        run = max(found.markers, key=lambda m: m.get("written", 0)).get("run")
    elif runs:
        run = runs.most_common(1)[0][0]
    for index in sorted(readable):
        stats, footer = readable[index]
        if stats.get("run") == run:
            found.parts.append(Part(index, layout.path(part_name(index)), stats))
            if not found.metadata:
                found.metadata = _load(footer, METADATA_KEY) or {}
                found.identity = part_identity(footer)
        else:
            found.other_runs.append(index)
    if manifest is not None:
        chunks = manifest.get("chunks")
        if isinstance(chunks, int) and [p.index for p in found.parts] == list(range(chunks)):
            found.complete, found.manifest = True, manifest
            found.metadata = {k: v for k, v in manifest.items() if k in ("batchscore_version", "model", "revision")}
            found.metadata |= {k: manifest[k] for k in ("config", "models") if k in manifest}
            found.identity = manifest.get("run") if isinstance(manifest.get("run"), dict) else found.identity
        else:
            found.notes.append("_SUCCESS is there but parts are missing: a rerun of the same command redoes them.")
    elif SUCCESS in names:
        found.notes.append("_SUCCESS is there but the manifest is lost: a rerun of the same command rebuilds it.")
    if with_holders and not found.complete:
        found.holders = holders(layout)
    return found


def _ours(name: str) -> bool:
    from .layout import part_index

    return part_index(name) is not None or name in (SUCCESS, MANIFEST, RECORDS) or name.startswith(".")


def _manifest(layout: Layout, store: Store) -> dict[str, Any] | None:
    footer = store.footer(layout.path(MANIFEST))
    manifest = _load(footer, MANIFEST_KEY) if is_ours(footer) else None
    return manifest if isinstance(manifest, dict) else None


def _markers(layout: Layout, store: Store) -> list[dict[str, Any]]:
    """The shards' markers, as written (a damaged one is skipped here: finalize names it)."""
    markers = []
    for name in store.names(layout.path(RECORDS)):
        shard = Shard.from_marker(name)
        if shard is None:
            continue
        try:
            marker = json.loads(store.read_bytes(layout.record(name)))
        except (ValueError, OutputError):
            continue
        if isinstance(marker, dict):
            markers.append({**marker, "shard": shard.index, "num_shards": shard.count})
    return markers


def _merged(layout: Layout, store: Store) -> Survey:
    """A complete single-file output: one merged file, its manifest in the footer."""
    assert layout.target is not None
    footer = store.footer(layout.target)
    manifest = _load(footer, MANIFEST_KEY)
    if not isinstance(manifest, dict):
        raise OutputError(f"Output '{layout.spec}' is not a batchscore output (no manifest in its footer).")
    metadata = {
        k: manifest[k] for k in ("batchscore_version", "model", "revision", "config", "models") if k in manifest
    }
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else None
    return Survey(layout, store, complete=True, manifest=manifest, metadata=metadata, identity=run)

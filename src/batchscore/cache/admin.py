"""`batchscore cache compact | info | prune`: looking after a result cache, never losing an entry.

Compaction merges an identity's files into files that each hold one range of h1 (the 64-bit space is cut into
equal ranges; consecutive ranges fill a file of at most FILE_ENTRIES entries), sorted, each key once. It writes
every merged file first and removes the files it merged only then, so a SIGKILL at any moment leaves each entry in
some readable file (at worst twice, which readers accept). Memory holds one file's entries and one range's: from
each old file only the row groups whose h1 range overlaps the range.

Only what carries batchscore's marks is ever removed or rewritten: `ours.py` says what does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, OutputError
from .files import FILE_NAME, CacheFile, DamagedFile, read_groups
from .keys import unique_keys
from .ours import (
    open_cache,
    plain_file,
    read_ours,
    remove_stale_temps,
    stale_temp_of_ours,
    temp_name_of_ours,
    unknown_identities,
    warn_leftovers,
    warn_strangers,
)
from .store import IDENTITY_RECORD, ResultCache
from .store_errors import cache_errors

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

FILE_ENTRIES = 4 << 20  # entries a merged file holds, about: ~100 MB of keys and two-label scores
COLUMNS = ["h1", "h2", "scores", "windows", "truncated"]
SPACE = 1 << 64
SLICES = 4  # ranges of the key space read at a time, per file's worth of entries


@dataclass
class Compacted:
    """What `compact` did, over every identity it looked at."""

    identities: int = 0
    files_before: int = 0  # readable files merged or kept
    files_after: int = 0
    entries_before: int = 0  # the footers' rows (duplicates included)
    entries_after: int = 0
    duplicates_dropped: int = 0
    damaged_removed: list[str] = field(default_factory=list)  # files whose footer proves them ours, unreadable
    foreign_left: list[str] = field(default_factory=list)  # files named like ours without that proof: untouched
    temp_removed: int = 0
    stopped: list[str] = field(default_factory=list)  # identities left alone: another compaction took a file
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IdentityFacts:
    """One identity folder, as `info` shows it."""

    key: str
    record: dict[str, Any] | None  # identity.json: the identity, the model as named, ...
    files: int = 0
    entries: int = 0  # the footers' rows: a key held by two files (before compaction) counts twice
    bytes: int = 0
    damaged: list[str] = field(default_factory=list)  # ours by their footer, unreadable: compact removes them
    foreign: list[str] = field(default_factory=list)  # not proven ours: never removed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pruned:
    """What `prune` removed, and what it left because batchscore did not write it."""

    kept: list[str]
    removed: list[str] = field(default_factory=list)  # identities
    files_removed: int = 0
    bytes_removed: int = 0
    foreign_left: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- compact ---------------------------------------------------------------------------------------------------


def compact(url: str, identity: str | None = None, file_entries: int = FILE_ENTRIES) -> Compacted:
    """Merge each identity's files (or only `identity`'s) into sorted files of disjoint h1 ranges, each key once;
    remove damaged files of ours and stale temp files."""
    started = time.monotonic()
    with cache_errors():
        cache, keys, strangers = open_cache(url)
        if identity is not None:
            if identity not in keys:
                raise ConfigError(unknown_identities(url, [identity], keys))
            keys = [identity]
        else:
            warn_strangers(strangers)
        result = Compacted()
        for key in keys:
            result.identities += 1
            result.temp_removed += remove_stale_temps(cache, key)
            _compact_identity(cache, key, file_entries, result)
    warn_leftovers("merged or removed", result.foreign_left)
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _compact_identity(cache: ResultCache, key: str, file_entries: int, result: Compacted) -> None:
    files: list[CacheFile] = []
    damaged: list[str] = []
    for path in cache.files(key):
        read = read_ours(cache, key, path)
        if read is None:  # another compaction merged it meanwhile: leave this identity to that one
            result.stopped.append(key)
            return
        if isinstance(read, CacheFile):
            files.append(read)
        elif read.ours:
            log.debug("Damaged cache file %s: %s", path, read)
            damaged.append(path)
        else:  # not proven this identity's: neither merged (that would relabel its entries) nor removed
            log.debug("Not ours to touch: %s: %s", path, read)
            result.foreign_left.append(cache.layout.url(path))
    total = sum(f.rows for f in files)
    result.files_before += len(files)
    result.entries_before += total
    if _already_compact(files, file_entries):
        result.files_after += len(files)
        result.entries_after += total
        _remove_damaged(cache, damaged, result)
        return
    # The footers' rows count duplicates, so the merged count is not known before: the key space is cut into
    # ranges a quarter of a file's worth (at most), and consecutive ranges fill one file until the next would
    # overflow it. Memory: at most one file's entries and one range's.
    ranges = max(1, -(-total * SLICES // file_entries))
    held: list[tuple[np.ndarray, ...]] = []
    written: list[str] = []
    merged_rows: list[int] = []
    labels = ((cache.identity_record(key) or {}).get("identity") or {}).get("labels")
    width: int | None = len(labels) if isinstance(labels, list) and labels else None

    def commit() -> None:
        keys, scores, windows, truncated = (np.concatenate(column) for column in zip(*held))
        written.append(cache.add_file(key, keys, scores, windows, truncated))
        merged_rows.append(len(keys))
        held.clear()

    # Row groups read for one range that reach into the next ones, per file: each row group is read once. They are
    # no more than the range's own row groups, so memory stays one range's.
    kept: dict[str, dict[int, pa.Table]] = {}
    for index in range(ranges):
        low, high = index * SPACE // ranges, (index + 1) * SPACE // ranges - 1
        parts: list[pa.Table] = []
        for file in list(files):
            groups = np.flatnonzero((file.low <= np.uint64(high)) & (file.high >= np.uint64(low))).tolist()
            if not groups:
                continue
            try:
                tables = _row_groups(cache, file, groups, kept.get(file.path, {}))
            except FileNotFoundError:  # taken by another compaction: what this one wrote stays, a duplicate
                result.stopped.append(key)
                result.files_after += len(written)
                result.entries_after += sum(merged_rows)
                return
            except DamagedFile as exc:  # its footer read but its data does not: readers skip it whole too
                log.debug("Damaged cache file %s: %s", file.path, exc)
                files.remove(file)
                damaged.append(file.path)
                continue
            size = tables[0].schema.field("scores").type.list_size
            width = size if width is None else width
            if size != width:  # not this identity's labels: not a file a writer of this folder made
                files.remove(file)
                damaged.append(file.path)
                kept.pop(file.path, None)
                continue
            kept[file.path] = {g: t for g, t in zip(groups, tables) if int(file.high[g]) > high}
            parts.extend(tables)
        merged = _merge(parts, low, high, width or 0)
        if merged is None:
            continue
        if held and sum(len(h[0]) for h in held) + len(merged[0]) > file_entries:
            commit()
        held.append(merged)
    if held:
        commit()
    # Every merged file is committed: only now may the files they came from go.
    for file in files:
        cache.store.remove(file.path)
    result.files_after += len(written)
    result.entries_after += sum(merged_rows)
    result.duplicates_dropped += max(0, sum(f.rows for f in files) - sum(merged_rows))
    _remove_damaged(cache, damaged, result)


def _row_groups(cache: ResultCache, file: CacheFile, groups: list[int], held: dict[int, pa.Table]) -> list[pa.Table]:
    """The given row groups of a file, one table each: those in `held` as they are, the others read."""
    need = [g for g in groups if g not in held]
    if need:
        table = read_groups(cache.store, file.path, need, COLUMNS)
        if table.column_names != COLUMNS:  # pyarrow leaves a missing column out
            raise DamagedFile(f"columns {', '.join(table.column_names)}, not {', '.join(COLUMNS)}")
        ends = np.append(file.starts[1:], file.rows)
        offset = 0
        held = dict(held)
        for g in need:
            rows = int(ends[g] - file.starts[g])
            held[g] = table.slice(offset, rows)
            offset += rows
        if offset != table.num_rows:
            raise DamagedFile("row groups of other sizes than its footer says")
    return [held[g] for g in groups]


def _already_compact(files: list[CacheFile], file_entries: int) -> bool:
    """One file, or files of disjoint h1 ranges none of which two neighbours could share: nothing to gain."""
    if len(files) <= 1:
        return True
    if any(f.rows == 0 for f in files):
        return False
    spans = sorted((int(f.low[0]), int(f.high[-1]), f.rows) for f in files)
    return all(a[1] < b[0] and a[2] + b[2] > file_entries for a, b in zip(spans, spans[1:]))


def _merge(parts: list[pa.Table], low: int, high: int, width: int) -> tuple[np.ndarray, ...] | None:
    """The entries of `parts` with h1 in [low, high], each key once (the first file's)."""
    if not parts:
        return None
    h1 = np.concatenate([t.column("h1").to_numpy() for t in parts])
    h2 = np.concatenate([t.column("h2").to_numpy() for t in parts])
    inside = (h1 >= np.uint64(low)) & (h1 <= np.uint64(high))
    if not inside.any():
        return None
    scores = np.concatenate(
        [t.column("scores").combine_chunks().flatten().to_numpy().reshape(-1, width) for t in parts]
    )
    windows = np.concatenate([t.column("windows").to_numpy() for t in parts])
    truncated = np.concatenate([t.column("truncated").to_numpy() for t in parts])
    keys = np.stack([h1[inside], h2[inside]], axis=1)
    _, first, _ = unique_keys(keys)
    return keys[first], scores[inside][first], windows[inside][first], truncated[inside][first]


def _remove_damaged(cache: ResultCache, damaged: list[str], result: Compacted) -> None:
    for path in damaged:
        if plain_file(cache, path):
            cache.store.remove(path)
            result.damaged_removed.append(cache.layout.url(path))


# --- info ------------------------------------------------------------------------------------------------------


def info(url: str) -> list[IdentityFacts]:
    """Each identity folder: identity.json's record, its files, entries (footer rows) and bytes."""
    with cache_errors():
        cache, keys, strangers = open_cache(url)
        warn_strangers(strangers)
        facts = []
        for key in keys:
            found = IdentityFacts(key, cache.identity_record(key))
            folder = cache.folder(key)
            for name in cache.store.names(folder):
                path = f"{folder}/{name}"
                if FILE_NAME.match(name):
                    read = read_ours(cache, key, path)
                    if read is None:  # compacted away since the listing
                        continue
                    if isinstance(read, DamagedFile):
                        (found.damaged if read.ours else found.foreign).append(cache.layout.url(path))
                        continue
                    found.files += 1
                    found.entries += read.rows
                    with contextlib.suppress(OutputError):
                        found.bytes += cache.store.size(path)
                elif name != IDENTITY_RECORD and not temp_name_of_ours(name):
                    found.foreign.append(cache.layout.url(path))
            facts.append(found)
    return facts


# --- prune -----------------------------------------------------------------------------------------------------


def prune(url: str, keep: list[str]) -> Pruned:
    """Remove every identity folder not in `keep`: only the files batchscore wrote there (cache files whose footer
    proves them that identity's, identity.json last, stale temp files), then the folder when empty, locally; any
    other file stays where it is and is reported."""
    if not keep:
        raise ConfigError(
            f"Pass at least one --keep-identity KEY: prune removes every identity of '{url}' that is not kept "
            f"(`batchscore cache info {url}` lists them)."
        )
    with cache_errors():
        cache, keys, strangers = open_cache(url)
        unknown = [k for k in keep if k not in keys]
        if unknown:
            raise ConfigError(unknown_identities(url, unknown, keys))
        warn_strangers(strangers)
        result = Pruned(kept=sorted(set(keep)))
        for key in keys:
            if key in keep:
                continue
            folder = cache.folder(key)
            foreign = []
            names = cache.store.names(folder)
            # identity.json last: a prune stopped half-way leaves a folder the next prune still knows as ours.
            for name in sorted(names, key=lambda n: n == IDENTITY_RECORD):
                path = f"{folder}/{name}"
                if FILE_NAME.match(name):
                    read = read_ours(cache, key, path)
                    if read is None:  # gone meanwhile (another prune or a compaction)
                        continue
                    ours = isinstance(read, CacheFile) or read.ours
                elif name == IDENTITY_RECORD:
                    ours = plain_file(cache, path)
                elif temp_name_of_ours(name):
                    if not cache.layout.local or not stale_temp_of_ours(path):
                        continue  # a writer's file in flight: not removed, not foreign
                    ours = True
                else:
                    ours = False
                if not ours:
                    foreign.append(cache.layout.url(path))
                    continue
                with contextlib.suppress(OutputError):  # gone meanwhile (another prune or a compaction)
                    result.bytes_removed += cache.store.size(path)
                cache.store.remove(path)
                result.files_removed += 1
            if cache.layout.local and not foreign:
                with contextlib.suppress(OSError):  # a writer added a file meanwhile: the folder stays
                    os.rmdir(folder)
            result.removed.append(key)
            result.foreign_left.extend(foreign)
    return result


__all__ = ["Compacted", "IdentityFacts", "Pruned", "compact", "info", "prune"]

"""The result cache's store: one folder of cache files (files.py) per scoring identity, shared by shards and runs.

```
CACHE/                           a local folder or any fsspec URL
  <identity hash>/               one per scoring identity (model content, precision, device, ...)
    identity.json                what the hash stands for (`batchscore cache info` shows it)
    <time_ns>-<token>.parquet    entries added by one writer at one time, never changed after
```

Writers never touch each other's files: each adds its own under a fresh name, whole or not at all (local: temp
file and rename; object stores: one PUT), so any number of processes add to one cache at once without a lock,
and a SIGKILL leaves at most a temp file readers skip. Compaction (`admin.py`) writes merged files first and
removes the ones it merged only then: an entry is never missing.

Memory: the keys of the row groups a run has read are kept (16 bytes an entry, at most KEY_MEMORY bytes,
oldest dropped first); scores are read for hits only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, OutputError
from .files import FILE_NAME, CacheFile, DamagedFile, entries_bytes, new_file_name, read_groups, truncated_tokens
from .files import FOOTER_KEY as FOOTER_KEY  # tests read a cache file's footer record by it from here
from .store_errors import cache_errors

if TYPE_CHECKING:
    from ..output.layout import Layout
    from ..output.store import Store

log = logging.getLogger(__name__)

IDENTITY_RECORD = "identity.json"
FLUSH_ENTRIES = 100_000  # new entries a writer holds before adding them as a file (and at the end of a run)
KEY_MEMORY = 256 << 20  # bytes of row-group keys a reader keeps between chunks
IDENTITY_NAME = re.compile(r"^[0-9a-f]{16}$")


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CachedScores:
    """What a lookup found: for each key asked, whether it was there, its scores, window count and truncated
    tokens."""

    hit: np.ndarray  # bool [keys]
    scores: np.ndarray  # float32 [keys, labels] (zeros where not hit)
    windows: np.ndarray  # int32 [keys]
    truncated: np.ndarray  # int64 [keys]


@dataclass
class Entries:
    """Entries held by a writer until they are added as a file."""

    keys: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    windows: list[np.ndarray] = field(default_factory=list)
    truncated: list[np.ndarray] = field(default_factory=list)
    index: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # key -> (block, row)

    def __len__(self) -> int:
        return len(self.index)


class ResultCache:
    """A cache at a local path or fsspec URL. `scope(identity, labels)` gives the part one model reads and adds to."""

    def __init__(self, spec: str):
        from ..output.store import Store, open_layout

        if spec.rstrip("/").endswith(".parquet"):
            raise ConfigError(f"--cache '{spec}' names a Parquet file; a cache is a folder (e.g. score-cache/).")
        self.spec = spec
        with cache_errors():
            self.layout: Layout = open_layout(spec)
        self.store: Store = Store(self.layout)
        self.probe()

    def probe(self) -> None:
        """Fail now (exit 5), before a model loads or a row is scored, if the cache cannot be used: a store that
        cannot be reached or listed, a bucket that does not exist, a path that is a file, a local folder whose
        parent does not exist (a typo would otherwise start a cold cache somewhere new). A folder not made yet
        is fine: the first new results make it. Whether it takes writes shows only when it is written (a full
        or read-only cache costs a warning then, not the run)."""
        layout, store = self.layout, self.store
        root = layout.root.rstrip("/")
        with cache_errors():
            if store.exists(root):
                if not store.isdir(root):
                    raise OutputError(f"--cache '{self.spec}' is a file; pass a folder (e.g. score-cache/).")
                store.names(root)  # listable: access denied or unreachable is one line now
                return
            if layout.local:
                parent = root.rsplit("/", 1)[0] or "/"
                if not (store.exists(parent) and store.isdir(parent)):
                    raise OutputError(
                        f"Cannot open cache '{self.spec}': the folder '{parent}' above it does not exist; create "
                        "it, or fix --cache."
                    )
                return
            bucket = root.split("/", 1)[0]
            store.names(bucket)  # unreachable, no credentials, access denied: one line naming --cache
            if not store.exists(bucket):
                raise OutputError(
                    f"Cannot open cache '{self.spec}': the bucket '{bucket}' does not exist; create it, or fix --cache."
                )

    def folder(self, identity_key: str) -> str:
        return self.layout.path(identity_key)

    def identities(self) -> list[str]:
        with cache_errors():
            return [n for n in self.store.names() if IDENTITY_NAME.match(n)]

    def files(self, identity_key: str) -> list[str]:
        """The cache files of one identity, oldest first (temp files and anything not ours left out)."""
        folder = self.folder(identity_key)
        with cache_errors():
            return [f"{folder}/{n}" for n in self.store.names(folder) if FILE_NAME.match(n)]

    def identity_record(self, identity_key: str) -> dict[str, Any] | None:
        try:
            data = self.store.read_bytes(f"{self.folder(identity_key)}/{IDENTITY_RECORD}")
        except Exception:  # missing or unreadable: `info` shows the hash alone
            return None
        try:
            record = json.loads(data)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def scope(self, identity: dict[str, Any], num_labels: int, about: dict[str, Any] | None = None) -> CacheScope:
        """The part of the cache one model reads and adds to; `about` (the model as named) goes in identity.json."""
        return CacheScope(self, identity, num_labels, about or {})

    def add_file(
        self,
        identity_key: str,
        keys: np.ndarray,
        scores: np.ndarray,
        windows: np.ndarray,
        truncated: np.ndarray | None = None,
    ) -> str:
        """Add entries as one new file, whole or not at all; returns its path. `truncated` None: none was."""
        path = f"{self.folder(identity_key)}/{new_file_name()}"
        data = entries_bytes(keys, scores, windows, identity_key, truncated)
        with cache_errors():
            self.store.makedirs(self.folder(identity_key))
            self.store.put_bytes(path, data)
        return path


class CacheScope:
    """One scoring identity's entries: looked up by key, new ones added. One per model of a run."""

    def __init__(self, cache: ResultCache, identity: dict[str, Any], num_labels: int, about: dict[str, Any]):
        self.cache = cache
        self.about = about
        self.identity = identity
        self.key = identity_hash(identity)
        self.num_labels = num_labels
        self.files: dict[str, CacheFile] = {}
        self.skipped: dict[str, str] = {}  # damaged file -> why
        self.pending = Entries()
        self.keys: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.key_bytes = 0
        self.added = 0  # entries this scope added to the cache
        self.recorded = False
        self.write_failures: list[str] = []  # why each write the cache refused failed (full, read-only, ...)

    # --- reading ------------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Learn the files added since the last look (other shards and runs add theirs at any time)."""
        listed = self.cache.files(self.key)
        current = set(listed)
        for path in list(self.files):
            if path not in current:  # compacted away: its entries are in a newer file
                del self.files[path]
        for path in listed:
            if path in self.files or path in self.skipped:
                continue
            try:
                self.files[path] = CacheFile.read(self.cache.store, path, self.key)
            except FileNotFoundError:
                continue
            except DamagedFile as exc:
                self._skip(path, str(exc))

    def _skip(self, path: str, why: str) -> None:
        self.skipped[path] = why
        self.files.pop(path, None)
        url = self.cache.layout.url(path)
        log.warning("Skipping cache file %s (%s); its texts are scored again.", url, why)

    def lookup(self, keys: np.ndarray) -> CachedScores:
        """Look up distinct keys (shape [n, 2]) in the held new entries and in every file."""
        n = len(keys)
        found = CachedScores(
            np.zeros(n, bool), np.zeros((n, self.num_labels), np.float32), np.zeros(n, np.int32), np.zeros(n, np.int64)
        )
        if n == 0:
            return found
        for row, key in enumerate(map(tuple, keys.tolist())):
            at = self.pending.index.get(key)
            if at is not None:
                block, inside = at
                found.hit[row] = True
                found.scores[row] = self.pending.scores[block][inside]
                found.windows[row] = self.pending.windows[block][inside]
                found.truncated[row] = self.pending.truncated[block][inside]
        self.refresh()
        for path in list(self.files):
            missing = np.flatnonzero(~found.hit)
            if len(missing) == 0:
                break
            try:
                self._lookup_file(self.files[path], keys, missing, found)
            except FileNotFoundError:  # compacted away meanwhile: the merged file has its entries
                self.files.pop(path, None)
            except DamagedFile as exc:
                self._skip(path, str(exc))
        return found

    def _lookup_file(self, file: CacheFile, keys: np.ndarray, asked: np.ndarray, found: CachedScores) -> None:
        h1 = keys[asked, 0]
        group = np.searchsorted(file.high, h1, side="left")  # the first row group whose largest h1 >= the key's
        inside = group < len(file.high)
        inside[inside] &= file.low[group[inside]] <= h1[inside]
        asked, group = asked[inside], group[inside]
        groups = np.unique(group)
        held = self._group_keys(file, groups.tolist())
        # The held groups, in file order, are one sorted run of keys: one search for every key asked, not a loop
        # over row groups (a 10 M-entry cache has 1,220 of them to a file).
        g1 = np.concatenate([pair[0] for pair in held]) if held else np.zeros(0, np.uint64)
        g2 = np.concatenate([pair[1] for pair in held]) if held else np.zeros(0, np.uint64)
        first_row = np.repeat(file.starts[groups], [len(pair[0]) for pair in held])  # each held key's group start
        offset = np.concatenate([[0], np.cumsum([len(pair[0]) for pair in held])[:-1]]).astype(np.int64)
        within = np.repeat(offset, [len(pair[0]) for pair in held]) if held else np.zeros(0, np.int64)
        k1, k2 = keys[asked, 0], keys[asked, 1]
        left = np.searchsorted(g1, k1, side="left")
        right = np.searchsorted(g1, k1, side="right")
        at = np.minimum(left, max(len(g1) - 1, 0))
        hit = (left < right) & (g2[at] == k2) if len(g1) else np.zeros(len(asked), bool)
        for i in np.flatnonzero((right - left > 1) & ~hit):  # an h1 shared by two keys: look past the first
            match = left[i] + np.flatnonzero(g2[left[i] : right[i]] == k2[i])
            if len(match):
                hit[i], at[i] = True, match[0]
        rows = [first_row[at[hit]] + (at[hit] - within[at[hit]])]
        which = [asked[hit]]
        if rows and sum(len(r) for r in rows):
            at_rows, asked_rows = np.concatenate(rows), np.concatenate(which)
            scores, windows, truncated = self._values(file, at_rows)
            found.hit[asked_rows] = True
            found.scores[asked_rows] = scores
            found.windows[asked_rows] = windows
            found.truncated[asked_rows] = truncated

    def _group_keys(self, file: CacheFile, groups: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The keys (h1, h2) of the given row groups: those not held read in one request, then held."""
        wanted = [g for g in groups if (file.path, g) not in self.keys]
        if wanted:
            table = read_groups(self.cache.store, file.path, wanted, ["h1", "h2"])
            h1, h2 = table.column(0).to_numpy(), table.column(1).to_numpy()
            sizes = np.diff(np.append(file.starts, file.rows))[wanted]
            for g, end, size in zip(wanted, np.cumsum(sizes), sizes):
                pair = (h1[end - size : end].copy(), h2[end - size : end].copy())  # own memory: dropped when evicted
                self.keys[(file.path, g)] = pair
                self.key_bytes += pair[0].nbytes + pair[1].nbytes
        found = []
        for g in groups:
            self.keys.move_to_end((file.path, g))
            found.append(self.keys[(file.path, g)])
        # Drop the longest unused; this file's groups stay until its lookup is done (they are in `found`).
        while self.key_bytes > KEY_MEMORY and len(self.keys) > len(groups):
            _, (a, b) = self.keys.popitem(last=False)
            self.key_bytes -= a.nbytes + b.nbytes
        return found

    def _values(self, file: CacheFile, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, window counts and truncated tokens of the given rows of a file (reading only the row groups
        that hold them); a file without the truncated tokens cannot answer a row's counts: DamagedFile."""
        groups = np.searchsorted(file.starts, rows, side="right") - 1
        wanted = sorted(set(groups.tolist()))
        table = read_groups(self.cache.store, file.path, wanted, ["scores", "windows", "truncated"])
        if table.column_names != ["scores", "windows", "truncated"]:  # pyarrow leaves a missing column out
            raise DamagedFile(f"columns {', '.join(table.column_names)}, not scores, windows, truncated")
        offsets = np.zeros(len(file.starts), np.int64)
        sizes = np.diff(np.append(file.starts, file.rows))
        offsets[wanted] = np.cumsum([0] + [int(sizes[g]) for g in wanted[:-1]])
        local = offsets[groups] + (rows - file.starts[groups])
        scores = table.column(0).combine_chunks().flatten().to_numpy().reshape(-1, self.num_labels)
        if scores.shape[0] != table.num_rows:
            raise DamagedFile("scores of the wrong width")
        windows, truncated = table.column(1).to_numpy(), table.column(2).to_numpy()
        return scores[local], windows[local], truncated[local]

    # --- adding -------------------------------------------------------------------------------------------------

    def add(
        self, keys: np.ndarray, scores: np.ndarray, windows: np.ndarray, truncated: np.ndarray | None = None
    ) -> None:
        """Hold new entries (distinct keys the cache did not have); added as a file every FLUSH_ENTRIES.
        `truncated`: each text's tokens never scored (None: none)."""
        if len(keys) == 0:
            return
        pending = self.pending
        block = len(pending.keys)
        pending.keys.append(keys)
        pending.scores.append(np.asarray(scores, np.float32))
        pending.windows.append(np.asarray(windows, np.int32))
        pending.truncated.append(truncated_tokens(truncated, len(keys)))
        for row, key in enumerate(map(tuple, keys.tolist())):
            pending.index.setdefault(key, (block, row))
        if len(pending) >= FLUSH_ENTRIES:
            held = len(pending)
            refused = self.try_flush()
            if refused is not None:
                log.warning(f"The cache did not take {held:,} new results; the run goes on: {refused}")

    def try_flush(self) -> str | None:
        """`flush`, where a cache that refuses the write (full, read-only, permissions) costs a later run the
        scoring of these texts, not this run its results: the refusal is counted (the manifest's
        cache_write_failures), the held entries dropped (kept, they would grow without bound while the cache stays
        full), and its message returned for a warning; None when the cache took them."""
        try:
            self.flush()
        except OutputError as exc:
            self.write_failures.append(exc.message)
            self.pending = Entries()
            return exc.message
        return None

    def flush(self) -> None:
        """Add the held entries to the cache as one file (nothing if none)."""
        pending = self.pending
        if not pending.keys:
            return
        keys = np.concatenate(pending.keys)
        scores = np.concatenate(pending.scores)
        windows = np.concatenate(pending.windows)
        truncated = np.concatenate(pending.truncated)
        first = [block_start + row for block_start, row in self._first_rows()]
        keys, scores, windows, truncated = keys[first], scores[first], windows[first], truncated[first]
        self._record()
        path = self.cache.add_file(self.key, keys, scores, windows, truncated)
        self.added += len(keys)
        self.pending = Entries()
        try:
            self.files[path] = CacheFile.read(self.cache.store, path)
        except (FileNotFoundError, DamagedFile):
            pass  # found by the next refresh, if it is still there

    def _first_rows(self) -> list[tuple[int, int]]:
        starts = np.cumsum([0] + [len(k) for k in self.pending.keys[:-1]])
        return [(int(starts[block]), row) for block, row in self.pending.index.values()]

    def _record(self) -> None:
        """identity.json beside the files, once: what the folder's hash stands for."""
        if self.recorded:
            return
        path = f"{self.cache.folder(self.key)}/{IDENTITY_RECORD}"
        store = self.cache.store
        with cache_errors():
            if not store.exists(path):
                store.makedirs(self.cache.folder(self.key))
                record = {"identity": self.identity, "key": self.key, **self.about}
                store.put_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())
        self.recorded = True

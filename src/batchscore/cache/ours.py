"""What in a cache folder batchscore wrote: the only things `batchscore cache compact | info | prune` rewrite or
remove.

A folder is a cache when it holds at least one identity folder (`<16 hex>/`) whose identity.json is a record
batchscore wrote (its identity hashes to the folder's name); any other folder is refused before anything is read
further. Inside an identity folder, a cache file is merged or removed only when its footer proves it ours (the
`batchscore.cache` key, our format, the identity the folder names); a temp file only when its name is one of our
writers' and it is an hour old. Anything else (a file named like ours without that footer, a file copied from
another identity's folder, a folder named like an identity without a record of ours) is left in place and
reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from ..errors import OutputError
from .files import FILE_NAME, CacheFile, DamagedFile
from .store import IDENTITY_RECORD, ResultCache, identity_hash
from .store_errors import cache_errors

log = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 3600  # a temp file this old belongs to a killed writer, not a slow one


def open_cache(url: str) -> tuple[ResultCache, list[str], list[str]]:
    """The cache at `url`, its identities (folders with a record of ours) and the folders named like identities
    that hold no record of ours (left alone; see `warn_strangers`). A folder that does not exist, or
    that holds no identity of ours, is exit 5, before anything in it is touched: pointed at a user's folder by
    mistake, compact or prune would otherwise remove files that merely look like a cache's."""
    cache = ResultCache(url)
    with cache_errors():
        there = cache.store.exists(cache.layout.root) and cache.store.isdir(cache.layout.root)
        if not there:
            raise OutputError(
                f"No cache at '{url}': the folder does not exist; check the path (the --cache of the runs)."
            )
        candidates = cache.identities()
        keys = [key for key in candidates if _is_identity_record(cache.identity_record(key), key)]
    if not keys:
        raise OutputError(
            f"'{url}' is not a batchscore cache: no folder in it holds an identity.json that batchscore wrote; "
            "nothing was changed. Pass the folder the runs were given as --cache."
        )
    return cache, keys, [cache.layout.url(cache.folder(k)) for k in candidates if k not in keys]


def warn_strangers(strangers: list[str]) -> None:
    if strangers:
        log.warning(
            f"Left {len(strangers)} folder(s) named like an identity alone, e.g. {strangers[0]}: they hold no "
            "identity.json that batchscore wrote."
        )


def warn_leftovers(what: str, left: list[str]) -> None:
    if left:
        log.warning(
            f"Left {len(left)} file(s) in place that batchscore cannot prove it wrote for their identity, e.g. "
            f"{left[0]}; they were not {what}: move them out of the cache if they are yours."
        )


def _is_identity_record(record: dict[str, Any] | None, key: str) -> bool:
    """identity.json as a run writes it: the identity, which hashes to the folder's name, and that name."""
    if record is None or record.get("key") != key or not isinstance(record.get("identity"), dict):
        return False
    return identity_hash(record["identity"]) == key


def plain_file(cache: ResultCache, path: str) -> bool:
    """A name of ours is a plain file (locally: not a folder or a link someone put under that name)."""
    if not cache.layout.local:
        return True
    return os.path.isfile(path) and not os.path.islink(path)


def temp_name_of_ours(name: str) -> bool:
    from ..output.layout import TEMP

    match = TEMP.match(name)
    if match is None:
        return False
    return bool(FILE_NAME.match(match.group(1))) or match.group(1) == IDENTITY_RECORD


def stale_temp_of_ours(path: str) -> bool:
    """A temp file a killed writer of ours left (local disks only): our temp name, a plain file, an hour old or
    more (a younger one may be a live writer's), and empty or starting as our writers start it (Parquet's magic,
    or identity.json's brace)."""
    name = os.path.basename(path)
    if not temp_name_of_ours(name) or not os.path.isfile(path) or os.path.islink(path):
        return False
    try:
        if time.time() - os.path.getmtime(path) < STALE_TEMP_SECONDS:
            return False
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:  # renamed into place or removed meanwhile
        return False
    start = b"{" if name.startswith(f".{IDENTITY_RECORD}.") else b"PAR1"
    return head == b"" or head.startswith(start) or start.startswith(head)


def read_ours(cache: ResultCache, key: str, path: str) -> CacheFile | DamagedFile | None:
    """A file named like a cache file: its footer if it proves it this identity's, a DamagedFile if not (`ours`:
    proven ours but unreadable), None if it is gone. Locally, a folder or a link under that name is not ours."""
    if not plain_file(cache, path):
        return DamagedFile("not a plain file")
    try:
        return CacheFile.read(cache.store, path, key)
    except FileNotFoundError:
        return None
    except DamagedFile as exc:
        return exc


def remove_stale_temps(cache: ResultCache, key: str) -> int:
    """Temp files a killed writer left in an identity folder (local disks only), an hour old or more."""
    if not cache.layout.local:
        return 0
    folder = cache.folder(key)
    removed = 0
    for name in cache.store.names(folder):
        path = os.path.join(folder, name)
        if stale_temp_of_ours(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed += 1
    return removed


def unknown_identities(url: str, asked: list[str], keys: list[str]) -> str:
    listed = ", ".join(keys) if keys else "none"
    names = ", ".join(asked)
    return (
        f"Identity {names} is not in the cache '{url}' (its identities: {listed}); "
        f"`batchscore cache info {url}` lists them."
    )

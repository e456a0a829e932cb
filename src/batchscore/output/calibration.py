"""Where a --precision fastest run's choice is kept, so that every writer of one output scores in one precision.

    OUT/_batchscore/calibration.json   the choice, from the first writer that calibrated (removed once complete)
    each part's footer                  the same record, under "calibration" in the run's metadata; the manifest

The first writer to record wins: shards started together each calibrate, and all but one find a record there
already and take it instead of their own (on local disks a hard link, on S3 a conditional PUT; other stores,
whose fsspec back ends may not take a conditional write, check first, which leaves a moment in which two could
both record). A resume and every later shard find the
record, or, if it was lost, the parts' footers, and never calibrate again while the output is unfinished.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import TYPE_CHECKING, Any

from .layout import CALIBRATION, METADATA_KEY, RECORDS, part_name
from .manifest import listed_parts
from .store import store_errors

if TYPE_CHECKING:
    from .store import Output

FIELDS = {"min_agreement": "fraction", "models": "list"}


def recorded(output: Output) -> dict[str, Any] | None:
    """The choice an earlier writer of this unfinished output recorded: its record, else its first part's."""
    layout, store = output.layout, output.store
    path = layout.record(CALIBRATION)
    store.fs.invalidate_cache(path)
    if store.exists(path):
        return store.read_record(path, FIELDS)
    for index in listed_parts(store)[:1]:
        footer = store.footer(layout.path(part_name(index))) or {}
        with contextlib.suppress(KeyError, TypeError, ValueError):
            found = json.loads(footer[METADATA_KEY]).get("calibration")
            if isinstance(found, dict):
                return found
    return None


def record(output: Output, choice: dict[str, Any], replace: bool = False) -> dict[str, Any]:
    """Record `choice` unless another writer has recorded one since (`replace`: whatever is there, as a run
    that --overwrites the whole output does); the record in force, which every writer then uses."""
    layout, store = output.layout, output.store
    path = layout.record(CALIBRATION)
    data = json.dumps(choice, sort_keys=True, indent=1).encode()
    store.makedirs(layout.path(RECORDS))
    if replace:
        store.put_bytes(path, data)
        return choice
    taken = False
    with store_errors(layout, store.guard(path)):
        try:
            if layout.local:
                _link_new(path, data)
            elif layout.protocol in ("s3", "s3a"):
                store.fs.pipe_file(path, data, mode="create")  # If-None-Match: two writers cannot both
            elif store.exists(path):
                taken = True
            else:
                store.put_bytes(path, data)
        except FileExistsError:
            taken = True
    return store.read_record(path, FIELDS) if taken else choice


def _link_new(path: str, data: bytes) -> None:
    """Write `data` at `path` whole, unless a file is there (FileExistsError): written beside it, then hard-linked
    in, which fails if the name is taken; a reader never sees half of it."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)

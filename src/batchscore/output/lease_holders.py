"""Who holds an output now, asked without taking or touching anything (batchscore status)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..plan import WHOLE, Shard
from .layout import RECORDS, Layout
from .lease_record import DEFAULT_LEASE_SECONDS, LEASE_FIELDS
from .store import Store, check_record, store_errors


def holders(layout: Layout) -> list[dict[str, Any]]:
    """The writers holding this output now: one entry per lease record (object stores: owner, host, pid, its
    heartbeat's `time`, `age` in seconds on this machine's clock, `live` when younger than 2 x ttl) or per held
    kernel lock (local disks: `pid` from /proc/locks; NFS locks held on other hosts do not show there).
    Reads only: no lock is probed, so a writer starting now never finds it busy because of us."""
    store = Store(layout)
    folder = layout.path(RECORDS)
    found: list[dict[str, Any]] = []
    if layout.local:
        for name, pids in _kernel_lock_pids(folder).items():
            shard = WHOLE if name == "lock" else Shard.from_lock(name)
            if shard is None:
                continue
            for pid, mode in pids:
                found.append({"shard": shard.tag, "pid": pid, "lock": name, "mode": mode, "live": True})
        return found
    for name in store.names(folder):
        shard = Shard.from_lease(name)
        if shard is None:
            continue
        path = layout.record(name)
        layout.fs.invalidate_cache(path)
        with store_errors(layout, path, "read"):
            try:
                data = layout.fs.cat_file(path)
            except FileNotFoundError:
                continue  # let go between the listing and the read
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        record = check_record(layout, path, parsed, LEASE_FIELDS)
        given = record.get("ttl")
        ttl = float(given) if isinstance(given, (int, float)) and not isinstance(given, bool) else DEFAULT_LEASE_SECONDS
        age = time.time() - record["time"]
        found.append(
            {
                "shard": shard.tag,
                "host": record.get("host"),
                "pid": record.get("pid"),
                "beat": record["beat"],
                "heartbeat": record["time"],
                "age": round(age, 1),
                "ttl": ttl,
                # `LeaseRecord._gone`'s take-over rule without its wait: silent for 2 x ttl is dead, whatever the skew.
                "live": age <= 2 * ttl,
            }
        )
    return found


def _kernel_lock_pids(folder: str) -> dict[str, list[tuple[int, str]]]:
    """{lock file name: [(pid, "exclusive" | "shared"), ...]} for the lock files in `folder` that some process
    holds, from Linux's /proc/locks (matched by device and inode); {} where that file does not exist."""
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    inodes: dict[tuple[int, int, int], str] = {}
    for name in names:
        try:
            st = os.stat(os.path.join(folder, name), follow_symlinks=False)
        except OSError:
            continue
        inodes[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = name
    try:
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {}
    held: dict[str, list[tuple[int, str]]] = {}
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters carry "->" after the number: not holders.
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
            pid = int(fields[4])
        except ValueError:
            continue
        if key in inodes:
            held.setdefault(inodes[key], []).append((pid, "exclusive" if fields[3] == "WRITE" else "shared"))
    return held

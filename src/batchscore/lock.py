"""One writer at a time per output, or per shard of it: exclusive lock files in the output folder.

A whole-output run (and `finalize`) holds `.batchscore.lock`; a shard (an
independent worker, or one rank of a distributed run) holds
`.batchscore.shard-<i>-of-<K>.lock`, so the K shards of one job write side by
side. After taking its own lock a writer looks for live locks it would clash
with: a whole-output lock clashes with every shard lock, a shard lock with the
whole-output lock and with shards of another K (whose chunks overlap its own).

Created with O_EXCL (atomic on local and NFSv3+ file systems). A lock whose
process is gone, on this host, is stale and taken over; a lock from another
host can't be checked from here, so the message says how to clear it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

from .errors import OutputError

LOCK_NAME = ".batchscore.lock"
SHARD_LOCK = re.compile(r"^\.batchscore\.shard-(\d+)-of-(\d+)\.lock$")


def shard_lock_name(shard: int, num_shards: int) -> str:
    return f".batchscore.shard-{shard:05d}-of-{num_shards:05d}.lock"


def is_lock(name: str) -> bool:
    return name == LOCK_NAME or SHARD_LOCK.match(name) is not None


def _clashes(mine: str, other: str) -> bool:
    if mine == other:
        return False
    if LOCK_NAME in (mine, other):
        return True
    return SHARD_LOCK.match(mine).group(2) != SHARD_LOCK.match(other).group(2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    def __init__(self, directory: str, output: str, name: str = LOCK_NAME):
        self.directory = directory
        self.name = name
        self.path = os.path.join(directory, name)
        self.output = output
        self.held = False

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    raise self._busy(self.path, holder) from None
                try:
                    os.remove(self.path)  # stale: its process is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, fh)
            self.held = True
            self._check_neighbours()
            return
        raise OutputError(f"Could not lock output '{self.output}'; delete {self.path} and retry.")

    def _check_neighbours(self) -> None:
        """Refuse to write beside a live lock whose chunks overlap ours."""
        for name in sorted(os.listdir(self.directory)):
            if not is_lock(name) or not _clashes(self.name, name):
                continue
            holder = self._holder(os.path.join(self.directory, name))
            if holder is None or self._stale(holder):
                continue
            self.release()
            raise self._busy(os.path.join(self.directory, name), holder)

    def _busy(self, path: str, holder: dict) -> OutputError:
        return OutputError(
            f"Output '{self.output}' is being written by another batchscore run (pid {holder.get('pid')} "
            f"on {holder.get('host')}); wait for it to finish, or delete {path} if it is gone."
        )

    def _holder(self, path: str | None = None) -> dict | None:
        path = path or self.path
        try:
            with open(path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Being written this very moment, or left empty by a crash: judge by age.
            age = time.time() - os.path.getmtime(path) if os.path.exists(path) else 0
            return None if age > 60 else {"pid": "?", "host": "?", "since": 0}

    @staticmethod
    def _stale(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        return not _alive(holder["pid"])

    def release(self) -> None:
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.held = False

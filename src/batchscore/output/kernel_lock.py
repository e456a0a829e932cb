"""The lease on local and POSIX shared file systems: kernel locks (`flock`), which die with their process.

The locks are 0-byte files in OUT/_batchscore/. The kernel drops a lock when its process dies (SIGKILL, OOM
kill, eviction), so a retry never finds a stale one and nobody deletes locks by hand. A whole-output writer
(a run, or finalize) holds `lock` exclusively; shard I of K holds `lock` shared (the shards of one job work
side by side) and `shard-I-of-K.lock` exclusively, and refuses live shards of another K, whose chunks overlap
its own. Taking and probing happen under a short exclusive lock on `guard`, so no two writers probe each
other's locks at the same moment. On NFS a client cut off longer than the server's lock lease can lose its
flock unseen.
"""

from __future__ import annotations

import contextlib
import os

from ..errors import OutputError
from ..plan import WHOLE, Shard
from .layout import RECORDS, Layout
from .lease_base import Busy, Lease
from .store import store_errors

# Lock fds this process holds. A forked child (a DataLoader worker) closes its copies at
# once: a flock lives until every copy is closed, and a worker that outlives a SIGKILLed
# parent for a few seconds would otherwise keep a retry out.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class KernelLock(Lease):
    def __init__(self, layout: Layout, shard: Shard = WHOLE, wait: bool = False):
        super().__init__(layout, shard, wait)
        self.folder = layout.path(RECORDS)
        self._fds: list[tuple[int, str]] = []  # (fd, path) of each lock this writer holds

    def _open(self, name: str) -> tuple[int, str]:
        path = self.store.guard(os.path.join(self.folder, name))
        with store_errors(self.layout, path, "create"):
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), path

    def _lock(self, opened: tuple[int, str], mode: int) -> None:
        import fcntl

        fd, path = opened
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(f"it holds {path}") from None
        self._fds.append(opened)
        _HELD.add(fd)

    def _try(self) -> None:
        import fcntl

        self.store.makedirs(self.folder)
        guard, _ = self._open("guard")
        fcntl.flock(guard, fcntl.LOCK_EX)  # held for milliseconds, by writers starting up
        try:
            if self.shard.whole:
                self._lock(self._open("lock"), fcntl.LOCK_EX)
                return
            self._lock(self._open("lock"), fcntl.LOCK_SH)
            self._lock(self._open(self.shard.lock_name), fcntl.LOCK_EX)
            for name in os.listdir(self.folder):
                other = Shard.from_lock(name)
                if other is not None and self.shard.conflicts(other):
                    probe, path = self._open(name)
                    try:
                        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: its writer is gone
                    except BlockingIOError:
                        raise Busy(f"a shard with other --num-shards holds {path}") from None
                    finally:
                        os.close(probe)
        except BaseException:
            self.release()
            raise
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
            os.close(guard)

    def check(self) -> None:
        """A held kernel lock cannot be taken over; but if the records folder was removed or replaced (by hand,
        while this run wrote) the lock guards nothing any more."""
        for fd, path in self._fds:
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
            except OSError:
                same = False
            if not same:
                raise OutputError(
                    f"The lock file '{path}' of this run was removed or replaced while it wrote "
                    f"'{self.layout.url()}'; stopped before writing more. Make sure no one else "
                    "writes there, then rerun the same command to resume."
                )

    def release(self) -> None:
        while self._fds:
            fd, _ = self._fds.pop()
            _HELD.discard(fd)
            os.close(fd)  # closing drops the flock

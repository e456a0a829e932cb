"""One writer per output (or per shard of it), and no lock that a dead writer can strand.

Local and POSIX shared file systems: kernel locks (`flock`) on 0-byte files in
OUT/_batchscore/. The kernel drops a lock when its process dies (SIGKILL, OOM
kill, eviction), so a retry never finds a stale one and nobody deletes locks by
hand. A whole-output writer (a run, or finalize) holds `lock` exclusively;
shard I of K holds `lock` shared (the shards of one job work side by side) and
`shard-I-of-K.lock` exclusively, and refuses live shards of another K, whose
chunks overlap its own. Taking and probing happen under a short exclusive lock
on `guard`, so no two writers probe each other's locks at the same moment.

Object stores have no locks: a writer holds a lease record
`lease-<tag>.json` (owner id, host, pid, heartbeat), created with a
conditional PUT where the store supports one (If-None-Match on S3) and
rewritten every ttl/4 by a heartbeat thread. A record whose heartbeat has not
moved for ttl seconds, on the reader's own clock (so clock skew does not
matter), belongs to a dead writer and is taken over; one whose process is gone
on this same host is taken over at once. A writer that stalled past ttl and
lost its lease notices at its next heartbeat and stops before its next commit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import socket
import threading
import time

from ..errors import OutputError
from .layout import LEASE, RECORDS, Layout
from .store import Store, describe, store_errors

log = logging.getLogger(__name__)
SHARD_LOCK = re.compile(r"^(shard-\d{5}-of-(\d{5}))\.lock$")
POLL_SECONDS = 0.5  # how often a waiting writer (rank 0 before finalize) tries again


def lease_seconds() -> float:
    """How long a silent object-store lease stays valid (BATCHSCORE_LEASE_SECONDS, default 60)."""
    try:
        return max(0.5, float(os.environ.get("BATCHSCORE_LEASE_SECONDS", "60")))
    except ValueError:
        return 60.0


def conflicts(mine: str, other: str) -> bool:
    """Do writers with these tags ('all' or 'shard-I-of-K') overlap? Shards of one K never do."""
    if mine == other:
        return False
    if "all" in (mine, other):
        return True
    return mine.rsplit("-of-", 1)[1] != other.rsplit("-of-", 1)[1]


class _Busy(Exception):
    """Another live writer holds what we need; the text says who."""


class Lease:
    """Context manager: held between __enter__ and __exit__. `wait` retries until the others are done."""

    def __init__(self, layout: Layout, tag: str = "all", wait: bool = False):
        self.layout, self.tag, self.wait = layout, tag, wait
        self.store = Store(layout)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def acquire(self) -> None:
        while True:
            try:
                self._try()
                return
            except _Busy as busy:
                if not self.wait:
                    raise OutputError(f"Output '{self.layout.url()}' is being written by another batchscore run "
                                      f"({busy}); wait for it to finish, or choose another --output.") from None
                time.sleep(POLL_SECONDS)

    def check(self) -> None:
        """Raise if the lease was lost; called before every commit."""

    def _try(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


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
    def __init__(self, layout: Layout, tag: str = "all", wait: bool = False):
        super().__init__(layout, tag, wait)
        self.folder = layout.path(RECORDS)
        self._fds: list[int] = []

    def _open(self, name: str) -> int:
        path = os.path.join(self.folder, name)
        with store_errors(self.layout, path, "create"):
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def _lock(self, fd: int, mode: int, what: str) -> None:
        import fcntl

        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _Busy(f"it holds {os.path.join(self.folder, what)}") from None
        self._fds.append(fd)
        _HELD.add(fd)

    def _try(self) -> None:
        import fcntl

        self.store.makedirs(self.folder)
        guard = self._open("guard")
        fcntl.flock(guard, fcntl.LOCK_EX)  # held for milliseconds, by writers starting up
        try:
            if self.tag == "all":
                self._lock(self._open("lock"), fcntl.LOCK_EX, "lock")
                return
            self._lock(self._open("lock"), fcntl.LOCK_SH, "lock")
            self._lock(self._open(f"{self.tag}.lock"), fcntl.LOCK_EX, f"{self.tag}.lock")
            for name in os.listdir(self.folder):
                match = SHARD_LOCK.match(name)
                if match and conflicts(self.tag, match.group(1)):
                    probe = self._open(name)
                    try:
                        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: its writer is gone
                    except BlockingIOError:
                        raise _Busy(f"a shard with other --num-shards holds {os.path.join(self.folder, name)}") \
                            from None
                    finally:
                        os.close(probe)
        except BaseException:
            self.release()
            raise
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
            os.close(guard)

    def release(self) -> None:
        while self._fds:
            fd = self._fds.pop()
            _HELD.discard(fd)
            os.close(fd)  # closing drops the flock


class LeaseRecord(Lease):
    def __init__(self, layout: Layout, tag: str = "all", wait: bool = False):
        super().__init__(layout, tag, wait)
        self.path = layout.record(f"lease-{tag}.json")
        self.ttl = lease_seconds()
        self.me = {"owner": secrets.token_hex(8), "host": socket.gethostname(), "pid": os.getpid(),
                   "boot": _boot_id()}
        self.beat = 0
        self.lost: str | None = None
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- records --------------------------------------------------------------------------------------------

    def _record(self) -> bytes:
        return json.dumps({**self.me, "beat": self.beat, "time": time.time(), "ttl": self.ttl}).encode()

    def _read(self, path: str) -> dict | None:
        fs = self.layout.fs
        fs.invalidate_cache(path)
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutputError(describe(self.layout, path, exc, "read")) from None
        try:
            holder = json.loads(data)
        except ValueError:
            holder = None
        if not isinstance(holder, dict) or "owner" not in holder:
            raise OutputError(f"Lease record '{self.layout.url(path)}' is unreadable (damaged?); if no batchscore "
                              "run is writing this output, delete that file and rerun.")
        return holder

    def _create(self) -> bool:
        """Write our record only if none exists; False if one does."""
        fs = self.layout.fs
        with store_errors(self.layout, self.path):
            try:
                fs.pipe_file(self.path, self._record(), mode="create")
            except FileExistsError:
                return False
        return True

    # --- taking ---------------------------------------------------------------------------------------------

    def _try(self) -> None:
        if not self._create():
            if not self._gone(self.path):
                raise _Busy(self._who(self.path))
            if not self._take_over():
                # No compare-and-swap here: two retries taking over at once both
                # write, then both read back; only the last writer finds its own record.
                time.sleep(min(1.0, self.ttl / 10))
            holder = self._read(self.path)
            if not holder or holder.get("owner") != self.me["owner"]:
                raise _Busy("another run took over the same expired lease")
        self.held = True
        try:
            for name in self.store.names(self.layout.path(RECORDS)):
                match = LEASE.match(name)
                if match and conflicts(self.tag, match.group(1)):
                    path = self.layout.record(name)
                    if not self._gone(path):
                        raise _Busy(self._who(path))
                    self.store.remove(path)  # a dead writer's: a complete output must not keep it
        except BaseException:
            self.release()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="batchscore-lease", daemon=True)
        self._thread.start()

    def _take_over(self) -> bool:
        """Replace a dead writer's record; True if the store made it a compare-and-swap (S3 If-Match)."""
        fs, swap = self.layout.fs, {}
        if self.layout.protocol in ("s3", "s3a"):
            fs.invalidate_cache(self.path)
            with store_errors(self.layout, self.path, "read"):
                swap = {"IfMatch": fs.info(self.path)["ETag"]}
        try:
            fs.pipe_file(self.path, self._record(), **swap)
        except OSError as exc:
            if swap and exc.errno == errno.EINVAL:  # 412 Precondition Failed: another retry took it over first
                raise _Busy("another run took over the same expired lease") from None
            raise OutputError(describe(self.layout, self.path, exc)) from None
        return bool(swap)

    def _who(self, path: str) -> str:
        holder = self._read(path) or {}
        return f"{holder.get('host')} pid {holder.get('pid')}, lease {self.layout.url(path)}"

    def _gone(self, path: str) -> bool:
        """True if the lease at `path` is absent or its writer dead. Watches it up to ttl to tell which."""
        holder = self._read(path)
        if holder is None:
            return True
        if holder.get("host") == self.me["host"] and holder.get("boot") == self.me["boot"] \
                and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
            return True
        if time.time() - float(holder.get("time", 0)) > 2 * self.ttl:  # long silent, even allowing for skew
            return True
        log.debug("Waiting up to %.0f s to see whether the writer holding %s is alive.", self.ttl,
                    self.layout.url(path))
        started = time.monotonic()
        while time.monotonic() - started < self.ttl:
            time.sleep(min(1.0, self.ttl / 8))
            now = self._read(path)
            if now is None:
                return True
            if (now.get("owner"), now.get("beat")) != (holder.get("owner"), holder.get("beat")):
                return False  # it beats: alive
        return True

    # --- holding --------------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 4):
            try:
                holder = self._read(self.path)
                if holder is None or holder.get("owner") != self.me["owner"]:
                    self.lost = "another run took it over after its heartbeat stopped"
                    return
                self.beat += 1
                self.layout.fs.pipe_file(self.path, self._record())
                last_ok = time.monotonic()
            except Exception as exc:  # the store is unreachable for now: retry until ttl runs out
                if time.monotonic() - last_ok > self.ttl:
                    self.lost = f"no heartbeat for {self.ttl:.0f} s ({type(exc).__name__})"
                    return

    def check(self) -> None:
        if self.lost:
            raise OutputError(f"Lost the lease on '{self.layout.url()}': {self.lost}; stopped before writing more. "
                              "Rerun the same command to resume.")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.held and not self.lost:
            with contextlib.suppress(OSError, OutputError):
                holder = self._read(self.path)
                if holder and holder.get("owner") == self.me["owner"]:
                    self.layout.fs.rm(self.path)
        self.held = False


def open_lease(layout: Layout, tag: str = "all", wait: bool = False) -> Lease:
    """The right kind of lease for this output's store."""
    return (KernelLock if layout.local else LeaseRecord)(layout, tag, wait)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return None

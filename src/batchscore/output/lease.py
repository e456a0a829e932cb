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
on this same host is taken over at once. The heartbeat rewrites the record only
if it is still the one this writer wrote (If-Match on its ETag, S3), so a writer
that stalled past ttl cannot take a lease back from the run that took it over.

Every commit (a part, a shard's marker, the manifest, _SUCCESS) goes through
`Lease.commit`: just before the PUT and again just after it, the writer asks the
store whether the output is still its own: its lease record is still its
(object stores), or its lock file is still the one in the folder (local disks).
A heartbeat flag alone is not enough: after a SIGSTOP the writer thread can
commit before the heartbeat thread has looked. What stays open: a writer that
stalls longer than ttl between the check before a PUT and the store completing
that PUT lands that one object; the check after it takes it back when the
store shows it is still the one written (S3: same ETag), and leaves it
elsewhere. On NFS a client cut off longer than the server's lock lease can lose
its flock unseen. See docs/output.md, "Reruns, crashes and concurrent runs".
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from typing import Any, Literal

from ..errors import ConfigError, OutputError
from ..plan import WHOLE, Shard
from .layout import RECORDS, Layout
from .store import Store, check_record, store_errors

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5  # how often a waiting writer (rank 0 before finalize) tries again
LEASE_VARIABLE = "BATCHSCORE_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0
MIN_LEASE_SECONDS = 0.5  # the heartbeat runs every ttl/4: shorter would flood the store with writes
# What a lease record must hold for a reader to judge it (the rest is for people: host, pid, boot).
LEASE_FIELDS = {"owner": "text", "beat": "count", "time": "time"}


def lease_seconds() -> float:
    """How long a silent object-store lease stays valid: BATCHSCORE_LEASE_SECONDS, default 60.

    Anything but a finite number of seconds from MIN_LEASE_SECONDS up is exit 2 naming the variable: `inf`
    would stop the heartbeat thread, and a lease that never expires strands every retry."""
    raw = os.environ.get(LEASE_VARIABLE, "")
    if not raw.strip():
        return DEFAULT_LEASE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= MIN_LEASE_SECONDS):
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise ConfigError(
            f"{LEASE_VARIABLE}={json.dumps(shown)} is not a number of seconds >= "
            f"{MIN_LEASE_SECONDS:g} (how long a silent object-store lease stays valid; default "
            f"{DEFAULT_LEASE_SECONDS:g}); fix or unset it."
        )
    return value


class _Busy(Exception):
    """Another live writer holds what we need; the text says who."""


class Lease:
    """Context manager: held between __enter__ and __exit__. `wait` retries until the others are done."""

    def __init__(self, layout: Layout, shard: Shard = WHOLE, wait: bool = False):
        self.layout, self.shard, self.wait = layout, shard, wait
        self.store = Store(layout)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.release()
        return False

    def acquire(self) -> None:
        while True:
            try:
                self._try()
                return
            except _Busy as busy:
                if not self.wait:
                    raise OutputError(
                        f"Output '{self.layout.url()}' is being written by another batchscore run "
                        f"({busy}); wait for it to finish, or choose another --output."
                    ) from None
                time.sleep(POLL_SECONDS)

    def check(self) -> None:
        """Raise unless the output is still this writer's, asking the store now; called around every commit."""

    def commit(self, path: str, data: bytes) -> None:
        """Write `data` at `path` only while the output is this writer's: asked just before the PUT, and again
        just after it. A PUT that landed after the output was lost (the writer stalled between the two) is
        taken back, if the object there is still the one this writer wrote."""
        self.check()
        answer = self.store.put_bytes(path, data)
        try:
            self.check()
        except OutputError:
            self._take_back(path, answer)
            raise

    def _take_back(self, path: str, answer: dict[str, Any] | None) -> None:
        """Best effort: remove what this writer just wrote at `path`, if the store can tell it is still that
        (its ETag); otherwise leave it (see docs/output.md on stalled writers)."""
        etag = answer.get("ETag") if isinstance(answer, dict) else None
        if not etag:
            return
        fs = self.layout.fs
        with contextlib.suppress(Exception):
            fs.invalidate_cache(path)
            if fs.info(path).get("ETag") == etag:
                fs.rm(path)

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
            raise _Busy(f"it holds {path}") from None
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
                        raise _Busy(f"a shard with other --num-shards holds {path}") from None
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


class LeaseRecord(Lease):
    def __init__(self, layout: Layout, shard: Shard = WHOLE, wait: bool = False):
        super().__init__(layout, shard, wait)
        self.path = layout.record(shard.lease_name)
        self.ttl = lease_seconds()
        self.me = {"owner": secrets.token_hex(8), "host": socket.gethostname(), "pid": os.getpid(), "boot": _boot_id()}
        self.beat = 0
        self.lost: str | None = None
        self.held = False
        self.etag: str | None = None  # of the record we last wrote, where the store gives one (S3)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- records --------------------------------------------------------------------------------------------

    def _record(self) -> bytes:
        return json.dumps({**self.me, "beat": self.beat, "time": time.time(), "ttl": self.ttl}).encode()

    def _read(self, path: str) -> dict | None:
        """The lease record at `path`, None if there is none; a damaged one is exit 5 naming it."""
        fs = self.layout.fs
        fs.invalidate_cache(path)
        with store_errors(self.layout, path, "read"):
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                return None
        try:
            holder = json.loads(data)
        except ValueError:
            holder = None
        return check_record(self.layout, path, holder, LEASE_FIELDS)

    def _mine(self, holder: dict | None) -> bool:
        return holder is not None and holder["owner"] == self.me["owner"]

    def _conditional(self) -> bool:
        """Does this store take If-Match / If-None-Match on a PUT? (S3 does; fsspec's others do not say.)"""
        return self.layout.protocol in ("s3", "s3a")

    def _put(self, **conditions: str) -> None:
        """Write our record; keep its ETag for the next conditional rewrite."""
        answer = self.layout.fs.pipe_file(self.path, self._record(), **conditions)
        self.etag = answer.get("ETag") if isinstance(answer, dict) else None

    def _create(self) -> bool:
        """Write our record only if none exists; False if one does."""
        with store_errors(self.layout, self.path):
            try:
                self._put(mode="create")
            except FileExistsError:
                return False
        return True

    # --- taking ---------------------------------------------------------------------------------------------

    def _try(self) -> None:
        for _ in range(5):  # a record that vanishes under us (its writer just finished) is created afresh
            if self._create():
                break
            if not self._gone(self.path):
                raise _Busy(self._who(self.path))
            swapped = self._take_over()
            if swapped is None:
                continue
            if not swapped:
                # No compare-and-swap here: two retries taking over at once both
                # write, then both read back; only the last writer finds its own record.
                time.sleep(min(1.0, self.ttl / 10))
            if not self._mine(self._read(self.path)):
                raise _Busy("another run took over the same expired lease")
            break
        else:
            raise _Busy(f"its lease record {self.layout.url(self.path)} keeps appearing and vanishing")
        self.held = True
        try:
            for name in self.store.names(self.layout.path(RECORDS)):
                other = Shard.from_lease(name)
                if other is not None and self.shard.conflicts(other):
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

    def _take_over(self) -> bool | None:
        """Replace a dead writer's record: True if the store made it a compare-and-swap (S3 If-Match), False if
        it was a plain write, None if the record vanished meanwhile (create it instead)."""
        fs, swap = self.layout.fs, {}
        with store_errors(self.layout, self.path):
            try:
                if self._conditional():
                    fs.invalidate_cache(self.path)
                    swap = {"IfMatch": fs.info(self.path)["ETag"]}
                self._put(**swap)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if swap and exc.errno == errno.EINVAL:  # 412 Precondition Failed: another retry took it over first
                    raise _Busy("another run took over the same expired lease") from None
                raise
        return bool(swap)

    def _who(self, path: str) -> str:
        holder = self._read(path) or {}
        return f"{holder.get('host')} pid {holder.get('pid')}, lease {self.layout.url(path)}"

    def _gone(self, path: str) -> bool:
        """True if the lease at `path` is absent or its writer dead. Watches it up to ttl to tell which."""
        holder = self._read(path)
        if holder is None:
            return True
        if (
            holder.get("host") == self.me["host"]
            and holder.get("boot") == self.me["boot"]
            and isinstance(holder.get("pid"), int)
            and not _alive(holder["pid"])
        ):
            return True
        if time.time() - holder["time"] > 2 * self.ttl:  # long silent, even allowing for skew
            return True
        log.debug(
            "Waiting up to %.0f s to see whether the writer holding %s is alive.", self.ttl, self.layout.url(path)
        )
        started = time.monotonic()
        while time.monotonic() - started < self.ttl:
            time.sleep(min(1.0, self.ttl / 8))
            now = self._read(path)
            if now is None:
                return True
            if (now["owner"], now["beat"]) != (holder["owner"], holder["beat"]):
                return False  # it beats: alive
        return True

    # --- holding --------------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self._mine(self._read(self.path)):
                    self.lost = "another run took it over after its heartbeat stopped"
                    return
                self.beat += 1
                # Only over the record we wrote last: a writer that stalled between the read above and this
                # write must not take the lease back from a run that took it over meanwhile.
                self._put(**({"IfMatch": self.etag} if self._conditional() and self.etag else {}))
                last_ok = time.monotonic()
            except OSError as exc:
                # 412 or 404 on a conditional rewrite: the record is not the one we wrote any more.
                if self._conditional() and (isinstance(exc, FileNotFoundError) or exc.errno == errno.EINVAL):
                    self.lost = "another run took it over after its heartbeat stopped"
                    return
                if time.monotonic() - last_ok > self.ttl:
                    self.lost = f"no heartbeat for {self.ttl:.0f} s ({type(exc).__name__})"
                    return
            except Exception as exc:  # the store is unreachable for now: retry until ttl runs out
                if time.monotonic() - last_ok > self.ttl:
                    self.lost = f"no heartbeat for {self.ttl:.0f} s ({type(exc).__name__})"
                    return

    def check(self) -> None:
        """Ask the store, now, whether the lease record is still ours: a writer that stalled (SIGSTOP, a frozen
        VM) past ttl must not commit into an output another run has taken over, or finished, meanwhile."""
        if not self.lost and not self._mine(self._read(self.path)):
            self.lost = "another run took it over, or finished the output, while this one stalled"
        if self.lost:
            raise OutputError(
                f"Lost the lease on '{self.layout.url()}': {self.lost}; stopped before writing more. "
                "Rerun the same command to resume."
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.held and not self.lost:
            with contextlib.suppress(OSError, OutputError):
                if self._mine(self._read(self.path)):
                    self.layout.fs.rm(self.path)
        self.held = False


def open_lease(layout: Layout, shard: Shard = WHOLE, wait: bool = False) -> Lease:
    """The right kind of lease for this output's store."""
    return (KernelLock if layout.local else LeaseRecord)(layout, shard, wait)


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


# --- who holds an output, asked without taking or touching anything (batchscore status) ---------------------


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
                # The take-over rule of `_gone` without its wait: silent for 2 x ttl is dead, whatever the skew.
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

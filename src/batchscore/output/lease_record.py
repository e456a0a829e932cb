"""The lease on object stores, which have no locks: an expiring heartbeat record, and how long it stays valid.

A writer holds a lease record `lease-<tag>.json` (owner id, host, pid, heartbeat), created with a conditional
PUT where the store supports one (If-None-Match on S3) and rewritten every ttl/4 by a heartbeat thread. A
record whose heartbeat has not moved for ttl seconds, on the reader's own clock (so clock skew does not
matter), belongs to a dead writer and is taken over; one whose process is gone on this same host is taken
over at once. The heartbeat rewrites the record only if it is still the one this writer wrote (If-Match on
its ETag, S3), so a writer that stalled past ttl cannot take a lease back from the run that took it over.
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

from ..errors import ConfigError, OutputError
from ..plan import WHOLE, Shard
from .layout import RECORDS, Layout
from .lease_base import Busy, Lease
from .store import check_record, store_errors

# The name its debug lines carried before this module was split out of lease.py (JSON logs show it).
log = logging.getLogger("batchscore.output.lease")
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
                raise Busy(self._who(self.path))
            swapped = self._take_over()
            if swapped is None:
                continue
            if not swapped:
                # No compare-and-swap here: two retries taking over at once both
                # write, then both read back; only the last writer finds its own record.
                time.sleep(min(1.0, self.ttl / 10))
            if not self._mine(self._read(self.path)):
                raise Busy("another run took over the same expired lease")
            break
        else:
            raise Busy(f"its lease record {self.layout.url(self.path)} keeps appearing and vanishing")
        self.held = True
        try:
            for name in self.store.names(self.layout.path(RECORDS)):
                other = Shard.from_lease(name)
                if other is not None and self.shard.conflicts(other):
                    path = self.layout.record(name)
                    if not self._gone(path):
                        raise Busy(self._who(path))
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
                    raise Busy("another run took over the same expired lease") from None
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

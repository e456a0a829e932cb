"""What every kind of lease does: wait for other writers if asked, and commit only while the output is its own.

Every commit (a part, a shard's marker, the manifest, _SUCCESS) goes through `Lease.commit`: just before the
PUT and again just after it, the writer asks the store whether the output is still its own: its lease record
is still its (object stores), or its lock file is still the one in the folder (local disks). A heartbeat flag
alone is not enough: after a SIGSTOP the writer thread can commit before the heartbeat thread has looked.
What stays open: a writer that stalls longer than ttl between the check before a PUT and the store completing
that PUT lands that one object; the check after it takes it back when the store shows it is still the one
written (S3: same ETag), and leaves it elsewhere. See docs/output.md, "Reruns, crashes and concurrent runs".
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Literal

from ..errors import OutputError
from ..plan import WHOLE, Shard
from .layout import Layout
from .store import Store

POLL_SECONDS = 0.5  # how often a waiting writer (rank 0 before finalize) tries again


class Busy(Exception):
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
            except Busy as busy:
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

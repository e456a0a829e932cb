"""One writer per output (or per shard of it), and no lock that a dead writer can strand: the lease's API.

Writers take a lease with `open_lease` and commit through it (`Lease.commit`); `batchscore status` asks
`holders`. The parts live beside this module: `lease_base` (waiting, and the ownership check around every
commit), `kernel_lock` (local and POSIX shared file systems: `flock`), `lease_record` (object stores: an
expiring heartbeat record, and its ttl setting), `lease_holders` (who holds an output, read without touching
it). See docs/output.md, "Reruns, crashes and concurrent runs".
"""

from __future__ import annotations

from ..plan import WHOLE, Shard
from .kernel_lock import KernelLock
from .layout import Layout
from .lease_base import POLL_SECONDS, Lease
from .lease_holders import holders
from .lease_record import (
    DEFAULT_LEASE_SECONDS,
    LEASE_FIELDS,
    LEASE_VARIABLE,
    MIN_LEASE_SECONDS,
    LeaseRecord,
    lease_seconds,
)

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LEASE_FIELDS",
    "LEASE_VARIABLE",
    "MIN_LEASE_SECONDS",
    "POLL_SECONDS",
    "KernelLock",
    "Lease",
    "LeaseRecord",
    "holders",
    "lease_seconds",
    "open_lease",
]


def open_lease(layout: Layout, shard: Shard = WHOLE, wait: bool = False) -> Lease:
    """The right kind of lease for this output's store."""
    return (KernelLock if layout.local else LeaseRecord)(layout, shard, wait)

"""One run at a time per output: an exclusive lock file in the output folder.

Created with O_EXCL (atomic on local and NFSv3+ file systems). A lock whose
process is gone, on this host, is stale and taken over; a lock from another
host can't be checked from here, so the message says how to clear it.
"""

from __future__ import annotations

import json
import os
import socket
import time

from .errors import OutputError

LOCK_NAME = ".batchscore.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    def __init__(self, directory: str, output: str):
        self.path = os.path.join(directory, LOCK_NAME)
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
                    raise OutputError(
                        f"Output '{self.output}' is being written by another batchscore run (pid {holder.get('pid')} "
                        f"on {holder.get('host')}); wait for it to finish, or delete {self.path} if it is gone."
                    ) from None
                try:
                    os.remove(self.path)  # stale: its process is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, fh)
            self.held = True
            return
        raise OutputError(f"Could not lock output '{self.output}'; delete {self.path} and retry.")

    def _holder(self) -> dict | None:
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Being written this very moment, or left empty by a crash: judge by age.
            age = time.time() - os.path.getmtime(self.path) if os.path.exists(self.path) else 0
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

"""The commit protocol of each kind of store, and its errors in words.

Local and POSIX shared file systems: write a temp name beside the file, fsync
it, rename it into place, fsync the folder, so a power loss leaves the old
state or the new, never a torn file. Object stores: one PUT (or a multipart
upload completed only at the end) straight to the final key, which appears
whole or not at all; an upload that fails is aborted, never completed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets

from ..errors import OutputError
from .layout import RECORDS, TEMP, Layout


@contextlib.contextmanager
def store_errors(layout: Layout, path: str, doing: str = "write"):
    """Turn the store's OSErrors into one line naming the path and the fix (exit 5)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(describe(layout, path, exc, doing)) from None


def describe(layout: Layout, path: str, exc: OSError, doing: str = "write") -> str:
    where = layout.url(path)
    code = getattr(exc, "errno", None)
    resume = "then rerun the same command: committed chunks are kept"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"No space left to {doing} '{where}'; free some space or choose another --output, {resume}."
    if code == errno.EROFS:
        return f"Cannot {doing} '{where}': the file system is read-only; pass a writable --output."
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return f"Permission denied to {doing} '{where}'; pass a writable --output or fix its permissions."
    if isinstance(exc, FileNotFoundError) and not layout.local:
        bucket = layout.root.split("/", 1)[0]
        return f"Cannot {doing} '{where}': not found (does the bucket '{bucket}' exist?); create it or fix --output."
    reason = (exc.strerror or str(exc) or type(exc).__name__).splitlines()[0].rstrip(".")
    return f"Cannot {doing} '{where}' ({reason}); check --output and rerun."


MULTIPART_BLOCK = 16 << 20  # a merged output streams up in parts of this size, never whole in memory


class Store:
    """Reads and atomic writes under one output."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.fs = layout.fs

    # --- reading --------------------------------------------------------------------------------------------

    def names(self, folder: str | None = None) -> list[str]:
        """Entry names of a folder (the parts folder by default); [] if it does not exist."""
        folder = folder or self.layout.root
        self.fs.invalidate_cache(folder)  # object stores cache listings; another process may have written
        with store_errors(self.layout, folder, "list"):
            try:
                entries = self.fs.ls(folder, detail=False)
            except FileNotFoundError:
                return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        with store_errors(self.layout, path, "read"):
            return self.fs.exists(path)

    def isdir(self, path: str) -> bool:
        with store_errors(self.layout, path, "read"):
            return self.fs.isdir(path)

    def size(self, path: str) -> int:
        with store_errors(self.layout, path, "read"):
            return self.fs.size(path)

    def read_bytes(self, path: str) -> bytes:
        with store_errors(self.layout, path, "read"):
            return self.fs.cat_file(path)

    def read_json(self, path: str) -> dict:
        """A run record; an unreadable one is exit 5 naming it (never a traceback)."""
        data = self.read_bytes(path)
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise OutputError(f"Run record '{self.layout.url(path)}' is unreadable (damaged?); if no batchscore "
                              "run is writing this output, delete that file and rerun.")
        return record

    def footer(self, path: str) -> dict | None:
        """A Parquet file's key-value metadata, or None if it is not a readable Parquet file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with self.fs.open(path, "rb") as fh:
                return dict(pq.ParquetFile(fh).schema_arrow.metadata or {})
        except (pa.ArrowException, OSError, ValueError, EOFError):
            return None

    def schema(self, path: str):
        import pyarrow.parquet as pq

        with store_errors(self.layout, path, "read"), self.fs.open(path, "rb") as fh:
            return pq.ParquetFile(fh).schema_arrow

    # --- writing --------------------------------------------------------------------------------------------

    def makedirs(self, path: str) -> None:
        if self.layout.local:
            with store_errors(self.layout, path, "create"):
                os.makedirs(path, exist_ok=True)
        # Object stores have no folders: a key's prefix exists once the key does.

    def put_bytes(self, path: str, data: bytes) -> None:
        """Commit `data` at `path`: whole or not at all."""
        with store_errors(self.layout, path):
            if not self.layout.local:
                self.fs.pipe_file(path, data)
                return
            self._replace_local(path, lambda fh: fh.write(data))

    def put_stream(self, path: str, write) -> None:
        """Commit what `write(file)` writes, streamed (a merged output can be larger than memory)."""
        with store_errors(self.layout, path):
            if self.layout.local:
                self._replace_local(path, write)
                return
            # Not `with`: leaving a `with` block on an error would close, and so complete, the upload.
            fh = self.fs.open(path, "wb", block_size=MULTIPART_BLOCK)
            try:
                write(fh)
            except BaseException:
                fh.discard()  # abort the multipart upload: nothing appears at `path`
                fh.closed = True  # a later close() would try to complete what was aborted
                raise
            fh.close()  # completes the upload: the object appears, whole

    def _replace_local(self, path: str, write) -> None:
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(folder)  # the rename itself survives a power loss

    def remove(self, path: str) -> None:
        self.fs.invalidate_cache(path)
        with store_errors(self.layout, path, "remove"):
            try:
                if self.layout.local and os.path.isdir(path):
                    import shutil

                    shutil.rmtree(path)
                else:
                    self.fs.rm(path, recursive=True)
            except FileNotFoundError:
                pass

    def remove_temp_files(self, owns=lambda name: True) -> None:
        """Remove what a killed writer had in flight (local disks only: object stores have no temp files)."""
        if not self.layout.local:
            return
        folders = [(self.layout.root, owns), (self.layout.path(RECORDS), owns)]
        if self.layout.single_file:  # a merge killed before its rename
            parent, target = os.path.split(self.layout.target)
            folders.append((parent, lambda name: name == target))
        for folder, mine in folders:
            for name in self.names(folder):
                match = TEMP.match(name)
                if match and mine(match.group(1)):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, name))


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

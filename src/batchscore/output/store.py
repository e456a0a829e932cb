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
import math
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import OutputError
from .layout import RECORDS, TEMP, Layout, short

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

# Exception classes, by name, that mean "the store cannot be reached" in the back ends fsspec uses
# (botocore, aiohttp, requests/urllib3, azure-core, google-auth), none of them imported here.
_UNREACHABLE_NAMES = (
    "ConnectionError",
    "ConnectTimeoutError",
    "ConnectTimeout",
    "ReadTimeoutError",
    "ServiceRequestError",
    "TransportError",
    "ClientConnectorError",
    "ServerDisconnectedError",
)
_NO_CREDENTIALS_NAMES = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "DefaultCredentialsError",
    "ClientAuthenticationError",
)


def _named(exc: BaseException, names: tuple[str, ...]) -> bool:
    return any(cls.__name__.endswith(names) for cls in type(exc).__mro__)


def unreachable(exc: BaseException) -> bool:
    """True if `exc` says the store could not be reached (refused, timed out, name not resolved, cut off)."""
    import socket

    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
    ):
        return True
    return _named(exc, _UNREACHABLE_NAMES)


@contextlib.contextmanager
def store_errors(layout: Layout, path: str, doing: str = "write") -> Iterator[None]:
    """Turn the store's OSErrors, and its back end's connection errors, into one line naming the path and the
    fix (exit 5)."""
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        if not isinstance(exc, OSError) and not unreachable(exc) and not _named(exc, _NO_CREDENTIALS_NAMES):
            raise
        raise OutputError(describe(layout, path, exc, doing)) from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return (text.strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def describe(layout: Layout, path: str, exc: BaseException, doing: str = "write") -> str:
    where = layout.url(path)
    code = getattr(exc, "errno", None)
    resume = "then rerun the same command: committed chunks are kept"
    if unreachable(exc):
        return (
            f"Cannot reach the store to {doing} '{where}' ({_reason(exc)}); check the address, the network "
            f"and the credentials, {resume}."
        )
    if _named(exc, _NO_CREDENTIALS_NAMES):
        return (
            f"Cannot {doing} '{where}': no usable credentials for the store ({_reason(exc)}); set them "
            "(e.g. AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) and rerun."
        )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"No space left to {doing} '{where}'; free some space or choose another --output, {resume}."
    if code == errno.EROFS:
        return f"Cannot {doing} '{where}': the file system is read-only; pass a writable --output."
    if code == errno.ENAMETOOLONG:
        return f"Cannot {doing} '{where}': the name is too long for the file system; pass a shorter --output."
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return f"Permission denied to {doing} '{where}'; pass a writable --output or fix its permissions."
    if isinstance(exc, FileNotFoundError) and not layout.local:
        bucket = layout.root.split("/", 1)[0]
        if not bucket_exists(layout):
            return f"Cannot {doing} '{where}': the bucket '{bucket}' does not exist; create it or fix --output."
        # The bucket is there: the object went away between a listing and this call (another run's clean-up).
        return f"Cannot {doing} '{where}': it was removed meanwhile (by another run?); {resume}."
    return f"Cannot {doing} '{where}' ({_reason(exc)}); check --output and rerun."


def describe_open(spec: str, exc: BaseException) -> str | None:
    """The line for a store that fails as it is opened (before there is a Layout); None if not a store error."""
    if unreachable(exc):
        return (
            f"Cannot reach the output store '{spec}' ({_reason(exc)}); check the address, the network and "
            "the credentials, then rerun."
        )
    if _named(exc, _NO_CREDENTIALS_NAMES) or isinstance(exc, OSError):
        return f"Cannot open the output store '{spec}' ({_reason(exc)}); check --output and the credentials."
    return None


SCHEMES_HINT = "a local path, or an fsspec URL such as s3://, gs://, az://, memory://"


def _backend_hint(protocol: str, exc: BaseException) -> str:
    packages = {
        "s3": "s3fs",
        "s3a": "s3fs",
        "gs": "gcsfs",
        "gcs": "gcsfs",
        "az": "adlfs",
        "abfs": "adlfs",
        "abfss": "adlfs",
    }
    if protocol in packages:
        return f"install {packages[protocol]} (pip install {packages[protocol]})"
    return f"use {SCHEMES_HINT} ({str(exc).splitlines()[0].rstrip('.')})"


def open_layout(spec: str) -> Layout:
    """Resolve `spec` (local path or fsspec URL) to its Layout; an unknown scheme or missing backend is exit 5, at
    once. Here, not in layout.py, because a store that fails as it opens is told in this module's words."""
    import fsspec

    protocol = spec.split("://", 1)[0].lower() if "://" in spec else "file"
    try:
        fs, path = fsspec.core.url_to_fs(spec)
    except (ImportError, ValueError) as exc:
        raise OutputError(f"Cannot write output '{spec}': {_backend_hint(protocol, exc)}.") from None
    except Exception as exc:  # some back ends (ftp, sftp, ...) connect as the file system is made
        message = describe_open(short(spec), exc)
        if message is None:
            raise
        raise OutputError(message) from None
    return Layout.at(spec, fs, path)


def bucket_exists(layout: Layout) -> bool:
    """Does the bucket (the first part of an object store path) exist? True when it cannot be told."""
    bucket = layout.root.split("/", 1)[0]
    fs: AbstractFileSystem = layout.fs
    try:
        fs.invalidate_cache(bucket)
        return bool(fs.exists(bucket))
    except Exception:  # unreachable or not allowed to look: say nothing false about the bucket
        return True


MULTIPART_BLOCK = 16 << 20  # a merged output streams up in parts of this size, never whole in memory


class Store:
    """Reads and atomic writes under one output. Locally, no call follows a symbolic link inside the output:
    a link there (a records folder pointing elsewhere) is refused, so nothing outside OUT is ever read as
    ours, written or removed."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.fs: AbstractFileSystem = layout.fs

    def guard(self, path: str) -> str:
        """`path`, after checking that no folder or file from the output's root down to it is a symbolic link.

        The root a user names may itself be a link (their choice); everything batchscore makes below it, and
        the hidden parts folder of the single-file form, may not. Object stores have no links."""
        layout = self.layout
        if not layout.local or not layout.contains(path) or path == layout.target:
            return path
        top = os.path.dirname(layout.root) if layout.single_file else layout.root
        current = top
        for name in os.path.relpath(path, top).split(os.sep):
            if name in ("", "."):
                continue
            current = os.path.join(current, name)
            if os.path.islink(current):
                raise OutputError(
                    f"'{current}' inside the output is a symbolic link (to "
                    f"'{os.path.realpath(current)}'); batchscore never follows a link out of its "
                    "output: remove the link, or choose another --output."
                )
        return path

    # --- reading --------------------------------------------------------------------------------------------

    def names(self, folder: str | None = None) -> list[str]:
        """Entry names of a folder (the parts folder by default); [] if it does not exist."""
        folder = self.guard(folder or self.layout.root)
        self.fs.invalidate_cache(folder)  # object stores cache listings; another process may have written
        with store_errors(self.layout, folder, "list"):
            try:
                entries = self.fs.ls(folder, detail=False)
            except (FileNotFoundError, NotADirectoryError):
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
        with store_errors(self.layout, self.guard(path), "read"):
            return self.fs.cat_file(path)

    def head(self, path: str, size: int) -> bytes:
        """The first `size` bytes of a file."""
        with store_errors(self.layout, self.guard(path), "read"), self.fs.open(path, "rb") as fh:
            return fh.read(size)

    def read_record(self, path: str, fields: dict[str, str]) -> dict[str, Any]:
        """A run record (JSON) whose `fields` hold the given kinds (see `check_record`); anything else is
        exit 5 naming the file and the fix, never a traceback."""
        data = self.read_bytes(path)
        try:
            record: object = json.loads(data)
        except ValueError:
            record = None
        return check_record(self.layout, path, record, fields)

    def footer(self, path: str) -> dict[bytes, bytes] | None:
        """A Parquet file's key-value metadata; None if it is missing or not a readable Parquet file. A store
        that cannot be read (unreachable, permission) is an error, never taken for a damaged file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with store_errors(self.layout, self.guard(path), "read"):
            try:
                with self.fs.open(path, "rb") as fh:
                    return dict(pq.ParquetFile(fh).schema_arrow.metadata or {})
            except FileNotFoundError:
                return None
            except (pa.ArrowException, ValueError, EOFError) as exc:
                if unreachable(exc):
                    raise
                return None

    def schema(self, path: str) -> pa.Schema:
        import pyarrow.parquet as pq

        with store_errors(self.layout, self.guard(path), "read"), self.fs.open(path, "rb") as fh:
            return pq.ParquetFile(fh).schema_arrow

    # --- writing --------------------------------------------------------------------------------------------

    def makedirs(self, path: str) -> None:
        if self.layout.local:
            with store_errors(self.layout, self.guard(path), "create"):
                os.makedirs(path, exist_ok=True)
        # Object stores have no folders: a key's prefix exists once the key does.

    def put_bytes(self, path: str, data: bytes) -> dict[str, Any] | None:
        """Commit `data` at `path`: whole or not at all. Returns the object store's answer (S3: its ETag)."""
        with store_errors(self.layout, self.guard(path)):
            if not self.layout.local:
                return self.fs.pipe_file(path, data)
            self._replace_local(path, lambda fh: fh.write(data))
        return None

    def put_stream(self, path: str, write: Callable[[BinaryIO], object]) -> None:
        """Commit what `write(file)` writes, streamed (a merged output can be larger than memory)."""
        with store_errors(self.layout, self.guard(path)):
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

    def _replace_local(self, path: str, write: Callable[[BinaryIO], object]) -> None:
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(tmp, "xb") as fh:  # never through a link or over a file someone left under that name
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
        with store_errors(self.layout, self.guard(path), "remove"):
            try:
                if self.layout.local and os.path.isdir(path) and not os.path.islink(path):
                    import shutil

                    shutil.rmtree(path)
                else:
                    self.fs.rm(path, recursive=not self.layout.local)
            except FileNotFoundError:
                pass

    def remove_temp_files(self, owns: Callable[[str], bool] = lambda name: True) -> None:
        """Remove what a killed writer had in flight (local disks only: object stores have no temp files)."""
        if not self.layout.local:
            return
        folders = [(self.layout.root, owns), (self.layout.path(RECORDS), owns), (self.layout.quarantine, owns)]
        if self.layout.target is not None:  # the single-file form: a merge killed before its rename
            parent, target = os.path.split(self.layout.target)
            folders.append((parent, lambda name: name == target))
        for folder, mine in folders:
            for name in self.names(folder):
                match = TEMP.match(name)
                if match and mine(match.group(1)):
                    path = os.path.join(folder, name)
                    if not os.path.islink(path):
                        with contextlib.suppress(FileNotFoundError):
                            os.remove(path)


# What a record field may hold: a name for messages, and a test.
KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "text": ("text", lambda v: isinstance(v, str)),
    "count": ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "positive": ("a whole number >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "time": (
        "a number of seconds",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    ),
    "fraction": (
        "a number from 0 to 1",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
    ),
    "list": ("a list", lambda v: isinstance(v, list)),
}


def check_record(layout: Layout, path: str, record: object, fields: dict[str, str]) -> dict[str, Any]:
    """`record` (parsed JSON) if it is an object whose `fields` ({name: kind in KINDS}) hold their kind;
    else exit 5 naming the file, what is wrong and the fix."""
    problem = None
    if not isinstance(record, dict):
        problem = "is unreadable (damaged?)"
    else:
        for name, kind in fields.items():
            what, test = KINDS[kind]
            if not test(record.get(name)):
                shown = json.dumps(record.get(name))
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                problem = f"is damaged: its field '{name}' is {shown}, not {what}"
                break
    if problem is None and isinstance(record, dict):
        return record
    raise OutputError(
        f"Run record '{layout.url(path)}' {problem}; if no batchscore run is writing this output, "
        "delete that file and rerun."
    )


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Output:
    """One output as the rest of batchscore holds it: where its files are (layout) and how they are read and
    written (store). Opened once per job; the writer, finalize and the checks all take it."""

    layout: Layout
    store: Store

    @classmethod
    def open(cls, spec: str) -> Output:
        layout = open_layout(spec)
        return cls(layout, Store(layout))

    @classmethod
    def of(cls, output: str | Output) -> Output:
        return output if isinstance(output, Output) else cls.open(output)

"""Where everything of one output lives. The writer, finalize and the lease ask this object.

    OUT/part-000000.parquet           rows [0, N) in input order
    OUT/_SUCCESS                      empty, written last: the output is complete
    OUT/_manifest.parquet             0 rows with the output's schema; the manifest in its footer
    OUT/_batchscore/                  run records, only while the output is unfinished
        shard-00001-of-00003.json     shard 1 of 3 has committed all its chunks
        lease-all.json, lease-shard-00001-of-00003.json   leases on object stores (heartbeat records)
        lock, guard, shard-00001-of-00003.lock            kernel locks on local disks (0 bytes)

Every reader skips or reads harmlessly what is not data: pyarrow, pandas and
Spark skip names starting with `_` or `.`; polars reads every non-empty file
(so the records are removed at the end, `_SUCCESS` and the locks are empty, and
the manifest is a 0-row Parquet file); DuckDB's `OUT/*.parquet` sees parts and
the 0-row manifest.

A path ending in `.parquet` is the single-file form: the parts and records are
kept in a hidden folder beside it, `.NAME.parquet.parts/`, merged into NAME.parquet
(uploaded once, complete, on object stores) when every chunk is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import OutputError

SUCCESS = "_SUCCESS"
MANIFEST = "_manifest.parquet"
RECORDS = "_batchscore"
PART = re.compile(r"^part-(\d{6})\.parquet$")
MARKER = re.compile(r"^shard-(\d{5})-of-(\d{5})\.json$")
LEASE = re.compile(r"^lease-(all|shard-(\d{5})-of-(\d{5}))\.json$")
TEMP = re.compile(r"^\.(.+)\.[0-9a-f]{12}\.tmp$")  # `.<final name>.<token>.tmp`, local disks only

# Footer keys: every part carries the run's identity and config, and its own counts.
METADATA_KEY = b"batchscore"
RUN_KEY = b"batchscore.run"
CHUNK_KEY = b"batchscore.chunk"
MANIFEST_KEY = b"batchscore.manifest"

SCHEMES_HINT = "a local path, or an fsspec URL such as s3://, gs://, az://, memory://"


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def part_index(name: str) -> int | None:
    match = PART.match(name)
    return int(match.group(1)) if match else None


def marker_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.json"


def shard_tag(shard: int | None, num_shards: int | None) -> str:
    """'all' for a whole-output writer, 'shard-00001-of-00003' for a shard."""
    return "all" if shard is None else f"shard-{shard:05d}-of-{num_shards:05d}"


def _backend_hint(protocol: str, exc: BaseException) -> str:
    packages = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                "abfss": "adlfs"}
    if protocol in packages:
        return f"install {packages[protocol]} (pip install {packages[protocol]})"
    return f"use {SCHEMES_HINT} ({str(exc).splitlines()[0].rstrip('.')})"


@dataclass
class Layout:
    """One output: its file system, its folder of parts, and (single-file form) the merged file."""

    spec: str  # as the user wrote it, for messages
    fs: object  # fsspec file system
    protocol: str
    root: str  # folder of parts and records (fs path)
    target: str | None  # the merged file of the single-file form (fs path), else None

    @classmethod
    def open(cls, spec: str) -> Layout:
        """Resolve `spec` (local path or fsspec URL); an unknown scheme or missing backend is exit 5, at once."""
        import fsspec

        protocol = spec.split("://", 1)[0].lower() if "://" in spec else "file"
        try:
            fs, path = fsspec.core.url_to_fs(spec)
        except (ImportError, ValueError) as exc:
            raise OutputError(f"Cannot write output '{spec}': {_backend_hint(protocol, exc)}.") from None
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        path = path.rstrip("/") or path
        if spec.rstrip().endswith(".parquet"):
            parent, _, name = path.rpartition("/")
            return cls(spec, fs, protocol, f"{parent}/.{name}.parts", path)
        return cls(spec, fs, protocol, path, None)

    @property
    def local(self) -> bool:
        """A POSIX file system: atomic rename and kernel locks. Everything else is treated as an object store."""
        return self.protocol in ("file", "local")

    @property
    def single_file(self) -> bool:
        return self.target is not None

    @property
    def final(self) -> str:
        """What a reader opens: the folder, or the merged file."""
        return self.target or self.root

    def path(self, *names: str) -> str:
        return "/".join((self.root, *names))

    def record(self, name: str) -> str:
        return self.path(RECORDS, name)

    def url(self, path: str | None = None) -> str:
        """A path as the user would type it: plain on local disk, with its scheme elsewhere."""
        path = self.final if path is None else path
        return path if self.local else f"{self.protocol}://{path}"

    def contains_url(self, url: str) -> bool:
        """Like `contains`, for a path or URL as source.py shows them."""
        import os

        if "://" in url:
            protocol, path = url.split("://", 1)
            protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
            return not self.local and protocol in protocols and self.contains(path)
        return self.local and self.contains(os.path.abspath(url))

    def contains(self, path: str) -> bool:
        """True if `path` (a path on this output's file system) is part of this output."""
        path = path.rstrip("/")
        return path == self.target or path == self.root or path.startswith(self.root + "/")

"""Where everything of one output lives. The writer, finalize and the lease ask this object.

    OUT/part-000000.parquet           rows [0, N) in input order (part-1000000.parquet from chunk 1,000,000 on)
    OUT/_SUCCESS                      empty, written last: the output is complete
    OUT/_manifest.parquet             0 rows with the output's schema; the manifest in its footer
    OUT/_batchscore/                  run records, only while the output is unfinished
        shard-00001-of-00003.json     shard 1 of 3 has committed all its chunks (wider past 99999 shards)
        lease-all.json, lease-shard-00001-of-00003.json   leases on object stores (heartbeat records)
        lock, guard, shard-00001-of-00003.lock            kernel locks on local disks (0 bytes)
        calibration.json              --precision fastest: the precision every writer of this output uses

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
from typing import TYPE_CHECKING

from ..errors import OutputError
from ..location import Location
from ..plan import Shard

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

SUCCESS = "_SUCCESS"
MANIFEST = "_manifest.parquet"
RECORDS = "_batchscore"
CALIBRATION = "calibration.json"  # in RECORDS; output/calibration.py
# Numbers in names are zero-padded (parts to 6 digits, shards to 5) and grow wider past that; only the
# canonical spelling of a number counts, so `part-0000001.parquet` or `part-١٢٣٤٥٦.parquet` is nobody's part.
PART = re.compile(r"^part-([0-9]{6,})\.parquet$")
TEMP = re.compile(r"^\.(.+)\.[0-9a-f]{12}\.tmp$")  # `.<final name>.<token>.tmp`, local disks only

# Footer keys: every part carries the run's identity and config, and its own counts.
METADATA_KEY = b"batchscore"
RUN_KEY = b"batchscore.run"
CHUNK_KEY = b"batchscore.chunk"
MANIFEST_KEY = b"batchscore.manifest"


def finished_record(name: str) -> bool:
    """A run record whose content is in the manifest once the output is complete, so removed then: a shard's
    marker, the calibration (leases and locks go with their holders)."""
    return Shard.from_marker(name) is not None or name == CALIBRATION


def report_path(output: str) -> str:
    """Where `batchscore report` writes by default: beside the output, never inside it (polars reads every
    non-empty file under an output folder). OUT.report.html for a folder, x.report.html for x.parquet."""
    base = output.rstrip("/") or output
    return base.removesuffix(".parquet") + ".report.html"


def quarantine_path(output: str) -> str:
    """Where --on-bad-row quarantine keeps the bad records: beside the output, never inside it (polars reads every
    non-empty file under an output folder). OUT.quarantine/ for a folder, x.quarantine/ for x.parquet."""
    base = output.rstrip("/") or output
    return base.removesuffix(".parquet") + ".quarantine"


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def part_index(name: str) -> int | None:
    match = PART.match(name)
    return int(match.group(1)) if match and part_name(int(match.group(1))) == name else None


OBJECT_KEY_LIMITS = {"s3": 1024, "s3a": 1024, "gs": 1024, "gcs": 1024, "az": 1024, "abfs": 1024, "abfss": 1024}


def _limit(folder: str, name: str, default: int) -> int:
    import os

    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def short(text: str, keep: int = 40) -> str:
    """A long name, its head and tail, for a readable message."""
    return text if len(text) <= 2 * keep + 3 else f"{text[:keep]}...{text[-keep:]}"


@dataclass
class Layout:
    """One output: its file system, its folder of parts, and (single-file form) the merged file."""

    spec: str  # as the user wrote it, for messages
    fs: AbstractFileSystem
    protocol: str
    root: str  # folder of parts and records (fs path)
    target: str | None  # the merged file of the single-file form (fs path), else None

    @classmethod
    def at(cls, spec: str, fs: AbstractFileSystem, path: str) -> Layout:
        """The layout of `spec`, its file system `fs` open and `path` its path there. Opening is
        store.open_layout's: a store that fails as it opens is told in the store's words, which live there."""
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

    def check_names(self) -> None:
        """Refuse now, not at the final merge hours later, an output whose names, or the names batchscore makes
        from them, are longer than the store allows (exit 5)."""
        import os

        name = self.target.rsplit("/", 1)[-1] if self.target is not None else None
        # The longest names batchscore makes: a record's temp file (local) or lease (object stores) inside the
        # parts folder; beside a single file, its hidden parts folder and the merged file's temp file.
        inside = f"{RECORDS}/.{Shard(99999, 99999 + 1).marker_name}.{'0' * 12}.tmp"
        beside = [f".{name}.parts", f".{name}.{'0' * 12}.tmp"] if name else []
        longest = f"{self.root}/{inside}"
        if not self.local:
            if self.protocol in OBJECT_KEY_LIMITS:  # buckets: keys up to 1024 bytes (S3, GCS, Azure)
                key = len(longest.split("/", 1)[-1].encode())
                if key > OBJECT_KEY_LIMITS[self.protocol]:
                    raise OutputError(
                        f"Output '{short(self.url())}' is too long: batchscore's keys under it "
                        f"would have {key} bytes, over the store's {OBJECT_KEY_LIMITS[self.protocol]};"
                        " pass a shorter --output."
                    )
            return
        existing = os.path.dirname(self.final) or "/"
        while not os.path.isdir(existing) and existing != os.path.dirname(existing):
            existing = os.path.dirname(existing)
        name_max, path_max = _limit(existing, "PC_NAME_MAX", 255), _limit(existing, "PC_PATH_MAX", 4096)
        given = self.final.split("/")
        for part in [*given, *beside]:
            size = len(os.fsencode(part))
            if size > name_max:
                made = (
                    f"'{short(str(name))}' is too long: batchscore makes '{short(part)}' from it"
                    if part not in given
                    else f"'{short(part)}' is too long"
                )
                raise OutputError(
                    f"Output name {made}, {size} bytes, over the file system's limit of {name_max}; "
                    "pass a shorter --output."
                )
        if len(os.fsencode(longest)) >= path_max:
            raise OutputError(
                f"Output path '{short(self.final)}' is too long: batchscore's paths under it would "
                f"have {len(os.fsencode(longest))} bytes, over the file system's {path_max - 1}; pass "
                "a shorter --output."
            )

    def path(self, *names: str) -> str:
        return "/".join((self.root, *names))

    @property
    def quarantine(self) -> str:
        """The quarantine folder (fs path): one Parquet file of bad records per chunk that met any, named as its
        part is."""
        return quarantine_path(self.final)

    def record(self, name: str) -> str:
        return self.path(RECORDS, name)

    def url(self, path: str | None = None) -> str:
        """A path as the user would type it: plain on local disk, with its scheme elsewhere."""
        path = self.final if path is None else path
        return path if self.local else f"{self.protocol}://{path}"

    @property
    def location(self) -> Location:
        """This output, to compare inputs with: its folder, or its merged file and the parts folder beside it."""
        return Location(self.fs, self.final, self.spec, beside=self.root if self.single_file else None)

    def contains(self, path: str) -> bool:
        """True if `path` (a path on this output's file system) is part of this output."""
        path = path.rstrip("/")
        return path == self.target or path == self.root or path.startswith(self.root + "/")

"""Where an input or an output lives: an fsspec file system and a path on it.

The input and the output are compared as Locations, so "is the input inside
the output" compares paths on one file system, never display strings.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

WILDCARDS = "*?["


def protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    """The URL schemes of a file system: ('file', 'local'), ('s3', 's3a'), ('memory',)."""
    return tuple(fs.protocol) if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)


def is_local(fs: AbstractFileSystem) -> bool:
    return protocols(fs)[0] in ("file", "local")


def display(fs: AbstractFileSystem, path: str) -> str:
    """A path as the user would type it: plain on local disk, with its scheme elsewhere."""
    return path if is_local(fs) else f"{protocols(fs)[0]}://{path}"


def glob_base(spec: str) -> str:
    """The folder above a glob's first wildcard, as written ('.' for a wildcard in the first name)."""
    return spec[: min(spec.index(c) for c in WILDCARDS if c in spec)].rpartition("/")[0] or "."


@dataclass(frozen=True)
class Location:
    fs: AbstractFileSystem
    path: str  # on fs
    spec: str  # as the user wrote it (or as the file's listing showed it), for messages
    # A second path that belongs to this location: the hidden parts folder beside a single-file output.
    beside: str | None = None

    @classmethod
    def of(cls, spec: str) -> Location | None:
        """Where a path, glob or URL lives (for a glob, the folder above its first wildcard); None for a name
        that is no local path and no URL (a Hub dataset). An unknown URL scheme raises fsspec's ImportError or
        ValueError."""
        import fsspec

        where = glob_base(spec) if any(c in spec for c in WILDCARDS) else spec
        if "://" not in where and not os.path.exists(where):
            return None
        fs, path = fsspec.core.url_to_fs(where)
        return cls(fs, path, where)

    @property
    def url(self) -> str:
        return display(self.fs, self.path)

    def contains(self, other: Location) -> bool:
        """True if `other` is this location, or lies inside it, on the same file system."""
        if not set(protocols(self.fs)) & set(protocols(other.fs)):
            return False
        inner = self._normal(other.path)
        for outer in (self.path, self.beside):
            if outer is not None:
                outer = self._normal(outer)
                if inner == outer or inner.startswith(outer.rstrip("/") + "/"):
                    return True
        return False

    def _normal(self, path: str) -> str:
        # fsspec keeps 'a/../b' and 'a//b' in local paths as written: compare them as the kernel resolves them.
        path = path.rstrip("/") or path
        return posixpath.normpath(path) if is_local(self.fs) else path

"""Where an input, an output, a cache or a report lives: an fsspec file system and a path on it.

Places are compared as Locations, so "is the cache inside the output" compares paths on one file system as
the store resolves them (local: symlinks and '..' followed; object stores: one spelling of a key), never
display strings. What may lie where is `ownership.py`'s rule.
"""

from __future__ import annotations

import functools
import os
import re
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

    @classmethod
    def at(cls, spec: str) -> Location:
        """Where a writer would write `spec` (a path or URL), whether or not anything is there yet. An unknown URL
        scheme raises fsspec's ImportError or ValueError."""
        import fsspec

        fs, path = fsspec.core.url_to_fs(spec)
        return cls(fs, path, spec)

    @property
    def url(self) -> str:
        return display(self.fs, self.path)

    def contains(self, other: Location) -> bool:
        """True if `other` is this location, or lies inside it, on the same file system."""
        return self.relation(other) in ("same", "holds")

    def relation(self, other: Location) -> str | None:
        """How `other` lies to this location on the same file system: "same" (a path of one is a path of the
        other), "holds" (inside this one), "inside" (this one lies inside it), or None (apart)."""
        if not set(protocols(self.fs)) & set(protocols(other.fs)):
            return None
        mine, theirs = self._paths(), other._paths()
        if mine & theirs:
            return "same"
        if any(_below(inner, outer) for inner in theirs for outer in mine):
            return "holds"
        if any(_below(inner, outer) for inner in mine for outer in theirs):
            return "inside"
        return None

    @functools.cached_property
    def resolved(self) -> str:
        """The path as the store resolves it (local: symlinks and '..' followed)."""
        return self._normal(self.path)

    def _paths(self) -> set[str]:
        return {self.resolved} | ({self._normal(self.beside)} if self.beside is not None else set())

    def _normal(self, path: str) -> str:
        return normal_path(self.fs, path)


def _below(inner: str, outer: str) -> bool:
    return inner.startswith(outer.rstrip("/") + "/")


def normal_path(fs: AbstractFileSystem, path: str) -> str:
    """One spelling of a path, as the store resolves it. Local: the kernel's (fsspec keeps 'a/../b', 'a//b' and
    symlinks as written; a symlink into the output must count as the output, and the part not there yet is
    normalized as written). Object stores: keys have no '..', but 'b//k' and 'b/k/' name one prefix to a user."""
    path = path.rstrip("/") or path
    if is_local(fs):
        return os.path.realpath(path)
    return re.sub("/{2,}", "/", path)

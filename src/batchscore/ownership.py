"""Who may write where: the one rule every writer asks before it writes.

The places a command touches are the input (read only) and what it writes: the output, the result cache, the
report page and its PNG folder. Each is a `Place` (a `Location`, so paths are compared as the store resolves
them: symlinks, '..', 'a//b' and URL spellings followed) with what it owns. A writer is refused, before
anything is written or scored, when it would be

- *onto* another place (the same path), or hold one (a writer that owns everything below its path: the
  output, the cache, the page's path): writing or clearing it would overwrite what it holds;
- *inside* a place that readers take whole (the output and the cache: polars, pyarrow.dataset and Spark read
  every file under an output, a cache takes every file under it for an entry), or inside the input when its
  files would be read back as input rows (the cache's Parquet files).

Allowed on purpose: the output inside an input folder (the input's readers leave this job's output out), and
the page or PNGs inside an input folder (.html and .png are no input format) or beside the output.

The writer's role decides the exit code: the output's placement is exit 5 (as every other output error), a
cache, page or PNG folder given in the wrong place is a bad option, exit 2.
"""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, NoReturn, Sequence

from .errors import ConfigError, OutputError
from .location import Location, display, is_local

if TYPE_CHECKING:
    from .output.layout import Layout

INPUT = "the input"
OUTPUT = "the output"
CACHE = "the cache"
PAGE = "the report page"
PNGS = "the PNG folder"
QUARANTINE = "the quarantine"


@dataclass(frozen=True)
class Place:
    role: str  # INPUT, OUTPUT, CACHE, PAGE or PNGS
    location: Location
    fix: str  # how the user moves it, for the message: "pass another --cache", ...
    owns_below: bool = False  # it owns its path and everything below: holding another place would overwrite it
    whole: bool = False  # readers take every file under it as its own: nothing else may be inside
    fits_in_input: bool = True  # may lie inside an input folder: its files are never read back as input

    @property
    def title(self) -> str:
        name = self.role.removeprefix("the ")
        return name[:1].upper() + name[1:]


def output_place(where: Layout | Location, fix: str = "choose another --output") -> Place:
    location = where if isinstance(where, Location) else where.location
    return Place(OUTPUT, location, fix, owns_below=True, whole=True)


def cache_place(spec: str) -> Place:
    return Place(CACHE, _at(spec, "--cache"), "pass another --cache", owns_below=True, whole=True, fits_in_input=False)


def page_place(spec: str, fix: str = "pass another -o (the default is beside the output)") -> Place:
    # A file: nothing can be inside it, and writing it replaces whatever is at its path.
    return Place(PAGE, _at(spec, "-o"), fix, owns_below=True, whole=True)


def quarantine_place(spec: str) -> Place:
    # Parquet files beside the output: read whole (polars, DuckDB), and read back as input rows inside an input.
    fix = "choose another --output (the quarantine is beside it, OUT.quarantine/)"
    return Place(QUARANTINE, _at(spec, "-o"), fix, owns_below=True, whole=True, fits_in_input=False)


def png_place(spec: str) -> Place:
    # A folder batchscore adds chart files to: it may hold other things (`--png .`), but not be another place.
    return Place(PNGS, _at(spec, "--png"), "pass another --png")


def input_place(location: Location) -> Place:
    return Place(INPUT, location, "")


def input_places(spec: str | None, files: Iterable[str] = ()) -> list[Place]:
    """The input as the user named it (a glob: the folder above its wildcard, shown as the glob) and each of its
    files; none for a Hub dataset name."""
    places = []
    for where in (spec, *files):
        location = _existing(where) if where else None
        if where and location is not None:
            places.append(input_place(dataclasses.replace(location, spec=where)))
    return places


def check(writers: Sequence[Place], others: Sequence[Place] = ()) -> None:
    """Refuse the first writer that would be onto, hold, or be inside a place it must not (module docstring),
    or inside another output: a folder holding an output's marks that is none of the places named here."""
    for writer in writers:
        for other in (*writers, *others):
            if other is not writer:
                _check_pair(writer, other)
    named = [place.location for place in (*writers, *others)]
    for writer in writers:
        _refuse_foreign_output(writer, named)


def _check_pair(writer: Place, other: Place) -> None:
    relation = writer.location.relation(other.location)
    if relation is None:
        return
    if relation == "same" or (relation == "holds" and writer.owns_below):
        problem = f"would overwrite or hold {other.role} '{other.location.spec}'"
    elif relation == "inside" and (other.whole or (other.role == INPUT and not writer.fits_in_input)):
        why = (
            "whose readers would take its files for input rows"
            if other.role == INPUT
            else "where readers take every file for its own"
        )
        problem = f"would be inside {other.role} '{other.location.spec}', {why}"
    else:
        return
    _refuse(writer, problem + _resolved(writer))


def _refuse(writer: Place, problem: str) -> NoReturn:
    error = OutputError if writer.role == OUTPUT else ConfigError
    raise error(f"{writer.title} '{writer.location.url}' {problem}; {writer.fix}.")


def _refuse_foreign_output(writer: Place, named: list[Location]) -> None:
    """Another run's output (or a Spark/Hadoop one) above the writer, or at its path: its readers take every file
    under it for data. The places this command names are judged by the pair rule, so they are passed over: an
    output's own folder holds its marks."""
    from .output.layout import MANIFEST, RECORDS, SUCCESS

    location = writer.location
    fs = location.fs
    for folder in _folders_at_and_above(location):
        here = Location(fs, folder, folder)
        if any(place.relation(here) == "same" for place in named if place is not location) or (
            folder == location.resolved and writer.role == OUTPUT
        ):
            continue
        try:
            marked = next((m for m in (MANIFEST, RECORDS, SUCCESS) if fs.exists(f"{folder}/{m}")), None)
        except Exception:  # an unreachable store is the writer's own error to report, where it opens
            return
        if marked is not None:
            shown = location.url if folder == location.resolved else display(fs, folder)
            _refuse(
                writer,
                f"would be inside another output, '{shown}' (it holds {marked}), whose readers take every file "
                "under it for data",
            )


def _folders_at_and_above(location: Location) -> list[str]:
    """The writer's own path and every folder above it that exists (up to the root, or the bucket)."""
    path = location.resolved
    folders = []
    while True:
        folders.append(path)
        parent = posixpath.dirname(path)
        if not parent or parent == path or (not is_local(location.fs) and "/" not in path):
            return folders
        path = parent


def _resolved(writer: Place) -> str:
    """Where the two meet, when a symlink or '..' hid it: the spellings alone would not show why."""
    shown = writer.location.resolved
    if shown in (writer.location.path, writer.location.spec):
        return ""
    return f" (it resolves to '{shown}')"


def _at(spec: str, option: str) -> Location:
    try:
        return Location.at(spec)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"Cannot use {option} '{spec}': {exc}.") from None


def _existing(spec: str) -> Location | None:
    try:
        return Location.of(spec)
    except (ImportError, ValueError):  # an unknown URL scheme: opening the input says so
        return None

"""The output store's errors, seen from the cache: a failing store told apart from a damaged file, and its one-line
messages worded for --cache."""

from __future__ import annotations

import contextlib
from typing import Iterator

from ..errors import OutputError


def store_failure(exc: BaseException) -> bool:
    """True if `exc` says the store failed (unreachable, no credentials, permission denied), not the file: such a
    file is not damaged, and compaction must never remove it."""
    import errno

    from ..output.store import _NO_CREDENTIALS_NAMES, _named, unreachable

    denied = isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM)
    return denied or unreachable(exc) or _named(exc, _NO_CREDENTIALS_NAMES)


def cache_message(message: str) -> str:
    """The output package's one-line store errors, reworded for the cache (they name --output and chunks)."""
    return (
        message.replace("--output", "--cache")
        .replace("committed chunks are kept", "the cache's files are kept")
        .replace("Cannot write output '", "Cannot open cache '")
        .replace("the output store '", "the cache store '")
    )


@contextlib.contextmanager
def cache_errors() -> Iterator[None]:
    """Store errors raised inside, reworded to name the cache rather than the output."""
    try:
        yield
    except OutputError as exc:
        raise OutputError(cache_message(exc.message)) from None

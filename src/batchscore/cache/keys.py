"""A text's cache key: the 128-bit BLAKE2b digest of its UTF-8 bytes, as two unsigned 64-bit halves.

128 bits keep a collision (two texts taking each other's scores) out of reach at any corpus size: among a
billion texts the chance is about 1 in 10^20. The halves are big-endian, so sorting (h1, h2) as numbers sorts
the digests as bytes; files are sorted that way and their row groups' h1 statistics say where a key can be.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

KEY_BYTES = 16


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The keys of `texts`, shape (len(texts), 2), dtype uint64."""
    from hashlib import blake2b

    joined = b"".join(blake2b(text.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest() for text in texts)
    return np.frombuffer(joined, dtype=">u8").astype(np.uint64).reshape(len(texts), 2)


def unique_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct keys sorted by (h1, h2), the first row holding each, and each row's distinct key:
    keys == distinct[inverse]."""
    if len(keys) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return keys.reshape(0, 2), empty, empty
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: the first row of equal keys comes first
    ordered = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    group = np.cumsum(starts) - 1
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = group
    return ordered[starts], order[starts], inverse

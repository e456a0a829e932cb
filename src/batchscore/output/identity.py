"""What an output is a run of: by content, so copies of one model agree and a changed file does not.

A local model is identified by the SHA-256 of the files that decide its
scores (weights, config, tokenizer), not by their path, size or mtime: the
same model copied to every node, or redeployed, is the same model; a changed
`tokenizer.json` is another. Weights up to FULL_HASH_BYTES are hashed whole
(about 1 s per GB); above that, the safetensors header (names, dtypes,
shapes), the size and SAMPLES evenly spaced 1 MiB blocks. A Hub model is
identified by its resolved commit.

The input fingerprint stays cheap: paths, sizes and modification stamps (or
object ETags). It cannot see a file rewritten with the same size in the same
second, nor a Hub dataset without a commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config import JobConfig

# Files that change what a model computes. Model cards, READMEs and training logs do not.
_DECISIVE = (".safetensors", ".bin", ".json", ".txt", ".model")
_IGNORED = ("README.md", "training_args.bin", "trainer_state.json", "evaluation.json")
FULL_HASH_BYTES = 2 << 30
SAMPLES = 64
BLOCK = 1 << 20


class InputIdentity(Protocol):
    """What run_identity reads of the input: its content's fingerprint, else its description."""

    @property
    def fingerprint(self) -> dict[str, Any]: ...

    @property
    def description(self) -> str: ...


def run_hash(identity: dict[str, Any]) -> str:
    """A short fingerprint of a run's identity, stamped on each part it writes."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def model_fingerprint(model_id: str, revision: str | None) -> dict[str, Any]:
    if not os.path.isdir(model_id):
        return {"hub": model_id, "commit": revision}
    names = sorted(
        n
        for n in os.listdir(model_id)
        if n.endswith(_DECISIVE) and n not in _IGNORED and os.path.isfile(os.path.join(model_id, n))
    )
    paths = [os.path.join(model_id, n) for n in names]
    full = sum(os.path.getsize(p) for p in paths) <= FULL_HASH_BYTES
    digest = hashlib.sha256()
    for name, path in zip(names, paths):
        digest.update(name.encode() + b"\0")
        digest.update(_file_digest(path) if full or not name.endswith(".safetensors") else _sampled_digest(path))
    return {"content_sha256": digest.hexdigest(), "hashed": "full" if full else "header+samples"}


def _file_digest(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK * 8), b""):
            digest.update(block)
    return digest.digest()


def _sampled_digest(path: str) -> bytes:
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        digest.update(fh.read(min(header_len, 100 << 20)))  # tensor names, dtypes, shapes, offsets
        for i in range(SAMPLES):
            fh.seek(size * i // SAMPLES)
            digest.update(fh.read(BLOCK))
    return digest.digest()


def run_identity(
    cfg: JobConfig, source: InputIdentity, models: list[dict[str, Any]], out_columns: list[str]
) -> dict[str, Any]:
    """Everything that changes which rows or which scores an output holds.

    An output can be resumed only by a run with the same identity. Batch size,
    workers and progress are left out: they change speed, not results. `models`
    are each model's part (the scoring core's `identity_parts`): a run of
    several lists them under `models`, in order (adding, removing or reordering
    a model is another run); a run of one keeps the identity it had before
    several models were possible.
    """
    identity: dict[str, Any] = {
        "input": source.fingerprint or source.description,
        "limit": cfg.limit,
        "chunk_rows": cfg.chunk_rows,
        "text_column": cfg.text_column,
        "columns": out_columns,
    }
    if len(models) == 1:
        return identity | models[0]
    return identity | {"models": models}

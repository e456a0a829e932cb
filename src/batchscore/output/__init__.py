"""Everything about OUT, on any store: layout, commit protocol, lease, run identity, damage repair, finalize.

The rest of batchscore asks this package; nothing else names a file in OUT.
"""

from .finalize import Finalized, finalize, wait_for_shards
from .identity import run_identity
from .layout import Layout
from .manifest import read_manifest
from .store import Output
from .writer import Existing, OutputWriter, check_output

__all__ = [
    "Existing",
    "Finalized",
    "Layout",
    "Output",
    "OutputWriter",
    "check_output",
    "finalize",
    "read_manifest",
    "run_identity",
    "wait_for_shards",
]

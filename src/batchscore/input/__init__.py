"""Open the input and stream it as Arrow record batches, never whole.

Files (local, glob, folder, any fsspec URL) are read one after another in
sorted order, so row order is stable across runs: Parquet by pyarrow.dataset
(parquet.py), CSV, TSV and JSON Lines by pyarrow's streaming readers (text.py).
Hub datasets (hub.py), Hub-style dataset folders and `save_to_disk` folders
(saved.py) go through the `datasets` library. Every reader has the interface
of base.Reader.
"""

from .encoding import REPLACE_CODEC, check_encoding
from .open import open_source

__all__ = ["REPLACE_CODEC", "check_encoding", "open_source"]

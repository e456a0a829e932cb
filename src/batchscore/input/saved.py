"""`save_to_disk` folders: memory-mapped Arrow files read through `datasets`; any range of rows is a slice."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

from ..errors import InputError, first_line
from .base import READ_BATCH_ROWS, Reader
from .messages import printable

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa


def arrow_batches(dataset: datasets.Dataset | datasets.IterableDataset, columns: list[str] | None) -> Iterator:
    """A `datasets` dataset's rows as pyarrow Tables of READ_BATCH_ROWS rows."""
    if columns is not None:
        dataset = dataset.select_columns(columns)
    # .iter() on an arrow-formatted dataset yields pa.Tables and, unlike
    # __iter__, does not re-shard itself when called inside a DataLoader worker.
    return dataset.with_format("arrow").iter(batch_size=READ_BATCH_ROWS)


class SavedDatasetReader(Reader):
    def __init__(self, path: str, split: str) -> None:
        import datasets

        try:
            loaded = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as exc:
            raise InputError(f"Cannot load saved dataset '{path}': {first_line(exc)}.") from None
        except Exception as exc:  # a damaged folder fails inside `datasets` and pyarrow in many classes
            raise InputError(
                f"Cannot load saved dataset '{path}' ({type(exc).__name__}: {printable(first_line(exc))});"
                " the folder is damaged: save the dataset again."
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise InputError(f"Split '{split}' not in '{path}'; splits are: {', '.join(loaded)}. Pass --split.")
            loaded = loaded[split]
        self.dataset = loaded
        super().__init__(
            f"{path} (saved dataset, split {split})",
            [path],
            loaded.features.arrow_schema,
            loaded.num_rows,
            {"saved_dataset": os.path.abspath(path), "split": split, "dataset_fingerprint": loaded._fingerprint},
        )

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        yield from arrow_batches(self.dataset, columns)

    def read_rows(self, columns: list[str] | None, start: int, stop: int) -> Iterator[pa.Table]:
        # Memory-mapped Arrow files: a slice reads only its own rows.
        self.rows_decoded += max(min(stop, self.dataset.num_rows) - start, 0)
        dataset = self.dataset if columns is None else self.dataset.select_columns(columns)
        yield dataset.with_format("arrow")[start:stop]

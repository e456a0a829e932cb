"""Hub datasets, and Hub-style dataset folders (a README.md beside the data), streamed through `datasets`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

from ..errors import BatchscoreError, InputError, first_line
from .base import Reader
from .messages import printable
from .saved import arrow_batches

if TYPE_CHECKING:
    import pyarrow as pa


class HubDatasetReader(Reader):
    def __init__(self, name: str, split: str, dataset_config: str | None) -> None:
        import datasets

        self.name = name
        try:
            self.streamed = datasets.load_dataset(name, dataset_config, split=split, streaming=True)
        except ValueError as exc:
            # datasets raises ValueError for an unknown split or config; say which.
            raise InputError(
                f"Cannot open dataset '{name}': {first_line(exc)} Pass --split / --dataset-config."
            ) from None
        except Exception as exc:  # Hub errors come in many classes (HTTP, offline, not found)
            raise InputError(
                f"Cannot open Hub dataset '{name}' ({type(exc).__name__}: {first_line(exc)}); "
                "check the name, or pass a local file."
            ) from None
        if self.streamed.features is not None:
            schema = self.streamed.features.arrow_schema
        else:  # some streamed formats only know their columns once read: peek at the first rows
            first = next(self._streamed(self.streamed.take(1).with_format("arrow").iter(batch_size=1)), None)
            if first is None:
                raise InputError(
                    f"Dataset '{name}' (split {split}) has no rows and declares no columns; check the name and --split."
                )
            schema = first.schema
        super().__init__(
            f"{name} (Hub dataset, split {split})",
            [],
            schema,
            None,
            {"dataset": name, "config": dataset_config, "split": split, "revision": _dataset_revision(name)},
        )

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        yield from self._streamed(arrow_batches(self.streamed, columns))

    def _streamed(self, batches: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """A streamed dataset's batches; `datasets` parses files while streaming and fails in its readers' own
        classes (pandas' ParserError, JSON and HTTP errors): one InputError naming the dataset."""
        try:
            yield from batches
        except BatchscoreError:
            raise
        except Exception as exc:
            raise InputError(
                f"Cannot read dataset '{self.name}' ({type(exc).__name__}: {printable(first_line(exc))}); "
                "fix the file it names, or check the dataset."
            ) from None


def _dataset_revision(name: str) -> str | None:
    """The Hub commit of a dataset repo, or file stamps of a local Hub-style folder."""
    if os.path.isdir(name):
        import fsspec

        from .resolve import file_stats

        fs = fsspec.filesystem("file")
        return str(file_stats(fs, sorted(fs.find(name))))
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name).sha
    except Exception:  # offline or private: resume then trusts name + split
        return None

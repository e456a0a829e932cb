"""The DataLoader's side of a run: each chunk the plan reads, put through the scorers' worker step.

Runs in DataLoader worker processes (when num_workers > 0) so that reading and encoding overlap with the model.
Each item is a whole chunk, so chunks come out in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Protocol, Sequence

import torch

from ..errors import BatchscoreError
from ..plan import Chunk, InputEnd, Plan

if TYPE_CHECKING:
    from types import FrameType


class WorkerStep(Protocol):
    """What a DataLoader worker does to a chunk it read: encode it, or (under a result cache) pass it on as read."""

    def encode(self, chunk: Chunk, out_columns: Sequence[str]) -> Any: ...


def quiet_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a stop signal ends a worker quietly; the job's process alone reports it.

    SIGTERM or SIGHUP to the process group (a scheduler, a closed terminal) and
    Ctrl-C reach the workers too. torch's own SIGTERM handler re-raises the
    signal in a worker, and the job's process then prints a traceback ("worker
    is killed by signal") while it shuts the DataLoader down; SIGINT raises
    KeyboardInterrupt inside the worker. A worker holds nothing that needs
    cleaning up (the job's process commits and releases), so it just exits 0.
    A signal the job ignores (`nohup`'s SIGHUP) stays ignored here too.
    """
    import signal

    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _exit_quietly)


def _exit_quietly(signum: int, frame: FrameType | None) -> NoReturn:
    import os

    os._exit(0)


class ChunkDataset(torch.utils.data.IterableDataset):
    """Yields each chunk this process still has to do, through the worker step, in chunk order, then an InputEnd.

    Which chunks, and which rows to read for them, is the plan's business
    (plan.py). With W DataLoader workers, worker w takes every W-th of them;
    the DataLoader's round-robin over workers then restores chunk order.
    """

    def __init__(
        self,
        plan: Plan,
        open_source: Callable[[], Any],
        read_columns: list[str],
        out_columns: list[str],
        step: WorkerStep,
        source: Any = None,
    ):
        self.plan = plan
        self.open_source = open_source  # picklable callable -> Source, for worker processes
        self.source = source  # the job's own open source: reused when there are no worker processes
        self.read_columns = read_columns
        self.out_columns = out_columns
        self.step = step

    def __getstate__(self) -> dict:
        return {**self.__dict__, "source": None}  # a Source holds open readers: each worker opens its own

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        try:
            source = self.source if info is None and self.source is not None else self.open_source()
            for item in self.plan.read(source, self.read_columns, worker, workers):
                yield item if isinstance(item, InputEnd) else self.step.encode(item, self.out_columns)
        except BatchscoreError as exc:
            if info is None:
                raise
            # From a worker process, the DataLoader would re-raise it as a new exception whose message is a
            # traceback: hand it over whole instead, for the job to raise (in chunk order, after the chunks
            # before it).
            yield exc

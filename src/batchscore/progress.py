"""Progress while a job scores: advanced per batch (rows and tokens as they are scored), not per chunk.

On a terminal, a bar (tqdm) with rows/s, tokens/s and the ETA from the first batches on. Without one (cron,
Airflow, Slurm), a bar redrawn into a log file is noise: one line every `every` seconds instead, with the
percent, rows/s, tokens/s and ETA, through the logger, so `--log-format json` makes it a structured event
(`event: progress`) and `--quiet` silences it.

A chunk's rows are counted as its batches finish: each batch stands for its share of the chunk's rows (its
rows, or windows, out of all the chunk's), so a chunk of 10,000 rows moves the bar in a few hundred steps;
when the chunk is written the count snaps to its exact rows. With several models each model's batches count
for its share. Batches may be reported from several threads (models side by side): counts are locked.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from .logs import duration, fields

log = logging.getLogger(__name__)


def now() -> float:
    """The clock progress is measured on (a test swaps it for a fake one)."""
    return time.monotonic()


class Progress:
    """Context manager: `batch(rows, tokens)` after each scored batch, `chunk(rows)` once a chunk is written."""

    def __init__(self, total: int | None, label: str, bar: bool, every: float, clock: Any = None):
        self.total, self.label, self.every = total, label, every
        self.clock = clock or now
        self.use_bar = bar
        self.rows = 0  # rows of written chunks
        self.partial = 0.0  # rows of the chunk in flight, as its batches finish
        self.tokens = 0
        self.started = self.clock()
        self.last_line = self.started
        self._lock = threading.Lock()
        self._bar: Any = None
        self._shown = 0  # rows the bar shows (whole numbers)

    def __enter__(self) -> Progress:
        if self.use_bar:
            import sys

            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total, unit="rows", desc=f"scoring{self.label}", file=sys.stderr, dynamic_ncols=True
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()

    @property
    def done(self) -> float:
        return self.rows + self.partial

    def rates(self) -> tuple[float, float, float | None]:
        """rows/s, tokens/s and the ETA in seconds (None: the total is not known, or nothing is done yet)."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rows_per_second = self.done / elapsed
        eta = None
        if self.total is not None and rows_per_second > 0:
            eta = max(self.total - self.done, 0) / rows_per_second
        return rows_per_second, self.tokens / elapsed, eta

    def batch(self, rows: float, tokens: int) -> None:
        with self._lock:
            self.partial += rows
            self.tokens += tokens
            self._show()

    def chunk(self, rows: int) -> None:
        with self._lock:
            self.rows += rows
            self.partial = 0.0
            self._show()

    def _show(self) -> None:
        if self._bar is not None:
            whole = int(self.done)
            if whole != self._shown:
                rows_per_second, tokens_per_second, _ = self.rates()
                self._bar.set_postfix_str(f"{tokens_per_second:,.0f} tokens/s", refresh=False)
                self._bar.update(whole - self._shown)  # tqdm shows rows/s and the ETA from its own clock
                self._shown = whole
            return
        now = self.clock()
        if self.every > 0 and now - self.last_line >= self.every:
            self.last_line = now
            self.line()

    def line(self) -> None:
        """One progress line: percent, rows/s, tokens/s, ETA."""
        rows_per_second, tokens_per_second, eta = self.rates()
        done = int(self.done)
        of = f" of {self.total:,} rows ({done / self.total:.1%})" if self.total else " rows"
        until = f", ETA {duration(eta)}" if eta is not None else ""
        log.info(
            f"Progress{self.label}: {done:,}{of}, {rows_per_second:,.0f} rows/s, {tokens_per_second:,.0f} tokens/s"
            f"{until}",
            **fields(
                event="progress",
                rows_done=done,
                rows_total=self.total,
                percent=round(100 * done / self.total, 2) if self.total else None,
                rows_per_second=round(rows_per_second, 1),
                tokens_per_second=round(tokens_per_second, 1),
                eta_seconds=None if eta is None else round(eta, 1),
            ),
        )

"""`batchscore report OUT`: one self-contained HTML page (and PNG files) about an output, complete or not.

Reads the output only (output.survey, then a streaming pass over its data files: report.collect), draws
with matplotlib (report.plots) and writes the page beside the output, never inside it (polars reads every
non-empty file under an output folder). The job imports nothing from here; `batchscore score --report`
calls `write_report` once the output is complete.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BatchscoreError, ConfigError, OutputError

if TYPE_CHECKING:
    from ..output.survey import Survey
    from .collect import Facts

LOW_CONFIDENCE = 0.6
SAMPLES = 10


@dataclass
class Report:
    path: str  # where the page was written, as the user would type it
    charts: list[str]  # the charts' names, in page order (the PNG files' stems)
    facts: Facts


def default_path(output: str) -> str:
    """Beside the output: OUT.report.html for a folder, x.report.html for x.parquet."""
    from ..output.layout import report_path

    return report_path(output)


def write_report(
    output: str,
    path: str | None = None,
    *,
    by: tuple[str, ...] | list[str] = (),
    low_confidence: float = LOW_CONFIDENCE,
    samples: int = SAMPLES,
    png_dir: str | None = None,
    shown_as: str | None = None,
) -> Report:
    """Write the report page of the output at `output` (a path or URL) to `path` (default: `default_path`);
    `shown_as`: what the page calls the output (a table's staged run: the table)."""
    from ..output.survey import survey
    from .collect import By, collect
    from .page import render_page

    if not 0.0 <= low_confidence <= 1.0:
        raise ConfigError(f"--low-confidence must be between 0 and 1, got {low_confidence}.")
    groupings = [By.parse(text) for text in by]
    path = path or default_path(output)
    found = survey(output)
    _check_places(found, path, png_dir)
    facts = collect(found, groupings, threshold=low_confidence, samples=samples)
    if png_dir is not None:
        try:
            os.makedirs(png_dir, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot create the PNG folder '{png_dir}' ({exc.strerror}); pass another --png."
            ) from None
    page, charts = render_page(facts, png_dir, shown_as)
    _write(path, page.encode("utf-8"))
    return Report(path, charts, facts)


def _check_places(found: Survey, path: str, png_dir: str | None) -> None:
    """The page and the PNG folder where ownership's rule allows them: never inside (or onto) the output, whose
    readers take every file for data, nor the run's cache, nor onto the run's input files (exit 2)."""
    from ..ownership import cache_place, check, input_places, output_place, page_place, png_place

    writers = [page_place(path)] + ([png_place(png_dir)] if png_dir is not None else [])
    others = [output_place(found.layout)]
    summary = found.manifest or {}
    files = summary.get("input_files")
    # The run's input as its own process resolved it (absolute paths and URLs), not as a relative spec.
    others += input_places(None, files if isinstance(files, list) else [])
    cache = found.config.get("cache")
    if isinstance(cache, str) and cache:
        with contextlib.suppress(BatchscoreError):  # a cache URL this machine cannot resolve: nothing to guard
            others.append(cache_place(cache))
    check(writers, others)


def _write(path: str, data: bytes) -> None:
    """The page, whole or not at all: a temp file renamed into place locally, one PUT on object stores."""
    import secrets

    import fsspec

    fs, where = fsspec.core.url_to_fs(path)
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    try:
        if protocol in ("file", "local"):
            folder = os.path.dirname(os.path.abspath(where))
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, f".{os.path.basename(where)}.{secrets.token_hex(6)}.tmp")
            try:
                with open(tmp, "xb") as fh:
                    fh.write(data)
                os.replace(tmp, where)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
        else:
            fs.pipe_file(where, data)
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise OutputError(f"Cannot write the report '{path}' ({reason}); pass a writable -o.") from None

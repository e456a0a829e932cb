"""Preflight: what a run opens and checks before its model loads, so that a bad input, a misplaced cache or
page, or an unreachable cache fails in seconds, not after minutes of loading."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from .cache import ResultCache
    from .config import JobConfig, ModelSpec
    from .input.base import Reader
    from .location import Location
    from .output import Output
    from .scoring import ScoringRules


@dataclass
class Input:
    """The open input, and the columns the job reads from it."""

    source: Reader
    schema: pa.Schema  # the input's, known once open
    reopen: Callable[[], Reader]  # picklable: opens it again in DataLoader workers
    out_columns: list[str]  # input columns the output keeps, in order
    read_columns: list[str]  # those plus the text column


def check_places(cfg: JobConfig, output: Output, given: Input) -> None:
    """The cache and the report page, where ownership's rule allows them (the output's own place against the
    input is checked as the input opens)."""
    from .output.layout import report_path
    from .ownership import cache_place, check, input_places, output_place, page_place

    writers = []
    if cfg.report:
        fix = "choose another --output (the page is written beside it), or leave out --report"
        writers.append(page_place(report_path(cfg.output_path), fix))
    if cfg.cache:
        writers.append(cache_place(cfg.cache))
    if writers:
        # The cache meets the input only where it meets the input's root (a file, folder or glob base); the
        # page is a file that could be one of the input's files (a second per 20,000 files: only with it).
        files = given.source.files if cfg.report else []
        check(writers, [output_place(output.layout), *input_places(cfg.input, files)])


def open_input(cfg: JobConfig, output: Location, all_rules: list[ScoringRules]) -> Input:
    """Open the input (refusing one that overlaps `output`, the output's place) and check each model's columns in
    every file."""
    from .input import open_source
    from .scoring import CLI_HINTS

    if not cfg.input:
        raise ConfigError("No input given; pass INPUT (a file, folder, glob, URL or Hub dataset name).")
    reopen = functools.partial(
        open_source,
        cfg.input,
        text_column=cfg.text_column,
        split=cfg.split,
        dataset_config=cfg.dataset_config,
        encoding=cfg.encoding,
        csv_infer_types=cfg.csv_infer_types,
        output=output,
    )
    source = reopen()
    schema = source.schema
    assert schema is not None  # every reader knows its schema once open
    text_type = schema.field(cfg.text_column).type if cfg.text_column in schema.names else None
    for rules in all_rules[1:]:
        rules.check_columns(schema.names, cfg.keep_columns, cfg.id_column, CLI_HINTS, text_type)
    out_columns = all_rules[0].check_columns(schema.names, cfg.keep_columns, cfg.id_column, CLI_HINTS, text_type)
    read_columns = list(dict.fromkeys([*out_columns, cfg.text_column]))
    source.require(read_columns, cfg.text_column)  # in every file of a folder, not just the first
    return Input(source, schema, reopen, out_columns, read_columns)


def open_cache(url: str | None, specs: list[ModelSpec]) -> ResultCache | None:
    """The result cache at `url` (None without one), opened and probed before the model loads: a bad URL, a
    missing bucket or parent folder, an unreachable store fail at once (exit 5)."""
    if not url:
        return None
    from .cache import ResultCache
    from .scoring.cache_step import refuse_window_scores

    refuse_window_scores(specs)
    return ResultCache(url)

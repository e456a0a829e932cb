"""Preflight: what a run opens and checks before its model loads, so that a bad input, a misplaced cache or
page, or an unreachable cache fails in seconds, not after minutes of loading."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from .cache import ResultCache
    from .config import JobConfig, ModelSpec
    from .input.base import Reader
    from .location import Location
    from .scoring import ScoringRules

log = logging.getLogger(__name__)


@dataclass
class Input:
    """The open input, and the columns the job reads from it."""

    source: Reader
    schema: pa.Schema  # the input's, known once open
    reopen: Callable[[], Reader]  # picklable: opens it again in DataLoader workers
    out_columns: list[str]  # input columns the output keeps, in order
    read_columns: list[str]  # those plus the text column


def check_places(cfg: JobConfig, output: Location, given: Input) -> None:
    """The cache and the report page, where ownership's rule allows them (the output's own place against the
    input is checked as the input opens)."""
    from .output.layout import report_path
    from .ownership import cache_place, check, input_places, output_place, page_place

    writers = []
    if cfg.on_bad_row == "quarantine" and cfg.output_format == "parquet":
        from .output.layout import quarantine_path
        from .ownership import quarantine_place

        writers.append(quarantine_place(quarantine_path(cfg.output_path)))
    if cfg.report:
        fix = "choose another --output (the page is written beside it), or leave out --report"
        writers.append(page_place(report_path(cfg.output_path), fix))
    if cfg.cache:
        writers.append(cache_place(cfg.cache))
    if writers:
        # The cache meets the input only where it meets the input's root (a file, folder or glob base); the
        # page is a file that could be one of the input's files (a second per 20,000 files: only with it).
        files = given.source.files if cfg.report or cfg.on_bad_row == "quarantine" else []
        check(writers, [output_place(output), *input_places(cfg.input, files)])


def open_input(
    cfg: JobConfig,
    output: Location,
    all_rules: list[ScoringRules],
    recorded_at: Callable[[Reader], Location] | None = None,
) -> Input:
    """Open the input (refusing one that overlaps `output`, the output's place) and check each model's columns in
    every file. `recorded_at`: where an earlier run of this job keeps its parts, given the input as opened (a
    table output's staging folder); default `output`."""
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
        catalog=cfg.catalog,
        input_version=cfg.input_version,
        lenient=cfg.on_bad_row == "quarantine",
    )
    source = reopen()
    pinned = getattr(source, "pinned", None)
    if pinned is not None:  # a Delta or Iceberg table: one version of it, in this process and in every worker
        if cfg.input_version is None and not cfg.overwrite:
            earlier = recorded_at(source) if recorded_at is not None else output
            source = _as_recorded(source, recorded_input(earlier), reopen)
        reopen = source.pinned()  # type: ignore[attr-defined]
    schema = source.schema
    assert schema is not None  # every reader knows its schema once open
    text_type = schema.field(cfg.text_column).type if cfg.text_column in schema.names else None
    for rules in all_rules[1:]:
        rules.check_columns(schema.names, cfg.keep_columns, cfg.id_column, CLI_HINTS, text_type)
    out_columns = all_rules[0].check_columns(schema.names, cfg.keep_columns, cfg.id_column, CLI_HINTS, text_type)
    read_columns = list(dict.fromkeys([*out_columns, cfg.text_column]))
    source.require(read_columns, cfg.text_column)  # in every file of a folder, not just the first
    return Input(source, schema, reopen, out_columns, read_columns)


def recorded_input(output: Location) -> Any:
    """The input fingerprint that the run whose files `output` holds recorded (the manifest's run identity, else
    the first part's); None where it holds none, or cannot be read (check_output tells why, later)."""
    import json

    from .errors import OutputError
    from .output.layout import MANIFEST, MANIFEST_KEY, Layout, part_name
    from .output.manifest import listed_parts, part_identity
    from .output.store import Store

    layout = Layout.at(output.spec, output.fs, output.path)
    store = Store(layout)
    try:
        footer = store.footer(layout.target if layout.target is not None else layout.path(MANIFEST))
        try:
            run = json.loads((footer or {})[MANIFEST_KEY]).get("run")
        except (KeyError, ValueError, AttributeError):
            run = None
        for index in [] if isinstance(run, dict) else listed_parts(store):
            run = part_identity(store.footer(layout.path(part_name(index))))
            if isinstance(run, dict):
                break
    except OutputError:
        return None
    return run.get("input") if isinstance(run, dict) else None


def _as_recorded(source: Reader, recorded: Any, reopen: functools.partial) -> Reader:
    """`source`, a table opened at its latest version, opened again at the version the output's earlier run
    read, where that run read this same table: a resume reads the rows it started on, though the table moved on."""
    key = source.version_key  # type: ignore[attr-defined]
    found = source.fingerprint
    if not isinstance(recorded, dict) or recorded.get(key) is None or recorded.get(key) == found.get(key):
        return source
    if {k: v for k, v in recorded.items() if k != key} != {k: v for k, v in found.items() if k != key}:
        return source  # another table: the output's check refuses it, or --overwrite replaces it
    from .errors import InputError
    from .input.resolve import VersionGone

    try:
        older = reopen.func(*reopen.args, **{**reopen.keywords, "input_version": recorded[key]})
    except VersionGone as exc:
        raise InputError(
            f"The output holds an earlier run over {key} {recorded[key]} of this table, which cannot be read now "
            f"({exc.why}); pass --overwrite to score the latest, or another -o."
        ) from None
    log.info(
        f"Reading {older.description}, as the output's earlier run did (the table's latest: {key} "
        f"{found.get(key)}); pass --overwrite to score the latest."
    )
    return older


def open_cache(url: str | None, specs: list[ModelSpec]) -> ResultCache | None:
    """The result cache at `url` (None without one), opened and probed before the model loads: a bad URL, a
    missing bucket or parent folder, an unreachable store fail at once (exit 5)."""
    if not url:
        return None
    from .cache import ResultCache
    from .scoring.cache_step import refuse_window_scores

    refuse_window_scores(specs)
    return ResultCache(url)

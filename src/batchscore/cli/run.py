"""`batchscore score`, `finalize` and `manifest`: the commands that write or read an output's records."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from ..config import JobConfig, build_config
from ..errors import ConfigError
from ..logs import configure, fields
from .shell import (
    CONTEXT,
    EXIT_CODES_HELP,
    guarded,
    job_options,
    log_options,
    log_settings,
    main,
    table_options,
    table_settings,
)

if TYPE_CHECKING:
    from ..job import JobResult

log = logging.getLogger(__name__)


@main.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("input", required=False)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="YAML file of options (keys as below, with underscores). [env: BATCHSCORE_CONFIG]",
)
@job_options
def score(config_file: str | None, **cli_values: Any) -> None:
    """Score INPUT and write labels and scores as Parquet.

    INPUT is a .csv/.tsv/.parquet/.jsonl file, a folder or glob of them, any
    fsspec URL (s3://, gs://, https://, memory://), a dataset saved with
    `save_to_disk`, or a Hub dataset name (user/name, with --split).
    Precedence: command line > BATCHSCORE_* env vars > --config file > defaults.

    \b
    Examples:
      batchscore score examples/reviews.csv --model ./sst2-model -o out/reviews
      batchscore score 'data/*.parquet' --text-column body --top-k all -o scored.parquet
      batchscore score stanfordnlp/imdb --split test --limit 1000 --keep-columns none
      batchscore score labelled.parquet --result-prefix pred_ -o scored/   # keeps its label column
      BATCHSCORE_BATCH_TOKENS=32768 batchscore score big.jsonl --config configs/sst2.yaml
    """
    from ..job import process_start_time, run_job

    early = log_settings(cli_values)
    configure(**early)

    def run() -> tuple[JobConfig, JobResult]:
        cfg = build_config(cli_values, config_file=config_file)
        configure(quiet=cfg.quiet, verbose=cfg.verbose, log_format=cfg.log_format)  # the config file may set them
        _refuse_memory_output(cfg.output_path)
        return cfg, run_job(cfg, process_start_time())

    cfg, result = guarded(run, early["verbose"])
    for warning in result.warnings:
        log.warning(warning)
    report = result.report
    m = result.manifest
    summary = fields(
        output=result.output,
        rows=m.get("rows"),
        scored_rows=m.get("scored_rows"),
        empty_text_rows=m.get("empty_text_rows"),
        truncated_rows=m.get("truncated_rows"),
        truncated_tokens=m.get("truncated_tokens"),
        **{k: m[k] for k in ("records", "bad_rows", "bad_row_kinds", "quarantined_rows", "error_rows") if k in m},
        chunks=m.get("chunks"),
        seconds=m.get("seconds"),
        already_complete=result.already_complete,
        **({"report": report} if report else {}),
        **({"table": m["table"]} if m.get("table") else {}),
    )
    then = f"; report: {report}" if report else ""
    table = m.get("table")
    if table:
        then = f" ({_commit_words(table)}){then}"
    if table and table.get("already_committed"):
        words = f"Already in the table: {result.output} has this run's {m.get('rows', '?')} rows{then}; nothing to do."
        log.info(words, **summary)
        return
    if result.already_complete and not table:  # a table's staged run, complete, just committed: said below
        log.info(
            f"Already complete: {result.output} holds this job's {m['rows']} rows; nothing to do "
            f"(--overwrite to redo it){then}.",
            **summary,
        )
        return
    truncated = f"{m['truncated_rows']} truncated"
    if m["truncated_rows"]:
        limit = "--max-windows" if cfg.long_text == "window" else "--max-length"
        truncated += f": {m.get('truncated_tokens', 0):,} tokens past {limit} not scored"
    if m.get("windowed_rows"):
        truncated += f", {m['windowed_rows']} long texts scored in {m['windows']:,} windows"
    if "rows_from_cache" in m:
        truncated += f", {m['rows_from_cache']:,} from the cache, {m['distinct_texts_scored']:,} texts run"
    counts = f"{m['scored_rows']} of {m['rows']} rows ({m['empty_text_rows']} without text, {truncated})"
    if "bad_rows" in m:  # --on-bad-row quarantine
        from ..output.layout import quarantine_path

        place = m.get("quarantine") or quarantine_path(result.output)
        bad = (
            f"; {m['bad_rows']:,} bad records of {m['records']:,} read ({m['quarantined_rows']:,} without a row, "
            f"{m['error_rows']:,} rows with an error) set aside in {place}"
        )
    else:
        bad = ""
    if result.shard is None:
        log.info(f"Scored {counts} in {m['seconds']:.1f}s -> {result.output}{bad}{then}", **summary)
        return
    shard, num_shards = result.shard
    then = (
        f"; when every shard is done, run: batchscore finalize {result.output}{_table_flags(cfg)}"
        if cfg.num_shards
        else "; rank 0 writes the manifest"
    )
    log.info(
        f"Shard {shard} of {num_shards}: {counts} in its {m['chunks']} chunks -> {result.output}{bad}{then}", **summary
    )


def _table_flags(cfg: JobConfig) -> str:
    """What `batchscore finalize` needs to be told of a table output."""
    if cfg.output_format == "parquet":
        return ""
    catalog = f" --catalog {cfg.catalog}" if cfg.catalog else ""
    return f" --output-format {cfg.output_format}{catalog}"


def _commit_words(table: dict) -> str:
    """Which commit of a table holds the run: `delta version 3, append`."""
    where = f"version {table['version']}" if "version" in table else f"snapshot {table.get('snapshot_id')}"
    return f"{table['format']} {where}, {table.get('mode', 'append')}"


def _refuse_memory_output(output: str) -> None:
    """memory:// lives inside one Python process: from the command line, the output would vanish at exit."""
    protocols = [part.split("://", 1)[0].lower() for part in output.split("::") if "://" in part]
    if "memory" in protocols:
        raise ConfigError(
            f"Output '{output}' is in memory://, which lives only inside one Python process: "
            "nothing would be left when this command exits. Write to a path or a store URL, "
            "or use memory:// from Python (batchscore.score)."
        )


@main.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("output")
@table_options
@log_options
def finalize(output: str, **log_values: Any) -> None:
    """Finish OUTPUT written by independent shards: check every chunk, write the manifest.

    Run it once after every `batchscore score ... --num-shards K --shard-index I`
    has succeeded (from any machine that sees OUTPUT). If a chunk is missing it
    names the chunks and the shards to rerun and exits 5; a rerun of those shards
    followed by another finalize completes the output. Finalizing a complete
    output is a no-op.

    A Delta or Iceberg table (--output-format) gets each staged run's rows in
    one commit.

    \b
    Example:
      for i in 0 1 2; do batchscore score big.jsonl -o out/big --num-shards 3 --shard-index $i; done
      batchscore finalize out/big
      batchscore finalize s3://lake/review_scores --output-format delta
    """
    from ..output import finalize as finalize_output

    output_format, catalog = table_settings(log_values)
    settings = log_settings(log_values)
    configure(**settings)
    if output_format != "parquet":
        _finalize_table(output, output_format, catalog, settings["verbose"])
        return
    done = guarded(lambda: finalize_output(output), settings["verbose"])
    for warning in done.warnings:
        log.warning(warning)
    m = done.manifest
    summary = fields(
        output=output,
        rows=m["rows"],
        scored_rows=m.get("scored_rows"),
        chunks=m.get("chunks"),
        already_complete=done.already_complete,
    )
    if done.already_complete:
        log.info(f"Already complete: {output} holds {m['rows']} rows; nothing to do.", **summary)
        return
    log.info(f"Finalized {output}: {m['scored_rows']} of {m['rows']} rows scored, in {m['chunks']} chunks.", **summary)


def _finalize_table(output: str, output_format: str, catalog: str | None, verbose: bool) -> None:
    from ..output.table import finalize_table, open_table

    manifests, warnings = guarded(lambda: finalize_table(open_table(output_format, output, catalog)), verbose)
    for warning in warnings:
        log.warning(warning)
    if not manifests:
        log.info(f"Nothing to finalize: no run is staged in {output_format} table {output}.", **fields(output=output))
    for m in manifests:
        table = m["table"]
        said = "Already in the table" if table.get("already_committed") else "Finalized"
        summary = fields(output=output, rows=m.get("rows"), scored_rows=m.get("scored_rows"), table=table)
        log.info(f"{said}: {output} has the run's {m.get('rows')} rows ({_commit_words(table)}).", **summary)


@main.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("output")
@table_options
@log_options
def manifest(output: str, **log_values: Any) -> None:
    """Print the manifest of a complete OUTPUT as JSON (it lives in a Parquet footer, where readers skip it).

    \b
    Example:
      batchscore manifest out/reviews | python -m json.tool
      batchscore manifest s3://bucket/scored/reviews.parquet
      batchscore manifest lake/review_scores --output-format delta   # the table's latest batchscore commit
    """
    import json

    from ..output import read_manifest

    output_format, catalog = table_settings(log_values)
    settings = log_settings(log_values)
    configure(**settings)
    if output_format == "parquet":
        found = guarded(lambda: read_manifest(output), settings["verbose"])
    else:
        from ..output.table import latest_manifest, open_table

        found = guarded(lambda: latest_manifest(open_table(output_format, output, catalog)), settings["verbose"])
    click.echo(json.dumps(found, indent=2, sort_keys=True))  # the command's result, on stdout

"""`batchscore report` and `status`: what an output holds and how far a run is."""

from __future__ import annotations

import logging
from typing import Any

import click

from ..logs import configure, fields
from .shell import (
    CONTEXT,
    EXIT_CODES_HELP,
    STATUS_EXIT_CODES_HELP,
    guarded,
    log_options,
    log_settings,
    main,
    table_options,
    table_settings,
)

log = logging.getLogger(__name__)


@main.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("output")
@click.option(
    "-o",
    "--output",
    "path",
    default=None,
    metavar="PATH",
    help="Where to write the page (a path or URL). [default: beside OUTPUT: OUT.report.html, x.report.html for "
    "x.parquet; never inside it]",
)
@click.option("--png", "png_dir", default=None, metavar="DIR", help="Also write each chart as a PNG file in DIR.")
@click.option(
    "--by",
    multiple=True,
    metavar="COLUMN[:month]",
    help="Label mix per value of this output column (the 30 largest groups and 'other'); :year, :month or :day "
    "truncate a date. Repeatable.",
)
@click.option(
    "--low-confidence",
    type=click.FloatRange(0, 1),
    default=0.6,
    show_default=True,
    metavar="SCORE",
    help="Rows scoring below this count as low-confidence.",
)
@click.option(
    "--samples",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    metavar="N",
    help="The N lowest-confidence rows, and N random rows per label.",
)
@log_options
def report(
    output: str,
    path: str | None,
    png_dir: str | None,
    by: tuple[str, ...],
    low_confidence: float,
    samples: int,
    **log_values: Any,
) -> None:
    """Write a self-contained HTML report of OUTPUT (complete or still running): the run, label and score
    distributions, low-confidence rows, label mix per column, long texts, time per chunk, samples.

    Streams the output's parts (memory stays flat whatever its size) and loads no model.

    \b
    Examples:
      batchscore report reviews.scored                     # writes reviews.scored.report.html
      batchscore report s3://bucket/scored/day --by source --by date:month --png charts/
    """
    from ..report import write_report

    settings = log_settings(log_values)
    configure(**settings)
    done = guarded(
        lambda: write_report(output, path, by=by, low_confidence=low_confidence, samples=samples, png_dir=png_dir),
        settings["verbose"],
    )
    facts = done.facts
    log.info(
        f"Report of {output} ({facts.rows_read:,} rows, {len(done.charts)} charts) in {facts.seconds:.1f}s -> "
        f"{done.path}",
        **fields(output=output, report=done.path, rows=facts.rows_read, charts=len(done.charts)),
    )


@main.command(context_settings=CONTEXT, epilog=STATUS_EXIT_CODES_HELP)
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, for machines.")
@table_options
@log_options
def status(output: str, as_json: bool, **log_values: Any) -> int:
    """How far the run writing OUTPUT is (or was): chunks committed per shard out of the plan's total, rows,
    the writers and their last heartbeat, rows/s and an ETA, damaged or foreign files.

    Reads the output only: writes nothing, takes no lock, loads no model; local or on an object store.

    \b
    Examples:
      batchscore status out/big
      batchscore status s3://bucket/scored/day --json   # exit 0 complete, 10 in progress, 11 stopped
      batchscore status lake/review_scores --output-format delta   # a table: its staged run, or last commit
    """
    import json

    from ..status import describe
    from ..status import status as read_status

    output_format, catalog = table_settings(log_values)
    settings = log_settings(log_values)
    configure(**settings)
    if output_format == "parquet":
        found = guarded(lambda: read_status(output), settings["verbose"])
    else:
        from ..status import table_status

        found = guarded(lambda: table_status(output_format, output, catalog), settings["verbose"])
    if as_json:
        click.echo(json.dumps(found.to_json(), sort_keys=True))  # the command's result, on stdout
    else:
        click.echo("\n".join(describe(found)))
    return found.exit_code

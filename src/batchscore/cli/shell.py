"""The command line's shell: the `batchscore` group, one error path (a library error is one line and its exit
code; a stop signal an interrupt), and the options every command shares, built from `options.OPTIONS`."""

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

from .._version import __version__
from ..config import JobConfig
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, BatchscoreError
from ..logs import configure, fields
from ..options import LOG_OPTIONS, OPTIONS, Option

if TYPE_CHECKING:
    pass

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
        settings = log_settings(_log_values(args), _config_file_log_values(args))
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
    from ..config_file import load_config_file

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


TABLE_OPTIONS = ("output_format", "catalog")


def table_options(func: _F) -> _F:
    """--output-format and --catalog, for the commands that read or finish an output that may be a table."""
    for opt in reversed([o for o in OPTIONS if o.name in TABLE_OPTIONS]):
        func = _click_option(opt)(func)
    return func


def table_settings(values: dict[str, Any]) -> tuple[str, str | None]:
    """(output format, catalog) of a command with `table_options`, from the command line, else the env vars;
    taken out of `values`."""
    found = {}
    for opt in OPTIONS:
        if opt.name in TABLE_OPTIONS:
            found[opt.name] = values.pop(opt.name, None) or os.environ.get(opt.envvar) or None
    return (found["output_format"] or "parquet").lower(), found["catalog"]


def log_settings(values: Mapping[str, Any], config_file: Mapping[str, Any] | None = None) -> dict[str, Any]:
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


def guarded(action: Callable[[], _T], verbose: bool) -> _T:
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

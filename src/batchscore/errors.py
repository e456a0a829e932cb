"""Exceptions that carry an exit code and a one-line message naming the fix.

The library raises these; only the CLI turns them into a printed line and an
exit status, so the stages stay usable from Python without `sys.exit`.
"""

# Exit codes are a contract with schedulers (cron, Airflow): keep README in step.
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: one line, the traceback under --verbose
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MODEL = 4
EXIT_OUTPUT = 5
EXIT_INTERRUPTED = 130
# `batchscore status` only: not errors, states a scheduler's sensor polls for.
EXIT_IN_PROGRESS = 10  # a live writer holds the output
EXIT_STOPPED = 11  # unfinished and nobody writes it: rerun, run the missing shards, or finalize


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), for one-line errors."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")


class BatchscoreError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(BatchscoreError):
    """Bad option, bad config file, bad env var."""

    exit_code = EXIT_USAGE


class InputError(BatchscoreError):
    """Input missing, unreadable, or without the columns we need."""

    exit_code = EXIT_INPUT


class ModelError(BatchscoreError):
    """Model not found, not a sequence classifier, or refused for safety."""

    exit_code = EXIT_MODEL


class OutputError(BatchscoreError):
    """Output location unusable: exists with other content, not writable."""

    exit_code = EXIT_OUTPUT

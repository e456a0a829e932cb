"""The job's options: `OPTIONS`, the single list the CLI builds its Click options from, the config file and
the environment are checked against and `configs/default.yaml` and docs/options.md document; the defaults and
limits they share. Adding an option means adding one `Option` here (and its field in config.JobConfig).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# The course's reference model, pinned: an unpinned Hub model can change under a
# scheduled job between two runs.
REFERENCE_MODEL = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
REFERENCE_REVISION = "af0f99b"

# The offline sentiment model `batchscore build-model` builds, and where it goes by default.
OFFLINE_MODEL_NAME = "minilm-vader-sentiment"


def batchscore_home() -> str:
    """$BATCHSCORE_HOME, defaulting to ~/.cache/batchscore ($XDG_CACHE_HOME/batchscore when that is set)."""
    return os.environ.get("BATCHSCORE_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "batchscore"
    )


def offline_model_dir() -> str:
    """Where `batchscore build-model` writes by default: a user cache, so an installed wheel works anywhere.

    $BATCHSCORE_HOME/models/minilm-vader-sentiment, BATCHSCORE_HOME defaulting to
    ~/.cache/batchscore ($XDG_CACHE_HOME/batchscore when that is set). The repo's
    `make model` writes models/minilm-vader-sentiment instead.
    """
    return os.path.join(batchscore_home(), "models", OFFLINE_MODEL_NAME)


def model_and_revision(model: str | None, revision: str | None) -> tuple[str, str | None]:
    """The model to load and its revision: the reference model by default, pinned however it is named
    (default, --model, env, config file, the library's Scorer); other models at the revision asked, else main."""
    model = model or REFERENCE_MODEL
    if revision:
        return model, revision
    return model, REFERENCE_REVISION if model == REFERENCE_MODEL else None


ENV_PREFIX = "BATCHSCORE_"
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8", "fastest")
# --precision fastest: the label agreement with fp32 a faster precision must keep on the calibration sample, and
# the sample's size (rows of the input's own text, spread over it); see docs/models.md.
DEFAULT_MIN_AGREEMENT = 0.999
CALIBRATION_ROWS = 1000
TOP_K = ("1", "all")
LONG_TEXT = ("truncate", "window")
OUTPUT_FORMATS = ("parquet", "delta", "iceberg")
TABLE_MODES = ("append", "overwrite", "merge")
ON_BAD_ROW = ("fail", "quarantine")
# --on-bad-row quarantine without --max-bad-rows: a run stops once more than this share of the records it read
# were bad (a broken export, not a stray record); see docs/errors.md.
DEFAULT_MAX_BAD_ROWS = "1%"
AGGREGATES = ("mean", "max")
# --long-text window defaults: an overlap that gives a sentence cut at a window's edge its context again, and a
# cap of about 110,000 tokens per text at 512-token windows.
WINDOW_OVERLAP = 64
MAX_WINDOWS = 256
# A multi-label head lists every label scoring at least this (the sigmoid's midpoint: logit 0).
DEFAULT_THRESHOLD = 0.5
# Default token budgets, measured by `make bench`: on CPU a batch whose
# activations stay in cache runs ~10% faster than a 16k-token one (a 25 x 512
# batch ran at 69% of matmul peak, 2 x 512 batches at 87%); a GPU wants big batches.
LOG_FORMATS = ("text", "json")
CPU_BATCH_TOKENS = 1536
GPU_BATCH_TOKENS = 16384
# Whole-number options travel as int64 (Arrow, numpy, the manifest); a larger one is a typo, never a plan.
INT64_MAX = 2**63 - 1
# torch.set_num_threads takes a C int and starts that many threads; the largest machines have a few thousand CPUs.
MAX_THREADS = 4096
# Each DataLoader worker is a forked process with its own reader and tokenizer; a few feed a GPU.
MAX_WORKERS = 256


@dataclass(frozen=True)
class Option:
    name: str  # python / YAML name; CLI flag is --name-with-dashes
    kind: str  # str | int | count | bool | choice | columns | prefix | fraction
    help: str
    choices: tuple[str, ...] = ()
    short: str | None = None
    metavar: str | None = None
    maximum: int = INT64_MAX  # int and count kinds
    repeatable: bool = False  # the CLI takes it several times: --model A --model B (one model each)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def envvar(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("input", "str", "Input file, folder, glob, fsspec URL or Hub dataset name.", metavar="INPUT"),
    Option(
        "output",
        "str",
        "Output folder of Parquet parts; a path ending in .parquet means one merged file. "
        "Default: <input name>.scored in the current directory.",
        short="-o",
        metavar="PATH",
    ),
    Option(
        "output_format",
        "choice",
        "parquet: a folder of Parquet parts (or one .parquet file); delta: a Delta Lake table at --output "
        "(a path or URL); iceberg: the Iceberg table NAMESPACE.TABLE of --catalog. Tables get each run's rows "
        "in one commit; see docs/tables.md.",
        choices=OUTPUT_FORMATS,
    ),
    Option(
        "table_mode",
        "choice",
        "Delta and Iceberg outputs: append the run's rows; overwrite the table's rows (older versions stay for "
        "time travel); or merge on --id-column (rows with a key in the table are updated, the rest inserted).",
        choices=TABLE_MODES,
    ),
    Option(
        "catalog",
        "str",
        "Iceberg catalog, for an Iceberg output or input: sqlite:///FILE.db, postgresql://USER@HOST/DB (either "
        "with ?warehouse=URL), or the name of a catalog configured for pyiceberg (REST, Glue, Hive). Default: "
        "a SQLite catalog in $BATCHSCORE_HOME/iceberg.",
        metavar="URI_OR_NAME",
    ),
    Option(
        "on_bad_row",
        "choice",
        "A record that cannot be read or scored (a broken CSV row or JSON line, text of the wrong type, invalid "
        "UTF-8, an undecodable Parquet page, a text the tokenizer rejects): fail stops the run naming it (exit "
        "3); quarantine writes it to OUT.quarantine/ beside the output and goes on. See docs/errors.md.",
        choices=ON_BAD_ROW,
    ),
    Option(
        "max_bad_rows",
        "str",
        "--on-bad-row quarantine: stop (exit 3) once more records than this are bad: a count (1000) or a share "
        f"of the records read (0.5%). Default: {DEFAULT_MAX_BAD_ROWS}.",
        metavar="N_OR_PCT",
    ),
    Option(
        "model",
        "str",
        f"Model id on the Hub or local model directory. Default: {REFERENCE_MODEL}. Give it several times to "
        "score with several models in one pass, each paired in order with its own --result-prefix.",
        metavar="ID_OR_PATH",
        repeatable=True,
    ),
    Option(
        "revision",
        "str",
        "Model revision (commit, tag or branch). Default: "
        f"{REFERENCE_REVISION} for the reference model (default or named), else the repo's main branch.",
        metavar="REV",
    ),
    Option(
        "input_version",
        "int",
        "A Delta or Iceberg table as INPUT: read this version (Delta) or snapshot id (Iceberg). Default: the "
        "latest when the run starts, recorded so that a resume reads the same rows.",
        metavar="N",
    ),
    Option("text_column", "str", "Column holding the text to score.", metavar="NAME"),
    Option("id_column", "str", "Column identifying rows; always kept, as the first output column.", metavar="NAME"),
    Option(
        "keep_columns", "columns", "Input columns to keep, comma-separated; 'all' (default) or 'none'.", metavar="A,B"
    ),
    Option(
        "top_k",
        "choice",
        "1: label and score of the best label (like the pipeline); all: also a 'scores' column with every label.",
        choices=TOP_K,
    ),
    Option(
        "result_prefix",
        "prefix",
        "Prefix of the output columns: pred_ gives pred_label, pred_score "
        "(and pred_scores), so an input 'label' column can be kept beside them. Default: no prefix.",
        metavar="PREFIX",
        repeatable=True,
    ),
    Option(
        "threshold",
        "fraction",
        "Multi-label heads (sigmoid: multi_label_classification, or one label): a 'labels' column lists "
        "every label scoring at least this, in the model's label order; other heads ignore it.",
        metavar="X",
    ),
    Option("max_length", "count", "Truncate texts to this many tokens. Default: the model's limit.", metavar="N"),
    Option(
        "batch_tokens",
        "count",
        "Token budget of a batch: rows x padded length stays under it. "
        f"Default: {CPU_BATCH_TOKENS} on CPU, {GPU_BATCH_TOKENS} on GPU.",
        metavar="N",
    ),
    Option(
        "long_text",
        "choice",
        "A text longer than --max-length: truncate scores its first --max-length tokens (the pipeline's way); "
        "window scores every window of it and aggregates them (--aggregate).",
        choices=LONG_TEXT,
    ),
    Option(
        "window_overlap",
        "int",
        f"With --long-text window: tokens two consecutive windows share. Default: {WINDOW_OVERLAP}.",
        metavar="N",
    ),
    Option(
        "aggregate",
        "choice",
        "With --long-text window: mean = the window scores' mean, weighted by each window's text tokens; "
        "max = per label, the highest window score.",
        choices=AGGREGATES,
    ),
    Option(
        "max_windows",
        "count",
        "With --long-text window: at most N windows per text; the rest is not scored, and counted. "
        f"Default: {MAX_WINDOWS}.",
        metavar="N",
    ),
    Option(
        "window_scores",
        "bool",
        "With --long-text window: also a window_scores column, each window's character span, label and score.",
    ),
    Option("chunk_rows", "count", "Rows per chunk: the unit of sorting, writing and resuming.", metavar="N"),
    Option(
        "precision",
        "choice",
        "auto = fp32 on CPU (exact), bf16 (or fp16) on GPU. On CPU, bf16 and int8 are approximate: on real "
        "mixed text bf16 kept 99.95% of fp32's labels, int8 (dynamic int8 Linear layers, CPU only, the fastest) "
        "98.4%, losing most on rows the model is unsure of. fastest = measure fp32 and what this device runs "
        "natively (bf16, fp16, int8) on a sample of the input, and take the fastest that keeps "
        "--min-agreement of fp32's labels, rows it scores close to a tie rechecked in fp32 (else fp32); which "
        "to choose: docs/models.md.",
        choices=PRECISIONS,
    ),
    Option(
        "min_agreement",
        "fraction",
        "--precision fastest: the share of fp32's labels a faster precision must keep, its rechecks in fp32 "
        f"included (1 keeps fp32, the only exact one). Default: {DEFAULT_MIN_AGREEMENT}.",
        metavar="X",
    ),
    Option(
        "calibration_rows",
        "count",
        "--precision fastest: rows of the input (spread over it) to measure each precision on. "
        f"Default: {CALIBRATION_ROWS}.",
        metavar="N",
    ),
    Option("limit", "count", "Score only the first N rows (for trying things).", metavar="N"),
    Option("split", "str", "Split of a Hub dataset or saved DatasetDict.", metavar="NAME"),
    Option("dataset_config", "str", "Config (subset) name of a Hub dataset.", metavar="NAME"),
    Option(
        "num_shards",
        "count",
        "Split the chunks among K independent workers (Slurm arrays, Airflow "
        "mapped tasks); each scores chunks c with c % K == --shard-index. Run `batchscore finalize` after all.",
        metavar="K",
    ),
    Option("shard_index", "int", "Which shard this worker scores, 0 to K-1 (needs --num-shards).", metavar="I"),
    Option(
        "num_workers",
        "int",
        "DataLoader worker processes reading and tokenizing. Default: 0 on CPU, "
        f"up to 4 on GPU; at most {MAX_WORKERS}.",
        metavar="N",
        maximum=MAX_WORKERS,
    ),
    Option(
        "encoding",
        "str",
        "Encoding of CSV/TSV input (a Python codec: latin-1, cp1252, ...); "
        "utf-8-replace replaces invalid bytes instead of failing. Default: UTF-8, strict.",
        metavar="NAME",
    ),
    Option(
        "csv_infer_types",
        "bool",
        "Type CSV/TSV columns from their values (007 becomes 7) instead of keeping "
        "every column as text, exactly as written.",
    ),
    Option(
        "allow_pickle",
        "bool",
        "Allow loading model weights stored as pickle (.bin), which can run code: "
        "only for models you trust. Default: safetensors only.",
    ),
    Option(
        "trust_remote_code",
        "bool",
        "Allow models whose repo ships its own Python code, and run it: only for models you trust.",
    ),
    Option(
        "progress",
        "bool",
        "Progress on stderr, per batch. Default: a bar on a terminal, else a line every --progress-every "
        "seconds; --progress: always the bar; --no-progress: nothing.",
    ),
    Option(
        "progress_every",
        "int",
        "Without a terminal (cron, Airflow, Slurm): one progress line (percent, rows/s, tokens/s, ETA) every this "
        "many seconds; 0: none.",
        metavar="SECONDS",
    ),
    Option(
        "report",
        "bool",
        "When the run completes, write the report page beside the output (as `batchscore report OUT`).",
    ),
    Option(
        "cache",
        "str",
        "Result cache (a folder or fsspec URL, e.g. s3://bucket/score-cache/): texts it has scored with the same "
        "model and settings take their results from it, and new results are added. Shared safely by shards and "
        "runs; see docs/cache.md.",
        metavar="URL",
    ),
    Option("overwrite", "bool", "Replace an existing output (one batchscore wrote) instead of resuming it."),
    Option(
        "threads",
        "count",
        "CPU threads for the model. Default: the CPUs this process may use (its CPU "
        f"affinity and cgroup CPU quota), split among the ranks on this machine; at most {MAX_THREADS}.",
        metavar="N",
        maximum=MAX_THREADS,
    ),
    Option("quiet", "bool", "Errors only on stderr: nothing on success (cron mails only failures)."),
    Option("verbose", "bool", "Debug lines too, and the traceback of an internal error."),
    Option(
        "log_format",
        "choice",
        "text: lines for people; json: one JSON object per line on stderr (time, "
        "level, message, fields such as rows and seconds), for a scheduler's log store.",
        choices=LOG_FORMATS,
    ),
    Option(
        "models",
        "models",
        "Config file (or YAML in the env var) only: several models in one pass, a list of mappings with model, "
        "prefix (each its own), and any of revision, top_k, max_length, precision, long_text, window_overlap, "
        "aggregate, max_windows, window_scores, threshold (default: the option of that name).",
        metavar="LIST",
    ),
)
LOG_OPTIONS = ("quiet", "verbose", "log_format")  # every command takes these
OPTION_NAMES = tuple(o.name for o in OPTIONS)

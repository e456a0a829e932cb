"""One typed job config, merged from built-in defaults < config file < env < CLI.

`OPTIONS` is the single list of job options: the CLI builds its Click options
from it, the YAML loader checks keys against it, and `configs/default.yaml`
documents it. Adding an option means adding one `Option` here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ConfigError

if TYPE_CHECKING:
    import yaml

# The course's reference model, pinned: an unpinned Hub model can change under a
# scheduled job between two runs.
REFERENCE_MODEL = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
REFERENCE_REVISION = "af0f99b"

# The offline sentiment model `batchscore build-model` builds, and where it goes by default.
OFFLINE_MODEL_NAME = "minilm-vader-sentiment"


def offline_model_dir() -> str:
    """Where `batchscore build-model` writes by default: a user cache, so an installed wheel works anywhere.

    $BATCHSCORE_HOME/models/minilm-vader-sentiment, BATCHSCORE_HOME defaulting to
    ~/.cache/batchscore ($XDG_CACHE_HOME/batchscore when that is set). The repo's
    `make model` writes models/minilm-vader-sentiment instead.
    """
    home = os.environ.get("BATCHSCORE_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "batchscore"
    )
    return os.path.join(home, "models", OFFLINE_MODEL_NAME)


def model_and_revision(model: str | None, revision: str | None) -> tuple[str, str | None]:
    """The model to load and its revision: the reference model by default, pinned however it is named
    (default, --model, env, config file, the library's Scorer); other models at the revision asked, else main."""
    model = model or REFERENCE_MODEL
    if revision:
        return model, revision
    return model, REFERENCE_REVISION if model == REFERENCE_MODEL else None


ENV_PREFIX = "BATCHSCORE_"
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
TOP_K = ("1", "all")
LONG_TEXT = ("truncate", "window")
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
# A config file holds a few dozen options: anything larger is not one (and is not read into memory whole).
MAX_CONFIG_BYTES = 1 << 20


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
        "98.4%, losing most on rows the model is unsure of; which to choose: docs/models.md.",
        choices=PRECISIONS,
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


@dataclass(frozen=True)
class ModelSpec:
    """One model of a run and the options that are its own; None: the run's option of that name."""

    model: str | None = None
    revision: str | None = None
    prefix: str | None = None
    top_k: str | None = None
    max_length: int | None = None
    precision: str | None = None
    long_text: str | None = None
    window_overlap: int | None = None
    aggregate: str | None = None
    max_windows: int | None = None
    window_scores: bool | None = None
    threshold: float | None = None

    def with_defaults(self, own: ModelSpec) -> ModelSpec:
        """`own`'s settings, the rest from this one."""
        return dataclasses.replace(self, **{k: getattr(own, k) for k in MODEL_KEYS if getattr(own, k) is not None})


# What each model of a run may set for itself (`models:`); "prefix" is its --result-prefix.
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSpec))


def library_specs(arguments: Mapping[str, Any], models: Any = None) -> list[ModelSpec]:
    """The models of a library call (`Scorer`, `spark.score`): `arguments` (keyword arguments named like the
    options, result_prefix for prefix) over the options' defaults, and each `models=` entry over those."""
    given = {("prefix" if k == "result_prefix" else k): v for k, v in arguments.items() if v is not None}
    own: dict[str, Any] = {k: str(v) if k == "top_k" else v for k, v in given.items() if k in MODEL_KEYS}
    run = JobConfig().model_specs[0].with_defaults(ModelSpec(**own))
    return [run] if models is None else [run.with_defaults(m) for m in models_from(models, "models=")]


@dataclass(frozen=True)
class JobConfig:
    input: str | None = None
    output: str | None = None
    model: str | None = None
    revision: str | None = None
    text_column: str = "text"
    id_column: str | None = None
    keep_columns: tuple[str, ...] | None = None  # None = every input column
    top_k: str = "1"
    result_prefix: str | None = None  # None: label, score, scores
    threshold: float = DEFAULT_THRESHOLD  # multi-label heads: the `labels` column
    max_length: int | None = None
    long_text: str = "truncate"
    window_overlap: int = WINDOW_OVERLAP
    aggregate: str = "mean"
    max_windows: int = MAX_WINDOWS
    window_scores: bool = False
    batch_tokens: int | None = None  # None: CPU_BATCH_TOKENS or GPU_BATCH_TOKENS
    chunk_rows: int = 10000
    precision: str = "auto"
    limit: int | None = None
    split: str = "train"
    dataset_config: str | None = None
    num_shards: int | None = None
    shard_index: int | None = None
    num_workers: int | None = None
    encoding: str | None = None
    csv_infer_types: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    progress: bool | None = None
    progress_every: int = 60
    report: bool = False
    cache: str | None = None  # result cache URL
    threads: int | None = None  # None: the CPUs this process may use
    quiet: bool = False
    verbose: bool = False
    log_format: str = "text"
    overwrite: bool = False
    models: tuple[ModelSpec, ...] = ()  # several models in one pass; () = the one model of the options above
    # Not an option: where the config file came from, for the manifest.
    config_file: str | None = field(default=None, compare=False)

    @property
    def model_specs(self) -> list[ModelSpec]:
        """Every model of the run, each with all its options filled in (its own, else the run's)."""
        run = ModelSpec(**{k: getattr(self, "result_prefix" if k == "prefix" else k) for k in MODEL_KEYS})
        return [run.with_defaults(own) for own in self.models or (ModelSpec(),)]

    @property
    def model_id(self) -> str:
        return model_and_revision(self.model, self.revision)[0]

    @property
    def model_revision(self) -> str | None:
        return model_and_revision(self.model, self.revision)[1]

    @property
    def output_path(self) -> str:
        if self.output:
            return self.output
        named = str(self.input).rstrip("/")
        if "://" not in named and os.path.basename(named) in ("", ".", ".."):
            named = os.path.abspath(named or "/")  # input `.`: name the output after the folder
        base = os.path.basename(named) or "input"
        for suffix in (".csv", ".tsv", ".parquet", ".jsonl", ".json"):
            base = base.removesuffix(suffix)
        return base.replace("*", "_") + ".scored"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"], d["revision"] = self.model_id, self.model_revision
        d["output"] = self.output_path
        if d["keep_columns"] is not None:
            d["keep_columns"] = list(d["keep_columns"])
        return d


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would also take '١٢' and '1_0'
# Decimal notation, ASCII only: float() would also take 'nan', 'inf', '1_0' and '٠.٥'.
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _shown(value: Any) -> str:
    """A value for a message, bounded: a YAML value can be a large nested structure."""
    import reprlib

    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 3, 200, 200
    return shown.repr(value)


def _type_name(value: Any) -> str:
    """What YAML made of a value, in a message's words."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "text" if isinstance(value, str) else type(value).__name__


def _expected(opt: Option) -> str:
    return {
        "str": "text",
        "prefix": "text",
        "int": "a whole number",
        "count": "a whole number",
        "fraction": "a number from 0 to 1",
        "bool": "true or false",
        "choice": "one of " + ", ".join(opt.choices),
    }[opt.kind]


def _check_type(opt: Option, value: Any, where: str) -> None:
    """A models: entry's value has its option's type: a list or mapping is never one; true/false is only a
    boolean; a number is not text (YAML may have rewritten it: 0123 is 83, 1e3 is 1000.0)."""
    text = opt.kind in ("str", "prefix")
    wrong = isinstance(value, (list, tuple, dict)) or (isinstance(value, bool) and opt.kind != "bool")
    wrong = wrong or (text and not isinstance(value, str))
    if wrong:
        hint = "; quote it" if text and isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise ConfigError(f"{where} must be {_expected(opt)}, got {_shown(value)} ({_type_name(value)}){hint}.")


def _coerce(opt: Option, value: Any, origin: str) -> Any:
    """Turn a raw value (YAML scalar, env string, CLI value) into the typed value."""
    if value is None:
        return None
    where = f"{opt.name} (from {origin})"
    if isinstance(value, str) and "\0" in value:
        # No path, column or codec name holds one; os and pyarrow calls would fail on it far from here.
        raise ConfigError(f"{where} holds a NUL character: {_shown(value)}; remove it.")
    if opt.kind == "str":
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {_shown(value)}.")
        return str(value)
    if opt.kind in ("int", "count"):
        text = str(value).strip()
        if isinstance(value, bool) or not _WHOLE_NUMBER.fullmatch(text):
            raise ConfigError(f"{where} must be a whole number, got {_shown(value)}.")
        number = int(text)
        low = 1 if opt.kind == "count" else 0
        if number < low:
            raise ConfigError(f"{where} must be at least {low}, got {number}.")
        if number > opt.maximum:
            raise ConfigError(f"{where} must be at most {opt.maximum}, got {number}.")
        return number
    if opt.kind == "fraction":
        text = str(value).strip()
        if isinstance(value, bool) or not _DECIMAL.fullmatch(text) or not 0 <= float(text) <= 1:
            raise ConfigError(f"{where} must be a number from 0 to 1, got {_shown(value)}.")
        return float(text) + 0.0  # -0 is 0: one threshold, one run identity
    if opt.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {_shown(value)}.")
    if opt.kind == "choice":
        text = str(value).strip().lower()
        if text not in opt.choices:
            raise ConfigError(f"{where} must be one of {', '.join(opt.choices)}; got {_shown(value)}.")
        return text
    if opt.kind == "columns":
        if isinstance(value, dict):
            raise ConfigError(f"{where} must be column names, comma-separated or a list; got {_shown(value)}.")
        if isinstance(value, (list, tuple)):
            names = [str(v).strip() for v in value]
        else:
            text = str(value).strip()
            if text.lower() == "all":
                return None
            if text.lower() == "none" or text == "":
                return ()
            names = [part.strip() for part in text.split(",")]
        if any(not n for n in names):
            raise ConfigError(f"{where} has an empty column name: {_shown(value)}.")
        return tuple(names)
    if opt.kind == "prefix":
        if isinstance(value, (dict, list, tuple, bool)):  # str() would make a prefix of "['p_']" or "True"
            raise ConfigError(f"{where} must be text, got {_shown(value)} ({_type_name(value)}).")
        text = str(value)
        # It begins column names that --keep-columns (comma-separated, stripped) and
        # one-line messages must be able to name.
        if not text.isprintable() or any(c == "," or c.isspace() for c in text):
            raise ConfigError(
                f"{where} may not hold commas, spaces or control characters "
                f"(pred_ gives pred_label, pred_score); got {_shown(value)}."
            )
        return text or None
    if opt.kind == "models":
        return models_from(value, origin)
    raise AssertionError(opt.kind)


def models_from(value: Any, origin: str) -> tuple[ModelSpec, ...]:
    """`models:` of a config file: a list of mappings, each a model and its own options, checked as options."""
    import yaml

    if isinstance(value, str):  # from the env var: YAML text
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"models (from {origin}) is not YAML: a list like [{{model: m, prefix: a_}}].") from None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(m, dict) for m in value):
        raise ConfigError(
            f"models (from {origin}) must be a list of mappings, each with model and prefix; got {_shown(value)}."
        )
    by_name = {o.name: o for o in OPTIONS}
    specs = []
    for number, entry in enumerate(value, 1):
        unknown = [str(k) for k in entry if k not in MODEL_KEYS]
        if unknown:
            raise ConfigError(
                f"models entry {number} (from {origin}) has unknown key '{unknown[0]}'; "
                f"a model's keys are: {', '.join(MODEL_KEYS)}."
            )
        if not entry.get("model"):
            raise ConfigError(f"models entry {number} (from {origin}) names no model; add model: <id or path>.")
        where = f"models entry {number}, from {origin}"
        typed: dict[str, Any] = {}
        for key, given in entry.items():
            if given is None:
                continue
            # The entry's own key names the option in messages: prefix, not result_prefix.
            opt = dataclasses.replace(by_name["result_prefix" if key == "prefix" else key], name=key)
            _check_type(opt, given, f"{key} (from {where})")
            typed[key] = _coerce(opt, given, where)
        specs.append(ModelSpec(**typed))
    return tuple(specs)


def _given(value: Any) -> tuple[Any, ...]:
    return () if value is None or value == () else tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _repeated(cli: dict[str, Any]) -> dict[str, Any]:
    """--model and --result-prefix given several times: one model each, paired in order, as `models`."""
    models, prefixes = (_given(cli.get(k)) for k in ("model", "result_prefix"))
    cli = {k: v for k, v in cli.items() if k not in ("model", "result_prefix")}
    if len(models) <= 1 and len(prefixes) <= 1:
        return cli | {k: v[0] for k, v in (("model", models), ("result_prefix", prefixes)) if v}
    if not prefixes:  # several models, no prefix: their columns clash (refused, naming the clash, in scoring)
        return cli | {"models": [{"model": m} for m in models]}
    if len(models) != len(prefixes):
        raise ConfigError(
            f"{len(models)} --model but {len(prefixes)} --result-prefix: give one --result-prefix per --model, "
            "in the same order (--model A --result-prefix a_ --model B --result-prefix b_)."
        )
    return cli | {"models": [{"model": m, "prefix": p} for m, p in zip(models, prefixes)]}


def load_config_file(path: str) -> dict[str, Any]:
    """The options in a YAML file; anything that keeps it from being read is a ConfigError naming the fix."""
    import yaml

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' not found; check the --config path.") from None
    except IsADirectoryError:
        raise ConfigError(f"Config file '{path}' is a folder; pass --config naming a YAML file.") from None
    except OSError as exc:
        raise ConfigError(
            f"Cannot read config file '{path}' ({exc.strerror or exc}); check the --config path."
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"Config file '{path}' is larger than {MAX_CONFIG_BYTES >> 20} MiB, far more than a "
            "file of options; check the --config path."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config file '{path}' is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8."
        ) from None
    try:
        data = yaml.load(text, Loader=_options_loader())  # noqa: S506 - a SafeLoader: plain values only
    except _AliasFound as exc:
        raise ConfigError(
            f"Config file '{path}' uses a YAML alias (*{exc.anchor}, line {exc.line}); write the "
            "value out: a file of options needs no aliases, and refusing them keeps a small file "
            "from expanding into gigabytes."
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"Config file '{path}' is not valid YAML ({first}).") from None
    except RecursionError:
        raise ConfigError(
            f"Config file '{path}' nests too deeply to be a file of options; write one option: value per line."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must be a mapping of option: value.")
    unknown = [k for k in data if str(k).replace("-", "_") not in OPTION_NAMES]
    if unknown:
        raise ConfigError(
            f"Unknown key '{unknown[0]}' in config file '{path}'; known keys are: {', '.join(OPTION_NAMES)}."
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _options_loader() -> type[yaml.SafeLoader]:
    import yaml

    class OptionsLoader(yaml.SafeLoader):
        """safe_load's loader (plain values only) that refuses aliases.

        An alias repeats a node without copying it: 354 bytes of nested aliases
        stand for billions of values, which any walk over them (a message
        quoting the value, a str() of it) expands. Counting expansions would
        need a limit to tune; options have no use for aliases at all.
        """

        def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _AliasFound(event.anchor, event.start_mark.line + 1)
            return super().compose_node(parent, index)

    return OptionsLoader


class _AliasFound(Exception):
    def __init__(self, anchor: str, line: int) -> None:
        super().__init__(anchor)
        self.anchor, self.line = anchor, line


def _resolve_paths(values: dict[str, Any], config_file: str) -> dict[str, Any]:
    """Relative paths in a config file are relative to the file's folder, so a job runs from any folder.

    `input` and `model` may also be Hub names (`user/name`): a relative value
    resolves only when it exists beside the file (a glob: when it matches there)
    or is explicitly relative (`./x`, `../x`); otherwise it is kept as given.
    `output` is always written where the file says.
    """
    folder = os.path.dirname(config_file)
    resolved = dict(values)
    for key in ("input", "model", "output"):
        value = values.get(key)
        if (
            not isinstance(value, str)
            or not value
            or "\0" in value
            or "://" in value
            or os.path.isabs(value)
            or value.startswith("~")
        ):
            continue
        there = os.path.normpath(os.path.join(folder, value))
        explicit = value in (".", "..") or value.startswith(("./", "../"))
        if key == "output" or explicit or _exists(there):
            resolved[key] = there
    if isinstance(values.get("models"), list):  # each model's path, like `model`
        resolved["models"] = [
            {**m, **_resolve_paths({"model": m["model"]}, config_file)}
            if isinstance(m, dict) and isinstance(m.get("model"), str)
            else m
            for m in values["models"]
        ]
    return resolved


def _exists(path: str) -> bool:
    import glob

    if any(c in path for c in "*?["):
        return bool(glob.glob(path))
    return os.path.exists(path)


def read_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {o.name: environ[o.envvar] for o in OPTIONS if environ.get(o.envvar, "") != ""}


def build_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> JobConfig:
    """Merge the layers; the first layer that sets a value wins: CLI > env > file > default.

    `cli` holds only values the user typed (None = not given). `env` defaults to
    os.environ; the config file path may itself come from BATCHSCORE_CONFIG.
    """
    cli = _repeated({k: v for k, v in (cli or {}).items() if v is not None})
    environ = os.environ if env is None else env
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    layers = [
        ("command line", cli),
        ("environment", read_env(environ)),
        (
            f"config file {config_file}",
            _resolve_paths(load_config_file(config_file), config_file) if config_file else {},
        ),
    ]
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        for origin, layer in layers:
            if layer.get(opt.name) is not None:
                values[opt.name] = _coerce(opt, layer[opt.name], origin)
                break
    _check_shards(values.get("num_shards"), values.get("shard_index"))
    # model and models are one setting: the first layer that sets either decides (a --model on the command
    # line replaces a config file's models list, and --model given twice replaces its model).
    for origin, layer in layers:
        given = [k for k in ("model", "models") if layer.get(k) is not None]
        if len(given) == 2:
            raise ConfigError(
                f"Both model and models are set (from {origin}); list every model under models, or give one."
            )
        if given:
            values.pop("models" if given == ["model"] else "model", None)
            break
    return JobConfig(**values, config_file=config_file)


def _check_shards(num_shards: int | None, shard_index: int | None) -> None:
    if num_shards is None and shard_index is None:
        return
    if num_shards is None:
        raise ConfigError("--shard-index needs --num-shards K (the number of shards).")
    if shard_index is None:
        raise ConfigError(f"--num-shards {num_shards} needs --shard-index I, from 0 to {num_shards - 1}.")
    if shard_index >= num_shards:
        raise ConfigError(
            f"--shard-index {shard_index} is out of range for --num-shards {num_shards}; use 0 to {num_shards - 1}."
        )

"""One typed job config, merged from built-in defaults < config file < env < CLI, and each model's own options.

The options themselves (names, kinds, help, defaults) are `options.OPTIONS`; here they are typed and
checked (`_coerce`), layered (`build_config`) and made into a `JobConfig` and its `ModelSpec`s.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config_file import load_config_file, resolve_paths
from .errors import ConfigError
from .options import (
    DEFAULT_THRESHOLD,
    ENV_PREFIX,
    MAX_WINDOWS,
    OPTIONS,
    WINDOW_OVERLAP,
    Option,
    model_and_revision,
)

# Metadata of a ModelSpec field that only --long-text window reads: it counts in the run's identity only in window
# mode, and in the result cache's identity unless `cached` is False (the cache keeps row scores, not windows').
WINDOW_OPTION = {"window": True, "cached": True}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One model of a run and every option that is its own, filled in: its `models:` entry's value, else the
    run's. The one record of a per-model option: the scoring rules hold it, the library's keywords are checked
    against its fields, and a window option (`WINDOW_OPTION`) enters the run's and the cache's identities by its
    metadata alone (scoring/identity.py lists the others that change scores)."""

    model: str | None = None
    revision: str | None = None
    prefix: str | None = None  # --result-prefix
    top_k: str = "1"
    max_length: int | None = None
    precision: str = "auto"
    long_text: str = "truncate"
    window_overlap: int = field(default=WINDOW_OVERLAP, metadata=WINDOW_OPTION)
    aggregate: str = field(default="mean", metadata=WINDOW_OPTION)
    max_windows: int = field(default=MAX_WINDOWS, metadata=WINDOW_OPTION)
    window_scores: bool = field(default=False, metadata=WINDOW_OPTION | {"cached": False})
    threshold: float = DEFAULT_THRESHOLD

    def window_options(self, cached_only: bool = False) -> dict[str, Any]:
        """The --long-text window options, by name (those the cache's identity holds, given `cached_only`)."""
        chosen = [f for f in dataclasses.fields(self) if f.metadata.get("window")]
        return {f.name: getattr(self, f.name) for f in chosen if f.metadata["cached"] or not cached_only}


# What each model of a run may set for itself (`models:`); "prefix" is its --result-prefix.
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSpec))


def library_specs(arguments: Mapping[str, Any], models: Any = None) -> list[ModelSpec]:
    """The models of a library call (`Scorer`, `spark.score`): `arguments` (keyword arguments named like the
    options, result_prefix for prefix), checked as the options are, over the options' defaults; each `models=`
    entry over those."""
    given = {("prefix" if k == "result_prefix" else k): v for k, v in arguments.items() if v is not None}
    unknown = sorted(set(given) - set(MODEL_KEYS))
    if unknown:
        named = ", ".join("result_prefix" if k == "prefix" else k for k in MODEL_KEYS)
        raise ConfigError(f"Unknown argument '{unknown[0]}'; a model's arguments are: {named}.")
    run = ModelSpec(**_typed_entry(given, "the arguments"))
    return [run] if models is None else [dataclasses.replace(run, **m) for m in models_from(models, "models=")]


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    input: str | None = None
    output: str | None = None
    output_format: str = "parquet"
    table_mode: str = "append"
    catalog: str | None = None  # Iceberg: a SQL catalog URI or a pyiceberg catalog name; None: the default
    model: str | None = None
    revision: str | None = None
    input_version: int | None = None  # a table INPUT's version (Delta) or snapshot id (Iceberg); None: the latest
    on_bad_row: str = "fail"
    max_bad_rows: str | None = None  # a count or a percentage of the records read; None: DEFAULT_MAX_BAD_ROWS
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
    min_agreement: float | None = None  # --precision fastest; None: DEFAULT_MIN_AGREEMENT
    calibration_rows: int | None = None  # --precision fastest; None: CALIBRATION_ROWS
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
    # Several models in one pass, each entry the options it sets for itself; () = the one model of the options above.
    models: tuple[Mapping[str, Any], ...] = ()
    # Not an option: where the config file came from, for the manifest.
    config_file: str | None = field(default=None, compare=False)

    @property
    def model_specs(self) -> list[ModelSpec]:
        """Every model of the run, each with all its options filled in (its own, else the run's)."""
        run = ModelSpec(**{k: getattr(self, "result_prefix" if k == "prefix" else k) for k in MODEL_KEYS})
        return [dataclasses.replace(run, **own) for own in self.models or ({},)]

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
        named = str(self.input).rstrip("/").removeprefix("iceberg:")  # an Iceberg table input: ns.table.scored
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
        d["models"] = [{k: own.get(k) for k in MODEL_KEYS} for own in self.models]  # every key, None: the run's
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


def models_from(value: Any, origin: str) -> tuple[dict[str, Any], ...]:
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
        specs.append(_typed_entry(entry, f"models entry {number}, from {origin}"))
    return tuple(specs)


def _typed_entry(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A model's own settings, each checked and typed as its option is (None: not set)."""
    by_name = {o.name: o for o in OPTIONS}
    typed: dict[str, Any] = {}
    for key, given in entry.items():
        if given is None:
            continue
        # The entry's own key names the option in messages: prefix, not result_prefix.
        opt = dataclasses.replace(by_name["result_prefix" if key == "prefix" else key], name=key)
        _check_type(opt, given, f"{key} (from {where})")
        typed[key] = _coerce(opt, given, where)
    return typed


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
            resolve_paths(load_config_file(config_file), config_file) if config_file else {},
        ),
    ]
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        for origin, layer in layers:
            if layer.get(opt.name) is not None:
                values[opt.name] = _coerce(opt, layer[opt.name], origin)
                break
    _check_shards(values.get("num_shards"), values.get("shard_index"))
    _check_table(values)
    _check_bad_rows(values)
    _check_calibration(values)
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


def _check_table(values: dict[str, Any]) -> None:
    """The table options make sense together, before anything is opened."""
    table = values.get("output_format") in ("delta", "iceberg")
    mode = values.get("table_mode")
    if mode not in (None, "append") and not table:
        raise ConfigError(f"--table-mode {mode} is for tables; pass --output-format delta or iceberg as well.")
    if mode == "merge" and not values.get("id_column"):
        raise ConfigError("--table-mode merge needs --id-column NAME: the key that matches rows in the table.")
    if values.get("output_format") == "iceberg" and not values.get("output"):
        raise ConfigError("--output-format iceberg needs -o NAMESPACE.TABLE, the table in --catalog.")


def _check_bad_rows(values: dict[str, Any]) -> None:
    from .quarantine.budget import parse_budget

    budget = values.get("max_bad_rows")
    if budget is None:
        return
    if values.get("on_bad_row") != "quarantine":
        raise ConfigError(f"--max-bad-rows {budget} is for --on-bad-row quarantine; pass that as well.")
    parse_budget(budget)  # a clear error now, not after the model loads


def _check_calibration(values: dict[str, Any]) -> None:
    """--min-agreement and --calibration-rows only mean something to a model calibrated with --precision fastest."""
    given = [k for k in ("min_agreement", "calibration_rows") if values.get(k) is not None]
    if not given:
        return
    models = values.get("models") or []
    precisions = [values.get("precision")] + [m.get("precision") for m in models if isinstance(m, dict)]
    if "fastest" not in precisions:
        flag = "--" + given[0].replace("_", "-")
        raise ConfigError(f"{flag} {values[given[0]]} is for --precision fastest; pass that as well.")


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

"""Config merging: CLI > env (BATCHSCORE_*) > config file > defaults, and value checks."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchscore.config import JobConfig, build_config
from batchscore.config_file import load_config_file
from batchscore.errors import ConfigError
from batchscore.options import OPTIONS, REFERENCE_MODEL, REFERENCE_REVISION
from helpers import invoke

REPO = Path(__file__).resolve().parents[1]


def write_yaml(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def config_file(tmp_path):
    return write_yaml(
        tmp_path / "job.yaml",
        """\
text_column: body
batch_tokens: 100
chunk_rows: 50
top_k: all
split: validation
keep_columns: [a, b]
overwrite: true
""",
    )


# ------------------------------------------------------------------ precedence


def test_defaults():
    cfg = build_config({}, env={})
    assert cfg == JobConfig()
    assert (cfg.text_column, cfg.batch_tokens, cfg.chunk_rows, cfg.top_k, cfg.split) == (
        "text",
        None,
        10000,
        "1",
        "train",
    )
    assert cfg.keep_columns is None and cfg.overwrite is False and cfg.limit is None
    assert cfg.config_file is None


def test_config_file_beats_defaults(config_file):
    cfg = build_config({}, env={}, config_file=config_file)
    assert cfg.text_column == "body"
    assert cfg.batch_tokens == 100
    assert cfg.chunk_rows == 50
    assert cfg.top_k == "all"
    assert cfg.split == "validation"
    assert cfg.keep_columns == ("a", "b")
    assert cfg.overwrite is True
    assert cfg.precision == "auto"  # not in the file: default
    assert cfg.config_file == config_file


def test_env_beats_config_file(config_file):
    env = {
        "BATCHSCORE_BATCH_TOKENS": "200",
        "BATCHSCORE_TOP_K": "1",
        "BATCHSCORE_OVERWRITE": "no",
        "BATCHSCORE_LIMIT": "7",
    }
    cfg = build_config({}, env=env, config_file=config_file)
    assert cfg.batch_tokens == 200
    assert cfg.top_k == "1"
    assert cfg.overwrite is False
    assert cfg.limit == 7
    assert cfg.text_column == "body"  # env silent: the file still counts
    assert cfg.chunk_rows == 50


def test_cli_beats_env_and_config_file(config_file):
    env = {"BATCHSCORE_BATCH_TOKENS": "200", "BATCHSCORE_TEXT_COLUMN": "review", "BATCHSCORE_OVERWRITE": "1"}
    cli = {"batch_tokens": 300, "text_column": "comment", "overwrite": False, "chunk_rows": None, "top_k": None}
    cfg = build_config(cli, env=env, config_file=config_file)
    assert cfg.batch_tokens == 300
    assert cfg.text_column == "comment"
    assert cfg.overwrite is False  # an explicit --no-overwrite beats env and file
    assert cfg.chunk_rows == 50  # None from the CLI means "not given"
    assert cfg.top_k == "all"


def test_env_beats_default_without_file():
    cfg = build_config(
        {},
        env={
            "BATCHSCORE_SPLIT": "test",
            "BATCHSCORE_MODEL": "/models/m",
            "BATCHSCORE_KEEP_COLUMNS": "none",
            "BATCHSCORE_PRECISION": "BF16",
        },
    )
    assert cfg.split == "test"
    assert cfg.model == "/models/m"
    assert cfg.keep_columns == ()
    assert cfg.precision == "bf16"


def test_empty_env_value_is_ignored(config_file):
    cfg = build_config({}, env={"BATCHSCORE_TEXT_COLUMN": "", "BATCHSCORE_BATCH_TOKENS": ""}, config_file=config_file)
    assert cfg.text_column == "body"
    assert cfg.batch_tokens == 100


def test_every_option_reads_its_env_var():
    values = {
        "input": "in.csv",
        "output": "out",
        "model": "m",
        "revision": "r",
        "text_column": "t",
        "id_column": "i",
        "keep_columns": "x,y",
        "top_k": "all",
        "max_length": "64",
        "batch_tokens": "9",
        "chunk_rows": "8",
        "precision": "fastest",
        "min_agreement": "0.995",
        "calibration_rows": "500",
        "limit": "5",
        "split": "s",
        "dataset_config": "c",
        "num_workers": "0",
        "progress": "true",
        "overwrite": "true",
        "encoding": "latin-1",
        "allow_pickle": "1",
        "csv_infer_types": "on",
        "trust_remote_code": "yes",
        "num_shards": "4",
        "shard_index": "3",
        "result_prefix": "pred_",
        "threshold": "0.25",
        "threads": "3",
        "quiet": "1",
        "verbose": "0",
        "log_format": "json",
        "long_text": "window",
        "window_overlap": "32",
        "aggregate": "max",
        "max_windows": "7",
        "window_scores": "true",
        "progress_every": "15",
        "report": "yes",
        "cache": "s3://bucket/score-cache/",
        "output_format": "delta",
        "table_mode": "merge",
        "catalog": "sqlite:///c.db",
        "input_version": "12",
        "on_bad_row": "quarantine",
        "max_bad_rows": "0.5%",
    }
    assert set(values) == {o.name for o in OPTIONS} - {"models"}  # models replaces model: its own test below
    cfg = build_config({}, env={f"BATCHSCORE_{k.upper()}": v for k, v in values.items()})
    assert (cfg.input, cfg.output, cfg.model, cfg.revision) == ("in.csv", "out", "m", "r")
    assert (cfg.text_column, cfg.id_column, cfg.keep_columns) == ("t", "i", ("x", "y"))
    assert (cfg.top_k, cfg.max_length, cfg.batch_tokens, cfg.chunk_rows) == ("all", 64, 9, 8)
    assert (cfg.precision, cfg.limit, cfg.split, cfg.dataset_config) == ("fastest", 5, "s", "c")
    assert (cfg.min_agreement, cfg.calibration_rows) == (0.995, 500)
    assert (cfg.num_workers, cfg.progress, cfg.overwrite) == (0, True, True)
    assert (cfg.progress_every, cfg.report, cfg.cache) == (15, True, "s3://bucket/score-cache/")
    assert (cfg.encoding, cfg.allow_pickle, cfg.trust_remote_code, cfg.csv_infer_types) == ("latin-1", True, True, True)
    assert (cfg.num_shards, cfg.shard_index) == (4, 3)
    assert (cfg.output_format, cfg.table_mode, cfg.catalog, cfg.input_version) == (
        "delta",
        "merge",
        "sqlite:///c.db",
        12,
    )
    assert (cfg.result_prefix, cfg.threshold) == ("pred_", 0.25)
    assert (cfg.on_bad_row, cfg.max_bad_rows) == ("quarantine", "0.5%")
    assert (cfg.long_text, cfg.window_overlap, cfg.aggregate, cfg.max_windows, cfg.window_scores) == (
        "window",
        32,
        "max",
        7,
        True,
    )


def test_models_from_the_env_var_and_a_config_file(tmp_path):
    """BATCHSCORE_MODELS holds YAML; a config file's models list, each entry's own options over the run's."""
    env = {"BATCHSCORE_MODELS": "[{model: a, prefix: a_}, {model: b, prefix: b_, top_k: all}]", "BATCHSCORE_TOP_K": "1"}
    cfg = build_config({}, env=env)
    assert [(m.model, m.prefix, m.top_k) for m in cfg.model_specs] == [("a", "a_", "1"), ("b", "b_", "all")]
    config = write_yaml(tmp_path / "job.yaml", "max_length: 64\nmodels:\n  - {model: x, prefix: x_, max_length: 32}\n")
    cfg = build_config({}, env={}, config_file=config)
    assert [(m.model, m.max_length) for m in cfg.model_specs] == [("x", 32)]
    # The command line's --model replaces the file's models; both in one layer is refused.
    assert build_config({"model": "y"}, env={}, config_file=config).model_specs[0].model == "y"
    with pytest.raises(ConfigError, match="Both model and models"):
        build_config({}, env={**env, "BATCHSCORE_MODEL": "z"})
    for bad, fragment in (("[{prefix: a_}]", "names no model"), ("[{model: a, colour: red}]", "unknown key 'colour'")):
        with pytest.raises(ConfigError, match=fragment):
            build_config({}, env={"BATCHSCORE_MODELS": bad})


@pytest.mark.parametrize(
    "entry, message",
    [
        ("prefix: [p_]", "prefix (from models entry 1, from config file JOB) must be text, got ['p_'] (a list)."),
        (
            "prefix: {a: 1}",
            "prefix (from models entry 1, from config file JOB) must be text, got {'a': 1} (a mapping).",
        ),
        ("prefix: true", "prefix (from models entry 1, from config file JOB) must be text, got True (true/false)."),
        ("prefix: 7", "prefix (from models entry 1, from config file JOB) must be text, got 7 (a number); quote it."),
        (
            "revision: [main]",
            "revision (from models entry 1, from config file JOB) must be text, got ['main'] (a list).",
        ),
        ("revision: 0123", "revision (from models entry 1, from config file JOB) must be text, got 83 (a number); "),
        (
            "max_length: [32]",
            "max_length (from models entry 1, from config file JOB) must be a whole number, got [32] (a list).",
        ),
        (
            "threshold: [0.5]",
            "threshold (from models entry 1, from config file JOB) must be a number from 0 to 1, got [0.5] (a list).",
        ),
        (
            "window_scores: [yes]",
            "window_scores (from models entry 1, from config file JOB) must be true or false, got [True] (a list).",
        ),
        (
            "top_k: {a: b}",
            "top_k (from models entry 1, from config file JOB) must be one of 1, all, got {'a': 'b'} (a mapping).",
        ),
        (
            "precision: [int8]",
            "precision (from models entry 1, from config file JOB) must be one of auto, fp32, bf16, fp16, int8, "
            "fastest, got ['int8'] (a list).",
        ),
    ],
)
def test_models_entries_keep_their_options_types(tmp_path, entry, message):
    """Each key of a models: entry has its option's type: a list, mapping or boolean where text is meant (and a
    number, which YAML may have rewritten: 0123 is 83) is refused, naming the entry, the key, the type and what
    was given, as one line with exit 2."""
    path = tmp_path / "job.yaml"
    config = write_yaml(path, f"models:\n  - {{model: m, {entry}}}\n")
    with pytest.raises(ConfigError) as info:
        build_config({}, env={}, config_file=config)
    assert info.value.exit_code == 2
    assert message.replace("JOB", str(path)) in info.value.message, info.value.message
    assert "\n" not in info.value.message
    # The same through the CLI: one Error line, exit 2, before anything is read.
    from helpers import assert_error

    assert_error(invoke(["score", tmp_path / "none.csv", "--config", config]), 2, "models entry 1")


def test_models_entries_take_yaml_scalars_of_their_type(tmp_path):
    """What YAML writes for each type is taken: numbers for numbers, 1 for top_k, yes for booleans."""
    config = write_yaml(
        tmp_path / "job.yaml",
        "models:\n  - {model: m, prefix: a_, revision: 'v1', top_k: 1, max_length: 32, threshold: 1, "
        "window_scores: yes, window_overlap: 0, precision: INT8}\n",
    )
    (spec,) = build_config({}, env={}, config_file=config).model_specs
    assert (spec.prefix, spec.revision, spec.top_k, spec.max_length, spec.threshold, spec.window_scores) == (
        "a_",
        "v1",
        "1",
        32,
        1.0,
        True,
    )
    assert (spec.window_overlap, spec.precision) == (0, "int8")


def test_a_list_as_the_result_prefix_is_refused(tmp_path):
    """The same hole outside models: (result_prefix: [p_] became the prefix "['p_']")."""
    config = write_yaml(tmp_path / "job.yaml", "result_prefix: [p_]\n")
    with pytest.raises(
        ConfigError, match=r"result_prefix \(from config file .*\) must be text, got \['p_'\] \(a list\)"
    ):
        build_config({}, env={}, config_file=config)


def test_config_env_var_names_the_file(config_file):
    cfg = build_config({}, env={"BATCHSCORE_CONFIG": config_file})
    assert cfg.text_column == "body"
    assert cfg.config_file == config_file


def test_explicit_config_file_beats_config_env_var(tmp_path, config_file):
    other = write_yaml(tmp_path / "other.yaml", "text_column: headline\n")
    cfg = build_config({}, env={"BATCHSCORE_CONFIG": config_file}, config_file=other)
    assert cfg.text_column == "headline"
    assert cfg.batch_tokens is None  # nothing read from the env-named file


def test_dashed_keys_and_empty_file(tmp_path):
    cfg = build_config({}, env={}, config_file=write_yaml(tmp_path / "a.yaml", "batch-tokens: 64\ntext-column: x\n"))
    assert (cfg.batch_tokens, cfg.text_column) == (64, "x")
    assert build_config({}, env={}, config_file=write_yaml(tmp_path / "b.yaml", "# nothing\n")) == JobConfig()


# ------------------------------------------------------------------ errors


def test_unknown_key_names_the_key(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "text_column: body\nbatch_size: 32\n")
    with pytest.raises(ConfigError) as info:
        build_config({}, env={}, config_file=path)
    assert "batch_size" in info.value.message
    assert "batch_tokens" in info.value.message  # the known keys are listed


@pytest.mark.parametrize(
    "yaml_text, option",
    [
        ("batch_tokens: 0\n", "batch_tokens"),
        ("chunk_rows: -5\n", "chunk_rows"),
        ("top_k: 3\n", "top_k"),
        ("precision: fp8\n", "precision"),
        ("batch_tokens: lots\n", "batch_tokens"),
        ("limit: 2.5\n", "limit"),
        ("max_length: true\n", "max_length"),
        ("overwrite: maybe\n", "overwrite"),
        ("text_column: [a, b]\n", "text_column"),
        ("keep_columns: 'a,,b'\n", "keep_columns"),
    ],
)
def test_bad_values_in_file(tmp_path, yaml_text, option):
    path = write_yaml(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(ConfigError) as info:
        build_config({}, env={}, config_file=path)
    assert option in info.value.message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "name, value",
    [
        ("BATCHSCORE_BATCH_TOKENS", "0"),
        ("BATCHSCORE_TOP_K", "3"),
        ("BATCHSCORE_PRECISION", "fp8"),
        ("BATCHSCORE_CHUNK_ROWS", "ten"),
        ("BATCHSCORE_PROGRESS", "sometimes"),
    ],
)
def test_bad_values_in_env(name, value):
    with pytest.raises(ConfigError) as info:
        build_config({}, env={name: value})
    assert name.removeprefix("BATCHSCORE_").lower() in info.value.message
    assert "environment" in info.value.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "key: [unclosed\n"])
def test_config_file_must_be_a_yaml_mapping(tmp_path, text):
    with pytest.raises(ConfigError):
        build_config({}, env={}, config_file=write_yaml(tmp_path / "c.yaml", text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config({}, env={"BATCHSCORE_CONFIG": str(tmp_path / "nope.yaml")})
    assert "nope.yaml" in info.value.message


# ------------------------------------------------------------------ keep_columns


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a,b", ("a", "b")),
        (" a , b ", ("a", "b")),
        ("b", ("b",)),
        (["a", "b"], ("a", "b")),
        (("c",), ("c",)),
        ("none", ()),
        ("NONE", ()),
        ([], ()),
        ("all", None),
        ("All", None),
    ],
)
def test_keep_columns_parsing(raw, expected):
    assert build_config({"keep_columns": raw}, env={}).keep_columns == expected


def test_keep_columns_list_in_yaml(tmp_path):
    cfg = build_config({}, env={}, config_file=write_yaml(tmp_path / "k.yaml", "keep_columns:\n  - x\n  - y\n"))
    assert cfg.keep_columns == ("x", "y")
    assert cfg.to_dict()["keep_columns"] == ["x", "y"]


# ------------------------------------------------------------------ default model


def test_default_model_is_the_pinned_reference():
    cfg = build_config({}, env={})
    assert cfg.model is None
    assert cfg.model_id == REFERENCE_MODEL == "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    assert cfg.model_revision == REFERENCE_REVISION == "af0f99b"
    d = cfg.to_dict()
    assert (d["model"], d["revision"]) == (REFERENCE_MODEL, REFERENCE_REVISION)


def test_given_model_is_not_pinned():
    cfg = build_config({"model": "./my-model"}, env={})
    assert cfg.model_id == "./my-model"
    assert cfg.model_revision is None
    cfg = build_config({}, env={"BATCHSCORE_MODEL": "someone/other-model"})
    assert (cfg.model_id, cfg.model_revision) == ("someone/other-model", None)


def test_reference_model_named_explicitly_stays_pinned():
    for values, env in (({"model": REFERENCE_MODEL}, {}), ({}, {"BATCHSCORE_MODEL": REFERENCE_MODEL})):
        cfg = build_config(values, env=env)
        assert (cfg.model_id, cfg.model_revision) == (REFERENCE_MODEL, REFERENCE_REVISION)


def test_given_revision_wins():
    assert build_config({"model": "someone/m", "revision": "v2"}, env={}).model_revision == "v2"
    cfg = build_config({"revision": "main"}, env={})
    assert (cfg.model_id, cfg.model_revision) == (REFERENCE_MODEL, "main")


# ------------------------------------------------------------------ shipped configs


@pytest.mark.parametrize(
    "name, model, revision",
    [
        # the offline model `make model` builds: relative to the file's folder (configs/../models), not pinned
        ("default.yaml", str(REPO / "models" / "minilm-vader-sentiment"), None),
        ("sst2.yaml", REFERENCE_MODEL, REFERENCE_REVISION),  # the reference model, pinned
    ],
)
def test_shipped_config_loads(name, model, revision):
    path = str(REPO / "configs" / name)
    raw = load_config_file(path)
    known = {opt.name for opt in OPTIONS}
    assert set(raw) <= known
    if name == "default.yaml":
        assert set(raw) == known  # "every job option with its built-in default"
    cfg = build_config({}, env={}, config_file=path)
    model_id = str(Path(cfg.model_id).resolve()) if model.startswith("/") else cfg.model_id
    assert (model_id, cfg.model_revision) == (model, revision)
    # Every other option is the built-in default: the files say so, and a changed default must change them too.
    shipped, builtin = cfg.to_dict(), build_config({}, env={}).to_dict()
    for key in ("model", "revision", "config_file"):
        del shipped[key], builtin[key]
    assert shipped == builtin


# ------------------------------------------------------------------ through the CLI


def test_env_var_changes_the_job(tmp_path, tiny_model):
    texts = ["good", "", "awful film"]
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    result = invoke(
        ["score", tmp_path / "in.parquet", "-o", out, "--no-progress"],
        env={"BATCHSCORE_TOP_K": "all", "BATCHSCORE_MODEL": tiny_model},
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(str(out))
    assert table.column_names == ["text", "label", "score", "scores"]
    scores = table.column("scores").to_pylist()
    assert scores[1] is None
    for i in (0, 2):
        entries = scores[i]
        assert sorted(e["label"] for e in entries) == ["NEGATIVE", "POSITIVE"]
        assert entries[0]["score"] >= entries[1]["score"]
        assert abs(sum(e["score"] for e in entries) - 1) < 1e-5
        assert entries[0]["label"] == table.column("label")[i].as_py()
        assert entries[0]["score"] == pytest.approx(table.column("score")[i].as_py())


def test_config_file_changes_the_job(tmp_path, tiny_model):
    pq.write_table(
        pa.table({"n": [1, 2, 3], "body": ["great", "bad", "fine"], "other": ["x", "y", "z"]}), tmp_path / "in.parquet"
    )
    config = write_yaml(tmp_path / "job.yaml", f"text_column: body\nkeep_columns: n\nmodel: {tiny_model}\n")
    out = tmp_path / "out"
    result = invoke(["score", tmp_path / "in.parquet", "--config", config, "-o", out, "--no-progress"], env={})
    assert result.exit_code == 0, result.output
    table = pq.read_table(str(out))
    assert table.column_names == ["n", "label", "score"]
    assert table.column("n").to_pylist() == [1, 2, 3]
    assert table.column("label").null_count == 0


def test_config_env_var_and_cli_override_through_the_cli(tmp_path, tiny_model):
    pq.write_table(pa.table({"body": ["great", "bad"], "text": ["", ""]}), tmp_path / "in.parquet")
    config = write_yaml(tmp_path / "job.yaml", "text_column: text\nkeep_columns: none\n")
    out = tmp_path / "out"
    # File says text (all empty); the CLI says body: body wins, so every row is scored.
    result = invoke(
        ["score", tmp_path / "in.parquet", "--text-column", "body", "--model", tiny_model, "-o", out, "--no-progress"],
        env={"BATCHSCORE_CONFIG": config},
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(str(out))
    assert table.column_names == ["label", "score"]  # keep_columns from the env-named file
    assert table.column("label").null_count == 0


def test_bad_config_file_through_the_cli(tmp_path):
    config = write_yaml(tmp_path / "job.yaml", "txt_column: body\n")
    result = invoke(["score", tmp_path / "in.csv", "--config", config], env={})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "txt_column" in lines[0]


def test_default_yaml_documents_every_option():
    keys = load_config_file(str(REPO / "configs" / "default.yaml"))
    from batchscore.options import OPTION_NAMES

    assert sorted(keys) == sorted(OPTION_NAMES)

"""Model checks that fail before any output exists: padding token, --max-length floor, missing weights."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, build_model, invoke, pipeline_oracle, run_score

TEXTS = ["I love it", "I hate this so much, " * 300, "fine"]  # the second is far over 512 tokens


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": TEXTS}), path)
    return path


def fails_before_output(src, model, outputs, exit_code, expected_line, *extra):
    line = assert_error(run_score(src, model, outputs / "out", *extra), exit_code)
    assert line == expected_line
    assert os.listdir(outputs) == [], "the failed run left something in the output location"


def assert_matches_pipeline(out, model_dir, **kwargs):
    table = pq.read_table(str(out))
    expected = pipeline_oracle(model_dir, TEXTS, **kwargs)
    assert table.column("label").to_pylist() == [e["label"] for e in expected]
    np.testing.assert_allclose(table.column("score").to_pylist(), [e["score"] for e in expected], atol=1e-5)


def without_pad_token(path, config_pad_token_id="keep"):
    """A tiny model whose saved tokenizer has no pad token; optionally no pad_token_id in config.json either."""
    from transformers import AutoTokenizer

    build_model(path, "bert")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(str(path))
    assert AutoTokenizer.from_pretrained(str(path)).pad_token_id is None
    if config_pad_token_id != "keep":
        config = json.loads((path / "config.json").read_text())
        config["pad_token_id"] = config_pad_token_id
        (path / "config.json").write_text(json.dumps(config))
    return str(path)


# ------------------------------------------------------------------ padding token


def test_tokenizer_without_pad_token_borrows_the_configs_pad_token_id(tmp_path, src):
    model = without_pad_token(tmp_path / "nopad")
    assert json.loads((tmp_path / "nopad" / "config.json").read_text())["pad_token_id"] == 0
    out = tmp_path / "out"
    # Rows of very different lengths in one batch: padding is needed.
    result = run_score(src, model, out)
    assert result.exit_code == 0, result.output
    assert_matches_pipeline(out, model)


def test_no_pad_token_anywhere_is_refused_before_output(tmp_path, src, outputs):
    model = without_pad_token(tmp_path / "nopad", config_pad_token_id=None)
    fails_before_output(
        src,
        model,
        outputs,
        4,
        f"Error: Model '{model}' has no padding token (none in its tokenizer, no usable pad_token_id in its "
        "config.json); set pad_token_id in its config.json (GPT-style models use their eos_token_id) or "
        "pad_token in its tokenizer_config.json.",
    )


def test_pad_token_id_outside_the_vocabulary_is_refused(tmp_path, src, outputs):
    model = without_pad_token(tmp_path / "nopad", config_pad_token_id=10**6)
    fails_before_output(
        src,
        model,
        outputs,
        4,
        f"Error: Model '{model}' has no padding token (none in its tokenizer, no usable "
        "pad_token_id in its config.json); set pad_token_id in its config.json (GPT-style models "
        "use their eos_token_id) or pad_token in its tokenizer_config.json.",
    )


# ------------------------------------------------------------------ --max-length floor


@pytest.mark.parametrize("n", ["1", "2"])
def test_max_length_without_room_for_text_is_a_usage_error(tiny_model, src, outputs, n):
    # bert-base-uncased's tokenizer adds [CLS] and [SEP]: 3 is the least that holds a token of text.
    fails_before_output(
        src,
        tiny_model,
        outputs,
        2,
        f"Error: --max-length {n} leaves no room for text: the tokenizer of '{tiny_model}' adds 2 "
        "special tokens to every text; use --max-length 3 or more.",
        "--max-length",
        n,
    )


def test_max_length_floor_from_env_too(tiny_model, src, outputs):
    result = invoke(
        ["score", src, "--model", tiny_model, "-o", outputs / "out", "--no-progress"],
        env={"BATCHSCORE_MAX_LENGTH": "2"},
    )
    assert_error(result, 2, "--max-length 2 leaves no room for text", "use --max-length 3 or more")
    assert os.listdir(outputs) == []


def test_smallest_allowed_max_length_truncates_like_the_pipeline(tmp_path, tiny_model, src):
    out = tmp_path / "out"
    result = run_score(src, tiny_model, out, "--max-length", "3")
    assert result.exit_code == 0, result.output
    assert "2 truncated" in result.stderr  # "fine" is one token and fits
    assert_matches_pipeline(out, tiny_model, max_length=3)


# ------------------------------------------------------------------ no weights


@pytest.mark.parametrize("extra", [(), ("--allow-pickle",)], ids=["default", "allow-pickle"])
def test_model_folder_without_weights(tmp_path, tiny_model, src, outputs, extra):
    model = tmp_path / "no-weights"
    model.mkdir()
    for name in os.listdir(tiny_model):
        if not name.endswith((".safetensors", ".bin")):
            shutil.copy(os.path.join(tiny_model, name), model / name)
    assert (model / "config.json").exists()
    fails_before_output(
        src,
        str(model),
        outputs,
        4,
        f"Error: Model folder '{model}' has no weights (model.safetensors); copy the weights into "
        "it, or pass --model naming a complete model folder.",
        *extra,
    )

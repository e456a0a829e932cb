"""Bad input, one test per row of the table: the exit code, one line `Error: ...`
naming the fix, and an output location left exactly as it was.

Every error test runs with `-o <outputs>/out` inside a folder of its own and
snapshots that whole folder (names and bytes, hidden files included) before and
after: a failed run may not leave a part, a lock, a temp file or an empty folder.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import (
    assert_error,
    assert_ok,
    build_model,
    fails_untouched,
    invoke,
    manifest_of,
    pipeline_oracle,
    run_score,
    tokenizer_dir,
)

# ------------------------------------------------------------------ helpers (house style of test_cli.py)


def write_csv_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def good_csv(tmp_path):
    return write_csv_bytes(tmp_path / "good.csv", b"id,text\n1,I love it\n2,I hate it\n")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


# ------------------------------------------------------------------ input: missing, empty, zero rows


def test_input_path_does_not_exist(tmp_path, tiny_model, outputs):
    line = fails_untouched(tmp_path / "nope.csv", tiny_model, outputs, 3, "nope.csv", "not found", "check the path")
    assert str(tmp_path / "nope.csv") in line


def test_empty_file_of_zero_bytes(tmp_path, tiny_model, outputs):
    (tmp_path / "empty.csv").write_bytes(b"")
    fails_untouched(tmp_path / "empty.csv", tiny_model, outputs, 3, "empty.csv", "empty (0 bytes)")


def test_zero_rows_header_only_gives_empty_output_with_schema(tmp_path, tiny_model, outputs):
    src = write_csv_bytes(tmp_path / "header.csv", b"id,text,stars\n")
    out = outputs / "out"
    result = assert_ok(run_score(src, tiny_model, out))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "no rows" in warnings[0], result.stderr
    assert "Scored 0 of 0 rows" in result.stderr
    assert (out / "_SUCCESS").exists()
    table = pq.read_table(str(out))
    assert table.num_rows == 0
    assert table.column_names == ["id", "text", "stars", "label", "score"]
    assert table.schema.field("text").type == pa.string()  # the text column is always a string
    assert table.schema.field("label").type == pa.string()
    assert table.schema.field("score").type == pa.float32()
    manifest = manifest_of(out)
    assert manifest["rows"] == 0 and manifest["scored_rows"] == 0 and manifest["empty_text_rows"] == 0


# ------------------------------------------------------------------ input: the text column


def test_text_column_missing_lists_columns(tmp_path, tiny_model, outputs):
    src = write_csv_bytes(tmp_path / "in.csv", b"id,body,stars\n1,great,5\n")
    line = fails_untouched(src, tiny_model, outputs, 3, "'text'", "not found", "--text-column")
    assert "columns are: id, body, stars" in line


def test_numeric_text_column_is_scored_as_its_string_form(tmp_path, tiny_model, outputs):
    values = [10, 42, -7, 1234567]
    src = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": pa.array(values, pa.int64())}), src)
    out = outputs / "out"
    assert_ok(run_score(src, tiny_model, out))
    table = pq.read_table(str(out))
    assert table.column("text").to_pylist() == values  # kept as input, unchanged
    assert table.column("label").null_count == 0 and table.column("score").null_count == 0
    expected = pipeline_oracle(tiny_model, [str(v) for v in values])
    assert table.column("label").to_pylist() == [e["label"] for e in expected]
    np.testing.assert_allclose(table.column("score").to_pylist(), [e["score"] for e in expected], atol=1e-5)
    assert manifest_of(out)["scored_rows"] == len(values)


def test_nested_text_column_is_refused(tmp_path, tiny_model, outputs):
    src = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": pa.array([["a", "b"], ["c"]], pa.list_(pa.string()))}), src)
    fails_untouched(src, tiny_model, outputs, 3, "'text'", "list<", "not text", "--text-column")


def test_null_empty_and_whitespace_texts_get_null_scores_and_are_counted(tmp_path, tiny_model, outputs):
    texts = ["fine", None, "", "   ", "\t\n", "\u00a0", "\u2003 \u3000", "great movie", None, "ok"]
    src = tmp_path / "blanks.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": pa.array(texts, pa.string())}), src)
    out = outputs / "out"
    assert_ok(run_score(src, tiny_model, out, "--chunk-rows", "4"))
    table = pq.read_table(str(out))
    assert table.column("id").to_pylist() == list(range(len(texts)))  # every row kept, in order
    assert table.column("text").to_pylist() == texts
    blank = [t is None or t.strip() == "" for t in texts]
    assert table.column("label").is_null().to_pylist() == blank
    assert table.column("score").is_null().to_pylist() == blank
    manifest = manifest_of(out)
    assert manifest["rows"] == len(texts)
    assert manifest["empty_text_rows"] == sum(blank) == 7
    assert manifest["scored_rows"] == len(texts) - sum(blank)


def test_text_longer_than_the_model_limit_is_truncated_and_counted(tmp_path, tiny_model, outputs, tokenizer):
    texts = [
        "short and sweet",
        "word " * 510,  # 510 tokens + [CLS] + [SEP] = 512: exactly the limit, not truncated
        "word " * 511,  # 513: one over
        "the movie was great " * 400,
        "",
        "a " * 3000,
    ]
    src = tmp_path / "long.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": pa.array(texts, pa.string())}), src)
    out = outputs / "out"
    assert_ok(run_score(src, tiny_model, out))
    limit = min(tokenizer.model_max_length, 512)
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]  # no truncation: the real length
    assert lengths[1] == limit and lengths[2] == limit + 1
    expected = sum(1 for t, n in zip(texts, lengths) if t.strip() and n > limit)
    assert expected == 3
    manifest = manifest_of(out)
    assert manifest["truncated_rows"] == expected
    table = pq.read_table(str(out))
    assert table.column("text").to_pylist() == texts  # the stored text is never cut
    assert table.column("label").is_null().to_pylist() == [not t.strip() for t in texts]
    oracle = pipeline_oracle(tiny_model, [t for t in texts if t.strip()])
    scored = [s for s, t in zip(table.column("score").to_pylist(), texts) if t.strip()]
    np.testing.assert_allclose(scored, [e["score"] for e in oracle], atol=1e-5)


# ------------------------------------------------------------------ input: encoding and parse errors

BAD_UTF8 = b"id,text\n1,fine\n2,caf\xe9 au lait\n3,ok\n"


def test_invalid_utf8_csv_fails_naming_the_row_and_encoding(tmp_path, tiny_model, outputs):
    src = write_csv_bytes(tmp_path / "latin.csv", BAD_UTF8)
    # The bad byte is in data row 2, line 3 of the file: pyarrow counts the header as row 1.
    fails_untouched(
        src,
        tiny_model,
        outputs,
        3,
        "latin.csv",
        "on line 3",
        "invalid UTF8",
        "--encoding latin-1",
        "--encoding utf-8-replace",
    )


def test_invalid_utf8_csv_with_encoding_latin1(tmp_path, tiny_model, outputs):
    src = write_csv_bytes(tmp_path / "latin.csv", BAD_UTF8)
    out = outputs / "out"
    assert_ok(run_score(src, tiny_model, out, "--encoding", "latin-1"))
    table = pq.read_table(str(out))
    assert table.column("text").to_pylist() == ["fine", "caf\u00e9 au lait", "ok"]
    assert table.column("text").to_pylist()[1] == b"caf\xe9 au lait".decode("latin-1")
    assert table.column("label").null_count == 0


def test_invalid_utf8_csv_with_encoding_utf8_replace(tmp_path, tiny_model, outputs):
    src = write_csv_bytes(tmp_path / "latin.csv", BAD_UTF8)
    out = outputs / "out"
    assert_ok(run_score(src, tiny_model, out, "--encoding", "utf-8-replace"))
    table = pq.read_table(str(out))
    assert table.column("text").to_pylist() == ["fine", "caf\ufffd au lait", "ok"]
    assert table.column("text").to_pylist()[1] == b"caf\xe9 au lait".decode("utf-8", "replace")
    assert table.column("label").null_count == 0


BIG_ROWS, BAD_ROW = 60_000, 50_000
READ_BLOCK = 1 << 22  # the CSV read block (input/text_format.py BLOCK_SIZE); schema inference parses only the first one
PAD = b" and the rest of this review says it was really quite fine overall and I would buy it again"


def big_csv(path, bad_line: bytes):
    """60,000 good rows of `id,text` (~9 MB), with data row 50,000 (1-based) replaced by `bad_line`."""
    lines = [b"id,text"]
    for i in range(1, BIG_ROWS + 1):
        lines.append(bad_line if i == BAD_ROW else b"%d,review number %d is fine%s" % (i, i, PAD))
    data = b"\n".join(lines) + b"\n"
    # Far past the first read block: only a scan of the whole file can see the bad row up front.
    assert data.index(bad_line) > READ_BLOCK
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "bad_line, fragments",
    [
        (b"50000,caf\xe9 far into the file", ("invalid UTF8", "--encoding latin-1", "--encoding utf-8-replace")),
        (b"50000,too,many,fields", ("Expected 2 columns, got 4", "50000,too,many,fields", "fix that row")),
    ],
    ids=["bad-utf8", "ragged"],
)
def test_bad_row_far_into_a_big_csv_fails_before_any_output(tmp_path, tiny_model, outputs, bad_line, fragments):
    src = big_csv(tmp_path / "big.csv", bad_line)
    # Without the up-front scan the job creates the output folder and (bad UTF-8) commits chunks of
    # 1,000 rows before it reaches the bad row. pyarrow counts the header as row 1.
    fails_untouched(
        src, tiny_model, outputs, 3, "big.csv", f"on line {BAD_ROW + 1}", *fragments, extra=("--chunk-rows", "1000")
    )


def test_corrupt_parquet_garbage_bytes(tmp_path, tiny_model, outputs):
    src = tmp_path / "garbage.parquet"
    src.write_bytes(os.urandom(4096))
    fails_untouched(src, tiny_model, outputs, 3, "garbage.parquet", "corrupt or truncated", "export it again")


def test_truncated_parquet(tmp_path, tiny_model, outputs):
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"id": list(range(500)), "text": [f"review {i} was fine" for i in range(500)]}), whole)
    data = whole.read_bytes()
    src = tmp_path / "cut.parquet"
    src.write_bytes(data[: len(data) // 2])
    fails_untouched(src, tiny_model, outputs, 3, "cut.parquet", "corrupt or truncated", "export it again")


def test_csv_ragged_row_names_the_row(tmp_path, tiny_model, outputs):
    src = write_csv_bytes(tmp_path / "ragged.csv", b"id,text\n1,good\n2,bad,extra field\n3,fine\n")
    fails_untouched(
        src,
        tiny_model,
        outputs,
        3,
        "ragged.csv",
        "on line 3",
        "Expected 2 columns, got 3",
        "2,bad,extra field",
        "fix that row",
    )


def test_jsonl_line_that_is_not_json(tmp_path, tiny_model, outputs):
    src = tmp_path / "broken.jsonl"
    src.write_text('{"id": 1, "text": "good"}\nthis is not json\n{"id": 3, "text": "fine"}\n')
    fails_untouched(
        src,
        tiny_model,
        outputs,
        3,
        "broken.jsonl",
        "JSON parse error: Invalid value at line 2;",
        "one JSON object",
        "JSON Lines",
    )


# ------------------------------------------------------------------ model errors


def test_unknown_model_path(tmp_path, outputs):
    src = good_csv(tmp_path)
    fails_untouched(src, str(tmp_path / "no-model-here"), outputs, 4, "no-model-here", "not found", "--model")


def test_model_without_a_classification_head(tmp_path, outputs):
    from transformers import AutoTokenizer, BertConfig, BertModel

    model_dir = tmp_path / "encoder-only"
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(model_dir)
    fails_untouched(
        good_csv(tmp_path),
        str(model_dir),
        outputs,
        4,
        "encoder-only",
        "not a sequence classifier",
        "BertModel",
        "fine-tuned for text classification",
    )


def test_classifier_whose_head_weights_are_missing(tmp_path, outputs):
    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "headless"
    build_model(model_dir, "bert")
    weights = model_dir / "model.safetensors"
    state = load_file(str(weights))
    dropped = sorted(k for k in state if k.startswith("classifier."))
    assert dropped == ["classifier.bias", "classifier.weight"]
    save_file({k: v for k, v in state.items() if k not in dropped}, str(weights), metadata={"format": "pt"})
    fails_untouched(
        good_csv(tmp_path),
        str(model_dir),
        outputs,
        4,
        "headless",
        "lacks trained weights",
        "classifier.",
        "fine-tuned classifier",
    )


@pytest.fixture
def pickle_only_model(tmp_path):
    """A classifier whose weights exist only as pytorch_model.bin (a pickle)."""
    import torch
    from safetensors.torch import load_file

    model_dir = tmp_path / "pickled"
    build_model(model_dir, "bert")
    # transformers 5 ignores save_pretrained(..., safe_serialization=False) and still writes
    # model.safetensors, so write the pickle the way transformers 4 did: torch.save of the state dict.
    torch.save(load_file(str(model_dir / "model.safetensors")), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    assert sorted(p.name for p in model_dir.iterdir() if p.suffix in (".bin", ".safetensors")) == ["pytorch_model.bin"]
    return model_dir


def test_pickle_only_weights_need_allow_pickle(tmp_path, outputs, pickle_only_model):
    src = good_csv(tmp_path)
    fails_untouched(src, str(pickle_only_model), outputs, 4, "pickled", "pickle", "--allow-pickle")
    out = outputs / "out"
    assert_ok(run_score(src, str(pickle_only_model), out, "--allow-pickle"))
    table = pq.read_table(str(out))
    assert table.column("label").null_count == 0
    expected = pipeline_oracle(str(pickle_only_model), ["I love it", "I hate it"])
    np.testing.assert_allclose(table.column("score").to_pylist(), [e["score"] for e in expected], atol=1e-5)


def test_model_needing_remote_code_is_refused_without_running_it(tmp_path, outputs):
    marker = tmp_path / "REMOTE_CODE_RAN"
    model_dir = tmp_path / "remote-code-model"
    model_dir.mkdir()
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    (model_dir / "configuration_x.py").write_text(
        payload + "from transformers import PretrainedConfig\n\n\n"
        "class XConfig(PretrainedConfig):\n    model_type = 'x-unknown-to-transformers'\n"
    )
    (model_dir / "modeling_x.py").write_text(
        payload + "from transformers import PreTrainedModel\n\n\nclass XModel(PreTrainedModel):\n    pass\n"
    )
    (model_dir / "config.json").write_text(
        json.dumps(
            {
                "model_type": "x-unknown-to-transformers",
                "architectures": ["XModel"],
                "auto_map": {
                    "AutoConfig": "configuration_x.XConfig",
                    "AutoModelForSequenceClassification": "modeling_x.XModel",
                },
            }
        )
    )
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(model_dir)  # only the code is missing
    fails_untouched(good_csv(tmp_path), str(model_dir), outputs, 4, "remote-code-model", "--trust-remote-code")
    assert not marker.exists(), "the model's Python code was executed"


# ------------------------------------------------------------------ output errors


def test_output_path_is_an_existing_file(tmp_path, tiny_model, outputs):
    out = outputs / "results"  # no .parquet suffix: a folder is expected
    out.write_bytes(b"someone's file")
    line = fails_untouched(good_csv(tmp_path), tiny_model, outputs, 5, "is a file", "folder path", ".parquet", out=out)
    assert str(out) in line
    assert out.read_bytes() == b"someone's file"


def test_output_folder_not_writable(tmp_path, tiny_model, outputs):
    locked = outputs / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a 0o500 folder is still writable")
        fails_untouched(
            good_csv(tmp_path),
            tiny_model,
            outputs,
            5,
            "Cannot write",
            str(locked),
            "writable --output",
            out=locked / "out",
        )
    finally:
        locked.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_foreign_non_empty_output_folder(tmp_path, tiny_model, outputs, overwrite):
    out = outputs / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    (out / "data.csv").write_text("id,text\n1,keep me\n")
    line = fails_untouched(
        good_csv(tmp_path),
        tiny_model,
        outputs,
        5,
        "batchscore did not write",
        "--output",
        out=out,
        extra=("--overwrite",) if overwrite else (),
    )
    assert "data.csv" in line or "thesis.tex" in line


def test_an_error_found_in_a_dataloader_worker_is_one_line(tmp_path, tiny_model):
    """A remote text input is not parsed up front: a ragged row is found by a DataLoader worker process, and
    its error reaches the user whole (not as the traceback text the DataLoader would wrap it in)."""
    import fsspec

    rows = "\n".join(f"{i},text {i}" for i in range(3000))
    with fsspec.open("memory://worker-error/in.csv", "w") as fh:
        fh.write("id,text\n" + rows + "\n1,2,3\n")
    result = invoke(
        [
            "score",
            "memory://worker-error/in.csv",
            "--model",
            tiny_model,
            "-o",
            tmp_path / "out",
            "--num-workers",
            "2",
            "--chunk-rows",
            "500",
            "--no-progress",
        ]
    )
    assert_error(result, 3, "line 3002", "ragged CSV row")

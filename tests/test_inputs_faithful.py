"""Inputs read faithfully: every row and value exactly as written, or one clear error before any output.

CSV/TSV columns as text exactly as written (typed only with --csv-infer-types),
an unterminated CSV quote named by its line, compressed text files streamed,
fields larger than the read block, folders whose files must agree on columns
and types, Hive partition folders as columns, JSON Lines type changes named by
line, and no raw bytes in any message.

Every failing run writes into `-o <outputs>/out` inside an empty folder of its
own, which must still be empty afterwards (no output folder, lock or part).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from helpers import assert_ok, fails_untouched, pipeline_oracle, run_score

LABELS = {"NEGATIVE", "POSITIVE"}
READ_BLOCK = 1 << 22  # pyarrow's (and batchscore's) first read block: 4 MiB

# ------------------------------------------------------------------ helpers


def scored(input_path, model, out, *extra) -> pa.Table:
    """Run a job that must succeed; the output table, read with plain pyarrow."""
    assert_ok(run_score(input_path, model, out, *extra))
    assert os.path.exists(os.path.join(str(out), "_SUCCESS"))
    return pq.read_table(str(out))


def assert_rows(table: pa.Table, expected: dict, text_column: str = "text"):
    """`table` holds exactly `expected`'s columns and values, in order, then a label and score per text."""
    assert table.column_names == [*expected, "label", "score"]
    for name, values in expected.items():
        assert table.column(name).to_pylist() == values, name
    texts = expected[text_column]
    for text, label, value in zip(texts, table.column("label").to_pylist(), table.column("score").to_pylist()):
        if text is not None and str(text).strip():
            assert label in LABELS and 0.0 <= value <= 1.0, (text, label, value)
        else:
            assert label is None and value is None, (text, label, value)


def write_parquet(path, columns: dict, schema=None):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), str(path))
    return path


# ------------------------------------------------------------------ 1. CSV quotes


OPEN_QUOTES = {
    # name: (file body, a known bug or None)
    "quoted-field-after": (b'id,text\n1,fine\n2,"unterminated\n3,normal\n4,"quoted, field"\n5,last\n', None),
    "plain-quoted-after": (b'id,text\n1,fine\n2,"unterminated\n3,normal\n4,"fine"\n5,last\n', None),
    "nothing-after": (b'id,text\n1,fine\n2,"unterminated\n3,normal\n5,last\n', None),
    "last-line": (b'id,text\n1,fine\n2,"never closed, at the end\n', None),
    # Two fields whose quotes never close: rows 3 and 4 would vanish into row 2's text.
    "two-open": (b'id,text\n1,fine\n2,"unterminated\n3,normal\n4,"also open\n5,last\n', None),
    # 5" screen is legal (a quote inside an unquoted field) and makes the count even again.
    "literal-quote-before": (b'id,text\n1,5" screen\n2,"unterminated\n3,normal\n4,last\n', None),
}


@pytest.mark.parametrize("compressed", [False, True], ids=["csv", "csv.gz"])
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=bug)] if bug else [], id=name)
        for name, (_, bug) in OPEN_QUOTES.items()
    ],
)
def test_unterminated_quote_names_the_line_where_it_starts(case, compressed, tmp_path, tiny_model, outputs):
    body = OPEN_QUOTES[case][0]
    src = tmp_path / ("open.csv.gz" if compressed else "open.csv")
    src.write_bytes(gzip.compress(body) if compressed else body)
    line = fails_untouched(src, tiny_model, outputs, 3, str(src), "starts on line 3", "never closed")
    assert "ragged" not in line


def test_literal_quote_inside_an_unquoted_field_is_kept_as_written(tmp_path, tiny_model):
    src = tmp_path / "screen.csv"
    src.write_bytes(b'id,text\n1,fine\n2,5" screen is great\n3,"quoted, with comma"\n4,last\n')
    table = scored(src, tiny_model, tmp_path / "out")
    assert_rows(
        table, {"id": ["1", "2", "3", "4"], "text": ["fine", '5" screen is great', "quoted, with comma", "last"]}
    )


# ------------------------------------------------------------------ 2. values as written


IDS_CSV = b"id,text,n\n007,a,1\n0012,b,2\n1e5,c,3\n 3,d,4\n,e,5\n"


def test_csv_values_are_text_exactly_as_written(tmp_path, tiny_model):
    src = tmp_path / "ids.csv"
    src.write_bytes(IDS_CSV)
    table = scored(src, tiny_model, tmp_path / "out")
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("n").type == pa.string()
    assert_rows(
        table,
        {"id": ["007", "0012", "1e5", " 3", ""], "text": ["a", "b", "c", "d", "e"], "n": ["1", "2", "3", "4", "5"]},
    )


def test_csv_infer_types_types_columns_like_pyarrow(tmp_path, tiny_model):
    src = tmp_path / "ids.csv"
    src.write_bytes(IDS_CSV)
    table = scored(src, tiny_model, tmp_path / "out", "--csv-infer-types")
    oracle = pacsv.read_csv(str(src), convert_options=pacsv.ConvertOptions(column_types={"text": pa.string()}))
    assert table.schema.field("id").type == oracle.schema.field("id").type == pa.float64()
    assert table.schema.field("n").type == oracle.schema.field("n").type == pa.int64()
    assert table.column("id").to_pylist() == oracle.column("id").to_pylist() == [7.0, 12.0, 1e5, 3.0, None]
    assert_rows(table, {"id": [7.0, 12.0, 1e5, 3.0, None], "text": ["a", "b", "c", "d", "e"], "n": [1, 2, 3, 4, 5]})


def test_csv_infer_types_integer_ids(tmp_path, tiny_model):
    src = tmp_path / "ints.csv"
    src.write_bytes(b"id,text\n007,a\n0012,b\n3,c\n")
    table = scored(src, tiny_model, tmp_path / "out", "--csv-infer-types")
    assert table.schema.field("id").type == pa.int64()
    assert_rows(table, {"id": [7, 12, 3], "text": ["a", "b", "c"]})


def test_tsv_has_no_quoting(tmp_path, tiny_model):
    src = tmp_path / "quotes.tsv"
    src.write_bytes(b'id\ttext\n1\tshe said "hi"\n2\t"quoted whole"\n3\t"open only\n4\t007\n')
    table = scored(src, tiny_model, tmp_path / "out")
    assert_rows(table, {"id": ["1", "2", "3", "4"], "text": ['she said "hi"', '"quoted whole"', '"open only', "007"]})


# ------------------------------------------------------------------ 3. a bad typed value far into a big file

BIG_ROWS, BAD_ROW = 25_000, 19_500
PAD = "p" * 200


@pytest.fixture(scope="module")
def big_typed_csv(tmp_path_factory):
    """25,000 rows `id,text,stars,pad` (~6 MB); data row 19,500 has stars `four`, past the first read block."""
    lines = ["id,text,stars,pad"]
    for i in range(1, BIG_ROWS + 1):
        stars = "four" if i == BAD_ROW else str(i % 5 + 1)
        lines.append(f"{i},review {i},{stars},{PAD}")
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) > READ_BLOCK and data.index(b",four,") > READ_BLOCK
    path = tmp_path_factory.mktemp("big-typed") / "reviews.csv"
    path.write_bytes(data)
    return path


def test_bad_typed_value_far_into_the_file_fails_before_any_output(big_typed_csv, tiny_model, outputs):
    # The first block types `stars` as int64; the header is line 1, so data row 19,500 is line 19501.
    fails_untouched(
        big_typed_csv,
        tiny_model,
        outputs,
        3,
        str(big_typed_csv),
        f"on line {BAD_ROW + 1}",
        "four",
        extra=("--csv-infer-types", "--chunk-rows", "1000"),
    )


def test_bad_typed_value_in_a_column_not_kept_is_never_converted(big_typed_csv, tiny_model, tmp_path):
    table = scored(big_typed_csv, tiny_model, tmp_path / "out", "--csv-infer-types", "--keep-columns", "text")
    assert table.column_names == ["text", "label", "score"]
    assert table.column("text").to_pylist() == [f"review {i}" for i in range(1, BIG_ROWS + 1)]
    assert set(table.column("label").to_pylist()) <= LABELS
    assert table.column("score").null_count == 0


# ------------------------------------------------------------------ 4. compressed inputs

CSV_ROWS = [
    {"id": "1", "text": "I've been waiting for a HuggingFace course my whole life."},
    {"id": "007", "text": "first line\nsecond line, with a comma"},
    {"id": "3", "text": 'She said "fine", then left.'},
    {"id": "4", "text": "Très bien, merci ☕"},
    {"id": "5", "text": ""},
    {"id": "6", "text": "10"},
]
TSV_ROWS = [{"id": r["id"], "text": r["text"].replace("\n", " ")} for r in CSV_ROWS]
JSON_ROWS = [{"id": i, "text": r["text"], "stars": i % 5 + 0.5} for i, r in enumerate(CSV_ROWS)]


def csv_bytes(rows, delimiter=",") -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    if delimiter == "\t":
        buffer.write("id\ttext\n" + "".join(f"{r['id']}\t{r['text']}\n" for r in rows))
    else:
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["id", "text"])
        writer.writerows([r["id"], r["text"]] for r in rows)
    return buffer.getvalue().encode()


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def compress(data: bytes, codec: str) -> bytes:
    if codec == "gz":
        return gzip.compress(data)
    if codec == "bz2":
        return bz2.compress(data)
    if codec == "xz":
        return lzma.compress(data)
    assert codec == "zst"
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


PLAIN = {
    "csv": (csv_bytes(CSV_ROWS), CSV_ROWS),
    "tsv": (csv_bytes(TSV_ROWS, "\t"), TSV_ROWS),
    "jsonl": (jsonl_bytes(JSON_ROWS), JSON_ROWS),
}


@pytest.fixture(scope="module")
def plain_outputs(tmp_path_factory, tiny_model):
    """Each format's uncompressed file scored once: the table every compressed twin must equal."""
    folder = tmp_path_factory.mktemp("plain")
    found = {}
    for fmt, (data, rows) in PLAIN.items():
        src = folder / f"rows.{fmt}"
        src.write_bytes(data)
        table = scored(src, tiny_model, folder / f"out-{fmt}")
        assert_rows(table, {name: [r[name] for r in rows] for name in rows[0]})
        found[fmt] = table
    return found


@pytest.mark.parametrize(
    "name",
    [
        "rows.csv.gz",
        "rows.csv.bz2",
        "rows.csv.zst",
        "rows.csv.xz",
        "rows.tsv.gz",
        "rows.jsonl.gz",
        "rows.jsonl.zst",
        "rows.jsonl.xz",
    ],
)
def test_compressed_input_gives_the_same_table(name, tmp_path, tiny_model, plain_outputs):
    fmt, codec = name.split(".")[1:]
    src = tmp_path / name
    src.write_bytes(compress(PLAIN[fmt][0], codec))
    table = scored(src, tiny_model, tmp_path / "out")
    expected = plain_outputs[fmt]
    assert table.schema.remove_metadata() == expected.schema.remove_metadata()
    assert table.to_pydict() == expected.to_pydict()


def test_compressed_jsonl_matches_the_pipeline(tmp_path, tiny_model):
    texts = [r["text"] for r in CSV_ROWS if r["text"]] + ["the movie was great", "awful service, never again"]
    src = tmp_path / "reviews.jsonl.gz"
    src.write_bytes(gzip.compress(jsonl_bytes([{"row": i, "text": t} for i, t in enumerate(texts)])))
    table = scored(src, tiny_model, tmp_path / "out")
    assert table.column("row").to_pylist() == list(range(len(texts)))
    assert table.column("text").to_pylist() == texts
    expected = pipeline_oracle(tiny_model, texts)
    assert table.column("label").to_pylist() == [e["label"] for e in expected]
    np.testing.assert_allclose(table.column("score").to_pylist(), [e["score"] for e in expected], atol=1e-5)


def test_folder_of_gzipped_csv_in_name_order(tmp_path, tiny_model):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "b.csv.gz").write_bytes(gzip.compress(csv_bytes(CSV_ROWS[3:])))
    (folder / "a.csv.gz").write_bytes(gzip.compress(csv_bytes(CSV_ROWS[:3])))
    table = scored(folder, tiny_model, tmp_path / "out")
    assert_rows(table, {"id": [r["id"] for r in CSV_ROWS], "text": [r["text"] for r in CSV_ROWS]})


def test_gz_name_on_a_file_that_is_not_gzip(tmp_path, tiny_model, outputs):
    src = tmp_path / "plain.csv.gz"
    src.write_bytes(csv_bytes(CSV_ROWS))
    line = fails_untouched(src, tiny_model, outputs, 3, str(src))
    assert line.isprintable()


@pytest.mark.parametrize(
    "name", ["cut.csv.gz", "cut.csv.bz2", "cut.csv.zst", "cut.csv.xz", "cut.jsonl.gz", "cut.jsonl.xz"]
)
def test_truncated_compressed_file_is_an_error_not_fewer_rows(name, tmp_path, tiny_model, outputs):
    fmt, codec = name.split(".")[1:]
    rows = [{"id": str(i), "text": f"review number {i} was fine"} for i in range(20_000)]
    whole = compress(csv_bytes(rows) if fmt == "csv" else jsonl_bytes(rows), codec)
    src = tmp_path / name
    src.write_bytes(whole[: len(whole) // 2])
    line = fails_untouched(src, tiny_model, outputs, 3, str(src))
    assert line.isprintable()


# ------------------------------------------------------------------ 5. a field larger than the read block

FILLER_ROWS = 40_000


@pytest.fixture(scope="module")
def huge_text():
    """~9 MB of text with commas and newlines: one field more than twice the 4 MiB read block."""
    huge = ("word, and\nmore " * 600_000)[:9_000_000]
    assert len(huge) > 2 * READ_BLOCK
    return huge


def huge_field_file(folder, name: str, huge: str, filler: int) -> tuple:
    """`filler` rows with no text, then one row holding `huge`, then 3 small rows; (path, ids, the big text).

    TSV has no quoting, so there the big text holds no newline."""
    fmt = name.split(".")[1]
    huge = huge.replace("\n", " ") if fmt == "tsv" else huge
    if fmt == "jsonl":
        rows = [{"id": str(i), "text": "", "pad": "f" * 100} for i in range(filler)]
        rows += [{"id": str(filler), "text": huge, "pad": "x"}]
        rows += [{"id": str(filler + k), "text": f"after {k}", "pad": "y"} for k in range(1, 4)]
        data = jsonl_bytes(rows)
    else:
        sep, field = ("\t", huge) if fmt == "tsv" else (",", '"' + huge + '"')
        lines = [
            sep.join(["id", "text", "pad"]),
            *(sep.join([str(i), "", "f" * 100]) for i in range(filler)),
            sep.join([str(filler), field, "x"]),
            *(sep.join([str(filler + k), f"after {k}", "y"]) for k in range(1, 4)),
        ]
        data = ("\n".join(lines) + "\n").encode()
    assert (data.index(b"word, and") > READ_BLOCK) == (filler > 0)
    path = folder / name
    path.write_bytes(gzip.compress(data, compresslevel=1) if name.endswith(".gz") else data)
    return path, [str(i) for i in range(filler + 4)], huge


def assert_huge_row_whole(table: pa.Table, ids: list[str], huge: str):
    assert table.column("id").to_pylist() == ids  # no row lost, or given twice when the block grew
    texts = table.column("text").to_pylist()
    at = len(ids) - 4
    assert len(texts[at]) == len(huge)
    assert texts[at] == huge
    assert texts[at + 1 :] == ["after 1", "after 2", "after 3"]
    assert table.column("label")[at].as_py() in LABELS


@pytest.mark.parametrize("name", ["huge.csv", "huge.csv.gz", "huge.tsv", "huge.jsonl"])
def test_field_larger_than_the_read_block_is_read_whole(name, huge_text, tiny_model, tmp_path):
    # 40,000 rows first: the block that holds the field's start is not the first one.
    src, ids, huge = huge_field_file(tmp_path, name, huge_text, FILLER_ROWS)
    table = scored(src, tiny_model, tmp_path / "out", "--keep-columns", "id,text")
    assert_huge_row_whole(table, ids, huge)


@pytest.mark.parametrize("name", ["first.csv", "first.tsv", "first.jsonl"])
def test_field_larger_than_the_read_block_in_the_first_row(name, huge_text, tiny_model, tmp_path):
    src, ids, huge = huge_field_file(tmp_path, name, huge_text, 0)
    table = scored(src, tiny_model, tmp_path / "out", "--keep-columns", "id,text")
    assert_huge_row_whole(table, ids, huge)


# ------------------------------------------------------------------ 6. folders of Parquet files


def three_parquet(folder, second: dict):
    write_parquet(folder / "part-0.parquet", {"id": [1, 2], "text": ["good", "bad"], "stars": [5, 1]})
    write_parquet(folder / "part-1.parquet", second)
    write_parquet(folder / "part-2.parquet", {"id": [5], "text": ["fine"], "stars": [3]})
    return folder


def test_folder_file_without_the_text_column(tmp_path, tiny_model, outputs):
    folder = three_parquet(tmp_path / "data", {"id": [3, 4], "stars": [2, 2]})
    fails_untouched(folder, tiny_model, outputs, 3, str(folder / "part-1.parquet"), "'text'")


def test_folder_file_without_a_kept_column(tmp_path, tiny_model, outputs):
    folder = three_parquet(tmp_path / "data", {"id": [3, 4], "text": ["meh", "ok"]})
    fails_untouched(folder, tiny_model, outputs, 3, str(folder / "part-1.parquet"), "'stars'", "--keep-columns")


def test_folder_file_without_a_column_left_out(tmp_path, tiny_model):
    folder = three_parquet(tmp_path / "data", {"id": [3, 4], "text": ["meh", "ok"]})
    table = scored(folder, tiny_model, tmp_path / "out", "--keep-columns", "id,text")
    assert_rows(table, {"id": [1, 2, 3, 4, 5], "text": ["good", "bad", "meh", "ok", "fine"]})


def test_folder_int32_and_int64_widen_exactly(tmp_path, tiny_model):
    folder = tmp_path / "data"
    write_parquet(folder / "a.parquet", {"text": ["x", "y"], "n": pa.array([2**31 - 1, -(2**31)], pa.int32())})
    write_parquet(folder / "b.parquet", {"text": ["z"], "n": pa.array([2**53 + 1], pa.int64())})
    table = scored(folder, tiny_model, tmp_path / "out")
    assert table.schema.field("n").type == pa.int64()
    assert_rows(table, {"text": ["x", "y", "z"], "n": [2**31 - 1, -(2**31), 2**53 + 1]})


def test_folder_int64_and_float64_is_refused(tmp_path, tiny_model, outputs):
    folder = tmp_path / "data"
    write_parquet(folder / "a.parquet", {"text": ["x"], "n": pa.array([2**53 + 1], pa.int64())})
    write_parquet(folder / "b.parquet", {"text": ["z"], "n": pa.array([0.5], pa.float64())})
    fails_untouched(
        folder, tiny_model, outputs, 3, "'n'", str(folder / "a.parquet"), str(folder / "b.parquet"), "int64", "double"
    )


# ------------------------------------------------------------------ 7. Hive partition folders


def test_hive_partitions_of_parquet(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_parquet(data / "lang=fr" / "year=2023" / "part-0.parquet", {"id": [4], "text": ["très bien"]})
    write_parquet(data / "lang=en" / "year=2024" / "part-0.parquet", {"id": [2, 3], "text": ["good", "bad"]})
    write_parquet(data / "lang=en" / "year=2023" / "part-0.parquet", {"id": [1], "text": ["older"]})
    table = scored(data, tiny_model, tmp_path / "out")
    assert table.schema.field("lang").type == pa.string()
    assert table.schema.field("year").type == pa.int32()
    assert_rows(
        table,
        {
            "id": [1, 2, 3, 4],
            "text": ["older", "good", "bad", "très bien"],
            "lang": ["en", "en", "en", "fr"],
            "year": [2023, 2024, 2024, 2023],
        },
    )


def test_hive_partitions_of_csv(tmp_path, tiny_model):
    data = tmp_path / "data"
    for folder, body in [
        ("lang=fr/year=2023", "id,text\n4,très bien\n"),
        ("lang=en/year=2024", "id,text\n2,good\n3,bad\n"),
        ("lang=en/year=2023", "id,text\n1,older\n"),
    ]:
        (data / folder).mkdir(parents=True)
        (data / folder / "part-0.csv").write_text(body, encoding="utf-8")
    table = scored(data, tiny_model, tmp_path / "out")
    assert table.schema.field("lang").type == pa.string()
    assert table.schema.field("year").type == pa.int32()
    assert_rows(
        table,
        {
            "id": ["1", "2", "3", "4"],
            "text": ["older", "good", "bad", "très bien"],
            "lang": ["en", "en", "en", "fr"],
            "year": [2023, 2024, 2024, 2023],
        },
    )


def test_hive_partition_values_decoded_and_kept_columns_in_order(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_parquet(data / "region=en%20US" / "year=2024" / "part-0.parquet", {"id": [1], "text": ["good"]})
    write_parquet(
        data / "region=__HIVE_DEFAULT_PARTITION__" / "year=-7" / "part-0.parquet", {"id": [2], "text": ["bad"]}
    )
    table = scored(data, tiny_model, tmp_path / "out", "--keep-columns", "year,text,region")
    assert table.schema.field("region").type == pa.string()
    assert table.schema.field("year").type == pa.int32()
    # Sorted paths: "region=_..." before "region=e..."
    assert_rows(table, {"year": [-7, 2024], "text": ["bad", "good"], "region": [None, "en US"]})


# ------------------------------------------------------------------ 8. JSON Lines


def test_jsonl_column_type_change_names_both_lines(tmp_path, tiny_model, outputs):
    src = tmp_path / "mixed.jsonl"
    src.write_text('{"id": 1, "text": "good"}\n{"id": 2, "text": "bad"}\n{"id": 3, "text": 5}\n')
    fails_untouched(src, tiny_model, outputs, 3, str(src), "'text'", "line 1", "line 3")


def test_jsonl_column_type_change_far_into_the_file(tmp_path, tiny_model, outputs):
    # Past the first read block, where the column's type is already fixed.
    src = tmp_path / "mixed-late.jsonl"
    rows = [json.dumps({"id": i, "text": f"review {i} {PAD}"}) for i in range(1, 30_001)]
    rows[25_000 - 1] = json.dumps({"id": 25_000, "text": 5})
    data = ("\n".join(rows) + "\n").encode()
    assert data.index(b'"text": 5}') > READ_BLOCK
    src.write_bytes(data)
    fails_untouched(src, tiny_model, outputs, 3, str(src), "'text'", "line 1", "line 25000")


def test_jsonl_integer_column_with_a_fraction_far_into_the_file(tmp_path, tiny_model, outputs):
    src = tmp_path / "stars-late.jsonl"
    rows = [json.dumps({"id": i, "text": f"review {i} {PAD}", "stars": i % 5}) for i in range(1, 30_001)]
    rows[25_000 - 1] = json.dumps({"id": 25_000, "text": "late", "stars": 2.5})
    data = ("\n".join(rows) + "\n").encode()
    assert data.index(b'"stars": 2.5') > READ_BLOCK
    src.write_bytes(data)
    fails_untouched(src, tiny_model, outputs, 3, str(src), "'stars'", "line 25000")


def test_jsonl_line_that_is_not_json_names_its_line(tmp_path, tiny_model, outputs):
    src = tmp_path / "broken.jsonl"
    src.write_text('{"id": 1, "text": "good"}\n{"id": 2, "text": "bad"}\n{"id": 3, text: oops}\n')
    fails_untouched(src, tiny_model, outputs, 3, str(src), "line 3", "JSON Lines")


def test_jsonl_line_that_is_not_json_far_into_the_file(tmp_path, tiny_model, outputs):
    # pyarrow numbers rows from the start of each read block: the line must be counted from the file's start.
    src = tmp_path / "broken-late.jsonl"
    rows = [json.dumps({"id": i, "text": f"review {i} {PAD}"}) for i in range(1, 30_001)]
    rows[25_000 - 1] = "{not json"
    data = ("\n".join(rows) + "\n").encode()
    assert data.index(b"{not json") > READ_BLOCK
    src.write_bytes(data)
    fails_untouched(src, tiny_model, outputs, 3, str(src), "line 25000", "JSON Lines")


# ------------------------------------------------------------------ 9. binary read as text


PARQUET_TABLES = {
    "ints-and-short-texts": (lambda: pa.table({"id": list(range(50)), "text": [f"t{i}" for i in range(50)]}), "snappy"),
    "random-floats": (
        lambda: pa.table({"x": np.random.default_rng(0).random(1000), "text": [f"review {i}" for i in range(1000)]}),
        "snappy",
    ),
    "uncompressed-newlines": (lambda: pa.table({"text": ["a,b\nc"] * 10, "n": list(range(10))}), "none"),
}


@pytest.mark.parametrize("encoding", [None, "latin-1"])
@pytest.mark.parametrize("kind", list(PARQUET_TABLES))
def test_parquet_file_named_csv_gives_one_printable_line(kind, encoding, tmp_path, tiny_model, outputs):
    make, compression = PARQUET_TABLES[kind]
    real = tmp_path / "real.parquet"
    pq.write_table(make(), str(real), compression=compression)
    src = tmp_path / "x.csv"
    shutil.copyfile(real, src)
    line = fails_untouched(src, tiny_model, outputs, 3, str(src), extra=("--encoding", encoding) if encoding else ())
    assert line.isprintable(), repr(line)


# ------------------------------------------------------------------ 10. invalid UTF-8 inside Parquet


def write_invalid_utf8_parquet(path, column: str):
    """4 rows `id, title, text` in row groups of 2; row 3 (row group 1) of `column` holds the bytes caf\\xff\\xfe.

    Built from raw buffers: pyarrow validates neither such an array nor what its Parquet writer is given.
    """
    values = [b"fine", b"ok", b"caf\xff\xfe", b"last"]
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    bad = pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    )
    columns = {"id": [1, 2, 3, 4], "title": ["t1", "t2", "t3", "t4"], "text": ["good", "bad", "meh", "ok"]}
    columns[column] = bad
    pq.write_table(pa.table(columns), str(path), row_group_size=2)
    return path


@pytest.mark.parametrize("column", ["text", "title"])
def test_invalid_utf8_parquet_is_written_as_intended(column, tmp_path):
    # The test below relies on this file: check it holds what it should, so a broken setup cannot pass.
    src = write_invalid_utf8_parquet(tmp_path / "bad.parquet", column)
    written = pq.ParquetFile(str(src))
    assert written.num_row_groups == 2
    written.read_row_group(0).validate(full=True)
    group = written.read_row_group(1)
    assert group.column(column).chunk(0).buffers()[2].to_pybytes() == b"caf\xff\xfelast"
    with pytest.raises(pa.ArrowInvalid, match="UTF8"):
        group.validate(full=True)


@pytest.mark.parametrize(
    "column",
    [
        "text",
        "title",
    ],
)
def test_parquet_with_invalid_utf8_names_the_file_and_row_group(column, tmp_path, tiny_model, outputs):
    src = write_invalid_utf8_parquet(tmp_path / "bad-utf8.parquet", column)
    fails_untouched(src, tiny_model, outputs, 3, str(src), "row group 1")


# ------------------------------------------------------------------ 11. hidden and underscore paths


def test_hidden_and_underscore_files_and_folders_are_skipped(tmp_path, tiny_model):
    data = tmp_path / "data"
    for name, body in [
        ("a.csv", "id,text\n1,kept\n"),
        ("sub/b.csv", "id,text\n2,also kept\n"),
        ("_tmp/x.csv", "id,text\n9,temp\n"),
        (".cache/y.csv", "id,text\n9,cached\n"),
        ("sub/_part.csv", "id,text\n9,underscore\n"),
        ("sub/.hidden.csv", "id,text\n9,hidden\n"),
        ("sub/.staging/z.csv", "id,text\n9,deep hidden\n"),
        ("_SUCCESS", ""),
        ("sub/_x/deeper/w.csv", "wrong,header\n9,x\n"),
    ]:
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    table = scored(data, tiny_model, tmp_path / "out")
    assert_rows(table, {"id": ["1", "2"], "text": ["kept", "also kept"]})

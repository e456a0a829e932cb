"""--on-bad-row quarantine: bad records set aside beside the output, every record accounted for exactly once.

Oracles are written out here, never taken from batchscore: each input is built line by line with what every
line is (good, or which kind of bad record, and whether it keeps an output row), so the expected quarantine
entries (line, row, byte offset, raw bytes, kind), output rows and counts follow from the input itself; the
scores of good rows are transformers.pipeline's (helpers.pipeline_oracle); the large case is compared with a
run on a copy of the file without its bad lines.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers import (
    assert_error,
    assert_ok,
    assert_same_table,
    manifest_of,
    pipeline_oracle,
    run_score,
    tokenizer_dir,
)

Q = ("--on-bad-row", "quarantine")
QUARANTINE_COLUMNS = [
    ("input_row", pa.int64()),
    ("source_file", pa.string()),
    ("line", pa.int64()),
    ("row", pa.int64()),
    ("byte_offset", pa.int64()),
    ("raw", pa.binary()),
    ("error_kind", pa.string()),
    ("error_message", pa.string()),
    ("has_output_row", pa.bool_()),
]
KINDS = {
    "unparseable_record",
    "not_json_object",
    "wrong_type",
    "invalid_encoding",
    "undecodable_parquet",
    "tokenizer_rejected",
}


# ------------------------------------------------------------------ helpers


def quarantine_dir(out) -> Path:
    """Where the docs put the quarantine: OUT.quarantine beside a folder, x.quarantine beside x.parquet."""
    return Path(str(out).rstrip("/").removesuffix(".parquet") + ".quarantine")


def quarantine_files(out) -> list[str]:
    folder = quarantine_dir(out)
    return sorted(os.listdir(folder)) if folder.exists() else []


def read_quarantine(out) -> list[dict]:
    """Every quarantine entry, file by file (each file read alone with plain pyarrow), by input_row."""
    entries = []
    for name in quarantine_files(out):
        table = pq.read_table(quarantine_dir(out) / name)
        assert [(f.name, f.type) for f in table.schema] == QUARANTINE_COLUMNS, name
        entries += table.to_pylist()
    return sorted(entries, key=lambda e: e["input_row"])


def part_files(out) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.startswith("part-")) if Path(out).is_dir() else []


def oracle_check(model, table) -> None:
    """Rows without an error: label and score are transformers.pipeline's for their text; rows with one: none."""
    rows = table.to_pylist()
    good = [r for r in rows if r["error"] is None and r["text"] is not None and r["text"].strip()]
    expected = pipeline_oracle(model, [r["text"] for r in good], batch_size=64) if good else []
    for row, want in zip(good, expected):
        assert row["label"] == want["label"], row
        assert abs(row["score"] - want["score"]) <= 1e-5, (row, want)
    for row in rows:
        if row["error"] is not None:
            assert row["label"] is None and row["score"] is None, row


def check_accounting(out, records: int, entries: list[dict], table: pa.Table) -> dict:
    """Every record read is an output row or a quarantine entry without one; the manifest agrees with both."""
    m = manifest_of(out)
    without = [e for e in entries if not e["has_output_row"]]
    kept = [e for e in entries if e["has_output_row"]]
    errors = [e for e in table.column("error").to_pylist() if e is not None]
    assert m["records"] == records
    assert m["rows_read"] == records
    assert table.num_rows == records - len(without)
    assert m["rows"] == table.num_rows
    assert m["rows"] + m["quarantined_rows"] == m["records"]
    assert m["bad_rows"] == len(entries)
    assert m["quarantined_rows"] == len(without)
    assert m["error_rows"] == len(kept) == len(errors)
    assert m["bad_row_kinds"] == dict(Counter(e["error_kind"] for e in entries))
    assert set(m["bad_row_kinds"]) <= KINDS
    assert len({e["input_row"] for e in entries}) == len(entries), "an entry is in the quarantine twice"
    assert Path(m["quarantine"]) == quarantine_dir(out)
    return m


def no_unraisable(monkeypatch) -> list:
    """Record what Python would print as 'Exception ignored in ...' with a traceback (pytest hides those)."""
    seen: list = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(f"{info.exc_type.__name__}: {info.exc_value}"))
    return seen


# ------------------------------------------------------------------ 1. each kind, each text format


@dataclass
class Rec:
    raw: bytes  # the line as written
    bad: str | None = None  # its kind of bad record, None for a good one
    out: tuple | None = None  # (id, text) of its output row; None: no output row


@dataclass
class Case:
    fmt: str  # csv, tsv, jsonl
    header: bytes | None
    records: list[Rec]
    extra: tuple = ()
    newline: bytes = b"\n"
    data: bytes = field(init=False)

    def __post_init__(self):
        lines = ([self.header] if self.header is not None else []) + [r.raw for r in self.records]
        self.data = b"".join(line + self.newline for line in lines)

    def expected_entries(self, source: str) -> list[dict]:
        """Line, row and byte offset counted here from the lines themselves (one record per line)."""
        first_line = 2 if self.header is not None else 1
        offset = len(self.header) + len(self.newline) if self.header is not None else 0
        found = []
        for i, rec in enumerate(self.records):
            if rec.bad is not None:
                found.append(
                    {
                        "input_row": i,
                        "source_file": source,
                        "line": first_line + i,
                        "row": i,
                        "byte_offset": offset,
                        "raw": rec.raw,
                        "error_kind": rec.bad,
                        "has_output_row": rec.out is not None,
                    }
                )
            offset += len(rec.raw) + len(self.newline)
        return found


def csv_case(*records, **kw):
    return Case("csv", b"id,text", list(records), **kw)


def tsv_case(*records, **kw):
    return Case("tsv", b"id\ttext", list(records), **kw)


def jsonl_case(*records, **kw):
    return Case("jsonl", None, list(records), **kw)


def good(i, text, sep=b","):
    return Rec(str(i).encode() + sep + text.encode(), out=(str(i), text))


def jgood(i, text):
    return Rec(json.dumps({"id": i, "text": text}).encode(), out=(i, text))


CASES = {
    "csv-too-many-fields": csv_case(
        good(1, "good film"), Rec(b"2,too,many", "unparseable_record"), good(3, "awful acting")
    ),
    "csv-too-few-fields": csv_case(good(1, "good film"), Rec(b"2", "unparseable_record"), good(3, "awful acting")),
    "csv-quote-never-closes": csv_case(
        good(1, "good film"), Rec(b'2,"never closes', "unparseable_record"), good(3, "awful acting")
    ),
    "csv-stray-quote": csv_case(
        good(1, "good film"), Rec(b'2,"quoted" then more', "unparseable_record"), good(3, "awful acting")
    ),
    "csv-invalid-utf8-in-text": csv_case(
        good(1, "good film"), Rec(b"2,bad \xff byte", "invalid_encoding", out=("2", None)), good(3, "awful acting")
    ),
    "csv-invalid-utf8-in-id": csv_case(
        good(1, "good film"), Rec(b"\xfe2,fine text", "invalid_encoding"), good(3, "awful acting")
    ),
    "csv-crlf-mixed": csv_case(
        good(1, "good film"),
        Rec(b"2,too,many", "unparseable_record"),
        Rec(b"3,bad \xff", "invalid_encoding", out=("3", None)),
        good(4, "awful acting"),
        newline=b"\r\n",
    ),
    "tsv-too-many-fields": tsv_case(
        good(1, "good film", b"\t"), Rec(b"2\ttoo\tmany", "unparseable_record"), good(3, "awful acting", b"\t")
    ),
    "tsv-too-few-fields": tsv_case(
        good(1, "good film", b"\t"), Rec(b"2", "unparseable_record"), good(3, "awful acting", b"\t")
    ),
    "tsv-invalid-utf8-in-text": tsv_case(
        good(1, "good film", b"\t"),
        Rec(b"2\tbad \xff byte", "invalid_encoding", out=("2", None)),
        good(3, '"quotes" are text in TSV', b"\t"),
    ),
    "tsv-invalid-utf8-in-id": tsv_case(
        good(1, "good film", b"\t"), Rec(b"\xfe2\tfine text", "invalid_encoding"), good(3, "awful acting", b"\t")
    ),
    "jsonl-not-json": jsonl_case(jgood(1, "good film"), Rec(b"not json at all", "not_json_object"), jgood(3, "bad")),
    "jsonl-not-an-object": jsonl_case(
        jgood(1, "good film"),
        Rec(b"[1, 2]", "not_json_object"),
        Rec(b"5", "not_json_object"),
        Rec(b'"a string"', "not_json_object"),
        jgood(5, "awful acting"),
    ),
    "jsonl-unterminated-string": jsonl_case(
        jgood(1, "good film"), Rec(b'{"id": 2, "text": "never ends}', "not_json_object"), jgood(3, "awful acting")
    ),
    "jsonl-text-of-wrong-type": jsonl_case(
        jgood(1, "good film"),
        Rec(b'{"id": 2, "text": 5}', "wrong_type", out=(2, None)),
        Rec(b'{"id": 3, "text": ["a", "b"]}', "wrong_type", out=(3, None)),
        Rec(b'{"id": 4, "text": {"a": "b"}}', "wrong_type", out=(4, None)),
        Rec(b'{"id": 5, "text": true}', "wrong_type", out=(5, None)),
        jgood(6, "awful acting"),
    ),
    "jsonl-other-column-of-wrong-type": jsonl_case(
        jgood(1, "good film"), Rec(b'{"id": "two", "text": "fine"}', "wrong_type"), jgood(3, "awful acting")
    ),
    "jsonl-invalid-utf8-in-text": jsonl_case(
        jgood(1, "good film"),
        Rec(b'{"id": 2, "text": "bad \xff byte"}', "invalid_encoding", out=(2, None)),
        jgood(3, "awful acting"),
    ),
    "jsonl-lone-surrogate-escape-in-text": jsonl_case(
        jgood(1, "good film"),
        Rec(b'{"id": 2, "text": "a \\ud800 b"}', "invalid_encoding", out=(2, None)),
        jgood(3, "awful acting"),
    ),
    "jsonl-invalid-utf8-in-other-field": jsonl_case(
        Rec(b'{"id": 1, "text": "good film", "note": "a"}', out=(1, "good film")),
        Rec(b'{"id": 2, "text": "fine", "note": "\xfe"}', "invalid_encoding"),
        Rec(b'{"id": 3, "text": "awful acting", "note": "c"}', out=(3, "awful acting")),
    ),
}


def write_case(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / f"in.{case.fmt}"
    path.write_bytes(case.data)
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_each_kind_is_set_aside_and_every_record_accounted_for(name, tmp_path, tiny_model):
    case = CASES[name]
    src = write_case(case, tmp_path)
    out = tmp_path / "out"
    result = assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "100", *case.extra))

    entries = read_quarantine(out)
    expected = case.expected_entries(str(src))
    # raw: the record as read; of a CRLF file, with or without the \r of its line break
    got = [{k: e[k] for k in expected[0]} | {"raw": e["raw"].removesuffix(b"\r")} for e in entries]
    assert got == expected
    for e in entries:
        assert e["error_message"] and "\n" not in e["error_message"]

    table = pq.read_table(out)
    columns = [c for c in table.column_names if c != "note"]
    assert columns == ["id", "text", "label", "score", "error"]
    want = [r for r in case.records if r.out is not None]
    assert [(row["id"], row["text"]) for row in table.to_pylist()] == [r.out for r in want]
    errors = table.column("error").to_pylist()
    for rec, error in zip(want, errors):
        if rec.bad is None:
            assert error is None
        else:  # "kind: message", the message the quarantine entry holds
            message = next(e["error_message"] for e in entries if e["raw"].rstrip(b"\r") == rec.raw)
            assert error == f"{rec.bad}: {message}"
    oracle_check(tiny_model, table)

    records = len(case.records)
    check_accounting(out, records, entries, table)
    without = sum(1 for r in case.records if r.bad and r.out is None)
    summary = result.stderr.strip().splitlines()[-1]
    assert f"{len(expected)} bad records of {records} read" in summary
    assert f"({without} without a row" in summary
    assert f"set aside in {quarantine_dir(out)}" in summary
    assert "Traceback" not in result.output
    assert quarantine_files(out) == ["part-000000.parquet"]


@pytest.mark.parametrize(
    "name",
    list(CASES),
)
def test_each_kind_stops_a_run_without_quarantine(name, tmp_path, tiny_model):
    case = CASES[name]
    src = write_case(case, tmp_path)
    out = tmp_path / "out"
    assert_error(run_score(src, tiny_model, out, *case.extra), 3, str(src))
    assert not out.exists() and not quarantine_dir(out).exists()


def test_blank_lines_count_no_record(tmp_path, tiny_model):
    # A CSV's empty line holds no record, a JSON Lines blank line neither: rows and lines stay apart.
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": 1, "text": "good"}\n\n  \n[1]\n{"id": 3, "text": "fine"}\n')
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5"))
    (entry,) = read_quarantine(out)
    assert (entry["line"], entry["row"], entry["input_row"], entry["byte_offset"]) == (4, 1, 1, 30)
    check_accounting(out, 3, [entry], pq.read_table(out))

    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\n1,good\n\n2,too,many\n\n3,fine\n")
    out = tmp_path / "out2"
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5"))
    (entry,) = read_quarantine(out)
    assert (entry["line"], entry["row"], entry["byte_offset"], entry["raw"]) == (4, 1, 16, b"2,too,many")
    assert pq.read_table(out).column("id").to_pylist() == ["1", "3"]
    check_accounting(out, 3, [entry], pq.read_table(out))


def test_several_files_each_entry_names_its_file_and_row(tmp_path, tiny_model):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.csv").write_bytes(b"id,text\n1,good\n2,bad,row\n3,fine\n")
    (folder / "b.csv").write_bytes(b"id,text\n4,nice\n5,lovely\n6\n")
    out = tmp_path / "out"
    assert_ok(run_score(folder, tiny_model, out, *Q, "--max-bad-rows", "5"))
    entries = read_quarantine(out)
    assert [(Path(e["source_file"]).name, e["line"], e["row"], e["input_row"], e["raw"]) for e in entries] == [
        ("a.csv", 3, 1, 1, b"2,bad,row"),
        ("b.csv", 4, 2, 5, b"6"),
    ]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ["1", "3", "4", "5"]
    check_accounting(out, 6, entries, table)


def test_a_clean_input_gives_fail_modes_rows_plus_a_null_error_column(tmp_path, tiny_model):
    src = tmp_path / "in.csv"
    src.write_bytes(b'id,text\n1,good film\n2,"quoted, with comma"\n3,"two\nlines"\n4,\n')
    plain, lenient = tmp_path / "plain", tmp_path / "lenient"
    assert_ok(run_score(src, tiny_model, plain))
    result = assert_ok(run_score(src, tiny_model, lenient, *Q))
    expected = pq.read_table(plain)
    got = pq.read_table(lenient)
    assert got.column("error").null_count == got.num_rows == 4
    assert_same_table(got.drop_columns(["error"]), expected)
    assert quarantine_files(lenient) == []
    m = check_accounting(lenient, 4, [], got)
    assert m["bad_row_kinds"] == {} and m["empty_text_rows"] == 1
    assert "0 bad records of 4 read" in result.stderr


# ------------------------------------------------------------------ Parquet: invalid UTF-8, undecodable pages


def invalid_strings(values: list[bytes]) -> pa.Array:
    """A string array holding these bytes as they are: pyarrow checks neither such an array nor its writer."""
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    )


def parquet_with_invalid_utf8(path, bad: dict[tuple[str, int], bytes], rows: int = 8) -> Path:
    """`id, title, text`, row groups of 4; `bad` puts bytes at (column, row)."""
    text = [f"review {i} was good".encode() for i in range(rows)]
    title = [f"title {i}".encode() for i in range(rows)]
    for (column, row), value in bad.items():
        (text if column == "text" else title)[row] = value
    table = pa.table({"id": list(range(rows)), "title": invalid_strings(title), "text": invalid_strings(text)})
    pq.write_table(table, str(path), row_group_size=4)
    return Path(path)


@pytest.mark.parametrize("column", ["text", "title"])
def test_parquet_invalid_utf8_keeps_the_row_with_the_value_null(column, tmp_path, tiny_model):
    src = parquet_with_invalid_utf8(tmp_path / "in.parquet", {(column, 5): b"caf\xff\xfe"})
    assert pq.ParquetFile(src).num_row_groups == 2
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5"))
    (entry,) = read_quarantine(out)
    assert (entry["input_row"], entry["row"], entry["source_file"]) == (5, 5, str(src))
    assert (entry["error_kind"], entry["has_output_row"]) == ("invalid_encoding", True)
    assert column in entry["error_message"]
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == list(range(8))
    assert rows[5][column] is None and rows[5]["label"] is None and rows[5]["score"] is None
    assert rows[5]["error"] == f"invalid_encoding: {entry['error_message']}"
    other = "title" if column == "text" else "text"
    assert rows[5][other] == (f"title {5}" if other == "title" else "review 5 was good")
    assert [r["error"] for i, r in enumerate(rows) if i != 5] == [None] * 7
    oracle_check(tiny_model, table)
    check_accounting(out, 8, [entry], table)
    # and without --on-bad-row quarantine: exit 3, naming the file
    assert_error(run_score(src, tiny_model, tmp_path / "strict"), 3, str(src))


@pytest.mark.parametrize(
    "bad",
    [
        {("text", 2): b"\xff"},
        {("text", 1): b"\xc3", ("text", 2): b"x\xff"},
        {("title", 1): b"\xff", ("text", 2): b"\xff"},
    ],
    ids=["one-byte", "two-rows", "title-and-text"],
)
def test_parquet_text_of_invalid_bytes_only_is_set_aside(bad, tmp_path, tiny_model):
    src = parquet_with_invalid_utf8(tmp_path / "in.parquet", bad)
    out = tmp_path / "out"
    result = run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5")
    assert result.exit_code == 0, result.output
    entries = read_quarantine(out)
    assert sorted(e["input_row"] for e in entries) == sorted({row for _, row in bad})
    check_accounting(out, 8, entries, pq.read_table(out))


def test_parquet_invalid_utf8_entry_keeps_the_bytes_read(tmp_path, tiny_model):
    src = parquet_with_invalid_utf8(tmp_path / "in.parquet", {("text", 5): b"caf\xff\xfe"})
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5"))
    (entry,) = read_quarantine(out)
    assert entry["raw"] is not None and b"caf\xff\xfe" in entry["raw"]


def parquet_with_a_corrupt_row_group(path, rows: int = 12, group: int = 1) -> Path:
    """`id, text` in row groups of 4; the text column's pages of row group `group` overwritten with garbage
    (the footer intact: the file opens, that row group does not decode)."""
    texts = [f"review number {i} was quite good" for i in range(rows)]
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts}), str(path), row_group_size=4)
    chunk = pq.ParquetFile(str(path)).metadata.row_group(group).column(1)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(Path(path).read_bytes())
    data[start : start + chunk.total_compressed_size] = b"\xab" * chunk.total_compressed_size
    Path(path).write_bytes(bytes(data))
    with pytest.raises((pa.ArrowException, OSError)):
        pq.ParquetFile(str(path)).read_row_group(group)
    pq.ParquetFile(str(path)).read_row_group((group + 1) % 3)  # the others are intact
    return Path(path)


@pytest.mark.parametrize("group", [0, 1, 2])
def test_parquet_undecodable_row_group_is_set_aside_without_rows(group, tmp_path, tiny_model):
    src = parquet_with_a_corrupt_row_group(tmp_path / "in.parquet", group=group)
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "4"))
    entries = read_quarantine(out)
    lost = list(range(4 * group, 4 * group + 4))
    assert [e["input_row"] for e in entries] == lost
    assert [e["row"] for e in entries] == lost
    for e in entries:
        assert (e["error_kind"], e["has_output_row"], e["source_file"]) == ("undecodable_parquet", False, str(src))
        assert e["raw"] is None and e["line"] is None and e["byte_offset"] is None
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [i for i in range(12) if i not in lost]
    assert table.column("error").null_count == 8
    oracle_check(tiny_model, table)
    check_accounting(out, 12, entries, table)
    assert_error(run_score(src, tiny_model, tmp_path / "strict"), 3, str(src))


# ------------------------------------------------------------------ tokenizer_rejected

REFUSED = "a text this tokenizer refuses"


class RefusingTokenizer:
    """A real tokenizer that raises on one text (as a custom tokenizer might), whatever else it is given with."""

    def __init__(self, real, refused=REFUSED):
        self._real, self._refused = real, refused

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __call__(self, text, *args, **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        if self._refused in texts:
            raise ValueError("refused on purpose")
        return self._real(text, *args, **kwargs)


@pytest.fixture(scope="module")
def real_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir())


def test_encode_marks_the_text_the_tokenizer_rejects(real_tokenizer):
    from batchscore.plan import Chunk
    from batchscore.quarantine.rows import BAD, with_bad
    from batchscore.scoring.encode import encode_chunk

    texts = ["good film", REFUSED, None, "awful acting, truly", "  "]
    table = with_bad(pa.table({"id": list(range(5)), "text": pa.array(texts, pa.string())}))
    work = encode_chunk(
        Chunk(0, 100, table),
        text_column="text",
        out_columns=["id"],
        tokenizer=RefusingTokenizer(real_tokenizer),
        max_length=512,
        batch_tokens=4096,
        pad_multiple=None,
    )
    assert work.valid.tolist() == [True, False, False, True, False]
    bad = work.chunk.table.column(BAD).to_pylist()
    assert [b is None for b in bad] == [True, False, True, True, True]
    assert bad[1]["kind"] == "tokenizer_rejected" and bad[1]["kept"] is True
    assert bad[1]["raw"] == REFUSED.encode()
    assert "refused on purpose" in bad[1]["message"]
    assert work.chunk.table.column("id").to_pylist() == list(range(5))
    # the others are encoded as the tokenizer encodes each alone
    scored = {}
    for batch in work.batches:
        for position, ids, mask in zip(batch.positions, batch.inputs["input_ids"], batch.inputs["attention_mask"]):
            scored[int(position)] = ids[mask.bool()].tolist()
    assert scored == {i: real_tokenizer(texts[i])["input_ids"] for i in (0, 3)}


def test_encode_without_quarantine_names_the_rejected_row(real_tokenizer):
    from batchscore.errors import InputError
    from batchscore.plan import Chunk
    from batchscore.scoring.encode import encode_chunk

    table = pa.table({"id": [0, 1, 2], "text": ["good film", "fine", REFUSED]})
    with pytest.raises(InputError) as raised:
        encode_chunk(
            Chunk(0, 100, table),
            text_column="text",
            out_columns=["id"],
            tokenizer=RefusingTokenizer(real_tokenizer),
            max_length=512,
            batch_tokens=4096,
            pad_multiple=None,
        )
    message = str(raised.value)
    assert "102" in message  # input row 102 (0-based, as the quarantine's input_row): the chunk starts at 100
    assert "refused on purpose" in message and "--on-bad-row quarantine" in message


def test_encode_reraises_a_failure_that_is_no_single_texts(real_tokenizer):
    from batchscore.plan import Chunk
    from batchscore.quarantine.rows import with_bad
    from batchscore.scoring.encode import encode_chunk

    class Broken(RefusingTokenizer):
        def __call__(self, text, *args, **kwargs):
            if isinstance(text, list) and len(text) > 1:
                raise RuntimeError("the tokenizer broke")
            return self._real(text, *args, **kwargs)

    table = with_bad(pa.table({"text": ["good film", "fine"]}))
    with pytest.raises(RuntimeError, match="the tokenizer broke"):
        encode_chunk(
            Chunk(0, 0, table),
            text_column="text",
            out_columns=["text"],
            tokenizer=Broken(real_tokenizer),
            max_length=512,
            batch_tokens=4096,
            pad_multiple=None,
        )


@pytest.fixture
def refusing_tokenizers(monkeypatch):
    """Every tokenizer of this process refuses REFUSED (the CLI runs in-process, its workers too: 0 workers)."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    real = PreTrainedTokenizerBase.__call__

    def refusing(self, text=None, *args, **kwargs):
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else []
        if REFUSED in texts:
            raise ValueError("refused on purpose")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", refusing)


def test_tokenizer_rejected_through_the_cli(tmp_path, tiny_model, refusing_tokenizers):
    src = tmp_path / "in.csv"
    src.write_text(f"id,text\n1,good film\n2,{REFUSED}\n3,awful\n4,too,many\n", encoding="utf-8")
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5"))
    entries = read_quarantine(out)
    assert [(e["input_row"], e["error_kind"], e["has_output_row"]) for e in entries] == [
        (1, "tokenizer_rejected", True),
        (3, "unparseable_record", False),
    ]
    assert entries[0]["raw"] == REFUSED.encode() and "refused on purpose" in entries[0]["error_message"]
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["label"] is None and rows[1]["score"] is None
    assert rows[1]["error"] == f"tokenizer_rejected: {entries[0]['error_message']}"
    oracle_check(tiny_model, table)
    check_accounting(out, 4, entries, table)

    strict = tmp_path / "strict"
    src.write_text(f"id,text\n1,good film\n2,{REFUSED}\n3,awful\n", encoding="utf-8")
    assert_error(run_score(src, tiny_model, strict), 3, "Row 1 of the input", "refused on purpose")
    assert part_files(strict) == []


# ------------------------------------------------------------------ one record, read the same on both paths

ALONE_AND_WITH_ANOTHER = {
    # A block without a bad record is parsed whole by pyarrow (the fast path); one with a bad record record by
    # record: a record must come out the same whichever path its block takes.
    "jsonl-null-line": (
        "jsonl",
        b'{"id": 1, "text": "good film"}\nnull\n{"id": 3, "text": "awful"}\n',
        b"[1, 2]\n",
        "a JSON Lines line `null` is a row of nulls (as --on-bad-row fail reads it), also when its block has another "
        "bad record (once it was a not_json_object record there)",
    ),
    "jsonl-invalid-utf8-in-a-field-that-is-no-column": (
        "jsonl",
        b'{"id": 1, "text": "good film"}\n{"id": 2, "text": "fine", "note": "\xfe"}\n{"id": 3, "text": "awful"}\n',
        b"[1, 2]\n",
        "invalid UTF-8 in a field that is not one of the input's columns is never read (the row is scored, as "
        "--on-bad-row fail does), also when its block has another bad record",
    ),
}


@pytest.mark.parametrize(
    "name",
    list(ALONE_AND_WITH_ANOTHER),
)
def test_a_record_reads_the_same_with_or_without_another_bad_record_in_its_block(name, tmp_path, tiny_model):
    fmt, body, another, _ = ALONE_AND_WITH_ANOTHER[name]
    alone, with_another = tmp_path / f"alone.{fmt}", tmp_path / f"with.{fmt}"
    alone.write_bytes(body)
    with_another.write_bytes(body + another)
    out_alone, out_with = tmp_path / "alone", tmp_path / "with"
    assert_ok(run_score(alone, tiny_model, out_alone, *Q, "--max-bad-rows", "5"))
    assert_ok(run_score(with_another, tiny_model, out_with, *Q, "--max-bad-rows", "5"))
    entries_alone, entries_with = read_quarantine(out_alone), read_quarantine(out_with)
    # the same output rows; the same entries, plus the one for the line added at the end
    assert_same_table(pq.read_table(out_with), pq.read_table(out_alone))
    assert [e["raw"] for e in entries_with] == [e["raw"] for e in entries_alone] + [another.strip()]


@pytest.mark.parametrize("block_bytes", [None, 7, 24])
@pytest.mark.parametrize(
    "line, bad",
    [(b'2,ok "lone quote', False), (b'2,"quoted" then more', True), (b'2,"never closes', True)],
    ids=["lone-quote-in-a-field", "stray-quote", "quote-never-closes"],
)
def test_a_quote_costs_at_most_its_own_record(line, bad, block_bytes, tmp_path, tiny_model, monkeypatch):
    # A quote inside an unquoted field is a character to pyarrow and to Python's csv module (--on-bad-row fail
    # reads it so); a stray or unclosed quote makes its own line bad: never the valid quoted records after it,
    # wherever the blocks are cut (small blocks: the cut falls inside the quoted records).
    from batchscore.input import lenient_text

    if block_bytes is not None:
        monkeypatch.setattr(lenient_text, "BLOCK_BYTES", block_bytes)
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\n1,good film\n" + line + b'\n3,fine\n4,"multi\nline"\n5,"a, b"\n6,"x\n\ny"\n7,awful\n')
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5"))
    table = pq.read_table(out)
    expected = [("1", "good film"), ("3", "fine"), ("4", "multi\nline"), ("5", "a, b"), ("6", "x\n\ny"), ("7", "awful")]
    if not bad:
        expected.insert(1, ("2", line.decode()[2:]))
    assert [(r["id"], r["text"]) for r in table.to_pylist()] == expected
    entries = read_quarantine(out)
    assert [(e["raw"], e["line"], e["row"], e["byte_offset"]) for e in entries] == ([(line, 3, 1, 20)] if bad else [])
    oracle_check(tiny_model, table)
    check_accounting(out, 7, entries, table)
    if not bad and block_bytes is None:  # as --on-bad-row fail reads it, plus the error column
        assert_ok(run_score(src, tiny_model, tmp_path / "strict"))
        assert_same_table(table.drop_columns(["error"]), pq.read_table(tmp_path / "strict"))


@pytest.mark.parametrize("fmt, line", [("csv", b"2,\xfe,x"), ("tsv", b"2\t\xfe\tx")])
def test_a_ragged_record_with_invalid_utf8_prints_no_traceback(fmt, line, tmp_path, tiny_model, monkeypatch):
    sep = b"," if fmt == "csv" else b"\t"
    src = tmp_path / f"in.{fmt}"
    src.write_bytes(b"id" + sep + b"text\n1" + sep + b"good\n" + line + b"\n3" + sep + b"fine\n")
    unraisable = no_unraisable(monkeypatch)
    out = tmp_path / "out"
    result = assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5"))
    (entry,) = read_quarantine(out)
    assert (entry["raw"], entry["error_kind"]) == (line, "unparseable_record")  # set aside right, either way
    assert "Traceback" not in result.output
    assert unraisable == []


def test_csv_infer_types_finds_the_types_fail_mode_finds(tmp_path, tiny_model):
    text = "review of this film: rather good and worth seeing again with friends or so they say"
    lines = [f"{i},{text}" for i in range(799)] + [f"x799,{text}"]
    src = tmp_path / "in.csv"
    src.write_text("id,text\n" + "\n".join(lines) + "\n", encoding="utf-8")
    assert src.stat().st_size > 70_000  # past the first 64 KB
    strict, out = tmp_path / "strict", tmp_path / "out"
    assert_ok(run_score(src, tiny_model, strict, "--csv-infer-types"))
    expected = pq.read_table(strict)
    assert expected.num_rows == 800 and expected.schema.field("id").type == pa.string()
    assert_ok(run_score(src, tiny_model, out, "--csv-infer-types", *Q, "--max-bad-rows", "5"))
    assert read_quarantine(out) == []
    assert_same_table(pq.read_table(out).drop_columns(["error"]), expected)


# ------------------------------------------------------------------ options refused before anything is written


@pytest.mark.parametrize(
    "extra",
    [
        ("--max-bad-rows", "5"),  # without --on-bad-row quarantine
        (*Q, "--max-bad-rows", "abc"),
        (*Q, "--max-bad-rows", "150%"),
        (*Q, "--max-bad-rows", "-1"),
        (*Q, "--max-bad-rows", "1.5"),
        ("--on-bad-row", "skip"),
        (*Q, "--encoding", "latin-1"),
    ],
    ids=["budget-without-quarantine", "abc", "150%", "negative", "fraction-count", "unknown-mode", "latin-1"],
)
def test_bad_settings_are_exit_2(extra, tmp_path, tiny_model, three_row_csv):
    out = tmp_path / "out"
    result = run_score(three_row_csv, tiny_model, out, *extra)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    assert not out.exists() and not quarantine_dir(out).exists()


def test_an_input_column_named_error_is_exit_2_unless_left_out(tmp_path, tiny_model):
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text,error\n1,good film,x\n2,too,many,fields\n3,awful,y\n")
    out = tmp_path / "out"
    assert_error(run_score(src, tiny_model, out, *Q), 2, "'error'", "--keep-columns")
    assert not out.exists() and not quarantine_dir(out).exists()
    assert_ok(run_score(src, tiny_model, out, *Q, "--max-bad-rows", "5", "--keep-columns", "id,text"))
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "label", "score", "error"]
    assert table.column("id").to_pylist() == ["1", "3"]
    assert [e["raw"] for e in read_quarantine(out)] == [b"2,too,many,fields"]


# ------------------------------------------------------------------ budget: exit 3, then resume with a larger one


def budget_csv(path: Path, rows: int = 60) -> tuple[Path, list[int]]:
    """Rows `i,review number i is fine`; every 7th from row 3 has a field too many. Its bad rows."""
    bad = [i for i in range(rows) if i % 7 == 3]
    lines = [f"{i},bad,extra" if i in bad else f"{i},review number {i} is fine" for i in range(rows)]
    path.write_text("id,text\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path, bad


def committed_files(out) -> dict:
    """Each part and quarantine file: (bytes, mtime_ns)."""
    found = {}
    for folder in (Path(out), quarantine_dir(out)):
        for name in sorted(os.listdir(folder)) if folder.exists() else []:
            if name.startswith("part-"):
                path = folder / name
                found[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def over_budget_error(result, *fragments) -> str:
    """Exit 3; the last line of stderr the one `Error:` (the per-kind `Warning:` lines come before it)."""
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]]
    assert all(line.startswith("Warning: ") for line in lines[:-1]), lines
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def assert_complete(out, rows: int, bad: list[int], model) -> None:
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [str(i) for i in range(rows) if i not in bad]
    entries = read_quarantine(out)
    assert [e["input_row"] for e in entries] == bad
    assert [e["raw"] for e in entries] == [f"{i},bad,extra".encode() for i in bad]
    assert all(e["line"] == e["input_row"] + 2 for e in entries)
    oracle_check(model, table)
    check_accounting(out, rows, entries, table)
    assert (Path(out) / "_SUCCESS").exists()


def test_count_budget_stops_after_the_chunk_that_spends_it_then_resumes(tmp_path, tiny_model):
    src, bad = budget_csv(tmp_path / "in.csv")  # bad: 3 | 10 17 | 24 | 31 38 | 45 | 52 59, in chunks of 10
    out = tmp_path / "out"
    chunks = ("--chunk-rows", "10")
    result = run_score(src, tiny_model, out, *Q, *chunks, "--max-bad-rows", "3")
    over_budget_error(result, "4 bad records", "of 30 read", "--max-bad-rows 3", str(quarantine_dir(out)))
    assert part_files(out) == [f"part-{i:06d}.parquet" for i in range(3)]  # the 4th bad record is in chunk 2
    assert quarantine_files(out) == part_files(out)
    assert [e["input_row"] for e in read_quarantine(out)] == [3, 10, 17, 24]
    assert not (out / "_SUCCESS").exists() and not (out / "_manifest.parquet").exists()
    before = committed_files(out)
    # the same budget again: still over it, before another chunk is scored
    result = run_score(src, tiny_model, out, *Q, *chunks, "--max-bad-rows", "3")
    over_budget_error(result, "4 bad records", "--max-bad-rows 3")
    assert committed_files(out) == before

    result = assert_ok(run_score(src, tiny_model, out, *Q, *chunks, "--max-bad-rows", "9"))
    assert "Resuming: 3 chunks already committed" in result.stderr
    after = committed_files(out)
    assert {k: after[k] for k in before} == before  # the committed chunks were neither scored nor written again
    assert len(after) == 6 + 6
    assert_complete(out, 60, bad, tiny_model)
    assert "9 bad records of 60 read" in result.stderr


def test_a_chunk_whose_part_was_lost_after_its_quarantine_file_is_set_aside_once(tmp_path, tiny_model):
    # As a kill between a chunk's two commits leaves it: its quarantine file there, its part not.
    src, bad = budget_csv(tmp_path / "in.csv")
    out = tmp_path / "out"
    chunks = ("--chunk-rows", "10")
    over_budget_error(run_score(src, tiny_model, out, *Q, *chunks, "--max-bad-rows", "3"), "4 bad records")
    (out / "part-000002.parquet").unlink()
    assert quarantine_files(out) == [f"part-{i:06d}.parquet" for i in range(3)]
    result = assert_ok(run_score(src, tiny_model, out, *Q, *chunks, "--max-bad-rows", "20"))
    assert "Resuming: 2 chunks already committed" in result.stderr
    assert_complete(out, 60, bad, tiny_model)


def test_share_budget_is_judged_at_the_end_then_resumes(tmp_path, tiny_model):
    src, bad = budget_csv(tmp_path / "in.csv")  # 9 of 60: 15%
    out = tmp_path / "out"
    chunks = ("--chunk-rows", "10")
    result = run_score(src, tiny_model, out, *Q, *chunks, "--max-bad-rows", "5%")
    over_budget_error(result, "9 bad records", "of 60 read", "5%", str(quarantine_dir(out)))
    assert len(part_files(out)) == 6 and len(quarantine_files(out)) == 6
    assert not (out / "_SUCCESS").exists()
    before = committed_files(out)
    result = assert_ok(run_score(src, tiny_model, out, *Q, *chunks, "--max-bad-rows", "20%"))
    assert "Resuming: 6 chunks already committed" in result.stderr
    assert committed_files(out) == before
    assert_complete(out, 60, bad, tiny_model)


@pytest.mark.parametrize(
    "rows, budget, ok",
    [
        (60, "9", True),  # 9 bad records: a budget of 9 holds them
        (60, "8", False),
        (200, None, True),  # the default, 1%: 2 of 200 is not over it (rows 3 and 10 of the first 14)
        (300, None, False),  # 3 of 300 is 1%... of 300 rows: bad rows 3, 10, 17 of the first 21
    ],
)
def test_budget_edges(rows, budget, ok, tmp_path, tiny_model):
    src, bad = budget_csv(tmp_path / "in.csv", rows)
    if budget is None:  # keep only the first bad records: 2 of 200, or 4 of 300 (over 1%)
        keep = bad[:2] if rows == 200 else bad[:4]
        lines = [f"{i},bad,extra" if i in keep else f"{i},review number {i} is fine" for i in range(rows)]
        src.write_text("id,text\n" + "\n".join(lines) + "\n", encoding="utf-8")
        bad = keep
    out = tmp_path / "out"
    extra = ("--max-bad-rows", budget) if budget is not None else ()
    result = run_score(src, tiny_model, out, *Q, *extra)
    if ok:
        assert_ok(result)
        assert_complete(out, rows, bad, tiny_model)
    else:
        over_budget_error(result, f"{len(bad)} bad records", f"of {rows} read")


def test_overwrite_leaves_no_quarantine_of_the_run_it_replaces(tmp_path, tiny_model):
    src, bad = budget_csv(tmp_path / "in.csv", 30)  # bad: 3, 10, 17, 24 in chunks 0, 1, 1, 2
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, *Q, "--chunk-rows", "10", "--max-bad-rows", "10"))
    assert quarantine_files(out) == [f"part-{i:06d}.parquet" for i in range(3)]
    lines = src.read_text().splitlines()
    lines[1 + 10], lines[1 + 17] = "10,now fine", "17,fine too"  # chunk 1 is clean now
    src.write_text("\n".join(lines) + "\n")
    assert_ok(run_score(src, tiny_model, out, *Q, "--chunk-rows", "10", "--max-bad-rows", "10", "--overwrite"))
    assert quarantine_files(out) == ["part-000000.parquet", "part-000002.parquet"]
    assert_complete(out, 30, [3, 24], tiny_model)


# ------------------------------------------------------------------ SIGKILL mid-run, then rerun

KILL_ROWS, KILL_CHUNK = 200, 20


def kill_corpus(path: Path) -> dict[int, tuple[bytes, str, bool]]:
    """`KILL_ROWS` records, id = record number; bad ones spread over the chunks: record -> (raw, kind, kept)."""
    rng = random.Random(7)
    words = "good bad fine awful great boring loved hated the a plot food service".split()
    bad, lines = {}, [b"id,text"]
    for i in range(KILL_ROWS):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12))).encode()
        if i % 13 == 5:
            line = b"%d,%s,extra" % (i, text)
            bad[i] = (line, "unparseable_record", False)
        elif i % 17 == 9:
            line = b"%d,%s \xff" % (i, text)
            bad[i] = (line, "invalid_encoding", True)
        elif i % 29 == 20:
            line = b'%d,"%s' % (i, text)
            bad[i] = (line, "unparseable_record", False)
        else:
            line = b"%d,%s" % (i, text)
        lines.append(line)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return bad


def test_sigkill_mid_run_then_rerun_accounts_every_record_once(tmp_path, tiny_model):
    src = tmp_path / "in.csv"
    bad = kill_corpus(src)
    chunks = KILL_ROWS // KILL_CHUNK
    assert {i // KILL_CHUNK for i in bad} == set(range(chunks))  # every chunk meets bad records
    out = tmp_path / "out"
    args = [*Q, "--max-bad-rows", "1000", "--chunk-rows", str(KILL_CHUNK), "--no-progress"]
    log = tmp_path / "killed.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchscore", "score", str(src), "--model", tiny_model, "-o", str(out), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        while proc.poll() is None and not part_files(out) and time.time() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, log.read_text(errors="replace")
    committed = part_files(out)
    assert 1 <= len(committed) < chunks, f"the kill did not land mid-run: {committed}"
    assert not (out / "_SUCCESS").exists()
    # each committed chunk's bad records were committed before it: its quarantine file is there, whole
    for name in committed:
        index = int(name[len("part-") : -len(".parquet")])
        entries = pq.read_table(quarantine_dir(out) / name).column("input_row").to_pylist()
        assert entries == [i for i in sorted(bad) if i // KILL_CHUNK == index]

    result = assert_ok(run_score(src, tiny_model, out, *args))
    assert f"Resuming: {len(committed)} chunks already committed" in result.stderr
    table = pq.read_table(out)
    entries = read_quarantine(out)
    ids = [int(i) for i in table.column("id").to_pylist()]
    assert ids == [i for i in range(KILL_ROWS) if i not in bad or bad[i][2]]  # every row once, in order
    assert [e["input_row"] for e in entries] == sorted(bad)  # every bad record once
    without = {e["input_row"] for e in entries if not e["has_output_row"]}
    assert without.isdisjoint(ids) and without | set(ids) == set(range(KILL_ROWS))
    for e in entries:
        raw, kind, kept = bad[e["input_row"]]
        assert (e["raw"], e["error_kind"], e["has_output_row"], e["line"]) == (raw, kind, kept, e["input_row"] + 2)
    with_error = [int(r["id"]) for r in table.to_pylist() if r["error"] is not None]
    assert with_error == sorted(i for i in bad if bad[i][2])
    oracle_check(tiny_model, table)
    check_accounting(out, KILL_ROWS, entries, table)
    assert quarantine_files(out) == [f"part-{i:06d}.parquet" for i in range(chunks)]


# ------------------------------------------------------------------ readers


def mixed_csv(path: Path) -> tuple[list[str], list[int]]:
    """15 records in 3 chunks of 5, a bad one without a row in each and one kept with an error: (ids, bad)."""
    lines, ids, bad = [], [], []
    for i in range(15):
        if i in (1, 7, 13):
            lines.append(f"{i},too,many")
            bad.append(i)
        elif i == 9:
            lines.append(f"{i},bad \udcff text")
            bad.append(i)
            ids.append(str(i))
        else:
            lines.append(f"{i},review {i} was good")
            ids.append(str(i))
    path.write_bytes(("id,text\n" + "\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return ids, bad


@pytest.mark.parametrize("single_file", [False, True], ids=["folder", "single-file"])
def test_readers_see_the_scored_rows_and_the_quarantine_apart(single_file, tmp_path, tiny_model):
    import pandas as pd
    import pyarrow.dataset as ds

    src = tmp_path / "in.csv"
    ids, bad = mixed_csv(src)
    out = tmp_path / ("scored.parquet" if single_file else "scored")
    assert_ok(run_score(src, tiny_model, out, *Q, "--chunk-rows", "5", "--max-bad-rows", "10"))
    assert quarantine_dir(out) == tmp_path / "scored.quarantine"
    assert sorted(os.listdir(tmp_path)) == sorted([out.name, "scored.quarantine", "in.csv"])
    columns = ["id", "text", "label", "score", "error"]
    folder = str(quarantine_dir(out))

    seen = {
        "pandas": pd.read_parquet(str(out)),
        "pyarrow.dataset": ds.dataset(str(out)).to_table().to_pandas(),
    }
    quarantined = {
        "pandas": pd.read_parquet(folder),
        "pyarrow.dataset": ds.dataset(folder).to_table().to_pandas(),
    }
    try:
        import polars as pl
    except ImportError:
        pass
    else:
        seen["polars.read_parquet"] = pl.read_parquet(str(out)).to_pandas()
        seen["polars.scan_parquet"] = pl.scan_parquet(str(out)).collect().to_pandas()
        quarantined["polars"] = pl.read_parquet(os.path.join(folder, "*.parquet")).to_pandas()
    try:
        import duckdb
    except ImportError:
        pass
    else:
        pattern = str(out) if single_file else os.path.join(str(out), "*.parquet")
        with duckdb.connect() as con:
            seen["duckdb"] = con.execute(f"select * from read_parquet('{pattern}')").df()
            quarantined["duckdb"] = con.execute(f"select * from read_parquet('{folder}/*.parquet')").df()
    assert len(seen) >= 2
    for reader, frame in seen.items():
        assert list(frame.columns) == columns, reader
        assert sorted(frame["id"].tolist(), key=int) == ids, reader
        assert frame["error"].notna().sum() == 1, reader
    for reader, frame in quarantined.items():
        assert list(frame.columns) == [name for name, _ in QUARANTINE_COLUMNS], reader
        assert sorted(frame["input_row"].tolist()) == bad, reader
    table = pq.read_table(str(out))
    oracle_check(tiny_model, table)
    check_accounting(out, 15, read_quarantine(out), table)


# ------------------------------------------------------------------ a larger file, in many blocks


def large_csv(path: Path, clean: Path, rows: int = 3000) -> tuple[dict[int, str], list[int]]:
    """`rows` records (quoted commas, quoted line breaks among them) with bad ones scattered; `clean`: the same
    file without the bad records' lines. Returns (record -> kind of the bad ones without a row, the records kept
    with an error)."""
    rng = random.Random(11)
    words = "good bad fine awful great boring loved hated the a plot food service".split()
    bad: dict[int, str] = {}
    kept: list[int] = []
    lines, clean_lines = ["id,text"], ["id,text"]
    for i in range(rows):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 15)))
        roll = rng.random()
        if roll < 0.01:
            line, bad[i] = f"{i},{text},extra", "unparseable_record"
        elif roll < 0.02:
            line, bad[i] = f"{i}", "unparseable_record"
        elif roll < 0.025:
            line, bad[i] = f'{i},"{text}" and more', "unparseable_record"
        elif roll < 0.03:
            line, bad[i] = f'{i},"{text}', "unparseable_record"
        elif roll < 0.035:
            line, bad[i] = f"\udcfe{i},{text}", "invalid_encoding"
        elif roll < 0.04:
            line = f"{i},{text} \udcff"
            kept.append(i)
        elif roll < 0.1:
            line = f'{i},"{text}, {text}"'
        elif roll < 0.15:
            line = f'{i},"{text}\n{text}"'
        else:
            line = f"{i},{text}"
        lines.append(line)
        if i not in bad and (not kept or kept[-1] != i):
            clean_lines.append(line)
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    clean.write_bytes(("\n".join(clean_lines) + "\n").encode("utf-8", "surrogateescape"))
    return bad, kept


@pytest.fixture(scope="module")
def large(tmp_path_factory, tiny_model):
    """The large file, its clean copy, and the clean copy scored (--on-bad-row fail): the reference."""
    import batchscore

    folder = tmp_path_factory.mktemp("large")
    src, clean = folder / "in.csv", folder / "clean.csv"
    bad, kept = large_csv(src, clean)
    batchscore.score(str(clean), str(folder / "reference"), model=tiny_model)
    return src, bad, kept, pq.read_table(folder / "reference")


@pytest.mark.parametrize("block_bytes", [None, 1024])
def test_large_file_in_many_blocks_gives_the_clean_rows_exactly(block_bytes, large, tmp_path, tiny_model, monkeypatch):
    import batchscore
    from batchscore.input import lenient_text

    if block_bytes is not None:
        monkeypatch.setattr(lenient_text, "BLOCK_BYTES", block_bytes)
    src, bad, kept, reference = large
    assert len(bad) > 50 and len(kept) > 5
    out = tmp_path / "out"
    manifest = batchscore.score(str(src), str(out), model=tiny_model, on_bad_row="quarantine", max_bad_rows="1000")
    table = pq.read_table(out)
    entries = read_quarantine(out)
    assert {e["input_row"]: e["error_kind"] for e in entries if not e["has_output_row"]} == bad
    assert [e["input_row"] for e in entries if e["has_output_row"]] == kept
    errors = table.column("error").is_null()
    assert_same_table(table.filter(errors).drop_columns(["error"]), reference)
    assert [int(i) for i in table.filter(pc.invert(errors)).column("id").to_pylist()] == kept
    m = check_accounting(out, 3000, entries, table)
    assert manifest["bad_rows"] == m["bad_rows"] == len(bad) + len(kept)

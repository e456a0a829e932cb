"""What surrounds the quarantine (--on-bad-row quarantine): the budget's syntax, `batchscore redrive`, `status`,
the report page's section, --overwrite, and the places it may not be. The bad-record kinds themselves, exactly
once and the accounting identity: tests/test_quarantine.py."""

import json
import os

import pyarrow.parquet as pq
import pytest

from batchscore.errors import ConfigError
from batchscore.quarantine.budget import Budget, parse_budget
from helpers import assert_error, assert_ok, invoke, manifest_of, run_score

CSV = (
    b"id,text\n"
    b"1,good movie\n"
    b"2,too,many,fields\n"
    b"3,fine film\n"
    b"4,caf\xe9 in latin-1\n"
    b"5,\"a <b>bold</b> & 'quoted' claim\",extra\n"
    b"6,last one\n"
)


def quarantined(tmp_path, model, data=CSV, name="in.csv", *extra):
    source = tmp_path / name
    source.write_bytes(data)
    out = tmp_path / "out"
    assert_ok(run_score(source, model, out, "--on-bad-row", "quarantine", "--max-bad-rows", "10", *extra))
    return source, out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", Budget(count=0)),
        ("1000", Budget(count=1000)),
        (" 25 ", Budget(count=25)),
        ("0.5%", Budget(share=0.005)),
        ("100%", Budget(share=1.0)),
        (".1%", Budget(share=0.001)),
    ],
)
def test_budget_syntax(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1", "1.5", "150%", "%", "10 %%", ""])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ConfigError):
        parse_budget(text)


def test_a_share_is_judged_over_the_whole_run_a_count_at_once():
    share, count = Budget(share=0.01), Budget(count=2)
    assert not share.over(5, 100, final=False)  # 5% of the first 100: the run goes on
    assert share.over(5, 100, final=True)
    assert not share.over(1, 100, final=True)
    assert count.over(3, 10**9, final=False) and not count.over(2, 10, final=True)


def test_budget_without_quarantine_is_a_usage_error(tmp_path, tiny_model):
    source = tmp_path / "in.csv"
    source.write_bytes(b"text\nok\n")
    result = run_score(source, tiny_model, tmp_path / "out", "--max-bad-rows", "5")
    assert_error(result, 2, "--max-bad-rows 5", "--on-bad-row quarantine")
    assert not (tmp_path / "out").exists()


def test_redrive_writes_the_records_back_as_csv_under_their_header(tmp_path, tiny_model):
    source, out = quarantined(tmp_path, tiny_model)
    fixed = tmp_path / "bad.csv"
    result = assert_ok(invoke(["redrive", out, fixed]))
    assert "Wrote 3 set-aside records" in result.output
    assert fixed.read_bytes() == (
        b"id,text\n2,too,many,fields\n4,caf\xe9 in latin-1\n5,\"a <b>bold</b> & 'quoted' claim\",extra\n"
    )
    # Only those without an output row:
    only = tmp_path / "only.csv"
    assert_ok(invoke(["redrive", out, only, "--without-row-only"]))
    assert only.read_bytes() == b"id,text\n2,too,many,fields\n5,\"a <b>bold</b> & 'quoted' claim\",extra\n"
    # Once fixed, the file is an input like any other.
    only.write_bytes(b"id,text\n2,too many fields\n5,a bold claim\n")
    assert_ok(run_score(only, tiny_model, tmp_path / "fixed"))
    assert pq.read_table(tmp_path / "fixed").column("id").to_pylist() == ["2", "5"]


def test_redrive_jsonl_lines_as_they_were(tmp_path, tiny_model):
    data = b'{"text": "good"}\nnot json at all\n{"text": 12}\n[1, 2]\n'
    _, out = quarantined(tmp_path, tiny_model, data, "in.jsonl")
    fixed = tmp_path / "bad.jsonl"
    assert_ok(invoke(["redrive", out, fixed]))
    assert fixed.read_bytes() == b'not json at all\n{"text": 12}\n[1, 2]\n'


def test_redrive_refuses_to_replace_a_file_and_needs_a_quarantine(tmp_path, tiny_model):
    _, out = quarantined(tmp_path, tiny_model)
    there = tmp_path / "there.csv"
    there.write_text("mine\n")
    assert_error(invoke(["redrive", out, there]), 2, "exists")
    assert there.read_text() == "mine\n"
    clean = tmp_path / "clean.csv"
    clean.write_text("text\nfine\n")
    assert_ok(run_score(clean, tiny_model, tmp_path / "clean-out", "--on-bad-row", "quarantine"))
    assert_error(invoke(["redrive", tmp_path / "clean-out", tmp_path / "x.csv"]), 5, "No quarantine")


def test_status_and_manifest_count_the_bad_records(tmp_path, tiny_model):
    _, out = quarantined(tmp_path, tiny_model)
    manifest = manifest_of(out)
    assert (manifest["records"], manifest["rows"], manifest["bad_rows"]) == (6, 4, 3)
    assert manifest["bad_row_kinds"] == {"invalid_encoding": 1, "unparseable_record": 2}
    assert (manifest["quarantined_rows"], manifest["error_rows"]) == (2, 1)
    assert manifest["quarantine"] == f"{out}.quarantine"
    result = assert_ok(invoke(["status", out, "--json"]))
    status = json.loads(result.stdout)
    assert status["bad_records"]["bad_rows"] == 3
    assert status["bad_records"]["bad_row_kinds"] == {"invalid_encoding": 1, "unparseable_record": 2}
    assert status["bad_records"]["quarantine"] == f"{out}.quarantine"
    lines = assert_ok(invoke(["status", out])).stdout
    assert f"bad records: 3 of 6 read (1 invalid_encoding, 2 unparseable_record), in {out}.quarantine" in lines


def test_report_page_has_the_bad_records_escaped(tmp_path, tiny_model):
    _, out = quarantined(tmp_path, tiny_model)
    assert_ok(invoke(["report", out]))
    page = (tmp_path / "out.report.html").read_text()
    assert "<h2>Bad records</h2>" in page
    assert "unparseable_record" in page and "invalid_encoding" in page
    # The raw record, escaped: no tag of the data reaches the page.
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &#x27;quoted&#x27;" in page
    assert "<b>bold</b>" not in page


def test_a_clean_run_has_no_quarantine_and_every_row(tmp_path, tiny_model):
    source = tmp_path / "in.csv"
    source.write_text("text\ngood\nbad\n")
    out = tmp_path / "out"
    assert_ok(run_score(source, tiny_model, out, "--on-bad-row", "quarantine"))
    assert not (tmp_path / "out.quarantine").exists()
    table = pq.read_table(out)
    assert table.column("error").to_pylist() == [None, None]
    assert manifest_of(out)["bad_rows"] == 0


def test_overwrite_clears_the_quarantine_it_wrote_and_never_a_foreign_file(tmp_path, tiny_model):
    source, out = quarantined(tmp_path, tiny_model)
    place = tmp_path / "out.quarantine"
    assert os.listdir(place) == ["part-000000.parquet"]
    source.write_bytes(b"id,text\n1,good\n")
    assert_ok(run_score(source, tiny_model, out, "--on-bad-row", "quarantine", "--overwrite"))
    assert os.listdir(place) == []
    # A file batchscore did not write, named as a chunk's quarantine file: never replaced, even with --overwrite.
    (place / "part-000000.parquet").write_bytes(b"someone else's")
    source.write_bytes(CSV)
    result = run_score(source, tiny_model, out, "--on-bad-row", "quarantine", "--max-bad-rows", "10", "--overwrite")
    assert_error(result, 5, "not written by batchscore")
    assert (place / "part-000000.parquet").read_bytes() == b"someone else's"


def test_the_quarantine_may_not_be_inside_the_input_folder(tmp_path, tiny_model):
    folder = tmp_path / "data"
    (folder / "out.quarantine").mkdir(parents=True)
    (folder / "a.csv").write_bytes(CSV)
    # The output inside the input folder is allowed (the input's readers leave it out); its quarantine beside it
    # would be read back as input rows: refused before anything is scored.
    result = run_score(folder, tiny_model, folder / "out", "--on-bad-row", "quarantine")
    assert_error(result, 2, "quarantine")


def test_a_delta_tables_run_publishes_its_quarantine_beside_the_table_with_its_commit(tmp_path, tiny_model):
    pytest.importorskip("deltalake")
    import deltalake
    import pyarrow.dataset as ds

    source = tmp_path / "in.csv"
    source.write_bytes(CSV)
    table = tmp_path / "t"
    args = ("--output-format", "delta", "--on-bad-row", "quarantine", "--max-bad-rows", "10")
    assert_ok(run_score(source, tiny_model, table, *args))
    rows = deltalake.DeltaTable(str(table)).to_pyarrow_table()
    assert sorted(rows.column("id").to_pylist()) == ["1", "3", "4", "6"]
    assert [e for e in rows.column("error").to_pylist() if e] == ["invalid_encoding: invalid UTF-8 in column 'text'"]
    runs = os.listdir(tmp_path / "t.quarantine")
    assert len(runs) == 1  # one folder per commit: runs appending to one table keep theirs apart
    entries = ds.dataset(tmp_path / "t.quarantine" / runs[0], format="parquet").to_table()
    assert sorted(entries.column("input_row").to_pylist()) == [1, 3, 4]
    manifest = json.loads(assert_ok(invoke(["manifest", table, "--output-format", "delta"])).stdout)
    assert manifest["quarantine"] == str(tmp_path / "t.quarantine" / runs[0])
    assert not (table / "_batchscore_staging").exists()
    # A rerun finds its commit: nothing is added to the table or to the quarantine.
    assert "Already in the table" in assert_ok(run_score(source, tiny_model, table, *args)).output
    assert os.listdir(tmp_path / "t.quarantine") == runs
    assert ds.dataset(tmp_path / "t.quarantine", format="parquet").count_rows() == 3


def test_an_input_column_named_error_is_refused(tmp_path, tiny_model):
    source = tmp_path / "in.csv"
    source.write_text("text,error\nok,none\n")
    result = run_score(source, tiny_model, tmp_path / "out", "--on-bad-row", "quarantine")
    assert_error(result, 2, "'error'", "--keep-columns")
    assert_ok(run_score(source, tiny_model, tmp_path / "out2", "--on-bad-row", "quarantine", "--keep-columns", "text"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_record_larger_than_many_blocks_is_read_whole(fmt, tmp_path, tiny_model):
    """A record of megabytes (a quoted CSV field over many lines, a JSON line) is read as one record: the block
    grows until it holds the record, as it does in fail mode."""
    from batchscore.input import lenient_text

    long = "\n".join(f"line {i} of a long document, with a comma" for i in range(60_000))  # ~2.6 MB
    assert len(long) > 20 * lenient_text.BLOCK_BYTES
    if fmt == "csv":
        data = b'id,text\n1,"short"\n2,"' + long.encode() + b'"\n3,three,fields\n4,last\n'
    else:
        rows = [{"id": 1, "text": "short"}, {"id": 2, "text": long}]
        data = b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b"[3]\n" + b'{"id": 4, "text": "last"}\n'
    source = tmp_path / f"in.{fmt}"
    source.write_bytes(data)
    out = tmp_path / "out"
    assert_ok(run_score(source, tiny_model, out, "--on-bad-row", "quarantine", "--max-bad-rows", "1"))
    table = pq.read_table(out)
    assert [str(i) for i in table.column("id").to_pylist()] == ["1", "2", "4"]
    assert table.column("text").to_pylist()[1] == long
    assert manifest_of(out)["bad_rows"] == 1

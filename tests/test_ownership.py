"""Issue 33: one ownership rule for every writer (ownership.py). Each writer — the output, the result cache, the
report page, its PNG folder — is walked against each place it must not be onto, hold or lie inside (the input,
the output, the cache), spelled directly, through a symlink and through '..': refused up front with one `Error:`
line, nothing written. What the rule allows on purpose is run too, so a rule that refuses everything fails."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, assert_ok, file_tree, invoke, manifest_of

NO_MODEL = "/nonexistent/model"  # a check that does not fire would fail at the model load: exit 4, not 2 or 5


@pytest.fixture
def place(tmp_path, monkeypatch):
    """tmp/data/in.csv (the input folder), tmp/out (the output), tmp/cache, and links: tmp/to-out -> out,
    tmp/to-data -> data, tmp/to-cache -> cache."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.csv").write_text("id,text\n1,good film\n2,awful\n3,fine\n", encoding="utf-8")
    for name in ("out", "cache"):
        (tmp_path / name).mkdir()
    for link, target in (("to-out", "out"), ("to-data", "data"), ("to-cache", "cache")):
        os.symlink(tmp_path / target, tmp_path / link)
    # Another job's finished output (a Spark/Hadoop-style folder: data files and _SUCCESS), read whole by its users.
    (tmp_path / "old").mkdir()
    pq.write_table(pa.table({"id": [1], "label": ["POSITIVE"]}), tmp_path / "old" / "part-00000.parquet")
    (tmp_path / "old" / "_SUCCESS").write_bytes(b"")
    return tmp_path


def score_args(*extra):
    return ["score", "data", "--model", NO_MODEL, "--no-progress", *extra]


# Writers at score time, before the model loads: (id, extra options, exit code, message fragments).
SCORE_CASES = [
    # the cache
    ("cache onto the input folder", ["-o", "out/x", "--cache", "data"], 2, "Cache", "overwrite or hold the input"),
    ("cache inside the input", ["-o", "out/x", "--cache", "data/c"], 2, "Cache", "inside the input"),
    ("cache holding the input", ["-o", "out/x", "--cache", "."], 2, "Cache", "overwrite or hold"),
    ("cache via link in the input", ["-o", "out/x", "--cache", "to-data/c"], 2, "inside the input", "resolves to"),
    ("cache via .. in the input", ["-o", "out/x", "--cache", "out/../data/c"], 2, "inside the input"),
    ("cache onto the output", ["-o", "out/x", "--cache", "out/x"], 2, "Cache", "overwrite or hold the output"),
    ("cache inside the output", ["-o", "out/x", "--cache", "out/x/c"], 2, "Cache", "inside the output"),
    ("cache via link in the output", ["-o", "out/x", "--cache", "to-out/x/c"], 2, "inside the output", "resolves"),
    ("cache via .. in the output", ["-o", "out/x", "--cache", "cache/../out/x/c"], 2, "inside the output"),
    ("cache beside a .parquet output", ["-o", "out/x.parquet", "--cache", "out/.x.parquet.parts/c"], 2, "inside"),
    ("cache holding the output", ["-o", "cache/x", "--cache", "cache"], 2, "Cache", "overwrite or hold the output"),
    ("cache onto another output", ["-o", "out/x", "--cache", "old"], 2, "Cache", "inside another output"),
    (
        "cache inside another output",
        ["-o", "out/x", "--cache", "old/c"],
        2,
        "Cache",
        "another output",
        "/old' (it holds _SUCCESS)",
    ),
    # the output
    ("output inside another output", ["-o", "old/x"], 5, "Output", "inside another output", "_SUCCESS"),
    ("output onto the input folder", ["-o", "data"], 5, "Output", "overwrite or hold the input"),
    ("output via link onto the input", ["-o", "to-data"], 5, "Output", "overwrite or hold the input"),
    ("output via .. holding the input", ["-o", "out/.."], 5, "Output", "overwrite or hold the input"),
    ("output inside the cache", ["-o", "to-cache/x", "--cache", "cache"], 2, "Cache", "overwrite or hold the output"),
    # the report page `--report` writes beside the output
    ("page onto the output via link", ["-o", "out/x", "--report"], 2, "Report page", "overwrite or hold the output"),
    ("page onto the input via link", ["-o", "out/y", "--report"], 2, "Report page", "overwrite or hold the input"),
    ("page via link in the cache", ["-o", "out/z", "--cache", "cache", "--report"], 2, "Report page", "the cache"),
]


@pytest.mark.parametrize("case", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_score_refuses_a_writer_in_a_forbidden_place_before_anything(place, case):
    name, extra, code, *fragments = case
    # The page's default path (beside the output) made a link to a place it must not be.
    links = {
        "page onto the output via link": ("out/x", "out/x.report.html"),
        "page onto the input via link": ("data/in.csv", "out/y.report.html"),
        "page via link in the cache": ("cache/r.html", "out/z.report.html"),
    }
    if name in links:
        target, link = links[name]
        (place / "out" / "x").mkdir()
        if not (place / target).exists():
            (place / target).write_text("someone's page")
        os.symlink(place / target, place / link)
    before = file_tree(place)
    assert_error(invoke(score_args(*extra)), code, *fragments)
    assert file_tree(place) == before


@pytest.fixture
def scored(place, tiny_model):
    """A complete output of data/in.csv, scored through a cache, with its report page beside it."""
    assert_ok(
        invoke(["score", "data/in.csv", "--model", tiny_model, "-o", "out/x", "--cache", "cache", "--no-progress"])
    )
    assert manifest_of(place / "out" / "x")["rows"] == 3
    return place


# Writers at report time: the page (-o) and the PNG folder (--png) against the output, the run's input files (from
# its manifest) and the run's cache (from its config).
REPORT_CASES = [
    ("page inside the output", ["-o", "out/x/r.html"], "Report page", "inside the output"),
    ("page via link in the output", ["-o", "to-out/x/r.html"], "inside the output", "resolves to"),
    ("page via .. in the output", ["-o", "cache/../out/x/r.html"], "inside the output"),
    ("page onto the output", ["-o", "out/x"], "Report page", "overwrite or hold the output"),
    ("page onto the input file", ["-o", "data/in.csv"], "Report page", "overwrite or hold the input"),
    ("page via link onto the input", ["-o", "to-data/in.csv"], "overwrite or hold the input"),
    ("page inside the cache", ["-o", "cache/r.html"], "Report page", "inside the cache"),
    ("page via link in the cache", ["-o", "to-cache/r.html"], "inside the cache"),
    ("page inside another output", ["-o", "old/r.html"], "Report page", "inside another output"),
    ("PNGs inside another output", ["--png", "old/charts"], "PNG folder", "inside another output"),
    ("PNGs onto the output", ["--png", "out/x"], "PNG folder", "overwrite or hold the output"),
    ("PNGs inside the output", ["--png", "out/x/charts"], "PNG folder", "inside the output"),
    ("PNGs via link in the output", ["--png", "to-out/x/charts"], "inside the output", "resolves to"),
    ("PNGs inside the cache", ["--png", "cache/charts"], "PNG folder", "inside the cache"),
    ("PNGs via link onto the cache", ["--png", "to-cache"], "PNG folder", "overwrite or hold the cache"),
]


@pytest.mark.parametrize("case", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_report_refuses_a_page_or_pngs_in_a_forbidden_place(scored, case):
    _, extra, *fragments = case
    before = file_tree(scored)
    assert_error(invoke(["report", "out/x", *extra]), 2, *fragments)
    assert file_tree(scored) == before
    assert pq.read_table(str(scored / "out" / "x")).num_rows == 3  # still one table


def test_what_the_rule_allows_is_written(scored):
    """The page inside the input folder (.html is no input format), PNGs in a folder that holds the output
    (`--png .`), and the page beside the output: a rule refusing everything would fail here."""
    assert_ok(invoke(["report", "out/x", "-o", "data/r.html", "--png", "."]))
    assert (scored / "data" / "r.html").stat().st_size > 0
    assert any(name.endswith(".png") for name in os.listdir(scored))
    assert_ok(invoke(["report", "out/x"]))
    assert (scored / "out" / "x.report.html").exists()
    assert pq.read_table(str(scored / "out" / "x")).num_rows == 3


def test_an_output_inside_the_input_folder_stays_allowed(place, tiny_model):
    """The one place the output may be inside the input: its readers leave this job's output out."""
    assert_ok(invoke(["score", "data", "--model", tiny_model, "-o", "data/scored", "--no-progress"]))
    assert manifest_of(place / "data" / "scored")["rows"] == 3


def test_s3_spellings_of_one_prefix_are_one_place(s3_server, s3_bucket, s3_fs, place):
    """s3a:// and a doubled slash name the same keys as s3://: a cache there is inside the output."""
    before = sorted(s3_fs.find(s3_bucket))
    for cache in (f"s3a://{s3_bucket}/out/c", f"s3://{s3_bucket}//out/c", f"s3://{s3_bucket}/out/"):
        line = assert_error(
            invoke(score_args("-o", f"s3://{s3_bucket}/out", "--cache", cache)), 2, "Cache", "the output"
        )
        assert f"s3://{s3_bucket}/out" in line
    assert sorted(s3_fs.find(s3_bucket)) == before


def test_location_relations():
    """The relation ownership reads: same, holds, inside, apart; a single-file output's hidden parts folder is
    part of it; other file systems never meet."""
    import fsspec

    from batchscore.location import Location

    local = fsspec.filesystem("file")
    memory = fsspec.filesystem("memory")
    out = Location(local, "/w/x.parquet", "x.parquet", beside="/w/.x.parquet.parts")
    assert out.relation(Location(local, "/w/x.parquet", "")) == "same"
    assert out.relation(Location(local, "/w/.x.parquet.parts/c", "")) == "holds"
    assert out.relation(Location(local, "/w", "")) == "inside"
    assert out.relation(Location(local, "/w/x.parquet2", "")) is None
    assert out.relation(Location(local, "/w/a/../x.parquet", "")) == "same"
    assert out.relation(Location(memory, "/w/x.parquet", "")) is None

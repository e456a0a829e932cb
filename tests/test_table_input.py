"""A Delta Lake or Apache Iceberg table as INPUT: one pinned version, read file by file, through the CLI.

The tables are made with the real libraries (deltalake's writer; pyiceberg's SQL catalog on a SQLite file),
and every output is checked against scoring the same rows from a Parquet file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, assert_ok, assert_same_table, invoke, manifest_of, run_score

# Checked without importing them: deltalake (a Rust runtime) and pyiceberg load only in the tests that use them,
# never into every other test of the session at collection.
if importlib.util.find_spec("deltalake") is None or importlib.util.find_spec("pyiceberg") is None:
    pytest.skip("the delta and iceberg extras are not installed", allow_module_level=True)

LANGS = ["en", "fr", "de"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Nothing is written to ~: the default Iceberg catalog lives in $BATCHSCORE_HOME."""
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))


def rows(version: int, count: int = 4) -> pa.Table:
    ids = [version * 100 + i for i in range(count)]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "text": [f"review {i}: {'great' if i % 2 else 'awful'} film, version {version}" for i in ids],
            "lang": [LANGS[i % len(LANGS)] for i in ids],
        }
    )


def delta_table(path, versions: int = 3, **options) -> str:
    """A Delta table of `versions` appends (versions 0 .. versions-1), partitioned by lang."""
    from deltalake import write_deltalake

    for version in range(versions):
        write_deltalake(str(path), rows(version), mode="append", partition_by=["lang"], **options)
    return str(path)


def read_out(out) -> pa.Table:
    assert os.path.exists(os.path.join(out, "_SUCCESS"))
    return pq.read_table(str(out))


def assert_like_parquet(out, tmp_path, model, name="same.parquet"):
    """The output equals scoring its own input rows, in its order, from a Parquet file."""
    got = read_out(out)
    source = tmp_path / name
    pq.write_table(got.select(["id", "text", "lang"]), source)
    expected_out = tmp_path / f"{name}.scored"
    assert_ok(run_score(source, model, expected_out))
    assert_same_table(got, read_out(expected_out))
    return got


# --- Delta -----------------------------------------------------------------------------------------------------


def test_delta_latest_every_row_once_as_from_parquet(tiny_model, tmp_path):
    table = delta_table(tmp_path / "reviews")
    out = tmp_path / "out"
    assert_ok(run_score(table, tiny_model, out, "--chunk-rows", "5"))
    got = assert_like_parquet(out, tmp_path, tiny_model)
    assert sorted(got.column("id").to_pylist()) == [v * 100 + i for v in range(3) for i in range(4)]
    # The partition column, as Delta records it (not from the folder names): each row's own value.
    assert got.column("lang").to_pylist() == [LANGS[i % len(LANGS)] for i in got.column("id").to_pylist()]
    run = manifest_of(out)["run"]["input"]
    assert run["delta"] == str(tmp_path / "reviews") and run["version"] == 2
    # One version reads in one order: a second run writes the same rows in the same order.
    again = tmp_path / "again"
    assert_ok(run_score(table, tiny_model, again, "--chunk-rows", "5", "--num-workers", "2"))
    assert read_out(again).equals(got)


def test_delta_input_version_reads_the_older_rows(tiny_model, tmp_path):
    table = delta_table(tmp_path / "reviews")
    out = tmp_path / "out"
    assert_ok(run_score(table, tiny_model, out, "--input-version", "1"))
    got = read_out(out)
    assert sorted(got.column("id").to_pylist()) == [v * 100 + i for v in range(2) for i in range(4)]
    manifest = manifest_of(out)
    assert manifest["run"]["input"]["version"] == 1
    assert "at version 1" in manifest["input"]
    shown = invoke(["manifest", out])
    assert_ok(shown)
    assert '"version": 1' in shown.stdout


def test_delta_resume_reads_the_version_it_started_on(tiny_model, tmp_path):
    from deltalake import write_deltalake

    table = delta_table(tmp_path / "reviews", versions=2)
    out = tmp_path / "out"
    assert_ok(run_score(table, tiny_model, out, "--chunk-rows", "2"))
    whole = read_out(out)
    # An interrupted run: the first two chunks committed, nothing else.
    for name in os.listdir(out):
        if name in ("_SUCCESS", "_manifest.parquet") or name.startswith("part-") and name >= "part-000002":
            os.remove(out / name)
    write_deltalake(table, rows(7), mode="append", partition_by=["lang"])  # the table moves on: version 2

    resumed = assert_ok(run_score(table, tiny_model, out, "--chunk-rows", "2"))
    assert "version 1" in resumed.stderr and "Resuming" in resumed.stderr
    assert read_out(out).equals(whole)
    assert manifest_of(out)["run"]["input"]["version"] == 1

    # Complete, the output stays the run over version 1; --overwrite scores the latest.
    assert_ok(run_score(table, tiny_model, out, "--chunk-rows", "2"))
    assert read_out(out).equals(whole)
    assert_ok(run_score(table, tiny_model, out, "--chunk-rows", "2", "--overwrite"))
    assert read_out(out).num_rows == 12 and manifest_of(out)["run"]["input"]["version"] == 2


def test_delta_missing_version_or_table(tiny_model, tmp_path, outputs):
    table = delta_table(tmp_path / "reviews", versions=2)
    line = assert_error(run_score(table, tiny_model, outputs / "out", "--input-version", "9"), 3, "no version 9")
    assert "latest is 1" in line and "--input-version" in line
    assert not os.listdir(outputs)
    # A folder inside the table would read files the log has removed.
    inside = tmp_path / "reviews" / "lang=en"
    assert_error(run_score(inside, tiny_model, outputs / "out"), 3, "inside the Delta table", "table's folder")
    # --input-version means nothing for files.
    source = tmp_path / "plain.parquet"
    pq.write_table(rows(0), source)
    assert_error(run_score(source, tiny_model, outputs / "out", "--input-version", "1"), 2, "--input-version")


def test_delta_deletion_vectors_enabled_but_none_present_is_read(tiny_model, tmp_path, monkeypatch):
    table = delta_table(tmp_path / "reviews", versions=1, configuration={"delta.enableDeletionVectors": "true"})
    out = tmp_path / "out"
    assert_ok(run_score(table, tiny_model, out))
    assert read_out(out).num_rows == 4
    # Once a file has one, the files alone would bring deleted rows back: refused, naming the fix.
    import batchscore.input.delta as delta

    monkeypatch.setattr(delta, "_files_with_deletion_vectors", lambda t: 1)
    assert_error(run_score(table, tiny_model, tmp_path / "other"), 3, "deletion vectors", "PURGE")


def test_delta_column_mapping_is_refused(tiny_model, tmp_path):
    # Reader version 2 lists no features: deltalake's own pyarrow dataset would read the files' physical names.
    table = delta_table(tmp_path / "mapped", versions=1, configuration={"delta.columnMapping.mode": "name"})
    assert_error(run_score(table, tiny_model, tmp_path / "out"), 3, "columnMapping", "export it")
    assert not (tmp_path / "out").exists()


# --- Iceberg ---------------------------------------------------------------------------------------------------


def iceberg_catalog(tmp_path) -> tuple[str, object]:
    from batchscore.tables.catalog import open_catalog

    uri = f"sqlite:///{tmp_path}/cat.db"
    return uri, open_catalog(uri)


def iceberg_table(catalog, name="shop.reviews", versions=2):
    """An Iceberg table partitioned by lang (identity), one snapshot per append; returns it."""
    catalog.create_namespace_if_not_exists(name.rpartition(".")[0])
    table = catalog.create_table(name, schema=rows(0).schema)
    with table.update_spec() as spec:
        spec.add_identity("lang")
    for version in range(versions):
        table.append(rows(version))
    return table


def test_iceberg_snapshots_pinned_and_as_from_parquet(tiny_model, tmp_path):
    uri, catalog = iceberg_catalog(tmp_path)
    table = iceberg_table(catalog)
    first, current = (s.snapshot_id for s in table.metadata.snapshots)
    out = tmp_path / "out"
    assert_ok(run_score("iceberg:shop.reviews", tiny_model, out, "--catalog", uri, "--chunk-rows", "3"))
    got = assert_like_parquet(out, tmp_path, tiny_model)
    assert sorted(got.column("id").to_pylist()) == [v * 100 + i for v in range(2) for i in range(4)]
    assert got.column("lang").to_pylist() == [LANGS[i % len(LANGS)] for i in got.column("id").to_pylist()]
    recorded = manifest_of(out)["run"]["input"]
    assert recorded["iceberg"] == "shop.reviews" and recorded["snapshot"] == current
    assert recorded["catalog"] == uri

    older = tmp_path / "older"
    assert_ok(run_score("iceberg:shop.reviews", tiny_model, older, "--catalog", uri, "--input-version", first))
    assert sorted(read_out(older).column("id").to_pylist()) == [0, 1, 2, 3]
    assert manifest_of(older)["run"]["input"]["snapshot"] == first


def test_iceberg_resume_after_a_new_snapshot(tiny_model, tmp_path):
    uri, catalog = iceberg_catalog(tmp_path)
    table = iceberg_table(catalog)
    out = tmp_path / "out"
    args = ("--catalog", uri, "--chunk-rows", "3", "--num-workers", "2")
    assert_ok(run_score("iceberg:shop.reviews", tiny_model, out, *args))
    whole = read_out(out)
    for name in ("_SUCCESS", "_manifest.parquet", "part-000002.parquet"):
        os.remove(out / name)
    table.append(rows(5))
    assert_ok(run_score("iceberg:shop.reviews", tiny_model, out, *args))
    assert read_out(out).equals(whole)


def test_iceberg_errors_and_empty_table(tiny_model, tmp_path, outputs):
    uri, catalog = iceberg_catalog(tmp_path)
    iceberg_table(catalog)
    missing = run_score("iceberg:shop.nope", tiny_model, outputs / "out", "--catalog", uri)
    assert_error(missing, 3, "No Iceberg table 'shop.nope'", "--catalog")
    snapshot = run_score("iceberg:shop.reviews", tiny_model, outputs / "out", "--catalog", uri, "--input-version", 5)
    assert_error(snapshot, 3, "no snapshot 5", "--input-version")
    assert_error(run_score("iceberg:reviews", tiny_model, outputs / "out", "--catalog", uri), 3, "NAMESPACE.TABLE")
    assert not os.listdir(outputs)

    # No snapshot yet: no rows, the table's columns. The default catalog is $BATCHSCORE_HOME's.
    from batchscore.tables.catalog import open_catalog

    default = open_catalog(None)
    default.create_namespace("shop")
    default.create_table("shop.empty", schema=rows(0).schema)
    out = tmp_path / "empty"
    result = assert_ok(run_score("iceberg:shop.empty", tiny_model, out))
    assert "no rows" in result.stderr
    got = read_out(out)
    assert got.num_rows == 0 and got.column_names[:3] == ["id", "text", "lang"]
    assert manifest_of(out)["run"]["input"]["snapshot"] is None


# --- the optional libraries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("module, spec, extra", [("deltalake", "table", "delta"), ("pyiceberg", "iceberg", "iceberg")])
def test_missing_library_exits_2_naming_the_extra(tiny_model, tmp_path, module, spec, extra):
    if spec == "table":
        spec = delta_table(tmp_path / "reviews", versions=1)
    else:
        spec = "iceberg:shop.reviews"
    code = (
        f"import sys; sys.modules[{module!r}] = None; from batchscore.cli import main; "
        "main(sys.argv[1:], prog_name='batchscore')"
    )
    args = ["score", spec, "--model", tiny_model, "-o", str(tmp_path / "out"), "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert f"batchscore[{extra}]" in lines[0]
    assert not (tmp_path / "out").exists()


def test_delta_on_s3_read_with_the_environments_settings(tiny_model, tmp_path, s3_server, s3_bucket):
    """delta-rs finds the store from AWS_ENDPOINT_URL, AWS_ALLOW_HTTP and the keys in the environment."""
    table = delta_table(f"s3://{s3_bucket}/reviews", versions=2, storage_options={"AWS_S3_ALLOW_UNSAFE_RENAME": "true"})
    out = tmp_path / "out"
    # Workers read the data files with fsspec's s3fs, each with its own, never through delta-rs.
    assert_ok(run_score(table, tiny_model, out, "--num-workers", "2", "--chunk-rows", "3"))
    got = assert_like_parquet(out, tmp_path, tiny_model)
    assert sorted(got.column("id").to_pylist()) == [v * 100 + i for v in range(2) for i in range(4)]
    assert manifest_of(out)["run"]["input"]["delta"] == f"s3://{s3_bucket}/reviews"


def test_delta_resume_of_a_version_cleaned_up_since(tiny_model, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    table = delta_table(tmp_path / "reviews", versions=2)
    out = tmp_path / "out"
    assert_ok(run_score(table, tiny_model, out, "--chunk-rows", "2"))
    for name in ("_SUCCESS", "_manifest.parquet", "part-000003.parquet"):
        os.remove(out / name)
    write_deltalake(table, rows(7), mode="append", partition_by=["lang"])
    DeltaTable(table).create_checkpoint()  # version 2's checkpoint; then the log of versions 0 and 1 goes
    for version in (0, 1):
        os.remove(os.path.join(table, "_delta_log", f"{version:020d}.json"))
    line = assert_error(run_score(table, tiny_model, out, "--chunk-rows", "2"), 3, "earlier run over version 1")
    assert "--overwrite" in line
    assert_ok(run_score(table, tiny_model, out, "--chunk-rows", "2", "--overwrite"))
    assert read_out(out).num_rows == 12


def test_a_table_into_a_table_resumes_the_version_it_staged(tiny_model, tmp_path):
    """A table output's staged run, stopped (one shard of two done), then the input table moved on: the rerun
    reads the version it staged from, finishes and commits it; the next run reads the latest."""
    from deltalake import DeltaTable, write_deltalake

    source = delta_table(tmp_path / "reviews", versions=2)
    scores = tmp_path / "scores"
    args = ["--chunk-rows", "2", "--output-format", "delta"]
    assert_ok(run_score(source, tiny_model, scores, *args, "--num-shards", "2", "--shard-index", "0"))
    write_deltalake(source, rows(7), mode="append", partition_by=["lang"])  # the input moves on: version 2
    resumed = assert_ok(run_score(source, tiny_model, scores, *args))
    assert "version 1" in resumed.stderr and "Resuming" in resumed.stderr
    table = DeltaTable(str(scores))
    assert table.version() == 0 and table.to_pyarrow_table().num_rows == 8  # input versions 0 and 1: 4 rows each
    latest = assert_ok(run_score(source, tiny_model, scores, *args))  # nothing staged: the latest, version 2
    assert "(delta version 1, append)" in latest.stderr
    assert DeltaTable(str(scores)).to_pyarrow_table().num_rows == 8 + 12

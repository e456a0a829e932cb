"""The test infrastructure for table outputs works: a real PostgreSQL for Iceberg SQL catalogs (tests/postgres.py),
and the read-back helpers of tests/table_readers.py on Delta and Iceberg tables written here directly with
deltalake / pyiceberg, on local disk and on the moto S3 server (tests/stores.py). The helpers' own checks: in the
slow suite (make test-slow); the table tests that use them run every time."""

from __future__ import annotations

import importlib.util
import threading
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from postgres import with_driver
from table_readers import (
    CATALOG_NAME,
    DELTA_READERS,
    ICEBERG_READERS,
    S3Config,
    assert_all_readers_agree,
    duckdb_connect,
    duckdb_extension,
    duckdb_mode,
    normalise,
    read_delta,
    read_iceberg,
)

pytestmark = pytest.mark.slow

if any(importlib.util.find_spec(m) is None for m in ("deltalake", "pyiceberg", "polars", "duckdb")):
    pytest.skip("the delta and iceberg extras (and polars, duckdb) are not installed", allow_module_level=True)


def rows(ids, label="x") -> pa.Table:
    """A batch with the column types batchscore writes (and a few more to stress the readers)."""
    n = len(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "label": pa.array([f"{label}{i}" for i in ids], pa.string()),
            "score": pa.array([None if i % 3 == 0 else i / 10 for i in ids], pa.float64()),
            "flag": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
            "ts": pa.array([datetime(2026, 1, 1, i % 24, tzinfo=timezone.utc) for i in ids], pa.timestamp("us", "UTC")),
            "tags": pa.array([[label, str(i)] for i in ids], pa.list_(pa.string())),
        }
    ).slice(0, n)


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_server_gives_fresh_databases(postgres_server):
    import sqlalchemy

    assert postgres_server.uri.startswith("postgresql://postgres@127.0.0.1:")
    first = postgres_server.new_database("Some Test[1]")
    second = postgres_server.new_database("Some Test[1]")
    assert first != second and first.rsplit("/", 1)[1] == "some_test_1"
    engine = sqlalchemy.create_engine(with_driver(second))
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select current_database()")).scalar() == second.rsplit("/", 1)[1]
            assert conn.execute(sqlalchemy.text("show listen_addresses")).scalar() == "127.0.0.1"
    finally:
        engine.dispose()


def test_pyiceberg_sql_catalog_on_postgres(postgres_db, tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    postgres_db = with_driver(postgres_db)
    catalog = SqlCatalog(CATALOG_NAME, uri=postgres_db, warehouse=f"file://{tmp_path / 'warehouse'}")
    catalog.create_namespace("analytics")
    table = catalog.create_table("analytics.scores", schema=rows([1]).schema)
    table.append(rows([1, 2, 3]))
    assert ("analytics", "scores") in catalog.list_tables("analytics")
    again = SqlCatalog(CATALOG_NAME, uri=postgres_db).load_table("analytics.scores")  # a new connection
    got = again.scan().to_arrow().sort_by("id")
    assert normalise(got).equals(normalise(rows([1, 2, 3])))


# --------------------------------------------------------------------------- Delta, local


def test_delta_readers_local_versions_and_evolution(tmp_path):
    from deltalake import write_deltalake

    path = str(tmp_path / "scores")
    write_deltalake(path, rows([3, 1, 2]))  # v0
    write_deltalake(path, rows([5, 4], "y"), mode="append")  # v1
    wider = rows([6], "z").append_column("extra", pa.array(["e"], pa.string()))
    write_deltalake(path, wider, mode="append", schema_mode="merge")  # v2: a column more
    from deltalake import DeltaTable

    assert DeltaTable(path).version() == 2

    latest = assert_all_readers_agree(path, "id")
    assert latest.column("id").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert latest.column("extra").to_pylist() == [None] * 5 + ["e"]
    assert_all_readers_agree(path, "id", version=0, expected=rows([1, 2, 3]))
    assert_all_readers_agree(path, "id", version=1, expected=pa.concat_tables([rows([1, 2, 3]), rows([4, 5], "y")]))
    for reader in DELTA_READERS:
        assert read_delta(path, "id", 0, reader=reader).num_rows == 3


def test_delta_readers_partitioned_with_awkward_values(tmp_path):
    """delta-rs percent-encodes partition folders (p=a%20b): values must come from the log, not the path."""
    from deltalake import write_deltalake

    path = str(tmp_path / "parts")
    data = rows([1, 2, 3, 4]).append_column("part", pa.array(["a b", "c/d", None, "e'f"], pa.string()))
    write_deltalake(path, data, partition_by=["part"])
    assert_all_readers_agree(path, "id", expected=data)


# --------------------------------------------------------------------------- Iceberg, local


def test_iceberg_readers_local_snapshots_and_rename(tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = SqlCatalog(CATALOG_NAME, uri=uri, warehouse=f"file://{tmp_path / 'warehouse'}")
    catalog.create_namespace("ns")
    table = catalog.create_table("ns.scores", schema=rows([1]).schema)
    table.append(rows([2, 1]))
    first = table.current_snapshot().snapshot_id
    table.append(rows([3, 4], "y"))
    with table.update_schema() as update:  # renames are by field id: read_parquet must map them
        update.rename_column("label", "name")
    table.append(rows([5], "z").rename_columns(["id", "name", "score", "flag", "ts", "tags"]))

    latest = assert_all_readers_agree(uri, "id", "ns.scores")
    assert latest.column_names == ["id", "name", "score", "flag", "ts", "tags"]
    assert latest.column("name").to_pylist() == ["x1", "x2", "y3", "y4", "z5"]
    assert_all_readers_agree(uri, "id", "ns.scores", snapshot_id=first, expected=rows([1, 2]))
    for reader in ICEBERG_READERS:  # a Catalog object works as well as its URI
        assert read_iceberg(catalog, "ns.scores", "id", first, reader=reader).num_rows == 2


def test_iceberg_readers_partitioned_on_postgres(postgres_db, tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    postgres_db = with_driver(postgres_db)
    catalog = SqlCatalog(CATALOG_NAME, uri=postgres_db, warehouse=f"file://{tmp_path / 'wh'}")
    catalog.create_namespace("ns")
    data = rows([1, 2, 3]).append_column("part", pa.array(["a b", "c/d", None], pa.string()))
    table = catalog.create_table("ns.parts", schema=data.schema)
    with table.update_spec() as spec:
        spec.add_identity("part")
    assert len(table.spec().fields) == 1
    table.append(data)
    assert_all_readers_agree(postgres_db, "id", "ns.parts", expected=data)


# --------------------------------------------------------------------------- S3 (moto)


def test_delta_readers_on_s3(s3_server, s3_bucket):
    from deltalake import write_deltalake

    options = S3Config.from_server(s3_server).delta_options()
    url = f"s3://{s3_bucket}/tables/scores"
    write_deltalake(url, rows([2, 1]), storage_options=options)
    write_deltalake(url, rows([3], "y"), mode="append", storage_options=options)
    assert_all_readers_agree(
        url, "id", storage_options=options, expected=pa.concat_tables([rows([1, 2]), rows([3], "y")])
    )
    assert_all_readers_agree(url, "id", version=0, expected=rows([1, 2]))  # options from the environment


def test_delta_concurrent_appends_on_s3_lose_nothing(s3_server, s3_bucket):
    """delta-rs 1.x commits with `If-None-Match: *` (no AWS_S3_ALLOW_UNSAFE_RENAME, no DynamoDB): when writers
    race for a version, moto answers 412 to all but one, and the others retry at the next version."""
    from deltalake import DeltaTable, write_deltalake

    options = S3Config.from_server(s3_server).delta_options()
    assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in options
    url = f"s3://{s3_bucket}/race"
    write_deltalake(url, rows([0]), storage_options=options)
    errors: list[BaseException] = []

    def writer(base: int) -> None:
        for i in range(3):
            try:
                write_deltalake(url, rows([base + i]), mode="append", storage_options=options)
            except BaseException as exc:  # noqa: B036 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(100 * t,)) for t in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert DeltaTable(url, storage_options=options).version() == 12
    want = [0] + [100 * t + i for t in range(1, 5) for i in range(3)]
    assert read_delta(url, "id", storage_options=options).column("id").to_pylist() == sorted(want)


def test_iceberg_readers_on_s3_with_postgres_catalog(s3_server, s3_bucket, postgres_db):
    from pyiceberg.catalog.sql import SqlCatalog

    postgres_db = with_driver(postgres_db)
    properties = S3Config.from_server(s3_server).iceberg_properties()
    catalog = SqlCatalog(CATALOG_NAME, uri=postgres_db, warehouse=f"s3://{s3_bucket}/warehouse", **properties)
    catalog.create_namespace("ns")
    table = catalog.create_table("ns.scores", schema=rows([1]).schema)
    table.append(rows([2, 1]))
    first = table.current_snapshot().snapshot_id
    table.append(rows([3], "y"))
    assert table.metadata_location.startswith(f"s3://{s3_bucket}/warehouse/")
    both = pa.concat_tables([rows([1, 2]), rows([3], "y")])
    assert_all_readers_agree(postgres_db, "id", "ns.scores", properties=properties, expected=both)
    assert_all_readers_agree(postgres_db, "id", "ns.scores", snapshot_id=first, expected=rows([1, 2]))


# --------------------------------------------------------------------------- DuckDB


def test_duckdb_reader_mode_is_known_and_offline():
    """Which DuckDB path the readers take here. No PyPI package ships delta/iceberg for this DuckDB version
    (they stop at 1.5.5), so unless one appears the readers use read_parquet over the listed data files."""
    import duckdb

    con = duckdb_connect()
    assert con.execute("select current_setting('autoinstall_known_extensions')").fetchone()[0] is False
    for kind in ("delta", "iceberg"):
        mode = duckdb_mode(kind)
        assert mode in (f"{kind}_scan", "read_parquet")
        assert (mode != "read_parquet") == (duckdb_extension(con, kind) is not None), duckdb.__version__

"""Delta Lake and Iceberg outputs on real stores: Iceberg with a PostgreSQL catalog (tests/postgres.py), Delta and
Iceberg warehouses on the moto S3 server (tests/stores.py). Every table is read back by every reader
(deltalake / pyiceberg, polars, DuckDB: tests/table_readers.py) and compared with a Parquet-folder run of the same
input. The local/SQLite cases are in test_table_output.py; DuckDB's own delta and iceberg extensions (which exist
only for DuckDB 1.5.5) read tables in a side virtualenv in the slow test at the end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_ok, assert_same_table, invoke, run_score
from postgres import with_driver
from table_readers import S3Config, assert_all_readers_agree, normalise, read_delta, read_iceberg
from test_jobs import INSTALL_TIMEOUT, side_venv
from test_table_output import KILLER, by_id, write_corpus

# Checked without importing them: deltalake (a Rust runtime) and pyiceberg load only in the tests that use them,
# never into every other test of the session at collection.
if importlib.util.find_spec("deltalake") is None or importlib.util.find_spec("pyiceberg") is None:
    pytest.skip("the delta and iceberg extras are not installed", allow_module_level=True)

ROWS, CHUNK = 40, 10
TABLE = "ns.scores"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A BATCHSCORE_HOME of the test's own (a PostgreSQL catalog's default warehouse is in it); subprocesses
    inherit it through os.environ."""
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "reviews.parquet", range(ROWS))


def parquet_run(path, model, out, *extra) -> pa.Table:
    """The rows a Parquet-folder run of `path` writes: what a table run of the same input must hold."""
    assert_ok(run_score(path, model, out, "--chunk-rows", CHUNK, *extra))
    return pq.read_table(out).sort_by("id").replace_schema_metadata(None)


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, tmp_path_factory):
    return parquet_run(corpus, tiny_model, tmp_path_factory.mktemp("reference") / "out")


@pytest.fixture(scope="module")
def nights(tiny_model, tmp_path_factory):
    """Two nights for a merge: ids 0-19, then ids 15-24 with new texts; and what the table must hold after both
    (ids 0-14 from night one, 15-24 from night two), from Parquet-folder runs of each."""
    folder = tmp_path_factory.mktemp("nights")
    one = write_corpus(folder / "night1.parquet", range(20))
    two = write_corpus(folder / "night2.parquet", range(15, 25), tag="changed")
    ref_one = parquet_run(one, tiny_model, folder / "ref1")
    ref_two = parquet_run(two, tiny_model, folder / "ref2")
    merged = pa.concat_tables([ref_one.slice(0, 15), ref_two])
    return one, two, merged


def same_rows(got: pa.Table, expected: pa.Table) -> None:
    """`got` (as the readers return it) holds `expected`'s rows: labels equal, scores within SCORE_TOLERANCE."""
    assert_same_table(by_id(got, expected), expected)


def score(path, model, target, *extra):
    return assert_ok(run_score(path, model, target, "--chunk-rows", CHUNK, *extra))


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[str, str]]:
    outs: list = [None] * len(procs)

    def wait(k):
        outs[k] = procs[k].communicate(timeout=timeout)

    threads = [threading.Thread(target=wait, args=(k,)) for k in range(len(procs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


# --------------------------------------------------------------------------- Iceberg, PostgreSQL catalog


class Iceberg:
    """An Iceberg table `ns.scores` in a SQL catalog `uri` (as batchscore's --catalog takes it)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.args = ["--output-format", "iceberg", "--catalog", uri]

    @property
    def reader_uri(self) -> str:
        """The catalog URI for pyiceberg's SqlCatalog: no ?warehouse=, a PostgreSQL driver named."""
        return with_driver(self.uri.split("?", 1)[0])

    def table(self, name: str = "scores"):
        from pyiceberg.catalog.sql import SqlCatalog

        s3 = S3Config.from_env()
        props = s3.iceberg_properties() if s3 else {}
        return SqlCatalog("batchscore", uri=self.reader_uri, **props).load_table(("ns", name))

    def commits(self) -> list:
        """Snapshots that carry batchscore's commit id, oldest first (an overwrite's delete snapshot too)."""
        return [s for s in self.table().snapshots() if (s.summary or {}).get("batchscore.commit")]

    def commit_ids(self) -> set[str]:
        return {s.summary["batchscore.commit"] for s in self.commits()}

    def agree(self, **kwargs) -> pa.Table:
        return assert_all_readers_agree(self.reader_uri, "id", TABLE, **kwargs)


@pytest.fixture
def pg_iceberg(postgres_db):
    return Iceberg(postgres_db)


def test_postgres_catalog_append_rerun_then_overwrite_keeps_the_old_snapshot(
    pg_iceberg, corpus, tiny_model, reference, tmp_path
):
    first = score(corpus, tiny_model, TABLE, *pg_iceberg.args)
    assert "iceberg snapshot" in first.stderr
    same_rows(pg_iceberg.agree(), reference)
    assert len(pg_iceberg.commits()) == 1
    location = pg_iceberg.table().location()
    assert location.startswith("file://" + str(tmp_path / "home" / "iceberg" / "warehouse")), location

    again = score(corpus, tiny_model, TABLE, *pg_iceberg.args)
    assert "Already in the table" in again.stderr
    assert len(pg_iceberg.commits()) == 1
    old = pg_iceberg.table().current_snapshot().snapshot_id

    night2 = write_corpus(tmp_path / "night2.parquet", range(100, 108))
    score(night2, tiny_model, TABLE, "--table-mode", "overwrite", *pg_iceberg.args)
    now = pg_iceberg.agree()
    assert now.column("id").to_pylist() == list(range(100, 108))
    same_rows(now, parquet_run(night2, tiny_model, tmp_path / "ref"))
    same_rows(pg_iceberg.agree(snapshot_id=old), reference)  # time travel: the appended rows, unchanged
    assert len(pg_iceberg.commit_ids()) == 2
    staging = Path(location.removeprefix("file://")) / "_batchscore_staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_postgres_catalog_merge_changes_only_the_matching_ids(pg_iceberg, nights, tiny_model):
    one, two, merged = nights
    merge = ["--table-mode", "merge", "--id-column", "id"]
    score(one, tiny_model, TABLE, *merge, *pg_iceberg.args)  # a merge into no table: its first append
    was = pg_iceberg.agree()
    before = pg_iceberg.table().current_snapshot().snapshot_id
    score(two, tiny_model, TABLE, *merge, *pg_iceberg.args)
    now = pg_iceberg.agree()
    assert now.column("id").to_pylist() == list(range(25))
    assert now.slice(0, 15).equals(was.slice(0, 15))  # not rescored, not rewritten: bit for bit as before
    same_rows(now, merged)
    assert pg_iceberg.agree(snapshot_id=before).equals(was)
    assert len(pg_iceberg.commit_ids()) == 2


def test_postgres_catalog_a_second_model_adds_columns(
    pg_iceberg, corpus, tiny_model, three_label_model, reference, tmp_path
):
    more = write_corpus(tmp_path / "more.parquet", range(ROWS, ROWS + 6))
    score(corpus, tiny_model, TABLE, *pg_iceberg.args)
    two_models = ["--model", tiny_model, "--result-prefix", "", "--model", three_label_model, "--result-prefix"]
    args = ["score", more, *two_models, "topic_", "-o", TABLE, "--no-progress", "--chunk-rows", CHUNK]
    assert_ok(invoke([*args, *pg_iceberg.args]))
    table = pg_iceberg.agree()
    assert {"topic_label", "topic_score"} <= set(table.column_names)
    assert table.num_rows == ROWS + 6
    assert table.slice(0, ROWS).column("topic_label").null_count == ROWS  # older rows read the new columns null
    assert table.slice(ROWS).column("topic_label").null_count == 0
    same_rows(table.slice(0, ROWS), reference)  # the first run's rows, as they were
    assert set(table.slice(ROWS).column("topic_label").to_pylist()) <= {"negative", "neutral", "positive"}
    prefixes = ["--result-prefix", "", "--model", three_label_model, "--result-prefix", "topic_"]
    expected = parquet_run(more, tiny_model, tmp_path / "ref", *prefixes)
    same_rows(table.slice(ROWS), expected)
    assert len(pg_iceberg.commits()) == 2


def test_postgres_catalog_two_appenders_at_once_both_land_once(pg_iceberg, tiny_model, tmp_path):
    """Both open a fresh catalog, make the namespace and the table if they are not there, then append; each run's
    rows land once (the races of those first steps, made deterministic: the two tests below)."""
    inputs = [write_corpus(tmp_path / f"in{k}.parquet", range(k * 1000, k * 1000 + 20)) for k in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchscore", "score", path, "--model", tiny_model, "-o", TABLE, "--no-progress"]
            + pg_iceberg.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in inputs
    ]
    for proc, (_, err) in zip(procs, wait_all(procs)):
        assert proc.returncode == 0, err
    ids = pg_iceberg.agree().column("id").to_pylist()
    assert ids == list(range(20)) + list(range(1000, 1020))
    assert len(pg_iceberg.commits()) == 2


def test_opening_a_fresh_postgresql_catalog_while_another_process_makes_its_tables(postgres_db):
    """What two first runs into an empty PostgreSQL database hit now and then: the other process's CREATE TABLE of
    the catalog's tables is not committed yet when this one looks, so this one creates them too, waits on the other's
    lock and fails when it commits. Made deterministic here: the other process is a transaction held open."""
    import sqlalchemy
    from pyiceberg.catalog.sql import SqlCatalogBaseTable

    from batchscore.tables.catalog import open_catalog

    engine = sqlalchemy.create_engine(with_driver(postgres_db))
    opened: list = []
    with engine.connect() as other:
        SqlCatalogBaseTable.metadata.create_all(other)  # in the other's transaction, not committed yet

        def open_it():
            try:
                opened.append(open_catalog(postgres_db))
            except Exception as exc:
                opened.append(exc)

        thread = threading.Thread(target=open_it)
        thread.start()
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        deadline = time.monotonic() + 20
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watch:  # fresh statistics
            while not opened and time.monotonic() < deadline:  # until open_catalog waits on the other's lock
                if watch.execute(sqlalchemy.text(waiting)).scalar():
                    break
                time.sleep(0.05)
        other.commit()
        thread.join(timeout=60)
    engine.dispose()
    assert len(opened) == 1 and not isinstance(opened[0], Exception), opened


def test_a_namespace_another_run_makes_at_the_same_moment(pg_iceberg, corpus, tiny_model, monkeypatch):
    """The other half of two first runs at once: both find no namespace `ns`, the other run inserts it first. Made
    deterministic: this run's check is answered "none" after the other's row is in."""
    from pyiceberg.catalog.sql import SqlCatalog

    create = SqlCatalog.create_namespace

    def racing(self, namespace, properties=None):
        create(self, namespace, properties or {})  # the other run, a moment earlier
        seen = []

        def saw_none(name):  # what this run's own check saw, once; asked again, the catalog tells the truth
            seen.append(name)
            return False if len(seen) == 1 else SqlCatalog.namespace_exists(self, name)

        monkeypatch.setattr(self, "namespace_exists", saw_none, raising=False)
        return create(self, namespace, properties or {})

    monkeypatch.setattr(SqlCatalog, "create_namespace", racing)
    result = run_score(corpus, tiny_model, TABLE, "--chunk-rows", CHUNK, *pg_iceberg.args)
    assert result.exit_code == 0, result.output
    assert pg_iceberg.agree().num_rows == ROWS


# --------------------------------------------------------------------------- Delta on S3


class DeltaS3:
    def __init__(self, server, bucket: str, fs):
        self.uri = f"s3://{bucket}/tables/scores"
        self.key = f"{bucket}/tables/scores"
        self.options = S3Config.from_server(server).delta_options()
        self.fs = fs
        self.args = ["--output-format", "delta"]

    def commits(self) -> list:
        from deltalake import DeltaTable

        history = DeltaTable(self.uri, storage_options=self.options).history()
        return [h for h in reversed(history) if "batchscore.commit" in h]

    def agree(self, **kwargs) -> pa.Table:
        return assert_all_readers_agree(self.uri, "id", storage_options=self.options, **kwargs)

    def staged(self) -> list[str]:
        """Objects left under the table's staging folder."""
        return self.fs.find(f"{self.key}/_batchscore_staging")

    def log(self) -> list[str]:
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.find(f"{self.key}/_delta_log"))


@pytest.fixture
def delta_s3(s3_server, s3_bucket, s3_fs):
    return DeltaS3(s3_server, s3_bucket, s3_fs)


def test_delta_on_s3_append_then_a_rerun_commits_nothing(delta_s3, corpus, tiny_model, reference):
    first = score(corpus, tiny_model, delta_s3.uri, *delta_s3.args)
    assert "delta version 0" in first.stderr
    same_rows(delta_s3.agree(), reference)
    assert delta_s3.staged() == []
    again = score(corpus, tiny_model, delta_s3.uri, *delta_s3.args)
    assert "Already in the table" in again.stderr
    assert len(delta_s3.commits()) == 1
    assert [n for n in delta_s3.log() if n.endswith(".json")] == ["00000000000000000000.json"]
    assert delta_s3.staged() == []


def test_delta_on_s3_merge_changes_only_the_matching_ids(delta_s3, nights, tiny_model):
    one, two, merged = nights
    merge = ["--table-mode", "merge", "--id-column", "id"]
    score(one, tiny_model, delta_s3.uri, *merge, *delta_s3.args)
    was = delta_s3.agree()
    score(two, tiny_model, delta_s3.uri, *merge, *delta_s3.args)
    now = delta_s3.agree()
    assert now.column("id").to_pylist() == list(range(25))
    assert now.slice(0, 15).equals(was.slice(0, 15))
    same_rows(now, merged)
    assert delta_s3.agree(version=0).equals(was)
    assert [c["version"] for c in delta_s3.commits()] == [0, 1]
    assert delta_s3.staged() == []


def test_delta_on_s3_four_shards_then_finalize_make_one_commit(delta_s3, corpus, tiny_model, reference):
    for index in range(4):
        shard = ["--num-shards", 4, "--shard-index", index]
        result = score(corpus, tiny_model, delta_s3.uri, *shard, *delta_s3.args)
        assert "batchscore finalize" in result.stderr
    assert delta_s3.log() == []  # nothing committed before finalize
    assert delta_s3.staged() != []
    finalize = ["finalize", delta_s3.uri, "--output-format", "delta"]
    assert "Finalized" in assert_ok(invoke(finalize)).stderr
    assert len(delta_s3.commits()) == 1
    same_rows(delta_s3.agree(), reference)
    assert delta_s3.staged() == []
    again = assert_ok(invoke(finalize))
    assert "Nothing to finalize" in again.stderr and len(delta_s3.commits()) == 1


def test_delta_on_s3_sigkill_before_the_commit_then_a_rerun_leaves_every_row_once(
    delta_s3, s3_server, corpus, tiny_model, reference
):
    args = ["score", corpus, "--model", tiny_model, "-o", delta_s3.uri, "--no-progress", "--chunk-rows", CHUNK]
    args += delta_s3.args
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=s3_server.subprocess_env(KILL_AT="before-commit"),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert delta_s3.log() == []  # killed before the commit: no table yet
    assert delta_s3.staged() != []  # every chunk staged
    rerun = assert_ok(invoke(args))
    assert len(delta_s3.commits()) == 1
    same_rows(delta_s3.agree(), reference)
    assert delta_s3.staged() == []
    assert "nothing to do" not in rerun.stderr and "(delta version 0, append)" in rerun.stderr, rerun.stderr


# --------------------------------------------------------------------------- Iceberg, warehouse on S3


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_iceberg_warehouse_on_s3_append_then_a_rerun_commits_nothing(
    kind, request, s3_server, s3_bucket, s3_fs, corpus, tiny_model, reference, tmp_path
):
    warehouse = f"s3://{s3_bucket}/wh"
    if kind == "sqlite":
        uri = f"sqlite:///{tmp_path}/cat.db?warehouse={warehouse}"
    else:
        uri = request.getfixturevalue("postgres_db") + f"?warehouse={warehouse}"
    ice = Iceberg(uri)
    first = score(corpus, tiny_model, TABLE, *ice.args)
    assert "iceberg snapshot" in first.stderr
    table = ice.table()
    assert table.location() == f"{warehouse}/ns/scores"
    assert table.metadata_location.startswith(f"{warehouse}/ns/scores/metadata/")
    data = s3_fs.find(f"{s3_bucket}/wh/ns/scores/data")
    assert data and all(p.endswith(".parquet") for p in data)
    same_rows(ice.agree(), reference)
    assert s3_fs.find(f"{s3_bucket}/wh/ns/scores/_batchscore_staging") == []
    again = score(corpus, tiny_model, TABLE, *ice.args)
    assert "Already in the table" in again.stderr
    assert len(ice.commits()) == 1 and ice.agree().num_rows == ROWS


def test_an_s3_warehouse_takes_the_endpoint_and_region_from_the_environment(monkeypatch):
    """pyiceberg's S3 FileIO reads neither AWS_ENDPOINT_URL nor AWS_REGION (without a region it asks AWS where the
    bucket is): batchscore passes them as s3.endpoint / s3.region for an s3:// warehouse, and only for one."""
    from batchscore.tables.catalog import catalog_properties

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    _, props = catalog_properties("sqlite:////tmp/c.db?warehouse=s3://bucket/wh")
    assert props["warehouse"] == "s3://bucket/wh"
    assert props["s3.endpoint"] == "http://127.0.0.1:9" and props["s3.region"] == "eu-west-3"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10")
    _, props = catalog_properties("postgresql://u@h:5432/db?warehouse=s3://bucket/wh")
    assert props["s3.endpoint"] == "http://127.0.0.1:10"
    _, props = catalog_properties("sqlite:////tmp/c.db")  # a local warehouse: no S3 properties
    assert not any(k.startswith("s3.") for k in props)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    _, props = catalog_properties("sqlite:////tmp/c.db?warehouse=s3://bucket/wh")  # real AWS: nothing added
    assert not any(k.startswith("s3.") for k in props)


# --------------------------------------------------------------------------- DuckDB's own extensions (slow)

# DuckDB's delta and iceberg extensions on PyPI (one package each, the extension file inside) stop at DuckDB 1.5.5,
# and DuckDB loads only a build for its own version: a side virtualenv holds DuckDB 1.5.5 and both. The iceberg
# extension loads avro when it starts (and would download it): avro's package too, loaded first.
DUCKDB_EXTENSIONS = ["duckdb==1.5.5"] + [f"duckdb-extension-{name}==1.5.5" for name in ("delta", "iceberg", "avro")]


DUCKDB_SCAN = """
import importlib.util, json, sys
from pathlib import Path
import duckdb

extensions, scan, location, out = sys.argv[1:]
con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
con.execute("SET TimeZone = 'UTC'")
paths = []
for extension in extensions.split(","):
    spec = importlib.util.find_spec(f"duckdb_extension_{extension}")
    files = [Path(f) / "extensions" / f"v{duckdb.__version__}" / f"{extension}.duckdb_extension"
             for f in spec.submodule_search_locations]
    paths.append(next(str(f) for f in files if f.is_file()))
    con.execute("LOAD '" + paths[-1].replace("'", "''") + "'")
loaded = con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()
quoted = location.replace("'", "''")
con.execute(f"COPY (SELECT * FROM {scan}('{quoted}')) TO '{out}' (FORMAT parquet)")
print(json.dumps({"duckdb": duckdb.__version__, "files": paths, "loaded": sorted(r[0] for r in loaded)}))
"""


def duckdb_scan(bin_dir: Path, extensions: list[str], scan: str, location: str, out: Path) -> pa.Table:
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", DUCKDB_SCAN, ",".join(extensions), scan, location, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["duckdb"] == "1.5.5" and set(extensions) <= set(facts["loaded"]), facts
    return pq.read_table(out)


def same_as(got: pa.Table, want: pa.Table) -> None:
    """What DuckDB read equals what deltalake / pyiceberg read (both sorted by id, types normalised)."""
    assert set(got.column_names) == set(want.column_names), (got.column_names, want.column_names)
    got = normalise(got.sort_by("id"), want.column_names)
    if got.schema != want.schema:
        got = got.cast(want.schema)
    assert got.equals(want), (got.slice(0, 3).to_pylist(), want.slice(0, 3).to_pylist())


@pytest.mark.slow
def test_duckdb_delta_and_iceberg_extensions_read_batchscores_tables(corpus, tiny_model, three_label_model, tmp_path):
    """DuckDB 1.5.5's own delta_scan and iceberg_scan, loaded offline from the PyPI packages' files, read a Delta
    table and an Iceberg table (local warehouse) that batchscore wrote in two commits (the second adds a model's
    columns), as deltalake and pyiceberg read them."""
    bin_dir, _ = side_venv("duckdb-extensions", DUCKDB_EXTENSIONS, timeout=INSTALL_TIMEOUT)
    more = write_corpus(tmp_path / "more.parquet", range(ROWS, ROWS + 6))
    second = ["--model", three_label_model, "--result-prefix", "", "--result-prefix", "topic_"]
    delta = str(tmp_path / "delta")
    catalog = f"sqlite:///{tmp_path}/catalog/cat.db"
    for args in (["--output-format", "delta"], ["--output-format", "iceberg", "--catalog", catalog]):
        target = delta if args[1] == "delta" else TABLE
        score(corpus, tiny_model, target, *args)
        score(more, tiny_model, target, *second, *args)

    want = read_delta(delta, "id", reader="deltalake")
    assert want.num_rows == ROWS + 6 and want.column("topic_label").null_count == ROWS
    same_as(duckdb_scan(bin_dir, ["delta"], "delta_scan", delta, tmp_path / "delta_scan.parquet"), want)

    table = Iceberg(catalog).table()
    want = read_iceberg(catalog, TABLE, "id", reader="pyiceberg")
    assert want.num_rows == ROWS + 6 and want.column("topic_label").null_count == ROWS
    metadata = table.metadata_location.removeprefix("file://")
    same_as(
        duckdb_scan(bin_dir, ["avro", "iceberg"], "iceberg_scan", metadata, tmp_path / "iceberg_scan.parquet"), want
    )

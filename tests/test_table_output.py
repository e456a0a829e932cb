"""Delta Lake and Iceberg tables as the output, against the real deltalake and pyiceberg (SQLite catalog here;
PostgreSQL and S3 in test_table_stores.py): every mode, exactly once through real SIGKILLs, shards, schema."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, assert_ok, assert_same_table, invoke, run_score

# Checked without importing them: deltalake (a Rust runtime) and pyiceberg load only in the tests that use them,
# never into every other test of the session at collection.
if importlib.util.find_spec("deltalake") is None or importlib.util.find_spec("pyiceberg") is None:
    pytest.skip("the delta and iceberg extras are not installed", allow_module_level=True)

ROWS, CHUNK = 60, 10
FORMATS = ["delta", "iceberg"]


def write_corpus(path, ids, tag="review") -> str:
    texts = [f"{tag} {i}: {'a wonderful, lovely film' if i % 3 else 'dull and awful'}" for i in ids]
    pq.write_table(pa.table({"id": pa.array(list(ids), pa.int64()), "text": texts}), path)
    return str(path)


@pytest.fixture
def place(tmp_path, monkeypatch):
    """Where each format's table lives in this test: a Delta folder, an Iceberg table in a SQLite catalog."""
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))

    class Place:
        catalog = f"sqlite:///{tmp_path}/catalog/catalog.db"

        def target(self, fmt, name="scores"):
            return str(tmp_path / name) if fmt == "delta" else f"ns.{name}"

        def args(self, fmt, name="scores"):
            extra = ["--catalog", self.catalog] if fmt == "iceberg" else []
            return ["--output-format", fmt, *extra]

        def read(self, fmt, name="scores", version=None) -> pa.Table:
            if fmt == "delta":
                from deltalake import DeltaTable

                return DeltaTable(str(tmp_path / name), version=version).to_pyarrow_table()
            table = self.iceberg(name)
            return table.scan(snapshot_id=version).to_arrow()

        def iceberg(self, name="scores"):
            from pyiceberg.catalog.sql import SqlCatalog

            catalog = SqlCatalog("batchscore", uri=self.catalog, warehouse=f"file://{tmp_path}/catalog/warehouse")
            return catalog.load_table(("ns", name))

        def commits(self, fmt, name="scores") -> list:
            """The table's commits that carry batchscore's commit id, oldest first."""
            if fmt == "delta":
                from deltalake import DeltaTable

                history = DeltaTable(str(tmp_path / name)).history()
                return [h for h in reversed(history) if "batchscore.commit" in h]
            return [s for s in self.iceberg(name).snapshots() if (s.summary or {}).get("batchscore.commit")]

    return Place()


def by_id(table: pa.Table, like: pa.Table | None = None) -> pa.Table:
    """Rows sorted by id, strings as the Parquet output types them, columns in `like`'s order."""
    table = table.sort_by("id")
    if like is not None:
        table = table.select(like.column_names).cast(like.schema.remove_metadata())
    return table


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "reviews.parquet", range(ROWS))


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, tmp_path_factory):
    """The same input as a Parquet-folder run: what every table run must hold."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert_ok(run_score(corpus, tiny_model, out, "--chunk-rows", CHUNK))
    return pq.read_table(out).sort_by("id")


@pytest.mark.parametrize("fmt", FORMATS)
def test_append_holds_the_parquet_runs_rows_once_and_a_rerun_commits_nothing(fmt, place, corpus, tiny_model, reference):
    target = place.target(fmt)
    first = assert_ok(run_score(corpus, tiny_model, target, "--chunk-rows", CHUNK, *place.args(fmt)))
    assert_same_table(by_id(place.read(fmt), reference), reference.replace_schema_metadata(None))
    assert len(place.commits(fmt)) == 1
    assert ("version 0" if fmt == "delta" else "iceberg snapshot") in first.stderr
    again = assert_ok(run_score(corpus, tiny_model, target, "--chunk-rows", CHUNK, *place.args(fmt)))
    assert "Already in the table" in again.stderr
    assert len(place.commits(fmt)) == 1 and place.read(fmt).num_rows == ROWS
    if fmt == "delta":  # the staging folder is gone; only the table's own files remain
        assert sorted(os.listdir(target)) == ["_delta_log"] + sorted(
            n for n in os.listdir(target) if n.endswith(".parquet")
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_second_input_appends_and_the_commit_records_the_run(fmt, place, corpus, tiny_model, tmp_path):
    other = write_corpus(tmp_path / "more.parquet", range(ROWS, ROWS + 7))
    assert_ok(run_score(corpus, tiny_model, place.target(fmt), *place.args(fmt)))
    assert_ok(run_score(other, tiny_model, place.target(fmt), *place.args(fmt)))
    assert sorted(place.read(fmt).column("id").to_pylist()) == list(range(ROWS + 7))
    commits = place.commits(fmt)
    assert len(commits) == 2
    import json

    stored = commits[-1]["batchscore.manifest"] if fmt == "delta" else commits[-1].summary["batchscore.manifest"]
    assert json.loads(stored)["rows"] == 7


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_replaces_the_rows_and_time_travel_keeps_the_old(fmt, place, corpus, tiny_model, tmp_path):
    other = write_corpus(tmp_path / "night2.parquet", range(100, 105))
    assert_ok(run_score(corpus, tiny_model, place.target(fmt), *place.args(fmt)))
    before = place.commits(fmt)[0]
    assert_ok(run_score(other, tiny_model, place.target(fmt), "--table-mode", "overwrite", *place.args(fmt)))
    assert sorted(place.read(fmt).column("id").to_pylist()) == list(range(100, 105))
    old = before["version"] if fmt == "delta" else before.snapshot_id
    assert place.read(fmt, version=old).num_rows == ROWS


@pytest.mark.parametrize("fmt", FORMATS)
def test_merge_updates_matching_ids_and_inserts_new_ones(fmt, place, tiny_model, tmp_path):
    first = write_corpus(tmp_path / "night1.parquet", range(20))
    assert_ok(run_score(first, tiny_model, place.target(fmt), "--id-column", "id", *place.args(fmt)))
    was = by_id(place.read(fmt))
    # Night two: ids 15-24; 15-19 rescored with new texts, 20-24 new. Ids 0-14 must not change at all.
    second = write_corpus(tmp_path / "night2.parquet", range(15, 25), tag="changed")
    mode = ["--table-mode", "merge", "--id-column", "id"]
    assert_ok(run_score(second, tiny_model, place.target(fmt), *mode, *place.args(fmt)))
    now = by_id(place.read(fmt))
    assert now.column("id").to_pylist() == list(range(25))
    assert now.slice(0, 15).equals(was.slice(0, 15).select(now.column_names))
    assert all(t.startswith("changed") for t in now.column("text").to_pylist()[15:])
    expected = pq.read_table(second).sort_by("id")
    assert now.slice(15).column("text").equals(expected.column("text"))
    old = place.commits(fmt)[0]
    version = old["version"] if fmt == "delta" else old.snapshot_id
    assert by_id(place.read(fmt, version=version)).column("text").equals(was.column("text"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_second_model_adds_its_columns_and_older_rows_read_null(
    fmt, place, corpus, tiny_model, three_label_model, tmp_path
):
    other = write_corpus(tmp_path / "more.parquet", range(ROWS, ROWS + 5))
    assert_ok(run_score(corpus, tiny_model, place.target(fmt), *place.args(fmt)))
    two = ["--model", three_label_model, "--result-prefix", "", "--result-prefix", "topic_"]
    assert_ok(run_score(other, tiny_model, place.target(fmt), *two, *place.args(fmt)))
    table = by_id(place.read(fmt))
    assert {"topic_label", "topic_score"} <= set(table.column_names)
    assert table.column("topic_label").null_count == ROWS
    assert table.slice(ROWS).column("topic_label").null_count == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_table_whose_column_clashes_is_refused_before_scoring(fmt, place, corpus, tiny_model, tmp_path):
    clash = pa.table({"id": pa.array([1], pa.int64()), "text": ["x"], "score": ["high"]})
    if fmt == "delta":
        from deltalake import write_deltalake

        write_deltalake(place.target(fmt), clash)
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        os.makedirs(tmp_path / "catalog", exist_ok=True)
        catalog = SqlCatalog("batchscore", uri=place.catalog, warehouse=f"file://{tmp_path}/catalog/warehouse")
        catalog.create_namespace("ns")
        catalog.create_table(("ns", "scores"), schema=clash.schema).append(clash)
    result = run_score(corpus, tiny_model, place.target(fmt), *place.args(fmt))
    assert_error(result, 5, "column 'score' is string in the table but float", "--result-prefix")
    assert place.read(fmt).num_rows == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_four_shards_then_finalize_make_one_commit(fmt, place, corpus, tiny_model, reference):
    target = place.target(fmt)
    for index in range(4):
        shard = ["--num-shards", 4, "--shard-index", index, "--chunk-rows", CHUNK]
        result = assert_ok(run_score(corpus, tiny_model, target, *shard, *place.args(fmt)))
        assert "batchscore finalize" in result.stderr
    if fmt == "delta":
        assert not os.path.exists(os.path.join(target, "_delta_log"))  # nothing committed before finalize
    finalize = ["finalize", target, *place.args(fmt)]
    assert "Finalized" in assert_ok(invoke(finalize)).stderr
    assert len(place.commits(fmt)) == 1
    assert_same_table(by_id(place.read(fmt), reference), reference.replace_schema_metadata(None))
    again = assert_ok(invoke(finalize))  # a retried finalize task: nothing to do, exit 0
    assert "Nothing to finalize" in again.stderr and len(place.commits(fmt)) == 1


def test_finalize_of_a_table_nobody_staged_is_an_error(place, tmp_path):
    result = invoke(["finalize", str(tmp_path / "never"), "--output-format", "delta"])
    assert_error(result, 5, "has no staged run to finalize")


def test_merge_needs_an_id_column_and_table_modes_need_a_table(corpus, tiny_model, tmp_path):
    result = run_score(corpus, tiny_model, tmp_path / "t", "--output-format", "delta", "--table-mode", "merge")
    assert_error(result, 2, "--table-mode merge needs --id-column")
    result = run_score(corpus, tiny_model, tmp_path / "t", "--table-mode", "overwrite")
    assert_error(result, 2, "--table-mode overwrite is for tables")


def test_iceberg_with_no_catalog_uses_the_default_in_batchscore_home(place, corpus, tiny_model, tmp_path):
    assert_ok(run_score(corpus, tiny_model, "ns.default_place", "--output-format", "iceberg"))
    assert (tmp_path / "home" / "iceberg" / "catalog.db").is_file()
    from pyiceberg.catalog.sql import SqlCatalog

    home = tmp_path / "home" / "iceberg"
    catalog = SqlCatalog("batchscore", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    assert catalog.load_table(("ns", "default_place")).scan().to_arrow().num_rows == ROWS


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_library_is_exit_2_naming_the_extra(fmt, corpus, tiny_model, tmp_path):
    module = "deltalake" if fmt == "delta" else "pyiceberg"
    target = str(tmp_path / "t") if fmt == "delta" else "ns.t"
    code = f"import sys; sys.modules[{module!r}] = None; from batchscore.cli import main; main()"
    args = ["score", corpus, "--model", tiny_model, "-o", target, "--output-format", fmt, "--no-progress"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"pip install 'batchscore[{fmt}]'" in done.stderr and "Traceback" not in done.stderr


# --- killed at each stage, then rerun: every row exactly once ---------------------------------------------

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from batchscore.output import delta_table, iceberg_table, table, writer

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    point = os.environ["KILL_AT"]
    if point == "staging":  # after the second chunk's part is committed
        part = writer.OutputWriter._write_part
        written = []
        def _write_part(self, *args, **kwargs):
            part(self, *args, **kwargs)
            written.append(1)
            if len(written) == 2:
                die()
        writer.OutputWriter._write_part = _write_part
    elif point == "during-commit":  # the table's writer has taken the first rows, not the rest
        rows = table.staged_rows
        def staged_rows(staged):
            schema, batches = rows(staged)
            def dying():
                for number, batch in enumerate(batches):
                    if number == 1:
                        die()
                    yield batch
            return schema, dying()
        table.staged_rows = staged_rows
    else:
        for kind in (delta_table.DeltaOutput, iceberg_table.IcebergOutput):
            def wrap(commit):
                def killed(self, *args, **kwargs):
                    if point == "before-commit":
                        die()
                    version = commit(self, *args, **kwargs)
                    die()  # after-commit: the commit is in, the staging folder not yet removed
                return killed
            kind.commit = wrap(kind.commit)
    from batchscore.cli import main
    main()
    """
)


# Staging and mid-commit kills are the slow suite's (make test-slow): the same rules as a folder output's resume,
# and a commit that is atomic; the kills on either side of the commit run every time.
SLOW_POINTS = {"staging", "during-commit"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "point",
    [
        pytest.param(p, marks=pytest.mark.slow) if p in SLOW_POINTS else p
        for p in ("staging", "before-commit", "during-commit", "after-commit")
    ],
)
def test_a_sigkill_at_each_stage_then_a_rerun_leaves_every_row_once(
    fmt, point, place, corpus, tiny_model, reference, tmp_path
):
    target = place.target(fmt)
    args = ["score", corpus, "--model", tiny_model, "-o", target, "--no-progress", "--chunk-rows", CHUNK]
    args += place.args(fmt)
    env = {**os.environ, "KILL_AT": point}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    committed = len(place.commits(fmt)) if _exists(place, fmt) else 0
    assert committed == (1 if point == "after-commit" else 0)
    rerun = assert_ok(invoke(args))
    if point == "after-commit":
        assert "Already in the table" in rerun.stderr
    if point == "staging":
        assert "Resuming: 2 chunks already committed" in rerun.stderr
    assert len(place.commits(fmt)) == 1
    assert_same_table(by_id(place.read(fmt), reference), reference.replace_schema_metadata(None))
    staging = os.path.join(target, "_batchscore_staging") if fmt == "delta" else None
    if staging:
        assert not os.path.exists(staging) or os.listdir(staging) == []


def _exists(place, fmt) -> bool:
    try:
        place.read(fmt)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_appenders_at_once_both_land_once(fmt, place, tiny_model, tmp_path):
    inputs = [write_corpus(tmp_path / f"in{k}.parquet", range(k * 1000, k * 1000 + 30)) for k in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchscore", "score", path, "--model", tiny_model, "-o", place.target(fmt)]
            + ["--no-progress", *place.args(fmt)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in inputs
    ]
    outs = [None, None]

    def wait(k):
        outs[k] = procs[k].communicate(timeout=300)

    threads = [threading.Thread(target=wait, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err
    ids = sorted(place.read(fmt).column("id").to_pylist())
    assert ids == list(range(30)) + list(range(1000, 1030))
    assert len(place.commits(fmt)) == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_merge_whose_run_repeats_a_key_is_an_input_error_and_changes_nothing(fmt, place, tiny_model, tmp_path):
    first = write_corpus(tmp_path / "night1.parquet", range(5))
    assert_ok(run_score(first, tiny_model, place.target(fmt), "--id-column", "id", *place.args(fmt)))
    twice = write_corpus(tmp_path / "night2.parquet", [1, 2, 2, 7])
    mode = ["--table-mode", "merge", "--id-column", "id"]
    result = run_score(twice, tiny_model, place.target(fmt), *mode, *place.args(fmt))
    assert_error(result, 3, "needs each --id-column value once", "'id' repeats some")
    assert len(place.commits(fmt)) == 1 and place.read(fmt).num_rows == 5


def test_a_config_file_names_an_iceberg_table_not_a_path(tmp_path):
    from batchscore.config import build_config

    config = tmp_path / "nightly.yaml"
    config.write_text("output_format: iceberg\noutput: analytics.review_scores\ntable_mode: merge\nid_column: id\n")
    cfg = build_config({"input": "x.parquet"}, env={}, config_file=str(config))
    assert (cfg.output, cfg.output_format, cfg.table_mode) == ("analytics.review_scores", "iceberg", "merge")


def test_a_nightly_merge_with_the_cache_scores_only_what_is_new(place, tiny_model, tmp_path):
    cache = ["--cache", str(tmp_path / "cache"), "--table-mode", "merge", "--id-column", "id"]
    night1 = write_corpus(tmp_path / "night1.parquet", range(30))
    assert_ok(run_score(night1, tiny_model, place.target("delta"), *cache, *place.args("delta")))
    night2 = write_corpus(tmp_path / "night2.parquet", range(40))  # the whole export again, 10 rows new
    assert_ok(run_score(night2, tiny_model, place.target("delta"), *cache, *place.args("delta")))
    manifest = place.commits("delta")[-1]["batchscore.manifest"]
    import json

    m = json.loads(manifest)
    assert (m["rows"], m["rows_from_cache"], m["distinct_texts_scored"]) == (40, 30, 10)
    assert sorted(place.read("delta").column("id").to_pylist()) == list(range(40))


def test_long_texts_in_windows_go_into_a_table_as_into_a_folder(place, tiny_model, tmp_path):
    long = " ".join(["a wonderful film, truly a joy to watch"] * 120)
    path = tmp_path / "long.parquet"
    pq.write_table(pa.table({"id": pa.array([0, 1], pa.int64()), "text": [long, "short and awful"]}), path)
    window = ["--long-text", "window", "--max-length", "64", "--window-overlap", "8"]
    folder = tmp_path / "folder"
    assert_ok(run_score(path, tiny_model, folder, *window))
    assert_ok(run_score(path, tiny_model, place.target("delta"), *window, *place.args("delta")))
    expected = pq.read_table(folder).sort_by("id")
    assert_same_table(by_id(place.read("delta"), expected), expected.replace_schema_metadata(None))
    assert expected.column("windows").to_pylist()[0] > 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_status_manifest_and_report_of_a_table(fmt, place, corpus, tiny_model, tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)  # an Iceberg table's page goes beside its name, in the current folder
    target = place.target(fmt)
    shard = ["--num-shards", 2, "--shard-index", 0, "--chunk-rows", CHUNK]
    assert_ok(run_score(corpus, tiny_model, target, *shard, *place.args(fmt)))
    stopped = invoke(["status", target, *place.args(fmt)])
    assert stopped.exit_code == 11, stopped.output
    assert "not yet committed to the table" in stopped.stdout and "then batchscore finalize" in stopped.stdout
    assert f"--output-format {fmt}" in stopped.stdout
    done = assert_ok(run_score(corpus, tiny_model, target, "--chunk-rows", CHUNK, "--report", *place.args(fmt)))
    page = tmp_path / done.stderr.split("report: ")[-1].strip().rstrip(".")  # an absolute path stays itself
    assert f"<title>batchscore report: {fmt} table {target}</title>" in page.read_text()
    complete = invoke(["status", target, *place.args(fmt)])
    assert complete.exit_code == 0 and "last batchscore commit" in complete.stdout, complete.output
    manifest = json.loads(assert_ok(invoke(["manifest", target, *place.args(fmt)])).stdout)
    assert manifest["rows"] == ROWS and manifest["table"]["format"] == fmt and manifest["table"]["mode"] == "append"
    assert manifest["table"]["version" if fmt == "delta" else "snapshot_id"] is not None


def test_a_commit_that_keeps_losing_to_other_writers_is_exit_5_and_keeps_the_staged_rows(
    place, corpus, tiny_model, monkeypatch
):
    """Every try loses a race the library could not reconcile: after COMMIT_TRIES, one line, exit 5; the staged run
    stays, and a rerun once the others are done commits it."""
    import time

    from deltalake.exceptions import CommitFailedError

    from batchscore.output import delta_table

    real, tries = delta_table.DeltaOutput._write, []

    def losing(self, *args, **kwargs):
        tries.append(1)
        raise CommitFailedError("Transaction failed: a concurrent transaction deleted the same data")

    monkeypatch.setattr(delta_table.DeltaOutput, "_write", losing)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    result = run_score(corpus, tiny_model, place.target("delta"), *place.args("delta"))
    assert_error(result, 5, "kept changing under this run's commit", "the staged rows are kept")
    assert len(tries) == 5 and os.listdir(os.path.join(place.target("delta"), "_batchscore_staging"))
    monkeypatch.setattr(delta_table.DeltaOutput, "_write", real)
    assert (
        "(delta version 0, append)"
        in assert_ok(run_score(corpus, tiny_model, place.target("delta"), *place.args("delta"))).stderr
    )
    assert place.read("delta").num_rows == ROWS

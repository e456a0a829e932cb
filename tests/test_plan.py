"""The plan (plan.py): which chunks a shard / DataLoader worker / resume does, and which input rows it reads.

Every expected value is computed here from first principles: chunk lists by
hand or by `c % K`, rows by slicing a pyarrow table this file built, and
decode bounds from the row-group sizes this file wrote. Nothing expected comes
from the code under test.
"""

import json
import os
import random
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batchscore.config import build_config
from batchscore.input import open_source
from batchscore.plan import InputEnd, Plan, Shard, for_process, launcher_ranks, owner
from helpers import assert_ok, invoke, manifest_of, run_score


def rows_table(n, lang=None):
    """n rows of string columns (CSV reads strings back unchanged); some texts need CSV quoting."""
    columns = {
        "id": [f"r{i:04d}" for i in range(n)],
        "text": [f'row {i}, "quoted" text' if i % 5 == 0 else f"row {i} text" for i in range(n)],
    }
    if lang is not None:
        columns["lang"] = lang
    return pa.table(columns)


def as_table(parts, columns):
    tables = [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in parts]
    for t in tables:
        assert t.column_names == columns  # every piece in the asked column order
    return pa.concat_tables(tables) if tables else None


def interleave(lists):
    """What the DataLoader does with its workers' streams: one item from each in turn."""
    out, lists = [], [list(x) for x in lists]
    while any(lists):
        for x in lists:
            if x:
                out.append(x.pop(0))
    return out


# ---------------------------------------------------------------------------------------- Plan, no input


def test_owner_is_chunk_modulo_shards():
    for k in range(1, 6):
        for c in range(40):
            assert owner(c, k) == c % k
            assert [s for s in range(k) if Plan(10, Shard(s, k)).owns(c)] == [c % k]


@pytest.mark.parametrize(
    "shard, k, committed, num_rows, chunk_rows, todo, rows",
    [
        (0, 1, set(), 0, 10, [], 0),  # no rows: no chunks
        (0, 1, set(), 25, 10, [0, 1, 2], 25),  # last chunk partial (5 rows)
        (0, 1, {1}, 25, 10, [0, 2], 15),
        (1, 3, set(), 95, 10, [1, 4, 7], 30),
        (1, 3, {4}, 95, 10, [1, 7], 20),
        (2, 3, set(), 21, 10, [2], 1),  # the shard's only chunk is the 1-row tail
        (2, 3, {2}, 21, 10, [], 0),
        (3, 4, set(), 30, 10, [], 0),  # more shards than chunks
        (0, 2, {1, 3}, 100, 10, [0, 2, 4, 6, 8], 50),  # other shards' chunks in `committed` are not ours anyway
    ],
)
def test_todo_chunks_and_rows_to_do(shard, k, committed, num_rows, chunk_rows, todo, rows):
    plan = Plan(chunk_rows, Shard(shard, k), num_rows=num_rows, committed=frozenset(committed))
    assert plan.todo_chunks() == todo
    assert plan.rows_to_do() == rows


def test_unknown_row_count_has_no_todo_list():
    plan = Plan(10, num_rows=None)
    assert (plan.num_chunks, plan.todo_chunks(), plan.rows_to_do()) == (None, None, None)
    assert plan.span(2) == (20, 30)


def test_span_of_last_chunk_is_cut_at_the_end():
    assert Plan(10, num_rows=25).span(2) == (20, 25)
    assert Plan(10, num_rows=30).span(2) == (20, 30)
    assert Plan(10, num_rows=25).span(0) == (0, 10)
    assert Plan(7, num_rows=1).span(0) == (0, 1)


def test_worker_todo_known_split():
    plan = Plan(10, Shard(0, 1), num_rows=100, committed=frozenset({1, 2, 5}))
    got = [[c for c in range(10) if plan.worker_todo(w, 2)(c)] for w in range(2)]
    assert got == [[0, 4, 7, 9], [3, 6, 8]]


@pytest.mark.parametrize(
    "shard, k, committed",
    [
        (0, 1, set()),
        (0, 1, {0, 3, 4, 9, 17}),
        (1, 3, set()),
        (1, 3, {1, 10, 13, 22}),
        (2, 3, {2, 5, 8, 29}),
        (0, 4, {0, 1, 2, 3, 4, 5}),
    ],
)
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_worker_todo_partitions_and_round_robin_restores_order(shard, k, committed, workers):
    num_rows, chunk_rows = 293, 10  # 30 chunks, the last one 3 rows
    plan = Plan(chunk_rows, Shard(shard, k), num_rows=num_rows).with_committed(committed)
    todo = [c for c in range(30) if c % k == shard and c not in committed]
    per_worker = [[c for c in range(30) if plan.worker_todo(w, workers)(c)] for w in range(workers)]
    every = sorted(c for chunks in per_worker for c in chunks)
    assert every == todo  # each to-do chunk to exactly one worker, nothing else to any
    assert interleave(per_worker) == todo  # DataLoader round-robin gives chunk order back
    sizes = [len(x) for x in per_worker]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1


def test_with_committed_keeps_only_own_chunks():
    plan = Plan(10, Shard(1, 3), num_rows=120).with_committed([0, 1, 2, 4, 5, 7, 99 * 3])
    assert plan.committed == frozenset({1, 4, 7})
    assert plan.todo_chunks() == [10]
    assert plan.rows_to_do() == 10


def cfg_of(**values):
    return build_config({"chunk_rows": 10, **values}, env={})


def test_for_process_independent_shard_under_a_launcher():
    cfg = cfg_of(num_shards=3, shard_index=1)
    plans = [for_process(cfg, 100, rank=r, world=2) for r in range(2)]
    assert [p.shard for p in plans] == [Shard(1, 6), Shard(4, 6)]
    assert [p.todo_chunks() for p in plans] == [[1, 7], [4]]
    # Together the ranks do exactly shard 1 of 3's chunks.
    assert sorted(plans[0].todo_chunks() + plans[1].todo_chunks()) == [c for c in range(10) if c % 3 == 1]
    assert [p.main for p in plans] == [True, False] and not any(p.finalizes for p in plans)
    alone = for_process(cfg, 100)
    assert (alone.shard, alone.finalizes) == (Shard(1, 3), False)
    assert for_process(cfg_of(num_shards=3, shard_index=1, overwrite=True), 100, 1, 2).overwrite == "shard"


def test_for_process_ranks_without_shards():
    cfg = cfg_of(overwrite=True)
    plans = [for_process(cfg, 100, rank=r, world=3) for r in range(3)]
    assert [(p.shard, p.main, p.finalizes) for p in plans] == [
        (Shard(0, 3), True, True),
        (Shard(1, 3), False, True),
        (Shard(2, 3), False, True),
    ]
    assert [p.overwrite for p in plans] == ["all", None, None] and all(p.clear_first for p in plans)
    one = for_process(cfg, 100)
    assert (one.shard, one.clear_first) == (Shard(0, 1), False)


def test_for_process_limit_caps_rows():
    cfg = cfg_of(limit=25)
    assert (for_process(cfg, 100).num_rows, for_process(cfg, 100).limit) == (25, 25)
    assert for_process(cfg, 100).todo_chunks() == [0, 1, 2] and for_process(cfg, 100).rows_to_do() == 25
    assert for_process(cfg, 10).num_rows == 10
    assert for_process(cfg, None).num_rows is None
    ns = SimpleNamespace(num_shards=None, shard_index=None, chunk_rows=7, limit=None, overwrite=False)
    assert for_process(ns, 50).num_chunks == 8


def test_launcher_ranks(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launcher_ranks() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launcher_ranks() == (2, 4)


# ---------------------------------------------------------------------------------------- Parquet random access

N = 60  # rows in each Parquet layout


@pytest.fixture(scope="module", params=["flat", "hive"])
def parquet_input(request, tmp_path_factory):
    """(folder, the full table in file order, row-group sizes in file order)."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "flat":  # files: 20 rows in groups of 7, 1 row, 0 rows, 39 rows in groups of 5
        full = rows_table(N)
        files = [
            ("a.parquet", 0, 20, 7),
            ("b.parquet", 20, 1, None),
            ("c.parquet", 21, 0, None),
            ("d.parquet", 21, 39, 5),
        ]
    else:
        full = rows_table(N, lang=["en"] * 27 + ["fr"] * 33)
        files = [
            ("lang=en/part-0.parquet", 0, 26, 7),
            ("lang=en/part-1.parquet", 26, 1, None),
            ("lang=fr/part-0.parquet", 27, 33, 4),
        ]
    groups = []
    for name, start, rows, size in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        part = full.slice(start, rows).select(["id", "text"])
        pq.write_table(part, root / name, row_group_size=size or max(rows, 1))
        if rows:
            size = size or rows
            groups += [min(size, rows - i) for i in range(0, rows, size)]
    assert sum(groups) == N
    return str(root), full, groups


def group_bounds(groups):
    out, row = [], 0
    for size in groups:
        out.append((row, row + size))
        row += size
    return out


def decoded_for(spans, groups):
    """Rows in the row groups that hold any of `spans`: what reading them in order must decode, each group once."""
    return sum(b - a for a, b in group_bounds(groups) if any(a < stop and start < b for start, stop in spans))


def test_parquet_read_rows_returns_exactly_the_rows(parquet_input):
    path, full, _ = parquet_input
    source = open_source(path, text_column="text")
    assert source.num_rows == N and source.read_rows is not None
    assert source.schema.names == full.column_names
    columns = full.column_names[::-1]  # not the file order
    ranges = [
        (0, 5),
        (5, 12),
        (12, 30),
        (30, 31),
        (31, 60),  # in order, across files
        (18, 23),
        (3, 4),
        (0, 60),  # spanning files; backwards (must reopen); everything
        (10, 10),
        (45, 45),
        (60, 60),
        (58, 80),
        (70, 90),
        (25, 27),
        (26, 26),
        (2, 9),
    ]
    rng = random.Random(3)
    for _ in range(60):  # arbitrary sequences: the cursor must never hand out wrong rows
        a = rng.randrange(0, N + 5)
        ranges.append((a, a + rng.randrange(0, 25)))
    for start, stop in ranges:
        cols = columns if rng.random() < 0.7 else ["text"]
        got = as_table(list(source.read_rows(cols, start, stop)), cols)
        want = full.select(cols).slice(min(start, N), max(min(stop, N) - start, 0))
        if want.num_rows == 0:
            assert got is None or got.num_rows == 0, (start, stop)
        else:
            assert got.equals(want), (start, stop)


@pytest.mark.parametrize("k, chunk_rows", [(3, 8), (2, 5), (4, 13), (1, 9)])
def test_parquet_shard_decodes_its_rows_plus_at_most_a_row_group_per_boundary(parquet_input, k, chunk_rows):
    path, full, groups = parquet_input
    columns = full.column_names
    for shard in range(k):
        source = open_source(path, text_column="text")
        spans = [(c * chunk_rows, min((c + 1) * chunk_rows, N)) for c in range(-(-N // chunk_rows)) if c % k == shard]
        for start, stop in spans:
            got = as_table(list(source.read_rows(columns, start, stop)), columns)
            assert got.equals(full.slice(start, stop - start))
        own = sum(b - a for a, b in spans)
        assert source.rows_decoded == decoded_for(spans, groups)
        assert source.rows_decoded <= own + max(groups) * 2 * len(spans)
        if k > 1:
            assert source.rows_decoded < N


# ------------------------------------------------------------------------------ Plan.read: Parquet vs CSV stream


def chunks_of(plan, source, columns, worker, workers):
    items = list(plan.read(source, columns, worker, workers))
    assert isinstance(items[-1], InputEnd) and not any(isinstance(i, InputEnd) for i in items[:-1])
    return items[:-1], items[-1]


@pytest.mark.parametrize("committed, limit", [(set(), None), ({1, 3, 4}, None), (set(), 23)])
def test_plan_read_parquet_equals_csv_stream(parquet_input, tmp_path, committed, limit):
    path, full, _ = parquet_input
    csv_path = tmp_path / "same.csv"
    pacsv.write_csv(full, csv_path)
    columns = full.column_names
    chunk_rows, k, workers = 7, 3, 2
    rows = N if limit is None else limit
    num_chunks = -(-rows // chunk_rows)
    for shard in range(k):
        cfg = SimpleNamespace(num_shards=k, shard_index=shard, chunk_rows=chunk_rows, limit=limit, overwrite=False)
        todo = [c for c in range(num_chunks) if c % k == shard and c not in committed]
        for worker in range(workers):
            parquet = open_source(path, text_column="text")
            csv = open_source(str(csv_path), text_column="text")
            assert csv.read_rows is None  # the CSV path streams and filters
            p_plan = for_process(cfg, parquet.num_rows).with_committed(committed)
            c_plan = for_process(cfg, None).with_committed(committed)  # row count unknown before reading
            p_chunks, p_end = chunks_of(p_plan, parquet, columns, worker, workers)
            c_chunks, c_end = chunks_of(c_plan, csv, columns, worker, workers)
            want = todo[worker::workers]
            assert [c.index for c in p_chunks] == want and [c.index for c in c_chunks] == want
            for p, c in zip(p_chunks, c_chunks):
                expected = full.slice(p.index * chunk_rows, min(chunk_rows, rows - p.index * chunk_rows))
                assert p.start == c.start == p.index * chunk_rows
                assert p.table.equals(expected) and c.table.equals(expected)
            assert p_end.num_chunks == c_end.num_chunks == num_chunks


# ---------------------------------------------------------------------------------------- saved datasets


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    import datasets

    full = pa.table({"id": list(range(45)), "text": [f"saved row {i}" for i in range(45)]})
    path = tmp_path_factory.mktemp("saved") / "ds"
    datasets.Dataset.from_dict(full.to_pydict()).save_to_disk(str(path))
    return str(path), full


def test_saved_dataset_read_rows_slices(saved_dataset):
    path, full = saved_dataset
    source = open_source(path, text_column="text")
    assert source.read_rows is not None and source.num_rows == 45
    for start, stop in [(0, 10), (10, 11), (40, 45), (5, 3), (7, 7), (30, 99), (45, 50), (60, 70), (2, 44)]:
        for cols in (["text", "id"], ["id"]):
            before = source.rows_decoded
            got = as_table(list(source.read_rows(cols, start, stop)), cols)
            asked = len(range(45)[start:stop])
            assert source.rows_decoded - before == asked, (start, stop)
            assert got.num_rows == asked
            if asked:
                assert got.equals(full.select(cols).slice(start, asked))


def test_saved_dataset_plan_reads_only_own_chunks(saved_dataset):
    path, full = saved_dataset
    source = open_source(path, text_column="text")
    plan = Plan(10, Shard(1, 3), num_rows=45)
    chunks, end = chunks_of(plan, source, ["id", "text"], 0, 1)
    assert [c.index for c in chunks] == [1, 4]
    assert [c.rows_read for c in chunks] == [10, 5]
    assert chunks[1].table.equals(full.slice(40, 5)) and chunks[0].table.equals(full.slice(10, 10))
    assert source.rows_decoded == 15 and end.num_chunks == 5


# ---------------------------------------------------------------------------------------- through the CLI

ROWS, GROUP, CHUNK = 600, 50, 100  # 6 chunks, row groups aligned to chunks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(11)
    words = "good bad fine awful great boring loved hated the a plot food service".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(ROWS)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    pq.write_table(pa.table({"row": list(range(ROWS)), "text": texts}), path, row_group_size=GROUP)
    assert [pq.ParquetFile(path).metadata.row_group(i).num_rows for i in range(ROWS // GROUP)] == [GROUP] * 12
    return str(path)


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert_ok(run_score(corpus, tiny_model, out, "--chunk-rows", CHUNK))
    return pq.read_table(out), manifest_of(out)


def test_single_run_reads_every_row_once(reference):
    table, manifest = reference
    assert table.column("row").to_pylist() == list(range(ROWS))
    assert (manifest["rows_read"], manifest["rows_checked"]) == (ROWS, ROWS)


def test_shard_reads_only_its_rows_and_finalize_equals_one_run(corpus, tiny_model, reference, tmp_path):
    out = tmp_path / "out"
    spans = {s: [(c * CHUNK, (c + 1) * CHUNK) for c in range(ROWS // CHUNK) if c % 3 == s] for s in range(3)}
    bounds = [(g * GROUP, (g + 1) * GROUP) for g in range(ROWS // GROUP)]
    assert_ok(run_score(corpus, tiny_model, out, "--chunk-rows", CHUNK, "--num-shards", 3, "--shard-index", 1))
    with open(out / "_batchscore" / "shard-00001-of-00003.json") as fh:
        marker = json.load(fh)
    own = sum(b - a for a, b in spans[1])  # 200: chunks 1 and 4
    groups_touched = sum(b - a for a, b in bounds if any(a < y and x < b for x, y in spans[1]))
    assert own == groups_touched == 200
    for key in ("rows_read", "rows_checked"):
        assert marker[key] == groups_touched, (key, marker[key])  # its own 200 rows of 600, none beside
    # Its start-up (counted from the process start: here pytest's) covers its model load.
    assert 0 < marker["model_load_seconds"] < marker["startup_seconds"], marker

    for s in (0, 2):
        assert_ok(run_score(corpus, tiny_model, out, "--chunk-rows", CHUNK, "--num-shards", 3, "--shard-index", s))
    assert_ok(invoke(["finalize", out]))
    manifest = manifest_of(out)
    facts = {f["shard"]: f for f in manifest["shards"]}
    assert sorted(facts) == [0, 1, 2]
    for s, f in facts.items():
        assert f["rows_read"] == sum(b - a for a, b in spans[s]) < ROWS
    assert manifest["rows_read"] == manifest["rows_checked"] == ROWS
    shown = json.loads(assert_ok(invoke(["manifest", out])).stdout)
    assert shown["rows_read"] == ROWS and [f["rows_read"] for f in shown["shards"]] == [200, 200, 200]
    table, _ = reference
    got = pq.read_table(out)
    assert got.column("row").to_pylist() == list(range(ROWS))
    assert got.equals(table)


def test_resume_reads_only_the_redone_chunks(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    assert_ok(run_score(corpus, tiny_model, out, "--chunk-rows", CHUNK))
    first = pq.read_table(out)
    parts = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    assert len(parts) == 6
    for name in (parts[1], parts[4], "_SUCCESS", "_manifest.parquet"):
        os.remove(out / name)
    assert_ok(run_score(corpus, tiny_model, out, "--chunk-rows", CHUNK))
    manifest = manifest_of(out)
    assert manifest["resumed_chunks"] == 4
    assert manifest["rows_read"] == 2 * CHUNK  # chunks 1 and 4, whole row groups: nothing else parsed
    assert manifest["rows_checked"] == 2 * CHUNK
    again = pq.read_table(out)
    assert again.column("row").to_pylist() == list(range(ROWS))
    for column in ("row", "label", "score"):
        assert again.column(column).equals(first.column(column)), column

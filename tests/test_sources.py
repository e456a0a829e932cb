"""Every input format through the full CLI, plus unit tests of chunking and batching.

Each CLI test builds its input inline and compares the output with the input
table itself: same rows, same order, same columns and values, plus label/score.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchscore.plan import iter_chunks
from batchscore.scoring.encode import cut_batches
from helpers import manifest_of, run_score

LABELS = {"NEGATIVE", "POSITIVE"}

# Rows shared by most format tests: an embedded newline, a comma, quotes, a
# text that looks like a number, unicode.
ROWS = [
    {"id": 1, "text": "I've been waiting for a HuggingFace course my whole life.", "stars": 5},
    {"id": 2, "text": "I hate this so much!", "stars": 1},
    {"id": 3, "text": "first line\nsecond line, with a comma", "stars": 3},
    {"id": 4, "text": "10", "stars": 4},
    {"id": 5, "text": 'She said "fine", then left.', "stars": 2},
    {"id": 6, "text": "Très bien, merci ☕", "stars": 4},
]


def columns_of(rows: list[dict]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def as_written(rows: list[dict]) -> dict[str, list]:
    """What a CSV/TSV file holds: every value as text, exactly as written (None wrote an empty field)."""
    return {name: ["" if row[name] is None else str(row[name]) for row in rows] for name in rows[0]}


def score(input_spec, model, out, *extra, expect_exit=0, env=None):
    """A job whose exit code is checked here (0 unless told)."""
    result = run_score(input_spec, model, out, *extra, env=env)
    assert result.exit_code == expect_exit, result.output
    return result


def read_output(out) -> pa.Table:
    out = str(out)
    if out.endswith(".parquet"):
        return pq.read_table(out)
    assert os.path.exists(os.path.join(out, "_SUCCESS"))
    return pq.read_table(out)


def assert_scored(table: pa.Table, expected: dict[str, list], text_column: str = "text"):
    """`table` holds exactly `expected`'s columns, in order and unchanged, then label and score."""
    assert table.column_names == [*expected, "label", "score"]
    assert table.num_rows == len(next(iter(expected.values())))
    for name, values in expected.items():
        assert table.column(name).to_pylist() == values, name
    texts = expected.get(text_column)
    labels = table.column("label").to_pylist()
    scores = table.column("score").to_pylist()
    for i, (label, value) in enumerate(zip(labels, scores)):
        has_text = texts is None or (texts[i] is not None and str(texts[i]).strip() != "")
        if has_text:
            assert label in LABELS, (i, label)
            # Softmax over two labels: the best label's probability is in [0.5, 1].
            assert 0.5 <= value <= 1.0, (i, value)
        else:
            assert label is None and value is None, i
    assert table.schema.field("label").type == pa.string()
    assert table.schema.field("score").type == pa.float32()


def write_csv(path, rows, delimiter=","):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows(rows)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- file formats


def test_csv_keeps_quoted_newlines_and_numeric_looking_text(tmp_path, tiny_model):
    path = tmp_path / "reviews.csv"
    write_csv(path, ROWS)
    assert '"first line\nsecond line, with a comma"' in path.read_text(encoding="utf-8")
    score(path, tiny_model, tmp_path / "out")
    table = read_output(tmp_path / "out")
    assert_scored(table, as_written(ROWS))
    assert table.schema.field("text").type == pa.string()  # "10" stayed text
    assert table.column("text")[3].as_py() == "10"


def test_csv_where_every_text_looks_like_a_number(tmp_path, tiny_model):
    rows = [{"id": i, "text": str(n)} for i, n in enumerate([10, 200, 3, 42])]
    write_csv(tmp_path / "numbers.csv", rows)
    score(tmp_path / "numbers.csv", tiny_model, tmp_path / "out")
    table = read_output(tmp_path / "out")
    assert table.schema.field("text").type == pa.string()
    assert_scored(table, as_written(rows))


def test_tsv(tmp_path, tiny_model):
    # IANA TSV: no quoting, so quotes are ordinary characters; fields hold no tab or newline.
    rows = [{"id": r["id"], "text": r["text"].replace("\n", " "), "stars": r["stars"]} for r in ROWS]
    lines = ["id\ttext\tstars"] + [f"{r['id']}\t{r['text']}\t{r['stars']}" for r in rows]
    (tmp_path / "reviews.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    score(tmp_path / "reviews.tsv", tiny_model, tmp_path / "out")
    table = read_output(tmp_path / "out")
    assert_scored(table, as_written(rows))
    assert table.column("text")[4].as_py() == 'She said "fine", then left.'  # quotes kept, as written


def test_parquet(tmp_path, tiny_model):
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in ROWS], pa.int32()),
            "text": [r["text"] for r in ROWS],
            "when": pa.array([1_700_000_000 + i for i in range(len(ROWS))], pa.timestamp("s")),
            "tags": [["a"], [], ["b", "c"], None, ["d"], ["e"]],
        }
    )
    pq.write_table(table, tmp_path / "reviews.parquet")
    table = pq.read_table(tmp_path / "reviews.parquet")  # as Parquet stores it
    score(tmp_path / "reviews.parquet", tiny_model, tmp_path / "out")
    out = read_output(tmp_path / "out")
    assert_scored(out, table.to_pydict())
    # Input column types survive unchanged.
    for field in table.schema:
        assert out.schema.field(field.name).type == field.type


def test_jsonl(tmp_path, tiny_model):
    write_jsonl(tmp_path / "reviews.jsonl", ROWS)
    score(tmp_path / "reviews.jsonl", tiny_model, tmp_path / "out")
    assert_scored(read_output(tmp_path / "out"), columns_of(ROWS))


def _write_split_csvs(folder, names_rows):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in names_rows:
        write_csv(folder / name, rows)


def _three_files():
    # Written in a shuffled order; rows must come out in sorted file-name order.
    return [("b.csv", ROWS[2:4]), ("c.csv", ROWS[4:]), ("a.csv", ROWS[:2])]


def test_folder_of_csv_files_in_sorted_name_order(tmp_path, tiny_model):
    folder = tmp_path / "shards"
    _write_split_csvs(folder, _three_files())
    (folder / "_SUCCESS").write_text("")  # Spark leftovers are skipped
    (folder / "notes.txt").write_text("not data")
    score(folder, tiny_model, tmp_path / "out")
    assert_scored(read_output(tmp_path / "out"), as_written(ROWS))
    assert len(manifest_of(tmp_path / "out")["input_files"]) == 3


def test_folder_of_csv_shards_read_as_written(tmp_path, tiny_model):
    # Shard a: 'rating' looks like int and 'note' is empty; shard b: a float and text. As text, nothing clashes.
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.csv").write_text("text,rating,note\ngood,1,\nbad,007,\n", encoding="utf-8")
    (folder / "b.csv").write_text("text,rating,note\nfine,1.5,hello\nmeh,,\n", encoding="utf-8")
    score(folder, tiny_model, tmp_path / "out")
    table = read_output(tmp_path / "out")
    assert table.column_names == ["text", "rating", "note", "label", "score"]
    assert table.column("text").to_pylist() == ["good", "bad", "fine", "meh"]
    assert table.column("rating").to_pylist() == ["1", "007", "1.5", ""]
    assert table.column("note").to_pylist() == ["", "", "hello", ""]


def test_folder_of_parquet_shards_with_widened_types(tmp_path, tiny_model):
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["a b", "c"], "n": pa.array([1, 2], pa.int32())}), folder / "a.parquet")
    pq.write_table(pa.table({"text": ["d"], "n": pa.array([2**40], pa.int64())}), folder / "b.parquet")
    score(folder, tiny_model, tmp_path / "out")
    assert_scored(read_output(tmp_path / "out"), {"text": ["a b", "c", "d"], "n": [1, 2, 2**40]})


def test_glob(tmp_path, tiny_model):
    folder = tmp_path / "shards"
    _write_split_csvs(folder, _three_files() + [("z.tsv", ROWS[:1])])
    score(str(folder / "*.csv"), tiny_model, tmp_path / "out")
    assert_scored(read_output(tmp_path / "out"), as_written(ROWS))


def test_file_name_with_glob_characters_is_read_literally(tmp_path, tiny_model):
    path = tmp_path / "reviews [2024].csv"
    write_csv(path, ROWS)
    write_csv(tmp_path / "reviews 2.csv", ROWS[:1])  # what the name means as a glob pattern
    score(path, tiny_model, tmp_path / "out")
    assert_scored(read_output(tmp_path / "out"), as_written(ROWS))


def test_memory_url(tmp_path, tiny_model):
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/batchscore-tests/{tmp_path.name}"
    try:
        for name, rows in _three_files():
            with fs.open(f"{root}/{name}", "w") as fh:
                fh.write(_csv_text(rows))
        score(f"memory://{root}", tiny_model, tmp_path / "out")
        assert_scored(read_output(tmp_path / "out"), as_written(ROWS))
    finally:
        fs.rm(root, recursive=True)


def _csv_text(rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def test_file_url(tmp_path, tiny_model):
    write_jsonl(tmp_path / "reviews.jsonl", ROWS)
    score((tmp_path / "reviews.jsonl").as_uri(), tiny_model, tmp_path / "out")
    assert_scored(read_output(tmp_path / "out"), columns_of(ROWS))


# ------------------------------------------------------------ datasets inputs


def test_saved_dataset(tmp_path, tiny_model):
    import datasets

    datasets.Dataset.from_dict(columns_of(ROWS)).save_to_disk(str(tmp_path / "saved"))
    score(tmp_path / "saved", tiny_model, tmp_path / "out")
    assert_scored(read_output(tmp_path / "out"), columns_of(ROWS))


def test_saved_dataset_dict_with_split(tmp_path, tiny_model):
    import datasets

    train = [{"id": 100 + i, "text": f"train row {i}", "stars": 0} for i in range(3)]
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(columns_of(train)),
            "test": datasets.Dataset.from_dict(columns_of(ROWS)),
        }
    ).save_to_disk(str(tmp_path / "saved"))
    score(tmp_path / "saved", tiny_model, tmp_path / "out", "--split", "test")
    assert_scored(read_output(tmp_path / "out"), columns_of(ROWS))


def test_hub_style_dataset_folder_with_split(tmp_path, tiny_model):
    folder = tmp_path / "my_dataset"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\n# My dataset\n\nReviews.\n", encoding="utf-8")
    train = [{"id": 100 + i, "text": f"train row {i}", "stars": 0} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(train), folder / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS), folder / "data" / "test-00000-of-00001.parquet")
    score(folder, tiny_model, tmp_path / "out", "--split", "test")
    assert_scored(read_output(tmp_path / "out"), columns_of(ROWS))


# ------------------------------------------------------------ column options


@pytest.fixture
def wide_csv(tmp_path):
    rows = [{"a": f"a{i}", "id": 10 + i, "text": r["text"], "b": i * 1.5, "c": "x"} for i, r in enumerate(ROWS)]
    path = tmp_path / "wide.csv"
    write_csv(path, rows)
    return path, rows


def test_keep_columns_keeps_exactly_those(tmp_path, tiny_model, wide_csv):
    path, rows = wide_csv
    score(path, tiny_model, tmp_path / "out", "--keep-columns", "b,a")
    table = read_output(tmp_path / "out")
    assert table.column_names == ["b", "a", "label", "score"]
    assert table.column("a").to_pylist() == [r["a"] for r in rows]
    assert table.column("b").to_pylist() == [str(r["b"]) for r in rows]  # as written: 0.0, 1.5, ...
    assert table.column("label").null_count == 0


def test_keep_columns_none(tmp_path, tiny_model, wide_csv):
    path, rows = wide_csv
    score(path, tiny_model, tmp_path / "out", "--keep-columns", "none")
    table = read_output(tmp_path / "out")
    assert table.column_names == ["label", "score"]
    assert table.num_rows == len(rows)
    assert table.column("label").null_count == 0


def test_id_column_goes_first_even_when_not_kept(tmp_path, tiny_model, wide_csv):
    path, rows = wide_csv
    score(path, tiny_model, tmp_path / "out", "--id-column", "id", "--keep-columns", "c,a")
    table = read_output(tmp_path / "out")
    assert table.column_names == ["id", "c", "a", "label", "score"]
    assert table.column("id").to_pylist() == [str(r["id"]) for r in rows]


def test_id_column_first_with_all_columns(tmp_path, tiny_model, wide_csv):
    path, rows = wide_csv
    score(path, tiny_model, tmp_path / "out", "--id-column", "id")
    expected = as_written(rows)
    expected = {"id": expected.pop("id"), **expected}
    assert_scored(read_output(tmp_path / "out"), expected)


def test_keep_columns_with_a_duplicate_name(tmp_path, tiny_model, wide_csv):
    path, rows = wide_csv
    result = run_score(path, tiny_model, tmp_path / "out", "--keep-columns", "a,b,a")
    assert result.exit_code == 0, result.output  # a repeated name is kept once
    table = read_output(tmp_path / "out")
    assert table.column_names == ["a", "b", "label", "score"]
    assert table.column("a").to_pylist() == [r["a"] for r in rows]


def test_limit(tmp_path, tiny_model):
    rows = [{"id": i, "text": f"review number {i}"} for i in range(30)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    score(tmp_path / "in.jsonl", tiny_model, tmp_path / "out", "--limit", "11", "--chunk-rows", "4")
    assert_scored(read_output(tmp_path / "out"), columns_of(rows[:11]))
    manifest = manifest_of(tmp_path / "out")
    assert manifest["rows"] == 11
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 3


# ------------------------------------------------------- chunks and batches


def _reference_scores(model_dir: str, texts: list[str]) -> list[tuple[str, float]]:
    """Each text scored alone, unpadded, straight through transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    results = []
    with torch.inference_mode():
        for text in texts:
            logits = model(**tokenizer(text, truncation=True, return_tensors="pt")).logits[0]
            probs = torch.softmax(logits.float(), dim=-1)
            best = int(probs.argmax())
            results.append((model.config.id2label[best], float(probs[best])))
    return results


def test_order_and_count_across_many_chunks_and_batches(tmp_path, tiny_model):
    rng = np.random.default_rng(7)
    words = "good bad fine awful great movie plot actor boring superb the a of and".split()
    n = 250
    # Varied lengths so sorting by length really reorders rows within a chunk.
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(n)]
    ids = [int(x) for x in rng.permutation(10_000)[:n]]  # ids not in sorted order
    table = pa.table({"id": ids, "text": texts, "pos": list(range(n))})
    # Several row groups of uneven size: record batches do not line up with chunks.
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=33)
    out = tmp_path / "out"
    score(tmp_path / "in.parquet", tiny_model, out, "--chunk-rows", "7", "--batch-tokens", "64")

    result = read_output(out)
    assert_scored(result, table.to_pydict())
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(parts) == math.ceil(n / 7)
    assert parts == [f"part-{i:06d}.parquet" for i in range(len(parts))]
    for i, part in enumerate(parts):
        assert pq.read_table(out / part).column("pos").to_pylist() == list(range(i * 7, min(n, (i + 1) * 7)))
    manifest = manifest_of(out)
    assert manifest["rows"] == n and manifest["chunks"] == len(parts)

    # Scores land on their own rows, despite sorting and batching.
    reference = _reference_scores(tiny_model, texts)
    assert result.column("label").to_pylist() == [label for label, _ in reference]
    np.testing.assert_allclose(result.column("score").to_numpy(), [s for _, s in reference], atol=1e-4)


def test_order_kept_with_dataloader_workers(tmp_path, tiny_model):
    n = 53
    table = pa.table({"pos": list(range(n)), "text": [("word " * (1 + (i * 7) % 13)).strip() for i in range(n)]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=6)
    out = tmp_path / "out"
    score(tmp_path / "in.parquet", tiny_model, out, "--chunk-rows", "4", "--num-workers", "2")
    assert_scored(read_output(out), table.to_pydict())
    assert len(list(out.glob("part-*.parquet"))) == math.ceil(n / 4)


def test_null_empty_and_whitespace_texts_are_kept_unscored(tmp_path, tiny_model):
    texts = ["fine", None, "", "   ", "\t\n", "great movie", None, "ok"]
    table = pa.table({"id": list(range(len(texts))), "text": pa.array(texts, pa.string())})
    pq.write_table(table, tmp_path / "in.parquet")
    out = tmp_path / "out"
    score(tmp_path / "in.parquet", tiny_model, out, "--chunk-rows", "3")
    result = read_output(out)
    assert_scored(result, table.to_pydict())
    assert result.column("label").is_null().to_pylist() == [t is None or not t.strip() for t in texts]
    manifest = manifest_of(out)
    assert manifest["rows"] == len(texts)
    assert manifest["empty_text_rows"] == 5
    assert manifest["scored_rows"] == 3
    assert sum(manifest["label_counts"].values()) == 3


def test_all_texts_empty_chunk(tmp_path, tiny_model):
    table = pa.table({"id": [1, 2, 3, 4], "text": pa.array([None, "", "a b", " "], pa.string())})
    pq.write_table(table, tmp_path / "in.parquet")
    score(tmp_path / "in.parquet", tiny_model, tmp_path / "out", "--chunk-rows", "2")
    result = read_output(tmp_path / "out")
    assert_scored(result, table.to_pydict())
    assert result.column("label").is_null().to_pylist() == [True, True, False, True]


def test_parquet_output_is_one_merged_file(tmp_path, tiny_model):
    rows = [{"id": i, "text": f"review {i} " + "word " * (i % 5)} for i in range(20)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "scored.parquet"
    score(tmp_path / "in.jsonl", tiny_model, out, "--chunk-rows", "6")
    assert out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "scored.parquet"]  # no hidden parts left
    result = read_output(out)
    assert_scored(result, columns_of(rows))
    manifest = manifest_of(out)
    assert manifest["rows"] == 20 and manifest["chunks"] == 4


def test_manifest_counts(tmp_path, tiny_model):
    texts = ["good", "", "bad", None, "meh", "  "]
    write_jsonl(tmp_path / "in.jsonl", [{"text": t, "n": i} for i, t in enumerate(texts)])
    out = tmp_path / "out"
    score(tmp_path / "in.jsonl", tiny_model, out, "--chunk-rows", "4")
    manifest = manifest_of(out)
    assert manifest["rows"] == 6
    assert manifest["empty_text_rows"] == 3
    assert manifest["scored_rows"] == 3
    assert manifest["chunks"] == 2
    assert manifest["model"] == tiny_model
    assert manifest["input_files"] == [str(tmp_path / "in.jsonl")]
    assert sorted(n for n in os.listdir(out) if not n.startswith(".")) == [
        "_SUCCESS",
        "_batchscore",
        "_manifest.parquet",
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    assert_scored(read_output(out), {"text": texts, "n": list(range(6))})


# ----------------------------------------------------------- plan.iter_chunks


def _batches(sizes: list[int]) -> list[pa.RecordBatch]:
    batches, start = [], 0
    for size in sizes:
        batches.append(pa.record_batch({"i": pa.array(range(start, start + size), pa.int64())}))
        start += size
    return batches


def test_iter_chunks_boundaries_across_uneven_batches():
    batches = _batches([3, 0, 10, 1, 1, 7, 2])  # 24 rows
    chunks = list(iter_chunks(batches, chunk_rows=5))
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4]
    assert [c.start for c in chunks] == [0, 5, 10, 15, 20]
    assert [c.num_rows for c in chunks] == [5, 5, 5, 5, 4]
    for c in chunks:
        assert c.table.column("i").to_pylist() == list(range(c.start, c.start + c.num_rows))
        assert isinstance(c.table, pa.Table)


def test_iter_chunks_exact_multiple_has_no_empty_tail():
    chunks = list(iter_chunks(_batches([4, 4, 4]), chunk_rows=6))
    assert [c.num_rows for c in chunks] == [6, 6]


def test_iter_chunks_accepts_tables():
    tables = [pa.Table.from_batches([b]) for b in _batches([4, 5])]
    chunks = list(iter_chunks(tables, chunk_rows=3))
    assert [c.table.column("i").to_pylist() for c in chunks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


@pytest.mark.parametrize("limit, sizes", [(11, [3, 10, 1, 1, 7, 2]), (3, [3, 10]), (10, [4, 4, 4]), (100, [4, 5])])
def test_iter_chunks_limit(limit, sizes):
    chunks = list(iter_chunks(_batches(sizes), chunk_rows=4, limit=limit))
    rows = [v for c in chunks for v in c.table.column("i").to_pylist()]
    assert rows == list(range(min(limit, sum(sizes))))
    assert all(c.num_rows == 4 for c in chunks[:-1])


def test_iter_chunks_limit_stops_reading():
    read = []

    def gen():
        for b in _batches([5] * 10):
            read.append(b)
            yield b

    list(iter_chunks(gen(), chunk_rows=4, limit=7))
    assert len(read) <= 3


def test_iter_chunks_owns_filter():
    batches = _batches([7, 6, 9, 3])  # 25 rows
    everything = {c.index: c for c in iter_chunks(batches, chunk_rows=4)}
    odd = list(iter_chunks(batches, chunk_rows=4, owns=lambda i: i % 2 == 1))
    assert [c.index for c in odd] == [1, 3, 5]
    for c in odd:
        assert c.start == everything[c.index].start == c.index * 4
        assert c.table.equals(everything[c.index].table)
    tail = list(iter_chunks(batches, chunk_rows=4, owns=lambda i: i == 6))
    assert [(c.index, c.start, c.table.column("i").to_pylist()) for c in tail] == [(6, 24, [24])]
    assert list(iter_chunks(batches, chunk_rows=4, owns=lambda i: False)) == []


# -------------------------------------------------------- batches.cut_batches


def _check_batches(lengths, budget, pad_multiple):
    lengths = np.asarray(lengths, dtype=np.int64)
    groups = cut_batches(lengths, budget, pad_multiple)
    flat = np.concatenate(groups) if groups else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # each index exactly once
    padded = lengths.copy()
    if pad_multiple:
        padded = -(-padded // pad_multiple) * pad_multiple
    for group in groups:
        assert len(group) >= 1
        if len(group) > 1:
            assert len(group) * padded[group].max() <= budget
            # at most 10% of a batch's tokens are padding
            assert lengths[group].sum() >= 0.9 * len(group) * padded[group].max()
    ordered = lengths[flat]
    assert np.all(np.diff(ordered) >= 0)  # sorted by length, batch after batch
    return groups


@pytest.mark.parametrize("pad_multiple", [None, 8])
@pytest.mark.parametrize("budget", [1, 16, 64, 500])
def test_cut_batches_respects_budget(budget, pad_multiple):
    rng = np.random.default_rng(budget)
    lengths = rng.integers(1, 120, size=200)
    groups = _check_batches(lengths, budget, pad_multiple)
    if budget == 1:
        assert all(len(g) == 1 for g in groups)


def test_cut_batches_packs_greedily():
    groups = _check_batches([4] * 10, budget=16, pad_multiple=None)
    assert [len(g) for g in groups] == [4, 4, 2]


def test_cut_batches_keeps_short_and_long_rows_apart():
    # One budget would fit all 20 rows, but padding the 3-token rows to 55 wastes most of the batch.
    groups = _check_batches([3] * 10 + [55] * 10, budget=10_000, pad_multiple=None)
    assert [sorted(g.tolist()) for g in groups] == [list(range(10)), list(range(10, 20))]


def test_cut_batches_long_row_alone():
    groups = _check_batches([3, 200, 2, 5], budget=20, pad_multiple=None)
    assert groups[-1].tolist() == [1]


def test_cut_batches_empty():
    assert cut_batches(np.array([], dtype=np.int64), 100, None) == []

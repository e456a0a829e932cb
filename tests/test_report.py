"""batchscore report: counts and shares checked against pandas on the output, hostile text escaped, every output
form (sharded, single file, S3, still running), memory flat with size, the page rendered in headless Chromium.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_error, assert_ok, invoke, manifest_of, run_score

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
SOURCES = ["news", "forum", "reviews", "<b>bold</b>", "$x$ money"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """300 rows: varied texts (one hostile, a few empty), a source column and a date column."""
    rng = np.random.default_rng(3)
    words = "good bad film awful great plot boring lovely slow sharp dull bright".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(300)]
    texts[7] = HOSTILE
    for i in (11, 120, 250):
        texts[i] = ""
    frame = pd.DataFrame(
        {
            "id": range(300),
            "text": texts,
            "source": [SOURCES[i % len(SOURCES)] for i in range(300)],
            "day": [f"2024-{1 + i % 3:02d}-{1 + i % 28:02d}" for i in range(300)],
        }
    )
    path = tmp_path_factory.mktemp("corpus") / "in.parquet"
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def scored(corpus, three_label_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored") / "out"
    assert_ok(run_score(corpus, three_label_model, out, "--chunk-rows", "64", "--top-k", "all", "--id-column", "id"))
    return out


def report(out, *extra):
    result = invoke(["report", out, *extra])
    assert_ok(result)
    return result


def page_tables(page: str) -> list[list[list[str]]]:
    """Every <table> of the page as rows of cell texts (unescaped)."""
    tables = []
    for table in re.findall(r"<table>(.*?)</table>", page, flags=re.S):
        rows = []
        for row in re.findall(r"<tr>(.*?)</tr>", table, flags=re.S):
            cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)
            rows.append([html.unescape(c) for c in cells])
        tables.append(rows)
    return tables


def label_table(page: str) -> dict[str, list[str]]:
    for table in page_tables(page):
        if table and table[0][:3] == ["label", "rows", "share"]:
            return {row[0]: row[1:] for row in table[1:]}
    raise AssertionError("no label table")


def test_counts_shares_and_low_confidence_match_pandas(scored, tmp_path):
    out_png = tmp_path / "png"
    result = report(scored, "--png", out_png, "--by", "source", "--by", "day:month", "--low-confidence", "0.5")
    path = f"{scored}.report.html"
    assert path in result.stderr  # says where the page went
    page = open(path, encoding="utf-8").read()
    frame = pq.read_table(scored).to_pandas()
    scored_rows = frame[frame["label"].notna()]
    assert len(scored_rows) == 297
    table = label_table(page)
    counts = scored_rows["label"].value_counts()
    assert set(table) == set(counts.index)
    for label, count in counts.items():
        rows, share, low, _ = table[label]
        assert int(rows.replace(",", "")) == count
        assert share == f"{count / len(scored_rows):.1%}"
        expected_low = int((scored_rows.loc[scored_rows["label"] == label, "score"] < 0.5).sum())
        assert int(low.replace(",", "")) == expected_low
    total_low = int((scored_rows["score"] < 0.5).sum())
    assert f"{total_low:,} rows ({total_low / len(scored_rows):.1%})</b> score below" in page
    # The charts: labels, scores, margin, one per --by, time; each also a PNG.
    charts = re.findall(r'data-chart="([^"]+)"', page)
    assert charts == ["labels", "scores", "margin", "by-source-value", "by-day-month", "time"]
    assert sorted(os.listdir(out_png)) == sorted(f"{c}.png" for c in charts)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from the network


def test_histograms_groups_and_margins_match_pandas(scored):
    from batchscore.report import write_report

    facts = write_report(str(scored), by=["source", "day:month"], low_confidence=0.6).facts
    frame = pq.read_table(scored).to_pandas()
    valid = frame[frame["label"].notna()]
    (model,) = facts.models
    for index, label in enumerate(model.labels):
        scores = valid.loc[valid["label"] == label, "score"].to_numpy(np.float64)
        expected = np.bincount(np.clip((scores * 40).astype(int), 0, 39), minlength=40)
        assert model.hist[index].tolist() == expected.tolist(), label
    by_source = valid.groupby(["source", "label"]).size()
    got = {
        (source, model.labels[i]): n
        for source, counts in model.groups["source"].items()
        for i, n in enumerate(counts)
        if n
    }
    assert got == by_source.to_dict()
    months = valid.assign(month=valid["day"].str[:7]).groupby(["month", "label"]).size()
    got = {
        (month, model.labels[i]): n
        for month, counts in model.groups["day (by month)"].items()
        for i, n in enumerate(counts)
        if n
    }
    assert got == months.to_dict()
    first_two = np.array([[e["score"] for e in row[:2]] for row in valid["scores"]], dtype=np.float64)
    margins = first_two[:, 0] - first_two[:, 1]
    assert model.margin is not None
    assert model.margin.tolist() == np.bincount(np.clip((margins * 40).astype(int), 0, 39), minlength=40).tolist()
    # Samples: the lowest scores, in order, with their own texts.
    lowest = valid.nsmallest(10, "score")
    assert [s.id for s in model.lowest] == lowest["id"].tolist()
    assert [s.text for s in model.lowest] == [t[:300] for t in lowest["text"]]
    for samples in model.random.values():
        for sample in samples:
            row = frame.iloc[sample.number]
            assert (row["id"], row["label"], row["text"]) == (sample.id, sample.label, sample.text)


def test_hostile_text_and_values_stay_text(scored, tmp_path):
    path = tmp_path / "r.html"
    report(scored, "-o", path, "--by", "source", "--samples", "300")
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert html.escape(HOSTILE) in page  # shown, escaped
    assert page.count("<b>") == 1  # the page's own bold: the low-confidence line


def test_sharded_and_single_file_outputs(corpus, three_label_model, tmp_path):
    sharded = tmp_path / "sharded"
    for i in range(2):
        shard = ["--num-shards", "2", "--shard-index", str(i)]
        assert_ok(run_score(corpus, three_label_model, sharded, "--chunk-rows", "64", *shard))
    assert_ok(invoke(["finalize", sharded]))
    single = tmp_path / "single.parquet"
    assert_ok(run_score(corpus, three_label_model, single, "--chunk-rows", "64"))
    expected = pq.read_table(single).to_pandas()["label"].value_counts()
    for out, default in ((sharded, f"{sharded}.report.html"), (single, str(tmp_path / "single.report.html"))):
        report(out)
        page = open(default, encoding="utf-8").read()
        table = label_table(page)
        assert {k: int(v[0].replace(",", "")) for k, v in table.items()} == expected.to_dict()
        assert "complete" in page and 'data-chart="time"' in page
    assert not any(n.endswith(".html") for n in os.listdir(sharded))  # beside the output, never inside
    # Two shards: the time chart's legend names both.
    page = open(f"{sharded}.report.html", encoding="utf-8").read()
    assert "2 of 2" not in page and "in progress" not in page


def test_still_running_output_reports_how_far_it_is(corpus, three_label_model, tmp_path):
    """Shard 0 of 2 done, shard 1 not started: 3 of 5 chunks, the rows so far."""
    out = tmp_path / "running"
    shard = ["--num-shards", "2", "--shard-index", "0"]
    assert_ok(run_score(corpus, three_label_model, out, "--chunk-rows", "64", *shard))
    report(out)
    page = open(f"{out}.report.html", encoding="utf-8").read()
    assert "in progress: 3 of 5 chunks (60%)" in page
    parts = pq.read_table(out).to_pandas()  # what is committed so far
    table = label_table(page)
    assert sum(int(v[0]) for v in table.values()) == parts["label"].notna().sum()


def test_object_store_output(s3_server, s3_bucket, corpus, three_label_model, tmp_path):
    out = f"s3://{s3_bucket}/scored"
    assert_ok(run_score(corpus, three_label_model, out, "--chunk-rows", "64"))
    result = report(out, "--by", "source")
    path = f"s3://{s3_bucket}/scored.report.html"
    assert path in result.stderr
    from stores import s3fs_for

    fs = s3fs_for(s3_server)
    page = fs.cat(f"{s3_bucket}/scored.report.html").decode()
    assert 'data-chart="by-source-value"' in page
    assert not [k for k in fs.find(f"{s3_bucket}/scored") if k.endswith(".html")]
    local = run_score_local_counts(fs, f"{s3_bucket}/scored")
    assert {k: int(v[0]) for k, v in label_table(page).items()} == local


def run_score_local_counts(fs, folder):
    import pyarrow.dataset as ds

    table = ds.dataset(folder, filesystem=fs, format="parquet").to_table(columns=["label"])
    return table.to_pandas()["label"].value_counts().to_dict()


def test_score_report_writes_it_when_the_run_completes(corpus, three_label_model, tmp_path):
    out = tmp_path / "o"
    result = assert_ok(run_score(corpus, three_label_model, out, "--chunk-rows", "64", "--report"))
    path = f"{out}.report.html"
    assert result.stderr.strip().splitlines()[-1].endswith(f"-> {out}; report: {path}")
    assert manifest_of(out)["report"] == path
    assert label_table(open(path, encoding="utf-8").read())
    # A shard leaves the report to whoever completes the output.
    shard = tmp_path / "s"
    assert_ok(run_score(corpus, three_label_model, shard, "--num-shards", "2", "--shard-index", "0", "--report"))
    assert not os.path.exists(f"{shard}.report.html")


def test_report_inside_the_output_is_refused(scored):
    before = sorted(os.listdir(scored))
    assert_error(invoke(["report", scored, "-o", scored / "r.html"]), 2, "would be inside the output")
    assert sorted(os.listdir(scored)) == before


def test_bad_outputs_are_one_line(tmp_path):
    assert_error(invoke(["report", tmp_path / "nowhere"]), 5, "not found")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    assert_error(invoke(["report", tmp_path / "other"]), 5, "not a batchscore output")


def test_by_a_missing_column_names_the_columns(scored):
    assert_error(invoke(["report", scored, "--by", "nope"]), 2, "--by column 'nope' is not in the output", "source")


def test_by_spec_errors_are_one_line_before_any_page(scored, tmp_path):
    """Every wrong --by is exit 2 with one line naming the column, what it holds and the fix; no page is written."""
    page = tmp_path / "r.html"
    cases = [
        # free text is not a date: a :unit would cut "good bad film" to "good ba"
        (["text:month"], "--by text:month: column 'text' holds text that is not an ISO date ('"),
        (["id:year"], "--by id:year: column 'id' holds int64, not dates"),
        (["scores"], "--by scores: column 'scores' holds list<"),
        (["day:week"], "--by day:week: 'week' is not a unit; units are :year, :month, :day"),
        (["nope:month"], "--by column 'nope' is not in the output"),
        ([":month"], "--by ':month' names no column"),
    ]
    for spec, fragment in cases:
        line = assert_error(invoke(["report", scored, "-o", page, "--by", *spec]), 2, fragment)
        assert not page.exists(), line
    assert "a :unit applies to a date or timestamp column" in assert_error(
        invoke(["report", scored, "-o", page, "--by", "text:month"]), 2
    )
    # ISO date text still works (the corpus's `day` column is text like 2024-01-01).
    report(scored, "-o", page, "--by", "day:month")
    assert 'data-chart="by-day-month"' in page.read_text(encoding="utf-8")


TOPICS = 45


@pytest.fixture(scope="module")
def many_values(three_label_model, tmp_path_factory):
    """400 rows whose `topic` has 45 distinct values of unequal sizes (a few rows without text), scored."""
    rng = np.random.default_rng(5)
    words = "good bad film awful great plot boring lovely slow sharp dull bright".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 10)))) for _ in range(400)]
    for i in (3, 77, 390):
        texts[i] = ""
    weights = 1.0 / np.arange(1, TOPICS + 1)
    topics = rng.choice(TOPICS, size=400, p=weights / weights.sum())
    topics[:TOPICS] = np.arange(TOPICS)  # every value at least once
    folder = tmp_path_factory.mktemp("many")
    pq.write_table(pa.table({"text": texts, "topic": [f"topic {k:02d}" for k in topics]}), folder / "in.parquet")
    out = folder / "out"
    assert_ok(run_score(folder / "in.parquet", three_label_model, out, "--chunk-rows", "64"))
    return out


def other_line(page: str) -> str:
    found = re.findall(r'<p class="other">(.*?)</p>', page, flags=re.S)
    assert len(found) == 1, found
    return html.unescape(re.sub(r"<[^>]+>", "", found[0]))


def test_other_says_how_many_values_and_rows_it_holds(many_values, tmp_path):
    """Past the 30 largest groups drawn, the page says how many values and rows were summed as "other"."""
    from batchscore.report.collect import TOP_GROUPS

    page_path = tmp_path / "r.html"
    report(many_values, "-o", page_path, "--by", "topic")
    frame = pq.read_table(many_values).to_pandas()
    sizes = frame[frame["label"].notna()]["topic"].value_counts()
    assert len(sizes) == TOPICS
    ranked = sorted(sizes.items(), key=lambda p: (-p[1], p[0]))
    rest = ranked[TOP_GROUPS:]
    rows = sum(n for _, n in rest)
    expected = (
        f"The {TOP_GROUPS} largest of {TOPICS} values are drawn; the other {len(rest)} values "
        f"({rows:,} rows, {rows / sizes.sum():.1%}) are summed as 'other'."
    )
    page = page_path.read_text(encoding="utf-8")
    assert other_line(page) == expected
    # The chart's own bar says it too.
    svg = base64_chart(page, "by-topic-value")
    assert f"other: {len(rest)} values ({rows:,})" in svg


def test_other_counts_the_values_past_the_memory_cap(many_values, tmp_path, monkeypatch):
    """Past MAX_GROUPS distinct values, rows are counted as "other" without their own group: the page says how
    many rows, and how many distinct values (counted up to MAX_OTHER_VALUES, then "more than")."""
    from batchscore.report import collect

    frame = pq.read_table(many_values).to_pandas()
    valid = frame[frame["label"].notna()]
    page_path = tmp_path / "r.html"

    def run(max_groups):
        monkeypatch.setattr(collect, "MAX_GROUPS", max_groups)
        (model,) = invoke_facts(many_values, page_path, "topic").models
        kept = model.groups["topic"]
        assert len(kept) == max_groups and collect.OTHER not in kept
        overflow = model.overflow["topic"]
        assert overflow.rows == len(valid[~valid["topic"].isin(list(kept))])
        return kept, overflow, other_line(page_path.read_text(encoding="utf-8"))

    def rows(n):
        return f"{n:,} rows, {n / len(valid):.1%}"

    kept, overflow, line = run(8)  # all 8 counted are drawn
    assert overflow.values == TOPICS - 8 and not overflow.more
    assert line == (
        f"Only the first 8 distinct values read are counted one by one, and drawn; the other {TOPICS - 8} values "
        f"({rows(overflow.rows)}) are summed as 'other' (one read after may be larger than a group drawn)."
    )
    kept, overflow, line = run(35)  # 30 of the 35 counted drawn: "other" holds 5 of them and the 10 read after
    assert overflow.values == TOPICS - 35 and not overflow.more
    smallest = sum(sorted((sum(c) for c in kept.values()), reverse=True)[30:])
    assert line == (
        "Only the first 35 distinct values read are counted one by one, and the 30 largest of them drawn; the "
        f"other 5 of them and 10 values read after ({rows(smallest + overflow.rows)}) are summed as 'other' (one "
        "read after may be larger than a group drawn)."
    )
    # Too many to count one by one: a lower bound, said as one.
    monkeypatch.setattr(collect, "MAX_OTHER_VALUES", 10)
    kept, overflow, line = run(8)
    assert overflow.values == 10 and overflow.more
    assert line == (
        "Only the first 8 distinct values read are counted one by one, and drawn; the other values, more than 10 "
        f"of them ({rows(overflow.rows)}), are summed as 'other' (one read after may be larger than a group drawn)."
    )
    assert "other: more than 10 values" in base64_chart(page_path.read_text(encoding="utf-8"), "by-topic-value")


def invoke_facts(out, page_path, *by):
    from batchscore.report import write_report

    return write_report(str(out), str(page_path), by=list(by)).facts


def base64_chart(page: str, name: str) -> str:
    import base64

    found = re.search(rf'data-chart="{re.escape(name)}"[^>]*src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert found, name
    return base64.b64decode(found.group(1)).decode()


IMPORTED = """
import atexit, sys
atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith(("batchscore.report", "matplotlib")))))
from batchscore.cli import main
main(sys.argv[1:])
"""


def test_score_does_not_import_the_report(tiny_model, three_row_csv, tmp_path):
    """A whole `batchscore score` run never imports the report package or matplotlib (start-up and memory stay
    as they were); `batchscore report` does, so the probe can see them."""
    out = tmp_path / "out"
    args = ["score", three_row_csv, "--model", tiny_model, "-o", out, "--no-progress"]
    done = subprocess.run([sys.executable, "-c", IMPORTED, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    done = subprocess.run([sys.executable, "-c", IMPORTED, "report", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "'batchscore.report'" in done.stdout and "'matplotlib'" in done.stdout


# ------------------------------------------------------------------ memory, and a real browser (slow)


def _fake_output(part: str, out, copies: int) -> None:
    """`copies` parts of one run: a real part copied under consecutive chunk numbers (the report reads parts)."""
    os.makedirs(out)
    for i in range(copies):
        shutil.copy(part, os.path.join(out, f"part-{i:06d}.parquet"))


RSS = """
import resource, sys
from batchscore.report import write_report
report = write_report(sys.argv[1], sys.argv[2], by=["source"])
print(report.facts.rows_read, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_stays_flat_from_10k_to_1m_rows(three_label_model, tmp_path):
    rng = np.random.default_rng(0)
    words = np.array("good bad film awful great plot boring lovely slow sharp dull bright".split())
    texts = [" ".join(rng.choice(words, size=20)) + f" {i}" for i in range(10_000)]
    source = pa.table({"text": texts, "source": [f"s{i % 50}" for i in range(10_000)]})
    pq.write_table(source, tmp_path / "in.parquet")
    one = tmp_path / "one"
    assert_ok(run_score(tmp_path / "in.parquet", three_label_model, one, "--chunk-rows", "10000", "--top-k", "all"))
    part = str(one / "part-000000.parquet")
    peaks = {}
    for copies in (1, 100):
        out = tmp_path / f"x{copies}"
        _fake_output(part, out, copies)
        done = subprocess.run(
            [sys.executable, "-c", RSS, str(out), str(tmp_path / f"x{copies}.html")],
            capture_output=True,
            text=True,
            check=True,
        )
        rows, peak = map(int, done.stdout.split())
        assert rows == 10_000 * copies
        peaks[copies] = peak
    assert peaks[100] / peaks[1] <= 1.2, peaks


CHECK = """
<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener("load", () => {
  const out = [];
  for (const img of document.querySelectorAll("img.plot")) {
    const r = img.getBoundingClientRect();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext("2d");
    g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
    let inked = -1;
    try {
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      inked = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200) inked++;
      inked = inked / (c.width * c.height);
    } catch (err) { window.__errors.push("canvas: " + err); }
    out.push({name: img.dataset.chart, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
              x: r.x, y: r.y + window.scrollY, rw: r.width, rh: r.height, inked: inked});
  }
  const pre = document.createElement("pre");
  pre.id = "__result";
  pre.textContent = JSON.stringify({charts: out, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>
"""


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def headless(*args):
    base = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"]
    return subprocess.run([*base, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_the_page_renders_in_headless_chromium(scored, tmp_path):
    from PIL import Image

    page_path = tmp_path / "page.html"
    report(scored, "-o", page_path, "--by", "source", "--by", "day:month")
    page = page_path.read_text(encoding="utf-8")
    expected = re.findall(r'data-chart="([^"]+)"', page)
    assert len(expected) == 6
    # The same page with a probe script: each chart decoded, its size, how much of it is ink, any error.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</head>", CHECK + "</head>", 1), encoding="utf-8")
    dumped = headless("--window-size=1200,900", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="__result">(.*?)</pre>', dumped.stdout, flags=re.S)
    assert found, dumped.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["errors"] == []
    assert [c["name"] for c in result["charts"]] == expected
    for chart in result["charts"]:
        assert chart["complete"] and chart["w"] > 200 and chart["h"] > 100, chart
        assert 0.005 < chart["inked"] < 0.9, chart  # drawn: neither blank nor a solid block
    # The real page, as a person sees it: every chart's area on the screenshot holds ink.
    height = int(max(c["y"] + c["rh"] for c in result["charts"])) + 50
    shot = tmp_path / "shot.png"
    headless(f"--window-size=1200,{height}", f"--screenshot={shot}", page_path.as_uri())
    image = Image.open(shot).convert("L")
    assert image.size == (1200, height)
    for chart in result["charts"]:
        box = (int(chart["x"]), int(chart["y"]), int(chart["x"] + chart["rw"]), int(chart["y"] + chart["rh"]))
        pixels = np.asarray(image.crop(box))
        assert (pixels < 200).mean() > 0.005, chart["name"]

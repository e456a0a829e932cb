"""Progress per batch: the scoring core reports each batch's rows and tokens; the job shows a bar on a terminal,
and in a log one line every --progress-every seconds (JSON events with --log-format json)."""

from __future__ import annotations

import itertools
import json
import logging

import pyarrow as pa
import pytest

from batchscore.config import ModelSpec
from batchscore.plan import Chunk
from batchscore.progress import Progress
from batchscore.scoring import ScoringRules, open_scorers
from helpers import assert_ok, invoke

WORDS = "good bad film awful great plot boring lovely slow sharp dull bright".split()


def texts(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 40)) for i in range(n)]


def scorers(*models):
    """The scoring core over (model folder, its options) pairs, 256-token batches."""
    return open_scorers(
        [ScoringRules(spec=ModelSpec(model=path, **options), batch_tokens=256) for path, options in models]
    )


def reported(scorer, table):
    calls = []
    works = scorer.worker_step.encode(Chunk(0, 0, table), ["text"])
    scorer.score(works, lambda rows, tokens: calls.append((rows, tokens)))
    return works, calls


@pytest.mark.parametrize("long_text", ["truncate", "window"])
def test_each_batch_reports_its_share_of_rows_and_its_tokens(tiny_model, long_text):
    scorer = scorers((tiny_model, dict(long_text=long_text, window_overlap=2, max_length=16)))
    table = pa.table({"text": texts(300) + [None, ""]})
    works, calls = reported(scorer, table)
    (work,) = works.items
    assert len(calls) == len(work.batches) > 10  # per batch, not once per chunk
    assert sum(rows for rows, _ in calls) == pytest.approx(302)  # the chunk's rows, empty ones included
    assert sum(tokens for _, tokens in calls) == work.real_tokens


def test_several_models_add_up_to_the_chunk_once(tiny_model, three_label_model):
    scorer = scorers((tiny_model, {}), (three_label_model, dict(prefix="b_")))
    works, calls = reported(scorer, pa.table({"text": texts(200)}))
    assert sum(rows for rows, _ in calls) == pytest.approx(200)
    assert sum(tokens for _, tokens in calls) == 2 * works.items[0].real_tokens  # each model scores every token


def test_progress_lines_every_n_seconds(caplog):
    now = [0.0]
    progress = Progress(total=1000, label="", bar=False, every=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="batchscore.progress"), progress:
        for second in range(1, 301):  # a batch of 3 rows and 30 tokens a second; a chunk of 100 rows written
            now[0] = float(second)  # every 33 s
            progress.batch(3.0, 30)
            if second % 33 == 0:
                progress.chunk(100)
    lines = [r for r in caplog.records if r.name == "batchscore.progress"]
    # At 60 s: one chunk written (100 rows) and 27 batches (81 rows) of the next since; and so on.
    assert [r.fields["rows_done"] for r in lines] == [181, 363, 545, 727, 909]
    first = lines[0]
    assert first.getMessage().startswith("Progress: 181 of 1,000 rows (18.1%), 3 rows/s, 30 tokens/s, ETA 4m3")
    assert {k: v for k, v in first.fields.items() if k != "eta_seconds"} == {
        "event": "progress",
        "rows_done": 181,
        "rows_total": 1000,
        "percent": 18.1,
        "rows_per_second": 3.0,
        "tokens_per_second": 30.0,
    }
    assert first.fields["eta_seconds"] == pytest.approx((1000 - 181) / (181 / 60), abs=0.1)


def test_a_run_without_terminal_logs_json_progress_events(tiny_model, tmp_path, monkeypatch):
    """Under cron: no bar, a JSON event per --progress-every seconds (a fake clock: 1 s per look), rows growing
    batch by batch inside a chunk, then the summary."""
    import batchscore.progress

    ticks = itertools.count()
    monkeypatch.setattr(batchscore.progress, "now", lambda: float(next(ticks)))
    path = tmp_path / "in.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts(1200)}), path)
    out = tmp_path / "out"
    args = ["score", path, "--model", tiny_model, "-o", out, "--chunk-rows", "500", "--batch-tokens", "512"]
    result = assert_ok(invoke([*args, "--log-format", "json", "--progress-every", "5"]))
    events = [json.loads(line) for line in result.stderr.splitlines()]
    progress = [e for e in events if e.get("event") == "progress"]
    assert len(progress) > 3
    done = [e["rows_done"] for e in progress]
    assert done == sorted(done) and done[-1] <= 1200
    assert any(d % 500 for d in done)  # inside a chunk: the count moved with its batches
    assert all(e["rows_total"] == 1200 and e["eta_seconds"] is not None for e in progress)
    assert "\r" not in result.stderr  # no bar redrawn into the log
    assert events[-1]["message"].startswith("Scored 1200 of 1200 rows")
    # --no-progress: nothing; --progress: the bar, with tokens/s
    quiet = assert_ok(invoke([*args, "--overwrite", "--no-progress", "--progress-every", "5"]))
    assert "Progress" not in quiet.stderr
    bar = assert_ok(invoke([*args, "--overwrite", "--progress"]))
    assert "scoring" in bar.stderr and "tokens/s" in bar.stderr and "Progress:" not in bar.stderr

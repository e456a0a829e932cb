"""--precision fastest: the choice made on a sample of the input, recorded in the output, and reused by every
writer of it (a resume, another shard, a lost record's parts) instead of calibrating again."""

import json
import os

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

import batchscore
from batchscore.errors import ConfigError
from batchscore.output import Output
from batchscore.output.calibration import record, recorded
from batchscore.output.writer import OutputWriter
from batchscore.scoring import calibrate
from batchscore.scoring.calibrate import Measured, choose
from helpers import assert_error, invoke, manifest_of

ROWS, CHUNK = 240, 40  # 6 chunks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    words = "good bad fine awful great boring loved hated plot service really".split()
    texts = [" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(3 + i % 9)) for i in range(ROWS)]
    texts[7] = None  # no text: no label, in every precision
    path = folder / "in.parquet"
    pq.write_table(pa.table({"text": texts, "n": list(range(ROWS))}), path)
    return str(path)


def fastest(corpus, model, out, **options):
    options = {"calibration_rows": 20, **options}  # 240 rows: at least 10 x the sample, or it is not worth it
    return batchscore.score(corpus, str(out), model=model, precision="fastest", chunk_rows=CHUNK, **options)


@pytest.fixture
def choose_int8(monkeypatch):
    """The measurement runs as always; the choice is int8 whatever it measured, so the tests know what to expect."""
    monkeypatch.setattr(calibrate, "choose", lambda measured, bar: "int8")


@pytest.fixture
def never_calibrate(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("calibrated again, though the output records a choice")

    return lambda: monkeypatch.setattr(calibrate, "calibrate", refuse)


@pytest.fixture(scope="module")
def int8_scores(corpus, tiny_model, tmp_path_factory):
    """What --precision int8 gives these rows: a run calibrated to int8 must give exactly these."""
    out = tmp_path_factory.mktemp("int8") / "out"
    batchscore.score(corpus, str(out), model=tiny_model, precision="int8", chunk_rows=CHUNK)
    return pq.read_table(out).sort_by("n")


def same_scores(out, expected):
    got = pq.read_table(out).sort_by("n")
    assert got.column("label").to_pylist() == expected.column("label").to_pylist()
    assert got.column("score").to_pylist() == expected.column("score").to_pylist()


def interrupted(corpus, model, out, monkeypatch, after=2, **options):
    """A fastest run stopped once `after` chunks are committed, as a kill between chunks leaves it."""
    write = OutputWriter.write
    calls = []

    def stop_after(self, *args, **kwargs):
        if len(calls) == after:
            raise RuntimeError("stopped")
        calls.append(1)
        return write(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(OutputWriter, "write", stop_after)
        with pytest.raises(RuntimeError, match="stopped"):
            fastest(corpus, model, out, **options)
    return sorted(n for n in os.listdir(out) if n.startswith("part-"))


def test_choice_is_measured_logged_and_recorded_in_the_manifest(corpus, tiny_model, tmp_path, caplog):
    caplog.set_level("INFO", logger="batchscore")
    manifest = fastest(corpus, tiny_model, tmp_path / "out")
    calibration = manifest["calibration"]
    assert calibration["min_agreement"] == 0.999 and calibration["sample_rows"] == 20
    (entry,) = calibration["models"]
    measured = {m["precision"]: m for m in entry["measured"]}
    assert measured["fp32"]["agreement"] == 1.0 and "int8" in measured  # int8 is a candidate on every CPU
    assert all(m["rows_per_second"] > 0 and 0 <= m["agreement"] <= 1 for m in measured.values())
    assert entry["precision"] == choose([Measured(**m) for m in entry["measured"]], 0.999)
    assert manifest["config"]["precision"] == entry["precision"]  # what the parts were scored in
    assert manifest["run"]["precision"] == "fastest" and manifest["run"]["min_agreement"] == 0.999
    lines = [r.getMessage() for r in caplog.records if "calibrated on 20 rows" in r.getMessage()]
    assert len(lines) == 1 and "int8" in lines[0] and "--min-agreement 0.999" in lines[0]
    # The record goes once the output is complete: polars reads every file under an output folder.
    assert "calibration.json" not in os.listdir(tmp_path / "out" / "_batchscore")


def test_a_bar_of_one_keeps_fp32_even_against_a_faster_candidate_that_agreed_on_every_row():
    fp32 = Measured("fp32", 100.0, 1.0, 1000)
    measured = [fp32, Measured("int8", 300.0, 1.0, 1000), Measured("bf16", 200.0, 1.0, 1000)]
    assert choose(measured, 1.0) == "fp32"
    assert choose(measured, 0.999) == "int8"
    # Below the bar, not faster by the margin, or dropped before the end of the sample: fp32.
    assert choose([fp32, Measured("int8", 300.0, 0.99, 1000)], 0.999) == "fp32"
    assert choose([fp32, Measured("int8", 103.0, 1.0, 1000)], 0.999) == "fp32"
    assert choose([fp32, Measured("int8", 300.0, 1.0, 250)], 0.999) == "fp32"
    assert choose([fp32, Measured("int8", 300.0, 0.99, 1000)], 0.98) == "int8"


def test_candidates_that_cannot_win_are_dropped_early(tiny_model, monkeypatch):
    """A candidate that changes labels is out once it changed more than the bar allows on the whole sample: it
    is not scored on the rest, and fp32 stops with it."""
    from batchscore.config import ModelSpec
    from batchscore.scoring import open_scorers, rules_for
    from batchscore.scoring.rules import CLI_HINTS

    monkeypatch.setattr(calibrate, "candidates", lambda device: ["int8"])
    real = calibrate._scores

    def int8_flips_every_label(scorer, texts):
        scores = real(scorer, texts)
        return scores[:, ::-1] if scorer.loaded.precision == "int8" else scores  # every row's labels swapped

    monkeypatch.setattr(calibrate, "_scores", int8_flips_every_label)
    (rules,) = rules_for([ModelSpec(model=tiny_model, precision="fastest")], "text", None, CLI_HINTS)
    scorer = open_scorers([rules], calibrating=True).models[0]
    texts = pa.table({"text": [f"text number {i}" for i in range(400)]})
    choice, chosen = calibrate.calibrate(scorer, texts, 0.999)
    assert choice.precision == "fp32" and chosen is scorer
    fp32, int8 = choice.measured
    assert (fp32.rows, int8.rows, int8.agreement) == (50, 50, 0.0)  # one slice of 8, then nobody left to beat
    assert "below the bar, dropped after 50 rows" in choice.summary(0.999)
    assert calibrate.calibrate(scorer, texts, 1.0)[0].measured == ()  # a bar of 1: nothing to measure


def test_predicted_agreement_by_hand():
    """Margins (top less runner-up) 0.75, 0.25, 0.125, 0.5; the other precision moves those differences by 0.125,
    0, 0.25, 0. Only row 3's margin is under a move (0.25, one of the four): its chance 1/4, halved for the
    direction; the mean over 4 rows is 1/32. A row without text (NaN) counts for neither."""
    import numpy as np

    from batchscore.scoring.calibrate import predicted_agreement

    nan = [np.nan, np.nan]
    exact = np.array([[0.875, 0.125], [0.625, 0.375], nan, [0.5625, 0.4375], [0.25, 0.75]])
    other = np.array([[0.8125, 0.1875], [0.625, 0.375], nan, [0.4375, 0.5625], [0.25, 0.75]])
    assert predicted_agreement(exact, other) == 1 - 1 / 32  # counted: 3 of 4
    assert predicted_agreement(exact, exact) == 1.0
    assert predicted_agreement(exact[:, :1], other[:, :1]) is None  # one score: no runner-up
    # Counted, nothing changed; predicted, below the bar: the candidate does not pass.
    fp32 = Measured("fp32", 100.0, 1.0, 1000)
    assert choose([fp32, Measured("bf16", 200.0, 1.0, 1000, predicted=0.998)], 0.999) == "fp32"
    assert choose([fp32, Measured("bf16", 200.0, 1.0, 1000, predicted=0.9995)], 0.999) == "bf16"


def test_min_agreement_one_gives_fp32_end_to_end(corpus, tiny_model, tmp_path):
    manifest = fastest(corpus, tiny_model, tmp_path / "out", min_agreement=1)
    assert manifest["calibration"]["models"][0]["precision"] == "fp32"
    assert manifest["config"]["precision"] == "fp32"


def test_an_input_too_small_to_repay_calibrating_keeps_fp32(corpus, tiny_model, tmp_path, caplog, monkeypatch):
    caplog.set_level("INFO", logger="batchscore")
    monkeypatch.setattr(calibrate, "calibrate", lambda *a: pytest.fail("calibrated a 240-row input on 25 rows"))
    manifest = fastest(corpus, tiny_model, tmp_path / "out", calibration_rows=25)  # 240 < 10 x 25
    (entry,) = manifest["calibration"]["models"]
    assert entry["precision"] == "fp32" and entry["measured"] == [] and "240 rows" in entry["reason"]
    assert any("fewer than 10 x --calibration-rows 25" in r.getMessage() for r in caplog.records)


def test_resume_takes_the_recorded_choice(
    corpus, tiny_model, tmp_path, monkeypatch, choose_int8, never_calibrate, int8_scores
):
    out = tmp_path / "out"
    committed = interrupted(corpus, tiny_model, out, monkeypatch)
    assert len(committed) == 2
    assert json.loads((out / "_batchscore" / "calibration.json").read_text())["models"][0]["precision"] == "int8"
    never_calibrate()
    manifest = fastest(corpus, tiny_model, out)
    assert manifest["calibration"]["models"][0]["precision"] == "int8"
    same_scores(out, int8_scores)


def test_a_lost_record_is_read_back_from_the_parts(
    corpus, tiny_model, tmp_path, monkeypatch, choose_int8, never_calibrate, int8_scores
):
    out = tmp_path / "out"
    interrupted(corpus, tiny_model, out, monkeypatch)
    (out / "_batchscore" / "calibration.json").unlink()
    never_calibrate()
    fastest(corpus, tiny_model, out)
    same_scores(out, int8_scores)


def test_shards_take_the_first_shards_choice(
    corpus, tiny_model, tmp_path, monkeypatch, choose_int8, never_calibrate, int8_scores
):
    out = tmp_path / "out"
    fastest(corpus, tiny_model, out, num_shards=2, shard_index=0)
    never_calibrate()
    fastest(corpus, tiny_model, out, num_shards=2, shard_index=1)
    result = invoke(["finalize", str(out)])
    assert result.exit_code == 0, result.output
    manifest = manifest_of(out)
    assert manifest["calibration"]["models"][0]["precision"] == "int8"
    same_scores(out, int8_scores)


def test_first_record_wins(tmp_path):
    output = Output.open(str(tmp_path / "out"))
    first = {"min_agreement": 0.999, "models": [{"model": "m", "precision": "int8"}]}
    second = {"min_agreement": 0.999, "models": [{"model": "m", "precision": "fp32"}]}
    assert record(output, first) == first
    assert record(output, second) == first  # another writer recorded first: its choice is the output's
    assert recorded(output) == first
    assert record(output, second, replace=True) == second  # a whole --overwrite starts afresh
    assert recorded(output) == second
    assert [n for n in os.listdir(tmp_path / "out" / "_batchscore") if n.endswith(".tmp")] == []


def test_overwrite_calibrates_again_and_another_bar_is_another_run(corpus, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(calibrate, "choose", lambda measured, bar: "int8")
    fastest(corpus, tiny_model, out)
    monkeypatch.setattr(calibrate, "choose", lambda measured, bar: "fp32")
    assert fastest(corpus, tiny_model, out)["calibration"]["models"][0]["precision"] == "int8"  # complete: as is
    result = invoke(
        [
            "score",
            corpus,
            "-o",
            str(out),
            "--model",
            tiny_model,
            "--precision",
            "fastest",
            "--chunk-rows",
            str(CHUNK),
            "--min-agreement",
            "0.99",
        ]
    )
    assert_error(result, 5, "min_agreement", "--overwrite")
    assert fastest(corpus, tiny_model, out, overwrite=True)["calibration"]["models"][0]["precision"] == "fp32"


def test_calibration_options_need_fastest_and_the_library_scorer_refuses_it(corpus, tiny_model, tmp_path):
    result = invoke(["score", corpus, "-o", str(tmp_path / "o"), "--model", tiny_model, "--min-agreement", "0.99"])
    assert_error(result, 2, "--min-agreement 0.99 is for --precision fastest")
    result = invoke(
        [
            "score",
            corpus,
            "-o",
            str(tmp_path / "o"),
            "--model",
            tiny_model,
            "--precision",
            "fastest",
            "--min-agreement",
            "1.5",
        ]
    )
    assert_error(result, 2, "min_agreement", "from 0 to 1")
    with pytest.raises(ConfigError, match="fastest"):
        batchscore.Scorer(model=tiny_model, precision="fastest")


def test_sample_spreads_over_the_input(corpus, tmp_path):
    from batchscore.calibration import sample
    from batchscore.input import open_source

    spread = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" if i % 5 else None for i in range(1000)]}), spread)
    table, total = sample(open_source(str(spread), text_column="text"), "text", 30, None, 1000)
    texts = table.column("text").to_pylist()
    assert total == 1000
    assert len(texts) == 20 and None not in texts  # 10 runs of 3 rows, the first of each without text
    positions = sorted(int(t.split()[1]) for t in texts)
    assert positions[:2] == [1, 2] and positions[-1] == 902  # from the start to the last tenth
    table, total = sample(open_source(str(spread), text_column="text"), "text", 5000, None, 1000)
    assert (table.num_rows, total) == (800, 1000)  # a sample larger than the input: each row once
    # A CSV is read from the start, not twice over: every k-th row of the first 50 x N.
    csv = tmp_path / "in.csv"
    pa.csv.write_csv(pa.table({"text": [f"row {i}" for i in range(3000)]}), csv)
    table, total = sample(open_source(str(csv), text_column="text"), "text", 20, None, None)
    assert table.column("text").to_pylist() == [f"row {i}" for i in range(0, 1000, 50)]
    assert total is None  # not read to its end: its size is unknown
    table, total = sample(open_source(str(csv), text_column="text"), "text", 20, 100, None)  # --limit 100
    assert (table.num_rows, total) == (20, 100)
    assert sample(open_source(str(csv), text_column="text"), "text", 100, None, None)[1] == 3000  # read to the end

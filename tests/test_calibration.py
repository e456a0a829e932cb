"""--precision fastest: the choice made on a sample of the input, recorded in the output, and reused by every
writer of it (a resume, another shard, a lost record's parts) instead of calibrating again."""

import json
import os

import numpy as np
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
from helpers import assert_error, invoke, manifest_of, with_rechecks

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
def choose_int8(monkeypatch, margin):
    """The measurement runs as always; the choice is int8, rechecking rows within `margin` of a tie, whatever it
    measured, so the tests know what to expect."""
    monkeypatch.setattr(calibrate, "choose", lambda measured, bar: "int8")
    monkeypatch.setattr(calibrate, "recheck", lambda exact, other, function, bar: (margin, 0.5, None))


@pytest.fixture
def never_calibrate(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("calibrated again, though the output records a choice")

    return lambda: monkeypatch.setattr(calibrate, "calibrate", refuse)


@pytest.fixture(scope="module")
def oracles(corpus, tiny_model, tmp_path_factory):
    """What --precision int8 and --precision fp32 give these rows, in row order."""
    outputs = {}
    for precision in ("int8", "fp32"):
        out = tmp_path_factory.mktemp(precision) / "out"
        batchscore.score(corpus, str(out), model=tiny_model, precision=precision, chunk_rows=CHUNK)
        outputs[precision] = pq.read_table(out).sort_by("n")
    return outputs


@pytest.fixture(scope="module")
def margin(oracles):
    """A recheck margin near the middle of the rows' int8 gaps (log(p / (1 - p)) of two labels' top score p), in a
    space between two of them (not to depend on a score's last bits)."""
    score = np.array(oracles["int8"].column("score").to_pylist(), dtype=float)
    gaps = np.sort(np.log(score / (1 - score))[~np.isnan(score)])
    middle = len(gaps) // 2 + int(np.argmax(np.diff(gaps[len(gaps) // 2 :]) > 1e-3))
    return float((gaps[middle] + gaps[middle + 1]) / 2)


@pytest.fixture(scope="module")
def int8_rechecked(oracles, margin):
    """What a run calibrated to int8 with that margin must give: fp32's label and score for a row int8 scored
    within the margin of a tie, int8's for the others."""
    table, close, unsure = with_rechecks(oracles["int8"], oracles["fp32"], margin)
    assert not unsure.any()
    return {"label": table.column("label").to_pylist(), "score": table.column("score").to_pylist(), "close": close}


def same_scores(out, expected):
    got = pq.read_table(out).sort_by("n")
    assert got.column("label").to_pylist() == expected["label"]
    # fp32 rechecks a few rows of a batch at a time: its sums may differ from a whole batch's in the last bits.
    assert got.column("score").to_pylist() == pytest.approx(expected["score"], abs=1e-6, nan_ok=True)


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
    # Its speed with its rechecks is what counts; so is its predicted agreement, where there is one.
    rechecked = Measured("int8", 300.0, 0.99, 1000, 0.9995, 1.0, 0.2, 102.0)
    assert choose([fp32, rechecked], 0.999) == "fp32"
    assert choose([fp32, Measured("bf16", 200.0, 1.0, 1000, 0.998, 0.1, 0.01, 190.0)], 0.999) == "fp32"
    assert choose([fp32, rechecked, Measured("bf16", 200.0, 0.998, 1000, 0.9999, 0.1, 0.01, 190.0)], 0.999) == "bf16"


def test_candidates_that_cannot_win_are_dropped_early(tiny_model, monkeypatch):
    """A candidate is out once it is slower than fp32, its rechecks counted in: it is not scored on the rest."""
    from batchscore.config import ModelSpec
    from batchscore.scoring import open_scorers, rules_for
    from batchscore.scoring.rules import CLI_HINTS

    monkeypatch.setattr(calibrate, "candidates", lambda device: ["int8"])
    real = calibrate._scores

    def int8_flips_every_label(scorer, work):
        scores = real(scorer, work)
        return scores[:, ::-1] if scorer.loaded.precision == "int8" else scores  # every row's labels swapped

    monkeypatch.setattr(calibrate, "_scores", int8_flips_every_label)
    (rules,) = rules_for([ModelSpec(model=tiny_model, precision="fastest")], "text", None, CLI_HINTS)
    scorer = open_scorers([rules], calibrating=True).models[0]
    texts = pa.table({"text": [f"text number {i}" for i in range(400)]})
    choice, chosen = calibrate.calibrate(scorer, texts, 0.999)
    assert choice.precision == "fp32" and chosen is scorer
    fp32, int8 = choice.measured
    # Every label changed: every row must be rechecked, which makes it slower than fp32; out after the second
    # slice of 8 (the first may be slow for either), and fp32 stops with it.
    assert (fp32.rows, int8.rows, int8.rechecked) == (100, 100, 1.0) and int8.agreement < 0.05
    assert int8.speed() < fp32.rows_per_second
    assert "slower, dropped after 100 rows" in choice.summary(0.999)
    assert calibrate.calibrate(scorer, texts, 1.0)[0].measured == ()  # a bar of 1: nothing to measure


def by_gap_and_move(gaps, moves):
    """Logits of two labels (function none: the scores are the logits): fp32's top-two gaps, and another
    precision's, each moved by `moves`."""
    exact = np.array([[0.0, g] for g in gaps])
    return exact, exact + np.array([[0.0, m] for m in moves])


def test_recheck_margin_by_hand():
    """Ten rows, --min-agreement 0.99: a trusted row may change with a chance of at most half of 1% on average,
    and no sampled row that changed stays trusted."""
    from batchscore.scoring.calibrate import recheck

    # Row 0 is 0.05 from a tie and moves 1.0 the wrong way: its label changes, and its int8 gap is 0.95. The
    # others move 0. A row whose gap is under 1.0 changes with a chance of 1 in 10, halved for the direction: 0.05
    # each, over ten rows 0.005 a row. Rechecking the closest four (gaps 0.2 to 0.8) leaves 0.005 predicted, in
    # the bar; but row 0 (gap 0.95), which did change, is trusted: rechecked too, up to gap 1.5, five rows.
    exact, other = by_gap_and_move([0.05, 0.2, 0.4, 0.6, 0.8, 1.5, 2, 3, 4, 5], [-1.0] + [0.0] * 9)
    assert recheck(exact, other, "none", 0.99) == (1.5, 0.5, 1.0)
    # A bar of 0 (gpu-check's, for speed alone) allows everything: only rows closer to a tie than any the sample
    # met (0.2) are rechecked, and the row that changed is predicted with the rest.
    assert recheck(exact, other, "none", 0.0) == (0.2, 0.0, 0.975)
    # Nothing changed; rows 0.05 and 0.08 from a tie are each predicted to change with chance 0.05: rechecking
    # one leaves 0.005, in the bar, but the floor (the 90th percentile move, 0.1) takes both: up to gap 3.
    exact, other = by_gap_and_move([0.05, 0.08, 3, 4, 5, 6, 7, 8, 9, 10], [0.0] * 9 + [1.0])
    assert recheck(exact, other, "none", 0.99) == (3.0, 0.2, 1.0)
    # Nothing moves: nothing to recheck but rows closer to a tie than any the sample met. Rows without text (NaN)
    # count for nothing; a head of one score has no tie to be near.
    exact = np.vstack([exact, [np.nan, np.nan]])
    assert recheck(exact, exact, "none", 0.99) == (0.05, 0.0, 1.0)
    assert recheck(exact[:, :1], exact[:, :1], "none", 0.99) == (0.0, 0.0, None)
    # Softmax scores: on the logits' scale again (log p1 - log p2), where the same moves give the same margin.
    soft = np.exp(exact[:10]) / np.exp(exact[:10]).sum(1, keepdims=True)
    shifted = np.exp(other) / np.exp(other).sum(1, keepdims=True)
    assert recheck(soft, shifted, "softmax", 0.99) == pytest.approx((3.0, 0.2, 1.0))


def test_rechecked_rows_take_fp32s_scores(corpus, tiny_model, tmp_path, oracles, margin, choose_int8, int8_rechecked):
    """A run in int8 with a recheck margin: the rows int8 scores within the margin of a tie carry fp32's scores,
    the others int8's; the margin is recorded with the choice."""
    close = int8_rechecked["close"]
    assert 0.3 < close.mean() < 0.7
    int8 = np.array(oracles["int8"].column("score").to_pylist(), dtype=float)
    fp32 = np.array(oracles["fp32"].column("score").to_pylist(), dtype=float)
    assert np.nanmin(np.abs(int8 - fp32)[close]) > 1e-5  # the two precisions differ on every rechecked row
    manifest = fastest(corpus, tiny_model, tmp_path / "out")
    assert manifest["calibration"]["models"][0]["recheck_margin"] == margin
    same_scores(tmp_path / "out", int8_rechecked)


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
    corpus, tiny_model, tmp_path, monkeypatch, choose_int8, never_calibrate, int8_rechecked
):
    out = tmp_path / "out"
    committed = interrupted(corpus, tiny_model, out, monkeypatch)
    assert len(committed) == 2
    assert json.loads((out / "_batchscore" / "calibration.json").read_text())["models"][0]["precision"] == "int8"
    never_calibrate()
    manifest = fastest(corpus, tiny_model, out)
    assert manifest["calibration"]["models"][0]["precision"] == "int8"
    same_scores(out, int8_rechecked)


def test_a_lost_record_is_read_back_from_the_parts(
    corpus, tiny_model, tmp_path, monkeypatch, choose_int8, never_calibrate, int8_rechecked
):
    out = tmp_path / "out"
    interrupted(corpus, tiny_model, out, monkeypatch)
    (out / "_batchscore" / "calibration.json").unlink()
    never_calibrate()
    fastest(corpus, tiny_model, out)
    same_scores(out, int8_rechecked)


def test_shards_take_the_first_shards_choice(
    corpus, tiny_model, tmp_path, monkeypatch, choose_int8, never_calibrate, int8_rechecked
):
    out = tmp_path / "out"
    fastest(corpus, tiny_model, out, num_shards=2, shard_index=0)
    never_calibrate()
    fastest(corpus, tiny_model, out, num_shards=2, shard_index=1)
    result = invoke(["finalize", str(out)])
    assert result.exit_code == 0, result.output
    manifest = manifest_of(out)
    assert manifest["calibration"]["models"][0]["precision"] == "int8"
    same_scores(out, int8_rechecked)


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

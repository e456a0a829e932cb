"""The offline model build: data reading, split, training loop, evaluation, saved directory."""

import io
import json
import tarfile

import numpy as np
import pytest

from batchscore.build_model import (
    Recipe,
    accuracy_and_macro_f1,
    build,
    format_table,
    read_ground_truth,
    split_sets,
    train,
)
from helpers import build_model, pipeline_oracle

POSITIVE = [
    "I love this, wonderful",
    "great fun, loved it",
    "what a delight",
    "brilliant and happy",
    "so good, amazing work",
    "best day ever",
    "lovely, just lovely",
    "superb, I adore it",
]
NEGATIVE = [
    "I hate this, awful",
    "terrible, hated it",
    "what a disaster",
    "boring and sad",
    "so bad, horrible work",
    "worst day ever",
    "ugly, just ugly",
    "dreadful, I loathe it",
]


def _tar_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fake_sdist(tmp_path):
    """A vaderSentiment sdist in miniature: the ground-truth files inside a tarball inside a tarball."""
    files = {}
    for stem in ("tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets"):
        lines = [f"{i}\t{2.5 - i * 0.1:.2f}\t{t}" for i, t in enumerate(POSITIVE, 1)]
        lines += [f"{20 + i}\t{-2.5 + i * 0.1:.2f}\t{t}" for i, t in enumerate(NEGATIVE, 1)]
        lines += ["99\t0\tthe cat sat on the mat", "100\t0.2\tit is a thing"]  # neutral and barely positive
        files[f"hutto_ICWSM_2014/{stem}_GroundTruth.txt"] = "\r\n".join(lines).encode()
    files["hutto_ICWSM_2014/vader_sentiment_lexicon.txt"] = b"unrelated"
    inner = _tar_bytes(files)
    path = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    path.write_bytes(_tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))
    return str(path)


def test_read_ground_truth(fake_sdist):
    sets = read_ground_truth(fake_sdist)
    assert sorted(sets) == ["amazon", "movie", "nyt", "tweets"]
    tweets = sets["tweets"]
    assert len(tweets) == 18
    assert tweets[0].text == POSITIVE[0] and tweets[0].rating == pytest.approx(2.4) and tweets[0].label == 1
    assert tweets[8].text == NEGATIVE[0] and tweets[8].label == 0


def test_not_an_sdist_is_an_input_error(tmp_path):
    from batchscore.errors import InputError

    bogus = tmp_path / "x.tar.gz"
    bogus.write_bytes(_tar_bytes({"a.txt": b"hi"}))
    with pytest.raises(InputError, match="pip download --no-deps --no-binary :all: vadersentiment==3.3.2"):
        read_ground_truth(str(bogus))


def test_split_is_fixed_stratified_and_never_trains_on_test(fake_sdist):
    sets = read_ground_truth(fake_sdist)
    recipe = Recipe(test_fraction=0.25)
    a, b = split_sets(sets, recipe), split_sets(sets, recipe)
    assert [s.text for s in a.train] == [s.text for s in b.train]  # same seed, same split
    for test in a.test.values():
        # 25% of each label: 8 negatives -> 2; 9 positives (with the barely positive one) -> 2
        assert sorted(s.label for s in test) == [0, 0, 1, 1]
        assert all(s.rating != 0 for s in test)  # no-sentiment sentences are left out
    test_ids = {(s.set_name, s.text) for t in a.test.values() for s in t}
    assert not test_ids & {(s.set_name, s.text) for s in a.train}
    assert all(abs(s.rating) >= recipe.min_abs_rating for s in a.train)  # "it is a thing" (0.2) not trained on
    c = split_sets(sets, Recipe(test_fraction=0.25, seed=99))
    assert [s.text for s in c.train] != [s.text for s in a.train]


def test_accuracy_and_macro_f1_by_hand():
    truth = np.array([1, 1, 1, 0, 0])
    pred = np.array([1, 1, 0, 0, 1])
    acc, f1 = accuracy_and_macro_f1(truth, pred)
    assert acc == pytest.approx(3 / 5)
    # positive: tp 2 fp 1 fn 1 -> 2/3; negative: tp 1 fp 1 fn 1 -> 1/2
    assert f1 == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_training_lowers_the_loss(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = build_model(tmp_path / "base", "bert", num_labels=2)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts, labels = POSITIVE + NEGATIVE, [1] * 8 + [0] * 8
    losses = train(
        model,
        tokenizer,
        texts,
        labels,
        Recipe(epochs=25, batch_size=4, learning_rate=1e-3, frozen_layers=0, warmup_fraction=0.0),
        progress=False,
    )
    assert len(losses) == 25 * 4
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8])


def test_build_writes_a_reloadable_deterministic_model(tmp_path, fake_sdist):
    from transformers import AutoModelForSequenceClassification

    base = build_model(tmp_path / "base", "bert", num_labels=2)
    recipe = Recipe(epochs=3, batch_size=8, learning_rate=1e-3, test_fraction=0.25)
    outs = []
    for run in ("a", "b"):
        out = tmp_path / f"built-{run}"
        report = build(str(out), fake_sdist, recipe, base_model=base, progress=False, log=lambda m: None)
        outs.append(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".building-")) == []
    # Same inputs, same seed, same machine: the same weights, byte for byte.
    assert (outs[0] / "model.safetensors").read_bytes() == (outs[1] / "model.safetensors").read_bytes()
    model = AutoModelForSequenceClassification.from_pretrained(outs[0])
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert pipeline_oracle(outs[0], ["great fun"])[0]["label"] in ("NEGATIVE", "POSITIVE")
    card = (outs[0] / "README.md").read_text()
    assert format_table(report["evaluation"]) in card
    saved = json.loads((outs[0] / "build_report.json").read_text())
    assert [r["set"] for r in saved["evaluation"]] == ["amazon", "movie", "nyt", "tweets"]
    assert saved["last_loss"] < saved["first_loss"]


@pytest.mark.slow
def test_real_build_meets_targets(tmp_path):
    """Builds the real model (~4 min on 2 cores) and checks the issue's targets.

    Beats VADER on movie, Amazon and NYT; mean accuracy over the four sets >= 0.85 on
    the clearly rated held-out sentences (|mean rating| >= 0.5). On every non-zero
    sentence, nearly neutral ones included, the build measured 0.847: guarded at 0.84.
    """
    report = build(str(tmp_path / "model"), progress=False, log=print)
    print(format_table(report["evaluation"]))
    rows = {r["set"]: r for r in report["evaluation"]}
    for name in ("movie", "amazon", "nyt"):
        assert rows[name]["model_accuracy"] > rows[name]["vader_accuracy"], name
        assert rows[name]["model_macro_f1"] > rows[name]["vader_macro_f1"], name
    assert np.mean([r["model_accuracy_polar"] for r in rows.values()]) >= 0.85
    assert np.mean([r["model_accuracy"] for r in rows.values()]) >= 0.84
    assert report["build_seconds"] < 300

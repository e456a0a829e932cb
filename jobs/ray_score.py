"""Score a Parquet dataset on a Ray cluster with Ray Data: one batchscore Scorer per actor.

    python jobs/ray_score.py INPUT OUTPUT --model /models/minilm-vader-sentiment [--actors 2] [--gpus-per-actor 1]

INPUT and OUTPUT are anything `ray.data.read_parquet` / `write_parquet` take
(a local folder, `s3://...`). Ray instantiates `Scorer` once per actor (the
model loads once per actor) and calls it on pyarrow batches; every row comes
back once with `label` and `score` appended, the scores `batchscore score`
writes. Ray writes its own output layout (no batchscore manifest, no resume):
use the batchscore CLI with shards where you want those.
"""

from __future__ import annotations

import argparse


def score_dataset(ds, model: str | None = None, actors: int = 2, gpus_per_actor: float = 0,
                  cpus_per_actor: float = 1, batch_size: int = 4096, **scorer):
    """`ds` with the result columns appended (lazy, like any Ray Data transformation).

    `scorer` holds the other `Scorer` arguments, `models=[{"model": ..., "prefix": ...}, ...]` among them:
    several models in one pass.

    Each actor holds `cpus_per_actor` CPUs for as long as it lives: leave some
    for the read tasks that feed it (on a 2-CPU machine, 2 actors of 0.5).
    """
    import ray

    from batchscore import Scorer

    return ds.map_batches(Scorer, fn_constructor_kwargs={"model": model, **scorer}, batch_format="pyarrow",
                          batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                          num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model", required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--gpus-per-actor", type=float, default=0)
    parser.add_argument("--cpus-per-actor", type=float, default=1)
    args = parser.parse_args()

    import ray

    ray.init()  # joins the cluster when RAY_ADDRESS is set; else starts a local one
    scored = score_dataset(ray.data.read_parquet(args.input), args.model, args.actors, args.gpus_per_actor,
                           args.cpus_per_actor, text_column=args.text_column)
    scored.write_parquet(args.output)


if __name__ == "__main__":
    main()

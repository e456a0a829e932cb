"""Airflow 3 DAG: score one day's partition with K mapped tasks, then finalize.

Which partition a run scores: as in ``airflow_dag.py``, the schedule is an
explicit ``CronTriggerTimetable("15 2 * * *", timezone="UTC",
interval=timedelta(days=1))``, so the run that starts at 02:15 UTC on day D+1
has the data interval [D 02:15, D+1 02:15) and scores day D
(``{{ data_interval_start | ds }}``): INPUT_ROOT/D/ -> OUTPUT_ROOT/D. A manual
run triggered at time T (and ``airflow dags test batchscore_reviews_sharded
D+1``) scores the day before T's date.

How it runs: ``shard_envs`` turns the ``num_shards`` Param (K) into K
environments; ``score_shard`` is mapped over them (dynamic task mapping), one
task per shard, each running ``batchscore score ... --num-shards K
--shard-index I``. ``finalize`` runs once every mapped task has finished,
whatever their outcome (trigger rule ``all_done``, like Slurm's ``afterany``):
``batchscore finalize`` checks that every chunk is there and writes the
manifest and ``_SUCCESS``. The input and the output must be on storage every
worker sees (an object store, or a shared file system).

Retries, reruns and clears; the commands never replace an output:

- a shard's retry (or a cleared shard task) resumes that shard alone: chunks
  its failed try committed are skipped;
- when a shard has failed for good, ``finalize`` fails with exit code 5 and its
  log names the shard to rerun: ``Error: Output '...' is missing 2 of 40 chunks
  (3, 11); rerun shard 3 of 8 (--num-shards 8 --shard-index 3), then finalize
  again.`` Clear that mapped task instance with its downstream (``finalize``):
  the shard resumes, then finalize completes the output;
- a rerun of a finished day prints ``Already complete`` in every task and
  writes nothing;
- a second live run of the same day is refused at once (exit 5): batchscore
  locks its output. Keep ``num_shards`` fixed for a day once it has started:
  shards of different K refuse each other.

To redo a finished day on purpose, run batchscore by hand with its overwrite
option; never put that option in a scheduled command.

Settings are Airflow Params, with defaults from environment variables of the
process that parses this file (the dag-processor): ``BATCHSCORE_INPUT_ROOT``
(default ``s3://corpus/reviews``), ``BATCHSCORE_OUTPUT_ROOT`` (default
``s3://scored/reviews``), ``BATCHSCORE_MODEL`` and ``BATCHSCORE_REVISION``
(default empty: batchscore's own default, the reference model pinned at
revision af0f99b), ``BATCHSCORE_CACHE`` (default empty: no cache; a result cache
folder or URL that every night and every shard share, docs/cache.md), and
``num_shards`` (default 8). The commands run
``$BATCHSCORE_BIN`` on the worker (default ``batchscore`` on its PATH). Any other
batchscore option: ``BATCHSCORE_<NAME>`` in the workers' environment. Params
reach the shell quoted (``shquote``), never as shell code. To split one shard
among several GPUs of a worker, see docs/operations.md, "Scaling out" (``accelerate launch
... --num-shards K --shard-index I``).
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, CronTriggerTimetable, Param, TriggerRule, task

# The partition a run scores, and where it reads and writes (quoted for the shell).
PATHS = """\
{%- set day = data_interval_start | ds -%}
{%- set input = params.input_root.rstrip('/') ~ '/' ~ day ~ '/' -%}
{%- set output = params.output_root.rstrip('/') ~ '/' ~ day -%}
"""

# An empty model or revision is left to batchscore (its default is the pinned reference model).
MODEL = (
    "{% if params.model %} --model {{ params.model | shquote }}{% endif %}"
    "{% if params.revision %} --revision {{ params.revision | shquote }}{% endif %}"
)

# An empty cache is none. A shared one (a folder or URL every night and shard reads and adds to) scores only the
# texts no earlier run scored with the same model and settings: docs/cache.md.
CACHE = "{% if params.cache %} --cache {{ params.cache | shquote }}{% endif %}"

SCORE_SHARD = PATHS + (
    '"${BATCHSCORE_BIN:-batchscore}" score {{ input | shquote }} -o {{ output | shquote }}'
    + MODEL + CACHE + ' --no-progress --num-shards {{ params.num_shards | int }} --shard-index "$SHARD_INDEX"'
)

FINALIZE = PATHS + '"${BATCHSCORE_BIN:-batchscore}" finalize {{ output | shquote }}'

with DAG(
    dag_id="batchscore_reviews_sharded",
    description="Score yesterday's partition with batchscore in K mapped shards, then finalize",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("15 2 * * *", timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "input_root": Param(os.environ.get("BATCHSCORE_INPUT_ROOT", "s3://corpus/reviews"), type="string",
                            minLength=1, description="Folder or URL holding one folder per day (YYYY-MM-DD)"),
        "output_root": Param(os.environ.get("BATCHSCORE_OUTPUT_ROOT", "s3://scored/reviews"), type="string",
                             minLength=1, description="Where each day's output folder is written (shared storage)"),
        "model": Param(os.environ.get("BATCHSCORE_MODEL", ""), type="string",
                       description="Hub id or local model directory; empty: batchscore's default"),
        "revision": Param(os.environ.get("BATCHSCORE_REVISION", ""), type="string",
                          description="Model revision (commit) of a Hub model; empty: batchscore's default"),
        "cache": Param(os.environ.get("BATCHSCORE_CACHE", ""), type="string",
                       description="Result cache folder or URL shared by every run (docs/cache.md); empty: none"),
        "num_shards": Param(8, type="integer", minimum=1, maximum=1024,
                            description="K: mapped score tasks (keep it fixed for a day once started)"),
    },
    user_defined_filters={"shquote": shlex.quote},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["batchscore"],
) as dag:

    @task
    def shard_envs(**context) -> list[dict[str, str]]:
        """One environment per shard: SHARD_INDEX = 0 .. K-1."""
        return [{"SHARD_INDEX": str(i)} for i in range(int(context["params"]["num_shards"]))]

    score = BashOperator.partial(
        task_id="score_shard",
        bash_command=SCORE_SHARD,
        append_env=True,  # the worker's environment too (PATH, BATCHSCORE_BIN, BATCHSCORE_<NAME>, credentials)
        map_index_template="shard {{ task.env['SHARD_INDEX'] }}",
    ).expand(env=shard_envs())

    finalize = BashOperator(
        task_id="finalize",
        bash_command=FINALIZE,
        trigger_rule=TriggerRule.ALL_DONE,  # also after a failed shard: its log names the shards to rerun
        retries=0,  # missing chunks do not appear by waiting: rerun the shards, then clear finalize
    )

    score >> finalize

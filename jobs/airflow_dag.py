"""Airflow 3 DAG: score one day's partition with batchscore, in one task.

Which partition a run scores: the schedule is an explicit
``CronTriggerTimetable("15 2 * * *", timezone="UTC", interval=timedelta(days=1))``,
so the run that starts at 02:15 UTC on day D+1 has the data interval
[D 02:15, D+1 02:15) and scores day D (``{{ data_interval_start | ds }}``):

    INPUT_ROOT/D/  ->  OUTPUT_ROOT/D

A manual run triggered at time T (and ``airflow dags test batchscore_reviews
D+1``) gets the interval [T - 1 day, T] and also scores the day before T's date.
A backfill (``airflow backfill create --dag-id batchscore_reviews --from-date
... --to-date ...``) scores one day per run.

Retries, reruns and clears need nothing special; the command never replaces an
output:

- a retry (or a cleared task) resumes: chunks the failed try committed are
  skipped, only the rest is scored, and the result is the same table as one
  clean run;
- a rerun of a finished day prints ``Already complete`` and writes nothing;
- a second live run of the same day (a manual trigger during the scheduled
  one) is refused at once with exit code 5: batchscore locks its output.

To redo a finished day on purpose (a new model, say), run batchscore by hand
with its overwrite option; never put that option in a scheduled command.

Settings are Airflow Params (trigger a run with a JSON conf to change them). Their
defaults come from environment variables of the process that parses this file
(the dag-processor): ``BATCHSCORE_INPUT_ROOT`` (default ``s3://corpus/reviews``),
``BATCHSCORE_OUTPUT_ROOT`` (default ``/data/scored/reviews``) and
``BATCHSCORE_MODEL`` and ``BATCHSCORE_REVISION`` (default empty: batchscore's own
default, the reference model pinned at revision af0f99b; a Hub model given here
should get a revision too, or it can change between two runs), and
``BATCHSCORE_CACHE`` (default empty: no cache; a folder or URL such as
``s3://bucket/score-cache/`` makes each night score only the texts that no
earlier night scored with the same model and settings, see docs/cache.md;
compact it now and then with ``batchscore cache compact``). The command runs
``$BATCHSCORE_BIN`` on the worker (default ``batchscore`` on its PATH), so point
``BATCHSCORE_BIN`` at the installed command, e.g.
``/opt/batchscore/.venv/bin/batchscore``. Every other batchscore option can be
set on the workers as ``BATCHSCORE_<NAME>`` (``BATCHSCORE_CONFIG``,
``BATCHSCORE_CHUNK_ROWS``, ``BATCHSCORE_LOG_FORMAT=json``, ...); the task passes
its environment on. Params reach the shell quoted (``shquote``), never as shell
code.

A failed task's log ends in batchscore's one ``Error: ...`` line; its exit code
(README "Exit codes") says which kind: 1 internal, 2 usage, 3 input, 4 model, 5 output,
130 interrupted (SIGTERM from Airflow: committed chunks are kept).
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, CronTriggerTimetable, Param

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

SCORE = PATHS + (
    '"${BATCHSCORE_BIN:-batchscore}" score {{ input | shquote }} -o {{ output | shquote }}'
    + MODEL + CACHE + " --no-progress"
)

with DAG(
    dag_id="batchscore_reviews",
    description="Score yesterday's partition with batchscore",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("15 2 * * *", timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "input_root": Param(os.environ.get("BATCHSCORE_INPUT_ROOT", "s3://corpus/reviews"), type="string",
                            minLength=1, description="Folder or URL holding one folder per day (YYYY-MM-DD)"),
        "output_root": Param(os.environ.get("BATCHSCORE_OUTPUT_ROOT", "/data/scored/reviews"), type="string",
                             minLength=1, description="Where each day's output folder is written"),
        "model": Param(os.environ.get("BATCHSCORE_MODEL", ""), type="string",
                       description="Hub id or local model directory; empty: batchscore's default"),
        "revision": Param(os.environ.get("BATCHSCORE_REVISION", ""), type="string",
                          description="Model revision (commit) of a Hub model; empty: batchscore's default"),
        "cache": Param(os.environ.get("BATCHSCORE_CACHE", ""), type="string",
                       description="Result cache folder or URL shared by every run (docs/cache.md); empty: none"),
    },
    user_defined_filters={"shquote": shlex.quote},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["batchscore"],
) as dag:
    BashOperator(task_id="score", bash_command=SCORE)

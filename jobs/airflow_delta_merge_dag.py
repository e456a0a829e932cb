"""Airflow 3 DAG: each night, score the whole current export and merge it into a Delta table, in one task.

What a run does: one ``BashOperator`` runs

    batchscore score EXPORT -o TABLE --output-format delta --table-mode merge
        --id-column ID --cache CACHE --no-progress

EXPORT is one fixed path or URL (a folder of Parquet/CSV/JSONL files, or a Delta
table) that the upstream job rewrites each night with the whole current state
of the data: every row, by its id, with its text as of tonight. That export is
what changes from night to night; the command, the table and the cache do not.
The run stages its chunks, then merges every row into TABLE in one Delta commit:
an id already in the table gets tonight's text and scores (updated), a new id
is inserted. A row that left the export stays in the table as it was (a merge
never deletes). The schedule is
``CronTriggerTimetable("30 3 * * *", timezone="UTC")``: set it after the export
lands. The run does not use its logical date, so ``catchup=False`` and
``max_active_runs=1``: a manual trigger during the night's run waits for it.

Why the cache (``BATCHSCORE_CACHE``; strongly recommended): most of the export
is the same text as last night. With a result cache, a text scored by an earlier
night with the same model and settings comes from the cache, so a merge of the
whole export costs only the new and changed texts; the manifest says how many
(``rows_from_cache``, ``distinct_texts_scored``). Without one every row is
scored every night. Compact it now and then: ``batchscore cache compact``.

Retries, reruns and clears need nothing special; every row goes in exactly once:

- a retry (or a cleared task) resumes: the chunks the failed try staged in
  ``TABLE/_batchscore_staging/`` are skipped, only the rest is scored, and the
  merge is one commit either way;
- the commit carries the run's identity (the export's files, the model, the
  scoring options) in its commit info (``batchscore.commit``) and as a Delta
  application transaction, so a rerun after the commit (a kill right after it,
  a cleared successful task, a night whose export was not rewritten) prints
  ``Already in the table: ...; nothing to do.`` and commits nothing;
- a new export is a new run: its own commit, the next table version.

Keep the export's path fixed: re-running or backfilling an old night merges
tonight's export, never an older one, so the table cannot go back in time. A
new model (``BATCHSCORE_MODEL``) rescores every row of the next export (the
cache is per model); rows no longer exported keep the old model's scores.

Time travel: each night is one table version, so the table as it was after the
previous night is the version before the newest ``batchscore.commit``:

    from deltalake import DeltaTable
    table = DeltaTable(TABLE)
    nights = [h["version"] for h in table.history() if "batchscore.commit" in h]  # newest first
    table.load_as_version(nights[1])   # or a datetime: the table as it was then

(Spark: ``SELECT * FROM delta.`TABLE` VERSION AS OF N``.) ``batchscore manifest
TABLE --output-format delta`` prints the newest run's manifest and its version.
An old version reads only until ``VACUUM`` removes its files (7 days by default).

Settings are Airflow Params (trigger a run with a JSON conf to change them). Their
defaults come from environment variables of the process that parses this file
(the dag-processor): ``BATCHSCORE_EXPORT`` (default ``s3://exports/reviews/current/``),
``BATCHSCORE_TABLE`` (the Delta table's folder or URL, default
``s3://lake/reviews_scored``; made by the first night's commit),
``BATCHSCORE_ID_COLUMN`` (default ``id``: the export's unique row key; an id
that repeats in the export fails the task with exit code 3 and commits nothing),
``BATCHSCORE_CACHE`` (default empty: no cache), ``BATCHSCORE_MODEL`` and
``BATCHSCORE_REVISION`` (default empty: batchscore's own default, the reference
model pinned at revision af0f99b; a Hub model given here should get a revision
too, or it can change between two nights). The command runs ``$BATCHSCORE_BIN``
on the worker (default ``batchscore`` on its PATH). Every other batchscore option
can be set on the workers as ``BATCHSCORE_<NAME>`` (``BATCHSCORE_CHUNK_ROWS``,
``BATCHSCORE_LOG_FORMAT=json``, ...); S3 settings (``AWS_REGION``,
``AWS_ENDPOINT_URL``, the keys) come from the workers' environment too. Params
reach the shell quoted (``shquote``), never as shell code. Tables: docs/tables.md.

A failed task's log ends in batchscore's one ``Error: ...`` line; its exit code
(README "Exit codes") says which kind: 1 internal, 2 usage, 3 input, 4 model, 5 output
(e.g. the table's columns do not fit the run), 130 interrupted (SIGTERM from Airflow:
staged chunks are kept).
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, CronTriggerTimetable, Param

# An empty model or revision is left to batchscore (its default is the pinned reference model).
MODEL = (
    "{% if params.model %} --model {{ params.model | shquote }}{% endif %}"
    "{% if params.revision %} --revision {{ params.revision | shquote }}{% endif %}"
)

# An empty cache is none. With one, a night scores only the texts no earlier night scored with the same model and
# settings: docs/cache.md.
CACHE = "{% if params.cache %} --cache {{ params.cache | shquote }}{% endif %}"

MERGE = (
    '"${BATCHSCORE_BIN:-batchscore}" score {{ params.export | shquote }} -o {{ params.table | shquote }}'
    " --output-format delta --table-mode merge --id-column {{ params.id_column | shquote }}"
    + MODEL + CACHE + " --no-progress"
)

with DAG(
    dag_id="batchscore_delta_merge",
    description="Score the whole current export and merge it into a Delta table",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("30 3 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "export": Param(os.environ.get("BATCHSCORE_EXPORT", "s3://exports/reviews/current/"), type="string",
                        minLength=1, description="The export: one fixed folder, URL or Delta table, rewritten nightly"),
        "table": Param(os.environ.get("BATCHSCORE_TABLE", "s3://lake/reviews_scored"), type="string",
                       minLength=1, description="The Delta table (folder or URL) the export is merged into"),
        "id_column": Param(os.environ.get("BATCHSCORE_ID_COLUMN", "id"), type="string",
                           minLength=1, description="The export's unique row key: the merge's join column"),
        "cache": Param(os.environ.get("BATCHSCORE_CACHE", ""), type="string",
                       description="Result cache folder or URL (docs/cache.md); strongly recommended; empty: none"),
        "model": Param(os.environ.get("BATCHSCORE_MODEL", ""), type="string",
                       description="Hub id or local model directory; empty: batchscore's default"),
        "revision": Param(os.environ.get("BATCHSCORE_REVISION", ""), type="string",
                          description="Model revision (commit) of a Hub model; empty: batchscore's default"),
    },
    user_defined_filters={"shquote": shlex.quote},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["batchscore", "delta"],
) as dag:
    BashOperator(task_id="merge", bash_command=MERGE)

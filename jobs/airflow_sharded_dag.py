"""Example Airflow DAG: score a large partition with K mapped tasks, then finalize.

Dynamic task mapping runs one task per shard (each can retry alone: a retry
skips the chunks its earlier try committed); `finalize` runs once all have
succeeded, checks that every chunk is there and writes the manifest and
_SUCCESS. The output folder must be on storage every worker mounts.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

NUM_SHARDS = 8
OUTPUT = "/shared/scored/{{ ds }}"

with DAG(
    dag_id="batchscore_reviews_sharded",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    score = BashOperator.partial(
        task_id="score_shard",
        bash_command=(
            "cd /opt/batchscore && .venv/bin/batchscore score s3://corpus/reviews/{{ ds }}/ "
            f"--config configs/sst2.yaml -o {OUTPUT} --no-progress "
            f"--num-shards {NUM_SHARDS} --shard-index $SHARD"
        ),
        append_env=True,
    ).expand(env=[{"SHARD": str(i)} for i in range(NUM_SHARDS)])

    finalize = BashOperator(
        task_id="finalize",
        bash_command=f"cd /opt/batchscore && .venv/bin/batchscore finalize {OUTPUT}",
    )

    score >> finalize

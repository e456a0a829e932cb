"""Example Airflow DAG: score yesterday's partition with batchscore.

Copy into your DAGs folder and adjust the paths. A failed task's log ends in
batchscore's one-line error; its exit code (README "Exit codes") says which
kind of failure it was.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG(
    dag_id="batchscore_reviews",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    BashOperator(
        task_id="score",
        bash_command=(
            "cd /opt/batchscore && .venv/bin/batchscore score "
            "s3://corpus/reviews/{{ ds }}/ --config configs/sst2.yaml "
            "-o /data/scored/{{ ds }} --no-progress --overwrite"
        ),
    )

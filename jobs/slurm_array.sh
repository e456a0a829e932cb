#!/bin/bash
# Score one corpus with a Slurm job array: array task I scores shard I of K
# (batchscore score --num-shards K --shard-index I). A separate finalize job
# (jobs/slurm_finalize.sh) then checks that every chunk is there and writes the
# manifest and _SUCCESS. Submit both with jobs/slurm_submit.sh, which runs:
#
#   jid=$(sbatch --parsable --array=0-7 jobs/slurm_array.sh)
#   sbatch --dependency=afterany:$jid jobs/slurm_finalize.sh
#
# afterany, not afterok: finalize runs whatever the array's outcome. When a task
# failed, was cancelled or ran out of time, finalize exits 5 and its log names the
# shards to rerun, e.g.
#
#   Error: Output '/shared/scored/reviews' is missing 2 of 40 chunks (3, 11); rerun shard 3 of 8
#   (--num-shards 8 --shard-index 3), then finalize again.
#
# Rerun that task alone, then finalize again (or: jobs/slurm_submit.sh 3):
#
#   jid=$(sbatch --parsable --array=3 jobs/slurm_array.sh)
#   sbatch --dependency=afterany:$jid jobs/slurm_finalize.sh
#
# The rerun skips the chunks shard 3 already committed and scores the rest; then
# finalize completes the output, the same table one uninterrupted run writes.
# A task that is preempted or requeued (--requeue; SIGTERM is exit 130) resumes
# the same way. A task of a finished output prints "Already complete" and writes
# nothing, so rerunning the whole array is harmless too. A second live run of the
# same shard is refused at once (exit 5): batchscore locks its output. Never add
# batchscore's overwrite option here: a retry must resume, not start over.
#
# Settings (sbatch passes the submitting shell's environment to the job):
#   BATCHSCORE_VENV        the virtualenv holding batchscore   [/opt/batchscore/.venv]
#   BATCHSCORE_INPUT       what to score                       [/shared/corpus/reviews/]
#   BATCHSCORE_OUTPUT      output folder, on a file system every node mounts, or s3://...
#                                                              [/shared/scored/reviews]
#   BATCHSCORE_NUM_SHARDS  K; the array must be 0-(K-1)        [8]
# batchscore reads every other option from BATCHSCORE_<NAME> (BATCHSCORE_CONFIG,
# BATCHSCORE_MODEL, BATCHSCORE_CHUNK_ROWS, ...). With more than one GPU per task,
# accelerate launch splits shard I among them (docs/operations.md, "Scaling out"); with one or
# none, the task runs one process.
#SBATCH --job-name=batchscore
#SBATCH --array=0-7
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=batchscore-%A_%a.log
set -euo pipefail

venv=${BATCHSCORE_VENV:-/opt/batchscore/.venv}
input=${BATCHSCORE_INPUT:-/shared/corpus/reviews/}
output=${BATCHSCORE_OUTPUT:-/shared/scored/reviews}
num_shards=${BATCHSCORE_NUM_SHARDS:-8}
shard=${SLURM_ARRAY_TASK_ID:?run as an array task: sbatch --array=0-$((num_shards - 1)) $0}

gpus=${SLURM_GPUS_ON_NODE:-0}
if ((gpus > 1)); then
  launch=("$venv/bin/accelerate" launch --multi_gpu --num_processes "$gpus" -m batchscore)
else
  launch=("$venv/bin/python" -m batchscore)
fi

exec "${launch[@]}" score "$input" -o "$output" \
  --num-shards "$num_shards" --shard-index "$shard" --no-progress

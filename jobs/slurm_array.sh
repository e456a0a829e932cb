#!/bin/bash
# Score one corpus with a Slurm job array: task I scores shard I of 8, then one
# dependent job checks every chunk and writes the manifest. Submit with:
#
#   jid=$(sbatch --parsable jobs/slurm_array.sh)
#   sbatch --dependency=afterok:$jid --wrap "cd /opt/batchscore && .venv/bin/batchscore finalize /shared/scored/reviews"
#
# A failed or preempted task is rerun alone (sbatch --array=<I> jobs/slurm_array.sh):
# it skips its committed chunks. The output folder must be on a file system every node mounts.
#SBATCH --job-name=batchscore
#SBATCH --array=0-7
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
#SBATCH --requeue
set -euo pipefail
cd /opt/batchscore

# Within the task, 4 GPUs split shard I among themselves (rank r does shard I + 8*r of 32).
exec .venv/bin/accelerate launch --multi_gpu --num_processes 4 -m batchscore score \
  /shared/corpus/reviews/ --config configs/sst2.yaml -o /shared/scored/reviews \
  --num-shards 8 --shard-index "$SLURM_ARRAY_TASK_ID" --no-progress

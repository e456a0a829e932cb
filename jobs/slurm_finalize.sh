#!/bin/bash
# Finish an output written by the array of jobs/slurm_array.sh: check that every
# chunk is there, write the manifest and _SUCCESS. Submitted by jobs/slurm_submit.sh
# with --dependency=afterany:<array job id>, so it runs whatever the array's outcome:
#
#   sbatch --dependency=afterany:$jid jobs/slurm_finalize.sh
#
# Exit 0: the output is complete (also when it already was: "Already complete").
# Exit 5 when chunks are missing: the error names them and the shards to rerun,
# "... rerun shard 3 of 8 (--num-shards 8 --shard-index 3), then finalize again."
# Then rerun those array tasks and this job (see jobs/slurm_array.sh). It writes
# nothing when it fails.
#
# Settings: BATCHSCORE_VENV [/opt/batchscore/.venv] and BATCHSCORE_OUTPUT
# [/shared/scored/reviews], the same as the array's.
#SBATCH --job-name=batchscore-finalize
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --output=batchscore-finalize-%j.log
set -euo pipefail

venv=${BATCHSCORE_VENV:-/opt/batchscore/.venv}
output=${BATCHSCORE_OUTPUT:-/shared/scored/reviews}

exec "$venv/bin/python" -m batchscore finalize "$output"

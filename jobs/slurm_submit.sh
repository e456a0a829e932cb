#!/bin/bash
# Submit the scoring array (jobs/slurm_array.sh), then the finalize job
# (jobs/slurm_finalize.sh) with --dependency=afterany on the array: finalize runs
# whatever the array's outcome, and names the shards to rerun if any are missing.
#
#   jobs/slurm_submit.sh          # every shard, 0 to K-1
#   jobs/slurm_submit.sh 3        # rerun shard 3 alone, then finalize again
#   jobs/slurm_submit.sh 1,5      # rerun shards 1 and 5 (any sbatch --array list)
#
# The settings (BATCHSCORE_VENV, BATCHSCORE_INPUT, BATCHSCORE_OUTPUT,
# BATCHSCORE_NUM_SHARDS and any BATCHSCORE_<NAME> option) are taken from this
# shell's environment and passed on to both jobs by sbatch; give a rerun the same.
# Extra sbatch options for both jobs: SBATCH_* variables (e.g. SBATCH_PARTITION).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BATCHSCORE_NUM_SHARDS=${BATCHSCORE_NUM_SHARDS:-8}
shards=${1:-0-$((BATCHSCORE_NUM_SHARDS - 1))}

jid=$(sbatch --parsable --export=ALL --array="$shards" "$here/slurm_array.sh")
jid=${jid%%;*}  # --parsable prints "id" or "id;cluster"
fid=$(sbatch --parsable --export=ALL --dependency="afterany:$jid" "$here/slurm_finalize.sh")
echo "array job $jid (shards $shards of $BATCHSCORE_NUM_SHARDS), finalize job ${fid%%;*} (afterany:$jid)"

#!/usr/bin/env bash
# SLURM batch template: one coasejax process per GPU, on as many nodes as you ask for (docs/scaling.md).
#
#   sbatch scripts/slurm_template.sh coasejax train coase_es --set population.n_agents=100000000 --out runs/big
#
# Copy it and edit the #SBATCH lines for your cluster (partition, account, time, GPUs per node). srun starts
# --ntasks-per-node processes on each node, each sees one GPU, and COASEJAX_DISTRIBUTED=auto makes every process
# call jax.distributed.initialize() with no arguments: JAX reads the coordinator (the first node), the number of
# processes and this process's id from SLURM's variables. Every process runs the same command; only process 0
# writes the run's summary, log and figures; all write their parts of the checkpoints, so --out must be on a file
# system every node sees.
#
#SBATCH --job-name=coasejax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8            # = GPUs per node: one process per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch scripts/slurm_template.sh COMMAND... (e.g. coasejax simulate coase --out runs/coase)" >&2
    exit 2
fi

export COASEJAX_DISTRIBUTED=auto
# memory: JAX preallocates 75% of each GPU at start; the engine needs much less than that for moderate N, and with
# preallocation off other tools on the node can share the GPU. For the largest runs, keep preallocation and raise the
# fraction instead (docs/scaling.md, "Memory").
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-true}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
export PYTHONUNBUFFERED=1  # the processes' lines arrive in order (srun --label prefixes each with its task id)

# --gpus-per-task=1: each process sees only its own GPU (1 local JAX device per process); --kill-on-bad-exit: when one
# process fails, stop the others rather than leave them waiting at the next collective
srun --kill-on-bad-exit=1 --gpus-per-task=1 --label "$@"

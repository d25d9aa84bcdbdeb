#!/bin/bash
# Fit a cohort as a SLURM job array: array task i of n fits shard i/n of the sorted cases, on
# one GPU and --cpus-per-task CPU threads. No coordinator: the tasks split the cases by shard,
# and each case is claimed with a lock file, so a resubmitted or doubled task never fits a case
# twice. A rerun reuses the finished cases (same keys) and refits failed or changed ones.
#
#   sbatch --array=0-7 docs/slurm-fit-cohort.sh COHORT_DIR OUT_DIR [key=value ...]
#   # when every task has ended (or submit it with --dependency=afterany:<array job id>):
#   perfusion fit-cohort COHORT_DIR out=OUT_DIR summarize      # -> OUT_DIR/cohort.csv
#
# The array must be 0..n-1 without a step (--array=0-7, or --array=0-7%4 to run 4 at a time).
# Keep device, threads and the fit keys the same between runs: they are part of the
# configuration that decides whether a finished case is reused. Without a GPU, drop --gres;
# the script then fits on the CPU.
#SBATCH --job-name=fit-cohort
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=fit-cohort-%A_%a.log
set -euo pipefail

usage="usage: sbatch --array=0-N docs/slurm-fit-cohort.sh COHORT_DIR OUT_DIR [key=value ...]"
cohort=${1:?$usage}
out=${2:?$usage}
shift 2
perfusion=${PERFUSION:-perfusion}   # e.g. PERFUSION=/path/to/repo/.venv/bin/perfusion

# threads per task: torch's and OpenMP's pools, the fit and SimpleITK's preprocessing
threads=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
export WANDB_MODE=${WANDB_MODE:-offline}   # runs under OUT_DIR/<case>/wandb; `wandb sync` later

# SLURM binds the granted GPU through CUDA_VISIBLE_DEVICES (--gres=gpu:1): the task sees it as
# cuda:0 and no other task's GPU. No GPU granted: fit on the CPU.
device=cpu
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then device=cuda; fi

echo "task ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT} on $(hostname): device=$device" \
  "threads=$threads CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"
exec "$perfusion" fit-cohort "$cohort" out="$out" \
  shard="${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" \
  device="$device" threads="$threads" preprocess.threads="$threads" "$@"

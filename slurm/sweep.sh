#!/bin/bash
#SBATCH --job-name=sweep-submit
#SBATCH --cpus-per-task=1
#SBATCH --mem=1gb
#SBATCH --time=00:10:00
#SBATCH --output=slurm-%x-%j.out
# The seed's experiments as one job array, then one comparison table per experiment:
#   activation: relu / sigmoid / tanh (128 channels, 3 layers per side)
#   capacity:   max channels 128 / 256 / 512 with 3 and with 5 layers, and 64 channels with 5 layers
#     sbatch slurm/sweep.sh      (or: bash slurm/sweep.sh); settings as in pipeline.sh, RUN_DIR=runs/sweep
# Prepared data in $RUN_DIR/data is reused; otherwise a prepare job comes first.
RUN_DIR=${RUN_DIR:-runs/sweep}
# the project folder: PROJECT_DIR, else where this script lies (bash slurm/...; sbatch runs a copy from its
# spool folder, and SLURM records where the script it copied lay), else where sbatch was run
submitted=$([ -n "${SLURM_JOB_ID:-}" ] && scontrol show job "$SLURM_JOB_ID" 2>/dev/null |
  sed -n 's/^ *Command=\(.*\)$/\1/p' | head -n 1) || true
for ROOT in "${PROJECT_DIR:-}" "$(dirname "${BASH_SOURCE[0]}")/.." "${submitted:+$(dirname "$submitted")/..}" \
  "${SLURM_SUBMIT_DIR:-}"; do
  [ -n "$ROOT" ] && [ -f "$ROOT/slurm/submit.sh" ] && [ -f "$ROOT/common.py" ] && break
  ROOT=
done
[ -n "$ROOT" ] || { echo "error: the project folder was not found (not beside this script, nor in PROJECT_DIR or" \
  "the folder sbatch ran in: ${SLURM_SUBMIT_DIR:-none}); run it from the project folder or set PROJECT_DIR" >&2
  exit 2; }
source "$ROOT/slurm/submit.sh"

variants="$RUN_DIR/variants.txt"
{
  # a tab after the run folder: its name may hold spaces
  for act in relu sigmoid tanh; do printf '%s\t%s\n' "$RUN_DIR/activation/$act" "--activation $act"; done
  for layers in 3 5; do for ch in 128 256 512; do
    printf '%s\t%s\n' "$RUN_DIR/capacity/c$ch-l$layers" "--max-channels $ch --layers $layers"
  done; done
  printf '%s\t%s\n' "$RUN_DIR/capacity/c64-l5" "--max-channels 64 --layers 5"
} > "$variants"
n=$(wc -l < "$variants")

after=()
if [ ! -f "$RUN_DIR/data/manifest.json" ]; then
  prepare=$(submit prepare.sbatch -- "${PREPARE_FLAGS[@]}")
  after=(--dependency "afterok:$prepare")
  echo "prepare=$prepare"
fi
# shellcheck disable=SC2086
array=$(submit colorizer_array.sbatch --array "0-$((n - 1))" "${after[@]}" -- "$variants" \
  --data "$RUN_DIR/data" --epochs "$COLORIZER_EPOCHS" $COLORIZER_ARGS)
for experiment in activation capacity; do
  # shellcheck disable=SC2086
  id=$(submit evaluate.sbatch --job-name "evaluate-$experiment" --dependency "afterok:$array" -- \
    --data "$RUN_DIR/data" --runs "$RUN_DIR/$experiment" --out "$RUN_DIR/$experiment/report" $EVALUATE_ARGS)
  echo "evaluate-$experiment=$id  table: $ROOT/$RUN_DIR/$experiment/report/report.md"
done
echo "array=$array ($n colorizers)  logs: $ROOT/$RUN_DIR/logs/"

#!/bin/bash
#SBATCH --job-name=pipeline
#SBATCH --cpus-per-task=1
#SBATCH --mem=1gb
#SBATCH --time=00:10:00
#SBATCH --output=slurm-%x-%j.out
# Reproduce the whole study on a SLURM cluster, from the project folder:
#     sbatch slurm/pipeline.sh        (or: bash slurm/pipeline.sh)
# It submits prepare -> regressor and colorizer (in parallel, each afterok prepare) -> evaluate
# (afterok both), and prints the job ids and where the report will be. Settings, all optional:
#   RUN_DIR=runs/pipeline  DATA_SOURCE=<image folder>  PARTITION=gpu  CPU_PARTITION=  ACCOUNT=
#   CONDA_ENV=colorization
#   REGRESSOR_EPOCHS=200  COLORIZER_EPOCHS=20  SBATCH_ARGS=  PREPARE_ARGS=  REGRESSOR_ARGS=
#   COLORIZER_ARGS=  EVALUATE_ARGS=  (the *_ARGS are extra flags for that step's script)
# e.g. RUN_DIR=runs/unet COLORIZER_ARGS="--arch unet" sbatch slurm/pipeline.sh
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

# shellcheck disable=SC2086  # the *_ARGS hold several flags
prepare=$(submit prepare.sbatch -- "${PREPARE_FLAGS[@]}")
regressor=$(submit regressor.sbatch --dependency "afterok:$prepare" -- --data "$RUN_DIR/data" \
  --out "$RUN_DIR/regressor" --epochs "$REGRESSOR_EPOCHS" $REGRESSOR_ARGS)
colorizer=$(submit colorizer.sbatch --dependency "afterok:$prepare" -- --data "$RUN_DIR/data" \
  --out "$RUN_DIR/colorizer" --epochs "$COLORIZER_EPOCHS" $COLORIZER_ARGS)
evaluate=$(submit evaluate.sbatch --dependency "afterok:$regressor:$colorizer" -- --data "$RUN_DIR/data" \
  --colorizer "$RUN_DIR/colorizer/best.pt" --regressor "$RUN_DIR/regressor/best.pt" --out "$RUN_DIR/report" \
  $EVALUATE_ARGS)

echo "prepare=$prepare regressor=$regressor colorizer=$colorizer evaluate=$evaluate"
echo "logs:   $ROOT/$RUN_DIR/logs/"
echo "report: $ROOT/$RUN_DIR/report/report.md (when job $evaluate has finished)"

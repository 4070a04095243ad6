# submit.sh - sourced by pipeline.sh and sweep.sh: settings and a submit helper.
# Every setting is an environment variable with a default; SLURM's own SBATCH_* variables
# (SBATCH_TIMELIMIT, SBATCH_QOS, ...) apply to every job as usual.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # the caller found this file in the project folder
cd "$ROOT"
export PROJECT_DIR=$ROOT
RUN_DIR=${RUN_DIR:-runs/pipeline}          # everything a run writes: data, checkpoints, logs, report
DATA_SOURCE=${DATA_SOURCE:-}               # image folder; empty: data/face_images/ if present, else demo
PARTITION=${PARTITION:-gpu}                # for the jobs that ask for a GPU
CPU_PARTITION=${CPU_PARTITION:-}           # for the others (prepare); empty: the cluster's default
ACCOUNT=${ACCOUNT:-}                       # --account, if your cluster needs one
export CONDA_ENV=${CONDA_ENV:-colorization}
SBATCH_ARGS=${SBATCH_ARGS:-}               # extra sbatch options for every job, e.g. "--qos=mygroup"
PREPARE_ARGS=${PREPARE_ARGS:-}             # extra flags for each script
REGRESSOR_ARGS=${REGRESSOR_ARGS:-}
COLORIZER_ARGS=${COLORIZER_ARGS:-}
EVALUATE_ARGS=${EVALUATE_ARGS:-}
REGRESSOR_EPOCHS=${REGRESSOR_EPOCHS:-200}  # the seed's settings
COLORIZER_EPOCHS=${COLORIZER_EPOCHS:-20}
mkdir -p "$RUN_DIR/logs"

# submit TEMPLATE [sbatch options...] -- [script flags...]; prints the job id
submit() {
  local template=$1; shift
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  # a job that asks for no GPU never waits in the GPU queue
  local partition=$PARTITION
  grep -q '^#SBATCH --gpus' "slurm/$template" || partition=$CPU_PARTITION
  # shellcheck disable=SC2086  # SBATCH_ARGS holds several options
  sbatch --parsable --chdir "$ROOT" ${partition:+--partition "$partition"} ${ACCOUNT:+--account "$ACCOUNT"} \
    --output "$RUN_DIR/logs/%x-%j.out" $SBATCH_ARGS "${opts[@]}" "slurm/$template" "$@" | cut -d';' -f1
}

# prepare.sbatch's flags, as an array: a folder's name may hold spaces ("My Family Photos")
read -ra extra_prepare_args <<< "$PREPARE_ARGS"
PREPARE_FLAGS=(${DATA_SOURCE:+--source "$DATA_SOURCE"} --out "$RUN_DIR/data" "${extra_prepare_args[@]}")

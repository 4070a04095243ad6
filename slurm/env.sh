# env.sh - sourced by every job template: project folder, Python environment, resumable runs.
set -euo pipefail
cd "${PROJECT_DIR:-${SLURM_SUBMIT_DIR:-.}}"
[ -f common.py ] || { echo "error: $(pwd) is not the project folder; submit from it or set PROJECT_DIR" >&2; exit 2; }
export PYTHONUNBUFFERED=1

# conda: through the module system where there is one (HiPerGator: `module load conda`);
# plain machines have no `module`, and use the project's .venv instead
if ! type module >/dev/null 2>&1; then
  for f in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh; do [ -f "$f" ] && source "$f" && break; done
fi
if type module >/dev/null 2>&1; then module load conda >/dev/null 2>&1 || true; fi
CONDA_ENV=${CONDA_ENV:-colorization}
if command -v conda >/dev/null 2>&1 && conda env list | grep -q "^${CONDA_ENV} "; then
  eval "$(conda shell.bash hook)"
  conda activate "$CONDA_ENV"
elif [ -f .venv/bin/activate ]; then
  source .venv/bin/activate
else
  echo "error: no conda environment '$CONDA_ENV' and no .venv; run 'conda env create -f environment.yml'" >&2
  exit 2
fi
echo "job ${SLURM_JOB_ID:-local} on $(hostname) in $(pwd) with $(command -v python)"

# Run a training command so that SLURM's warning signal (--signal=B:USR1@...) reaches it; the
# trainer then saves last.pt and exits with status 3, and the job is requeued to resume, at most
# MAX_REQUEUES times (SLURM counts them in SLURM_RESTART_COUNT): a run signalled at every start
# then fails, so that jobs waiting on it (afterok) do not wait forever.
# With several tasks (sbatch --ntasks=N), the command runs once per task through srun, and the
# tasks form one distributed run (the trainers' --backend auto reads srun's variables).
run_resumable() {
  local pid status signalled
  if [ "${SLURM_NTASKS:-1}" -gt 1 ] && [ -z "${SLURM_STEP_NUM_TASKS:-}" ]; then set -- srun "$@"; fi
  "$@" &
  pid=$!
  trap 'signalled=1; kill -USR1 "$pid" 2>/dev/null' USR1
  trap 'signalled=1; kill -TERM "$pid" 2>/dev/null' TERM
  # wait returns early when a trapped signal arrives: wait again until it returns for the command's end
  # (not by asking whether its pid lives: on a busy machine a new process may have taken that number)
  signalled=1
  while [ "$signalled" = 1 ]; do
    signalled=0; status=0; wait "$pid" || status=$?
  done
  if [ "$status" -eq 3 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    local restarts=${SLURM_RESTART_COUNT:-0} limit=${MAX_REQUEUES:-3}
    if [ "$restarts" -ge "$limit" ]; then
      echo "error: job $SLURM_JOB_ID was interrupted again after $restarts requeues (MAX_REQUEUES=$limit);" \
        "its checkpoint is saved: resubmit it, with a longer --time or a higher MAX_REQUEUES" >&2
      return 1
    fi
    echo "checkpoint saved; requeueing job $SLURM_JOB_ID to resume (requeue $((restarts + 1)) of $limit)"
    scontrol requeue "$SLURM_JOB_ID"
  fi
  return "$status"
}

#!/usr/bin/env bash
# The GPU proof, for whoever has an NVIDIA GPU at hand, in one command:
#     bash benchmarks/gpu_proof.sh [tests] [bench] [pipeline] [folders]   (default: all four, in that order)
# tests: the CUDA tests (tests/test_cuda.py); bench: benchmarks/bench.py on the GPU; pipeline: the whole
# seed pipeline at the seed's full settings (200 regressor epochs, colorizer <= 20 epochs, patience 5)
# with the GPU speed flags; folders: benchmarks/photo_folders.py with colorize.py --device cuda (one run
# of each, a few minutes). Results, with nvidia-smi's report and the versions, go to $RESULTS
# (default benchmarks/results/gpu). Settings: PYTHON (default .venv/bin/python, else python3), FACES_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RESULTS=${RESULTS:-benchmarks/results/gpu}
[ $# -gt 0 ] || set -- tests bench pipeline folders
for step in "$@"; do
  case "$step" in tests|bench|pipeline|folders) ;; *)
    echo "error: unknown step '$step': use tests, bench, pipeline or folders" >&2; exit 2 ;; esac
done

# one line, and a non-zero exit, where no GPU answers: nothing here means anything on a CPU
"$PYTHON" - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"error: no CUDA GPU answers here (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
             f"{torch.cuda.device_count()} devices visible); the GPU proof needs one")
PY

mkdir -p "$RESULTS"
{ nvidia-smi || true; "$PYTHON" -c "import torch, torchvision, ignite, numpy, sys; print('python', sys.version.split()[0],
  '| torch', torch.__version__, 'CUDA', torch.version.cuda, '| torchvision', torchvision.__version__,
  '| ignite', ignite.__version__, '| numpy', numpy.__version__)"; } > "$RESULTS/machine.txt"
status=0
for step in "$@"; do
  echo "== gpu_proof: $step"
  case "$step" in
    tests) set -o pipefail
           "$PYTHON" -m pytest tests/test_cuda.py -v -p no:cacheprovider 2>&1 | tee "$RESULTS/cuda_tests.txt" ||
             status=1 ;;
    bench) "$PYTHON" benchmarks/bench.py --device cuda --out "$RESULTS" || status=1 ;;
    pipeline) "$PYTHON" benchmarks/pipeline.py --device cuda --out "$RESULTS" || status=1 ;;
    folders) "$PYTHON" benchmarks/photo_folders.py --device cuda --repeats 1 --out "$RESULTS" || status=1 ;;
  esac
done
exit "$status"

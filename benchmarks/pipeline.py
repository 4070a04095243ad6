"""Wall time of the whole seed pipeline on one machine, step by step, each script run as a user runs it.

    python benchmarks/pipeline.py [--faces DIR] [--out benchmarks/results] [--regressor-epochs 200]

prepare_data.py (x10 augmentation), train_regressor.py (the seed's 200 epochs), train_colorizer.py
(at most 20 epochs, early stopping with patience 5), evaluate.py: one after the other on one
device (a SLURM cluster runs the two trainings side by side). On a GPU the training scripts get
--data-on-device --amp --channels-last. Writes pipeline.json and pipeline.md into --out, with each
step's seconds, the epochs it ran, and the test MSE the pipeline reached (so a fast run that
learnt nothing shows).
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import (GPU_FLAGS, benchmark_parser, describe_machine, machine, parse_benchmark_args,  # noqa: E402
                   write_results)
from guards import resolve_device  # noqa: E402


def timed(cmd):
    """Run one step as a user would; -> its wall seconds (interpreter start included)."""
    print(f"$ {' '.join(map(str, cmd[1:]))}", flush=True)
    start = time.perf_counter()
    cmd = [str(c) for c in cmd]
    result = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        print(result.stdout[-3000:], file=sys.stderr)
        sys.exit(f"error: {cmd[1]} failed (exit {result.returncode}); its output ends above")
    return time.perf_counter() - start


def markdown(r):
    rows = ["| step | seconds | epochs run |", "|---|---|---|"]
    rows += [f"| {s['script']} | {s['seconds']:.1f} | {s.get('epochs', '')} |" for s in r["steps"]]
    rows.append(f"| **whole pipeline** | **{r['total_seconds']:.1f}** ({r['total_seconds'] / 60:.1f} min) | |")
    return "\n".join([
        f"{describe_machine(r['machine'])} "
        f"Device: {r['device']}. Data: {r['data']}. Training flags: {' '.join(r['train_flags']) or 'none'}.", "",
        *rows, "",
        f"Test MSE it reached: colorizer {r['colorizer_test_mse']:.3e}, regressor {r['regressor_test_mse']:.3e} "
        f"(the mean-face map: {r['mean_face_test_mse']:.3e}).",
    ])


def main():
    p = benchmark_parser(__doc__)
    p.add_argument("--regressor-epochs", type=int, default=200)
    p.add_argument("--colorizer-epochs", type=int, default=20)
    args = parse_benchmark_args(p)
    if not args.faces.is_dir():
        sys.exit(f"error: {args.faces}: no such folder; pass --faces DIR (or set FACES_DIR), the face images")
    device = resolve_device(args.device)
    train_flags = GPU_FLAGS if device.type == "cuda" else []
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        data, reg, col, report = (Path(tmp) / name for name in ("data", "regressor", "colorizer", "report"))
        steps = {"prepare_data.py": {"seconds": timed([py, "prepare_data.py", "--source", args.faces, "--out", data])}}
        steps["train_regressor.py"] = {"seconds": timed([
            py, "train_regressor.py", "--data", data, "--out", reg, "--epochs", args.regressor_epochs,
            "--device", device.type, *train_flags])}
        steps["train_colorizer.py"] = {"seconds": timed([
            py, "train_colorizer.py", "--data", data, "--out", col, "--epochs", args.colorizer_epochs,
            "--device", device.type, *train_flags])}
        steps["evaluate.py"] = {"seconds": timed([
            py, "evaluate.py", "--data", data, "--colorizer", col / "best.pt", "--regressor", reg / "best.pt",
            "--out", report, "--device", device.type])}
        for name, run in (("train_regressor.py", reg), ("train_colorizer.py", col)):
            steps[name]["epochs"] = len(json.loads((run / "history.json").read_text())["epoch"])
        steps = [{"script": name, **step} for name, step in steps.items()]  # a list: JSON keeps its order
        metrics = json.loads((report / "metrics.json").read_text())
    colorizer = next(k for k, kind in metrics["kinds"].items() if kind == "colorizer")
    results = {"machine": machine(), "device": device.type, "data": str(args.faces), "train_flags": train_flags,
               "steps": steps, "total_seconds": sum(s["seconds"] for s in steps),
               "colorizer_test_mse": metrics["summary"][colorizer]["mse"],
               "regressor_test_mse": metrics["regressor"]["mse"],
               "mean_face_test_mse": metrics["summary"]["mean-face map"]["mse"]}
    write_results(args.out, "pipeline", results, markdown(results))


if __name__ == "__main__":
    main()

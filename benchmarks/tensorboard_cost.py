"""What TensorBoard's event files cost a training: the real train_colorizer.py with and without --no-tensorboard,
alternated, on the same prepared data, in one run on one machine.

    python benchmarks/tensorboard_cost.py --data runs/lfw/data [--repeats 3] [--epoch-length 60]

The seed colorizer (its step is the fastest: what is logged every step weighs most there), two epochs of
--epoch-length batches each; its second epoch's training images/s (history.json: validation and the epoch's
grid of photos are outside it), and each run's wall time from start to end (interpreter start, validation and
the grid included). Writes tensorboard_cost.json and tensorboard_cost.md into --out.
"""
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import benchmark_parser, describe_machine, machine, parse_benchmark_args, run_measured, write_results
from common import check_prepared
from guards import exit_on_user_error, positive_int


def train(data: str, out: Path, epoch_length: int, flags: list[str]) -> tuple[float, float]:
    """-> (second epoch's training images/s, wall seconds)."""
    start = time.perf_counter()
    run_measured([sys.executable, "train_colorizer.py", "--data", data, "--out", str(out), "--epochs", "2",
                  "--epoch-length", str(epoch_length), "--patience", "0", "--device", "cpu", *flags])
    wall = time.perf_counter() - start
    return json.loads((out / "history.json").read_text())["train_images_per_s"][-1], wall


def main():
    p = benchmark_parser(__doc__)
    p.add_argument("--data", required=True, help="a prepared set (prepare_data.py)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--epoch-length", type=positive_int, default=60)
    args = parse_benchmark_args(p)
    exit_on_user_error(lambda: check_prepared(args.data))  # before any training: one line if it is not a set
    runs = {"tensorboard": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, flags in (("tensorboard", []), ("none", ["--no-tensorboard"])):
                runs[name].append(train(args.data, Path(tmp) / f"{name}-{r}", args.epoch_length, flags))
    speed = {name: statistics.median(s for s, _ in values) for name, values in runs.items()}
    wall = {name: statistics.median(w for _, w in values) for name, values in runs.items()}
    pairs = [a[0] / b[0] for a, b in zip(runs["tensorboard"], runs["none"])]
    results = {"machine": machine(), "data": args.data, "epoch_length": args.epoch_length, "runs": runs,
               "images_per_s": speed, "wall_s": wall, "ratio_each_pair": pairs, "ratio": statistics.median(pairs)}
    table = "\n".join([
        describe_machine(results["machine"]), "",
        f"train_colorizer.py (the seed colorizer), 2 epochs of {args.epoch_length} batches on {args.data}, "
        f"{args.repeats} alternated pairs:", "",
        "| | second epoch (training images/s) | wall (s) |", "|---|---|---|",
        f"| with TensorBoard | {speed['tensorboard']:.0f} | {wall['tensorboard']:.1f} |",
        f"| --no-tensorboard | {speed['none']:.0f} | {wall['none']:.1f} |", "",
        f"Ratio with / without (median of the pairs): **{results['ratio']:.3f}** (each pair: "
        + ", ".join(f"{x:.3f}" for x in pairs) + ")."])
    write_results(args.out, "tensorboard_cost", results, table)


if __name__ == "__main__":
    main()

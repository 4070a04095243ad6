"""evaluate.py's per-image metrics as they run today (eager PyTorch) against the same functions under
torch.compile, in one run on one machine: the lever the speed issue names for the scoring chain.

    python benchmarks/metrics.py [--data runs/lfw/data] [--images 512] [--per-call 4] [--threads 1] [--cold-cache]

On --images test images of a prepared set and four guesses of their colour (the truth's colours faded
20, 40, 60 and 80% towards gray: none all gray, whose colorfulness is rounding noise near 0), each
metric function of evaluate.py, and the whole chain (the truth's side once, then every score of the four
guesses), is timed eager and compiled, --per-call images a call: CPU ms an image, the ratio, the seconds
of the first compiled call (the compile, paid by every run whose cache is cold) and the largest
difference of the compiled results, relative to the largest value of each. Beside them, what the eager
chain is made of: the CPU ns an element of each kind of operation in it (evaluate's chunk of images, one
thread), against an addition. Writes metrics.json and metrics.md into --out.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import evaluate  # noqa: E402
import scores  # noqa: E402
from bench import describe_machine, machine, parse_benchmark_args, write_results  # noqa: E402
from common import images_to_lab01, lab01_to_lab, lab01_to_rgb, open_rgb_split  # noqa: E402
from guards import ArgumentParser, UserError, exit_on_user_error, positive_int  # noqa: E402

FADES = (0.2, 0.4, 0.6, 0.8)  # the guesses: the truth's colours faded this much towards gray


def chain(true_lab01: torch.Tensor, guesses: list) -> list:
    """What evaluate computes for one batch: the truth's side once, then every score of every guess."""
    truth = scores.Truth.of(true_lab01)
    return [truth.colorfulness] + [value for guess in guesses for value in every_score(guess, truth)]


def every_score(pred_lab01: torch.Tensor, truth) -> list:
    """scores.score's numbers as tensors (a list of floats would end a compiled graph)."""
    pred_rgb = lab01_to_rgb(pred_lab01)
    return [scores.seed_mse_per_image(pred_lab01, truth.lab01), scores.psnr_per_image(pred_rgb, truth.rgb),
            scores.ssim_per_image(pred_rgb, truth.ssim),
            scores.ciede2000_per_image(truth.lab, lab01_to_lab(pred_lab01)), scores.colorfulness(pred_rgb)]


def workloads(true_lab01: torch.Tensor, per_call: int) -> dict:
    """name -> (function, the argument tuple of each call)."""
    batches = list(true_lab01.split(per_call))
    guesses = [[torch.cat([t[:, :1], evaluate.GRAY_AB01 + (1 - fade) * (t[:, 1:] - evaluate.GRAY_AB01)], dim=1)
                for fade in FADES] for t in batches]
    truths = [scores.Truth.of(t) for t in batches]
    first = [g[0] for g in guesses]  # one guess stands for all in the single metrics
    rgb = [lab01_to_rgb(g) for g in first]
    return {"Lab01 to RGB": (lab01_to_rgb, [(g,) for g in first]),
            "seed MSE": (scores.seed_mse_per_image, [(g, t.lab01) for g, t in zip(first, truths)]),
            "PSNR": (scores.psnr_per_image, [(r, t.rgb) for r, t in zip(rgb, truths)]),
            "SSIM": (scores.ssim_per_image, [(r, t.ssim) for r, t in zip(rgb, truths)]),
            "CIEDE2000": (scores.ciede2000_per_image, [(t.lab, lab01_to_lab(g)) for g, t in zip(first, truths)]),
            "colorfulness": (scores.colorfulness, [(r,) for r in rgb]),
            f"the chain: truth and {len(FADES)} guesses": (chain, list(zip(batches, guesses)))}


def cpu_ms_per_image(function, calls: list, n_images: int) -> float:
    """Each result dropped at once, as evaluate drops them: the allocator reuses the memory."""
    start = time.process_time()
    for args in calls:
        function(*args)
    return 1000 * (time.process_time() - start) / n_images


def largest_relative_difference(a, b) -> float:
    if isinstance(a, (list, tuple)):
        return max(largest_relative_difference(x, y) for x, y in zip(a, b))
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-12))


def measure(name: str, function, calls: list, n_images: int) -> dict:
    compiled = torch.compile(function, dynamic=False)
    function(*calls[0])  # eager warm-up: the allocator's first pass
    start = time.perf_counter()
    try:
        compiled(*calls[0])
    except Exception as exc:  # no C++ compiler, or one that fails: the eager figures alone mean nothing here
        raise UserError(f"torch.compile failed on {name} ({type(exc).__name__}): it needs a working C++ compiler "
                        "(g++) and Python's headers") from None
    compile_s = time.perf_counter() - start
    eager_ms, compiled_ms = cpu_ms_per_image(function, calls, n_images), cpu_ms_per_image(compiled, calls, n_images)
    difference = max(largest_relative_difference(compiled(*args), function(*args)) for args in calls)
    return {"eager_ms": eager_ms, "compiled_ms": compiled_ms, "ratio": eager_ms / compiled_ms,
            "first_call_s": compile_s, "max_relative_difference": difference}


def operation_costs() -> dict:
    """CPU ns an element of the kinds of operation evaluate's metrics are made of, eager, on tensors the size of
    what evaluate scores at a time (SCORE_CHUNK images of 128 x 128) holding colour-like values."""
    generator = torch.Generator().manual_seed(0)
    x, y = (torch.rand(evaluate.SCORE_CHUNK, 128, 128, generator=generator) + 0.1 for _ in range(2))
    mask = x > y
    operations = {"addition": lambda: x + y, "multiplication": lambda: x * y, "square root": lambda: x.sqrt(),
                  "exp": lambda: x.exp(), "exp below -87 (float32 underflow)": lambda: (-100 * x).exp(),
                  "cos": lambda: x.cos(), "atan2": lambda: torch.atan2(x, y), "comparison (x > y)": lambda: x > y,
                  "torch.where": lambda: torch.where(mask, x, y), "pow (exponent 1/2.4)": lambda: x ** (1 / 2.4),
                  "var_mean of each image": lambda: torch.var_mean(x.flatten(1), dim=1, correction=0),
                  "SSIM's window, one 11-tap pass": lambda: scores.windowed(x[:, None])}
    costs, repeats = {}, 50
    for name, operation in operations.items():
        operation()  # the allocator's first pass
        costs[name] = 1e6 * cpu_ms_per_image(operation, [()] * repeats, repeats * x.numel())  # ms -> ns
    costs["SSIM's window, one 11-tap pass"] /= 2  # windowed() makes two passes
    return costs


def test_images(data: Path) -> np.ndarray:
    if not (data / "manifest.json").is_file():
        raise UserError(f"{data}: not a prepared folder; run `make lfw-data`, or pass --data a folder that "
                        "prepare_data.py wrote")
    return open_rgb_split(data, "test")


def markdown(results: dict) -> str:
    rows = ["| evaluate's function | eager (CPU ms an image) | compiled | ratio | first compiled call (s) "
            "| largest difference, relative |", "|---|---|---|---|---|---|"]
    rows += [f"| {name} | {r['eager_ms']:.3f} | {r['compiled_ms']:.3f} | **{r['ratio']:.2f}** | "
             f"{r['first_call_s']:.1f} | {r['max_relative_difference']:.1e} |"
             for name, r in results["metrics"].items()]
    costs = results["operations"]
    rows += ["", "What the eager chain is made of: CPU ns an element of each kind of operation, eager, on as many "
             f"values as evaluate scores at a time ({evaluate.SCORE_CHUNK} images), and that cost in additions:", "",
             "| operation | ns an element | additions |", "|---|---|---|"]
    rows += [f"| {name} | {ns:.2f} | {ns / costs['addition']:.1f} |" for name, ns in costs.items()]
    return "\n".join(rows + ["", f"{results['images']} test images, {results['per_call']} a call, "
                                 f"{results['threads']} thread(s). {describe_machine(results['machine'])}"])


def main():
    p = ArgumentParser(__doc__)
    p.add_argument("--data", type=Path, default=ROOT / "runs" / "lfw" / "data",
                   help="a prepared folder (make lfw-data); its test split is scored")
    p.add_argument("--images", type=positive_int, default=512, help="test images scored (at most the split's)")
    p.add_argument("--per-call", type=positive_int, default=4, help="images a call")
    p.add_argument("--threads", type=positive_int, default=1, help="torch's threads")
    p.add_argument("--cold-cache", action="store_true",
                   help="compile into an empty cache (a temporary folder), as on a fresh machine")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parse_benchmark_args(p)
    torch.set_num_threads(args.threads)
    cold_cache = tempfile.TemporaryDirectory(prefix="metrics-inductor-") if args.cold_cache else None  # gone at exit
    if cold_cache:  # read when the first compile loads Inductor's config
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cold_cache.name
    images = np.array(exit_on_user_error(lambda: test_images(args.data))[:args.images])
    true_lab01 = images_to_lab01(torch.from_numpy(images))
    calls = workloads(true_lab01, args.per_call)
    results = {"images": len(images), "per_call": args.per_call, "threads": args.threads, "machine": machine(),
               "metrics": exit_on_user_error(lambda: {name: measure(name, function, each, len(images))
                                                      for name, (function, each) in calls.items()}),
               "operations": operation_costs()}
    write_results(args.out, "metrics", results, markdown(results))


if __name__ == "__main__":
    main()

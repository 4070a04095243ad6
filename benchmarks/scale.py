"""How memory and speed scale with the number of source photos, measured in one run on one machine.

    python benchmarks/scale.py [--images 100000] [--out benchmarks/results] [--quick]

1. prepare_data.py (--augment-factor 1, --size 64) on --images source photos and on a tenth as
   many: its peak memory, and the ratio (memory must not grow with the photos);
2. its written images/s with --workers 1 and --workers 2 on the smaller set: the ratio (the
   scaling with cores);
3. a seed-colorizer training run (2 epochs of a few batches) on both prepared sets: peak memory,
   and the ratio.
The source photos are made here from the colour photos that ship with scikit-image (random crops
of 96 to 160 pixels, flips, colour gains), JPEG files in folders of 1,000: no download.
Writes scale.json and scale.md into --out.
"""
import re
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from bench import benchmark_parser, describe_machine, machine, run_measured, train_script, write_results


def make_photos(folder: Path, n: int, seed: int) -> None:
    """n JPEG photos of 96 to 160 pixels a side: crops of the scikit-image colour photos, flipped and
    with their colours scaled at random."""
    from skimage import data

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        crop = int(rng.integers(min(h, w) // 4, min(h, w)))
        top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        side = int(rng.integers(96, 161))
        image = cv2.resize(photo[top:top + crop, left:left + crop], (side, side), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        image = np.clip(image * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        sub = folder / f"{i // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"{i:07d}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])


def prepare(source: Path, out: Path, workers: int) -> dict:
    """prepare_data.py as a user runs it on a large set: --augment-factor 1, --size 64."""
    output, rss, anon = run_measured([sys.executable, "prepare_data.py", "--source", str(source), "--out", str(out),
                                      "--augment-factor", "1", "--size", "64", "--workers", str(workers)])
    said = output.strip().splitlines()[-1]
    return {"rss_mib": rss, "anon_mib": anon, "script_says": said,
            "written_per_s": float(re.search(r"([\d.]+) written/s", said).group(1))}


def markdown(r) -> str:
    small, large, one = r["prepare"]["small_workers2"], r["prepare"]["large_workers2"], r["prepare"]["small_workers1"]
    return "\n".join([
        describe_machine(r["machine"]), "",
        f"prepare_data.py (--augment-factor 1, --size 64, --workers 2) on {r['large']} source photos: peak memory "
        f"{large['rss_mib']:.0f} MiB RSS ({large['anon_mib']:.0f} MiB anonymous); on {r['small']}: "
        f"{small['rss_mib']:.0f} MiB ({small['anon_mib']:.0f} MiB). Memory ratio (RSS): "
        f"**{large['rss_mib'] / small['rss_mib']:.2f}**. Its last line on the larger set: `{large['script_says']}`",
        "",
        f"Its images written per second on {r['small']} photos: --workers 1 {one['written_per_s']:.0f}, --workers 2 "
        f"{small['written_per_s']:.0f}: ratio **{small['written_per_s'] / one['written_per_s']:.2f}**.",
        "",
        f"A seed-colorizer training run ({r['train_iters']} batches of 64 per epoch, 2 epochs) on the two prepared "
        f"sets: peak memory {r['train_small_rss_mib']:.0f} MiB and {r['train_large_rss_mib']:.0f} MiB RSS: ratio "
        f"**{r['train_large_rss_mib'] / r['train_small_rss_mib']:.2f}**.",
    ])


def main():
    p = benchmark_parser(__doc__)
    p.add_argument("--images", type=int, default=100_000, help="source photos of the larger set (the other: a tenth)")
    p.add_argument("--quick", action="store_true", help="a smoke run on 1,000 and 100 photos")
    args = p.parse_args()
    large = 1000 if args.quick else args.images
    small = max(100, large // 10)  # the prepared set needs one training batch of 64
    results = {"machine": machine(), "large": large, "small": small, "train_iters": 4 if args.quick else 40,
               "prepare": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"making {large} + {small} photos ...", flush=True)
        make_photos(tmp / "large", large, seed=0)
        make_photos(tmp / "small", small, seed=1)
        for label, workers in (("small", 1), ("small", 2), ("large", 2)):
            print(f"prepare {label}, --workers {workers} ...", flush=True)
            results["prepare"][f"{label}_workers{workers}"] = prepare(tmp / label, tmp / f"{label}_{workers}", workers)
        print("training memory ...", flush=True)
        for label in ("small", "large"):
            _, rss, _ = train_script("seed colorizer", tmp / f"{label}_2", tmp / f"run_{label}", 64,
                                     results["train_iters"], torch.device("cpu"))
            results[f"train_{label}_rss_mib"] = rss
    write_results(args.out, "scale", results, markdown(results))


if __name__ == "__main__":
    main()

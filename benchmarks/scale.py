"""Memory and speed on many photos of mixed sizes, measured in one run on one machine: the route the
README gives for your own photos, on a large folder and on a tenth of it.

    python benchmarks/scale.py [--images 100000] [--out benchmarks/results] [--quick]

The photos (JPEG, folders of 1,000) are made here from the colour photos that ship with
scikit-image: random crops, flips and colour gains, 96 to 640 pixels a side, one in 50 of 1,500 to
3,000 pixels. No download.
1. prepare_data.py --augment-factor 1 --size 64: peak memory on --images photos and on a tenth as
   many (the ratio: memory must not grow with the photos); its written images/s with --workers 1
   and --workers 2 on the smaller set (the ratio: the scaling with cores), and whether the two wrote
   the same bytes;
2. train_colorizer.py --augment, 2 epochs (--quick: of 4 batches) on both prepared sets: peak memory, ratio;
3. evaluate.py on both test splits, with the colorizer trained on the larger set: peak memory, ratio;
4. colorize.py on one and on twenty 8000x8000 photos: peak memory, ratio.
Writes scale.json and scale.md into --out.
"""
import filecmp
import functools
import re
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench import benchmark_parser, describe_machine, machine, parse_benchmark_args, run_measured, write_results

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


@functools.cache
def sample_photos() -> list[np.ndarray]:
    from skimage import data

    return [getattr(data, name)() for name in SAMPLE_PHOTOS]


def made_up_photo(rng, height: int, width: int) -> np.ndarray:
    """A random crop of one of scikit-image's colour photos, its colours scaled, maybe flipped, resized
    to height x width (RGB uint8)."""
    photo = sample_photos()[int(rng.integers(len(SAMPLE_PHOTOS)))]
    h, w = photo.shape[:2]
    crop_h, crop_w = int(rng.integers(h // 4, h + 1)), int(rng.integers(w // 4, w + 1))
    top, left = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
    crop = np.clip(photo[top:top + crop_h, left:left + crop_w] * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    shrink = height * width < crop_h * crop_w
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def make_photos(folder: Path, n: int, seed: int, large_sides: tuple[int, int]) -> None:
    """n JPEG photos of 96 to 640 pixels a side; one in 50 has sides in large_sides."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        low, high = large_sides if i % 50 == 49 else (96, 640)
        height, width = (int(side) for side in rng.integers(low, high + 1, 2))
        sub = folder / f"{i // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"{i:07d}.jpg"), made_up_photo(rng, height, width)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


def prepare(source: Path, out: Path, workers: int) -> dict:
    """prepare_data.py as the README's route runs it on a large set: --augment-factor 1 (here --size 64)."""
    output, rss, anon = run_measured([sys.executable, "prepare_data.py", "--source", str(source), "--out", str(out),
                                      "--augment-factor", "1", "--size", "64", "--workers", str(workers)])
    said = output.strip().splitlines()[-1]
    return {"rss_mib": rss, "anon_mib": anon, "script_says": said,
            "written_per_s": float(re.search(r"([\d.]+) written/s", said).group(1))}


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two prepared folders hold the same files with the same bytes."""
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and \
        all(filecmp.cmp(a / name, b / name, shallow=False) for name in names)


def train(data: Path, out: Path, batches_per_epoch: int | None) -> float:
    """train_colorizer.py --augment, 2 epochs (of every training image, or of batches_per_epoch); -> its peak RSS
    in MiB."""
    epoch_length = ["--epoch-length", str(batches_per_epoch)] if batches_per_epoch else []
    _, rss, _ = run_measured([sys.executable, "train_colorizer.py", "--data", str(data), "--out", str(out), "--augment",
                              "--epochs", "2", "--patience", "0", "--device", "cpu", *epoch_length])
    return rss


def evaluate(data: Path, checkpoint: Path, out: Path) -> float:
    """evaluate.py on the test split of data; -> its peak RSS in MiB."""
    _, rss, _ = run_measured([sys.executable, "evaluate.py", "--data", str(data), "--colorizer", str(checkpoint),
                              "--out", str(out), "--device", "cpu"])
    return rss


def colorize_memory(tmp: Path, checkpoint: Path, side: int, counts: tuple[int, int]) -> dict:
    """colorize.py's peak memory (default --max-megapixels) on one and on many side x side photos."""
    rng = np.random.default_rng(2)
    result = {"side": side, "counts": list(counts)}
    for label, n in zip(("one", "many"), counts):
        folder = tmp / f"scans{n}"
        folder.mkdir()
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:02d}.jpg"), made_up_photo(rng, side, side)[..., ::-1])
        _, rss, _ = run_measured([sys.executable, "colorize.py", str(folder), "--checkpoint", str(checkpoint),
                                  "--out", str(tmp / f"colorized{n}"), "--device", "cpu"])
        result[f"{label}_rss_mib"] = rss
    return result


def ratio(large: float, small: float) -> str:
    return f"**{large / small:.2f}**"


def markdown(r) -> str:
    small, large, one = r["prepare"]["small_workers2"], r["prepare"]["large_workers2"], r["prepare"]["small_workers1"]
    c = r["colorize"]
    epochs_of = f" of {r['train_batches_per_epoch']} batches" if r["train_batches_per_epoch"] else ""
    return "\n".join([
        describe_machine(r["machine"]), "",
        f"Photos: {r['large']} and {r['small']} made-up JPEGs, 96 to 640 pixels a side, one in 50 of "
        f"{r['large_sides'][0]} to {r['large_sides'][1]}.", "",
        "| step (the README's route for your own photos) | peak RSS, larger set (MiB) | smaller set (MiB) | ratio |",
        "|---|---|---|---|",
        f"| `prepare_data.py --augment-factor 1 --size 64 --workers 2` | {large['rss_mib']:.0f} | "
        f"{small['rss_mib']:.0f} | {ratio(large['rss_mib'], small['rss_mib'])} |",
        f"| `train_colorizer.py --augment` (2 epochs{epochs_of}) | "
        f"{r['train_large_rss_mib']:.0f} | {r['train_small_rss_mib']:.0f} | "
        f"{ratio(r['train_large_rss_mib'], r['train_small_rss_mib'])} |",
        f"| `evaluate.py` on the test split ({r['test_images_large']} and {r['test_images_small']} images) | "
        f"{r['evaluate_large_rss_mib']:.0f} | {r['evaluate_small_rss_mib']:.0f} | "
        f"{ratio(r['evaluate_large_rss_mib'], r['evaluate_small_rss_mib'])} |",
        f"| `colorize.py` on {c['counts'][1]} and {c['counts'][0]} photos of {c['side']}x{c['side']} | "
        f"{c['many_rss_mib']:.0f} | {c['one_rss_mib']:.0f} | {ratio(c['many_rss_mib'], c['one_rss_mib'])} |",
        "", f"prepare_data.py's last line on the larger set: `{large['script_says']}`", "",
        f"Its images written per second on {r['small']} photos: --workers 1 {one['written_per_s']:.0f}, --workers 2 "
        f"{small['written_per_s']:.0f}: ratio {ratio(small['written_per_s'], one['written_per_s'])}; the two wrote "
        f"{'the same bytes' if r['workers_same_bytes'] else 'DIFFERENT bytes'}.",
    ])


def main():
    p = benchmark_parser(__doc__)
    p.add_argument("--images", type=int, default=100_000, help="photos of the larger set (the other: a tenth)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 1,000 and 100 photos, the large ones 300 to 600 pixels, colorize on 1,000x1,000")
    args = parse_benchmark_args(p)
    if args.images < 1000:  # a tenth of them must make a set that trains: one batch of 64 and held-out photos
        p.error(f"argument --images: at least 1000, not {args.images}")
    large = 1000 if args.quick else args.images
    small = large // 10
    results = {"machine": machine(), "large": large, "small": small,
               "train_batches_per_epoch": 4 if args.quick else None,
               "large_sides": [300, 600] if args.quick else [1500, 3000], "prepare": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"making {large} + {small} photos ...", flush=True)
        make_photos(tmp / "large", large, seed=0, large_sides=results["large_sides"])
        make_photos(tmp / "small", small, seed=1, large_sides=results["large_sides"])
        for label, workers in (("small", 1), ("small", 2), ("large", 2)):
            print(f"prepare {label}, --workers {workers} ...", flush=True)
            results["prepare"][f"{label}_workers{workers}"] = prepare(tmp / label, tmp / f"{label}_{workers}", workers)
        results["workers_same_bytes"] = same_bytes(tmp / "small_1", tmp / "small_2")
        checkpoint = tmp / "run_large" / "best.pt"
        for label in ("small", "large"):
            print(f"training and evaluate, {label} ...", flush=True)
            data = tmp / f"{label}_2"
            results[f"train_{label}_rss_mib"] = train(data, tmp / f"run_{label}", results["train_batches_per_epoch"])
            results[f"test_images_{label}"] = int(np.load(data / "test.npy", mmap_mode="r").shape[0])
        for label in ("small", "large"):  # both with the same colorizer
            results[f"evaluate_{label}_rss_mib"] = evaluate(tmp / f"{label}_2", checkpoint, tmp / f"report_{label}")
        print("colorize ...", flush=True)
        results["colorize"] = colorize_memory(tmp, checkpoint, *((1000, (1, 4)) if args.quick else (8000, (1, 20))))
    write_results(args.out, "scale", results, markdown(results))


if __name__ == "__main__":
    main()

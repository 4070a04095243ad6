"""colorize.py on folders of camera-size photos, beside this machine's limit measured in the same run: decoding and
encoding the same files alone.

    python benchmarks/photo_folders.py [--photos 16] [--repeats 3] [--device auto] [--out benchmarks/results] [--quick]

Three folders, made here from scikit-image's colour photos (scale.made_up_photo) with camera noise added, so that
the files compress as a camera's do:
  * 12mp: JPEG (quality 92), 4000 x 3000;
  * 24mp-tiff16: 16-bit TIFF (deflate), 6000 x 4000, a quarter as many;
  * mix: JPEG and PNG of 0.3 to 24 megapixels, a third of them black and white.
For each folder, with the process held to 1 core and to 2 (sched_setaffinity, inherited by colorize.py):
  * the limit: every file decoded and encoded again in its own format (JPEG at colorize's quality 95), by OpenCV
    and by Pillow, in as many threads as cores; the faster of the two counts;
  * colorize.py as a user runs it on --device (auto: a GPU where one answers; the full-resolution work stays on
    the CPU), --faces auto (the default) and --faces off, given a 64 x 64 photo and the folder: its photos/s,
    n / (its time - its time for the small photo alone), so that the interpreter's start and the model's loading
    count in neither; its peak memory (anonymous) on the folder and on the small photo;
  * the ratio: colorize's photos/s over the limit's, both with the same cores.
The time of one 12-megapixel photo from the command line, interpreter start included, comes with it, --faces
auto and off alternated (what the face search adds to a photo), and what bounds what remains: each step of
colorize.py's work on one 12-megapixel photo of the folder, in process, at one thread (medians of --repeats after
a first call), and the lightness of the same photo in black and white.
Writes photo_folders.json and photo_folders.md into --out.
"""
import io
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from bench import benchmark_parser, describe_machine, machine, parse_benchmark_args, run_measured, write_results
from guards import exit_on_user_error, positive_int, resolve_device
from scale import made_up_photo

ROOT = Path(__file__).resolve().parents[1]
CORES = (1, 2)
FACES = ("auto", "off")


def camera_photo(rng, height: int, width: int, gray=False) -> np.ndarray:
    """A made-up photo with a camera's noise (RGB uint8; gray: its three channels equal)."""
    rgb = made_up_photo(rng, height, width).astype(np.float32)
    rgb += rng.normal(0, 4, rgb.shape).astype(np.float32)
    if gray:
        rgb[:] = rgb.mean(axis=2, keepdims=True)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_folders(root: Path, n: int, seed: int) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    folders = {name: root / name for name in ("12mp", "24mp-tiff16", "mix")}
    for folder in folders.values():
        folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folders["12mp"] / f"{i:03d}.jpg"), camera_photo(rng, 3000, 4000)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
    for i in range(max(2, n // 4)):
        deep = camera_photo(rng, 4000, 6000)[..., ::-1].astype(np.uint16) * 257
        cv2.imwrite(str(folders["24mp-tiff16"] / f"{i:03d}.tif"), deep)
    for i in range(n):
        megapixels = float(np.exp(rng.uniform(np.log(0.3), np.log(24))))
        width = int(np.sqrt(megapixels * 1e6 * 4 / 3))
        photo = camera_photo(rng, width * 3 // 4, width, gray=i % 3 == 0)[..., ::-1]
        if i % 3 == 0:
            photo = np.ascontiguousarray(photo[..., 0])  # stored gray, as a scan of a black-and-white print is
        if i % 2:
            cv2.imwrite(str(folders["mix"] / f"{i:03d}.png"), photo)
        else:
            cv2.imwrite(str(folders["mix"] / f"{i:03d}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return folders


def opencv_round_trip(path: Path) -> int:
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
    return len(cv2.imencode(path.suffix, image, params)[1])


def pillow_round_trip(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        buffer = io.BytesIO()
        options = {"quality": 95} if image.format == "JPEG" else {}
        image.save(buffer, format=image.format, **options)
    return buffer.tell()


def limit(files: list[Path], cores: int, repeats: int) -> dict:
    """Photos/s of decoding and encoding the files alone, in as many threads as cores; best library, median of
    repeats."""
    speeds = {}
    with ThreadPoolExecutor(cores) as pool:
        for name, round_trip in (("opencv", opencv_round_trip), ("pillow", pillow_round_trip)):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                list(pool.map(round_trip, files))
                times.append(time.perf_counter() - start)
            speeds[name] = len(files) / statistics.median(times)
    best = max(speeds, key=speeds.get)
    return {"photos_per_s": speeds[best], "library": best, "each": speeds}


def colorize_run(inputs: list[Path], out: Path, faces: str, device: str) -> tuple[float, float]:
    """colorize.py as a user runs it: (wall seconds, interpreter start included; peak anonymous memory in MiB:
    the resident size the kernel reports would include what this process held when it started the child)."""
    start = time.perf_counter()
    _, _, anon = run_measured([sys.executable, "colorize.py", *map(str, inputs), "--out", str(out), "--faces", faces,
                               "--device", device])
    return time.perf_counter() - start, anon


def colorize_speed(folder: Path, small: Path, work: Path, faces: str, repeats: int, device: str) -> dict:
    from PIL import Image

    walls, small_walls, memory = [], [], {}
    for r in range(repeats):
        wall, memory["folder"] = colorize_run([small, folder], work / f"out-{faces}-{r}", faces, device)
        alone, memory["small"] = colorize_run([small], work / f"small-{faces}-{r}", faces, device)
        walls.append(wall)
        small_walls.append(alone)
    wall, alone = statistics.median(walls), statistics.median(small_walls)
    files = sorted(folder.iterdir())
    megapixels = sum(np.prod(Image.open(f).size) for f in files) / 1e6
    return {"photos_per_s": len(files) / (wall - alone), "seconds_per_megapixel": (wall - alone) / megapixels,
            "wall_s": wall, "wall_s_each": walls, "small_photo_wall_s": alone, "small_photo_wall_s_each": small_walls,
            "peak_anon_mib_folder": memory["folder"], "peak_anon_mib_small": memory["small"]}


def one_photo(photo: Path, work: Path, repeats: int, device: str) -> dict:
    """Seconds for one photo from the command line, interpreter start included, with --faces auto (the default)
    and off, alternated: {faces: [seconds of each run]}."""
    seconds = {faces: [] for faces in FACES}
    for r in range(repeats):
        for faces in FACES:
            seconds[faces].append(colorize_run([photo], work / f"one-{faces}-{r}", faces, device)[0])
    return seconds


def stages(photo: Path, repeats: int, device: str) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds each step of colorize.py's work on photo takes, one after another at one thread, the shipped
    model on device: {step: median of repeats}; and those of the lightness of the same photo in black and white,
    stored gray and stored as BGR (read through a table of L*): {how: median of repeats}."""
    import torch

    import colorize
    import faces
    import photos

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    colorizer = colorize.Colorizer.from_checkpoint(colorize.SHIPPED_MODEL, None, None, torch.device(device))
    faces.cascade()  # loaded before any clock starts
    ms = {}

    def timed(step: str, work: Callable, *args, into: dict = ms):
        # a first call untimed: on this VM the first write to fresh memory after other large arrays were freed
        # stalled up to 0.1 s (the kernel gathering huge pages), for any step, once
        work(*args)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = work(*args)
            times.append(1000 * (time.perf_counter() - start))
        into[step] = statistics.median(times)
        return result

    data = photo.read_bytes()
    samples = timed("decode (the limit's work)", cv2.imdecode, np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    L = timed("lightness", photos.lightness_of_samples, samples)
    face_scale, colorizer.face_scale = colorizer.face_scale, None  # --faces off: the resize alone
    L_small = timed("network input (area resize)", lambda: colorize.lightness_item(L, colorizer)["L_small"])
    colorizer.face_scale = face_scale
    timed("face search (--faces auto)", faces.find_faces, L, colorizer.largest_face_to_find(len(L), len(L_small)))
    ab = timed("network", colorizer.predict_ab, L_small[None])[0]
    # into the memory a writer thread uses again from photo to photo, as colorize.coloured does
    full = timed("colour to full size (cubic)", colorize.at_full_size, ab, L.shape,
                 colorize.scratch("ab", (*L.shape, 2), np.float32))
    bgr = timed("Lab to samples", photos.lab_to_samples, L, full, np.uint8,
                colorize.scratch("samples", (*L.shape, 3), np.uint8), True)
    timed("encode (the limit's work)", photos.encode, bgr, photo.suffix)
    gray, black_and_white = cv2.cvtColor(samples, cv2.COLOR_BGR2GRAY), {}
    for stored, bw in (("stored gray", gray), ("stored as BGR", cv2.merge([gray] * 3))):
        timed(stored, photos.lightness_of_samples, bw, into=black_and_white)
    return ms, black_and_white


def markdown(r: dict) -> str:
    lines = [describe_machine(r["machine"]), "",
             f"colorize.py --device {r['device']}. {r['photos']} photos a folder (24mp-tiff16: "
             f"{max(2, r['photos'] // 4)}); medians of {r['repeats']} runs. colorize.py photos/s, its run on a 64x64 "
             "photo alone subtracted; the limit: the same files decoded and encoded alone (the faster library) in "
             "as many threads as cores.", "",
             "| folder | cores | limit (photos/s) | colorize --faces auto (photos/s) | ratio | s/MP | "
             "--faces off (photos/s) | ratio | s/MP | peak memory: folder / a small photo (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_cores in r["folders"].items():
        for cores, m in by_cores.items():
            auto, off, lim = m["auto"], m["off"], m["limit"]["photos_per_s"]
            lines.append(f"| {name} | {cores} | {lim:.2f} ({m['limit']['library']}) | {auto['photos_per_s']:.2f} | "
                         f"**{auto['photos_per_s'] / lim:.2f}** | {auto['seconds_per_megapixel']:.3f} | "
                         f"{off['photos_per_s']:.2f} | **{off['photos_per_s'] / lim:.2f}** | "
                         f"{off['seconds_per_megapixel']:.3f} | {auto['peak_anon_mib_folder']:.0f} / "
                         f"{auto['peak_anon_mib_small']:.0f} |")
    one = r["one_12mp_photo_s"]
    auto, off = (statistics.median(one[faces]) for faces in FACES)
    lines += ["", "One 12-megapixel JPEG from the command line, interpreter start included (all cores): "
              + "; ".join(f"--faces {faces} " + ", ".join(f"{s:.2f}" for s in one[faces]) + " s" for faces in FACES)
              + f"; the face search adds {100 * (auto / off - 1):.0f}% (medians).", "",
              "What bounds it: each step of colorize.py's work on one 12-megapixel JPEG of the 12mp folder, in "
              f"process, at one thread (medians of {r['repeats']} after a first call):", "", "| step | ms | share |",
              "|---|---|---|"]
    total = sum(r["stages_ms"].values())
    lines += [f"| {step} | {ms:.1f} | {ms / total:.0%} |" for step, ms in r["stages_ms"].items()]
    limit = sum(ms for step, ms in r["stages_ms"].items() if "the limit's" in step)
    lines += [f"| all (--faces auto) | {total:.1f} | the limit's work {limit / total:.0%}: at most "
              f"**{limit / total:.2f}** of its speed on one core |", "",
              "The lightness of the same photo in black and white (read through a table of L*): "
              + ", ".join(f"{how} {ms:.1f} ms" for how, ms in r["black_and_white_lightness_ms"].items())
              + f", against {r['stages_ms']['lightness']:.1f} in colour."]
    return "\n".join(lines)


def main():
    p = benchmark_parser(__doc__)
    p.add_argument("--photos", type=positive_int, default=16, help="photos in the 12mp and mix folders")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 photos, 1 repeat; its numbers mean nothing")
    args = parse_benchmark_args(p)
    device = exit_on_user_error(lambda: resolve_device(args.device)).type
    if args.quick:
        args.photos, args.repeats = 3, 1
    results = {"machine": machine(), "device": device, "photos": args.photos, "repeats": args.repeats, "folders": {}}
    all_cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_folders(Path(tmp), args.photos, args.seed)
        small = Path(tmp) / "small.jpg"
        cv2.imwrite(str(small), camera_photo(np.random.default_rng(args.seed), 64, 64))
        (Path(tmp) / "one").mkdir()
        results["one_12mp_photo_s"] = one_photo(sorted(folders["12mp"].iterdir())[0], Path(tmp) / "one", args.repeats,
                                                device)
        results["stages_ms"], results["black_and_white_lightness_ms"] = stages(sorted(folders["12mp"].iterdir())[0],
                                                                               args.repeats, device)
        for name, folder in folders.items():
            results["folders"][name] = {}
            for cores in CORES:
                os.sched_setaffinity(0, all_cores[:cores])  # this process and what it starts
                work = Path(tmp) / f"work-{name}-{cores}"
                work.mkdir()
                print(f"{name}, {cores} core(s) ...", flush=True)
                results["folders"][name][str(cores)] = {
                    "limit": limit(sorted(folder.iterdir()), cores, args.repeats),
                    **{faces: colorize_speed(folder, small, work, faces, args.repeats, device) for faces in FACES}}
            os.sched_setaffinity(0, all_cores)
    write_results(args.out, "photo_folders", results, markdown(results))


if __name__ == "__main__":
    main()

"""Speed of the data path, training and colorize.py, measured in one run on one machine.

    python benchmarks/bench.py [--faces DIR] [--out benchmarks/results] [--quick]

1. training images/s through the real script (train_*.py in a subprocess) vs the pure compute
   ceiling (same model, batch and step on Lab tensors already in memory): the ratio, as the
   median of --repeats paired measurements (this kind of VM is noisy);
2. the same vs a naive loader that decodes each file and converts it with scikit-image in
   __getitem__ (the seed's approach): the ratio;
3. peak resident memory of a training run on the faces augmented x10 and x100: the ratio;
4. prepare_data.py throughput on the 750 faces (median of --repeats), and its peak memory at x10 and x100;
5. colorize.py: images/s at 128x128 in batches, and seconds for one 12-megapixel photo.
(How memory grows with the number and size of photos: benchmarks/scale.py.)
Writes bench.json and bench.md into --out. Uses the faces from --faces / $FACES_DIR (default
../shared/data/face_images); without them, the demo photos (numbers then not comparable).
On a GPU the training scripts run with --data-on-device --amp --channels-last, and the ceiling
steps with the same bfloat16 autocast and memory format.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (LabSplit, SeedColorizer, atomic_write, exit_on_user_error, read_image,  # noqa: E402
                    open_rgb_split, resolve_device, writable_folder, write_json)
from training import RunRecord, training_step  # noqa: E402

# the training scripts' speed flags on a GPU (the ceiling steps with the same autocast and memory format)
GPU_FLAGS = ["--data-on-device", "--amp", "--channels-last"]

MODELS = {  # name: (training script, its flags)
    "seed colorizer": ("train_colorizer.py", []),
    "seed regressor": ("train_regressor.py", []),
    "U-Net 8x4": ("train_colorizer.py", ["--arch", "unet", "--base-channels", "8", "--depth", "4"]),
    "U-Net 8x4 classify": ("train_colorizer.py", ["--arch", "unet", "--base-channels", "8", "--depth", "4",
                                                  "--head", "classify"]),
}


def step_fn(name, data_dir, device):
    """The training scripts' own step (common.training_step) on the model, prediction and loss from
    the script's setup function, with the speed settings the scripts use on this device."""
    import train_colorizer
    import train_regressor

    script, flags = MODELS[name]
    module = train_regressor if script == "train_regressor.py" else train_colorizer
    config = {**vars(module.parse_args([*flags, "--data", str(data_dir)])), "task": Path(script).stem[6:]}
    setup = train_regressor.setup_regressor if module is train_regressor else train_colorizer.setup_colorizer
    task = setup(config, device)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = task.model.to(device, memory_format=memory_format)
    step = training_step(model, task.predict, task.train_loss, torch.optim.Adam(model.parameters(), lr=1e-4), amp=cuda)
    return lambda lab01: step(lab01.to(device, non_blocking=True).contiguous(memory_format=memory_format))


def images_per_s(step, next_batch, batch_size, iters, device, warmup=2):
    """Training images per second of step() on batches from next_batch(), which is timed too."""
    for _ in range(warmup):
        step(next_batch())
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step(next_batch())
    synchronize()
    return iters * batch_size / (time.perf_counter() - start)


def ceiling(name, data_dir, batch_size, iters, device, read_loss=False):
    """Steps only, on one batch already in memory. read_loss: read every step's loss back to the host
    (loss.item()), as a loop that prints or sums Python floats does: what that synchronisation costs."""
    torch.manual_seed(0)
    lab01 = torch.from_numpy(np.array(LabSplit(data_dir, "train").array[:batch_size])).float().to(device)
    step = step_fn(name, data_dir, device)
    timed_step = (lambda batch: step(batch).item()) if read_loss else step
    return images_per_s(timed_step, lambda: lab01, batch_size, iters, device)


class NaiveFileDataset(torch.utils.data.Dataset):
    """The seed's loader: decode a file and convert it with scikit-image for every item."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from skimage.color import rgb2lab
        lab = rgb2lab(read_image(self.files[i]).rgb)
        return torch.from_numpy(np.stack([lab[..., 0] / 100, (lab[..., 1] + 128) / 255,
                                          (lab[..., 2] + 128) / 255])).float()


def naive(name, data_dir, files, batch_size, iters, device):
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(NaiveFileDataset(files), batch_size=batch_size, shuffle=True, drop_last=True)

    def forever():
        while True:
            yield from loader

    batches = forever()
    return images_per_s(step_fn(name, data_dir, device), lambda: next(batches), batch_size, iters, device)


def run_measured(cmd):
    """Run a command; -> (stdout, peak RSS in MiB, peak anonymous RSS in MiB sampled every 20 ms)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_anon, reaped = [0], threading.Event()

    def sample():  # never proc.poll() here: it would reap the child before wait4 can read its usage
        status = Path(f"/proc/{proc.pid}/status")
        while not reaped.is_set():
            try:
                anon = int(re.search(r"RssAnon:\s+(\d+)", status.read_text()).group(1))
                peak_anon[0] = max(peak_anon[0], anon)
            except (OSError, AttributeError):  # gone, or a zombie without memory lines
                pass
            reaped.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    reaped.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{output}")
    return output, usage.ru_maxrss / 1024, peak_anon[0] / 1024


def train_script(name, data_dir, out, batch_size, iters, device):
    """Images/s of the real training script's second epoch, and its peak memory."""
    script, flags = MODELS[name]
    if device.type == "cuda":
        flags = [*flags, *GPU_FLAGS]
    cmd = [sys.executable, script, "--data", data_dir, "--out", out, "--epochs", "2", "--epoch-length", str(iters),
           "--batch-size", str(batch_size), "--patience", "0", "--device", device.type, "--no-resume", *flags]
    _, rss, anon = run_measured(cmd)
    history = json.loads((Path(out) / "history.json").read_text())
    return history["train_images_per_s"][-1], rss, anon


def prepare(source, out, factor, repeats=1):
    """prepare_data.py as a user runs it (wall time with the interpreter's start), median of repeats."""
    cmd = [sys.executable, "prepare_data.py", "--out", out, "--augment-factor", str(factor)]
    cmd += ["--source", str(source)] if source else ["--demo"]
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        output, _, anon = run_measured(cmd)
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    counts = json.loads((Path(out) / "manifest.json").read_text())["counts"]
    written = counts["train_augmented"] + counts["val"] + counts["test"]
    return {"wall_s": wall, "wall_s_each": walls, "source_images": counts["source_images"],
            "written_images": written, "source_images_per_s": counts["source_images"] / wall,
            "written_images_per_s": written / wall, "anon_mib": anon, "script_says": output.strip().splitlines()[-1]}


def colorize_speed(data_dir, tmp, n_images):
    """colorize.py's own functions, in process: 128x128 files in batches, and one 12-MP photo."""
    import cv2

    import colorize

    ckpt = seed_checkpoint(tmp)
    faces = np.array(open_rgb_split(data_dir, "train")[::10][:n_images])
    folder = Path(tmp) / "in"
    folder.mkdir()
    for i, face in enumerate(faces):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), face[..., ::-1])
    photo = cv2.resize(faces[0], (4000, 3000), interpolation=cv2.INTER_CUBIC)[..., ::-1]
    cv2.imwrite(str(Path(tmp) / "photo12mp.jpg"), photo)
    colorizer = colorize.Colorizer(ckpt, None, None, torch.device("cpu"))

    def run(paths, batch_size):
        items = [(p, Path(tmp) / "out" / p.name, colorize.load(p, colorizer)) for p in paths]
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            ab = colorizer.predict_ab(np.stack([it[2]["L_small"] for it in chunk]))
            for (_, target, item), ab_small in zip(chunk, ab):
                colorize.finish(item, ab_small, target, False)

    files = sorted(folder.glob("*.jpg"))
    run(files[:64], 64)  # warm-up
    start = time.perf_counter()
    run(files, 64)
    per_s = len(files) / (time.perf_counter() - start)
    start = time.perf_counter()
    run([Path(tmp) / "photo12mp.jpg"], 1)
    return {"images_per_s_128": per_s, "n_images": len(files), "seconds_12mp": time.perf_counter() - start}


def seed_checkpoint(tmp) -> Path:
    """An untrained seed colorizer saved as the training scripts save one (speed and memory need no training)."""
    config = {"task": "colorizer", "arch": "seed", "max_channels": 128, "layers": 3, "activation": "sigmoid",
              "regressor": None, "loss": "mse", "image_size": 128}
    ckpt = Path(tmp) / "seed.pt"
    torch.save({"model": SeedColorizer().state_dict(), "run": RunRecord(config).state_dict()}, ckpt)
    return ckpt


def nvidia_driver():
    """The NVIDIA driver's version as nvidia-smi reports it, or None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine():
    import ignite
    import torchvision

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "torch_cuda_build": torch.version.cuda, "torchvision": torchvision.__version__,
            "ignite": ignite.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "nvidia_driver": nvidia_driver()}


def describe_machine(m):
    """One line naming the machine and the versions every figure depends on."""
    gpu = f"GPU: {m['gpu']} (driver {m['nvidia_driver']}, CUDA build {m['torch_cuda_build']})" if m["gpu"] \
        else "GPU: none"
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {gpu}; torch {m['torch']}, torchvision {m['torchvision']}, "
            f"ignite {m['ignite']}, Python {m['python']}.")


def markdown(r):
    rows = ["| model | real script (img/s) | compute ceiling (img/s) | ratio 1: real / ceiling "
            "| ratio 1, each repeat | ceiling reading every loss back (img/s) | cost of that sync "
            "| naive loader (img/s) | ratio 2: real / naive |", "|---|---|---|---|---|---|---|---|---|"]
    for name, t in r["training"].items():
        rows.append(f"| {name} | {t['real']:.0f} | {t['ceiling']:.0f} | **{t['ratio1']:.2f}** "
                    f"| {' '.join(f'{x:.2f}' for x in t['ratio1_each'])} | {t['ceiling_read_loss']:.0f} "
                    f"| {1 - t['ceiling_read_loss'] / t['ceiling']:.0%} | {t['naive']:.0f} "
                    f"| {t['real'] / t['naive']:.1f} |")
    head = [f"{describe_machine(r['machine'])} Data: {r['data']}. Batch size {r['batch_size']}. Training device: "
            f"{r['device']}; medians of {r['repeats']} paired repeats (real script, then ceiling).", "", *rows]
    if "memory" not in r:  # --training-only
        return "\n".join(head)
    m, p, c = r["memory"], r["prepare"], r["colorize"]
    return "\n".join([
        *head, "",
        f"Peak memory of a seed-colorizer training run ({m['iters']} batches per epoch, 2 epochs): "
        f"x10 ({m['x10_images']} images) {m['x10_rss_mib']:.0f} MiB RSS / {m['x10_anon_mib']:.0f} MiB anonymous; "
        f"x100 ({m['x100_images']} images) {m['x100_rss_mib']:.0f} MiB / {m['x100_anon_mib']:.0f} MiB. "
        f"Ratio 3 (x100 / x10, RSS): {m['x100_rss_mib'] / m['x10_rss_mib']:.2f}.", "",
        f"prepare_data.py on {p['source_images']} images ({p['written_images']} written, wall time with "
        f"interpreter start, median of {len(p['wall_s_each'])}: {' '.join(f'{w:.1f}' for w in p['wall_s_each'])} s): "
        f"{p['source_images_per_s']:.0f} source images/s, {p['written_images_per_s']:.0f} written images/s. "
        f"Its peak anonymous memory: x10 {p['anon_mib']:.0f} MiB, x100 {r['prepare_x100']['anon_mib']:.0f} MiB "
        f"({r['prepare_x100']['written_images_per_s']:.0f} written images/s).", "",
        f"colorize.py (seed colorizer, in process): {c['images_per_s_128']:.0f} images/s at 128x128 in batches of 64 "
        f"({c['n_images']} JPEG files read, colorized and written); one 12-megapixel photo: {c['seconds_12mp']:.2f} s.",
    ])


def benchmark_parser(doc):
    """The flags every benchmark takes: where the faces are, where results go, which device."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--faces", type=Path,
                   default=Path(os.environ.get("FACES_DIR", ROOT.parent / "shared" / "data" / "face_images")))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return p


def parse_benchmark_args(p):
    """p's arguments, --out proven writable before any work (else one line and exit status 2)."""
    args = p.parse_args()
    exit_on_user_error(lambda: writable_folder(args.out))
    return args


def write_results(out, name, results, table):
    """NAME.json and NAME.md (the table under the command that made it) into out, each atomically."""
    write_json(out / f"{name}.json", results)
    command = " ".join([f"python benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    atomic_write(out / f"{name}.md", lambda tmp: Path(tmp).write_text(f"Command: `{command}`\n\n{table}\n"))
    print(table)


def main():
    p = benchmark_parser(__doc__)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="paired real/ceiling measurements per model")
    p.add_argument("--training-only", action="store_true",
                   help="only the training speeds: ratio 1 and the cost of reading every loss back")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: one repeat, windows of 2 batches; proves it works, its numbers mean nothing")
    args = parse_benchmark_args(p)
    if args.quick:
        args.repeats = 1
    device = resolve_device(args.device)
    source = args.faces if args.faces.is_dir() else None
    if source is None:
        print(f"{args.faces}: no faces there; benchmarking on the demo photos instead", file=sys.stderr)
    results = {"machine": machine(), "data": str(source or "demo photos"), "batch_size": args.batch_size,
               "device": device.type, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        x10, x100 = Path(tmp) / "x10", Path(tmp) / "x100"
        print("prepare x10 ...", flush=True)
        results["prepare"] = prepare(source, x10, 10, args.repeats)
        files = [Path(source) / r["file"] for r in json.loads((x10 / "manifest.json").read_text())["files"]["train"]] \
            if source else None
        results["training"] = {}
        # windows of about 8 s on this 2-core VM (batches: 60, 20, 6 on a CPU; a GPU gets 10x more)
        scale = 10 if device.type == "cuda" else 1
        windows = {"seed colorizer": 60, "seed regressor": 20, "U-Net 8x4": 6, "U-Net 8x4 classify": 6}
        for name, iters in ((name, 2 if args.quick else n * scale) for name, n in windows.items()):
            print(f"training speed: {name} ...", flush=True)
            real, top, read_loss = [], [], []
            for _ in range(args.repeats):
                # a run folder per model: each trainer writes only into a folder of its own (--no-resume restarts it)
                real.append(train_script(name, x10, Path(tmp) / f"run-{name}", args.batch_size, iters, device)[0])
                top.append(ceiling(name, x10, args.batch_size, iters, device))
                read_loss.append(ceiling(name, x10, args.batch_size, iters, device, read_loss=True))
            t = {"real": statistics.median(real), "ceiling": statistics.median(top), "real_each": real,
                 "ceiling_each": top, "ratio1_each": [a / b for a, b in zip(real, top)],
                 "ceiling_read_loss": statistics.median(read_loss)}
            t["ratio1"] = statistics.median(t["ratio1_each"])
            t["naive"] = naive(name, x10, files, args.batch_size, max(3, iters // 3), device) \
                if files and not args.training_only else float("nan")
            results["training"][name] = t
        if args.training_only:
            write_results(args.out, "bench_training", results, markdown(results))
            return
        print("memory x10 and x100 ...", flush=True)
        results["prepare_x100"] = prepare(source, x100, 100)
        mem = {"iters": 4 if args.quick else 40}
        for label, data in (("x10", x10), ("x100", x100)):
            _, rss, anon = train_script("seed colorizer", data, Path(tmp) / f"mem{label}", args.batch_size,
                                        mem["iters"], torch.device("cpu"))
            mem.update({f"{label}_rss_mib": rss, f"{label}_anon_mib": anon,
                        f"{label}_images": len(LabSplit(data, "train"))})
        results["memory"] = mem
        print("colorize ...", flush=True)
        results["colorize"] = colorize_speed(x10, tmp, 64 if args.quick else 512)
    write_results(args.out, "bench", results, markdown(results))


if __name__ == "__main__":
    main()

"""Speed of the data path, training and colorize.py, measured in one run on one machine.

    python benchmarks/bench.py [--faces DIR] [--out benchmarks/results] [--quick]

1. training images/s through the real script (train_*.py in a subprocess) vs the pure compute
   ceiling (same model, batch and step on Lab tensors already in memory): the ratio, as the
   median of --repeats paired measurements (this kind of VM is noisy); the same in bfloat16 (--amp)
   where the device has it, and the bf16/fp32 ratio; the machine's roof (the FLOP/s of a large
   matrix product, float32 and bfloat16, measured here) over each model's FLOPs per training image
   (counted by torch's FlopCounterMode): the images/s the machine would allow, and the fraction the
   real script reaches;
2. the same vs a naive loader that decodes each file and converts it with scikit-image in
   __getitem__ (the seed's approach): the ratio;
3. peak resident memory of a training run on the faces augmented x10 and x100: the ratio;
4. prepare_data.py throughput on the 750 faces (median of --repeats), and its peak memory at x10 and x100;
5. evaluate.py (as a user runs it: the test split and every training original as --photos, one
   U-Net 8x4 classifier) and colorize.py (in process: 128x128 files in batches, one 12-megapixel
   photo): images/s against their ceiling, the model's forward pass alone on the same images.
(How memory grows with the number and size of photos: benchmarks/scale.py.)
Writes bench.json and bench.md into --out. Uses the faces from --faces / $FACES_DIR (default
../shared/data/face_images); without them, the demo photos (numbers then not comparable).
On a GPU the training scripts run with --data-on-device --amp --channels-last, and the ceiling
steps with the same bfloat16 autocast and memory format.
"""
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

from common import LabSplit, load_colorizer, open_rgb_split  # noqa: E402
from guards import (ArgumentParser, amp_supported, atomic_write, cpu_model, exit_on_user_error,  # noqa: E402
                    resolve_device, writable_folder, write_json)
from photos import read_image  # noqa: E402
from training import training_step  # noqa: E402

# the training scripts' speed flags on a GPU (the ceiling steps with the same autocast and memory format)
GPU_FLAGS = ["--data-on-device", "--amp", "--channels-last"]

MODELS = {  # name: (training script, its flags)
    "seed colorizer": ("train_colorizer.py", []),
    "seed regressor": ("train_regressor.py", []),
    "U-Net 8x4": ("train_colorizer.py", ["--arch", "unet", "--base-channels", "8", "--depth", "4"]),
    "U-Net 8x4 classify": ("train_colorizer.py", ["--arch", "unet", "--base-channels", "8", "--depth", "4",
                                                  "--head", "classify"]),
}


def step_fn(name, data_dir, device, amp=False):
    """The training scripts' own step (training.training_step) on the model, prediction and loss from
    the script's setup function, with the memory format the scripts use on this device; amp: bfloat16
    autocast, as --amp."""
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
    step = training_step(model, task.predict, task.train_loss, torch.optim.Adam(model.parameters(), lr=1e-4), amp=amp)
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


def one_batch(data_dir, batch_size, device):
    return torch.from_numpy(np.array(LabSplit(data_dir, "train").array[:batch_size])).float().to(device)


def ceiling(name, data_dir, batch_size, iters, device, read_loss=False, amp=False):
    """Steps only, on one batch already in memory. read_loss: read every step's loss back to the host
    (loss.item()), as a loop that prints or sums Python floats does: what that synchronisation costs."""
    torch.manual_seed(0)
    lab01 = one_batch(data_dir, batch_size, device)
    step = step_fn(name, data_dir, device, amp)
    timed_step = (lambda batch: step(batch).item()) if read_loss else step
    return images_per_s(timed_step, lambda: lab01, batch_size, iters, device)


def flops_per_image(name, data_dir, batch_size, device):
    """The FLOPs of one training step (forward, backward) per image, as torch's FlopCounterMode counts them
    (matrix products and convolutions: what the roof's matrix product measures)."""
    from torch.utils.flop_counter import FlopCounterMode

    step, lab01 = step_fn(name, data_dir, device), one_batch(data_dir, batch_size, device)
    with FlopCounterMode(display=False) as counter:
        step(lab01)
    return counter.get_total_flops() / batch_size


def matmul_roof(device, dtype, size=2048, repeats=5):
    """This machine's roof: GFLOP/s of a size x size matrix product in dtype (all threads; the best of
    repeats), the operation the models' convolutions become."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    best = float("inf")
    for _ in range(repeats + 1):  # the first: warm-up
        synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


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


def train_script(name, data_dir, out, batch_size, iters, device, amp=False):
    """Images/s of the real training script's second epoch, and its peak memory."""
    script, flags = MODELS[name]
    if device.type == "cuda":
        flags = [*flags, *GPU_FLAGS]
    elif amp:
        flags = [*flags, "--amp"]
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


def face_files(data_dir, folder, n_images):
    """n_images training faces of a prepared set written as JPEG files into folder (the photos a user brings),
    and one 12-megapixel photo beside them; -> (the faces' paths, the photo's path)."""
    import cv2

    faces = np.array(open_rgb_split(data_dir, "train")[::10][:n_images])
    folder.mkdir()
    for i, face in enumerate(faces):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), face[..., ::-1])
    photo = folder.parent / "photo12mp.jpg"
    cv2.imwrite(str(photo), cv2.resize(faces[0], (4000, 3000), interpolation=cv2.INTER_CUBIC)[..., ::-1])
    return sorted(folder.glob("*.jpg")), photo


def colorize_speed(files, photo, out, device):
    """colorize.py's own functions, in process, with the shipped model: 128x128 files in batches, and one
    12-MP photo; each beside its ceiling, the model's forward pass alone on the same network inputs."""
    import colorize

    colorizer = colorize.Colorizer.from_checkpoint(colorize.SHIPPED_MODEL, None, None, device)
    out.mkdir()

    def run(paths, batch_size):
        items = [(p, out / p.name, colorize.load(p, colorizer)) for p in paths]
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            for (_, target, item), ab in zip(chunk, colorize.predict(colorizer, [it[2] for it in chunk], batch_size)):
                colorize.finish(item, ab, target, False)

    run(files[:64], 64)  # warm-up
    start = time.perf_counter()
    run(files, 64)
    per_s = len(files) / (time.perf_counter() - start)
    start = time.perf_counter()
    run([photo], 1)
    seconds_12mp = time.perf_counter() - start
    shape_12mp = colorize.network_shape(3000, 4000, colorizer.size, colorizer.multiple)
    return {"images_per_s_128": per_s, "n_images": len(files), "seconds_12mp": seconds_12mp,
            "ceiling_images_per_s_128": forward_per_s(colorizer.model, (min(64, len(files)), 1, 128, 128), len(files),
                                                      device),
            "ceiling_seconds_12mp": 1 / forward_per_s(colorizer.model, (1, 1, *shape_12mp), 1, device),
            "network_shape_12mp": list(shape_12mp)}


def forward_per_s(model, shape, n_images, device):
    """Images/s of model's forward pass alone (no gradients) on n_images inputs of shape (batch, 1, H, W)."""
    x = torch.rand(shape, device=device)
    batches = max(1, n_images // shape[0])
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with torch.no_grad():
        model(x)  # warm-up
        synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        synchronize()
    return batches * shape[0] / (time.perf_counter() - start)


def evaluate_speed(data_dir, photos, out, device):
    """evaluate.py as a user runs it (interpreter start included) with the shipped model on the test split
    and the files in photos as --photos: scored images/s, beside the model's forward pass alone on as many."""
    import colorize

    start = time.perf_counter()
    run_measured([sys.executable, "evaluate.py", "--data", data_dir, "--colorizer", colorize.SHIPPED_MODEL,
                  "--photos", photos, "--out", out, "--device", device.type])
    seconds = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    split, photos = metrics["n_images"], len(metrics["photos"]["files"])
    model = load_colorizer(colorize.SHIPPED_MODEL, device)[0]
    return {"split_images": split, "photos": photos, "seconds": seconds, "images_per_s": (split + photos) / seconds,
            "ceiling_images_per_s": forward_per_s(model, (min(128, split + photos), 1, 128, 128), split + photos,
                                                  device)}


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

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "torch_cuda_build": torch.version.cuda, "torchvision": torchvision.__version__,
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
            f"{r['device']}; medians of {r['repeats']} paired repeats (real script, then ceiling).", "", *rows, "",
            *roof_table(r)]
    if "memory" not in r:  # --training-only
        return "\n".join(head)
    m, p, c, e = r["memory"], r["prepare"], r["colorize"], r["evaluate"]
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
        f"evaluate.py (the shipped model and the three baselines on {e['split_images']} test images and "
        f"{e['photos']} --photos; wall time with interpreter start): {e['images_per_s']:.0f} images/s; its ceiling, "
        f"the model's forward pass alone on as many images: {e['ceiling_images_per_s']:.0f} images/s "
        f"(ratio **{e['images_per_s'] / e['ceiling_images_per_s']:.2f}**).", "",
        f"colorize.py (the shipped model, in process): {c['images_per_s_128']:.0f} images/s at 128x128 in batches of "
        f"64 ({c['n_images']} JPEG files read, colorized and written), the forward pass alone "
        f"{c['ceiling_images_per_s_128']:.0f} (ratio **{c['images_per_s_128'] / c['ceiling_images_per_s_128']:.2f}**);"
        f" one 12-megapixel photo: {c['seconds_12mp']:.2f} s, the forward pass alone on its network input "
        f"({c['network_shape_12mp'][0]}x{c['network_shape_12mp'][1]}) {c['ceiling_seconds_12mp']:.2f} s.",
    ])


def roof_table(r):
    """Per model: FLOPs, the machine's roof and the fraction of it reached; bfloat16 against float32."""
    roof = r["roof_gflops"]
    bf16 = roof["bfloat16"] is not None
    lines = [f"The roof: a 2048x2048 matrix product measured here runs at {roof['float32']:.0f} GFLOP/s in float32"
             + (f" and {roof['bfloat16']:.0f} in bfloat16" if bf16 else " (no bfloat16 instructions)") + "; over a "
             "model's FLOPs per training image (forward and backward, as torch's FlopCounterMode counts them), the "
             "images/s this machine would allow.", "",
             "| model | GFLOP per training image | roof (img/s) | real script / roof |"
             + (" real script --amp (img/s) | bf16 / fp32 (paired ceilings) | each repeat | bf16 roof (img/s) "
                "| --amp / bf16 roof |" if bf16 else ""),
             "|---|---|---|---|" + ("---|---|---|---|---|" if bf16 else "")]
    for name, t in r["training"].items():
        row = (f"| {name} | {t['flops_per_image'] / 1e9:.3f} | {t['roof_images_per_s']:.0f} "
               f"| {t['roof_fraction']:.0%} |")
        if bf16:
            each = " ".join(f"{x:.2f}" for x in t["bf16_ratio_each"])
            row += (f" {t['real_bf16']:.0f} | **{t['bf16_ratio']:.2f}** | {each} | {t['roof_bf16_images_per_s']:.0f} "
                    f"| {t['roof_bf16_fraction']:.0%} |")
        lines.append(row)
    return lines


def benchmark_parser(doc):
    """The flags every benchmark takes: where the faces are, where results go, which device."""
    p = ArgumentParser(doc)  # a bad flag: one line, exit status 2
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
        # the GPU trains in bfloat16 always (GPU_FLAGS); a CPU in float32, and in bfloat16 (--amp) beside it
        gpu, bf16 = device.type == "cuda", amp_supported(device.type)
        results["roof_gflops"] = {"float32": matmul_roof(device, torch.float32),
                                  "bfloat16": matmul_roof(device, torch.bfloat16) if bf16 else None}
        # windows of about 8 s on this 2-core VM (batches: 60, 20, 6 on a CPU; a GPU gets 10x more)
        scale = 10 if gpu else 1
        windows = {"seed colorizer": 60, "seed regressor": 20, "U-Net 8x4": 6, "U-Net 8x4 classify": 6}
        for name, iters in ((name, 2 if args.quick else n * scale) for name, n in windows.items()):
            print(f"training speed: {name} ...", flush=True)
            real, top, read_loss, real_bf16, top_fp32, top_bf16 = [], [], [], [], [], []
            for _ in range(args.repeats):
                # a run folder per model: each trainer writes only into a folder of its own (--no-resume restarts it)
                run = Path(tmp) / f"run-{name}"
                real.append(train_script(name, x10, run, args.batch_size, iters, device)[0])
                top.append(ceiling(name, x10, args.batch_size, iters, device, amp=gpu))
                read_loss.append(ceiling(name, x10, args.batch_size, iters, device, read_loss=True, amp=gpu))
                if bf16:  # the pair: the same step in float32 and under bfloat16 autocast, one after the other
                    top_fp32.append(top[-1] if not gpu else ceiling(name, x10, args.batch_size, iters, device))
                    top_bf16.append(top[-1] if gpu else ceiling(name, x10, args.batch_size, iters, device, amp=True))
                    if not gpu:
                        real_bf16.append(train_script(name, x10, run, args.batch_size, iters, device, amp=True)[0])
            t = {"real": statistics.median(real), "ceiling": statistics.median(top), "real_each": real,
                 "ceiling_each": top, "ratio1_each": [a / b for a, b in zip(real, top)],
                 "ceiling_read_loss": statistics.median(read_loss),
                 "flops_per_image": flops_per_image(name, x10, args.batch_size, device)}
            t["ratio1"] = statistics.median(t["ratio1_each"])
            if bf16:
                t["bf16_ratio_each"] = [b / a for a, b in zip(top_fp32, top_bf16)]
                t["bf16_ratio"] = statistics.median(t["bf16_ratio_each"])
                t["real_bf16"] = statistics.median(real_bf16) if real_bf16 else t["real"]
            roof = results["roof_gflops"]["bfloat16" if gpu else "float32"] * 1e9 / t["flops_per_image"]
            t["roof_images_per_s"], t["roof_fraction"] = roof, t["real"] / roof
            if bf16:
                t["roof_bf16_images_per_s"] = results["roof_gflops"]["bfloat16"] * 1e9 / t["flops_per_image"]
                t["roof_bf16_fraction"] = t["real_bf16"] / t["roof_bf16_images_per_s"]
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
        print("evaluate and colorize ...", flush=True)
        files, photo = face_files(x10, Path(tmp) / "faces", 64 if args.quick else 512)
        results["evaluate"] = evaluate_speed(x10, files[0].parent, Path(tmp) / "report", device)
        results["colorize"] = colorize_speed(files, photo, Path(tmp) / "colorized", device)
    write_results(args.out, "bench", results, markdown(results))


if __name__ == "__main__":
    main()

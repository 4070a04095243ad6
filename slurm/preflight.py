"""Preflight for a new cluster, in about a minute: what this job got, and whether everything works on it.

    sbatch slurm/check.sbatch            (srun runs this once per task)

Prints the node, the SLURM task layout, the GPUs and the driver, torch with its CUDA build, ignite;
then runs one training step of each benchmarked model on the job's device with the GPU speed
flags (bfloat16 autocast, channels-last), one all_reduce across the job's tasks and a tiny
colorize. Exits 0 with "preflight OK", or 1 with "preflight FAILED: <the reason>" on one line.
A job that holds GPUs no CUDA answers for fails (unless COLORIZATION_FAKE_GPUS=1 declares them a
test cluster's fakes, said plainly).
"""
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import build_model, checkpoint_contents, new_history, run_record  # noqa: E402
from guards import FAKE_GPUS_VARIABLE, UserError, gpus_granted, read_nvidia_driver, resolve_device  # noqa: E402

MODELS = {  # the four models the benchmark measures, as their configs
    "seed colorizer": {"task": "colorizer", "arch": "seed", "max_channels": 128, "layers": 3, "activation": "sigmoid"},
    "seed regressor": {"task": "regressor"},
    "U-Net 8x4": {"task": "colorizer", "arch": "unet", "base_channels": 8, "depth": 4, "activation": "sigmoid"},
    "U-Net 8x4 classify": {"task": "colorizer", "arch": "unet", "base_channels": 8, "depth": 4,
                           "activation": "sigmoid", "head": "classify"},
}


def say(rank, text):
    if rank == 0:
        print(text, flush=True)


def layout():
    names = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID",
             "SLURM_LOCALID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
    return ", ".join(f"{n}={os.environ[n]}" for n in names if n in os.environ) or "not inside a SLURM job"


def training_steps(device):
    """One optimisation step of each model on a batch of 16 random 128x128 images; -> {name: seconds}."""
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    seconds = {}
    for name, config in MODELS.items():
        model = build_model(config).to(device, memory_format=memory_format).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        L = torch.rand(16, 1, 128, 128, device=device).contiguous(memory_format=memory_format)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(L).float().square().mean()
        loss.backward()
        optimizer.step()
        if not torch.isfinite(loss):
            raise RuntimeError(f"{name}: the training step gave a loss of {float(loss)}")
        if cuda:
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - start
    return seconds


def all_reduce_across_tasks(tasks):
    """Each task adds its rank + 1: the sum must be 1 + 2 + ... + tasks."""
    import ignite.distributed as idist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    result = {}

    def check(local_rank):
        total = idist.all_reduce(torch.tensor([idist.get_rank() + 1.0], device=idist.device())).item()
        result["sum"], result["world"] = total, idist.get_world_size()

    with idist.Parallel(backend=backend) as parallel:
        parallel.run(check)
    if result["world"] != tasks or result["sum"] != tasks * (tasks + 1) / 2:
        raise RuntimeError(f"all_reduce across {tasks} tasks gave {result['sum']} in a world of {result['world']}")
    return backend


def tiny_colorize(device):
    """colorize.py's own path on one synthetic 300x200 photo with an untrained seed colorizer."""
    import cv2

    import colorize

    config = {**MODELS["seed colorizer"], "regressor": None, "loss": "mse", "image_size": 128}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "seed.pt"
        torch.save(checkpoint_contents(build_model(config).state_dict(), run_record(config, new_history())), ckpt)
        photo = Path(tmp) / "photo.png"
        cv2.imwrite(str(photo), (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8))
        colorize.colour_one(photo, colorize.Colorizer.from_checkpoint(ckpt, None, None, device), Path(tmp) / "out.png")
        shape = cv2.imread(str(Path(tmp) / "out.png")).shape
    if shape != (200, 300, 3):
        raise RuntimeError(f"colorize wrote an image of {shape}, not (200, 300, 3)")


def main():
    import ignite

    rank = int(os.environ.get("SLURM_PROCID", "0"))
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    say(rank, f"node: {platform.node()}; SLURM: {layout()}")
    say(rank, f"python {platform.python_version()}, torch {torch.__version__} (CUDA build {torch.version.cuda}), "
              f"ignite {ignite.__version__}; NVIDIA: {read_nvidia_driver()}")
    device = resolve_device("auto")  # a GPU job without CUDA stops here
    if device.type == "cuda":
        say(rank, f"GPU: {torch.cuda.get_device_name()} ({torch.cuda.device_count()} visible)")
    elif gpus_granted():
        say(rank, f"NO REAL GPU: this job holds {gpus_granted()}, declared fake by {FAKE_GPUS_VARIABLE}=1 "
                  "(a test cluster); everything below ran on the CPU")
    else:
        say(rank, "no GPU in this job: everything below runs on the CPU")
    steps = training_steps(device)
    say(rank, "one training step each (" + ("bfloat16, channels-last" if device.type == "cuda" else "float32") +
        "): " + ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in steps.items()))
    if tasks > 1:
        say(rank, f"all_reduce across {tasks} tasks ({all_reduce_across_tasks(tasks)}): OK")
    tiny_colorize(device)
    say(rank, "colorize: OK")
    say(rank, "preflight OK")


if __name__ == "__main__":
    try:
        main()
    except (UserError, RuntimeError, OSError, ImportError) as exc:
        print(f"preflight FAILED: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)

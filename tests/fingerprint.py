"""Fingerprint a fixed pipeline: prepare the demo photos, train a colorizer and a regressor for two epochs, evaluate
them beside the shipped model, colour photos of every kind colorize.py treats apart; print one SHA-256 a
file (arrays, weights, history less its timings, evaluate's summary, every image).

A change that must not change behaviour (moving code between modules) runs this before and after and diffs:

    python tests/fingerprint.py --out /tmp/before > before.txt   # on the old commit
    python tests/fingerprint.py --out /tmp/after > after.txt     # on the new one
    diff before.txt after.txt
"""
import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from PIL import Image

PROJECT = Path(__file__).resolve().parent.parent
TIMINGS = re.compile(r"per_s|seconds")  # history.json's columns that differ from run to run


def run(*args):
    subprocess.run([sys.executable, *map(str, args)], cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)


def write_inputs(folder: Path) -> None:
    """One photo of each kind colorize.py treats apart: JPEG, 16-bit PNG, RGBA PNG, gray TIFF, EXIF-rotated JPEG."""
    folder.mkdir(parents=True)
    astronaut = skimage.data.astronaut()[:, 64:448]  # a face, 512 x 384
    Image.fromarray(astronaut).save(folder / "photo.jpg", quality=92)
    deep = (astronaut.astype(np.uint16) * 257)[::2, ::2]
    Image.fromarray(deep[..., 0]).save(folder / "deep_gray.png")  # PIL writes 16-bit gray, not 16-bit RGB
    cv2.imwrite(str(folder / "deep.png"), deep[..., ::-1].copy())
    alpha = np.full(astronaut.shape[:2] + (1,), 200, np.uint8)
    Image.fromarray(np.concatenate([astronaut, alpha], axis=2)).save(folder / "rgba.png")
    Image.fromarray(astronaut).convert("L").save(folder / "gray.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated 90 degrees clockwise on display
    Image.fromarray(astronaut).save(folder / "rotated.jpg", quality=92, exif=exif)


def digest_of(path: Path) -> str:
    if path.name == "history.json":
        columns = {k: v for k, v in json.loads(path.read_text()).items() if not TIMINGS.search(k)}
        data = json.dumps(columns, sort_keys=True).encode()
    elif path.suffix == ".pt":  # the weights, not the pickle around them (it holds times and paths)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        buffer = io.BytesIO()
        for name, tensor in sorted(checkpoint["model"].items()):
            buffer.write(name.encode())
            buffer.write(tensor.numpy().tobytes())
        data = buffer.getvalue()
    elif path.name == "metrics.json":
        metrics = json.loads(path.read_text())
        data = json.dumps([metrics["summary"], metrics["per_image"]], sort_keys=True).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="a new folder for the pipeline's files")
    out = p.parse_args().out
    if out.exists():
        sys.exit(f"error: {out} exists: name a new folder")
    data, colorizer, regressor = out / "data", out / "colorizer", out / "regressor"
    run("prepare_data.py", "--demo", "--size", 64, "--out", data)
    common = ["--data", data, "--epochs", 2, "--no-tensorboard", "--device", "cpu"]
    run("train_colorizer.py", *common, "--out", colorizer)
    run("train_regressor.py", *common, "--out", regressor)
    run("evaluate.py", "--data", data, "--colorizer", colorizer / "best.pt", "models/face_colorizer.pt",
        "--regressor", regressor / "best.pt", "--out", out / "report", "--device", "cpu")
    write_inputs(out / "photos")
    run("colorize.py", out / "photos", "--out", out / "shipped", "--side-by-side", "--device", "cpu")
    run("colorize.py", out / "photos", "--out", out / "trained", "--checkpoint", colorizer / "best.pt",
        "--device", "cpu")
    kept = (".npy", ".pt", ".json", ".png", ".jpg", ".tif")
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix in kept and not path.name.startswith(".") and \
                path.name not in ("config.json", "manifest.json"):
            if "report" in path.parts and path.suffix == ".png":
                continue  # figures carry matplotlib's timestamps
            print(digest_of(path), path.relative_to(out))


if __name__ == "__main__":
    main()

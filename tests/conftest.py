"""Shared fixtures. The real faces are read from $FACES_DIR (default ../shared/data/face_images
beside the project); tests that need them skip, saying so, when they are absent."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = Path(os.environ.get("FACES_DIR", ROOT.parent / "shared" / "data" / "face_images"))


def run_script(script, *args, check=True, env=None, timeout=600):
    """Run one of the project's scripts as a user would; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def synthetic_photo(rng, size=80):
    """A smooth random colour field with a few blobs: colourful, and learnable from its L."""
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [np.clip(rng.uniform(0.2, 0.8) + rng.uniform(-0.4, 0.4) * x + rng.uniform(-0.4, 0.4) * y, 0, 1)
                for _ in range(3)]
    img = np.stack(channels, axis=2)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.1, 0.3)]
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (img * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(40):
        sub = folder / ("a" if i % 2 else "b")  # nested: the source is searched recursively
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"img{i:02d}.png"), synthetic_photo(rng)[..., ::-1])
    return folder


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, photo_folder):
    out = tmp_path_factory.mktemp("prepared") / "data"
    run_script("prepare_data.py", "--source", photo_folder, "--out", out, "--size", 64, "--augment-factor", 3)
    return out


@pytest.fixture(scope="session")
def faces_dir():
    if not FACES_DIR.is_dir():
        pytest.skip(f"face images not found at {FACES_DIR}: set FACES_DIR to run the tests on the real data")
    return FACES_DIR


@pytest.fixture(scope="session")
def trained(tmp_path_factory, prepared):
    """A colorizer and a regressor trained for two short epochs on the synthetic set."""
    runs = tmp_path_factory.mktemp("runs")
    run_script("train_colorizer.py", "--data", prepared, "--out", runs / "colorizer", "--epochs", 2,
               "--batch-size", 16, "--device", "cpu")
    run_script("train_regressor.py", "--data", prepared, "--out", runs / "regressor", "--epochs", 2,
               "--batch-size", 16, "--device", "cpu")
    return runs

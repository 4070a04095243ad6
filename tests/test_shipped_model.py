"""The model that ships in models/: small, weights and config only, and colorizing a photo straight after
cloning, with no --checkpoint."""
import time

import cv2
import numpy as np
import torch
from skimage import data

from colorize import SHIPPED_MODEL
from common import load_checkpoint, torch_load
from conftest import run_script


def test_the_shipped_model_is_small_and_holds_weights_and_config_only():
    assert SHIPPED_MODEL.stat().st_size < 5e6
    saved = torch_load(SHIPPED_MODEL)
    assert set(saved) == {"model", "run"} and set(saved["run"]) == {"config", "history"}
    model, config, _ = load_checkpoint(SHIPPED_MODEL, task="colorizer")
    assert config["arch"] == "unet" and not config.get("regressor")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored in float16, used in float32


def test_colorize_uses_the_shipped_model_with_no_checkpoint(tmp_path):
    cv2.imwrite(str(tmp_path / "astronaut.png"), data.astronaut()[..., ::-1])
    start = time.monotonic()
    result = run_script("colorize.py", tmp_path / "astronaut.png", "--out", tmp_path / "out", "--device", "cpu")
    assert "1 colorized" in result.stdout and time.monotonic() - start < 60
    rgb = cv2.imread(str(tmp_path / "out" / "astronaut.png"))[..., ::-1].astype(int)
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY).astype(int)
    chroma = np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean()
    assert chroma > 3  # coloured, not gray
    lightness = cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(lightness - gray).mean() < 4  # its own lightness kept

"""The model that ships in models/: small, weights and config only, and colorizing a photo straight after
cloning, with no --checkpoint."""
import json
import time

import cv2
import numpy as np
import torch
from skimage import data

from colorize import SHIPPED_MODEL
from common import load_checkpoint, torch_load
from guards import amp_supported
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


def test_amp_colorizes_and_evaluates_in_bfloat16_close_to_float32(prepared, tmp_path):
    """--amp: the network under bfloat16 autocast where the CPU has it (colours and scores move a little, the
    help texts say how much), else one line and float32, the same output."""
    cv2.imwrite(str(tmp_path / "astronaut.png"), data.astronaut()[..., ::-1])
    rgb, scores, stderr = {}, {}, {}
    for flags in ([], ["--amp"]):
        out = tmp_path / f"out{len(flags)}"
        run_script("colorize.py", tmp_path / "astronaut.png", "--out", out / "photos", "--device", "cpu", *flags)
        rgb[bool(flags)] = cv2.imread(str(out / "photos" / "astronaut.png")).astype(int)
        result = run_script("evaluate.py", "--data", prepared, "--colorizer", SHIPPED_MODEL, "--out", out / "report",
                            "--device", "cpu", *flags)
        summary = json.loads((out / "report" / "metrics.json").read_text())["summary"]
        scores[bool(flags)] = next(v for k, v in summary.items() if k.startswith("models/face_colorizer"))
        stderr[bool(flags)] = result.stderr
    if amp_supported("cpu"):
        assert not (rgb[True] == rgb[False]).all() and np.abs(rgb[True] - rgb[False]).mean() < 1
        assert scores[True] != scores[False]
        for metric in ("mse", "psnr", "ssim", "ciede2000"):
            assert abs(scores[True][metric] / scores[False][metric] - 1) < 0.03, metric
        # in the units of the colour goal (a gap of at most 3), not as a ratio: on dull test photos a shift of
        # half a unit is several percent (here, the chroma gain spreads bfloat16's rounding with the colours)
        assert abs(scores[True]["colorfulness"] - scores[False]["colorfulness"]) < 1
    else:
        assert "note: --amp: this CPU has no bfloat16 instructions" in stderr[True]
        assert (rgb[True] == rgb[False]).all() and scores[True] == scores[False]

"""`make venv` installs the torch build that fits the cluster's driver: TORCH_CUDA picks it (the wheel
index cannot be reached from CI, so the command is checked, not run); the default is PyPI's, as CI uses."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT


def make_commands(target, *settings):
    # a make of its own: under `make test` the parent's MAKEFLAGS would add "Entering directory" lines
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "--no-print-directory", "-n", "-B", target, *settings], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_torch_cuda_picks_the_wheel_index_and_the_default_stays_pypi(tmp_path):
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.startswith(("torch==", "torchvision=="))]
    assert len(pins) == 2
    venv = f"VENV={tmp_path / 'v'}"
    chosen = make_commands("venv", venv, "TORCH_CUDA=cu126")
    build = " ".join(f"{pin}+cu126" for pin in pins)  # torch==2.14.1+cu126: that build, not PyPI's
    assert f"install --quiet --index-url https://download.pytorch.org/whl/cu126 {build}" in chosen
    # the index install comes first: requirements.txt then finds the pins satisfied and keeps that build
    assert chosen.index("--index-url") < chosen.index("-r requirements.txt")
    default = make_commands("venv", venv)
    assert "--index-url" not in default and "pip install --quiet -r requirements.txt" in default
    # the conda route: the same variable
    conda = make_commands("conda-env", "TORCH_CUDA=cu126")
    assert conda.startswith("conda env create -f environment.yml -n colorization")
    assert f"pip install --index-url https://download.pytorch.org/whl/cu126 {build}" in conda
    assert "--index-url" not in make_commands("conda-env")

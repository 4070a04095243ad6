"""The CUDA path, on a real NVIDIA GPU: the speed flags, pinned-memory workers, resumption, NCCL and
colorize. Every test here skips, saying why, on a machine without one (CI has none): the GPU proof,
`bash benchmarks/gpu_proof.sh`, runs them where there is one."""
import json
import signal

import cv2
import numpy as np
import pytest
import torch

from common import torch_load
from conftest import ROOT, interrupt_and_resume, run_script, synthetic_photo, torchrun_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here: run `bash benchmarks/gpu_proof.sh` on a machine with one")


def history(run):
    return json.loads((run / "history.json").read_text())


def test_gpu_flags_change_how_not_what(prepared, tmp_path):
    """The plain GPU run (4 workers, pinned memory, non-blocking copies) computes what the CPU computes,
    and every speed flag, alone and all together, steps on the same batches to the same losses."""
    # lr 1e-3: small steps, so that rounding differences do not grow into different models
    args = ["--data", prepared, "--epochs", 2, "--epoch-length", 3, "--batch-size", 16, "--lr", 1e-3]
    runs = {"cpu": ["--device", "cpu"], "cuda": ["--device", "cuda"],
            "data-on-device": ["--device", "cuda", "--data-on-device"],
            "channels-last": ["--device", "cuda", "--channels-last"],
            "amp": ["--device", "cuda", "--amp"], "compile": ["--device", "cuda", "--compile"],
            "all": ["--device", "cuda", "--data-on-device", "--channels-last", "--amp", "--compile"]}
    # relative tolerances: float32 kernels differ only in summation order (TF32 convolutions aside);
    # bfloat16 keeps 8 bits of mantissa
    tolerance = {"cuda": 5e-3, "data-on-device": 5e-3, "channels-last": 5e-3, "compile": 5e-3, "amp": 3e-2,
                 "all": 3e-2}
    for name, flags in runs.items():
        run_script("train_colorizer.py", *args, *flags, "--out", tmp_path / name)
    plain = history(tmp_path / "cpu")
    for name, rel in tolerance.items():
        h = history(tmp_path / name)
        for key in ("train_loss", "val_mse"):
            assert h[key] == pytest.approx(plain[key], rel=rel), (name, key, h[key], plain[key])
    assert torch_load(tmp_path / "all" / "best.pt")["run"]["config"]["compile"] is True


def test_gpu_run_resumes_to_the_same_result(prepared, tmp_path):
    """SIGUSR1 mid-run on the GPU, then the same command: the weights of an uninterrupted run."""
    args = [ROOT / "train_colorizer.py", "--data", prepared, "--epochs", 20, "--batch-size", 2, "--device", "cuda",
            "--data-on-device"]
    straight, run, stopped, _ = interrupt_and_resume(args, tmp_path, signal.SIGUSR1)
    assert stopped < 20 * 54  # stopped inside the run
    for name in ("last.pt", "best.pt"):
        a, b = torch_load(straight / name)["model"], torch_load(run / name)["model"]
        for key in a:
            # ignite's DeterministicEngine makes cuDNN deterministic: the same kernels, the same sums
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
    h = [history(d) for d in (straight, run)]
    assert h[0]["val_mse"] == pytest.approx(h[1]["val_mse"], rel=1e-5)


def test_nccl_backend_trains_under_torchrun(prepared, tmp_path):
    """One process per GPU under torchrun with NCCL (one GPU here: world size 1, a real NCCL all_reduce)."""
    out = tmp_path / "nccl"
    result = torchrun_training(1, prepared, out, "nccl")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert history(out)["epoch"] == [1, 2]


def test_colorize_on_gpu_matches_cpu(trained, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "big.png"), synthetic_photo(np.random.default_rng(3), 600))
    cv2.imwrite(str(photos / "small.jpg"), synthetic_photo(np.random.default_rng(4), 90))
    for device in ("cpu", "cuda"):
        run_script("colorize.py", photos, "--checkpoint", trained / "colorizer" / "best.pt", "--out",
                   tmp_path / device, "--device", device)
    for name in ("big.png", "small.jpg"):
        cpu, gpu = (cv2.imread(str(tmp_path / d / name)).astype(int) for d in ("cpu", "cuda"))
        assert cpu.shape == gpu.shape
        assert np.abs(cpu - gpu).max() <= 2, name  # 8-bit rounding of float differences

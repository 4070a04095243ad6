"""The benchmarks run end to end: bench.py (--quick: one repeat, tiny windows) writes every ratio, pipeline.py
times every step of the seed pipeline."""
import json
import math
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from guards import amp_supported
from conftest import ROOT, run_script, synthetic_photo


def twelve_photos(folder):
    """12 synthetic colour photos at the default --size, 128 (10 train, 1 validation, 1 test)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(folder / f"p{i:02d}.png"), synthetic_photo(rng, size=128)[..., ::-1])
    return folder


def test_quick_benchmark_writes_every_ratio(tmp_path):
    photos = twelve_photos(tmp_path / "photos")
    out = tmp_path / "results"
    run_script("benchmarks/bench.py", "--faces", photos, "--out", out, "--quick", "--batch-size", 8, "--device", "cpu",
               timeout=900)

    results = json.loads((out / "bench.json").read_text())
    assert set(results["training"]) == {"seed colorizer", "seed regressor", "U-Net 8x4", "U-Net 8x4 classify"}
    for t in results["training"].values():
        assert all(math.isfinite(x) and x > 0 for x in (t["real"], t["ceiling"], t["ratio1"], t["naive"]))
        assert t["ratio1"] == t["real"] / t["ceiling"]  # one repeat: the median is that repeat
        assert math.isfinite(t["ceiling_read_loss"]) and t["ceiling_read_loss"] > 0
    memory, prepare = results["memory"], results["prepare"]
    assert (memory["x10_images"], memory["x100_images"]) == (100, 1000)  # 10 training photos x10, x100
    assert memory["x10_rss_mib"] > 0 and memory["x100_rss_mib"] > 0
    assert prepare["written_images"] == 102 and prepare["written_images_per_s"] > 0
    colorize, evaluate = results["colorize"], results["evaluate"]
    assert colorize["images_per_s_128"] > 0 and colorize["seconds_12mp"] > 0
    assert colorize["ceiling_images_per_s_128"] > 0 and colorize["ceiling_seconds_12mp"] > 0
    assert (evaluate["split_images"], evaluate["photos"]) == (1, 10)  # the test photo; ten faces as --photos
    assert evaluate["images_per_s"] > 0 and evaluate["ceiling_images_per_s"] > 0
    roof = results["roof_gflops"]
    assert roof["float32"] > 0 and (roof["bfloat16"] is None) != amp_supported("cpu")
    for t in results["training"].values():  # the roof, and bfloat16 against float32 where the CPU has it
        assert t["flops_per_image"] > 1e6 and t["roof_fraction"] == t["real"] / t["roof_images_per_s"]
        if roof["bfloat16"]:
            assert t["bf16_ratio"] > 0 and t["real_bf16"] > 0 and 0 < t["roof_bf16_fraction"]

    report = (out / "bench.md").read_text()
    assert report.startswith("Command: `python benchmarks/bench.py --faces")
    for line in ("ratio 1: real / ceiling", "ratio 2: real / naive", "Ratio 3 (x100 / x10, RSS)", "written images/s",
                 "real script / roof", "evaluate.py (the shipped model", "the forward pass alone"):
        assert line in report
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md"]  # nothing half-written beside them


def test_pipeline_wall_time_runs_every_step(tmp_path):
    photos = twelve_photos(tmp_path / "photos")
    out = tmp_path / "results"
    run_script("benchmarks/pipeline.py", "--faces", photos, "--out", out, "--regressor-epochs", 2,
               "--colorizer-epochs", 1, "--device", "cpu")
    results = json.loads((out / "pipeline.json").read_text())
    steps = results["steps"]
    assert [s["script"] for s in steps] == ["prepare_data.py", "train_regressor.py", "train_colorizer.py",
                                            "evaluate.py"]
    assert (steps[1]["epochs"], steps[2]["epochs"]) == (2, 1)
    assert all(s["seconds"] > 0 for s in steps)
    assert results["total_seconds"] == sum(s["seconds"] for s in steps)
    assert 0 < results["colorizer_test_mse"] < 1 and 0 < results["regressor_test_mse"] < 1
    assert "| **whole pipeline** |" in (out / "pipeline.md").read_text()


def test_pipeline_without_faces_is_one_clear_line(tmp_path):
    result = run_script("benchmarks/pipeline.py", "--faces", tmp_path / "nowhere", "--out", tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {tmp_path / 'nowhere'}: no such folder; pass --faces DIR "
                                      "(or set FACES_DIR), the face images")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU answers here: the GPU proof would run, not refuse")
def test_gpu_proof_refuses_without_a_gpu(tmp_path):
    results = tmp_path / "results"
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_proof.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "RESULTS": str(results)},
                            timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: no CUDA GPU answers here (torch {torch.__version__}, CUDA build ")
    assert result.stderr.count("\n") == 1 and not results.exists()  # one line, and nothing written


def test_quick_scale_benchmark_writes_every_ratio(tmp_path):
    """benchmarks/scale.py --quick: the route for your own photos on 1,000 and 100 made-up photos of mixed sizes,
    every figure there, and the same bytes from one and two prepare workers."""
    out = tmp_path / "results"
    run_script("benchmarks/scale.py", "--quick", "--out", out, timeout=900)
    results = json.loads((out / "scale.json").read_text())
    assert (results["large"], results["small"]) == (1000, 100)
    prepared = results["prepare"]
    assert set(prepared) == {"small_workers1", "small_workers2", "large_workers2"}
    assert all(p["rss_mib"] > 0 and p["written_per_s"] > 0 for p in prepared.values())
    assert "GB written" in prepared["large_workers2"]["script_says"]
    assert results["workers_same_bytes"] is True
    for step in ("train", "evaluate"):
        assert results[f"{step}_small_rss_mib"] > 0 and results[f"{step}_large_rss_mib"] > 0
    assert (results["test_images_large"], results["test_images_small"]) == (50, 5)  # --held-out 0.1, half of it
    colorize = results["colorize"]
    assert colorize["counts"] == [1, 4] and colorize["one_rss_mib"] > 0 and colorize["many_rss_mib"] > 0
    report = (out / "scale.md").read_text()
    assert report.startswith("Command: `python benchmarks/scale.py --quick")
    assert report.count("**") == 10  # five ratios
    assert sorted(p.name for p in out.iterdir()) == ["scale.json", "scale.md"]


@pytest.mark.parametrize("script, data_flag", [("bench.py", "--faces"), ("scale.py", "--faces"),
                                               ("pipeline.py", "--faces"), ("metrics.py", "--data")])
def test_a_benchmark_refuses_an_unwritable_out_before_any_work(tmp_path, script, data_flag):
    taken = tmp_path / "results"
    taken.write_text("a file, not a folder")
    result = run_script(f"benchmarks/{script}", "--out", taken, data_flag, tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == f"error: {taken}: cannot write there (File exists); pass another --out\n"
    assert result.stdout == "" and taken.read_text() == "a file, not a folder"


def test_the_scale_benchmark_refuses_too_few_photos(tmp_path):
    result = run_script("benchmarks/scale.py", "--images", 999, "--out", tmp_path, check=False)
    assert result.returncode == 2 and "argument --images: at least 1000, not 999" in result.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler (g++)")
def test_metrics_benchmark_writes_every_ratio(prepared, tmp_path):
    """benchmarks/metrics.py: evaluate's metric functions eager and compiled, each with its ratio and how far the
    compiled numbers are from evaluate's."""
    out = tmp_path / "results"
    run_script("benchmarks/metrics.py", "--data", prepared, "--images", 8, "--out", out, timeout=900)
    results = json.loads((out / "metrics.json").read_text())
    assert set(results["metrics"]) == {"Lab01 to RGB", "seed MSE", "PSNR", "SSIM", "CIEDE2000", "colorfulness",
                                       "the chain: truth and 4 guesses"}
    for name, r in results["metrics"].items():
        assert r["eager_ms"] > 0 and r["compiled_ms"] > 0 and r["first_call_s"] > 0, name
        assert math.isclose(r["ratio"], r["eager_ms"] / r["compiled_ms"]), name
        assert r["max_relative_difference"] < 1e-4, name  # the same numbers, to float32's reordered sums
    costs = results["operations"]
    assert {"addition", "comparison (x > y)", "torch.where", "pow (exponent 1/2.4)", "SSIM's window, one 11-tap pass"} \
        <= set(costs) and all(ns > 0 for ns in costs.values())
    table = (out / "metrics.md").read_text()
    assert table.startswith("Command: `python benchmarks/metrics.py --data")
    assert f"| torch.where | {costs['torch.where']:.2f} | {costs['torch.where'] / costs['addition']:.1f} |" in table
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md"]


def test_metrics_benchmark_names_a_folder_that_is_not_prepared(tmp_path):
    result = run_script("benchmarks/metrics.py", "--data", tmp_path, "--out", tmp_path / "results", check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: {tmp_path}: not a prepared folder; run `make lfw-data`, or pass --data a "
                             "folder that prepare_data.py wrote\n")


def test_the_photo_folder_benchmark_runs(tmp_path):
    """benchmarks/photo_folders.py --quick: colorize.py on each folder with 1 and 2 cores beside the limit."""
    run_script("benchmarks/photo_folders.py", "--quick", "--device", "cpu", "--out", tmp_path, timeout=900)
    results = json.loads((tmp_path / "photo_folders.json").read_text())
    assert set(results["folders"]) == {"12mp", "24mp-tiff16", "mix"}
    for by_cores in results["folders"].values():
        assert set(by_cores) == {"1", "2"}
        for m in by_cores.values():
            assert m["limit"]["photos_per_s"] > 0 and m["limit"]["library"] in ("opencv", "pillow")
            for faces in ("auto", "off"):  # three photos: a difference of two timings, its sign left to noise
                assert math.isfinite(m[faces]["photos_per_s"]) and m[faces]["peak_anon_mib_folder"] > 0
    assert [len(results["one_12mp_photo_s"][faces]) for faces in ("auto", "off")] == [1, 1]
    assert set(results["stages_ms"]) == {"decode (the limit's work)", "lightness", "network input (area resize)",
                                         "face search (--faces auto)", "network", "colour to full size (cubic)",
                                         "Lab to samples", "encode (the limit's work)"}
    assert all(ms > 0 for ms in results["stages_ms"].values())
    assert set(results["black_and_white_lightness_ms"]) == {"stored gray", "stored as BGR"}
    assert all(ms > 0 for ms in results["black_and_white_lightness_ms"].values())
    assert results["device"] == "cpu" and "| 12mp | 2 |" in (tmp_path / "photo_folders.md").read_text()


def test_the_tensorboard_cost_benchmark_runs(prepared, tmp_path):
    run_script("benchmarks/tensorboard_cost.py", "--data", prepared, "--repeats", 1, "--epoch-length", 2, "--out",
               tmp_path, timeout=600)
    results = json.loads((tmp_path / "tensorboard_cost.json").read_text())
    assert results["ratio"] == results["ratio_each_pair"][0] > 0
    assert all(v > 0 for v in results["images_per_s"].values())

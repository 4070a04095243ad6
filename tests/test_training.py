"""Training, checkpoints, resumption after a signal, evaluation and the errors users meet."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from common import ab_bins, load_checkpoint, torch_load
from guards import amp_supported
from training import RESUMABLE_EXIT, augmentation
from conftest import ROOT, interrupt_and_resume, run_script, synthetic_photo, torchrun_training


def weights(path):
    return torch_load(path)["model"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_training_writes_checkpoints_history_and_plot(trained):
    for name in ("colorizer", "regressor"):
        run = trained / name
        for f in ("best.pt", "last.pt", "history.json", "loss.png"):
            assert (run / f).is_file(), f
        history = json.loads((run / "history.json").read_text())
        assert history["epoch"] == [1, 2] and all(v > 0 for v in history["val_loss"])
        ckpt = torch_load(run / "last.pt")  # weights_only=True
        assert {"model", "optimizer", "trainer", "run"} <= ckpt.keys()
        assert ckpt["run"]["config"]["task"] == name and ckpt["trainer"]["iteration"] == 2 * (108 // 16)


def test_checkpoint_of_the_wrong_model_is_one_clear_line(prepared, trained, tmp_path):
    result = run_script("evaluate.py", "--colorizer", trained / "regressor" / "best.pt", "--data", prepared,
                        "--out", tmp_path / "r", check=False)
    assert result.returncode == 2
    assert "regressor checkpoint, but a colorizer checkpoint is needed" in result.stderr
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    result = run_script("evaluate.py", "--colorizer", junk, "--data", prepared, "--out", tmp_path / "r", check=False)
    assert result.returncode == 2 and f"error: {junk}: not a checkpoint" in result.stderr
    with pytest.raises(Exception, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_same_seed_same_weights_and_scores(prepared, tmp_path):
    args = ["--data", prepared, "--epochs", 1, "--batch-size", 16, "--device", "cpu"]
    for run in ("a", "b"):
        run_script("train_colorizer.py", *args, "--out", tmp_path / run)
        run_script("evaluate.py", "--data", prepared, "--colorizer", tmp_path / run / "best.pt",
                   "--out", tmp_path / f"report_{run}", "--device", "cpu")
    assert_same_weights(tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt")
    scores = [json.loads((tmp_path / f"report_{r}" / "metrics.json").read_text())["per_image"] for r in "ab"]
    assert list(scores[0].values())[-1]["mse"] == list(scores[1].values())[-1]["mse"]


def test_interrupted_run_resumes_to_the_same_result(prepared, tmp_path):
    # a cosine schedule: its position is part of what a checkpoint must restore
    args = [ROOT / "train_colorizer.py", "--data", prepared, "--epochs", 5, "--batch-size", 2, "--device", "cpu",
            "--lr-schedule", "cosine"]
    # SIGUSR1: what SLURM sends before the time limit
    straight, run, stopped, _ = interrupt_and_resume(args, tmp_path, signal.SIGUSR1)
    assert 54 <= stopped < 5 * 54  # stopped inside the run, after its first epoch
    final_lr = torch_load(straight / "last.pt")["optimizer"]["param_groups"][0]["lr"]
    assert 0 < final_lr < 1e-3 * 0.01  # the schedule fell from --lr to (nearly) 0 over the run
    assert_same_weights(straight / "last.pt", run / "last.pt")
    assert_same_weights(straight / "best.pt", run / "best.pt")
    history = [json.loads((d / "history.json").read_text()) for d in (straight, run)]
    for h in history:
        del h["train_images_per_s"]  # measured time, not a result
    assert history[0] == history[1]


def test_resuming_with_other_settings_is_refused(prepared, trained):
    result = run_script("train_colorizer.py", "--data", prepared, "--out", trained / "colorizer", "--epochs", 3,
                        "--batch-size", 16, "--activation", "tanh", check=False)
    assert result.returncode == 2 and "used other settings (activation)" in result.stderr


def test_more_epochs_extend_a_constant_rate_but_not_a_cosine_schedule(prepared, tmp_path):
    """--epochs may grow on resume, except where the cosine schedule spans them: it would jump back up."""
    for schedule in ("constant", "cosine"):
        args = ["--data", prepared, "--out", tmp_path / schedule, "--batch-size", 16, "--epoch-length", 2,
                "--device", "cpu", "--lr-schedule", schedule]
        run_script("train_regressor.py", *args, "--epochs", 1)
        result = run_script("train_regressor.py", *args, "--epochs", 2, check=False)
        epochs = json.loads((tmp_path / schedule / "history.json").read_text())["epoch"]
        if schedule == "constant":
            assert result.returncode == 0 and epochs == [1, 2], result.stderr
        else:
            assert result.returncode == 2 and epochs == [1], result.stderr
            assert "used other settings (epochs, which the cosine schedule spans)" in result.stderr


def test_evaluate_compares_models_with_baselines(prepared, trained, tmp_path):
    col = trained / "colorizer"
    out = tmp_path / "report"
    photos = tmp_path / "unseen"
    photos.mkdir()
    for i, seed in enumerate((7, 8)):
        cv2.imwrite(str(photos / f"p{i}.png"), synthetic_photo(np.random.default_rng(seed), 100))
    run_script("evaluate.py", "--data", prepared, "--colorizer", col / "best.pt", col / "last.pt",
               "--regressor", trained / "regressor" / "best.pt", "--out", out, "--device", "cpu",
               "--photos", photos)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["kinds"].values()).count("baseline") == 3
    assert list(metrics["kinds"].values()).count("colorizer") == 2
    for s in metrics["summary"].values():
        assert {"mse", "psnr", "ssim", "ciede2000", "colorfulness", "colorfulness_gap"} <= s.keys()
        assert 0 < s["mse"] < 1
    assert metrics["summary"]["gray"]["colorfulness"] == pytest.approx(0, abs=0.05)  # float32 Lab round trip
    regressor = metrics["regressor"]
    assert len(regressor["predicted_ab"]) == 2
    # the noise of the test set: bootstrap intervals around the figures they qualify
    low, high = regressor["mse_interval"]
    assert low <= regressor["mse"] <= high and low < high
    low, high = regressor["gain_over_constant_interval"]
    assert low <= regressor["constant_mean_mse"] - regressor["mse"] <= high
    # and of the split's table: no person ids in these images, so the images are resampled
    noise = metrics["noise"]
    assert noise["resampled"] == "images" and noise["images"] == len(metrics["per_image"]["gray"]["mse"])
    assert noise["methods"].keys() == metrics["summary"].keys()
    for name, m in noise["methods"].items():
        low, high = m["mse_interval"]
        assert low <= metrics["summary"][name]["mse"] <= high
        low, high = m["best_lead_interval"]
        lead = metrics["summary"][name]["mse"] - metrics["summary"][noise["best"]]["mse"]
        assert low <= lead * (1 + 1e-9) and lead <= high * (1 + 1e-9) and (name != noise["best"] or low == high == 0)
    report = (out / "report.md").read_text()
    assert "mean-face map" in report and "Regressor" in report and "The noise of the test split" in report
    for figure in ("grid.png", "loss_curves.png", "lab_channels.png", "best_worst.png", "photos.png"):
        assert (out / figure).stat().st_size > 1000
    # the photos outside the data get their own table, every method scored on both of them
    assert "2 photos that are not in the prepared data" in report
    assert metrics["photos"]["summary"].keys() == metrics["summary"].keys()
    assert all(len(v["mse"]) == 2 for v in metrics["photos"]["per_image"].values())
    # a photo that cannot be scored (broken, or gray: no colour to score against) is named and left out, like
    # prepare_data.py leaves it out; the others are scored
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    cv2.imwrite(str(photos / "gray.png"), cv2.cvtColor(synthetic_photo(np.random.default_rng(9), 100),
                                                       cv2.COLOR_RGB2GRAY))
    result = run_script("evaluate.py", "--data", prepared, "--colorizer", col / "best.pt", "--out", out,
                        "--photos", photos)
    for name in ("broken.jpg", "gray.png"):
        assert result.stderr.count(f"skipped {photos / name}: ") == 1, result.stderr
    scored = json.loads((out / "metrics.json").read_text())["photos"]["per_image"]
    assert all(len(v["mse"]) == 2 for v in scored.values())


def test_noise_of_a_split_by_person_resamples_people_with_all_their_photos():
    """Photos of one person are alike: 10 people x 15 photos carry the information of about 10 images, not
    150. Resampling people gives that wider interval; resampling images would claim a narrower one."""
    from evaluate import noise_of_split
    from scores import bootstrap_interval
    person_mse = np.random.default_rng(0).uniform(1e-4, 3e-4, 10)
    files = [{"file": f"{p}_{k}.jpg", "person": f"s{p}"} for p in range(10) for k in range(15)]
    per_image = {"a": {"mse": np.repeat(person_mse, 15).tolist()},
                 "b": {"mse": np.repeat(person_mse + 1e-5, 15).tolist()},
                 "mean-face map": {"mse": np.repeat(2 * person_mse, 15).tolist()}}
    noise = noise_of_split(per_image, "a", files, by_person=True)
    assert noise["resampled"] == "people" and noise["people"] == 10 and noise["images"] == 150
    by_person = bootstrap_interval(torch.tensor(person_mse))
    assert noise["methods"]["a"]["mse_interval"] == pytest.approx(by_person, rel=1e-12)
    by_image = bootstrap_interval(torch.tensor(per_image["a"]["mse"]))
    assert by_image[1] - by_image[0] < 0.7 * (by_person[1] - by_person[0])
    assert noise["methods"]["b"]["best_lead_interval"] == pytest.approx([1e-5, 1e-5])  # same lead in every draw
    assert noise["methods"]["a"]["map_ratio_interval"] == pytest.approx([0.5, 0.5])  # the same people for both
    low, high = noise["methods"]["b"]["map_ratio_interval"]
    assert 0.5 < low < high < 0.5 + 1e-5 / person_mse.min()
    # split by image (the demo set, a folder of photos whose JPEG comments name an encoder): the images are resampled
    by_image = noise_of_split(per_image, "a", [{**f, "person": "Lavc60.3.100"} for f in files], by_person=False)
    assert by_image["resampled"] == "images" and by_image["people"] is None
    low, high = by_image["methods"]["a"]["mse_interval"]
    assert low < np.mean(per_image["a"]["mse"]) < high


def test_evaluate_scores_batch_by_batch_alike(prepared, trained, tmp_path):
    """evaluate streams the images in batches (memory follows --batch-size, not the number of images):
    the scores do not depend on where the batches cut."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(7):
        cv2.imwrite(str(photos / f"p{seed}.png"), synthetic_photo(np.random.default_rng(seed), 90))
    per_image = {}
    for batch in (3, 128):
        run_script("evaluate.py", "--data", prepared, "--colorizer", trained / "colorizer" / "best.pt", "--photos",
                   photos, "--out", tmp_path / str(batch), "--device", "cpu", "--batch-size", batch)
        per_image[batch] = json.loads((tmp_path / str(batch) / "metrics.json").read_text())["photos"]["per_image"]
    assert per_image[3].keys() == per_image[128].keys()
    for method in per_image[3]:
        for metric, values in per_image[3][method].items():
            assert len(values) == 7 and values == pytest.approx(per_image[128][method][metric], rel=1e-4)


def test_two_processes_with_torchrun_train_to_the_end(prepared, tmp_path):
    out = tmp_path / "ddp"
    result = torchrun_training(2, prepared, out, "gloo")
    assert result.returncode == 0, result.stderr
    assert "in 2 processes" in result.stdout
    assert torch_load(out / "best.pt")["run"]["config"]["world_size"] == 2
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2]


PROBE_TEARDOWN = """
import gc, runpy, sys, torch.distributed as dist
import common
destroy = dist.destroy_process_group
def destroy_and_count(*args, **kwargs):
    alive = sum(isinstance(o, common.SeedColorizer) for o in gc.get_objects())  # no collection first
    print("models alive when the process group is destroyed:", alive, flush=True)
    destroy(*args, **kwargs)
dist.destroy_process_group = destroy_and_count
sys.argv = ["train_colorizer.py", *sys.argv[1:]]
runpy.run_path("train_colorizer.py", run_name="__main__")
"""


@pytest.mark.parametrize("stop", ["finished", "signalled"])
def test_the_process_group_outlives_the_run_objects(prepared, tmp_path, stop):
    """The cause of gloo's abort at exit ("terminate called without an active exception", srun: task
    Aborted): the run's model, which holds the process group, freed only at interpreter exit, after the
    group was destroyed. Whether the run finishes or stops on a signal (exit 3), nothing of it is left."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    args = [sys.executable, "-c", PROBE_TEARDOWN, "--data", str(prepared), "--out", str(tmp_path / "run"),
            "--batch-size", "16", "--backend", "gloo", "--device", "cpu"]
    if stop == "finished":
        result = subprocess.run([*args, "--epochs", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                                env=env)
        assert result.returncode == 0, result.stderr
        output = result.stdout
    else:
        proc = subprocess.Popen([*args, "--epochs", "100"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=ROOT, env=env)
        deadline = time.monotonic() + 300
        while not (tmp_path / "run" / "history.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGUSR1)
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == RESUMABLE_EXIT, output
    assert "models alive when the process group is destroyed: 0" in output, output


def test_classification_head_trains_evaluates_and_colorizes(prepared, trained, tmp_path):
    run = tmp_path / "classify"
    result = run_script("train_colorizer.py", "--data", prepared, "--out", run, "--epochs", 1, "--batch-size", 16,
                        "--head", "classify", "--device", "cpu")
    assert "ab prior" in result.stdout or (prepared / "ab_prior.npy").is_file()
    prior = np.load(prepared / "ab_prior.npy")
    assert prior.shape == (len(ab_bins()),) and abs(prior.sum() - 1) < 1e-5
    # the temperature and chroma gain are chosen after training: evaluate scores the same network decoded at
    # others, a row each pair
    run_script("evaluate.py", "--data", prepared, "--colorizer", run / "best.pt", "--out", tmp_path / "report",
               "--device", "cpu", "--temperatures", "0.38", "2", "--chroma-gains", "2", "--split", "val")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "classify (T=0.38)" in report and "| classify@T=2: " in report and "classify@T=0.38" not in report
    assert "| classify@chroma=2: " in report and "| classify@T=2,chroma=2: " in report and "chroma=1" not in report
    assert "classify (T=2.0, chroma x2)" in report
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    trained_t, other_t, vivid = (next(v for k, v in metrics["per_image"].items() if k.startswith(label))
                                 for label in ("classify:", "classify@T=2:", "classify@chroma=2:"))
    assert trained_t["mse"] != other_t["mse"]
    assert np.mean(vivid["colorfulness"]) > 1.5 * np.mean(trained_t["colorfulness"])  # spread from the mean
    chosen = metrics["decoding"]  # one of the rows, named with the flags that colour with it
    assert chosen["name"] in metrics["per_image"] and chosen["sentence"] in report
    decoded = metrics["configs"][chosen["name"]]
    gain = decoded.get("chroma_gain", 1)
    assert chosen["flags"] == f"--checkpoint {run / 'best.pt'} --temperature {decoded['temperature']:g} " \
                              f"--chroma-gain {gain:g}"
    training_table = report.split("How each colorizer was trained")[1].split("\n\n")[1]
    assert training_table.count("| classify") == 1  # trained once: one row
    for flag in ("--temperatures", "--chroma-gains"):
        result = run_script("evaluate.py", "--data", prepared, "--colorizer", trained / "colorizer" / "best.pt",
                            "--out", tmp_path / "no_classifier", flag, "1", check=False)
        assert result.returncode == 2 and "no classification colorizer" in result.stderr
        assert result.stderr.startswith("error: --temperatures, --chroma-gains:")
        assert not (tmp_path / "no_classifier").exists()
    cv2.imwrite(str(tmp_path / "photo.png"), data.astronaut())
    decodings = {"0.38": [], "1.0": ["--temperature", "1.0"], "vivid": ["--chroma-gain", "1.5"]}
    for name, flags in decodings.items():
        run_script("colorize.py", tmp_path / "photo.png", "--checkpoint", run / "best.pt", "--out", tmp_path / name,
                   "--device", "cpu", *flags)
    a, b, vivid = (cv2.imread(str(tmp_path / name / "photo.png")).astype(int) for name in decodings)
    assert a.shape == (512, 512, 3) and np.abs(a - b).mean() > 0  # the temperature changes the colours
    chroma = [np.abs(x - x.mean(axis=2, keepdims=True)).mean() for x in (a, vivid)]
    assert chroma[1] > chroma[0]  # the gain makes them more vivid
    # shipped with a chroma gain, the checkpoint decodes with it; a regression checkpoint refuses one
    run_script("models/export.py", run / "best.pt", tmp_path / "vivid.pt", "--chroma-gain", "1.5")
    run_script("colorize.py", tmp_path / "photo.png", "--checkpoint", tmp_path / "vivid.pt", "--out",
               tmp_path / "shipped_vivid", "--device", "cpu")
    shipped = cv2.imread(str(tmp_path / "shipped_vivid" / "photo.png")).astype(int)
    assert np.abs(shipped - vivid).mean() < 1  # float16 weights: the same colours, up to rounding
    for script in (["models/export.py", trained / "colorizer" / "best.pt", tmp_path / "no.pt"],
                   ["colorize.py", tmp_path / "photo.png", "--checkpoint", trained / "colorizer" / "best.pt",
                    "--out", tmp_path / "no"]):
        result = run_script(*script, "--chroma-gain", "1.5", check=False)
        assert result.returncode == 2 and "--chroma-gain applies to classification checkpoints only" in result.stderr


def test_speed_flags_change_how_not_what(prepared, tmp_path):
    """--data-on-device (uint8 on the device, converted per batch), --channels-last and --amp (bfloat16)
    step on the same batches as the default path: the same losses, up to rounding."""
    # lr 1e-3: small steps, so that rounding differences do not grow into different models
    args = ["--data", prepared, "--epochs", 1, "--epoch-length", 3, "--batch-size", 16, "--device", "cpu",
            "--lr", 1e-3]
    history = {}
    for name, flags in (("plain", []), ("device", ["--data-on-device", "--channels-last"]), ("amp", ["--amp"])):
        run_script("train_colorizer.py", *args, *flags, "--out", tmp_path / name)
        history[name] = json.loads((tmp_path / name / "history.json").read_text())
        _, config, _ = load_checkpoint(tmp_path / name / "best.pt", task="colorizer")
        assert config["data_on_device"] == (name == "device")
        assert config["amp"] == (name == "amp" and amp_supported("cpu"))  # bfloat16 where the CPU has it
    for name, tolerance in (("device", 5e-3), ("amp", 2e-2)):
        for key in ("train_loss", "val_mse"):
            assert history[name][key] == pytest.approx(history["plain"][key], rel=tolerance), (name, key)
    # --augment does change what is learned: other pixels from the first batch on
    run_script("train_colorizer.py", *args, "--augment", "--out", tmp_path / "augment")
    augmented = json.loads((tmp_path / "augment" / "history.json").read_text())
    assert augmented["train_loss"] != history["plain"]["train_loss"]
    assert augmented["val_mse"] != history["plain"]["val_mse"]


def test_augmentation_draws_per_image():
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 32).expand(3, 32, 32)  # left to right: a flip reverses it
    batch = ramp.expand(64, 3, 32, 32).contiguous()
    out = augmentation(32)(batch)
    assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1
    flipped = out[:, 0, 16, 0] > out[:, 0, 16, -1]
    assert 10 < int(flipped.sum()) < 54  # about half, each image its own draw
    assert len({round(float(x.mean()), 4) for x in out}) > 10  # crops differ too


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler (g++)")
def test_compiled_model_trains_alike_and_saves_plain_weights(prepared, tmp_path):
    args = ["--data", prepared, "--batch-size", 16, "--device", "cpu", "--dry-run"]
    run_script("train_colorizer.py", *args, "--out", tmp_path / "plain")
    run_script("train_colorizer.py", *args, "--out", tmp_path / "compiled", "--compile")
    plain, compiled = weights(tmp_path / "plain" / "last.pt"), weights(tmp_path / "compiled" / "last.pt")
    assert plain.keys() == compiled.keys()  # no "_orig_mod." prefix: loads into the plain model
    # (weights are not compared: the biases before BatchNorm get no gradient, so Adam moves them by
    # the sign of rounding noise, which fused kernels change)
    history = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("plain", "compiled")]
    for key in ("train_loss", "val_mse"):
        assert history[1][key] == pytest.approx(history[0][key], rel=1e-2), key


def test_init_from_fine_tunes_a_trained_colorizer(prepared, trained, tmp_path):
    """--init-from: the checkpoint's weights and architecture, a fresh optimizer; a mismatched architecture is
    refused; rerunning the command resumes the fine-tuning run, not the checkpoint it started from."""
    source = trained / "colorizer" / "best.pt"
    args = ["--data", prepared, "--out", tmp_path / "tuned", "--init-from", source, "--batch-size", 16,
            "--device", "cpu", "--epoch-length", 1, "--lr", 1e-12, "--patience", 0]
    run_script("train_colorizer.py", *args, "--epochs", 1)
    start, tuned = torch_load(source), torch_load(tmp_path / "tuned" / "last.pt")
    assert tuned["run"]["config"]["arch"] == start["run"]["config"]["arch"]
    weights = [k for k in start["model"] if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(start["model"][k], tuned["model"][k], atol=1e-6) for k in weights)  # lr 1e-12: one step
    steps = {float(s["step"]) for s in tuned["optimizer"]["state"].values()}
    assert steps == {1.0}  # one step of this run: not the trained run's Adam state
    result = run_script("train_colorizer.py", *args, "--epochs", 2)
    assert "resuming" in result.stdout
    assert torch_load(tmp_path / "tuned" / "last.pt")["run"]["history"]["epoch"] == [1, 2]
    for flag, value in (("--arch", "unet"), ("--head", "classify"), ("--max-channels", 256)):
        result = run_script("train_colorizer.py", *args, "--out", tmp_path / "other", flag, value, "--epochs", 1,
                            check=False)
        assert result.returncode == 2 and f"argument {flag}:" in result.stderr and "leave the flag out" in result.stderr
        assert not (tmp_path / "other").exists()

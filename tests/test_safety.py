"""What the scripts never do: delete or replace what they did not write, read their own outputs as
inputs, write two inputs to one output, leave half-written files, or answer a bad input with a
traceback instead of one line and exit status 2."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from common import torch_load
from guards import amp_supported
from training import RunSaver
from conftest import ROOT, broken_files_folder, interrupt_and_resume, run_script, synthetic_photo



def fingerprint(folder):
    """Every file under folder (links not followed) with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def write_photos(folder, n, size=80, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"p{i:02d}.png"), synthetic_photo(rng, size)[..., ::-1])
    return folder


def one_line_error(result, *fragments):
    """Exit status 2 and one line on stderr starting with 'error: ', naming each fragment; no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------------------------------------
# prepare_data.py replaces only a set it prepared


@pytest.mark.parametrize("where", ["the source", "its parent", "inside it", "a link to it"])
def test_prepare_refuses_an_out_that_is_holds_or_lies_inside_the_source(tmp_path, where):
    source = write_photos(tmp_path / "shots" / "photos", 4)
    (tmp_path / "shots" / "notes.txt").write_text("the user's")
    (tmp_path / "link").symlink_to(source)
    out = {"the source": source, "its parent": tmp_path / "shots", "inside it": source / "prepared",
           "a link to it": tmp_path / "link"}[where]
    before = fingerprint(tmp_path)
    result = run_script("prepare_data.py", "--source", source, "--out", out, check=False)
    one_line_error(result, out, "lies inside the source folder")
    assert fingerprint(tmp_path) == before and not (source / "prepared").exists()


def test_prepare_replaces_only_a_set_it_prepared(tmp_path, photo_folder):
    args = ["--source", photo_folder, "--size", 32, "--augment-factor", 2]
    a_file = tmp_path / "results.csv"
    a_file.write_text("precious")
    one_line_error(run_script("prepare_data.py", *args, "--out", a_file, check=False), a_file, "not a folder")
    assert a_file.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]

    theirs = tmp_path / "mine"
    (theirs / "sub").mkdir(parents=True)
    (theirs / "sub" / "thesis.tex").write_text("precious")
    one_line_error(run_script("prepare_data.py", *args, "--out", theirs, check=False), theirs, "not written by")
    assert (theirs / "sub" / "thesis.tex").read_text() == "precious"

    prepared = tmp_path / "prepared"
    run_script("prepare_data.py", *args, "--out", prepared)
    run_script("prepare_data.py", *args, "--out", prepared, "--seed", 1)  # a set it prepared: replaced
    assert json.loads((prepared / "manifest.json").read_text())["seed"] == 1
    (prepared / "my_notes.txt").write_text("precious")  # now it also holds the user's file: kept
    one_line_error(run_script("prepare_data.py", *args, "--out", prepared, check=False), "my_notes.txt")
    assert (prepared / "my_notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "prepared", "results.csv"]  # nothing hidden left


def test_trainer_hint_for_an_unprepared_folder_cannot_lose_photos(tmp_path):
    folder = write_photos(tmp_path / "photos", 3)
    before = fingerprint(folder)
    result = run_script("train_colorizer.py", "--data", folder, "--out", tmp_path / "run", check=False)
    one_line_error(result, "no prepared data here", "--out NEW_FOLDER")
    # and following the hint into that very folder is refused, not a replacement of the photos
    one_line_error(run_script("prepare_data.py", "--out", folder, check=False), "not written by")
    assert fingerprint(folder) == before and not (tmp_path / "run").exists()


def test_killed_prepare_leaves_a_staging_folder_the_next_run_removes(tmp_path, faces_or_photos):
    out = tmp_path / "prepared"
    proc = subprocess.Popen([sys.executable, str(ROOT / "prepare_data.py"), "--source", str(faces_or_photos),
                             "--out", str(out), "--augment-factor", "10"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".prepared.colorization-tmp-*/train.npy")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert list(tmp_path.glob(".prepared.colorization-tmp-*")) and not out.exists()  # killed while writing
    result = run_script("prepare_data.py", "--source", faces_or_photos, "--out", out, "--augment-factor", 2)
    assert "left by an interrupted run" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


@pytest.fixture
def faces_or_photos(tmp_path_factory):
    """A source big enough that writing it takes a moment: the faces, or 300 synthetic photos."""
    faces = ROOT.parent / "shared" / "data" / "face_images"
    faces = type(faces)(os.environ.get("FACES_DIR", faces))
    return faces if faces.is_dir() else write_photos(tmp_path_factory.mktemp("many"), 300, size=128)


def test_too_few_images_are_refused_with_the_number_needed(tmp_path, prepared):
    result = run_script("prepare_data.py", "--source", write_photos(tmp_path / "three", 3, size=128), "--out",
                        tmp_path / "o", check=False)
    one_line_error(result, "3 usable images", "at least 9 usable images")
    assert not (tmp_path / "o").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["three"]
    for flags in ([], ["--dry-run"]):  # 108 training images here
        result = run_script("train_colorizer.py", "--data", prepared, "--out", tmp_path / "run", "--batch-size",
                            200, *flags, check=False)
        one_line_error(result, "108 training images, fewer than one batch of 200")
    assert not (tmp_path / "run").exists()


def test_every_broken_file_named_once_and_every_good_one_used(tmp_path):
    good, bad, gray = broken_files_folder(tmp_path / "mixed")
    out = tmp_path / "prepared"
    result = run_script("prepare_data.py", "--source", tmp_path / "mixed", "--out", out, "--size", 64,
                        "--augment-factor", 4)
    manifest = json.loads((out / "manifest.json").read_text())
    used = {r["file"] for split in manifest["files"].values() for r in split}
    assert used == set(good)
    assert {s["file"] for s in manifest["skipped"]} == set(bad) | set(gray)
    for name in bad + gray:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        assert result.stderr.count(f"{tmp_path / 'mixed' / shown}:") == 1, name
        assert_reason_and_remedy(result.stderr, f"skipped {tmp_path / 'mixed' / shown}: ")

    # colorize: the same folder, and the files prepare skipped for want of colour are coloured
    run_script("train_colorizer.py", "--data", out, "--out", tmp_path / "run", "--dry-run", "--batch-size", 16,
               "--device", "cpu")
    result = run_script("colorize.py", tmp_path / "mixed", "--checkpoint", tmp_path / "run" / "best.pt", "--out",
                        tmp_path / "colour", "--device", "cpu", check=False)
    assert result.returncode == 1
    for name in bad:
        assert result.stderr.count(f"failed {tmp_path / 'mixed' / name}:") == 1, name
        assert_reason_and_remedy(result.stderr, f"failed {tmp_path / 'mixed' / name}: ")
    assert f"{len(good) + len(gray)} colorized" in result.stdout
    written = {p.name for p in (tmp_path / "colour").iterdir()} - {".colorized.json"}
    assert written == {n if n.split(".")[-1] != "gif" else n[:-3] + "png" for n in good + gray}


def assert_reason_and_remedy(stderr: str, start: str) -> None:
    """The line that starts so says what is wrong with the file, then what to do about it."""
    line = next(line for line in stderr.splitlines() if line.startswith(start))
    reason, _, remedy = line[len(start):].rpartition("; ")
    assert reason and len(remedy.split()) >= 2, line


# ---------------------------------------------------------------------------------------------
# colorize.py never reads its own outputs and never writes two inputs to one output


def test_colorize_into_a_folder_inside_its_input_reads_only_the_input(trained, tmp_path):
    folder = write_photos(tmp_path / "album", 3)
    args = [folder, "--checkpoint", trained / "colorizer" / "best.pt", "--out", folder / "colorized",
            "--device", "cpu", "--side-by-side"]
    for _ in range(3):
        result = run_script("colorize.py", *args)
        assert "3 colorized" in result.stdout
    assert sorted(p.name for p in (folder / "colorized").iterdir()) == \
        [".colorized.json"] + sorted(f"p{i:02d}{s}.png" for i in range(3) for s in ("", "_compare"))


def test_colorize_gives_every_input_its_own_output_and_keeps_other_files(trained, tmp_path):
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "photo.jpg"), synthetic_photo(np.random.default_rng(seed), 90))
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo-2.jpg").write_text("the user's own file")
    result = run_script("colorize.py", tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg", "--checkpoint",
                        trained / "colorizer" / "best.pt", "--out", out, "--device", "cpu")
    assert "2 colorized" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [".colorized.json", "photo-2.jpg", "photo-3.jpg", "photo.jpg"]
    assert (out / "photo-2.jpg").read_text() == "the user's own file"
    assert f"{tmp_path / 'b' / 'photo.jpg'} -> {out / 'photo-3.jpg'}" in result.stderr
    a, b = (cv2.imread(str(out / n)) for n in ("photo.jpg", "photo-3.jpg"))
    assert a.shape == b.shape == (90, 90, 3) and not np.array_equal(a, b)  # two photos, two outputs


# ---------------------------------------------------------------------------------------------
# bad flags, folders and checkpoints: one line and exit status 2, before any work


@pytest.mark.parametrize("script, flags, named", [
    ("train_colorizer.py", ["--lr", "-1"], "--lr"),
    ("train_colorizer.py", ["--lr", "nan"], "--lr"),
    ("train_regressor.py", ["--batch-size", "0"], "--batch-size"),
    ("train_regressor.py", ["--epochs", "0"], "--epochs"),
    ("train_colorizer.py", ["--num-workers", "-1"], "--num-workers"),
    ("train_colorizer.py", ["--epoch-length", "0"], "--epoch-length"),
    ("train_colorizer.py", ["--weight-decay", "inf"], "--weight-decay"),
    ("train_colorizer.py", ["--temperature", "0"], "--temperature"),
    ("train_colorizer.py", ["--max-channels", "5000"], "--max-channels"),
    ("train_colorizer.py", ["--arch", "unet", "--base-channels", "2000"], "--base-channels"),
    ("prepare_data.py", ["--held-out", "1.5"], "--held-out"),
    ("prepare_data.py", ["--workers", "-2"], "--workers"),
    ("evaluate.py", ["--batch-size", "x"], "--batch-size"),
    ("evaluate.py", ["--temperatures", "0.38", "0"], "--temperatures"),
    ("evaluate.py", ["--max-gap", "-1"], "--max-gap"),
    ("colorize.py", ["in.png", "--checkpoint", "c.pt", "--size", "-4"], "--size"),
    ("prepare_data.py", ["--size", "5000"], "--size"),
    ("benchmarks/bench.py", ["--repeats", "x"], "--repeats"),
    ("benchmarks/scale.py", ["--images", "ten"], "--images"),
    ("benchmarks/metrics.py", ["--per-call", "0"], "--per-call"),
])
def test_bad_flag_values_are_one_line(tmp_path, script, flags, named):
    result = run_script(script, *flags, "--out", tmp_path / "out", check=False)
    one_line_error(result, f"argument {named}")
    assert not (tmp_path / "out").exists()


def damaged_copies(prepared, root):
    """Copies of a prepared folder, each damaged one way."""
    cases = {}
    for name, damage in {
        "truncated_lab": lambda d: (d / "val_lab.npy").write_bytes((d / "val_lab.npy").read_bytes()[:5000]),
        "invalid_manifest": lambda d: (d / "manifest.json").write_text("{not json"),
        "incomplete_manifest": lambda d: (d / "manifest.json").write_text(json.dumps({"format": 2, "size": 64})),
        "missing_split": lambda d: (d / "test.npy").unlink(),
    }.items():
        copy = root / name
        shutil.copytree(prepared, copy)
        damage(copy)
        cases[name] = copy
    return cases


def test_damaged_prepared_folders_are_one_line(prepared, trained, tmp_path):
    for name, data in damaged_copies(prepared, tmp_path).items():
        for script, args in (("train_colorizer.py", ["--out", tmp_path / f"run_{name}"]),
                             ("evaluate.py", ["--colorizer", trained / "colorizer" / "best.pt",
                                              "--out", tmp_path / f"report_{name}"])):
            result = run_script(script, "--data", data, *args, "--device", "cpu", check=False)
            one_line_error(result, data)
        assert not (tmp_path / f"run_{name}").exists() and not (tmp_path / f"report_{name}").exists()


def test_checkpoint_shaped_dicts_that_do_not_fit_are_one_line(prepared, trained, tmp_path):
    good = torch_load(trained / "colorizer" / "best.pt")
    config = good["run"]["config"]
    wrong_shape = {k: v[:1] if v.ndim else v for k, v in good["model"].items()}
    cases = {"no_config": {"model": good["model"], "run": {}},
             "config_missing_keys": {"model": good["model"], "run": {"config": {"task": "colorizer"}}},
             "weights_of_another_model": {"model": wrong_shape, "run": good["run"]},
             "other_widths": {"model": good["model"], "run": {**good["run"], "config": {**config, "max_channels": 64}}}}
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), synthetic_photo(np.random.default_rng(0), 90))
    for name, ckpt in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(ckpt, path)
        one_line_error(run_script("colorize.py", photo, "--checkpoint", path, "--out", tmp_path / "c",
                                  "--device", "cpu", check=False), path)
        one_line_error(run_script("evaluate.py", "--data", prepared, "--colorizer", path, "--out", tmp_path / "r",
                                  "--device", "cpu", check=False), path)
    # a damaged last.pt in a run folder: resuming says what to do
    run = tmp_path / "run"
    shutil.copytree(trained / "colorizer", run)
    torch.save(cases["weights_of_another_model"], run / "last.pt")
    result = run_script("train_colorizer.py", "--data", prepared, "--out", run, "--epochs", 3, "--batch-size", 16,
                        "--device", "cpu", check=False)
    one_line_error(result, run / "last.pt", "--no-resume")


def test_unwritable_out_is_found_before_any_work(prepared, trained, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for script, args in (("train_colorizer.py", ["--data", prepared, "--epochs", 1]),
                         ("evaluate.py", ["--data", prepared, "--colorizer", trained / "colorizer" / "best.pt"])):
        start = time.monotonic()
        result = run_script(script, *args, "--out", blocker / "out", "--device", "cpu", check=False)
        one_line_error(result, blocker / "out", "cannot write there")
        assert time.monotonic() - start < 60  # found at the start, not after an epoch or the scoring
    assert blocker.read_text() == "not a folder"


def test_resuming_on_other_data_is_refused(photo_folder, tmp_path):
    runs = {}
    for name, flags in (("a", []), ("other_seed", ["--seed", 1]), ("other_size", ["--size", 48])):
        runs[name] = tmp_path / name
        run_script("prepare_data.py", "--source", photo_folder, "--out", runs[name], "--size", 64,
                   "--augment-factor", 3, *flags)
    args = ["--out", tmp_path / "run", "--batch-size", 16, "--device", "cpu"]
    run_script("train_colorizer.py", "--data", runs["a"], "--epochs", 1, *args)
    for name in ("other_seed", "other_size"):
        result = run_script("train_colorizer.py", "--data", runs[name], "--epochs", 2, *args, check=False)
        one_line_error(result, "was trained on other prepared data", "--no-resume")
    # the same set, moved elsewhere, is the same data: resuming goes on
    shutil.move(runs["a"], tmp_path / "moved")
    assert "done" in run_script("train_colorizer.py", "--data", tmp_path / "moved", "--epochs", 2, *args).stdout


# ---------------------------------------------------------------------------------------------
# Ctrl-C saves like SLURM's signals, and a resumed run ends where an uninterrupted one does


@pytest.mark.parametrize("sig, epoch_length, flags", [(signal.SIGINT, None, []), (signal.SIGINT, 7, []),
                                                      (signal.SIGUSR1, 7, ["--amp"])])
def test_interrupted_run_resumes_to_the_same_weights(prepared, tmp_path, sig, epoch_length, flags):
    """Also in bfloat16 on the CPU (--amp): autocast keeps float32 weights and optimizer state, so a resumed run
    ends on the same weights too."""
    # 216 steps either way: 4 epochs of the whole set (54 batches), or 30 epochs of 7
    args = [ROOT / "train_colorizer.py", "--data", prepared, "--epochs", 30 if epoch_length else 4,
            "--batch-size", 2, "--device", "cpu", *(["--epoch-length", epoch_length] if epoch_length else []), *flags]
    straight, run, stopped, _ = interrupt_and_resume(args, tmp_path, sig)
    assert stopped < 216  # stopped inside the run
    assert torch_load(run / "last.pt")["run"]["config"]["amp"] == ("--amp" in flags and amp_supported("cpu"))
    for name in ("last.pt", "best.pt"):
        a, b = torch_load(straight / name)["model"], torch_load(run / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_second_run_on_a_live_run_folder_is_refused_and_a_dead_one_frees_it(prepared, tmp_path):
    args = [sys.executable, str(ROOT / "train_colorizer.py"), "--data", str(prepared), "--out", str(tmp_path / "run"),
            "--batch-size", "2", "--device", "cpu", "--patience", "0"]
    live = subprocess.Popen(args + ["--epochs", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (tmp_path / "run" / "history.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run(args + ["--epochs", "50"], capture_output=True, text=True, timeout=300)
    one_line_error(second, tmp_path / "run", "a run is writing there now", f"pid {live.pid}")
    live.kill()  # a crash: no clean exit, no checkpoint at the end
    live.wait()
    resumed = subprocess.run(args + ["--epochs", "2"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr


def test_a_checkpoint_write_that_dies_keeps_the_last_good_file(tmp_path, monkeypatch):
    """ignite's Checkpoint removes the old file before writing the new one: a run killed in between lost last.pt."""
    weights = torch.nn.Linear(1, 1)
    trainer = Engine(lambda engine, batch: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint({"model": weights}, RunSaver(tmp_path),
                                                                 filename_pattern="last.pt", n_saved=1))
    real_save, saves = torch.save, []

    def save_then_die_on_the_second(obj, f, **kwargs):
        saves.append(f)
        if len(saves) == 2:
            raise KeyboardInterrupt  # stands for the kill: the write never finishes
        real_save(obj, f, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_die_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0], max_epochs=2)
    assert torch_load(tmp_path / "last.pt").keys() == weights.state_dict().keys()  # one object: saved bare
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # and no temporary file left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_permissions_the_umask_gives_and_no_import_changes_it(tmp_path, umask):
    """A file written whole (through its temporary file) is as readable as any new file under the user's umask,
    and importing the shared modules leaves the umask alone (reading it means setting it)."""
    code = (f"import os, stat, sys\nos.umask({umask})\nimport guards, common, photos, scores, faces, training\n"
            f"print(oct(os.umask({umask})))\nguards.write_json(sys.argv[1], {{}})\n"
            "print(oct(stat.S_IMODE(os.stat(sys.argv[1]).st_mode)))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.json")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.split() == [oct(umask), oct(0o666 & ~umask)]


def test_evaluate_never_scores_its_own_report_as_photos(prepared, trained, tmp_path):
    """--out inside a --photos folder (PHOTOS --out PHOTOS/report): the report's figures are outputs, never photos
    to score, on the second run as on the first."""
    photos = write_photos(tmp_path / "photos", 2, size=90)
    args = ["--data", prepared, "--colorizer", trained / "colorizer" / "best.pt", "--photos", photos,
            "--out", photos / "report", "--device", "cpu"]
    for _ in range(2):
        result = run_script("evaluate.py", *args)
        assert "report" not in result.stderr, result.stderr
        scored = json.loads((photos / "report" / "metrics.json").read_text())["photos"]["files"]
        assert sorted(Path(f).name for f in scored) == ["p00.png", "p01.png"]
    result = run_script("evaluate.py", *args[:5], photos / "report", *args[6:], check=False)  # the report itself
    assert result.returncode == 2 and "it lies inside --out" in result.stderr

"""Trust, round three: hostile but ordinary inputs (photo archives, shared cluster folders, other tools' files
beside ours) meet the rules of "What the scripts never do" (docs/usage.md). Grouped as the rules are: files lost
or replaced, wrong answers that look right, hangs, the cluster templates, tracebacks and late failures."""
import io
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
from PIL import Image

import common
import guards
import photos
from common import dataset_id, torch_load
from guards import OWNER_FILE
from photos import BadImage, find_images, read_image
from conftest import ROOT, run_script, synthetic_photo, train_on_a_full_disk
from locks import FolderLock
from test_safety import fingerprint, one_line_error, write_photos


def colorize_args(trained, *inputs, out):
    return [*inputs, "--checkpoint", trained / "colorizer" / "best.pt", "--out", out, "--device", "cpu"]


def no_traceback(result):
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


# ---------------------------------------------------------------------------------------------
# Files lost or replaced


def test_an_old_folder_is_known_by_what_it_holds_not_by_its_file_names(prepared, trained, tmp_path):
    evaluate = ["evaluate.py", "--data", prepared, "--colorizer", trained / "colorizer" / "best.pt", "--device", "cpu"]
    theirs = tmp_path / "their_report"
    theirs.mkdir()
    (theirs / "report.md").write_text("# My thesis results\n")
    (theirs / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    their_run = tmp_path / "their_run"
    their_run.mkdir()
    torch.save({"epoch": 7, "state": torch.zeros(3)}, their_run / "last.pt")  # another project's checkpoint
    (their_run / "history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    before = {folder: fingerprint(folder) for folder in (theirs, their_run)}
    one_line_error(run_script(*evaluate, "--out", theirs, check=False), theirs, "not written by evaluate.py")
    for script in ("train_colorizer.py", "train_regressor.py"):
        for flags in ([], ["--no-resume"]):  # the advice a refusal used to end in: it must not overwrite them
            result = run_script(script, "--data", prepared, "--out", their_run, "--dry-run", "--device", "cpu",
                                *flags, check=False)
            one_line_error(result, their_run, f"not written by {script}")
    assert {folder: fingerprint(folder) for folder in before} == before

    # the project's own folders from before it marked them are still its own, by their content
    report = tmp_path / "report"
    run_script(*evaluate, "--out", report)
    (report / OWNER_FILE).unlink()
    run_script(*evaluate, "--out", report)
    legacy = tmp_path / "legacy"
    shutil.copytree(trained / "regressor", legacy)
    (legacy / OWNER_FILE).unlink()
    result = run_script("train_regressor.py", "--data", prepared, "--out", legacy, "--epochs", 3, "--batch-size", 16,
                        "--device", "cpu")
    assert "resuming" in result.stdout
    (legacy / OWNER_FILE).unlink()  # a regressor's folder is not a colorizer's
    one_line_error(run_script("train_colorizer.py", "--data", prepared, "--out", legacy, "--dry-run", "--device",
                              "cpu", check=False), "not written by train_colorizer.py")


def test_prepare_replaces_a_folder_only_when_its_files_are_a_prepared_set(photo_folder, prepared, tmp_path):
    args = ["--source", photo_folder, "--size", 32, "--augment-factor", 2]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "manifest.json").write_text(json.dumps({"experiment": "mine"}))
    np.save(theirs / "train.npy", np.arange(10))
    before = fingerprint(theirs)
    one_line_error(run_script("prepare_data.py", *args, "--out", theirs, check=False), theirs, "not written by")
    # our manifest beside arrays that do not agree with it: not a set of ours either
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    np.save(copy / "val.npy", np.zeros((3, 2), np.uint8))
    one_line_error(run_script("prepare_data.py", *args, "--out", copy, check=False), copy, "not written by")
    assert fingerprint(theirs) == before and np.load(copy / "val.npy").shape == (3, 2)


def test_colorize_never_writes_through_a_link_inside_out(trained, tmp_path):
    originals = write_photos(tmp_path / "originals", 2, seed=4)
    album = tmp_path / "album"
    write_photos(album / "family", 2, seed=5)
    write_photos(album / "trips", 1, seed=6)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "family").symlink_to(originals, target_is_directory=True)
    before = fingerprint(originals)
    result = run_script("colorize.py", *colorize_args(trained, album, out=out), check=False)
    assert fingerprint(originals) == before and sorted(p.name for p in originals.iterdir()) == ["p00.png", "p01.png"]
    for name in ("p00.png", "p01.png"):
        assert f"skipped {album / 'family' / name}: its output folder {out / 'family'} is a link" in result.stderr
    assert "1 colorized" in result.stdout and (out / "trips" / "p00.png").is_file()
    no_traceback(result)


def test_one_process_is_rank_zero_whatever_the_login_shell_left(prepared, tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("precious")
    monkeypatch.setenv("SLURM_PROCID", "3")  # left from an srun session
    result = run_script("train_colorizer.py", "--data", prepared, "--out", theirs, "--dry-run", "--device", "cpu",
                        check=False)
    one_line_error(result, theirs, "not written by train_colorizer.py")
    # and the folder's lock is taken: a live run there refuses the second
    run = tmp_path / "run"
    run_script("train_colorizer.py", "--data", prepared, "--out", run, "--dry-run", "--device", "cpu")
    lock = guards.lock_folder(run)
    try:
        result = run_script("train_colorizer.py", "--data", prepared, "--out", run, "--dry-run", "--device", "cpu",
                            "--no-resume", check=False)
        one_line_error(result, run, "a run is writing there now")
    finally:
        lock.release()


def test_runs_whose_folders_share_a_name_keep_a_row_each(prepared, trained, tmp_path):
    for parent in ("a", "b"):
        shutil.copytree(trained / "colorizer", tmp_path / "runs" / parent / "colorizer")
    result = run_script("evaluate.py", "--data", prepared, "--runs", tmp_path / "runs", "--device", "cpu", "--out",
                        tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())["summary"]
    rows = sorted(name.split(":")[0] for name in summary if ":" in name)
    assert rows == ["a/colorizer", "b/colorizer"], (rows, result.stdout)


def test_photos_of_the_same_names_are_other_data(tmp_path):
    """Two memory cards, the same file names (IMG_0001.jpg, ...), other photos: two sets, two identities."""
    ids = []
    for card, seed in (("card1", 1), ("card2", 2)):
        folder = write_photos(tmp_path / card, 24, seed=seed)
        run_script("prepare_data.py", "--source", folder, "--out", tmp_path / f"{card}_data", "--size", 32,
                   "--augment-factor", 4)
        ids.append(json.loads((tmp_path / f"{card}_data" / "manifest.json").read_text()))
    assert ids[0]["files"] == ids[1]["files"] and dataset_id(ids[0]) != dataset_id(ids[1])


def test_a_prepared_set_that_a_run_reads_is_not_replaced(photo_folder, prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    before = fingerprint(data)
    args = ["prepare_data.py", "--source", photo_folder, "--out", data, "--size", 32, "--augment-factor", 2]
    reader = FolderLock(data).acquire()  # as a training or evaluation holds it while it reads
    try:
        one_line_error(run_script(*args, check=False), data, "is reading this prepared set now")
    finally:
        reader.release()
    assert fingerprint(data) == before
    # a live training holds it
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_colorizer.py"), "--data", str(data), "--out",
                             str(tmp_path / "run"), "--epochs", "50", "--device", "cpu", "--batch-size", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "history.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        one_line_error(run_script(*args, check=False), "is reading this prepared set now")
    finally:
        proc.kill()
        proc.communicate()
    assert fingerprint(data) == before
    run_script(*args)  # no one reads it now: replaced
    assert json.loads((data / "manifest.json").read_text())["size"] == 32


def test_a_damaged_record_of_outputs_is_named_never_dropped(trained, tmp_path):
    folder = write_photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    run_script("colorize.py", *colorize_args(trained, folder, out=out))
    (out / ".colorized.json").write_text('{"written": {"p00.png": ')  # cut short
    before = fingerprint(out)
    result = run_script("colorize.py", *colorize_args(trained, folder, out=out), check=False)
    one_line_error(result, out / ".colorized.json", "damaged")
    assert fingerprint(out) == before


# ---------------------------------------------------------------------------------------------
# Wrong answers that look right


def test_linked_folders_are_searched_and_a_loop_is_named(trained, tmp_path):
    elsewhere = write_photos(tmp_path / "elsewhere", 2, seed=7)
    album = write_photos(tmp_path / "album", 1, seed=8)
    (album / "linked").symlink_to(elsewhere, target_is_directory=True)
    (album / "loop").symlink_to(album, target_is_directory=True)
    found = find_images(album)
    assert [p.relative_to(album).as_posix() for p in found.images] == ["linked/p00.png", "linked/p01.png", "p00.png"]
    assert [(folder.name, "a loop" in why) for folder, why in found.unsearched] == [("loop", True)]
    result = run_script("colorize.py", *colorize_args(trained, album, out=tmp_path / "out"))
    assert "3 colorized" in result.stdout and (tmp_path / "out" / "linked" / "p01.png").is_file()
    assert f"skipped {album / 'loop'}: a link to a folder searched already" in result.stderr


def test_an_unreadable_folder_is_named(tmp_path, monkeypatch):
    album = write_photos(tmp_path / "album", 1)
    write_photos(album / "locked", 1)
    scandir = os.scandir

    def refuse(path):  # as root, permissions do not stop a read: the refusal is made here
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    found = find_images(album)
    assert [p.name for p in found.images] == ["p00.png"]
    assert len(found.unsearched) == 1 and found.unsearched[0][0] == album / "locked"
    assert "cannot be read (Permission denied)" in found.unsearched[0][1]


def test_black_and_white_photos_are_told_from_faded_colour(tmp_path):
    rng = np.random.default_rng(3)
    colour = synthetic_photo(rng, 96)
    gray = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    toned = np.clip(gray.astype(int) + [2, 1, -1], 0, 255).astype(np.uint8)  # a faint tone, as old prints have
    lab = cv2.cvtColor(colour.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    lab[..., 1:] *= 3.5 / np.hypot(lab[..., 1], lab[..., 2]).mean()  # faded colour: mean chroma 3.5
    faded = (np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1) * 255).round().astype(np.uint8)
    for name, image in {"gray_as_rgb.jpg": gray, "toned.jpg": toned, "faded.png": faded}.items():
        Image.fromarray(image).save(tmp_path / name, quality=90)
    for name in ("gray_as_rgb.jpg", "toned.jpg"):
        with pytest.raises(BadImage, match="black and white"):
            photos.prepare_photo(tmp_path / name, 64)
    assert photos.prepare_photo(tmp_path / "faded.png", 64).shape == (64, 64, 3)


def test_any_temperature_decodes_to_finite_colour_and_the_flags_are_bounded(prepared, trained, tmp_path):
    body = torch.nn.Conv2d(1, len(common.ab_bins()), 1)
    with torch.no_grad():
        body.weight.fill_(1e35)  # logits near float32's largest: divided by a small temperature, infinite
    for t in (common.TEMPERATURES[0], 0.05, common.TEMPERATURES[1]):
        model = common.ClassifyingColorizer(body, temperature=t).eval()
        assert torch.isfinite(model(torch.rand(2, 1, 8, 8) * 100)).all(), t
    one_line_error(run_script("colorize.py", "in.png", "--temperature", "1e-30", "--out", tmp_path / "o",
                              check=False), "argument --temperature")
    one_line_error(run_script("evaluate.py", "--chroma-gains", "1e30", "--out", tmp_path / "o", check=False),
                   "argument --chroma-gains")
    ckpt = torch_load(trained / "colorizer" / "best.pt")
    ckpt["run"]["config"].update(head="classify", temperature=1e-30)
    torch.save(ckpt, tmp_path / "tiny_t.pt")
    result = run_script("evaluate.py", "--data", prepared, "--colorizer", tmp_path / "tiny_t.pt", "--device", "cpu",
                        "--out", tmp_path / "report", check=False)
    one_line_error(result, "impossible temperature")


def test_a_jpeg_followed_by_a_video_is_read_and_a_cut_one_is_not(tmp_path):
    rng = np.random.default_rng(2)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "Phone"
    Image.fromarray(synthetic_photo(rng, 64)).save(buffer, format="JPEG", exif=exif)
    jpeg = buffer.getvalue()
    thumbnail = cv2.imencode(".jpg", synthetic_photo(rng, 16))[1].tobytes()  # holds an end marker of its own
    with_thumbnail = jpeg[:2] + b"\xff\xe2" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail + jpeg[2:]
    video = b"\x00\x00\x00\x18ftypmp42\xff\xd9" + bytes(5000)  # an end marker of no image, 5 kB before the end
    (tmp_path / "motion.jpg").write_bytes(with_thumbnail + video)
    (tmp_path / "cut.jpg").write_bytes(with_thumbnail[:len(with_thumbnail) * 2 // 3])
    assert read_image(tmp_path / "motion.jpg").rgb.shape == (64, 64, 3)
    with pytest.raises(BadImage, match="truncated JPEG"):
        read_image(tmp_path / "cut.jpg")


# ---------------------------------------------------------------------------------------------
# Hangs and unbounded work


def hostile_icc_png(path, rng):
    profile = bytearray(132)
    profile[16:20] = b"RGB "
    profile[36:40] = b"acsp"
    profile[128:132] = (0xFFFFFFFF).to_bytes(4, "big")  # 4 billion tags in 132 bytes
    Image.fromarray(synthetic_photo(rng, 80)).save(path, icc_profile=bytes(profile))


def test_a_count_a_file_states_is_bounded_by_its_size(trained, tmp_path):
    folder = write_photos(tmp_path / "in", 2)
    hostile_icc_png(folder / "hostile_icc.png", np.random.default_rng(1))
    result = run_script("colorize.py", *colorize_args(trained, folder, out=tmp_path / "out"), timeout=120)
    assert "3 colorized" in result.stdout  # the profile cannot be read: the photo is taken as sRGB
    # a 12 GB file named like an image is refused before a byte of it is read
    sparse = tmp_path / "huge.tif"
    with open(sparse, "wb") as f:
        f.truncate(12 * 10 ** 9)
    with pytest.raises(BadImage, match="too large to read"):
        read_image(sparse)


# ---------------------------------------------------------------------------------------------
# The cluster templates


def fake_commands(folder, **scripts):
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/bash\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


def run_template(command, tmp_path, cwd, **env):
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CONDA_ENV": "no-such-environment", **env}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("restarts, requeued", [(0, True), (3, False)])
def test_the_multi_gpu_templates_requeue_at_most_max_requeues_times(tmp_path, restarts, requeued):
    log = tmp_path / "scontrol.log"
    fake_commands(tmp_path / "bin", scontrol=f'echo "$@" >> {log}', srun="exit 3")  # every task: interrupted
    result = run_template(f"bash {ROOT / 'slurm' / 'multinode.sbatch'} --epochs 1", tmp_path, ROOT,
                          PROJECT_DIR=str(ROOT), SLURM_JOB_ID="42", SLURM_NTASKS="4",
                          SLURM_RESTART_COUNT=str(restarts))
    if requeued:
        assert result.returncode == 3 and log.read_text() == "requeue 42\n", result.stderr
    else:
        assert result.returncode == 1 and not log.exists() and "MAX_REQUEUES=3" in result.stderr


def fake_sbatch(tmp_path):
    """An sbatch that records each job's arguments, one per line (a job's flags after a line '--job')."""
    log = tmp_path / "sbatch.log"
    fake_commands(tmp_path / "bin", sbatch=f'n=$(($(grep -c -- "^--job$" {log} 2>/dev/null || true) + 1)); '
                                           f'{{ echo --job; printf "%s\\n" "$@"; }} >> {log}; echo "$((100 + n))"')
    return log


def jobs_in(log):
    return [job.strip("\n").split("\n") for job in log.read_text().split("--job\n")[1:]]


@pytest.mark.parametrize("how", ["bash from another folder", "sbatch from another folder"])
def test_pipeline_submits_from_anywhere_and_keeps_spaces_in_names(tmp_path, how):
    log = fake_sbatch(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"DATA_SOURCE": "/photos/My Family Photos", "RUN_DIR": str(tmp_path / "run dir")}
    if how.startswith("sbatch"):  # sbatch runs a copy from its spool folder; SLURM knows where the script lay
        spool = tmp_path / "spool"
        spool.mkdir()
        shutil.copy(ROOT / "slurm" / "pipeline.sh", spool / "slurm_script")
        fake_commands(tmp_path / "bin", scontrol=f'echo "   Command={ROOT / "slurm" / "pipeline.sh"}"')
        command, env = f"bash {spool / 'slurm_script'}", {**env, "SLURM_JOB_ID": "7",
                                                           "SLURM_SUBMIT_DIR": str(elsewhere)}
    else:
        command = f"bash {ROOT / 'slurm' / 'pipeline.sh'}"
    result = run_template(command, tmp_path, elsewhere, **env)
    assert result.returncode == 0, result.stderr
    jobs = jobs_in(log)
    assert len(jobs) == 4 and all("--chdir" in job and str(ROOT) in job for job in jobs)
    prepare = jobs[0]
    assert prepare[prepare.index("--source") + 1] == "/photos/My Family Photos"
    assert prepare[prepare.index("--out") + 1] == f"{tmp_path / 'run dir'}/data"


def test_pipeline_that_cannot_find_the_project_says_so(tmp_path):
    fake_sbatch(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(ROOT / "slurm" / "pipeline.sh", spool / "slurm_script")
    result = run_template(f"bash {spool / 'slurm_script'}", tmp_path, tmp_path, SLURM_SUBMIT_DIR=str(tmp_path))
    assert result.returncode == 2 and "the project folder was not found" in result.stderr
    assert not (tmp_path / "sbatch.log").exists()


def test_the_last_variant_runs_without_a_final_newline(tmp_path):
    log = tmp_path / "srun.log"
    fake_commands(tmp_path / "bin", srun=f'printf "%s\\n" "$@" > {log}')
    variants = tmp_path / "variants.txt"
    variants.write_text(f"{tmp_path}/a --activation relu\n{tmp_path}/my run\t--activation tanh")  # no final newline
    result = run_template(f"bash {ROOT / 'slurm' / 'colorizer_array.sbatch'} {variants} --epochs 2", tmp_path, ROOT,
                          PROJECT_DIR=str(ROOT), SLURM_ARRAY_TASK_ID="1", SLURM_NTASKS="2")
    assert result.returncode == 0, result.stderr
    args = log.read_text().splitlines()
    assert args[args.index("--out") + 1] == f"{tmp_path}/my run" and "tanh" in args and args[-1] == "2"


# ---------------------------------------------------------------------------------------------
# Tracebacks and late failures: one line and exit status 2 before work, or the one file named and the rest done


def test_an_output_the_encoder_refuses_is_written_without_what_it_cannot_hold(trained, tmp_path):
    folder = write_photos(tmp_path / "in", 3)
    exif = Image.Exif()
    exif[0x9286] = "x" * 100_000  # a 100 kB user comment: more than a JPEG's EXIF segment holds
    Image.fromarray(synthetic_photo(np.random.default_rng(9), 80)).save(folder / "big_exif.jpg", format="PNG",
                                                                        exif=exif)
    result = run_script("colorize.py", *colorize_args(trained, folder, out=tmp_path / "out"))
    assert "4 colorized" in result.stdout and "written without the input's EXIF" in result.stderr
    assert Image.open(tmp_path / "out" / "big_exif.jpg").format == "JPEG"


def test_sizes_the_networks_cannot_take_are_one_line_before_work(photo_folder, prepared, trained, tmp_path):
    data = tmp_path / "data68"
    run_script("prepare_data.py", "--source", photo_folder, "--out", data, "--size", 68, "--augment-factor", 2)
    for flags, needs in ((["--arch", "unet", "--depth", "4"], "multiple of 16"), (["--layers", "5"], "multiple of 32"),
                         (["--arch", "unet", "--depth", "1", "--head", "classify"], "at least 2")):
        result = run_script("train_colorizer.py", "--data", data, "--out", tmp_path / "run", *flags, "--device", "cpu",
                            check=False)
        one_line_error(result, needs)
    small = tmp_path / "data32"
    run_script("prepare_data.py", "--source", photo_folder, "--out", small, "--size", 32, "--augment-factor", 2)
    one_line_error(run_script("train_regressor.py", "--data", small, "--out", tmp_path / "run", "--device", "cpu",
                              check=False), "at least 64")
    one_line_error(run_script("evaluate.py", "--data", data, "--colorizer", trained / "colorizer" / "best.pt",
                              "--device", "cpu", "--out", tmp_path / "report", check=False), "multiple of 8")
    assert not (tmp_path / "run").exists() and not (tmp_path / "report").exists()


def test_a_full_disk_while_a_checkpoint_is_saved_is_one_line(prepared, tmp_path):
    # what torch.save raised on a full 2 MB tmpfs here: an iostream error, then, closing the file, another
    result = train_on_a_full_disk("def full(*a, **k):\n"
                                  "    try:\n"
                                  "        raise RuntimeError('basic_ios::clear: iostream error')\n"
                                  "    finally:\n"
                                  "        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected "
                                  "pos 576 vs 534')\n", prepared, tmp_path / "run")
    one_line_error(result, tmp_path / "run", "no space left")


def test_names_that_are_not_utf8_reach_the_report_and_the_figures(prepared, trained, tmp_path):
    folder = write_photos(tmp_path / "in", 2)
    os.rename(folder / "p00.png", os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    out = tmp_path / "report"
    result = run_script("evaluate.py", "--data", prepared, "--colorizer", trained / "colorizer" / "best.pt",
                        "--photos", folder, "--device", "cpu", "--out", out)
    assert "caf\\xe9.png" in (out / "report.md").read_text() and "report:" in result.stdout
    run = os.path.join(os.fsencode(tmp_path), b"run_\xe9t\xe9")
    result = run_script("train_colorizer.py", "--data", prepared, "--out", os.fsdecode(run), "--dry-run", "--device",
                        "cpu")
    assert os.path.isfile(os.path.join(run, b"loss.png")) and "done" in result.stdout
    no_traceback(result)


def test_another_tools_history_beside_a_checkpoint_is_not_read(prepared, trained, tmp_path):
    run = tmp_path / "colorizer"
    shutil.copytree(trained / "colorizer", run)
    (run / "history.json").write_text(json.dumps({"loss": [0.3, 0.2], "note": "from my notebook"}))
    run_script("evaluate.py", "--data", prepared, "--colorizer", run / "best.pt", "--device", "cpu", "--out",
               tmp_path / "report")
    assert "How each colorizer was trained" in (tmp_path / "report" / "report.md").read_text()


def test_a_left_over_launcher_variable_or_a_missing_compiler_is_one_line(prepared, tmp_path, monkeypatch):
    args = ["train_colorizer.py", "--data", prepared, "--out", tmp_path / "run", "--dry-run", "--device", "cpu"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    one_line_error(run_script(*args, check=False), "WORLD_SIZE=4", "torchrun")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CXX", raising=False)
    one_line_error(run_script(*args, "--compile", check=False), "--compile", "C++ compiler")
    assert not (tmp_path / "run").exists()


def test_a_name_as_long_as_the_file_system_allows_is_colorized(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    long_name = "Фотография_семьи_" * 7 + "x" * 22 + ".png"  # 250 bytes in UTF-8: NAME_compare.png would not fit
    assert len(os.fsencode(long_name)) == 250
    cv2.imwrite(str(folder / "p.png"), synthetic_photo(np.random.default_rng(1), 80))
    os.rename(folder / "p.png", folder / long_name)
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces its own outputs
        result = run_script("colorize.py", *colorize_args(trained, folder, out=out), "--side-by-side")
        assert "1 colorized" in result.stdout
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert len(written) == 2 and all(len(os.fsencode(n)) <= 255 for n in written)
    assert "its name was too long" in result.stderr and not list(out.rglob(f"*{guards.TEMP_TAG}*"))


def test_a_wrong_regressor_is_found_before_any_scoring(prepared, trained, tmp_path):
    result = run_script("evaluate.py", "--data", prepared, "--colorizer", trained / "colorizer" / "best.pt",
                        "--regressor", trained / "colorizer" / "best.pt", "--device", "cpu", "--out",
                        tmp_path / "report", check=False)
    one_line_error(result, "a regressor checkpoint is needed")
    assert not (tmp_path / "report").exists()


def test_evaluate_runs_on_the_readmes_own_layout(prepared, trained, tmp_path):
    result = run_script("evaluate.py", "--data", prepared, "--runs", trained, "--device", "cpu", "--out",
                        tmp_path / "report")
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert "regressor" in metrics and any(name.startswith("colorizer:") for name in metrics["summary"])
    no_traceback(result)


def test_ctrl_c_is_one_line_and_leaves_whole_files(trained, tmp_path):
    folder = write_photos(tmp_path / "in", 150, size=200)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "colorize.py"),
                             *map(str, colorize_args(trained, folder, out=out)), "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            # Ctrl-C's default, also where this runs as a background job (which ignores it)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(out.glob("p0*.png")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: ")
    assert not list(out.rglob(f"*{guards.TEMP_TAG}*"))
    for written in out.glob("p*.png"):
        assert cv2.imread(str(written)) is not None


def test_colorize_runs_where_fcntl_does_not_exist(trained, tmp_path):
    """Windows has no fcntl: the locks fall back to what it has (msvcrt), and where neither imports, to a lock
    file created exclusively."""
    folder = write_photos(tmp_path / "in", 2)
    code = ("import sys, runpy; sys.modules['fcntl'] = None; sys.argv = sys.argv[1:]; sys.path.insert(0, '.');"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    args = [str(ROOT / "colorize.py"), *map(str, colorize_args(trained, folder, out=tmp_path / "out"))]
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0 and "2 colorized" in result.stdout, result.stderr
    assert not (tmp_path / "out" / ".colorized.lock").exists()  # the stand-in lock file goes with its run
    stale = tmp_path / "out" / ".colorized.lock"
    stale.write_text(f"pid {dead_pid()} on {socket.gethostname()}\n")  # a killed run's
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and not stale.exists(), result.stderr


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid

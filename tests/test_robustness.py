"""What users trust the scripts with, under pressure: runs writing into one folder at once (a job array),
folders holding other people's files, numbers that are not numbers, hostile files, a full disk, photos'
orientation, colour profile and metadata, and a job that is interrupted at every start."""
import errno
import gc
import io
import json
import os
import shutil
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

import colorize
import common
import guards
import photos
import prepare_data
from common import torch_load
from photos import read_image
from conftest import ROOT, run_script, synthetic_photo, train_on_a_full_disk
from test_safety import fingerprint, one_line_error, write_photos


def colorize_args(trained, *inputs, out):
    return [*inputs, "--checkpoint", trained / "colorizer" / "best.pt", "--out", out, "--device", "cpu"]


def dead_pid() -> int:
    """The process id of a process that has ended (a killed run's)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------
# 1. any number of colorize runs into one --out keep every output


def test_concurrent_colorize_runs_into_one_folder_keep_every_output(trained, tmp_path):
    # the same names, other photos
    x, y = write_photos(tmp_path / "X", 12, seed=1), write_photos(tmp_path / "Y", 12, seed=2)
    out = tmp_path / "O"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "colorize.py"), *map(str, colorize_args(trained, folder,
                                                                                                   out=out))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for folder in (x, y)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 and "12 colorized" in stdout for p, (stdout, _) in zip(procs, results)), results
    written = json.loads((out / ".colorized.json").read_text())["written"]
    images = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    assert len(images) == 24 and sorted(written) == images  # every output kept, and recorded
    # each output is the colour of the input the record names (a photo's L survives colorization)
    for name, source in written.items():
        source_l = cv2.cvtColor(cv2.imread(source), cv2.COLOR_BGR2Lab)[..., 0].astype(int)
        assert np.abs(cv2.cvtColor(cv2.imread(str(out / name)), cv2.COLOR_BGR2Lab)[..., 0] - source_l).mean() < 3
    assert {os.path.dirname(s) for s in written.values()} == {str(x), str(y)}

    # run after run: the same input replaces its own output; another input with that name takes a new one
    before = fingerprint(out)
    own = next(name for name, source in written.items() if source == str(x / "p00.png"))  # p00 or p00-2: who won
    result = run_script("colorize.py", *colorize_args(trained, x / "p00.png", out=out))
    assert fingerprint(out).keys() == before.keys()  # its own output replaced, whatever its name
    assert own == "p00.png" or f"-> {out / own}" in result.stderr
    z = write_photos(tmp_path / "Z", 1, seed=3)
    result = run_script("colorize.py", *colorize_args(trained, z / "p00.png", out=out))
    assert f"{z / 'p00.png'} -> {out / 'p00-3.png'} (its name was taken)" in result.stderr
    after = fingerprint(out)
    assert after.keys() == before.keys() | {"p00-3.png"}
    assert all(after[name] == before[name] for name in before if name not in (".colorized.json", own))


# ---------------------------------------------------------------------------------------------
# 2. every script writes only where it may


def test_evaluate_and_the_trainers_refuse_a_folder_of_someone_elses_files(prepared, trained, tmp_path):
    theirs = tmp_path / "D"
    theirs.mkdir()
    for name in ("report.md", "metrics.json", "history.json", "loss.png"):
        (theirs / name).write_text("the user's notes")
    before = fingerprint(theirs)
    evaluate = ["evaluate.py", "--data", prepared, "--colorizer", trained / "colorizer" / "best.pt", "--device", "cpu"]
    one_line_error(run_script(*evaluate, "--out", theirs, check=False), theirs, "not written by evaluate.py")
    for script in ("train_colorizer.py", "train_regressor.py"):
        result = run_script(script, "--data", prepared, "--out", theirs, "--dry-run", "--device", "cpu", check=False)
        one_line_error(result, theirs, f"not written by {script}")
    assert fingerprint(theirs) == before and sorted(p.name for p in theirs.iterdir()) == sorted(before)

    # each script's own folder is its own: reused by it, refused to the others
    report = tmp_path / "report"
    run_script(*evaluate, "--out", report)
    run_script(*evaluate, "--out", report)
    result = run_script("train_colorizer.py", "--data", prepared, "--out", report, "--dry-run", "--device", "cpu",
                        check=False)
    one_line_error(result, report, "written by evaluate.py")
    one_line_error(run_script(*evaluate, "--out", trained / "colorizer", check=False), "written by train_colorizer.py")

    # a run folder from before the scripts marked their folders still resumes
    legacy = tmp_path / "legacy"
    shutil.copytree(trained / "colorizer", legacy)
    (legacy / guards.OWNER_FILE).unlink()
    result = run_script("train_colorizer.py", "--data", prepared, "--out", legacy, "--epochs", 3, "--batch-size", 16,
                        "--device", "cpu")
    assert "resuming" in result.stdout


# ---------------------------------------------------------------------------------------------
# 3. no non-finite number passes silently


@pytest.mark.parametrize("split, value", [("train", np.nan), ("val", np.inf)])
def test_a_prepared_split_holding_nan_or_inf_is_named(prepared, tmp_path, split, value):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    lab = np.load(data / f"{split}_lab.npy", mmap_mode="r+")
    lab[1, 0, 5, 5] = value
    lab.flush()
    del lab
    result = run_script("train_colorizer.py", "--data", data, "--out", tmp_path / "run", "--epochs", 2,
                        "--batch-size", 16, "--device", "cpu", check=False)
    one_line_error(result, data / f"{split}_lab.npy", "row 1", "not finite", "prepare the data again")
    assert not (tmp_path / "run" / "best.pt").exists()


def test_a_diverging_run_stops_at_once_and_keeps_its_last_good_checkpoint(prepared, tmp_path):
    run = tmp_path / "run"
    args = ["--data", prepared, "--out", run, "--batch-size", 16, "--device", "cpu"]
    run_script("train_colorizer.py", *args, "--epochs", 1, "--patience", 0)
    good = {name: (run / name).read_bytes() for name in ("best.pt", "last.pt", "history.json")}
    # the same run, resumed with an absurd learning rate (an operational flag here: the run is resumed)
    last = torch_load(run / "last.pt")
    last["optimizer"]["param_groups"][0]["lr"] = 1e30
    torch.save(last, run / "last.pt")
    good["last.pt"] = (run / "last.pt").read_bytes()
    result = run_script("train_colorizer.py", *args, "--epochs", 3, "--patience", 0, check=False)
    one_line_error(result, "training loss is not a finite number", "epoch 2, by batch", "lower --lr")
    assert {name: (run / name).read_bytes() for name in good} == good


def test_a_checkpoint_with_non_finite_weights_is_refused(prepared, trained, tmp_path):
    ckpt = torch_load(trained / "colorizer" / "best.pt")
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(ckpt, path)
    photo = write_photos(tmp_path / "in", 1)
    one_line_error(run_script("colorize.py", photo, "--checkpoint", path, "--out", tmp_path / "c", "--device", "cpu",
                              check=False), path, "not finite")
    one_line_error(run_script("evaluate.py", "--data", prepared, "--colorizer", path, "--out", tmp_path / "r",
                              "--device", "cpu", check=False), path, "not finite")
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()


def test_colorize_never_writes_an_image_computed_from_nan(trained, tmp_path, monkeypatch):
    folder = write_photos(tmp_path / "in", 2)
    monkeypatch.setattr(colorize.Colorizer, "predict_ab", lambda self, L: np.full((*L.shape, 2), np.nan, np.float32))
    monkeypatch.setattr(sys, "argv", ["colorize.py", *map(str, colorize_args(trained, folder, out=tmp_path / "o"))])
    with pytest.raises(SystemExit) as exit_:
        colorize.main()
    assert exit_.value.code == 1 and not list((tmp_path / "o").glob("*.png"))


# ---------------------------------------------------------------------------------------------
# 4. a colorizer carries its regressor


def test_a_conditioned_colorizer_carries_its_regressor(prepared, trained, tmp_path):
    folder_a = tmp_path / "A"
    shutil.copytree(trained / "regressor", folder_a / "reg")
    subprocess.run([sys.executable, str(ROOT / "train_colorizer.py"), "--data", str(prepared), "--out", "col",
                    "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--regressor", "reg/best.pt"],
                   cwd=folder_a, check=True, capture_output=True)
    photo = write_photos(tmp_path / "in", 1)
    args = [sys.executable, str(ROOT / "colorize.py"), str(photo), "--checkpoint", str(folder_a / "col" / "best.pt"),
            "--device", "cpu"]
    subprocess.run([*args, "--out", str(tmp_path / "before")], check=True, capture_output=True)
    # from another folder, which holds a regressor of the same name, after the original was retrained in place
    folder_b = tmp_path / "B"
    shutil.copytree(trained / "regressor", folder_b / "reg")
    regressor = torch_load(folder_b / "reg" / "best.pt")
    regressor["model"] = {k: v + 0.5 if v.is_floating_point() else v for k, v in regressor["model"].items()}
    torch.save(regressor, folder_b / "reg" / "best.pt")
    shutil.copy(folder_b / "reg" / "best.pt", folder_a / "reg" / "best.pt")
    subprocess.run([*args, "--out", str(tmp_path / "after")], cwd=folder_b, check=True, capture_output=True)
    assert (tmp_path / "before" / "p00.png").read_bytes() == (tmp_path / "after" / "p00.png").read_bytes()
    # and an unconditioned colorizer given a regressor says so, before creating --out
    result = run_script("colorize.py", *colorize_args(trained, photo, out=tmp_path / "x"), "--regressor",
                        trained / "regressor" / "best.pt", check=False)
    one_line_error(result, "trained without a regressor")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# 5. one file never stops, hangs or crashes a run


def test_pipes_and_thin_strips_neither_hang_nor_stop_a_run(trained, tmp_path):
    folder = write_photos(tmp_path / "mixed", 12, size=96)
    os.mkfifo(folder / "pipe.jpg")
    strip = synthetic_photo(np.random.default_rng(4), 96)[:2].repeat(100, 1)  # 2 x 9600
    cv2.imwrite(str(folder / "p05_strip.png"), strip)
    cv2.imwrite(str(folder / "p05_tall.png"), np.ascontiguousarray(synthetic_photo(np.random.default_rng(5), 96)[:, :3]
                                                                 .repeat(40, 0)))
    result = run_script("colorize.py", *colorize_args(trained, folder, out=tmp_path / "o"), check=False, timeout=120)
    assert result.returncode == 1 and "14 colorized" in result.stdout, result.stderr
    assert result.stderr.count(f"failed {folder / 'pipe.jpg'}: a named pipe") == 1
    strip = cv2.imread(str(tmp_path / "o" / "p05_strip.png"))
    assert strip.shape == (2, 9600, 3)
    result = run_script("prepare_data.py", "--source", folder, "--out", tmp_path / "prepared", "--size", 32,
                        "--augment-factor", 10, timeout=120)
    assert result.stderr.count(f"skipped {folder / 'pipe.jpg'}: a named pipe") == 1


def test_a_photo_too_large_for_the_memory_left_is_skipped_before_decoding(trained, tmp_path, monkeypatch):
    folder = write_photos(tmp_path / "in", 4, size=100)
    cv2.imwrite(str(folder / "p01_large.jpg"), cv2.resize(synthetic_photo(np.random.default_rng(0), 100), (900, 900)))
    decoded = []
    decode = photos._decode
    monkeypatch.setattr(photos, "_decode", lambda data, header: decoded.append(header["size"]) or decode(data, header))
    # 20 MB left: 900 x 900 at colorize's 32 bytes a pixel needs 26 MB; a 100 x 100 photo 0.3 MB
    monkeypatch.setattr(photos, "memory_available", lambda: 2e7)
    monkeypatch.setattr(sys, "argv", ["colorize.py", *map(str, colorize_args(trained, folder, out=tmp_path / "o"))])
    with pytest.raises(SystemExit) as exit_:
        colorize.main()
    assert exit_.value.code == 1 and (900, 900) not in decoded
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == [f"p{i:02d}.png" for i in range(4)]


def test_a_photo_waiting_for_its_batch_holds_four_bytes_a_pixel(trained, tmp_path):
    """The memory README and --max-megapixels state: L is copied out of the Lab image, not a view of it."""
    photo = write_photos(tmp_path / "in", 1, size=300) / "p00.png"
    colorizer = colorize.Colorizer.from_checkpoint(trained / "colorizer" / "best.pt", None, None, torch.device("cpu"))
    item = colorize.load(photo, colorizer)
    assert item["L"].base is None and item["L"].nbytes == 300 * 300 * 4


# ---------------------------------------------------------------------------------------------
# 6. a full disk is a message, not a crash; killed runs' temporary files are removed by the next run


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def run_main(module, monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *map(str, argv)])
    try:
        with pytest.raises(SystemExit) as exit_:
            guards.exit_on_user_error(module.main)
    finally:
        gc.unfreeze()  # a script's run froze the process's objects for good; the tests' process goes on
    return exit_.value.code


def test_prepare_on_a_full_disk_says_so_and_keeps_the_old_set(photo_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "prepared"
    run_script("prepare_data.py", "--source", photo_folder, "--out", out, "--size", 32, "--augment-factor", 2)
    before = fingerprint(out)
    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    code = run_main(prepare_data, monkeypatch, ["--source", photo_folder, "--out", out, "--size", 32,
                                                "--augment-factor", 2, "--seed", 1, "--workers", 0])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and error.startswith(f"error: {tmp_path}: no space left")
    assert fingerprint(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_colorize_on_a_full_disk_says_so_and_leaves_no_temporary_file(trained, tmp_path, monkeypatch, capsys):
    folder = write_photos(tmp_path / "in", 3)
    out = tmp_path / "o"
    run_script("colorize.py", *colorize_args(trained, folder / "p00.png", out=out))
    before = fingerprint(out)
    monkeypatch.setattr(colorize, "encode", lambda *a: b"x" * 10)
    monkeypatch.setattr(os, "replace", full_disk)
    code = run_main(colorize, monkeypatch, colorize_args(trained, folder, out=out))
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and error.startswith(f"error: {out}: no space left")
    assert fingerprint(out) == before and not [p for p in out.iterdir() if guards.TEMP_TAG in p.name]


def test_training_on_a_full_disk_says_so(prepared, tmp_path):
    result = train_on_a_full_disk("def full(*a, **k): raise RuntimeError('[enforce fail] PytorchStreamWriter failed "
                                  "writing file data/0: file write failed')\n", prepared, tmp_path / "run")
    one_line_error(result, tmp_path / "run", "no space left")
    assert not list(tmp_path.rglob(f"*{guards.TEMP_TAG}*"))


def test_the_next_run_removes_temporary_files_a_killed_run_left(trained, prepared, tmp_path):
    host = guards.socket.gethostname()
    out, run = tmp_path / "o", tmp_path / "run"
    leftovers = []
    for folder in (out / "sub", run):
        folder.mkdir(parents=True)
        leftovers.append(folder / f".p00.png.{guards.TEMP_TAG}-{host}-{dead_pid()}-abc123.tmp")
        leftovers[-1].write_bytes(b"\0" * 1000)
    live = out / f".p01.png.{guards.TEMP_TAG}-{host}-{os.getpid()}-abc123.tmp"  # a live run's: kept
    other_host = out / f".p02.png.{guards.TEMP_TAG}-elsewhere-{dead_pid()}-abc123.tmp"  # unknowable: kept
    for path in (live, other_host):
        path.write_bytes(b"\0")
    result = run_script("colorize.py", *colorize_args(trained, write_photos(tmp_path / "in", 1), out=out))
    assert f"removed {leftovers[0]}, left by an interrupted run" in result.stderr
    shutil.copytree(trained / "colorizer", run, dirs_exist_ok=True)
    result = run_script("train_colorizer.py", "--data", prepared, "--out", run, "--epochs", 3, "--batch-size", 16,
                        "--device", "cpu")
    assert f"removed {leftovers[1]}, left by an interrupted run" in result.stderr
    assert not any(p.exists() for p in leftovers) and live.exists() and other_host.exists()


# ---------------------------------------------------------------------------------------------
# 7. photos come out as they went in


def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = orientation, "Test camera"
    return exif.tobytes()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_every_format_is_read_upright(tmp_path, suffix):
    image = synthetic_photo(np.random.default_rng(1), 60)[:40]  # 40 x 60: a quarter turn shows
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}{suffix}"
        Image.fromarray(image).save(path, exif=exif_with(orientation),
                                    **({"quality": 100} if suffix == ".jpg" else {"lossless": True}
                                       if suffix == ".webp" else {}))
        with Image.open(path) as im:
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.float32) / 255
        rgb = read_image(path).rgb
        assert rgb.shape == upright.shape and np.abs(rgb - upright).max() < (0.1 if suffix == ".jpg" else 0.01), \
            (suffix, orientation)


def adobe_rgb_profile() -> bytes:
    """A minimal ICC v2 matrix-shaper profile of Adobe RGB (1998): D50 colorants, gamma 563/256."""
    def xyz(v):
        return b"XYZ " + bytes(4) + b"".join(struct.pack(">i", round(c * 65536)) for c in v)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 563) + bytes(2)
    text = b"Adobe RGB test\0"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(79)),
            (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz((0.60974, 0.31111, 0.01947))),
            (b"gXYZ", xyz((0.20528, 0.62567, 0.06087))), (b"bXYZ", xyz((0.14919, 0.06322, 0.74457))),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text" + bytes(4) + b"none\0")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        body += bytes(-(offset + len(body)) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = struct.pack(">I", offset + len(body)) + b"lcms" + bytes([2, 0x20, 0, 0]) + b"mntrRGB XYZ " + bytes(12) + \
        b"acsp" + bytes(28) + struct.pack(">iii", 63190, 65536, 54061) + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + body


def test_an_embedded_colour_profile_is_converted_to_srgb(tmp_path):
    image = synthetic_photo(np.random.default_rng(2), 64)
    profile = adobe_rgb_profile()
    Image.fromarray(image).save(tmp_path / "adobe.png", icc_profile=profile)
    # the reference: LittleCMS, through Pillow (8 bits out: half a level of rounding)
    transform = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")), "RGB", "RGB")
    reference = np.asarray(ImageCms.applyTransform(Image.fromarray(image), transform), dtype=np.float32) / 255
    rgb = read_image(tmp_path / "adobe.png").rgb
    assert np.abs(rgb - reference).max() < 1 / 255
    assert np.abs(rgb - image / 255).max() > 10 / 255  # the profile mattered
    # sRGB itself, or no profile: the bytes as they are
    Image.fromarray(image).save(tmp_path / "srgb.png",
                                icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    assert np.abs(read_image(tmp_path / "srgb.png").rgb * 255 - image).max() < 1e-3


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_outputs_keep_exif_resolution_and_say_srgb(trained, tmp_path, suffix):
    folder = tmp_path / "in"
    folder.mkdir()
    image = synthetic_photo(np.random.default_rng(3), 90)[:60]
    extra = {} if suffix == ".webp" else {"dpi": (300, 300)}
    Image.fromarray(image).save(folder / f"photo{suffix}", exif=exif_with(6), **extra)
    run_script("colorize.py", *colorize_args(trained, folder, out=tmp_path / "o"))
    with Image.open(tmp_path / "o" / f"photo{suffix}") as out:
        exif = out.getexif()
        assert out.size == (60, 90)  # written upright ...
        assert exif.get(0x0112) == 1 and exif.get(0x010F) == "Test camera"  # ... and saying so
        assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))) \
            .strip().startswith("sRGB")
        if extra:
            assert out.info["dpi"] == pytest.approx((300, 300), abs=0.01)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif", ".bmp"])
def test_samples_are_written_as_they_are(suffix):
    """encode takes (B, G, R) samples as OpenCV holds them; JPEG and WebP are Pillow's at quality 95, pixel for pixel
    (the JPEG OpenCV writes is faster, with the same settings), the rest lossless; transparency kept where it is
    held."""
    rgb = synthetic_photo(np.random.default_rng(5), 96)
    alpha = np.arange(rgb.size // 3, dtype=np.uint8).reshape(rgb.shape[:2])
    for samples in (rgb, np.dstack([rgb, alpha])):
        channels = samples.shape[2] if suffix not in {".jpg", ".bmp"} else 3
        bgr = np.ascontiguousarray(samples[..., :channels][..., [2, 1, 0, 3][:channels]])
        with Image.open(io.BytesIO(photos.encode(bgr, suffix))) as written:
            pixels = np.asarray(written.convert("RGBA" if channels == 4 else "RGB"))
        if suffix in {".jpg", ".webp"}:
            pillow = io.BytesIO()
            Image.fromarray(samples[..., :channels]).save(pillow, format=suffix[1:].replace("jpg", "jpeg"), quality=95)
            samples = np.asarray(Image.open(pillow))
        assert np.array_equal(pixels, samples[..., :channels])


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jp2", ".ppm"])
def test_sixteen_bits_in_sixteen_bits_out(trained, tmp_path, suffix):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / f"deep{suffix}"), synthetic_photo(np.random.default_rng(4), 128).astype(np.uint16) * 257)
    run_script("colorize.py", *colorize_args(trained, folder, out=tmp_path / "o"))
    assert cv2.imread(str(tmp_path / "o" / f"deep{suffix}"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_a_sixteen_bit_png_keeps_its_metadata(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "deep.png"), synthetic_photo(np.random.default_rng(4), 64).astype(np.uint16) * 257)
    png = (folder / "deep.png").read_bytes()
    (folder / "deep.png").write_bytes(photos.with_png_metadata(png, adobe_rgb_profile(), exif_with(1), (300, 300)))
    run_script("colorize.py", *colorize_args(trained, folder, out=tmp_path / "o"))
    with Image.open(tmp_path / "o" / "deep.png") as out:
        assert out.getexif().get(0x010F) == "Test camera" and out.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"])))
    assert cv2.imread(str(tmp_path / "o" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


# ---------------------------------------------------------------------------------------------
# 8. one line, exit status 2, no leftovers


def test_impossible_sizes_and_settings_are_one_line_and_leave_nothing(prepared, trained, tmp_path):
    photo = write_photos(tmp_path / "in", 1)
    one_line_error(run_script("prepare_data.py", "--size", 300000, "--out", tmp_path / "p", check=False), "--size")
    one_line_error(run_script("colorize.py", *colorize_args(trained, photo, out=tmp_path / "c"), "--size", 100000,
                              check=False), "--size")
    ckpt = torch_load(trained / "colorizer" / "best.pt")
    ckpt["run"]["config"]["image_size"] = "big"
    torch.save(ckpt, tmp_path / "big.pt")
    one_line_error(run_script("colorize.py", photo, "--checkpoint", tmp_path / "big.pt", "--out", tmp_path / "c",
                              "--device", "cpu", check=False), "image_size", "'big'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.pt", "in"]


def test_a_script_keeps_what_it_imported_away_from_the_garbage_collector():
    """What a script imported before main (torch: ~180,000 objects) is frozen out of the collector's reach: walking
    it at every full collection and again as the interpreter exited cost 0.4 s of every run."""
    code = "import gc, guards; guards.exit_on_user_error(lambda: print(gc.get_freeze_count()))"
    frozen = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert int(frozen.stdout) > 100_000


def test_a_damaged_statistic_beside_the_data_is_named_and_kept(prepared, trained, tmp_path):
    """The mean-face map evaluate keeps beside the prepared data: a file of that name that is not one is named in
    one line (exit 2) and left as it was, never replaced."""
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    (data / "mean_face_map.npy").write_bytes(b"someone's notes")
    result = run_script("evaluate.py", "--data", data, "--colorizer", trained / "colorizer" / "best.pt",
                        "--out", tmp_path / "report", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "mean_face_map.npy: not the" in result.stderr
    assert (data / "mean_face_map.npy").read_bytes() == b"someone's notes" and not (tmp_path / "report").exists()


def test_a_read_only_prepared_set_trains_the_classifier(prepared, tmp_path, monkeypatch):
    import train_colorizer

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    (data / "ab_prior.npy").unlink(missing_ok=True)

    def read_only(path, write):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(common, "atomic_write", read_only)
    prior = train_colorizer.load_ab_prior(data, common.ab_bins())
    assert prior.shape == (len(common.ab_bins()),) and torch.isclose(prior.sum(), torch.tensor(1.0))
    assert not (data / "ab_prior.npy").exists()


# ---------------------------------------------------------------------------------------------
# 10. requeue is bounded


@pytest.mark.parametrize("restarts, requeued", [(0, True), (2, True), (3, False)])
def test_a_job_interrupted_at_every_start_is_requeued_at_most_max_requeues_times(tmp_path, restarts, requeued):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (fake_bin / "scontrol").chmod(0o755)
    script = "source slurm/env.sh >/dev/null; run_resumable bash -c 'exit 3'"
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "PROJECT_DIR": str(ROOT), "SLURM_JOB_ID": "42",
           "SLURM_RESTART_COUNT": str(restarts), "CONDA_ENV": "no-such-environment"}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    log = tmp_path / "scontrol.log"
    if requeued:
        assert result.returncode == 3 and log.read_text() == "requeue 42\n"
        assert f"requeue {restarts + 1} of 3" in result.stdout
    else:
        assert result.returncode == 1 and not log.exists()
        assert "after 3 requeues (MAX_REQUEUES=3)" in result.stderr and "resubmit" in result.stderr

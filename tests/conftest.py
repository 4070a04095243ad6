"""Shared fixtures. The real faces are read from $FACES_DIR (default ../shared/data/face_images
beside the project); tests that need them skip, saying so, when they are absent."""
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import script_runner

ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = Path(os.environ.get("FACES_DIR", ROOT.parent / "shared" / "data" / "face_images"))


@pytest.fixture(autouse=True)
def seeded_random():
    """Every test draws the same random numbers on every run and machine (a flaky test is a failing test)."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def run_script(script, *args, check=True, timeout=600):
    """Run one of the project's scripts as a user would, in a process of its own (forked from one that has
    imported torch already: script_runner); returns the CompletedProcess."""
    result = script_runner.run(str(ROOT / script), list(map(str, args)), dict(os.environ), str(ROOT), timeout)
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


def broken_files_folder(root):
    """A folder of the files people really have: 9 kinds that decode (16-bit, RGBA, CMYK, palette,
    animated GIF, EXIF-rotated, wrong extension, a non-UTF-8 name, a link) beside 12 plain photos,
    and 13 kinds that do not or cannot be used. -> (good names, bad names, grayscale names): the
    grayscale ones colorize.py colours and prepare_data.py skips (no colour to learn from)."""
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(5)
    photo = lambda: synthetic_photo(rng, 96)  # noqa: E731  (RGB)
    good = []
    for i in range(12):
        cv2.imwrite(str(root / f"plain{i:02d}.jpg"), photo()[..., ::-1])
        good.append(f"plain{i:02d}.jpg")
    kinds = {
        "sixteen.png": lambda p: cv2.imwrite(str(p), photo()[..., ::-1].astype(np.uint16) * 257),
        "rgba.png": lambda p: cv2.imwrite(str(p), np.dstack([photo()[..., ::-1], np.full((96, 96), 200, np.uint8)])),
        "cmyk.jpg": lambda p: Image.fromarray(photo()).convert("CMYK").save(p),
        "palette.png": lambda p: Image.fromarray(photo()).convert("P").save(p),
        "animated.gif": lambda p: Image.fromarray(photo()).save(p, save_all=True, duration=100,
                                                                 append_images=[Image.fromarray(photo())]),
        "rotated.jpg": lambda p: Image.fromarray(photo()).save(p, exif=_rotated_exif()),
        "png_named.jpg": lambda p: p.write_bytes(cv2.imencode(".png", photo())[1].tobytes()),
        "caf\udce9.png": lambda p: p.write_bytes(cv2.imencode(".png", photo())[1].tobytes()),  # name not UTF-8
    }
    for name, make in kinds.items():
        make(root / name)
        good.append(name)
    (root / "link.jpg").symlink_to("plain00.jpg")
    good.append("link.jpg")
    gray = ["gray.png", "gray16.png"]
    cv2.imwrite(str(root / "gray.png"), cv2.cvtColor(photo(), cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(root / "gray16.png"), cv2.cvtColor(photo(), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    whole = (root / "plain00.jpg").read_bytes()
    png = cv2.imencode(".png", photo())[1].tobytes()
    bad = {
        "truncated.jpg": whole[: len(whole) // 2],
        "empty.png": b"",
        "text.jpg": b"not an image at all",
        "tiny.png": cv2.imencode(".png", photo()[:1, :1])[1].tobytes(),
        "bad_crc.png": png[:60] + bytes(b ^ 0xFF for b in png[60:90]) + png[90:],
        "jpeg_junk.jpg": b"\xff\xd8" + bytes(rng.integers(0, 256, 3000, dtype=np.uint8)) + b"\xff\xd9",
        # a 40000 x 40000 PNG header over a few bytes: refused from the header, never decoded
        "huge.png": _png_header(40000, 40000),
        "huge.bmp": b"BM" + (54).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little") +
                    (40).to_bytes(4, "little") + (100000).to_bytes(4, "little") + (100000).to_bytes(4, "little") +
                    (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + bytes(24),
        "random.webp": bytes(rng.integers(0, 256, 500, dtype=np.uint8)),
    }
    for name, content in bad.items():
        (root / name).write_bytes(content)
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "dangling.png").symlink_to("nowhere.png")
    (root / "folder.jpg").mkdir()
    (root / "notes.txt").write_text("not an image: ignored by prepare_data.py, named by colorize.py")
    return good, [*bad, "loop.jpg", "dangling.png", "folder.jpg"], gray


def _rotated_exif():
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated a quarter turn
    return exif.tobytes()


def _png_header(width, height):
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def interrupt_and_resume(args, root, sig):
    """The training command args (without --out) run straight into root/straight, and into
    root/interrupted with sig sent once its first epoch is recorded, then again there to resume.
    -> (straight folder, interrupted folder, iteration it stopped at, the resumed CompletedProcess)."""
    from common import torch_load
    from training import RESUMABLE_EXIT

    run_script(*args, "--out", root / "straight")
    run = root / "interrupted"
    proc = subprocess.Popen([sys.executable, *map(str, args), "--out", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (run / "history.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == RESUMABLE_EXIT and "run the same command to resume" in output, output
    stopped = torch_load(run / "last.pt")["trainer"]["iteration"]
    resumed = run_script(*args, "--out", run, check=False)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr
    return root / "straight", run, stopped, resumed


def torchrun_training(processes, data, out, backend):
    """train_colorizer.py in `processes` processes under torchrun, 2 epochs; -> the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           str(ROOT / "train_colorizer.py"), "--data", str(data), "--out", str(out), "--epochs", "2",
                           "--batch-size", "16", "--backend", backend],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def train_on_a_full_disk(save: str, data, out) -> subprocess.CompletedProcess:
    """train_colorizer.py --dry-run in a process whose torch.save runs save (Python lines defining full(), which
    raises as torch.save does on a full disk) and whose disk reports no free space."""
    code = ("import sys, torch, guards, train_colorizer\n" + save +
            "torch.save = full\n"
            "guards.shutil.disk_usage = lambda path: guards.shutil._ntuple_diskusage(10**9, 10**9, 0)\n"
            "sys.argv = ['train_colorizer.py'] + sys.argv[1:]\n"
            "guards.exit_on_user_error(train_colorizer.main)\n")
    return subprocess.run([sys.executable, "-c", code, "--data", str(data), "--out", str(out), "--dry-run",
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)

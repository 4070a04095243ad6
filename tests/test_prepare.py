"""prepare_data.py: counts, split, augmentation, determinism, the demo set and bad input."""
import hashlib
import json

import numpy as np
import pytest
import torch

from common import images_to_lab01
from conftest import broken_files_folder, run_script


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_counts_split_and_layout(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    c = manifest["counts"]
    assert (c["train"], c["val"], c["test"], c["train_augmented"]) == (36, 2, 2, 108)
    train, val, test = (np.load(prepared / f"{s}.npy", mmap_mode="r") for s in ("train", "val", "test"))
    assert train.shape == (108, 64, 64, 3) and train.dtype == np.uint8
    assert val.shape == (2, 64, 64, 3) and test.shape == (2, 64, 64, 3)
    files = {s: {r["file"] for r in manifest["files"][s]} for s in ("train", "val", "test")}
    assert files["train"].isdisjoint(files["val"] | files["test"]) and files["val"].isdisjoint(files["test"])
    assert len(files["train"] | files["val"] | files["test"]) == 40
    # augmented copies differ from their original, which comes first in its group
    assert all(not np.array_equal(train[i * 3], train[i * 3 + k]) for i in range(36) for k in (1, 2))


def test_lab_arrays_are_the_images_converted(prepared):
    """{split}_lab.npy is what training reads: the uint8 images in Lab01, float16, channels first."""
    for split in ("train", "val", "test"):
        images = np.load(prepared / f"{split}.npy")
        lab = np.load(prepared / f"{split}_lab.npy")
        assert lab.dtype == np.float16 and lab.shape == (len(images), 3, *images.shape[1:3])
        exact = images_to_lab01(torch.from_numpy(images)).numpy()
        # float16 rounds values in [0.5, 1) to steps of 2^-11: at most half a step off
        np.testing.assert_allclose(lab.astype(np.float32), exact, rtol=0, atol=2 ** -12 + 1e-6)


def test_data_from_an_older_version_is_one_clear_line(prepared, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((prepared / "manifest.json").read_text())
    del manifest["format"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for split in ("train", "val", "test"):
        (old / f"{split}.npy").write_bytes((prepared / f"{split}.npy").read_bytes())
    result = run_script("train_colorizer.py", "--data", old, "--out", tmp_path / "run", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {old / 'manifest.json'}: prepared by an older version of "
                                     f"prepare_data.py (no Lab arrays); run prepare_data.py again with --out {old}")


def test_same_seed_same_bytes_other_seed_other_split(photo_folder, tmp_path):
    """Same bytes also with another number of worker processes: each variant is seeded by itself."""
    args = ["--source", photo_folder, "--size", 64, "--augment-factor", 2]
    run_script("prepare_data.py", *args, "--out", tmp_path / "a", "--workers", 2)
    run_script("prepare_data.py", *args, "--out", tmp_path / "b", "--workers", 0)
    run_script("prepare_data.py", *args, "--out", tmp_path / "c", "--seed", 1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["test.npy"] != digest(tmp_path / "c")["test.npy"]


def test_worker_processes_change_the_speed_not_the_bytes(tmp_path):
    """Decoding runs in worker processes: with files that fail, are skipped or are odd, the set, the
    manifest and the lines naming the skipped files are the same for any --workers."""
    good, bad, gray = broken_files_folder(tmp_path / "src")
    results = {}
    for workers in (0, 3):
        result = run_script("prepare_data.py", "--source", tmp_path / "src", "--out", tmp_path / f"w{workers}",
                            "--size", 32, "--workers", workers)
        manifest = json.loads((tmp_path / f"w{workers}" / "manifest.json").read_text())
        skipped_lines = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
        results[workers] = (digest(tmp_path / f"w{workers}"), skipped_lines)
        assert manifest["counts"]["skipped"] == len(skipped_lines) == len(bad) + len(gray)
        assert "GB written" in result.stdout
    assert results[0] == results[3]


def test_face_counts(faces_dir, tmp_path):
    run_script("prepare_data.py", "--source", faces_dir, "--out", tmp_path / "faces")
    c = json.loads((tmp_path / "faces" / "manifest.json").read_text())["counts"]
    assert (c["train"], c["train_augmented"], c["val"], c["test"]) == (675, 6750, 38, 37)


@pytest.mark.parametrize("flags, counts", [
    ((), (45, 3, 2)),  # the default: 10% of the 50 people held out, halved (the larger half validates)
    (("--held-out", 0.3, "--val-share", 0.33), (35, 5, 10)),  # the study's unseen-people split
])
def test_split_by_person_keeps_people_apart(faces_dir, tmp_path, flags, counts):
    run_script("prepare_data.py", "--source", faces_dir, "--out", tmp_path / "p", "--split-by", "person",
               "--augment-factor", 1, *flags)
    files = json.loads((tmp_path / "p" / "manifest.json").read_text())["files"]
    people = {s: {r["person"] for r in files[s]} for s in files}
    assert people["train"].isdisjoint(people["test"]) and people["train"].isdisjoint(people["val"])
    assert people["val"].isdisjoint(people["test"])
    assert (len(people["train"]), len(people["val"]), len(people["test"])) == counts
    assert {s: len(files[s]) for s in files} == {"train": 15 * counts[0], "val": 15 * counts[1],
                                                "test": 15 * counts[2]}


def test_demo_set_when_no_dataset(tmp_path):
    result = run_script("prepare_data.py", "--demo", "--out", tmp_path / "demo", "--augment-factor", 2)
    assert "DEMO" in result.stdout
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert manifest["demo"] and manifest["counts"]["train"] > 100 and manifest["counts"]["test"] > 5


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such folder"),
    (lambda p: p.mkdir(), "no image files found"),
    (lambda p: (p.mkdir(), (p / "x.png").write_text("junk")), "none of the 1 image files could be used"),
])
def test_unusable_source_is_one_clear_line(tmp_path, setup, message):
    src = tmp_path / "src"
    setup(src)
    result = run_script("prepare_data.py", "--source", src, "--out", tmp_path / "out", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {src}")
    assert message in result.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_bad_flag_value_is_rejected(tmp_path):
    result = run_script("prepare_data.py", "--augment-factor", "0", "--out", tmp_path / "o", check=False)
    assert result.returncode == 2 and "--augment-factor" in result.stderr


def test_a_large_set_route_at_256_pixels_end_to_end(tmp_path):
    """The route for large sets (no fixed copies: --augment-factor 1, then --augment while training) at
    --size 256: prepare, both trainers, evaluate and colorize."""
    import cv2

    from conftest import synthetic_photo

    rng = np.random.default_rng(5)
    (tmp_path / "photos").mkdir()
    for i in range(80):
        cv2.imwrite(str(tmp_path / "photos" / f"{i:02d}.jpg"), synthetic_photo(rng, size=260))
    data, runs = tmp_path / "data", tmp_path / "runs"
    result = run_script("prepare_data.py", "--source", tmp_path / "photos", "--out", data, "--size", 256,
                        "--augment-factor", 1)
    assert "0.05 GB written" in result.stdout  # 80 photos x 256 x 256 x 3 x (1 byte uint8 + 2 bytes float16 Lab)
    common = ["--data", data, "--epochs", 1, "--epoch-length", 2, "--batch-size", 8, "--device", "cpu", "--augment"]
    run_script("train_regressor.py", *common, "--out", runs / "regressor")
    run_script("train_colorizer.py", *common, "--out", runs / "colorizer", "--regressor",
               runs / "regressor" / "best.pt")
    run_script("evaluate.py", "--data", data, "--colorizer", runs / "colorizer" / "best.pt", "--regressor",
               runs / "regressor" / "best.pt", "--out", tmp_path / "report", "--device", "cpu")
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n_images"] == 4
    run_script("colorize.py", tmp_path / "photos" / "00.jpg", "--checkpoint", runs / "colorizer" / "best.pt",
               "--out", tmp_path / "colorized", "--device", "cpu")
    assert cv2.imread(str(tmp_path / "colorized" / "00.jpg")).shape == (260, 260, 3)

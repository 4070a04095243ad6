"""Lab conversion on tensors agrees with scikit-image, batched, and the [0,1] scaling round-trips."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import color, data

from common import (lab01_to_lab, images_to_lab01, lab01_batches, lab01_to_rgb, lab_to_rgb, lab_to_lab01,
                    read_image, rgb_to_lab)


def to_chw(image):
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def test_rgb_to_lab_matches_skimage_on_random_pixels():
    rgb = np.random.default_rng(0).uniform(0, 1, (64, 64, 3))
    ours = rgb_to_lab(to_chw(rgb)).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(ours, color.rgb2lab(rgb), atol=1e-6)


def test_rgb_to_lab_matches_skimage_on_a_photo():
    rgb = data.astronaut() / 255.0
    ours = rgb_to_lab(to_chw(rgb)).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(ours, color.rgb2lab(rgb), atol=1e-6)


def test_lab_to_rgb_matches_skimage_including_out_of_gamut():
    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(0, 100, (32, 32)), rng.uniform(-100, 100, (32, 32)),
                    rng.uniform(-100, 100, (32, 32))], axis=2)
    with pytest.warns(UserWarning):  # skimage warns about the negative Z values it clips
        expected = color.lab2rgb(lab)
    np.testing.assert_allclose(lab_to_rgb(to_chw(lab)).numpy().transpose(1, 2, 0), expected, atol=1e-6)


def test_round_trip_batched_float32():
    rgb = torch.rand(5, 3, 16, 16)
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)


def test_real_faces_agree_with_skimage(faces_dir):
    paths = sorted(faces_dir.glob("*.jpg"))[:8]
    rgb = np.stack([read_image(p).rgb for p in paths]).astype(np.float64)
    ours = rgb_to_lab(torch.from_numpy(rgb.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, color.rgb2lab(rgb), atol=1e-6)


def test_normalization_convention():
    lab = torch.tensor([100.0, -128.0, 127.0]).view(3, 1, 1)
    np.testing.assert_allclose(lab_to_lab01(lab).flatten(), [1.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(lab01_to_lab(lab_to_lab01(lab)), lab, atol=1e-5)


def test_stored_batches_convert_like_skimage():
    images = torch.from_numpy(data.astronaut()[None, ::4, ::4].copy())
    lab = color.rgb2lab(images[0].numpy() / 255.0)
    expected = np.stack([lab[..., 0] / 100, (lab[..., 1] + 128) / 255, (lab[..., 2] + 128) / 255])
    np.testing.assert_allclose(images_to_lab01(images)[0].numpy(), expected, atol=1e-5)


def test_uint8_batches_convert_to_unit_range():
    images = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    lab01 = images_to_lab01(images)
    assert lab01.shape == (4, 3, 8, 8)
    assert lab01.min() >= 0 and lab01.max() <= 1
    np.testing.assert_allclose(lab01_to_rgb(lab01).permute(0, 2, 3, 1) * 255, images.float(), atol=0.05)


def resident_file_mib() -> float:
    """This process's resident pages that map files (the memory maps' pages among them), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"RssFile:\s+(\d+)", status).group(1)) / 1024


@pytest.mark.parametrize("step", [1, 3], ids=["whole", "strided view"])
def test_lab_batches_of_a_memory_map_keep_its_pages_released(tmp_path, step):
    """evaluate reads the training and test images through lab01_batches: its memory must not grow with the
    file (before the pages were released, evaluate on 100,000 photos took twice the memory of 10,000)."""
    path = tmp_path / "train.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(4000, 64, 64, 3))  # 47 MiB a copy
    for i in range(0, len(images), 500):
        images[i:i + 500] = np.random.default_rng(i).integers(0, 256, (500, 64, 64, 3), dtype=np.uint8)
    images.flush()
    del images
    mapped = np.load(path, mmap_mode="r")[::step]
    next(lab01_batches(np.array(mapped[:128]), 128))  # the library code a first conversion pages in is not the file
    before = resident_file_mib()
    assert sum(len(lab01) for lab01 in lab01_batches(mapped, 128)) == len(mapped)
    assert resident_file_mib() - before < 16

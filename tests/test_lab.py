"""Lab conversion on tensors agrees with scikit-image, batched, and the [0,1] scaling round-trips."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import color, data

import photos
from common import images_to_lab01, lab01_batches, lab01_to_lab, lab01_to_rgb, lab_to_lab01, lab_to_rgb, rgb_to_lab
from photos import lab_to_samples, lightness_of_rgb, lightness_of_samples, read_image, read_lightness


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


# ---------------------------------------------------------------------------------------------
# Whole photos (colorize.py): the same conversion, a strip at a time, from and to a file's own samples


@pytest.fixture(params=[7, 4096], ids=["narrow strips", "one strip"])
def strip_pixels(request, monkeypatch):
    """Strips of a few rows, and the whole test image in one: the result must not depend on where strips end."""
    monkeypatch.setattr(photos, "STRIP_PIXELS", request.param * 100)


@pytest.mark.parametrize("layout", ["BGR", "BGRA", "gray", "gray and alpha", "BGR, gray", "BGR, gray above"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_the_lightness_of_a_photos_samples_is_skimages(layout, dtype, strip_pixels):
    """Every layout; black and white stored as BGR (read through a table of L*), wholly or in the rows above a
    colour part (a border): L* is scikit-image's wherever strips end."""
    top = np.iinfo(dtype).max
    rgb = np.random.default_rng(2).integers(0, top + 1, (37, 100, 3)).astype(dtype)
    gray_rows = slice(20) if layout.endswith("above") else slice(None)
    if "gray" in layout:
        rgb[gray_rows] = rgb[gray_rows, :, :1]
    samples = {"BGRA": np.dstack([rgb[..., ::-1], rgb[..., :1]]), "gray": rgb[..., 0],
               "gray and alpha": np.dstack([rgb[..., 0], rgb[..., 1]])}.get(layout, rgb[..., ::-1])
    expected = color.rgb2lab(rgb / top)[..., 0]
    np.testing.assert_allclose(lightness_of_samples(np.ascontiguousarray(samples)), expected, atol=2e-4)
    np.testing.assert_allclose(lightness_of_samples(samples[::-1, ::-1]), expected[::-1, ::-1], atol=2e-4)  # views
    np.testing.assert_allclose(lightness_of_rgb((rgb / top).astype(np.float32)), expected, atol=2e-4)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_photo_samples_from_lab_are_skimages_rounded(dtype, strip_pixels):
    """The stated tolerance: float32 arithmetic, not scikit-image's float64, may round a sample the other way
    where the exact value lies within a hair of half a step: a step at most, in a few pixels in ten thousand
    (8 bits) or a hundred (16 bits); out-of-gamut colours clipped as scikit-image clips them."""
    rng = np.random.default_rng(3)
    lab = np.dstack([rng.uniform(0, 100, (40, 100)), rng.uniform(-100, 100, (40, 100, 2))])
    with pytest.warns(UserWarning):  # the negative Z values it clips
        expected = np.rint(color.lab2rgb(lab) * np.iinfo(dtype).max)
    ours = lab_to_samples(lab[..., 0].astype(np.float32), lab[..., 1:].astype(np.float32), dtype)
    assert ours.dtype == dtype and ours.shape == (40, 100, 3)
    off = np.abs(ours.astype(int) - expected)
    assert off.max() <= 1 and (off > 0).mean() < (1e-3 if dtype == np.uint8 else 2e-2)
    bgr = lab_to_samples(lab[..., 0].astype(np.float32), lab[..., 1:].astype(np.float32), dtype, bgr=True)
    assert np.array_equal(bgr, ours[..., ::-1])  # OpenCV's order, as colorize.py writes files
    gray = lab_to_samples(lab[..., 0].astype(np.float32), None, dtype)
    assert np.abs(gray.astype(int) - np.rint(color.lab2rgb(lab * [1, 0, 0]) * np.iinfo(dtype).max)).max() <= 1


def test_a_photo_read_for_its_lightness_is_read_image_s_photo(tmp_path):
    """colorize.py reads L from the file's samples; everything else reads float RGB: the same L, the same rest."""
    import cv2

    photo = data.astronaut()
    cv2.imwrite(str(tmp_path / "a.png"), np.dstack([photo[..., ::-1], photo[..., 0]]).astype(np.uint16) * 257)
    whole, lightness = read_image(tmp_path / "a.png"), read_lightness(tmp_path / "a.png")
    np.testing.assert_allclose(lightness.L, color.rgb2lab(whole.rgb.astype(np.float64))[..., 0], atol=2e-4)
    assert lightness.bits == whole.bits == 16 and np.array_equal(lightness.alpha, whole.alpha)

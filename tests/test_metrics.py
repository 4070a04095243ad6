"""evaluate.py's per-image scores, computed for whole batches, against the references they stand for:
ignite's PSNR and SSIM one image at a time (as evaluate computed them before), scikit-image's CIEDE2000,
on real faces (the studio faces when present, scikit-image's sample photos otherwise) with real errors."""
import numpy as np
import pytest
import torch
from ignite.metrics import PSNR, SSIM
from skimage import data
from skimage.color import deltaE_ciede2000

from common import center_square, images_to_lab01, lab01_to_lab, lab01_to_rgb, prepare_photo
from conftest import FACES_DIR
from evaluate import ciede2000_per_image, psnr_per_image, ssim_per_image


@pytest.fixture(scope="module")
def truth_and_guesses():
    """Lab01 of 12 photos at 64 x 64, and two guesses at their colour: a blurred copy of their ab (errors like a
    network's), and a flat gray (a = b = 0 everywhere: CIEDE2000's zero-chroma branch, flat regions for SSIM)."""
    faces = sorted(FACES_DIR.glob("*.jpg"))[:12]
    if faces:
        images = np.stack([prepare_photo(f, 64) for f in faces])
    else:
        samples = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()] * 3
        images = np.stack([center_square(s, 64) for s in samples])
    truth = images_to_lab01(torch.from_numpy(images))
    blurred = truth.clone()
    blurred[:, 1:] = torch.nn.functional.avg_pool2d(truth[:, 1:], 9, stride=1, padding=4, count_include_pad=False)
    gray = truth.clone()
    gray[:, 1:] = 128 / 255
    return truth, [blurred, gray]


def test_psnr_and_ssim_are_ignites_per_image(truth_and_guesses):
    truth, guesses = truth_and_guesses
    true_rgb = lab01_to_rgb(truth)
    for guess in guesses:
        pred_rgb = lab01_to_rgb(guess)
        expected = {"psnr": [], "ssim": []}
        for p, t in zip(pred_rgb, true_rgb):
            for metric, key in ((PSNR(data_range=1.0), "psnr"), (SSIM(data_range=1.0), "ssim")):
                metric.update((p[None], t[None]))
                expected[key].append(metric.compute())
        np.testing.assert_allclose(psnr_per_image(pred_rgb, true_rgb).numpy(), expected["psnr"], rtol=1e-12)
        assert ssim_per_image(pred_rgb, true_rgb).tolist() == expected["ssim"]  # the same operations: equal


def test_ciede2000_is_scikit_images(truth_and_guesses):
    truth, guesses = truth_and_guesses
    true_lab = lab01_to_lab(truth)
    for guess in guesses:
        pred_lab = lab01_to_lab(guess)
        expected = deltaE_ciede2000(true_lab.permute(0, 2, 3, 1).numpy(), pred_lab.permute(0, 2, 3, 1).numpy(),
                                    channel_axis=-1).mean(axis=(1, 2))
        assert (expected > 0.5).all()  # real colour differences, not zeros compared with zeros
        np.testing.assert_allclose(ciede2000_per_image(true_lab, pred_lab).numpy(), expected, rtol=1e-6)

"""evaluate.py's per-image scores, computed for whole batches, against the references they stand for:
ignite's PSNR one image at a time, ignite's SSIM computed in float64, scikit-image's CIEDE2000, Hasler and
Suesstrunk's colorfulness in float64, on real faces (the studio faces when present, scikit-image's sample photos
otherwise) with real errors; and the choice among decodings that evaluate.py names."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.metrics import PSNR, SSIM
from skimage import data
from skimage.color import deltaE_ciede2000

from common import images_to_lab01, lab01_to_lab, lab01_to_rgb
from photos import center_square, prepare_photo
from conftest import FACES_DIR
from evaluate import Runs, choose_decoding
from scores import SsimTruth, ciede2000_per_image, colorfulness, psnr_per_image, ssim_per_image


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


def test_psnr_is_ignites_per_image(truth_and_guesses):
    truth, guesses = truth_and_guesses
    true_rgb = lab01_to_rgb(truth)
    for guess in guesses:
        pred_rgb = lab01_to_rgb(guess)
        expected = []
        for p, t in zip(pred_rgb, true_rgb):
            metric = PSNR(data_range=1.0)
            metric.update((p[None], t[None]))
            expected.append(metric.compute())
        np.testing.assert_allclose(psnr_per_image(pred_rgb, true_rgb).numpy(), expected, rtol=1e-12)


def ssim_in_float64(pred_rgb, true_rgb):
    """ignite's SSIM (its Gaussian window, reflected borders, constants), in float64, one image at a time."""
    taps = torch.exp(-0.5 * (torch.arange(-5, 6, dtype=torch.float64) / 1.5) ** 2)
    window = torch.outer(taps, taps) / taps.sum() ** 2
    values = []
    for p, t in zip(pred_rgb.double(), true_rgb.double()):
        p, t = (F.pad(x[:, None], [5] * 4, mode="reflect") for x in (p, t))
        mu_p, mu_t, pp, tt, pt = (F.conv2d(x, window[None, None]) for x in (p, t, p * p, t * t, p * t))
        similarity = (2 * mu_p * mu_t + 1e-4) * (2 * (pt - mu_p * mu_t) + 9e-4) / \
            ((mu_p ** 2 + mu_t ** 2 + 1e-4) * (pp - mu_p ** 2 + tt - mu_t ** 2 + 9e-4))
        values.append(similarity.mean().item())
    return np.array(values)


def test_ssim_is_ignites_in_float64(truth_and_guesses):
    truth, guesses = truth_and_guesses
    true_rgb = lab01_to_rgb(truth)
    for guess in guesses:
        pred_rgb = lab01_to_rgb(guess)
        expected = ssim_in_float64(pred_rgb, true_rgb)
        ignite_float32 = []
        for p, t in zip(pred_rgb, true_rgb):
            metric = SSIM(data_range=1.0)
            metric.update((p[None], t[None]))
            ignite_float32.append(metric.compute())
        np.testing.assert_allclose(ignite_float32, expected, rtol=5e-5)  # the same metric, float32's rounding
        assert (expected < 0.999).all()  # real differences
        values = ssim_per_image(pred_rgb, SsimTruth.of(true_rgb)).numpy()
        np.testing.assert_allclose(values, expected, rtol=3e-6)
        np.testing.assert_allclose(values.mean(), expected.mean(), rtol=2e-7)


def test_ciede2000_is_scikit_images(truth_and_guesses):
    truth, guesses = truth_and_guesses
    true_lab = lab01_to_lab(truth)
    for guess in guesses:
        pred_lab = lab01_to_lab(guess)
        expected = deltaE_ciede2000(true_lab.permute(0, 2, 3, 1).numpy(), pred_lab.permute(0, 2, 3, 1).numpy(),
                                    channel_axis=-1).mean(axis=(1, 2))
        assert (expected > 0.5).all()  # real colour differences, not zeros compared with zeros
        np.testing.assert_allclose(ciede2000_per_image(true_lab, pred_lab).numpy(), expected, rtol=1e-6)


def test_ssim_on_unequal_sides_alone_or_in_a_batch():
    """Sides that are not equal (the two passes of the window must not swap them), and an image's SSIM the same,
    to float32's rounding, whether it is scored alone or beside others."""
    photo = torch.from_numpy(data.astronaut()[:150, :200].copy()).permute(2, 0, 1)[None].double() / 255
    blurred = F.avg_pool2d(photo, 5, stride=1, padding=2, count_include_pad=False)
    true_rgb, pred_rgb = photo.float(), (0.8 * blurred + 0.1).float()
    alone = ssim_per_image(pred_rgb, SsimTruth.of(true_rgb)).numpy()
    np.testing.assert_allclose(alone, ssim_in_float64(pred_rgb, true_rgb), rtol=3e-6)
    others = torch.rand(3, 3, 150, 200, generator=torch.Generator().manual_seed(0))
    in_batch = ssim_per_image(torch.cat([pred_rgb, others]), SsimTruth.of(torch.cat([true_rgb, others.flip(0)])))
    np.testing.assert_allclose(in_batch[0].item(), alone[0], rtol=1e-6)


def test_colorfulness_is_hasler_and_suesstrunks(truth_and_guesses):
    """Hasler and Suesstrunk (2003): sigma_rgyb + 0.3 mu_rgyb, over RGB on the 0..255 scale, in float64."""
    truth, guesses = truth_and_guesses
    for lab01 in (truth, *guesses):
        rgb = lab01_to_rgb(lab01)
        r, g, b = (rgb.double().numpy() * 255).transpose(1, 0, 2, 3).reshape(3, len(rgb), -1)
        rg, yb = r - g, 0.5 * (r + g) - b
        expected = np.hypot(rg.std(axis=1), yb.std(axis=1)) + 0.3 * np.hypot(rg.mean(axis=1), yb.mean(axis=1))
        np.testing.assert_allclose(colorfulness(rgb).numpy(), expected, rtol=1e-5, atol=1e-3)


def test_the_decoding_to_colour_with_is_the_most_accurate_of_the_vivid_ones():
    classify = {"head": "classify", "temperature": 0.38}
    configs = {"a": classify, "a@chroma=1.3": {**classify, "chroma_gain": 1.3},
               "a@T=1,chroma=1.3": {**classify, "temperature": 1.0, "chroma_gain": 1.3},
               "regressing": {"head": "regress"}}
    runs = Runs({}, {}, {}, configs, dict.fromkeys(configs, "runs/my run/best.pt"))
    summary = {"a": (1.0, 9.0), "a@chroma=1.3": (1.2, 2.0), "a@T=1,chroma=1.3": (1.1, 2.9), "regressing": (0.5, 0.0)}
    summary = {name: {"mse": mse, "colorfulness_gap": gap} for name, (mse, gap) in summary.items()}
    chosen = choose_decoding(summary, runs, max_gap=3)
    assert chosen["name"] == "a@T=1,chroma=1.3"
    assert chosen["flags"] == "--checkpoint 'runs/my run/best.pt' --temperature 1 --chroma-gain 1.3"
    assert choose_decoding(summary, runs, max_gap=2.5)["name"] == "a@chroma=1.3"
    closest = choose_decoding(summary, runs, max_gap=1)  # none vivid enough: the closest colour
    assert closest["name"] == "a@chroma=1.3" and "no decoding within 1" in closest["sentence"]
    assert choose_decoding(summary, runs, max_gap=10)["flags"].endswith("--temperature 0.38 --chroma-gain 1")

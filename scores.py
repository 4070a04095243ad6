"""The scores evaluate.py reports, per image and a whole batch at a time: the seed's MSE, PSNR and SSIM (as ignite
defines them), CIEDE2000 (as scikit-image computes it), colourfulness (Hasler and Suesstrunk 2003), and how much a
mean moves with the images drawn (bootstrap intervals).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from common import lab01_to_lab, lab01_to_rgb


class Truth(NamedTuple):
    """A batch of true images in every form the scores compare with, converted once for all the methods."""
    lab01: torch.Tensor
    rgb: torch.Tensor
    lab: torch.Tensor  # Lab units
    colorfulness: torch.Tensor
    ssim: "SsimTruth"

    @classmethod
    def of(cls, lab01: torch.Tensor) -> "Truth":
        rgb = lab01_to_rgb(lab01)
        return cls(lab01, rgb, lab01_to_lab(lab01), colorfulness(rgb), SsimTruth.of(rgb))


def score(pred_lab01: torch.Tensor, truth: Truth) -> dict:
    """Per-image numbers for one method, each computed for the whole batch at once: seed MSE, PSNR and SSIM
    (ignite's definitions, per image), CIEDE2000 (as scikit-image), colorfulness."""
    pred_rgb = lab01_to_rgb(pred_lab01)
    return {"mse": seed_mse_per_image(pred_lab01, truth.lab01).tolist(),
            "psnr": psnr_per_image(pred_rgb, truth.rgb).tolist(),
            "ssim": ssim_per_image(pred_rgb, truth.ssim).tolist(),
            "ciede2000": ciede2000_per_image(truth.lab, lab01_to_lab(pred_lab01)).tolist(),
            "colorfulness": colorfulness(pred_rgb).tolist()}


def psnr_per_image(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """PSNR (data range 1) of each image, exactly as ignite's PSNR computes it for one image."""
    mse = (pred_rgb.double() - true_rgb.double()).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / (mse + 1e-10))


# SSIM as ignite defines it (its defaults, data range 1): means, variances and covariance over an 11 x 11
# Gaussian window (sigma 1.5) at every pixel, borders reflected, constants (0.01)^2 and (0.03)^2
SSIM_RADIUS, SSIM_SIGMA, SSIM_C1, SSIM_C2 = 5, 1.5, 0.01 ** 2, 0.03 ** 2


class SsimTruth(NamedTuple):
    """The truth's side of SSIM, once per batch for every method. Colours are taken relative to the image's mean
    colour (SSIM is the same, as a window's variance is): in float32, E[x^2] - E[x]^2 then cancels far less
    where a region is flat."""
    centre: torch.Tensor  # (N, 3, 1, 1)
    centred: torch.Tensor
    mean: torch.Tensor    # windowed, of the centred image
    variance: torch.Tensor

    @classmethod
    def of(cls, rgb: torch.Tensor) -> "SsimTruth":
        centre = rgb.mean(dim=(2, 3), keepdim=True)
        centred = rgb - centre
        mean, square = windowed(torch.cat([centred, centred * centred], dim=1)).chunk(2, dim=1)
        return cls(centre, centred, mean, square - mean * mean)


def ssim_per_image(pred_rgb: torch.Tensor, truth: SsimTruth) -> torch.Tensor:
    """SSIM of each image (ignite's definition, above), the whole batch at once; within 2e-6 of it in float64
    (ignite's float32 convolution, one image at a time as evaluate called it before, is within 5e-5)."""
    pred = pred_rgb - truth.centre
    mean, square, product = windowed(torch.cat([pred, pred * pred, pred * truth.centred], dim=1)).chunk(3, dim=1)
    covariance = product - mean * truth.mean
    variances = square - mean * mean + truth.variance
    mean_p, mean_t = mean + truth.centre, truth.mean + truth.centre
    similarity = (2 * mean_p * mean_t + SSIM_C1) * (2 * covariance + SSIM_C2) / \
        ((mean_p * mean_p + mean_t * mean_t + SSIM_C1) * (variances + SSIM_C2))
    return torch.mean(similarity, dim=(1, 2, 3), dtype=torch.float64)


def windowed(x: torch.Tensor) -> torch.Tensor:
    """The Gaussian-window mean of every map of x (N, C, H, W) at every pixel, borders reflected: the window is
    separable, so an 11 x 1 and a 1 x 11 convolution of each map (cheaper than products with banded matrices:
    benchmarks/metrics.py; each image's numbers do not depend on the others in the batch)."""
    n, c, h, w = x.shape
    kernel = ssim_window(x.device, x.dtype)
    maps = F.pad(x.reshape(1, n * c, h, w), (0, 0, SSIM_RADIUS, SSIM_RADIUS), mode="reflect")
    maps = F.conv2d(maps, kernel.view(1, 1, -1, 1).expand(n * c, 1, -1, 1), groups=n * c)
    maps = F.pad(maps, (SSIM_RADIUS, SSIM_RADIUS, 0, 0), mode="reflect")
    return F.conv2d(maps, kernel.view(1, 1, 1, -1).expand(n * c, 1, 1, -1), groups=n * c).reshape(n, c, h, w)


def ssim_window(device, dtype) -> torch.Tensor:
    """SSIM's Gaussian weights along one axis (2 * SSIM_RADIUS + 1 of them), summing to 1 in float64."""
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (weights / weights.sum()).to(device, dtype)


def ciede2000_per_image(true_lab: torch.Tensor, pred_lab: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 of each image, Lab units (N, 3, H, W): scikit-image's deltaE_ciede2000, step for step, on
    tensors (within 1e-7 of it: tests/test_metrics.py; its speed: benchmarks/metrics.py)."""
    L1, a1, b1 = true_lab.unbind(1)
    L2, a2, b2 = pred_lab.unbind(1)
    c7 = (0.5 * (torch.hypot(a1, b1) + torch.hypot(a2, b2))) ** 7
    scale = 1 + 0.5 * (1 - torch.sqrt(c7 / (c7 + 25 ** 7)))
    C1, h1 = _polar_2pi(a1 * scale, b1)
    C2, h2 = _polar_2pi(a2 * scale, b2)
    Lbar_50 = (0.5 * (L1 + L2) - 50) ** 2
    L_term = (L2 - L1) / (1 + 0.015 * Lbar_50 / torch.sqrt(20 + Lbar_50))
    Cbar = 0.5 * (C1 + C2)
    C_term = (C2 - C1) / (1 + 0.045 * Cbar)
    h_diff, h_sum, CC = h2 - h1, h1 + h2, C1 * C2
    dH = torch.where(h_diff > math.pi, h_diff - 2 * math.pi, torch.where(h_diff < -math.pi, h_diff + 2 * math.pi,
                                                                           h_diff))
    dH_term = 2 * torch.sqrt(CC) * torch.sin(torch.where(CC == 0.0, 0.0, dH) / 2)
    wrapped = (CC != 0.0) & (h_diff.abs() > math.pi)
    Hbar = torch.where(wrapped, torch.where(h_sum < 2 * math.pi, h_sum + 2 * math.pi, h_sum - 2 * math.pi), h_sum)
    Hbar = torch.where(CC == 0.0, Hbar * 2, Hbar) * 0.5
    T = (1 - 0.17 * torch.cos(Hbar - math.radians(30)) + 0.24 * torch.cos(2 * Hbar)
         + 0.32 * torch.cos(3 * Hbar + math.radians(6)) - 0.20 * torch.cos(4 * Hbar - math.radians(63)))
    H_term = dH_term / (1 + 0.015 * Cbar * T)
    c7 = Cbar ** 7
    rotation = -torch.sin(2 * math.radians(30) * torch.exp(-((torch.rad2deg(Hbar) - 275) / 25) ** 2)) * \
        2 * torch.sqrt(c7 / (c7 + 25 ** 7)) * C_term * H_term
    return torch.sqrt((L_term ** 2 + C_term ** 2 + H_term ** 2 + rotation).clamp(min=0)).mean(dim=(1, 2),
                                                                                            dtype=torch.float64)


def _polar_2pi(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(radius, angle in [0, 2 pi)), as scikit-image's CIEDE2000 takes them."""
    angle = torch.atan2(y, x)
    return torch.hypot(x, y), torch.where(angle < 0.0, angle + 2 * math.pi, angle)


def summarize(per_image: dict, truth_colorfulness: float) -> dict:
    summary = {k: float(np.mean(v)) for k, v in per_image.items()}
    summary["colorfulness_gap"] = abs(summary["colorfulness"] - truth_colorfulness)
    return summary


def seed_mse_per_image(pred_lab01: torch.Tensor, true_lab01: torch.Tensor) -> torch.Tensor:
    """The seed's score: MSE over the three Lab01 channels (L from the input), per image."""
    return ((pred_lab01 - true_lab01) ** 2).flatten(1).mean(1)


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk (2003) colorfulness of RGB images (N, 3, H, W) in [0, 1], on the 0..255 scale."""
    r, g, b = (rgb * 255).unbind(1)
    (rg_var, rg_mean), (yb_var, yb_mean) = (torch.var_mean(x.flatten(1), dim=1, correction=0)
                                            for x in (r - g, 0.5 * (r + g) - b))
    return torch.sqrt(rg_var + yb_var) + 0.3 * torch.sqrt(rg_mean ** 2 + yb_mean ** 2)


def bootstrap_interval(per_image: torch.Tensor, groups=None, resamples=10_000, over=None) -> tuple[float, float]:
    """95% interval of the mean of per-image values over resamplings of the test images, or of groups of
    them (groups: a group index per image; a group is drawn with all its images): how much a figure on
    this many images moves with the images drawn (fixed resampling seed: reproducible). With over (per-image
    values of another method), of the ratio of the two means, the same images drawn for both."""
    values = per_image.double().cpu()
    group = torch.arange(len(values)) if groups is None else torch.as_tensor(groups, dtype=torch.long)
    n = int(group.max()) + 1
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, group, values)
    divisors = torch.bincount(group, minlength=n).double() if over is None else \
        torch.zeros(n, dtype=torch.float64).index_add_(0, group, over.double().cpu())
    draws = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(0))
    means = sums[draws].sum(dim=1) / divisors[draws].sum(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high

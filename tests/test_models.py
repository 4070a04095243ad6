"""Model shapes and the seed's architecture, for every variant the flags allow."""
import re
import subprocess
import sys

import pytest
import torch
from skimage import data

from common import (ClassifyingColorizer, SeedColorizer, SeedRegressor, UNetColorizer, ab_bins, build_model, rgb_to_lab,
                    seed_channels)
from conftest import ROOT
from train_colorizer import nearest_bins, rebalancing_weights, soft_encode


def test_seed_channel_widths():
    assert seed_channels(128, 3) == [8, 32, 128]          # the seed's colorizer
    assert seed_channels(512, 3) == [32, 128, 512]
    assert seed_channels(128, 5) == [8, 16, 32, 64, 128]
    assert seed_channels(64, 5) == [4, 8, 16, 32, 64]


def test_regressor_is_the_seeds():
    model = SeedRegressor()
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 256, 512]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert model.head.in_features == 512 * 2 * 2
    out = model(torch.rand(3, 1, 128, 128))
    assert out.shape == (3, 2) and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("max_channels", [128, 256, 512])
@pytest.mark.parametrize("layers", [3, 5])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_seed_colorizer_variants_keep_the_image_size(max_channels, layers, activation):
    model = SeedColorizer(max_channels, layers, activation).eval()
    out = model(torch.rand(2, 1, 128, 128))
    assert out.shape == (2, 2, 128, 128)
    if activation == "sigmoid":
        assert out.min() >= 0 and out.max() <= 1
    if activation == "tanh":
        assert out.min() >= -1


def test_seed_colorizer_layers_are_the_seeds():
    convs = [m for m in SeedColorizer().net if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert [(type(c).__name__, c.out_channels, c.kernel_size) for c in convs] == [
        ("Conv2d", 8, (3, 3)), ("Conv2d", 32, (3, 3)), ("Conv2d", 128, (3, 3)),
        ("ConvTranspose2d", 32, (2, 2)), ("ConvTranspose2d", 8, (2, 2)), ("ConvTranspose2d", 2, (2, 2))]


def test_unet_full_resolution_and_conditioning_input():
    out = UNetColorizer(base_channels=8, depth=3, in_channels=3)(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 2, 64, 64)


def test_build_model_reads_the_config():
    base = {"task": "colorizer", "arch": "seed", "max_channels": 256, "layers": 5, "activation": "tanh",
            "regressor": None}
    assert isinstance(build_model(base), SeedColorizer)
    assert isinstance(build_model({**base, "arch": "unet", "base_channels": 8, "depth": 2}), UNetColorizer)
    assert isinstance(build_model({"task": "regressor"}), SeedRegressor)


def test_ab_bins_cover_the_srgb_gamut_on_a_grid_of_10():
    bins = ab_bins()
    # 261 cells of 10 x 10 hold some sRGB colour by this gamut test (the paper's looser one counts 313)
    assert len(bins) == 261 and len(torch.unique(bins, dim=0)) == len(bins)
    assert (bins % 10 == 0).all()
    # every colour of a photo falls within half a cell of some bin
    lab = rgb_to_lab(torch.from_numpy(data.astronaut() / 255.0).permute(2, 0, 1).float())
    dist, _ = nearest_bins(lab[None, 1:], bins, 1)
    assert dist.max() <= 5 * 2 ** 0.5 + 1e-4


def test_soft_encoding_and_rebalancing():
    bins = ab_bins()
    ab01 = torch.rand(2, 2, 16, 16)
    target, nearest = soft_encode(ab01, bins)
    assert target.shape == (2, len(bins), 4, 4) and nearest.shape == (2, 4, 4)
    torch.testing.assert_close(target.sum(dim=1), torch.ones(2, 4, 4))
    assert (target > 0).sum(dim=1).eq(5).all()  # the 5 nearest bins
    assert torch.equal(target.argmax(dim=1), nearest)
    prior = torch.softmax(torch.randn(len(bins)), 0)
    w = rebalancing_weights(prior, 0.5)
    torch.testing.assert_close((prior * w).sum(), torch.tensor(1.0))
    assert w[prior.argmax()] < w[prior.argmin()]  # rare colours weigh more


def test_classifier_returns_logits_in_training_and_colours_in_eval():
    config = {"task": "colorizer", "arch": "seed", "max_channels": 128, "layers": 3, "activation": "sigmoid",
              "regressor": None, "head": "classify", "temperature": 0.38}
    model = build_model(config)
    x = torch.rand(2, 1, 64, 64)
    assert model.train()(x).shape == (2, len(ab_bins()), 16, 16)
    ab = model.eval()(x)
    assert ab.shape == (2, 2, 64, 64) and ab.min() >= 0 and ab.max() <= 1


@pytest.mark.parametrize("module", ["guards", "common", "colorize", "evaluate", "prepare_data"])
def test_only_the_trainers_load_the_training_loop(module):
    """Imports go one way (training -> common): what colours, scores or prepares loads neither training.py nor
    ignite's engine (that every script runs where fcntl does not exist: test_trust.py)."""
    code = (f"import sys; import {module}; "
            "print(sorted(m for m in ('training', 'ignite.engine', 'ignite.handlers') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    for shared in ("guards", "common"):
        lines = (ROOT / f"{shared}.py").read_text().splitlines()
        assert not any("ignite" in line for line in lines if line.startswith(("import ", "from ")))


@pytest.mark.parametrize("module", ["locks", "guards", "common", "photos", "scores", "faces", "training"])
def test_the_shared_modules_import_one_way(module):
    """locks <- guards <- common <- photos, scores, faces, training <- the scripts: a shared module imports only
    those before it (so the guard rails know no colour or model, common.py never reaches for a photo file or the
    training loop, and photos.py never for a model)."""
    allowed = {"locks": set(), "guards": {"locks"}, "common": {"guards"}, "photos": {"guards", "common"},
               "scores": {"common"}, "faces": {"guards", "common"}, "training": {"guards", "common", "faces"}}[module]
    project = {path.stem for path in ROOT.glob("*.py")}
    source = (ROOT / f"{module}.py").read_text()
    imported = set(re.findall(r"^\s*(?:from|import) (\w+)", source, re.M)) & project
    assert imported <= allowed, f"{module}.py imports {sorted(imported - allowed)}"


def test_chroma_gain_spreads_each_images_colours_from_its_mean():
    """out = mean + gain * (decoded - mean), the mean colour of each image kept (bilinear upsampling keeps a
    constant): solved for the mean, one value per image and channel. Weights wide enough that colours differ
    across each image by far more than the tolerance (std 0.3 gave spreads near 1e-3 on some seeds)."""
    body = torch.nn.Conv2d(1, len(ab_bins()), 1)
    torch.nn.init.normal_(body.weight, std=3.0)
    x = torch.rand(2, 1, 32, 32)
    plain, vivid = (ClassifyingColorizer(body, 0.38, gain).eval()(x).detach() for gain in (1.0, 1.5))
    mean = (1.5 * plain - vivid) / 0.5
    assert (vivid - plain).abs().max() > 1e-3
    assert torch.allclose(mean, mean.mean(dim=(2, 3), keepdim=True), atol=1e-5)

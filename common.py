"""Shared vocabulary of the colorization project, in the order the pipeline uses it: Lab colour, prepared
data and datasets, models, checkpoints and figures. The guard rails (errors, flag types, safe files and
output folders, devices) are guards.py's, below this module; photo files are photos.py's, the metrics
scores.py's and the training loop training.py's (all import this module, never the reverse); nothing here
imports ignite.

"Seed" names the study this project grew from and reproduces, the student report "Deep Image
Colorization" (SeedRegressor, SeedColorizer, the seed's MSE); the random seed is --seed.

Conventions, written once here:
  * prepared images are stored as uint8 RGB, channels last (N, H, W, 3), and beside them, converted
    once when preparing, as the networks see them: Lab01, float16, channels first (N, 3, H, W);
  * CIE L*a*b* is D65, 2 degree observer, as scikit-image; computed on tensors, in batches;
  * Lab01 is Lab scaled to [0, 1] as the networks see it: L/100, (a+128)/255, (b+128)/255.
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from guards import UserError, atomic_write, escape_bytes, number_type

# ---------------------------------------------------------------------------------------------
# CIE L*a*b* on tensors (channel dimension -3), matching skimage.color.rgb2lab / lab2rgb.

XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
RGB_FROM_XYZ = torch.linalg.inv(XYZ_FROM_RGB)
WHITE_D65 = (0.95047, 1.0, 1.08883)
XYZN_FROM_RGB = XYZ_FROM_RGB / torch.tensor(WHITE_D65, dtype=torch.float64)[:, None]  # white-normalised
# L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz), with f the CIE cube-root curve of X/Xn, Y/Yn, Z/Zn
_LAB_FROM_F = torch.tensor([[0.0, 116, 0], [500, -500, 0], [0, 200, -200]], dtype=torch.float64)
_LAB_OFFSET = torch.tensor([-16.0, 0, 0], dtype=torch.float64)

# Lab01, the networks' scale: L / L_RANGE, (a + AB_OFFSET) / AB_RANGE, (b + AB_OFFSET) / AB_RANGE
L_RANGE, AB_OFFSET, AB_RANGE = 100, 128, 255
_LAB01_SCALE = torch.tensor([1 / L_RANGE, 1 / AB_RANGE, 1 / AB_RANGE], dtype=torch.float64)
_LAB01_SHIFT = torch.tensor([0, AB_OFFSET / AB_RANGE, AB_OFFSET / AB_RANGE], dtype=torch.float64)


def _apply_matrix(matrix: torch.Tensor, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """matrix @ the channel vector of every pixel (+ offset), x of shape (3, H, W) or (N, 3, H, W): three sums
    of scaled channels, fast in any memory layout (a 1x1 convolution crawls unless x is channels-last)."""
    x0, x1, x2 = x.unbind(-3)
    out = torch.stack([(x0 * m0).add_(x1, alpha=m1).add_(x2, alpha=m2) for m0, m1, m2 in matrix.tolist()], dim=-3)
    return out if offset is None else out.add_(offset.to(x.device, x.dtype)[:, None, None])


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve undone: sRGB values in [0, 1] -> linear light."""
    return torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def _lab_from_linear_rgb(linear: torch.Tensor, lab01=False) -> torch.Tensor:
    """Linear sRGB (channels on -3) -> L*a*b* in Lab units, or Lab01 if lab01."""
    xyz = _apply_matrix(XYZN_FROM_RGB, linear)  # >= 0: the cube root needs no clamp
    f = torch.where(xyz > 0.008856, xyz ** (1 / 3), 7.787 * xyz + 16 / 116)
    if lab01:  # the scaling folded into the same pass
        return _apply_matrix(_LAB01_SCALE[:, None] * _LAB_FROM_F, f, _LAB01_SCALE * _LAB_OFFSET + _LAB01_SHIFT)
    return _apply_matrix(_LAB_FROM_F, f, _LAB_OFFSET)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (3, H, W) or (N, 3, H, W) -> L*a*b* in Lab units (L in [0, 100])."""
    return _lab_from_linear_rgb(srgb_to_linear(rgb))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """L*a*b* in Lab units, shape (..., 3, H, W) -> sRGB clipped to [0, 1]."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([a / 500 + fy, fy, (fy - b / 200).clamp(min=0)], dim=-3)
    white = torch.tensor(WHITE_D65, device=lab.device, dtype=lab.dtype).view(3, 1, 1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787) * white
    linear = _apply_matrix(RGB_FROM_XYZ, xyz)
    curve = linear.clamp(min=0.0031308).pow_(1 / 2.4).mul_(1.055).sub_(0.055)
    return torch.where(linear > 0.0031308, curve, linear * 12.92).clamp_(0, 1)


def lab_to_lab01(lab: torch.Tensor) -> torch.Tensor:
    """Lab units -> Lab01."""
    return lab * _LAB01_SCALE.to(lab.device, lab.dtype)[:, None, None] + \
        _LAB01_SHIFT.to(lab.device, lab.dtype)[:, None, None]


def lab01_to_lab(lab01: torch.Tensor) -> torch.Tensor:
    """Lab01 -> Lab units: the inverse of lab_to_lab01."""
    return (lab01 - _LAB01_SHIFT.to(lab01.device, lab01.dtype)[:, None, None]) / \
        _LAB01_SCALE.to(lab01.device, lab01.dtype)[:, None, None]


def ab01_to_ab(ab01):
    """a*, b* on the Lab01 scale -> in Lab units."""
    return ab01 * AB_RANGE - AB_OFFSET


def ab_to_ab01(ab):
    """a*, b* in Lab units -> on the Lab01 scale (ab_to_ab01(0.0): the ab of gray)."""
    return (ab + AB_OFFSET) / AB_RANGE


_SRGB_TO_LINEAR_UINT8 = {}  # per device: the sRGB curve at the 256 values a stored byte can take


def images_to_lab01(images_uint8: torch.Tensor) -> torch.Tensor:
    """Stored images (N, H, W, 3) uint8 RGB -> (N, 3, H, W) float Lab01: lab_to_lab01(rgb_to_lab(...)),
    faster (prepare_data.py and --data-on-device convert every image): a table replaces the sRGB curve."""
    device = images_uint8.device
    if device not in _SRGB_TO_LINEAR_UINT8:
        _SRGB_TO_LINEAR_UINT8[device] = srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255).float().to(device)
    # take: a flat gather, cheaper than indexing; the channels-last view that the
    # permute leaves is what makes the 1x1 convolutions fast on the CPU
    linear = _SRGB_TO_LINEAR_UINT8[device].take(images_uint8.long()).permute(0, 3, 1, 2)
    return _lab_from_linear_rgb(linear, lab01=True)


def lab01_to_rgb(lab01: torch.Tensor) -> torch.Tensor:
    return lab_to_rgb(lab01_to_lab(lab01))


def lab01_batches(images: np.ndarray, batch_size=32, device="cpu"):
    """uint8 RGB (N, H, W, 3), e.g. a memory map -> small Lab01 batches (their temporaries stay in the caches)."""
    for i in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[i:i + batch_size]))
        if isinstance(images, np.memmap):  # its pages read so far would stay resident: memory growing with the file
            release_pages(images)
        yield images_to_lab01(batch.to(device))


# ---------------------------------------------------------------------------------------------
# Prepared data: prepare_data.py writes, per split, {split}.npy (uint8 RGB, N x H x W x 3: the images),
# {split}_lab.npy (float16 Lab01, N x 3 x H x W: what the networks read, so training converts nothing)
# and manifest.json. Training maps them into memory: memory stays flat however large the set is.

SPLITS = ("train", "val", "test")
LAB_SUFFIX = "_lab"
PREPARED_FORMAT = 2  # 2: {split}_lab.npy beside {split}.npy
MANIFEST = "manifest.json"
MANIFEST_KEYS = ("format", "size", "seed", "augment_factor", "counts", "files", "source", "demo")
DEFAULT_BATCH_SIZE = 64  # the trainers' default: prepare_data.py makes sure one such batch fits


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a prepared folder, checked; a one-line UserError for anything else."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{data_dir}: no prepared data here (no {MANIFEST}); prepare your photos into a new folder "
                        f"with `python prepare_data.py --source PHOTOS --out NEW_FOLDER` and pass that folder")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__}); prepare the data again") from None
    if isinstance(manifest, dict) and manifest.get("format", 1) < PREPARED_FORMAT:
        raise UserError(f"{path}: prepared by an older version of prepare_data.py (no Lab arrays); "
                        f"run prepare_data.py again with --out {data_dir}")
    missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise UserError(f"{path}: not a manifest written by prepare_data.py (no {', '.join(missing)}); "
                        "prepare the data again")
    return manifest


def dataset_id(manifest: dict) -> str:
    """What makes a prepared set itself: its images' bytes (photos from two memory cards share their names), their
    files and split, and the settings that made them. Runs record it, so that a run is never resumed on other
    data. (Sets prepared before the content was hashed have none: their names and settings stand for them.)"""
    keys = ("format", "size", "seed", "held_out", "split_by", "augment_factor", "files", "demo") + \
        (("content",) if "content" in manifest else ())
    identity = json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def split_file(data_dir: str | Path, split: str, lab: bool) -> Path:
    path = Path(data_dir) / f"{split}{LAB_SUFFIX if lab else ''}.npy"
    if not path.is_file():
        raise UserError(f"{path}: missing split '{split}'; prepare the data again")
    return path


def open_array(path: Path) -> np.ndarray:
    """np.load(path, mmap_mode='r'), with a one-line UserError for a damaged or truncated file."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: damaged or truncated ({escape_bytes(exc)}); prepare the data again") from None


def check_prepared(data_dir: str | Path) -> dict:
    """-> the manifest, after checking that every split's two arrays are whole and agree with it."""
    manifest = read_manifest(data_dir)
    size, counts = manifest["size"], manifest["counts"]
    for split in SPLITS:
        n = counts.get("train_augmented" if split == "train" else split)
        for lab, shape in ((False, (n, size, size, 3)), (True, (n, 3, size, size))):
            path = split_file(data_dir, split, lab)
            if open_array(path).shape != shape:
                raise UserError(f"{path}: holds {open_array(path).shape}, but {MANIFEST} says {shape}; "
                                "prepare the data again")
        if not n:
            raise UserError(f"{data_dir}: the {split} split is empty; prepare it again from more images")
    return manifest


def release_pages(mapped: np.memmap) -> None:
    """Unmap the pages a memory-mapped array (or a view of one) read or wrote, kept in the page cache and the
    file: else resident memory grows with the file, the kernel mapping large pages around every row."""
    while not isinstance(mapped, mmap.mmap):
        mapped = mapped.base
    mapped.madvise(mmap.MADV_DONTNEED)


def open_rgb_split(data_dir: str | Path, split: str) -> np.ndarray:
    """The uint8 RGB images of a split (N, H, W, 3), memory-mapped."""
    return open_array(split_file(data_dir, split, lab=False))


class MappedDataset(torch.utils.data.Dataset):
    """A dataset over a .npy file, memory-mapped on first use in each process: pickled into DataLoader workers,
    it carries the path, and each worker maps the file itself."""

    def __init__(self, path: Path):
        self.path, self._array = path, None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array


class LabSplit(MappedDataset):
    """One split of the prepared data, as the networks see it: float16 Lab01 (3, H, W) items,
    mapped into memory from {split}_lab.npy (converted once by prepare_data.py)."""

    def __init__(self, data_dir: str | Path, split: str):
        super().__init__(split_file(data_dir, split, lab=True))
        self._len = int(open_array(self.path).shape[0])

    def __len__(self) -> int:
        return self._len

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        rows = np.asarray(indices)
        batch = self.array[rows]  # one fancy-indexing read per batch, not one per image
        release_pages(self.array)
        finite = np.isfinite(batch).reshape(len(rows), -1).all(axis=1)
        if not finite.all():  # a damaged file: NaN or inf would train, or score, silently
            raise UserError(f"{self.path}: row {rows[~finite].min()} holds values that are not finite numbers (NaN "
                            "or inf): the file is damaged; prepare the data again")
        return torch.from_numpy(batch)


def training_statistic(data_dir: str | Path, name: str, shape: tuple, compute: Callable[[], np.ndarray],
                       what: str) -> np.ndarray:
    """A statistic of a prepared set's training images (what: its description, for the line that says it was
    computed), computed once and kept beside the data as NAME.npy; on a read-only prepared set (a shared one),
    computed again by every run. The folder is replaced whole when it is prepared again: never stale. A file of
    that name that is not such a statistic is named, never replaced."""
    path = Path(data_dir) / f"{name}.npy"
    if path.exists():
        try:
            kept = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            kept = None
        if not isinstance(kept, np.ndarray) or kept.shape != shape or not np.isfinite(kept).all():
            raise UserError(f"{path}: not the {what} this project keeps there (damaged, or another file); "
                            "prepare the data again, or move that file away")
        return kept
    value = compute()

    def save(tmp):
        with open(tmp, "wb") as f:
            np.save(f, value)

    try:
        atomic_write(path, save)
        print(f"computed {what}: {path}")
    except OSError as exc:
        print(f"computed {what} (not saved: {data_dir} is {exc.strerror or 'not writable'})")
    return value


def collate_unchanged(batch):
    """collate_fn: what the dataset hands over, unchanged (already a whole batch, or a worker's answer)."""
    return batch


def random_variant(size: int, upright: bool):
    """A torchvision transform: image (3, H, W) -> a random variant at size x size, maybe mirrored, cropped and
    resized back. upright=False (prepare_data.py's fixed copies, as the seed made them) also turns it upside
    down and rotates it up to 20 degrees, and crops down to half its area (upright: to 70%)."""
    from torchvision.transforms import v2

    turns = [] if upright else [v2.RandomVerticalFlip(), v2.RandomRotation(20)]
    # cropping after the rotation removes most of its black corners
    return v2.Compose([v2.RandomHorizontalFlip(), *turns,
                       v2.RandomResizedCrop(size, scale=(0.7 if upright else 0.5, 1.0), ratio=(0.9, 1.1),
                                            antialias=True)])


# ---------------------------------------------------------------------------------------------
# Models, and what they predict


class SeedRegressor(nn.Module):
    """L -> mean (a, b) of the image in [0, 1]: 6 x [Conv 4x4 s2 p1, BN, LeakyReLU], Linear, sigmoid."""

    def __init__(self, channels=(32, 64, 128, 256, 256, 512)):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU()]
            c_in = c
        # a 128x128 input is 2x2 here already (the seed's Linear(512*2*2)); pooling admits other sizes
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(c_in * 2 * 2, 2)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(L).flatten(1)))


FINAL_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}


def seed_channels(max_channels: int, layers: int) -> list[int]:
    """Channel widths of the seed colorizer's down path: from max/16 up to max, geometrically
    (3 layers at 128 -> 8, 32, 128 as in the seed; 5 layers at 128 -> 8, 16, 32, 64, 128)."""
    return [max(1, round(max_channels * 16 ** ((i - (layers - 1)) / (layers - 1)))) for i in range(layers)]


class SeedColorizer(nn.Module):
    """L -> ab: Conv 3x3 s2 p1 (+BN, ReLU) down, ConvTranspose 2x2 s2 (+BN, ReLU) up, final activation.
    out_stride 4 stops the up path at a quarter of the resolution (for the classification head)."""

    def __init__(self, max_channels=128, layers=3, activation="sigmoid", in_channels=1, out_channels=2,
                 out_stride=1):
        super().__init__()
        widths = seed_channels(max_channels, layers)
        down, c_in = [], in_channels
        for c in widths:
            down += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        n_up = layers - int(math.log2(out_stride))
        up = []
        for c in widths[-2::-1][:n_up - 1]:
            up += [nn.ConvTranspose2d(c_in, c, 2, stride=2), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        up += [nn.ConvTranspose2d(c_in, out_channels, 2, stride=2), FINAL_ACTIVATIONS[activation]()]
        self.net = nn.Sequential(*down, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UNetColorizer(nn.Module):
    """Encoder-decoder with skip connections at every scale, back to full resolution
    (or to 1/out_stride of it, for the classification head)."""

    def __init__(self, base_channels=32, depth=4, activation="sigmoid", in_channels=1, out_channels=2,
                 out_stride=1):
        super().__init__()

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        top = int(math.log2(out_stride))  # the finest level the decoder climbs back to
        self.down = nn.ModuleList([block(in_channels, widths[0])] +
                                  [block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(top, depth))])
        self.merge = nn.ModuleList([block(2 * widths[i], widths[i]) for i in reversed(range(top, depth))])
        self.out = nn.Sequential(nn.Conv2d(widths[top], out_channels, 1), FINAL_ACTIVATIONS[activation]())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, down in enumerate(self.down):
            x = down(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.out(x)


# Colour as classification (Zhang, Isola and Efros 2016): the networks output logits over ab cells
# (grid 10) at a quarter of the resolution; decoding takes the annealed mean. What only training
# needs (soft-encoded targets, class rebalancing) lives in train_colorizer.py.
AB_GRID = 10
CLASSIFY_STRIDE = 4  # logits at a quarter of the resolution, as in the paper
DEFAULT_TEMPERATURE = 0.38  # the paper's annealed-mean temperature
# how a classification colorizer decodes (ClassifyingColorizer): beyond these, float32 rounds the annealed mean to
# NaN or to one bin, and the chroma gain pushes every colour to the gamut's edge
TEMPERATURES, CHROMA_GAINS = (0.01, 100.0), (0.01, 10.0)
temperature = number_type(float, lambda v: TEMPERATURES[0] <= v <= TEMPERATURES[1],
                          f"a temperature from {TEMPERATURES[0]:g} to {TEMPERATURES[1]:g}")
chroma_gain = number_type(float, lambda v: CHROMA_GAINS[0] <= v <= CHROMA_GAINS[1],
                          f"a chroma gain from {CHROMA_GAINS[0]:g} to {CHROMA_GAINS[1]:g}")
_AB_BINS = {}
AB_LOWEST_CELL, AB_CELL_SPAN = -16, 32  # sRGB's a* and b* lie within +-128: cells -13 to 13


def ab_bins() -> torch.Tensor:
    """(Q, 2) centres in Lab units of the ab cells (grid 10) that some sRGB colour falls into, sampled at 64
    levels per channel: Q = 261. (The paper's 313 bins came from a looser gamut test.)"""
    if "bins" not in _AB_BINS:
        levels = torch.linspace(0, 1, 64)
        cube = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1, 1)
        cells = torch.round(rgb_to_lab(cube)[1:, :, 0] / AB_GRID).long() - AB_LOWEST_CELL
        # each cell (a, b) as one number a * span + b, sorted as the pairs are (a stable bin order): unique over
        # numbers, where unique over rows (dim=0) took 0.3 s of every colorize.py start
        keys = torch.unique(cells[0] * AB_CELL_SPAN + cells[1])
        _AB_BINS["bins"] = ((torch.stack([keys // AB_CELL_SPAN, keys % AB_CELL_SPAN], 1) + AB_LOWEST_CELL)
                            * AB_GRID).float()
    return _AB_BINS["bins"]


class ClassifyingColorizer(nn.Module):
    """A body with logits over the ab bins at 1/4 resolution: returned in training mode; in eval mode decoded
    by the annealed mean (softmax of logits / T) to full-resolution ab01, as any colorizer's, each image's
    colours then spread from its mean colour by chroma_gain (1: as decoded; above 1: more vivid)."""

    def __init__(self, body: nn.Module, temperature: float = DEFAULT_TEMPERATURE, chroma_gain: float = 1.0):
        super().__init__()
        self.body, self.temperature, self.chroma_gain = body, temperature, chroma_gain
        self.register_buffer("bins01", ab_to_ab01(ab_bins()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.body(x)
        if self.training:
            return logits
        # the largest logit subtracted first: no logit divided by a small temperature overflows
        p = torch.softmax((logits - logits.amax(dim=1, keepdim=True)) / self.temperature, dim=1)
        ab01 = torch.einsum("nqhw,qc->nchw", p, self.bins01)
        if self.chroma_gain != 1:
            mean = ab01.mean(dim=(2, 3), keepdim=True)
            ab01 = torch.lerp(mean, ab01, self.chroma_gain).clamp(0, 1)
        return F.interpolate(ab01, size=x.shape[-2:], mode="bilinear", align_corners=False)


class Architecture(NamedTuple):
    """A colorizer body, as a run's config names it (--arch)."""
    build: Callable          # (config, **head settings) -> the network
    name: Callable           # (config, text after the kind) -> its name in reports
    downsamplings: Callable  # config -> how often it halves its input (a photo's sides: multiples of 2 ** that)


ARCHITECTURES = {
    "seed": Architecture(lambda c, **head: SeedColorizer(c["max_channels"], c["layers"], **head),
                         lambda c, extra: f"seed{extra}, {c['max_channels']} ch, {c['layers']} layers",
                         lambda c: c["layers"]),
    "unet": Architecture(lambda c, **head: UNetColorizer(c["base_channels"], c["depth"], **head),
                         lambda c, extra: f"U-Net {c['base_channels']}x{c['depth']}{extra}",
                         lambda c: c["depth"]),
}


def _whole(low: int, high: int):
    return lambda v: type(v) is int and low <= v <= high


def _one_of(*values):
    return lambda v: isinstance(v, str) and v in values


def _number_in(bounds: tuple[float, float]):
    return lambda v: type(v) in (int, float) and bounds[0] <= v <= bounds[1]


class Setting(NamedTuple):
    """One setting a colorizer is built from: the trainers' default, and the values a checkpoint's config may hold."""
    default: object
    valid: Callable[[object], bool]


# A colorizer's architecture, as a run's config and train_colorizer.py's flags name it: the one schema of it
ARCHITECTURE_SETTINGS = {
    "arch": Setting("seed", _one_of(*ARCHITECTURES)),
    "activation": Setting("sigmoid", _one_of(*FINAL_ACTIVATIONS)),
    "max_channels": Setting(128, _whole(1, 4096)),  # seed: the widest layer
    "layers": Setting(3, _whole(2, 12)),            # seed: layers per side
    "base_channels": Setting(32, _whole(1, 1024)),  # unet: channels at full resolution
    "depth": Setting(4, _whole(1, 12)),             # unet: downsamplings
    "head": Setting("regress", _one_of("regress", "classify")),
}
IMAGE_SIZES = (8, 4096)  # the squares a network is trained on, or colours at (--size)
image_size = number_type(int, lambda v: IMAGE_SIZES[0] <= v <= IMAGE_SIZES[1],
                         f"a side from {IMAGE_SIZES[0]} to {IMAGE_SIZES[1]} pixels")
# everything a checkpoint's config may hold that its model is rebuilt or run with, checked when it is loaded
CONFIG_TYPES = {**{name: setting.valid for name, setting in ARCHITECTURE_SETTINGS.items()},
                "image_size": _whole(*IMAGE_SIZES), "temperature": _number_in(TEMPERATURES),
                "chroma_gain": _number_in(CHROMA_GAINS), "task": lambda v: v in ("regressor", "colorizer"),
                "face_scale": lambda v: v is None or type(v) is float and 0 < v <= 1}
REGRESSOR_MIN_SIZE = 2 ** 6  # SeedRegressor halves its input six times


def size_problem(config: dict, size: int) -> str | None:
    """Why the network a config describes cannot take size x size images, or None where it can: each
    downsampling halves the side, and the way back up must meet the input's size exactly."""
    if config["task"] == "regressor":
        return None if size >= REGRESSOR_MIN_SIZE else \
            f"the regressor halves its input 6 times: it needs images of at least {REGRESSOR_MIN_SIZE} pixels"
    if config.get("regressor") and size < REGRESSOR_MIN_SIZE:  # a conditioned colorizer runs its regressor first
        return f"its regressor halves its input 6 times: it needs images of at least {REGRESSOR_MIN_SIZE} pixels"
    if config.get("arch") not in ARCHITECTURES:
        return f"unknown architecture '{config.get('arch')}': use {' or '.join(ARCHITECTURES)}"
    halvings = ARCHITECTURES[config["arch"]].downsamplings(config)
    what = "--layers" if config["arch"] == "seed" else "--depth"
    if config.get("head") == "classify" and 2 ** halvings < CLASSIFY_STRIDE:
        return f"the classification head predicts at 1/{CLASSIFY_STRIDE} of the size: {what} must be at least 2"
    if size % 2 ** halvings:
        fits = [m for m in (size // 2 ** halvings * 2 ** halvings, -(-size // 2 ** halvings) * 2 ** halvings) if m]
        return (f"{what} {halvings} halves the image {halvings} times, so its side must be a multiple of "
                f"{2 ** halvings}, not {size}: prepare the data at --size {' or '.join(map(str, fits))}, "
                f"or use a smaller {what}")
    return None


def build_model(config: dict) -> nn.Module:
    """The network a run's config describes (the same function rebuilds it from a checkpoint)."""
    if config["task"] == "regressor":
        return SeedRegressor()
    if config["arch"] not in ARCHITECTURES:
        raise UserError(f"unknown architecture '{config['arch']}': use {' or '.join(ARCHITECTURES)}")
    in_channels = 3 if config.get("regressor") else 1  # L, plus the regressor's mean a and b as planes
    classify = config.get("head") == "classify"
    head = dict(activation="none", out_channels=len(ab_bins()), out_stride=CLASSIFY_STRIDE) if classify else \
        dict(activation=config["activation"])
    body = ARCHITECTURES[config["arch"]].build(config, in_channels=in_channels, **head)
    return ClassifyingColorizer(body, config.get("temperature", DEFAULT_TEMPERATURE),
                                config.get("chroma_gain", 1.0)) if classify else body


def colorizer_input(L: torch.Tensor, regressor: Callable | None = None) -> torch.Tensor:
    """The colorizer's input: L, plus constant planes of the regressor's mean (a, b) of L when conditioned."""
    if regressor is None:
        return L
    mean_ab = regressor(L)
    return torch.cat([L, mean_ab[:, :, None, None].expand(-1, -1, *L.shape[-2:])], dim=1)


def colorize_lab01(model: nn.Module, lab01: torch.Tensor, regressor: Callable | None = None,
                   amp=False) -> torch.Tensor:
    """Predicted Lab01 image: the input L merged with the predicted ab (the seed's loss target form); amp: the
    networks under bfloat16 autocast."""
    L = lab01[:, :1]
    with torch.autocast(lab01.device.type, dtype=torch.bfloat16, enabled=amp):
        ab01 = model(colorizer_input(L, regressor))
    return torch.cat([L, ab01.float()], dim=1)


# ---------------------------------------------------------------------------------------------
# Checkpoints. A checkpoint file is {"model": the weights, "run": the run record}, the run record {"config": every
# setting, "history": the loss history, "regressor": the weights of the frozen regressor a colorizer was trained
# with, where it was}: a file explains itself and loads with weights_only=True. training.py's last.pt adds what
# resuming needs (ignite's objects beside these two; "epoch_loss" in the run record). Written through
# checkpoint_contents and run_record, read through load_checkpoint and run_record_of: nowhere else.


def checkpoint_contents(model, run) -> dict:
    """What a checkpoint holds, by name: the model's weights (or the model: ignite's Checkpoint saves each object's
    state_dict) and the run record (or the object whose state_dict it is)."""
    return {"model": model, "run": run}


def run_record(config: dict, history: dict, regressor: dict | None = None) -> dict:
    """A checkpoint's run record: the run's config, its history, and its regressor's weights if it had one."""
    return {"config": config, "history": history, **({"regressor": regressor} if regressor is not None else {})}


def run_record_of(checkpoint) -> dict | None:
    """A loaded checkpoint's run record, or None where it is not a checkpoint of this project's shape."""
    run = checkpoint.get("run") if isinstance(checkpoint, dict) and "model" in checkpoint else None
    return run if isinstance(run, dict) and isinstance(run.get("config"), dict) else None


HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_mse")  # history.json: a list of numbers each, one an epoch


def new_history() -> dict:
    """A run's history before its first epoch: HISTORY_KEYS, and the training speed of each epoch."""
    return {key: [] for key in (*HISTORY_KEYS, "train_images_per_s")}


def is_history(history) -> bool:
    """Whether history is a training history as the trainers write it (history.json, and inside checkpoints)."""
    if not isinstance(history, dict) or not all(isinstance(history.get(k), list) for k in HISTORY_KEYS):
        return False
    columns = [history[k] for k in HISTORY_KEYS]
    return len({len(c) for c in columns}) == 1 and len(columns[0]) > 0 and \
        all(type(v) in (int, float) for c in columns for v in c)


# last.pt also holds ignite's saved random states, NumPy's among them: allow just those types
# (an array's pickle names NumPy's reconstructor, reached here through its public __reduce__)
_NUMPY_RNG_GLOBALS = [np.empty(0).__reduce__()[0], np.ndarray, np.dtype, np.dtypes.UInt32DType]


def torch_load(path: str | Path, device="cpu") -> dict:
    """torch.load with weights_only=True: tensors, containers, numbers and NumPy RNG state only."""
    with torch.serialization.safe_globals(_NUMPY_RNG_GLOBALS):
        return torch.load(path, map_location=device, weights_only=True)


def load_checkpoint(path: str | Path, task: str | None = None, device="cpu"):
    """-> (model in eval mode, config, checkpoint dict); a clear UserError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train one with train_colorizer.py or train_regressor.py")
    try:
        ckpt = torch_load(path, device)
    except Exception as exc:  # pickle, zip and unsupported-type errors all mean "not our checkpoint"
        raise UserError(f"{path}: not a checkpoint of this project ({type(exc).__name__}); "
                        "pass a best.pt or last.pt written by the training scripts") from None
    run = run_record_of(ckpt)
    config = run["config"] if run is not None else None
    if config is None or "task" not in config:
        raise UserError(f"{path}: not a checkpoint of this project; pass a best.pt or last.pt from a run folder")
    if task is not None and config["task"] != task:
        raise UserError(f"{path}: this is a {config['task']} checkpoint, but a {task} checkpoint is needed here")
    wrong = [k for k, kind in CONFIG_TYPES.items() if k in config and not kind(config[k])]
    if wrong:
        raise UserError(f"{path}: its config holds an impossible {wrong[0]} ({config[wrong[0]]!r}); "
                        "pass a checkpoint written by the training scripts")
    try:
        model = build_model(config)
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = f"no setting {exc}" if isinstance(exc, KeyError) else escape_bytes(exc).splitlines()[0][:200]
        raise UserError(f"{path}: its weights do not fit the model its config describes ({reason}); "
                        "pass a checkpoint written by the training scripts") from None
    check_finite(model, path)
    return model.to(device).eval(), config, ckpt


def check_finite(model: nn.Module, path) -> None:
    """A checkpoint whose weights (or batch-norm statistics) hold NaN or inf would colour with NaN: refused."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{path}: its weights hold numbers that are not finite (NaN or inf, in {name}): the "
                            "training that wrote it diverged or the file is damaged; pass another checkpoint")


def load_colorizer(path: str | Path, device, regressor_path: str | Path | None = None):
    """-> (colorizer, its regressor or None, config, checkpoint dict): the regressor it was trained with (its
    weights travel inside the checkpoint) unless regressor_path names another."""
    model, config, ckpt = load_checkpoint(path, task="colorizer", device=device)
    if not config.get("regressor"):
        if regressor_path:
            raise UserError(f"{path}: this colorizer was trained without a regressor; leave out --regressor")
        return model, None, config, ckpt
    if regressor_path:
        return model, load_checkpoint(regressor_path, task="regressor", device=device)[0], config, ckpt
    carried = run_record_of(ckpt).get("regressor")
    if carried is None:  # a checkpoint from before colorizers carried their regressor: only by absolute path
        if not Path(config["regressor"]).is_absolute():
            raise UserError(f"{path}: trained with the regressor {config['regressor']}, a path relative to a folder "
                            "it does not record; pass that checkpoint with --regressor")
        return model, load_checkpoint(config["regressor"], task="regressor", device=device)[0], config, ckpt
    regressor = SeedRegressor()
    try:
        regressor.load_state_dict(carried)
        check_finite(regressor, path)
    except (TypeError, RuntimeError) as exc:
        raise UserError(f"{path}: the regressor it carries does not load ({escape_bytes(exc).splitlines()[0][:200]}); "
                        "pass a regressor checkpoint with --regressor") from None
    return model, regressor.to(device).eval(), config, ckpt


# ---------------------------------------------------------------------------------------------
# Figures


def save_figure(fig, path: str | Path) -> None:
    """A matplotlib Figure (made without pyplot: no display, nothing to close) as a PNG, at its own dpi, in RGB:
    the figures are opaque, and an alpha channel would add a tenth to the photo grids' bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image  # matplotlib's own image library

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    # zlib's default level: 2% more bytes than optimize=True, a third of the time
    atomic_write(path, lambda tmp: rgb.save(tmp, format="PNG", dpi=(fig.dpi, fig.dpi)))


def plot_loss_curves(histories: dict, path: str | Path, title: str) -> None:
    """Training (solid) and validation (dashed) loss per epoch, log scale, of every {name: history}."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, h in histories.items():
        line, = ax.plot(h["epoch"], h["train_loss"], label=f"{escape_bytes(name)} train")
        ax.plot(h["epoch"], h["val_loss"], "--", color=line.get_color(), label=f"{escape_bytes(name)} validation")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=escape_bytes(title))  # a folder's name may not be UTF-8
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)

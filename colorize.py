"""Colorize your own photos with a trained colorizer: files or whole folders, any size.

The network sees the photo's lightness resized to its input size; its predicted colour (a*, b*)
is upsampled to the photo's own size and merged with the photo's full-resolution lightness, so
every detail of the original is kept. Colour photos lose their colour first; 16-bit images stay
16-bit and transparency is kept. Outputs mirror the input tree under --out.

    python colorize.py old_photos/ --checkpoint runs/colorizer/best.pt --out colorized/
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from common import (IMAGE_SUFFIXES, BadImage, UserError, atomic_write, colorizer_input, exit_on_user_error,
                    load_checkpoint, read_image, resolve_device)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders (recursive)")
    p.add_argument("--checkpoint", required=True, help="a colorizer checkpoint (best.pt of a training run)")
    p.add_argument("--out", type=Path, required=True, help="output folder; inputs are never overwritten")
    p.add_argument("--regressor", default=None,
                   help="regressor checkpoint for a conditioned colorizer (default: the one it was trained with)")
    p.add_argument("--size", type=int, default=None, help="network input size (default: the training size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--side-by-side", action="store_true", help="also write NAME_compare.EXT: gray | colour")
    p.add_argument("--temperature", type=float, default=None,
                   help="classification checkpoints: annealed-mean temperature (default: the trained one)")
    args = p.parse_args(argv)
    if args.batch_size < 1 or (args.size is not None and args.size < 16):
        p.error("--batch-size must be >= 1 and --size >= 16")
    return args


def collect(inputs: list[Path]):
    """-> [(source file, path relative to the output folder)], [(file, reason) for non-images]."""
    jobs, skipped = [], []
    for item in inputs:
        if item.is_file():
            jobs.append((item, Path(item.name)))
        elif item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    jobs.append((path, path.relative_to(item)))
                elif not path.name.startswith("."):
                    skipped.append((path, "not an image file"))
        else:
            raise UserError(f"{item}: no such file or folder")
    return jobs, skipped


def network_shape(h: int, w: int, size: int, multiple: int) -> tuple[int, int]:
    """Short side -> size, long side in proportion, both multiples of what the network halves to."""
    scale = size / min(h, w)
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (h, w))


class Colorizer:
    def __init__(self, checkpoint, regressor_path, size, device):
        self.model, self.config, _ = load_checkpoint(checkpoint, task="colorizer", device=device)
        regressor_path = regressor_path or self.config.get("regressor")
        self.regressor = load_checkpoint(regressor_path, "regressor", device)[0] if regressor_path else None
        self.size = size or self.config.get("image_size", 128)
        self.multiple = 2 ** (self.config["layers"] if self.config["arch"] == "seed" else self.config["depth"])
        self.device = device

    @torch.no_grad()
    def predict_ab(self, L_small: np.ndarray) -> np.ndarray:
        """A batch of L in [0, 100], (N, h, w) -> ab in Lab units, (N, h, w, 2)."""
        L = torch.from_numpy(L_small / 100).float()[:, None].to(self.device)
        mean_ab = None
        if self.regressor is not None:  # the regressor was trained on squares of the training size
            mean_ab = self.regressor(torch.nn.functional.interpolate(L, size=(self.size, self.size), mode="area"))
        ab01 = self.model(colorizer_input(L, mean_ab))
        return (ab01 * 255 - 128).permute(0, 2, 3, 1).cpu().numpy()


def load(path: Path, colorizer: Colorizer):
    rgb, alpha, bits = read_image(path)
    # OpenCV's float Lab conversion follows the same CIE formulas as the training code
    L = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[..., 0]
    h, w = L.shape
    nh, nw = network_shape(h, w, colorizer.size, colorizer.multiple)
    L_small = cv2.resize(L, (nw, nh), interpolation=cv2.INTER_AREA if nh < h else cv2.INTER_CUBIC)
    return {"L": L, "L_small": L_small, "alpha": alpha, "depth16": bits == 16}


def encode(image: np.ndarray, suffix: str, depth16: bool) -> bytes:
    """RGB(A) float in [0, 1] -> bytes in the input's format (16 bits where the format holds them)."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    if suffix in {".jpg", ".jpeg", ".webp", ".bmp", ".jp2"} or not depth16:
        data = cv2.convertScaleAbs(bgr, alpha=255)  # rounds and saturates to 8 bits in one pass
    else:
        data = np.clip(np.rint(bgr * 65535), 0, 65535).astype(np.uint16)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in {".jpg", ".jpeg"} else []
    ok, buf = cv2.imencode(suffix, data, params)
    if not ok:
        raise BadImage(f"OpenCV cannot write {suffix} files")
    return buf.tobytes()


def finish(item: dict, ab_small: np.ndarray, target: Path, side_by_side: bool) -> None:
    h, w = item["L"].shape
    ab = cv2.resize(ab_small, (w, h), interpolation=cv2.INTER_CUBIC)
    rgb = np.clip(cv2.cvtColor(np.dstack([item["L"], ab]).astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)
    suffix = target.suffix.lower() if target.suffix.lower() in IMAGE_SUFFIXES - {".pgm"} else ".png"
    target = target.with_suffix(suffix)
    out = np.dstack([rgb, item["alpha"]]) if item["alpha"] is not None and suffix != ".jpg" else rgb
    data = encode(out, suffix, item["depth16"])
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
    if side_by_side:
        gray = np.repeat((item["L"] / 100)[..., None], 3, axis=2)
        pair = encode(np.concatenate([gray, rgb], axis=1), suffix, item["depth16"])
        compare = target.with_name(f"{target.stem}_compare{suffix}")
        atomic_write(compare, lambda tmp: Path(tmp).write_bytes(pair))


def main():
    from tqdm import tqdm

    args = parse_args()
    device = resolve_device(args.device)
    colorizer = Colorizer(args.checkpoint, args.regressor, args.size, device)
    if args.temperature is not None:
        if colorizer.config.get("head") != "classify":
            raise UserError(f"{args.checkpoint}: --temperature applies to classification checkpoints only")
        colorizer.model.temperature = args.temperature
    jobs, skipped = collect(args.inputs)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{args.out}: cannot create the output folder ({exc.strerror})") from None
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)

    done, failed = 0, []
    pending = []  # loaded images waiting for a batch of one network-input shape

    def flush():
        nonlocal done
        if not pending:
            return
        ab = colorizer.predict_ab(np.stack([item["L_small"] for _, _, item in pending]))
        for (path, target, item), ab_small in zip(pending, ab):
            try:
                finish(item, ab_small, target, args.side_by_side)
                done += 1
            except (BadImage, OSError) as exc:
                failed.append((path, str(exc)))
                tqdm.write(f"failed {path}: {exc}", file=sys.stderr)
        pending.clear()

    for path, relative in tqdm(jobs, unit="image", disable=not sys.stderr.isatty()):
        target = args.out / relative
        if target.resolve() == path.resolve():
            failed.append((path, "the output would overwrite the input; choose another --out"))
            tqdm.write(f"failed {path}: {failed[-1][1]}", file=sys.stderr)
            continue
        try:
            item = load(path, colorizer)
        except (BadImage, OSError) as exc:
            failed.append((path, str(exc)))
            tqdm.write(f"failed {path}: {exc}", file=sys.stderr)
            continue
        if pending and pending[0][2]["L_small"].shape != item["L_small"].shape:
            flush()
        pending.append((path, target, item))
        if len(pending) == args.batch_size:
            flush()
    flush()

    print(f"{done} colorized into {args.out}, {len(failed)} failed, {len(skipped)} skipped (not images)")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    exit_on_user_error(main)

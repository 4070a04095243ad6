"""Colorize your own photos with a trained colorizer: files or whole folders, any size.

The network sees the photo's lightness resized to its input size; its predicted colour (a*, b*)
is upsampled to the photo's own size and merged with the photo's full-resolution lightness, so
every detail of the original is kept. Colour photos lose their colour first; 16-bit images stay
16-bit and transparency is kept.

Outputs mirror the inputs under --out: a file given by name goes to OUT/NAME, a folder's images to
OUT/their path inside it, in the input's format (PNG where it cannot be written). Every input gets
its own output: where two would take one name (two photo.jpg from different folders), or the name
holds a file that colorize did not write, the later one is written as NAME-2.EXT (then -3, ...).
Nothing is read from inside --out, and only files colorize wrote there (listed in OUT/.colorized.json)
are ever replaced.

    python colorize.py old_photos/ --checkpoint runs/colorizer/best.pt --out colorized/
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from common import (IMAGE_SUFFIXES, L_RANGE, ArgumentParser, BadImage, UserError, ab_to_lab_units, atomic_write,
                    colorizer_input, exit_on_user_error, load_colorizer, positive_float, positive_int, printable,
                    read_image, real_path, resolve_device, writable_folder, write_json)

RECORD = ".colorized.json"  # inside --out: the outputs colorize wrote there, the only files it replaces
WRITTEN_SUFFIXES = IMAGE_SUFFIXES - {".pgm", ".gif"}  # formats written as the input's; others become PNG


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders (recursive)")
    p.add_argument("--checkpoint", required=True, help="a colorizer checkpoint (best.pt of a training run)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: never read from, and only colorize's own earlier outputs are replaced; "
                        "a name taken by another input or file gets -2, -3, ...")
    p.add_argument("--regressor", default=None,
                   help="regressor checkpoint for a conditioned colorizer (default: the one it was trained with)")
    p.add_argument("--size", type=positive_int, default=None, help="network input size (default: the training size)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="photos of one network-input shape per batch")
    p.add_argument("--max-megapixels", type=positive_float, default=64,
                   help="full-resolution megapixels held for one batch, whatever the photos' sizes: memory is about "
                        "4 bytes per held pixel (8 with transparency) plus about 60 per pixel of the photo being "
                        "written; raise it to batch more large photos, lower it on a small machine")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--side-by-side", action="store_true", help="also write NAME_compare.EXT: gray | colour")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="classification checkpoints: annealed-mean temperature (default: the trained one)")
    args = p.parse_args(argv)
    if args.size is not None and args.size < 16:
        p.error("argument --size: must be at least 16")
    return args


def collect(inputs: list[Path], out: Path):
    """-> [(source file, its path relative to --out)], [(path, reason) for what is passed over]. Nothing
    inside --out is read: a folder that holds --out is searched around it."""
    inside_out = real_path(out)
    jobs, skipped = [], []
    for item in inputs:
        if real_path(item).is_relative_to(inside_out):
            skipped.append((item, "it lies inside --out; pass an --out outside the inputs"))
            continue
        if item.is_dir():  # --out may lie inside it (DIR --out DIR/colorized): its outputs are not inputs
            entries = [(path, path.relative_to(item)) for path in sorted(item.rglob("*"))
                       if not real_path(path).is_relative_to(inside_out)]
        elif item.exists() or item.is_symlink():
            entries = [(item, Path(item.name))]
        else:
            raise UserError(f"{item}: no such file or folder")
        for path, relative in entries:
            if path.suffix.lower() in IMAGE_SUFFIXES:  # files, and folders or links so named: read_image says
                jobs.append((path, relative))
            elif path.is_file() and not path.name.startswith("."):
                skipped.append((path, "not an image file"))
    return jobs, skipped


def read_record(out: Path) -> set[str]:
    """The outputs (paths relative to --out) that colorize wrote there before."""
    try:
        return set(json.loads((out / RECORD).read_text())["written"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def assign_outputs(jobs, out: Path, ours: set[str], side_by_side: bool) -> list[tuple[Path, Path]]:
    """-> [(source, output path)]: every source its own output; a name already given to an earlier
    input, or held by a file colorize did not write, moves on to NAME-2.EXT, NAME-3.EXT, ..."""
    taken, planned = set(), []

    def free(relative: Path) -> bool:
        names = [relative] + ([compare_name(relative)] if side_by_side else [])
        return all(str(n).lower() not in taken and (str(n) in ours or not (out / n).exists()) for n in names)

    for path, relative in jobs:
        suffix = relative.suffix.lower() if relative.suffix.lower() in WRITTEN_SUFFIXES else ".png"
        base = candidate = relative.with_suffix(suffix)
        n = 2
        while not free(candidate):
            candidate, n = base.with_name(f"{base.stem}-{n}{suffix}"), n + 1
        taken.update(str(c).lower() for c in [candidate] + ([compare_name(candidate)] if side_by_side else []))
        planned.append((path, candidate))
    return planned


def compare_name(relative: Path) -> Path:
    return relative.with_name(f"{relative.stem}_compare{relative.suffix}")


def network_shape(h: int, w: int, size: int, multiple: int) -> tuple[int, int]:
    """Short side -> size, long side in proportion, both multiples of what the network halves to."""
    scale = size / min(h, w)
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (h, w))


class Colorizer:
    def __init__(self, checkpoint, regressor_path, size, device):
        self.model, regressor, self.config, _ = load_colorizer(checkpoint, device, regressor_path)
        self.size = size or self.config.get("image_size", 128)
        # the regressor was trained on squares of the training size: it sees L resized to one
        self.regressor = None if regressor is None else \
            (lambda L: regressor(F.interpolate(L, size=(self.size, self.size), mode="area")))
        self.multiple = 2 ** (self.config["layers"] if self.config["arch"] == "seed" else self.config["depth"])
        self.device = device

    @torch.no_grad()
    def predict_ab(self, L_small: np.ndarray) -> np.ndarray:
        """A batch of L in [0, 100], (N, h, w) -> ab in Lab units, (N, h, w, 2)."""
        L = torch.from_numpy(L_small / L_RANGE).float()[:, None].to(self.device)
        ab01 = self.model(colorizer_input(L, self.regressor))
        return ab_to_lab_units(ab01).permute(0, 2, 3, 1).cpu().numpy()


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
    """Merge the predicted colour with the photo's own lightness and write target (its suffix says the format)."""
    h, w = item["L"].shape
    ab = cv2.resize(ab_small, (w, h), interpolation=cv2.INTER_CUBIC)
    rgb = np.clip(cv2.cvtColor(np.dstack([item["L"], ab]).astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)
    suffix = target.suffix
    out = np.dstack([rgb, item["alpha"]]) if item["alpha"] is not None and suffix != ".jpg" else rgb
    data = encode(out, suffix, item["depth16"])
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
    if side_by_side:
        gray = np.repeat((item["L"] / L_RANGE)[..., None], 3, axis=2)
        pair = encode(np.concatenate([gray, rgb], axis=1), suffix, item["depth16"])
        compare = compare_name(target)
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
    jobs, skipped = collect(args.inputs, args.out)
    writable_folder(args.out)
    ours = read_record(args.out)
    planned = assign_outputs(jobs, args.out, ours, args.side_by_side)
    for path, reason in skipped:
        print(f"skipped {printable(path)}: {reason}", file=sys.stderr)
    for (path, relative), (_, output) in zip(jobs, planned):
        if output.with_suffix("") != relative.with_suffix(""):
            print(f"{printable(path)} -> {printable(args.out / output)} (its name was taken)", file=sys.stderr)

    done, failed = 0, []
    pending = []  # loaded images waiting for a batch of one network-input shape
    budget = args.max_megapixels * 1e6

    def fail(path, reason):
        failed.append(path)
        tqdm.write(f"failed {printable(path)}: {printable(reason)}", file=sys.stderr)

    def flush():
        nonlocal done
        if not pending:
            return
        ab = colorizer.predict_ab(np.stack([item["L_small"] for _, _, item in pending]))
        # listed before they are written: a run killed now still knows these files are its own
        ours.update(str(output) for _, output, _ in pending)
        if args.side_by_side:
            ours.update(str(compare_name(output)) for _, output, _ in pending)
        write_json(args.out / RECORD, {"written": sorted(ours)})
        for (path, output, item), ab_small in zip(pending, ab):
            try:
                finish(item, ab_small, args.out / output, args.side_by_side)
                done += 1
            except (BadImage, OSError) as exc:
                fail(path, exc)
        pending.clear()

    for path, output in tqdm(planned, unit="image", disable=not sys.stderr.isatty()):
        try:
            item = load(path, colorizer)
        except (BadImage, OSError) as exc:
            fail(path, exc)
            continue
        held = sum(waiting["L"].size for _, _, waiting in pending)
        if pending and (pending[0][2]["L_small"].shape != item["L_small"].shape or held + item["L"].size > budget):
            flush()
        pending.append((path, output, item))
        if len(pending) == args.batch_size:
            flush()
    flush()

    print(f"{done} colorized into {printable(args.out)}, {len(failed)} failed, {len(skipped)} skipped")
    if failed or not done:
        sys.exit(1)


if __name__ == "__main__":
    exit_on_user_error(main)

"""Colorize your own photos with a trained colorizer: files or whole folders, any size.

The network sees the photo's lightness resized to its input size; its predicted colour (a*, b*)
is upsampled to the photo's own size and merged with the photo's full-resolution lightness, so
every detail of the original is kept. Colour photos lose their colour first; 16-bit images stay
16-bit where the format holds 16 bits, and transparency is kept.

Outputs mirror the inputs under --out: a file given by name goes to OUT/NAME, a folder's images to
OUT/their path inside it, in the input's format (PNG where it cannot be written). Every input gets
its own output: where two would take one name (two photo.jpg from different folders), or the name
holds a file that colorize did not write, the later one is written as NAME-2.EXT (then -3, ...).
Nothing is read from inside --out, and an output is replaced only by the output of the same input file
(OUT/.colorized.json records which input each output came from); any number of runs may write into one
--out at once (a job array): each claims its names under a lock, so every output reported is kept.
Outputs keep the input's EXIF (orientation reset: the pixels are upright), resolution and say sRGB
(an embedded profile), where the format holds them.

    python colorize.py old_photos/ --out colorized/          # the shipped model (models/README.md)
    python colorize.py old_photos/ --checkpoint runs/colorizer/best.pt --out colorized/
"""
import io
import json
import os
import struct
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from common import (ARCHITECTURES, IMAGE_SUFFIXES, L_RANGE, MAX_IMAGE_SIZE, ArgumentParser, BadImage, UserError,
                    ab01_to_ab, atomic_write, bfloat16_autocast, colorizer_input, exit_on_user_error, load_colorizer,
                    positive_float, positive_int, printable, read_image, real_path, remove_stale_temporaries,
                    resolve_device, srgb_profile, writable_folder, write_json)

RECORD = ".colorized.json"  # inside --out: {output: the input file it came from}, written under record_lock
WRITTEN_SUFFIXES = IMAGE_SUFFIXES - {".pgm", ".gif"}  # formats written as the input's; others become PNG
SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "face_colorizer.pt"  # beside the script, not the cwd
MAX_ASPECT = 8  # the network sees at most --size x MAX_ASPECT*--size: a thin strip is shrunk to fit, not a crash
# memory per pixel of the photo being colorized, at its peak: decoded float RGB, Lab, the upsampled colour, the
# output and its encoding (about 60, from benchmarks/scale.py's figures; 64 leaves a little room)
WORKING_BYTES_PER_PIXEL = 64


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders (recursive)")
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_MODEL,
                   help="a colorizer checkpoint (best.pt of a training run); default: the model shipped in models/ "
                        "(faces from the wild: see models/README.md)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: never read from; an earlier output is replaced only by the output of the same "
                        "input file; a name taken by another input or file gets -2, -3, ...")
    p.add_argument("--regressor", default=None,
                   help="regressor checkpoint for a conditioned colorizer (default: the one it was trained with)")
    p.add_argument("--size", type=positive_int, default=None, help="network input size (default: the training size)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="photos of one network-input shape per batch")
    p.add_argument("--max-megapixels", type=positive_float, default=64,
                   help="full-resolution megapixels held for one batch, whatever the photos' sizes: memory is about "
                        "4 bytes per held pixel (8 with transparency) plus about 60 per pixel of the photo being "
                        "written; raise it to batch more large photos, lower it on a small machine")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", action="store_true",
                   help="the network in bfloat16 where the device has it: faster; colours move by up to a few "
                        "Lab units (benchmarks/README.md)")
    p.add_argument("--side-by-side", action="store_true", help="also write NAME_compare.EXT: gray | colour")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="classification checkpoints: annealed-mean temperature (default: the checkpoint's)")
    p.add_argument("--chroma-gain", type=positive_float, default=None,
                   help="classification checkpoints: each photo's colours spread from its mean colour by this gain "
                        "(above 1: more vivid; default: the checkpoint's)")
    args = p.parse_args(argv)
    if args.size is not None and not 16 <= args.size <= MAX_IMAGE_SIZE:
        p.error(f"argument --size: must be from 16 to {MAX_IMAGE_SIZE}")
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


@contextmanager
def record_lock(out: Path):
    """A lock on the --out folder itself, held while a run reads the record, claims its output names and writes
    them down: runs into one --out (a job array) take turns for that moment only, and never take one name twice."""
    import fcntl  # POSIX: imported here, so that the rest of the project imports anywhere

    folder = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # frees the lock


def read_record(out: Path) -> dict[str, str | None]:
    """{output (relative to --out): the input file it came from} for what colorize wrote there before (an older
    record lists outputs alone: their input is unknown, so no run replaces them)."""
    try:
        written = json.loads((out / RECORD).read_text())["written"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return written if isinstance(written, dict) else dict.fromkeys(written) if isinstance(written, list) else {}


def claim_outputs(jobs, out: Path, side_by_side: bool) -> list[Path]:
    """-> an output path (relative to --out) for every job, written down in the record before any is written:
    an output of the same input file is replaced; a name that another input's output, a claim of a run writing
    now or a file colorize did not write holds moves on to NAME-2.EXT, NAME-3.EXT, ..."""
    with record_lock(out):
        record = read_record(out)
        lowered = {name.lower() for name in record}  # case-insensitive file systems: Photo.jpg is photo.jpg
        taken, planned = set(), []
        for path, relative in jobs:
            source = str(real_path(path))
            suffix = relative.suffix.lower() if relative.suffix.lower() in WRITTEN_SUFFIXES else ".png"
            base = candidate = relative.with_suffix(suffix)
            n = 2
            while not all(name_is_free(str(name), source, record, lowered, taken, out)
                          for name in output_names(candidate, side_by_side)):
                candidate, n = base.with_name(f"{base.stem}-{n}{suffix}"), n + 1
            for name in output_names(candidate, side_by_side):
                taken.add(str(name).lower())
                record[str(name)] = source
            planned.append(candidate)
        write_json(out / RECORD, {"written": record})
    return planned


def name_is_free(name: str, source: str, record: dict, lowered: set, taken: set, out: Path) -> bool:
    """Whether this run may write output name for source: not claimed by it already, and either recorded as
    source's own output or neither recorded nor on disk."""
    if name.lower() in taken:
        return False
    if name in record:
        return record[name] == source
    return name.lower() not in lowered and not (out / name).exists() and not (out / name).is_symlink()


def output_names(relative: Path, side_by_side: bool) -> list[Path]:
    return [relative, compare_name(relative)] if side_by_side else [relative]


def compare_name(relative: Path) -> Path:
    return relative.with_name(f"{relative.stem}_compare{relative.suffix}")


def network_shape(h: int, w: int, size: int, multiple: int) -> tuple[int, int]:
    """Short side -> size, long side in proportion, both multiples of what the network halves to; a photo
    longer than MAX_ASPECT to one is shrunk until its long side is MAX_ASPECT * size (a 20000 x 2 strip
    must not become a network input of 128 x 1,280,000)."""
    scale = min(size / min(h, w), MAX_ASPECT * size / max(h, w))
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (h, w))


class Colorizer:
    def __init__(self, checkpoint, regressor_path, size, device, amp=False):
        self.model, regressor, self.config, _ = load_colorizer(checkpoint, device, regressor_path)
        self.size = size or self.config.get("image_size", 128)
        # the regressor was trained on squares of the training size: it sees L resized to one
        self.regressor = None if regressor is None else \
            (lambda L: regressor(F.interpolate(L, size=(self.size, self.size), mode="area")))
        self.multiple = 2 ** ARCHITECTURES[self.config["arch"]].downsamplings(self.config)
        self.device, self.amp = device, amp

    @torch.no_grad()
    def predict_ab(self, L_small: np.ndarray) -> np.ndarray:
        """A batch of L in [0, 100], (N, h, w) -> ab in Lab units, (N, h, w, 2)."""
        L = torch.from_numpy(L_small / L_RANGE).float()[:, None].to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            ab01 = self.model(colorizer_input(L, self.regressor))
        return ab01_to_ab(ab01.float()).permute(0, 2, 3, 1).cpu().numpy()


def load(path: Path, colorizer: Colorizer):
    photo = read_image(path, bytes_per_pixel=WORKING_BYTES_PER_PIXEL)
    # OpenCV's float Lab conversion follows the same CIE formulas as the training code; L copied out of the
    # Lab array, so that a photo waiting for its batch holds 4 bytes a pixel, not the whole Lab image's 12
    L = cv2.cvtColor(photo.rgb, cv2.COLOR_RGB2Lab)[..., 0].copy()
    h, w = L.shape
    nh, nw = network_shape(h, w, colorizer.size, colorizer.multiple)
    L_small = cv2.resize(L, (nw, nh), interpolation=cv2.INTER_AREA if nh < h else cv2.INTER_CUBIC)
    return {"L": L, "L_small": L_small, "alpha": photo.alpha, "depth16": photo.bits == 16, "exif": photo.exif,
            "dpi": photo.dpi}


_PILLOW_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                   ".bmp": "BMP"}
SIXTEEN_BIT_SUFFIXES = {".png", ".tif", ".tiff", ".jp2", ".ppm", ".pnm"}  # 16 bits out where 16 came in


def encode(image: np.ndarray, suffix: str, depth16: bool, exif: bytes | None = None, dpi=None) -> bytes:
    """RGB(A) float in [0, 1] -> bytes in the input's format, 16 bits where the input had them and the format
    holds them, with the input's EXIF and resolution and an sRGB profile where the format holds them (8-bit
    files through Pillow; 16-bit PNG through OpenCV, the metadata added as PNG chunks; 16-bit TIFF with its
    resolution only; JPEG 2000, PPM and PNM with none)."""
    from PIL import Image

    srgb = srgb_profile()
    if not (depth16 and suffix in SIXTEEN_BIT_SUFFIXES) and suffix in _PILLOW_FORMATS:
        fmt = _PILLOW_FORMATS[suffix]
        options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
        if fmt != "BMP":
            options.update(icc_profile=srgb, **({"exif": exif} if exif else {}))
        if dpi and fmt != "WEBP":
            options["dpi"] = dpi
        buffer = io.BytesIO()
        Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)).save(buffer, format=fmt, **options)
        return buffer.getvalue()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    data = np.clip(np.rint(bgr * 65535), 0, 65535).astype(np.uint16) if depth16 else cv2.convertScaleAbs(bgr, alpha=255)
    params = [cv2.IMWRITE_TIFF_XDPI, round(dpi[0]), cv2.IMWRITE_TIFF_YDPI, round(dpi[1]), cv2.IMWRITE_TIFF_RESUNIT, 2] \
        if dpi and suffix in {".tif", ".tiff"} else []
    ok, buf = cv2.imencode(suffix, data, params)
    if not ok:
        raise BadImage(f"OpenCV cannot write {suffix} files", "convert it to PNG or JPEG first")
    return with_png_metadata(buf.tobytes(), srgb, exif, dpi) if suffix == ".png" else buf.tobytes()


def with_png_metadata(png: bytes, icc: bytes, exif: bytes | None, dpi) -> bytes:
    """A PNG with an iCCP (the profile), eXIf and pHYs (resolution) chunk added after its header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    extra = chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(icc))
    if exif:
        extra += chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    if dpi:
        extra += chunk(b"pHYs", struct.pack(">IIB", round(dpi[0] / 0.0254), round(dpi[1] / 0.0254), 1))
    end_of_header = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, its CRC
    return png[:end_of_header] + extra + png[end_of_header:]


def finish(item: dict, ab_small: np.ndarray, target: Path, side_by_side: bool) -> None:
    """Merge the predicted colour with the photo's own lightness and write target (its suffix says the format)."""
    if not np.isfinite(ab_small).all():  # never an image computed from NaN
        raise BadImage("the network's colour for it is not a finite number (NaN or inf): nothing written",
                       "the checkpoint may be damaged: try another")
    h, w = item["L"].shape
    ab = cv2.resize(ab_small, (w, h), interpolation=cv2.INTER_CUBIC)
    rgb = np.clip(cv2.cvtColor(np.dstack([item["L"], ab]).astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)
    suffix = target.suffix
    out = np.dstack([rgb, item["alpha"]]) if item["alpha"] is not None and suffix not in {".jpg", ".jpeg"} else rgb
    data = encode(out, suffix, item["depth16"], item["exif"], item["dpi"])
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
    if side_by_side:
        gray = np.repeat((item["L"] / L_RANGE)[..., None], 3, axis=2)
        pair = encode(np.concatenate([gray, rgb], axis=1), suffix, item["depth16"], item["exif"], item["dpi"])
        compare = compare_name(target)
        atomic_write(compare, lambda tmp: Path(tmp).write_bytes(pair))


def main():
    from tqdm import tqdm

    args = parse_args()
    device = resolve_device(args.device)
    colorizer = Colorizer(args.checkpoint, args.regressor, args.size, device,
                          bfloat16_autocast(device.type, args.amp, "colorizing"))
    for flag, value in (("temperature", args.temperature), ("chroma_gain", args.chroma_gain)):
        if value is not None:
            if colorizer.config.get("head") != "classify":
                raise UserError(f"{args.checkpoint}: --{flag.replace('_', '-')} applies to classification "
                                "checkpoints only")
            setattr(colorizer.model, flag, value)
    jobs, skipped = collect(args.inputs, args.out)
    writable_folder(args.out)
    remove_stale_temporaries(args.out, recursive=True)
    planned = claim_outputs(jobs, args.out, args.side_by_side) if jobs else []
    for path, reason in skipped:
        print(f"skipped {printable(path)}: {reason}", file=sys.stderr)
    for (path, relative), output in zip(jobs, planned):
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
        for (path, output, item), ab_small in zip(pending, ab):
            try:
                finish(item, ab_small, args.out / output, args.side_by_side)
                done += 1
            except (BadImage, OSError) as exc:
                fail(path, exc)
        pending.clear()

    for (path, _), output in tqdm(list(zip(jobs, planned)), unit="image", disable=not sys.stderr.isatty()):
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

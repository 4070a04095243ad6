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
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from common import (ARCHITECTURES, L_RANGE, REGRESSOR_MIN_SIZE, ab01_to_ab, chroma_gain, colorizer_input, image_size,
                    load_colorizer, temperature)
from guards import (ArgumentParser, UserError, add_device_argument, atomic_write, bfloat16_autocast, escape_bytes,
                    exit_on_user_error, positive_float, positive_int, read_json, real_path, remove_stale_temporaries,
                    resolve_device, writable_folder, write_json)
from faces import SEEN_SMALL, Square, blend, find_faces, load_cascade_in_background, squares_to_colour
from locks import turn_in
from photos import (IMAGE_SUFFIXES, JPEG_SUFFIXES, BadImage, encode, find_inputs, lab_to_samples, output_type,
                    read_lightness)

RECORD = ".colorized.json"  # inside --out: {output: the input file it came from}, written under RECORD_LOCK
RECORD_LOCK = ".colorized.lock"  # where the system has no lock on a folder itself (Windows)
WRITTEN_SUFFIXES = IMAGE_SUFFIXES - {".pgm", ".gif"}  # formats written as the input's; others become PNG
SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "face_colorizer.pt"  # beside the script, not the cwd
BATCH_SIZE = 32  # --batch-size's default (the colours of a batch differ from one image's in the last bits)
MAX_ASPECT = 8  # the network sees at most --size x MAX_ASPECT*--size: a thin strip is shrunk to fit, not a crash
# memory per pixel of a photo being written, at its peak: L, the upsampled colour (a*, b*), the output's samples
# (up to 16-bit RGBA) and its encoding
WORKING_BYTES_PER_PIXEL = 32


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
    p.add_argument("--size", type=image_size, default=None, help="network input size (default: the training size)")
    p.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                   help="photos of one network-input shape per batch, and face squares per batch")
    p.add_argument("--max-megapixels", type=positive_float, default=64,
                   help="full-resolution megapixels held for one batch, and as many read ahead and waiting to be "
                        "written, whatever the photos' sizes: memory is about 4 bytes per held pixel (8 with "
                        "transparency) plus about 32 per pixel of each photo being written (one per core, up to 4); "
                        "raise it to batch more large photos, lower it on a small machine")
    add_device_argument(p)
    p.add_argument("--amp", action="store_true",
                   help="the network in bfloat16 where the device has it: faster; colours move by up to a few "
                        "Lab units (benchmarks/README.md)")
    p.add_argument("--side-by-side", action="store_true",
                   help="also write NAME_compare.EXT: gray | colour, the squares faces were coloured in boxed")
    p.add_argument("--faces", choices=["auto", "off"], default="auto",
                   help="auto: each face that the photo shows smaller than the model's training faces (a group photo) "
                        "is coloured in a square of its own at the training scale, then blended in; off: the whole "
                        "photo at once")
    p.add_argument("--temperature", type=temperature, default=None,
                   help="classification checkpoints: annealed-mean temperature (default: the checkpoint's)")
    p.add_argument("--chroma-gain", type=chroma_gain, default=None,
                   help="classification checkpoints: each photo's colours spread from its mean colour by this gain "
                        "(above 1: more vivid; default: the checkpoint's)")
    args = p.parse_args(argv)
    return args


def collect(inputs: list[Path], out: Path):
    """-> [(source file, its path relative to --out)], [(path, reason) for what is passed over]. Nothing
    inside --out is read: a folder that holds --out is searched around it."""
    jobs, skipped = [], []
    for item in inputs:
        found = find_inputs(item, out)
        for path in found.images:  # files, and folders or links so named: read_image says what they are
            jobs.append((path, path.relative_to(item) if item.is_dir() else Path(item.name)))
        skipped += found.unsearched + [(path, "not an image file") for path in found.others]
    return jobs, skipped


def read_record(out: Path) -> dict[str, str | None]:
    """{output (relative to --out): the input file it came from} for what colorize wrote there before (an older
    record lists outputs alone: their input is unknown, so no run replaces them). A record that cannot be read is
    never dropped (every output would be written again beside the old ones, and the old ones lost to the record):
    one line."""
    path = out / RECORD
    if not (path.exists() or path.is_symlink()):
        return {}
    record = read_json(path)
    written = record.get("written") if isinstance(record, dict) else None
    if isinstance(written, list):
        written = dict.fromkeys(written)
    if not isinstance(written, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                                for k, v in written.items()):
        raise UserError(f"{path}: damaged (it records which input each output there came from); restore it from a "
                        f"backup, or move it away (then no output there is replaced) and run again")
    return written


def claim_outputs(jobs, out: Path, side_by_side: bool) -> list[tuple[Path | None, str | None]]:
    """-> for every job, its output path (relative to --out), written down in the record before any is written,
    and why it is not the input's own name (or None); or (None, why it gets none). An output of the same input
    file is replaced; a name that another input's output, a claim of a run writing now or a file colorize did not
    write holds moves on to NAME-2.EXT, NAME-3.EXT, ...; a name too long for the file system is shortened; nothing
    is written through a link inside --out (its outputs would land outside it, among other files)."""
    with turn_in(out, RECORD_LOCK):  # runs into one --out (a job array) take turns for this moment only
        record = read_record(out)
        lowered = {name.lower() for name in record}  # case-insensitive file systems: Photo.jpg is photo.jpg
        taken, planned = set(), []
        for path, relative in jobs:
            link = link_inside(out, relative.parent)
            if link is not None:
                planned.append((None, f"its output folder {escape_bytes(link)} is a link: colorize writes only "
                                      "inside --out; remove the link, or pass another --out"))
                continue
            source = str(real_path(path))
            suffix = relative.suffix.lower() if relative.suffix.lower() in WRITTEN_SUFFIXES else ".png"
            candidate, n = fitted(relative, "", suffix), 2
            while not all(name_is_free(str(name), source, record, lowered, taken, out)
                          for name in output_names(candidate, side_by_side)):
                candidate, n = fitted(relative, f"-{n}", suffix), n + 1
            for name in output_names(candidate, side_by_side):
                taken.add(str(name).lower())
                record[str(name)] = source
            why = None if candidate.stem == relative.stem else \
                "its name was taken" if candidate.stem.startswith(relative.stem) else "its name was too long"
            planned.append((candidate, why))
        write_json(out / RECORD, {"written": record})
    return planned


def link_inside(out: Path, folder: Path) -> Path | None:
    """The first folder on the way from --out to out/folder that is a link, or None."""
    here = out
    for part in folder.parts:
        here = here / part
        if here.is_symlink():
            return here
    return None


COMPARE = "_compare"  # NAME_compare.EXT: gray | colour, with --side-by-side
NAME_BYTES = 255  # the longest file name the common file systems take (ext4, XFS, NTFS, APFS)


def fitted(relative: Path, tail: str, suffix: str) -> Path:
    """relative with tail and suffix after its stem, the stem cut (at a character) so that the name, and its
    compare name, fit in NAME_BYTES."""
    stem = os.fsencode(relative.stem)
    room = NAME_BYTES - len(os.fsencode(f"{tail}{COMPARE}{suffix}"))
    if len(stem) > room:
        while room > 0 and stem[room] & 0xC0 == 0x80:  # not inside a UTF-8 character
            room -= 1
        stem = stem[:room]
    return relative.with_name(f"{os.fsdecode(stem)}{tail}{suffix}")


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
    return relative.with_name(f"{relative.stem}{COMPARE}{relative.suffix}")


def network_shape(h: int, w: int, size: int, multiple: int) -> tuple[int, int]:
    """Short side -> size, long side in proportion, both multiples of what the network halves to; a photo
    longer than MAX_ASPECT to one is shrunk until its long side is MAX_ASPECT * size (a 20000 x 2 strip
    must not become a network input of 128 x 1,280,000)."""
    scale = min(size / min(h, w), MAX_ASPECT * size / max(h, w))
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (h, w))


class Colorizer:
    """A colorizer as colorize.py runs it on photos: the network, the regressor it is conditioned on, the size it
    sees a photo's short side at (size: default, the training size) and the faces it colours apart."""

    def __init__(self, model, regressor, config: dict, size: int | None, device, amp=False, faces=True):
        self.model, self.config = model, config
        self.size = size or config.get("image_size", 128)
        if regressor is not None and self.size < REGRESSOR_MIN_SIZE:
            raise UserError(f"--size {self.size}: the colorizer runs its regressor on L at that size, and the "
                            f"regressor needs at least {REGRESSOR_MIN_SIZE}; pass a larger --size")
        # the regressor was trained on squares of the training size: it sees L resized to one
        self.regressor = None if regressor is None else \
            (lambda L: regressor(F.interpolate(L, size=(self.size, self.size), mode="area")))
        self.multiple = 2 ** ARCHITECTURES[config["arch"]].downsamplings(config)
        self.device, self.amp = device, amp
        # the share of its training images a face filled (measured on them when it was trained), or None: then
        # no face is coloured apart (--faces off, or a model not trained on faces)
        self.face_scale = config.get("face_scale") if faces else None
        if self.face_scale is not None:
            load_cascade_in_background()  # while the first photo is decoded

    def largest_face_to_find(self, h: int, nh: int) -> float:
        """The largest face worth finding (photo pixels) in a photo h pixels high that the network sees nh high:
        one it shows at SEEN_SMALL of the training scale (larger ones are coloured with the whole photo)."""
        return SEEN_SMALL * self.face_scale * self.size * h / nh

    @classmethod
    def from_checkpoint(cls, checkpoint, regressor_path, size, device, amp=False, faces=True) -> "Colorizer":
        model, regressor, config, _ = load_colorizer(checkpoint, device, regressor_path)
        return cls(model, regressor, config, size, device, amp, faces)

    @torch.no_grad()
    def predict_ab(self, L_small: np.ndarray) -> np.ndarray:
        """A batch of L in [0, 100], (N, h, w) -> ab in Lab units, (N, h, w, 2)."""
        L = torch.from_numpy(L_small / L_RANGE).float()[:, None].to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            ab01 = self.model(colorizer_input(L, self.regressor))
        return ab01_to_ab(ab01.float()).permute(0, 2, 3, 1).cpu().numpy()


def load(path: Path, colorizer: Colorizer):
    photo = read_lightness(path, bytes_per_pixel=WORKING_BYTES_PER_PIXEL)  # a photo waiting holds its L alone
    return {**lightness_item(photo.L, colorizer), "alpha": photo.alpha, "depth16": photo.bits == 16,
            "exif": photo.exif, "dpi": photo.dpi}


def lightness_item(L: np.ndarray, colorizer: Colorizer) -> dict:
    """What colouring a photo of lightness L (H x W, 0 to 100) needs: L, L at the network's input size, and the
    squares of the faces that input shows smaller than the network saw faces in training (each is coloured in its
    square, at the training scale)."""
    h, w = L.shape
    nh, nw = network_shape(h, w, colorizer.size, colorizer.multiple)
    L_small = area_shrunk(L, (nw, nh)) if nh < h and nw < w else \
        cv2.resize(L, (nw, nh), interpolation=cv2.INTER_AREA if nh < h else cv2.INTER_CUBIC)
    squares = [] if colorizer.face_scale is None else \
        squares_to_colour(find_faces(L, largest=colorizer.largest_face_to_find(h, nh)), (h, w), nh / h,
                          colorizer.face_scale, colorizer.size)
    return {"L": L, "L_small": L_small, "squares": squares}


def predict(colorizer: Colorizer, items: list[dict], batch_size: int) -> list[np.ndarray | None]:
    """The colour (a*, b*; Lab units, h x w x 2) of each item at a size of its own, smaller than the photo's
    (at_full_size upsamples it; None: not a finite number): its whole photo at the network's input size (the items
    share that shape: one batch), then each face square's own, blended in. Face squares are coloured batch_size at
    a time: memory stays bounded however many faces a photo holds."""
    whole = colorizer.predict_ab(np.stack([item["L_small"] for item in items]))
    # the faces' squares are cut from, and their colours blended into, a copy of the photo on which the smallest
    # square is as large as the network's input (never larger than the photo): the work does not grow with the
    # photo's megapixels; the blended colour is upsampled once, as the whole photo's is
    scales = [min(1.0, max((colorizer.size / square.side for square in item["squares"]), default=1.0))
              for item in items]
    squares = []
    for i, (item, scale) in enumerate(zip(items, scales)):
        if item["squares"]:
            L = resized(item["L"], scale, cv2.INTER_AREA)
            squares += [(i, at, square_lightness(L, at, colorizer.size))
                        for at in (Square(*(round(v * scale) for v in square)) for square in item["squares"])]
    own = []
    for start in range(0, len(squares), batch_size):
        own += list(colorizer.predict_ab(np.stack([patch for _, _, patch in squares[start:start + batch_size]])))
    colours = []
    for i, (item, ab_small, scale) in enumerate(zip(items, whole, scales)):
        faces = [(at, ab) for (j, at, _), ab in zip(squares, own) if j == i]
        if not np.isfinite(ab_small).all() or not all(np.isfinite(ab).all() for _, ab in faces):
            colours.append(None)  # never an image computed from NaN
            continue
        h, w = item["L"].shape
        if faces:
            ab_small = cv2.resize(ab_small, resized_shape(w, h, scale), interpolation=cv2.INTER_CUBIC)
            for at, ab in faces:
                blend(ab_small, at, cv2.resize(ab, (at.side, at.side), interpolation=cv2.INTER_CUBIC))
        colours.append(ab_small)
    return colours


def at_full_size(ab: np.ndarray, shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """predict's colour upsampled to the photo's height and width (into out if given)."""
    return cv2.resize(ab, shape[::-1], dst=out, interpolation=cv2.INTER_CUBIC)


_SCRATCH = threading.local()


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """An array of this shape for name, reused by this thread from photo to photo (grown to the largest): a
    12-megapixel array allocated anew costs the system's work of mapping its pages every time."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, np.uint8)
        setattr(_SCRATCH, name, buffer)
    return buffer[:size].view(dtype).reshape(shape)


def area_shrunk(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(image, size, interpolation=cv2.INTER_AREA) for an image shrunk along both sides, within float
    rounding (its area weights are separable): its height first, then its width, which OpenCV does in 0.6 of the
    time of both at once where the size is a small fraction of the image's (a camera photo to the network's
    input)."""
    tall = cv2.resize(image, (image.shape[1], size[1]), interpolation=cv2.INTER_AREA)
    return cv2.resize(tall, size, interpolation=cv2.INTER_AREA)


def resized_shape(w: int, h: int, scale: float) -> tuple[int, int]:
    """(width, height) scaled, as cv2.resize takes them."""
    return max(1, round(w * scale)), max(1, round(h * scale))


def resized(image: np.ndarray, scale: float, interpolation) -> np.ndarray:
    h, w = image.shape[:2]
    return image if scale == 1 else cv2.resize(image, resized_shape(w, h, scale), interpolation=interpolation)


def square_lightness(L: np.ndarray, square: Square, size: int) -> np.ndarray:
    """A face's square of L, at the network's size x size."""
    patch = L[square.y:square.y + square.side, square.x:square.x + square.side]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if square.side > size else cv2.INTER_CUBIC)


def finish(item: dict, ab: np.ndarray | None, target: Path, side_by_side: bool) -> None:
    """Merge the predicted colour (predict's, upsampled here) with the photo's own lightness and write target (its
    suffix says the format); with side_by_side also NAME_compare.EXT, the faces coloured apart boxed on its gray
    half."""
    if ab is None:
        raise BadImage("the network's colour for it is not a finite number (NaN or inf): nothing written",
                       "the checkpoint may be damaged: try another")
    dtype = output_type(target.suffix, item["depth16"])
    bgr = coloured(item, ab, dtype, bgr=True)  # as encode takes samples
    alpha = item["alpha"]
    out = bgr if alpha is None or target.suffix in JPEG_SUFFIXES else \
        np.dstack([bgr, np.rint(alpha * np.iinfo(dtype).max).astype(dtype)])
    data = encoded(out, target, item)
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
    if side_by_side:
        gray = lab_to_samples(item["L"], None, dtype)
        thickness = max(1, round(max(gray.shape) / 400))
        green = tuple(np.iinfo(dtype).max * share for share in (0.2, 0.9, 0.1))  # (B, G, R)
        for x, y, side in item["squares"]:  # the square each was coloured in; the face fills its middle
            cv2.rectangle(gray, (x, y), (x + side - 1, y + side - 1), green, thickness)
        pair = encoded(np.concatenate([gray, bgr], axis=1), compare_name(target), item)
        atomic_write(compare_name(target), lambda tmp: Path(tmp).write_bytes(pair))


def coloured(item: dict, ab: np.ndarray, dtype, bgr=False) -> np.ndarray:
    """The photo in colour as finish writes it (samples of dtype, H x W x 3, transparency aside; (R, G, B), or with
    bgr (B, G, R)): predict's colour upsampled to the photo's size, with its own lightness. In this thread's scratch
    memory: valid until it colours the next photo."""
    h, w = item["L"].shape
    ab = at_full_size(ab, (h, w), scratch("ab", (h, w, 2), np.float32))
    return lab_to_samples(item["L"], ab, dtype, scratch("samples", (h, w, 3), dtype), bgr)


def colour_one(path: Path, colorizer: Colorizer, target: Path, side_by_side=False) -> None:
    """One photo through the whole path, read, coloured and written (the folder pipeline in main does the same
    steps for many, overlapped)."""
    item = load(path, colorizer)
    finish(item, predict(colorizer, [item], BATCH_SIZE)[0], target, side_by_side)


def encoded(image: np.ndarray, target: Path, item: dict) -> bytes:
    """encode() for target, the input's metadata kept where the format takes it: an EXIF larger than the format
    holds (a JPEG's 64 kB) is left out, with a line saying so; an image the encoder refuses is a BadImage."""
    try:
        return encode(image, target.suffix, item["exif"], item["dpi"])
    except Exception as exc:  # Pillow's and OpenCV's encoders raise what they like
        if item["exif"]:
            try:
                data = encode(image, target.suffix, None, item["dpi"])
            except Exception:
                pass
            else:
                print(f"note: {escape_bytes(target)}: written without the input's EXIF ({len(item['exif']):,} bytes, "
                      f"more than a {target.suffix} file holds)", file=sys.stderr)
                return data
        raise BadImage(f"cannot be written as {target.suffix} ({type(exc).__name__}: "
                       f"{escape_bytes(exc).splitlines()[0][:200] if str(exc) else 'the encoder refused it'})",
                       "convert it to PNG first") from None


# a photo larger than this is coloured in a batch of its own: the work at its full size outweighs the network's,
# and the writers would wait for a batch of them to fill
ALONE_PIXELS = 2 ** 20
# photos read at once, and written at once (each in a thread of its own: the work lets go of Python's lock): one of
# each per core this process may run on (a SLURM job's, taskset's), at most 4: each holds a photo beyond
# --max-megapixels, and more would wait on the network in the main thread
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
READERS = WRITERS = min(CORES, 4)


def read_ahead(jobs, read: Callable, budget: float, pixels: Callable = lambda item: item["L"].size):
    """(path, output, read(path) or why it could not be read) for each job in order, read (decoded, its lightness
    computed, its faces found: work that lets go of Python's lock) by READERS threads of their own while the caller
    colours and writes earlier ones, as far ahead as budget pixels (pixels(what read gave)) read and not yet taken
    allow."""
    jobs = list(jobs)
    loaded, turn = {}, threading.Condition()  # job index -> its item (or exception); the lock for all of it
    state = {"next": 0, "waiting": 0, "stop": False}  # the next job to read; pixels read and not taken; caller left

    def held(item) -> int:
        return 0 if isinstance(item, (Exception, Raise)) else pixels(item)

    def reader():
        while True:
            with turn:
                turn.wait_for(lambda: state["waiting"] < budget or state["stop"])
                if state["stop"] or state["next"] == len(jobs):
                    return
                index = state["next"]
                state["next"] += 1
            try:
                item = read(jobs[index][0])
            except (BadImage, OSError) as exc:
                item = exc
            except BaseException as exc:  # the caller raises it: never a thread dying in silence
                item = Raise(exc)
            with turn:
                loaded[index] = item
                state["waiting"] += held(item)
                turn.notify_all()

    threads = [threading.Thread(target=reader) for _ in range(min(READERS, len(jobs)))]
    for thread in threads:
        thread.start()
    try:
        for index, (path, output) in enumerate(jobs):
            with turn:
                turn.wait_for(lambda: index in loaded)
                item = loaded.pop(index)
                state["waiting"] -= held(item)
                turn.notify_all()
            if isinstance(item, Raise):
                raise item.exception
            yield path, output, item
    finally:
        with turn:
            state["stop"] = True
            turn.notify_all()
        for thread in threads:  # a reader ends with the photo it reads: none is left inside OpenCV at exit (abort)
            thread.join()


class Raise(NamedTuple):
    """An exception a reader met that is not the photo's fault: the caller raises it."""
    exception: BaseException


def main():
    from tqdm import tqdm

    args = parse_args()
    device = resolve_device(args.device)
    colorizer = Colorizer.from_checkpoint(args.checkpoint, args.regressor, args.size, device,
                                          bfloat16_autocast(device.type, args.amp, "colorizing"),
                                          faces=args.faces == "auto")
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
    for (path, _), (output, why) in zip(jobs, planned):
        if output is None:
            skipped.append((path, why))
        elif why:
            print(f"{escape_bytes(path)} -> {escape_bytes(args.out / output)} ({why})", file=sys.stderr)
    jobs = [(path, output) for (path, _), (output, _) in zip(jobs, planned) if output is not None]
    if len(jobs) > 1 and device.type == "cpu":
        # reading and writing run in threads of their own, one of each per core: threads inside each operation as well
        # would only wait on each other
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
    for path, reason in skipped:
        print(f"skipped {escape_bytes(path)}: {escape_bytes(reason)}", file=sys.stderr)

    done, failed = 0, []
    pending = []  # loaded images waiting for a batch of one network-input shape
    writing = deque()  # (path, pixels, the future of its finish), oldest first
    budget = args.max_megapixels * 1e6
    progress = tqdm(total=len(jobs), unit="image", disable=not sys.stderr.isatty())

    def fail(path, reason):
        failed.append(path)
        tqdm.write(f"failed {escape_bytes(path)}: {escape_bytes(reason)}", file=sys.stderr)

    def settle_oldest():
        nonlocal done
        path, _, future = writing.popleft()
        try:
            future.result()
            done += 1
        except (BadImage, OSError) as exc:
            fail(path, exc)
        progress.update()

    def flush(writer):
        # the network here; merging, encoding and writing in the writers' threads, as many as budget pixels behind
        if not pending:
            return
        colours = predict(colorizer, [item for _, _, item in pending], args.batch_size)
        for (path, output, item), ab in zip(pending, colours):
            writing.append((path, item["L"].size,
                            writer.submit(finish, item, ab, args.out / output, args.side_by_side)))
        pending.clear()
        while sum(pixels for _, pixels, _ in writing) > budget:
            settle_oldest()

    with ThreadPoolExecutor(max_workers=WRITERS) as writer:
        try:
            for path, output, item in read_ahead(jobs, lambda path: load(path, colorizer), budget):
                if isinstance(item, Exception):
                    fail(path, item)
                    progress.update()
                    continue
                held = sum(waiting["L"].size for _, _, waiting in pending)
                if pending and (pending[0][2]["L_small"].shape != item["L_small"].shape or
                                held + item["L"].size > budget):
                    flush(writer)
                pending.append((path, output, item))
                if len(pending) == args.batch_size or item["L"].size > ALONE_PIXELS:
                    flush(writer)
            flush(writer)
            while writing:
                settle_oldest()
        except BaseException:
            writer.shutdown(cancel_futures=True)  # Ctrl-C or an error: what is being written is finished, no more
            raise
    progress.close()

    print(f"{done} colorized into {escape_bytes(args.out)}, {len(failed)} failed, {len(skipped)} skipped")
    if failed or not done:
        sys.exit(1)


if __name__ == "__main__":
    exit_on_user_error(main)

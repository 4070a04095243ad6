"""Photo files, in and out: finding them in folders, reading any file OpenCV decodes (8 or 16 bits, gray or colour,
transparency, turned upright as its EXIF says, its ICC profile's colours converted to sRGB) with a one-line
reason for anything it cannot, the square a prepared set holds, and writing the same formats back with their
EXIF, resolution and an sRGB profile; Lab at a photo's own size, from and to its samples (common.py's formulas
and matrices). Nothing here knows a model.
"""
from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image

from common import RGB_FROM_XYZ, WHITE_D65, XYZN_FROM_RGB, ab01_to_ab, images_to_lab01, srgb_to_linear
from guards import UserError, escape_bytes, real_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pnm", ".gif"}
MAX_PIXELS = 2 ** 28  # 268 megapixels (16384 x 16384): decoding more would take over 3 GB per copy
MAX_FILE_BYTES = MAX_PIXELS * 8 + 2 ** 26  # such an image stored whole: 16-bit RGBA, and room for metadata


class BadImage(Exception):
    """An unreadable or unusable image file; str() is the reason and what to do about it, for a line that names
    the file."""

    def __init__(self, reason: str, remedy: str):
        super().__init__(f"{reason}; {remedy}")


COPY_AGAIN = "copy it again from where it came from, or remove it"
CHECK_PATH = "check that it exists and that you may read it"


class Found(NamedTuple):
    images: list[Path]                   # entries with an image suffix, unreadable ones too
    others: list[Path]                   # the other files (not hidden ones)
    unsearched: list[tuple[Path, str]]   # folders that could not be searched, and why


def find_images(root: str | Path, leave_out: Callable[[Path], bool] = lambda path: False) -> Found:
    """Every entry under root (recursively) with an image suffix, in a stable order, unreadable ones too (a
    folder so named, a broken link, a link loop: read_image names them rather than that they vanish); the other
    files; the folders that could not be searched, each with why. Links to folders are followed, each folder
    searched once (a link back up is named, not followed round); leave_out(path) drops an entry and all below it."""
    root = Path(root)
    if not (root.exists() or root.is_symlink()):
        raise UserError(f"{root}: no such file or folder")
    if not root.is_dir():
        return Found([root], [], [])
    found, searched = Found([], [], []), set()

    def search(folder: Path) -> None:
        try:
            status = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            found.unsearched.append((folder, f"a folder that cannot be read ({exc.strerror or type(exc).__name__}): "
                                             f"its images are left out; {CHECK_PATH}"))
            return
        if (status.st_dev, status.st_ino) in searched:
            found.unsearched.append((folder, "a link to a folder searched already (a loop): not searched again"))
            return
        searched.add((status.st_dev, status.st_ino))
        for entry in entries:
            path = Path(entry.path)
            if leave_out(path):
                continue
            try:
                is_folder = entry.is_dir()  # through a link too
            except OSError:
                is_folder = False
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.images.append(path)
            elif not is_folder and not entry.name.startswith("."):
                found.others.append(path)
            if is_folder:
                search(path)

    search(root)
    return found



def find_inputs(root: str | Path, out: Path) -> Found:
    """find_images(root) without anything inside out, the folder the script writes into: its outputs are never its
    inputs (out may lie inside root: DIR --out DIR/colorized). A root inside out is unsearched, with the reason."""
    inside_out = real_path(out)
    if real_path(root).is_relative_to(inside_out):
        return Found([], [], [(Path(root), "it lies inside --out; pass an --out outside the inputs")])
    return find_images(root, leave_out=lambda path: real_path(path).is_relative_to(inside_out))

class Photo(NamedTuple):
    rgb: np.ndarray            # float32 sRGB in [0, 1], H x W x 3, upright (as its EXIF orientation says)
    alpha: np.ndarray | None   # float32 in [0, 1], H x W, if the file has transparency
    bits: int                  # 8 or 16 bits per sample in the file
    exif: bytes | None = None  # the file's EXIF, its orientation reset to upright (the pixels are turned)
    dpi: tuple | None = None   # the file's resolution, if it states one


class Lightness(NamedTuple):
    """A photo read for its lightness alone (colorize.py): the rest as Photo's."""
    L: np.ndarray              # float32 L* in [0, 100], H x W, upright
    alpha: np.ndarray | None
    bits: int
    exif: bytes | None = None
    dpi: tuple | None = None


# what a decode holds at its peak, per pixel: the file's samples, float32 RGB(A) and a temporary of it
DECODE_BYTES_PER_PIXEL = 40
# the same for its lightness: the samples (at most 8 bytes), L and alpha in float32
LIGHTNESS_BYTES_PER_PIXEL = 16
# EXIF orientation -> how to turn the stored pixels upright (rows and columns of an H x W x C array)
_UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
            8: lambda a: np.rot90(a, 1)}


def read_image(path: str | Path, bytes_per_pixel: int = DECODE_BYTES_PER_PIXEL) -> Photo:
    """Decode any image OpenCV reads, once: grayscale, 16-bit and RGBA included, turned upright as its EXIF says
    (any format), its ICC profile's colours converted to sRGB. Anything else becomes BadImage with the reason:
    before opening, what is not a regular file (a pipe would block); before reading it whole, a file larger than
    any image of MAX_PIXELS, an image over MAX_PIXELS by its header, or one whose bytes and bytes_per_pixel working
    memory would not fit in the memory this process may still take."""
    return _read(path, bytes_per_pixel, _photo)


def read_lightness(path: str | Path, bytes_per_pixel: int = LIGHTNESS_BYTES_PER_PIXEL) -> Lightness:
    """read_image's photo as its L* alone, computed from the file's own samples (no float copy of the photo)
    unless its ICC profile is not sRGB's."""
    return _read(path, bytes_per_pixel, _lightness)


def _read(path: str | Path, bytes_per_pixel: int, convert: Callable[[np.ndarray, dict], tuple]):
    path = Path(path)
    try:
        status = path.stat()  # follows links; opens nothing
    except OSError as exc:
        raise BadImage(f"cannot be read ({exc.strerror or type(exc).__name__})", CHECK_PATH) from None
    mode, file_bytes = status.st_mode, status.st_size
    if stat.S_ISDIR(mode):
        raise BadImage("a folder, not an image file", "rename it, or move it out of the inputs")
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise BadImage(f"{kind}, not an image file: not opened", "move it out of the inputs")
    if not file_bytes:
        raise BadImage("empty file", COPY_AGAIN)
    if file_bytes > MAX_FILE_BYTES:  # checked before a byte is read: a 12 GB file would not fit in memory
        raise BadImage(f"too large to read ({file_bytes / 1e9:.1f} GB, more than an image of {MAX_PIXELS / 1e6:.0f} "
                       "megapixels takes)", "scale it down first, or remove it")
    header = _read_header(path)  # the header alone
    width, height = header["size"]
    if width * height > MAX_PIXELS:
        raise BadImage(f"too large to decode ({width}x{height}, over {MAX_PIXELS / 1e6:.0f} megapixels)",
                       "scale it down first")
    needed, free = file_bytes + width * height * bytes_per_pixel, memory_available()
    if needed > free:
        raise BadImage(f"too large for the memory left ({width}x{height} needs about {needed / 2 ** 30:.1f} GiB, "
                       f"{free / 2 ** 30:.1f} GiB are free to this process)", "use it where more memory is free")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(f"cannot be read ({exc.strerror or type(exc).__name__})", CHECK_PATH) from None
    try:
        return convert(_decode(data, header), header)
    except BadImage:
        raise
    except Exception as exc:  # OpenCV, numpy or memory errors on a hostile file
        raise BadImage(f"cannot be decoded ({type(exc).__name__}: {escape_bytes(exc).splitlines()[0][:200]})",
                       "save it again as PNG or JPEG, or remove it") from None


# TIFF tags that describe how the pixels are stored (size, samples, strips, tiles, compression, resolution, the
# ICC profile): a TIFF's EXIF holds them, and an output must not take them from its input
_TIFF_STRUCTURE = {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 282, 283, 284, 290,
                   291, 292, 293, 296, 301, 317, 318, 319, 320, 322, 323, 324, 325, 338, 339, 340, 341, 530, 531, 532,
                   34675}


def _read_header(path: Path) -> dict:
    """What Pillow reads of a file without decoding it (its header, not the whole file): size, EXIF orientation and
    the rest of EXIF, ICC profile, resolution, format; zeros and Nones where it cannot read the file (OpenCV may
    still)."""
    Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check refuses without saying the size: ours follows
    header = {"size": (0, 0), "orientation": 1, "exif": None, "icc": None, "dpi": None, "format": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                exif = im.getexif()
                header.update(size=im.size, format=im.format, icc=im.info.get("icc_profile"), dpi=im.info.get("dpi"),
                              orientation=exif.get(0x0112, 1))
                for tag in _TIFF_STRUCTURE & set(exif):  # a TIFF's own layout, read as EXIF: not the output's
                    del exif[tag]
                if exif:
                    exif[0x0112] = 1  # the pixels are turned upright: the copy an output keeps says so
                    header["exif"] = exif.tobytes()
    except Exception:  # Pillow cannot read this format or file
        pass
    return header


def memory_available() -> float:
    """Bytes this process may still allocate: the least of the machine's available memory, its cgroup's room
    (a SLURM job's limit) and its address-space limit (ulimit -v) less what it maps already."""
    room = [math.inf]
    try:
        meminfo = Path("/proc/meminfo").read_text()
        room.append(int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            room.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, AttributeError, ValueError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            mapped = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
            room.append(soft - mapped)
    except (ImportError, OSError, AttributeError, ValueError):
        pass
    return max(0.0, min(room))


def _decode(data: bytes, header: dict) -> np.ndarray:
    """The file's samples as OpenCV decodes them (uint8 or uint16; gray, gray and alpha, BGR or BGRA), upright."""
    if data[:2] == b"\xff\xd8":
        data = data[:_jpeg_end(data)]  # what follows the image (a phone's motion photo: a video) is not decoded
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # alpha kept, EXIF not applied
    if img is None:
        raise BadImage("not an image, or corrupt", COPY_AGAIN)
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise BadImage(f"too small ({img.shape[1]}x{img.shape[0]})", "use a larger copy, or remove it")
    if img.dtype not in (np.uint8, np.uint16):
        raise BadImage(f"unsupported sample type {img.dtype}", "save it again with 8 or 16 bits a sample")
    if header["format"] != "TIFF":  # libtiff turns TIFFs itself
        img = _UPRIGHT.get(header["orientation"], lambda a: a)(img)
    return img


def _channels(samples: np.ndarray) -> int:
    return 1 if samples.ndim == 2 else samples.shape[2]


def _alpha(samples: np.ndarray) -> np.ndarray | None:
    """The transparency of samples in [0, 1] (float32, H x W), if they have it."""
    if _channels(samples) not in (2, 4):
        return None
    return samples[..., -1].astype(np.float32) * np.float32(1 / np.iinfo(samples.dtype).max)


def _float_rgb(samples: np.ndarray) -> np.ndarray:
    """Samples -> float32 RGB in [0, 1], H x W x 3, as the file holds it (its own colour space)."""
    img = samples.astype(np.float32)
    img *= 1 / np.iinfo(samples.dtype).max  # in place: a 12-megapixel photo makes big temporaries
    channels = _channels(img)
    return np.repeat((img if channels == 1 else img[..., 0])[..., None], 3, axis=2) if channels <= 2 else \
        cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def _to_srgb(samples: np.ndarray, header: dict) -> Callable[[np.ndarray], np.ndarray]:
    return icc_to_srgb(header["icc"]) if header["icc"] and _channels(samples) >= 3 else _unchanged


def _photo(samples: np.ndarray, header: dict) -> Photo:
    rgb = _to_srgb(samples, header)(_float_rgb(samples))
    return Photo(rgb, _alpha(samples), samples.dtype.itemsize * 8, header["exif"], header["dpi"])


def _lightness(samples: np.ndarray, header: dict) -> Lightness:
    to_srgb = _to_srgb(samples, header)
    L = lightness_of_samples(samples) if to_srgb is _unchanged else lightness_of_rgb(to_srgb(_float_rgb(samples)))
    return Lightness(L, _alpha(samples), samples.dtype.itemsize * 8, header["exif"], header["dpi"])


def _jpeg_end(data: bytes) -> int:
    """Where a JPEG's image ends: after the end-of-image marker that closes its first scan (an EXIF thumbnail
    before the scan holds an end marker of its own, so the segments before it are skipped by their lengths).
    A JPEG whose scan never ends is truncated: BadImage; one whose markers make no sense is left to the decoder
    whole."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return len(data)  # no marker where one must be: the decoder says what it is
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data, in which 0xFF 0xD9 is only the end marker
            end = data.find(b"\xff\xd9", i)
            if end < 0:
                raise BadImage("truncated JPEG (no end-of-image marker)", COPY_AGAIN)
            return end + 2
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise BadImage("truncated JPEG (no image data)", COPY_AGAIN)


# ICC profiles: photos from cameras and editors often carry Adobe RGB, Display P3 or ProPhoto, all of them
# matrix-shaper profiles (three tone curves, then a matrix to the D50 connection space): converted here,
# in float, 16-bit images too. Other profiles go through LittleCMS (Pillow's ImageCms) in 8 bits.


def _icc_tags(profile: bytes) -> dict:
    # the tag count as the profile states it, bounded by the entries its bytes can hold (a damaged or hostile
    # profile states 4 billion)
    count = min(int.from_bytes(profile[128:132], "big"), max(0, len(profile) - 132) // 12)
    tags = {}
    for i in range(count):
        entry = profile[132 + 12 * i:144 + 12 * i]
        offset, size = int.from_bytes(entry[4:8], "big"), int.from_bytes(entry[8:12], "big")
        tags[entry[:4].decode("latin-1")] = profile[offset:offset + size]
    return tags


def _s15(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, ">i4").astype(np.float64) / 65536


def _tone_curve(tag: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """An ICC 'curv' or 'para' tone curve: encoded value in [0, 1] -> linear light."""
    if tag[:4] == b"curv":
        n = int.from_bytes(tag[8:12], "big")
        if n == 0:
            return lambda x: x
        if n == 1:
            gamma = int.from_bytes(tag[12:14], "big") / 256
            return lambda x: np.power(x, gamma)
        table = np.frombuffer(tag[12:12 + 2 * n], ">u2").astype(np.float64) / 65535  # as many as the tag holds
        if len(table) < 2:
            raise ValueError("a tone curve without its table")
        return lambda x: np.interp(x, np.linspace(0, 1, len(table)), table)
    if tag[:4] == b"para":  # Y = (aX + b)^g + e above a threshold d, else cX + f, in five kinds
        kind = int.from_bytes(tag[8:10], "big")
        p = list(_s15(tag[12:12 + 4 * [1, 3, 4, 5, 7][kind]]))
        g, a, b = (p[0], p[1], p[2]) if kind else (p[0], 1.0, 0.0)
        if kind == 0:
            d, c, e, f = 0.0, 0.0, 0.0, 0.0
        elif kind in (1, 2):
            d, c, e = -b / a, 0.0, p[3] if kind == 2 else 0.0
            f = e
        else:
            d, c = p[4], p[3]
            e, f = (p[5], p[6]) if kind == 4 else (0.0, 0.0)
        return lambda x: np.where(x >= d, np.power(np.maximum(a * x + b, 0), g) + e, c * x + f)
    raise ValueError("not a tone curve")


def _matrix_shaper(profile: bytes):
    """-> (tone curves r, g, b; 3x3 matrix linear RGB -> XYZ D50) of an RGB matrix-shaper profile."""
    tags = _icc_tags(profile)
    if profile[16:20] != b"RGB ":
        raise ValueError("not an RGB profile")
    matrix = np.stack([_s15(tags[f"{c}XYZ"][8:20]) for c in "rgb"], axis=1)
    return [_tone_curve(tags[f"{c}TRC"]) for c in "rgb"], matrix


_SRGB_PROFILE = {}


def srgb_profile() -> bytes:
    """LittleCMS's sRGB ICC profile, its creation date fixed: outputs that embed it are the same bytes every run."""
    if "bytes" not in _SRGB_PROFILE:
        from PIL import ImageCms

        profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        profile[24:36] = struct.pack(">6H", 2000, 1, 1, 0, 0, 0)
        profile[84:100] = bytes(16)  # an all-zero profile ID: "not computed", as the date changed
        _SRGB_PROFILE.update(bytes=bytes(profile), matrix=_matrix_shaper(bytes(profile))[1])
    return _SRGB_PROFILE["bytes"]


def _unchanged(rgb: np.ndarray) -> np.ndarray:
    return rgb


def icc_to_srgb(profile: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """-> convert(float32 RGB in [0, 1], H x W x 3) -> sRGB in [0, 1], for a photo that carries this ICC
    profile (the identity for sRGB itself, or a profile that cannot be read: such a photo is taken as sRGB)."""
    srgb_profile()
    try:
        curves, matrix = _matrix_shaper(profile)
    except (KeyError, ValueError, IndexError, ZeroDivisionError):
        return _littlecms_to_srgb(profile)
    samples = np.linspace(0, 1, 33)
    srgb_curve = srgb_to_linear(torch.from_numpy(samples)).numpy()
    if np.allclose(matrix, _SRGB_PROFILE["matrix"], atol=2e-3) and \
            all(np.allclose(curve(samples), srgb_curve, atol=2e-3) for curve in curves):
        return _unchanged  # sRGB already: its bytes untouched
    to_srgb = np.linalg.solve(_SRGB_PROFILE["matrix"], matrix)  # linear profile RGB -> linear sRGB, both D50

    def convert(rgb: np.ndarray) -> np.ndarray:
        linear = np.stack([curve(rgb[..., i].astype(np.float64)) for i, curve in enumerate(curves)], axis=-1)
        srgb_linear = torch.from_numpy(np.clip(linear @ to_srgb.T, 0, 1))
        encoded = torch.where(srgb_linear > 0.0031308, 1.055 * srgb_linear.clamp(min=0.0031308) ** (1 / 2.4) - 0.055,
                              srgb_linear * 12.92)
        return encoded.float().numpy()
    return convert


def _littlecms_to_srgb(profile: bytes) -> Callable[[np.ndarray], np.ndarray]:

    from PIL import ImageCms

    try:
        transform = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                            ImageCms.ImageCmsProfile(io.BytesIO(srgb_profile())), "RGB", "RGB")
    except Exception:  # a damaged or unsupported profile: the photo is taken as sRGB
        return _unchanged

    def convert(rgb: np.ndarray) -> np.ndarray:
        image = Image.fromarray(to_uint8(rgb))
        return np.asarray(ImageCms.applyTransform(image, transform), dtype=np.float32) / 255
    return convert


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size (area interpolation when shrinking)."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = image[top:top + s, left:left + s]
    interpolation = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation) if s != size else square


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


# A photo whose mean chroma (the distance from gray, sqrt(a*^2 + b*^2), over its prepared square) is below this is
# black and white: JPEG noise and a print's faint tone stay below it; a faded colour photo does not (on lfw_wild,
# make lfw-data leaves out 32 of 5,924 photos so, each a black-and-white print: docs/results/README.md)
GRAY_CHROMA = 2.0


def prepare_photo(path: Path, size: int) -> np.ndarray:
    """One photo as the prepared data holds it: its centre square at size x size, uint8 RGB. BadImage
    for a photo smaller than that (it would be blown up) or without colour (nothing to learn or score)."""
    rgb = read_image(path).rgb
    if min(rgb.shape[:2]) < size:
        raise BadImage(f"smaller than the {size}x{size} images prepared ({rgb.shape[1]}x{rgb.shape[0]})",
                       "use a larger copy, or remove it")
    square = to_uint8(center_square(rgb, size))
    chroma = mean_chroma(square)
    if chroma < GRAY_CHROMA:
        raise BadImage(f"black and white (mean chroma {chroma:.1f}, below {GRAY_CHROMA:g}): it holds no colour to "
                       "learn from or to score against", "colorize.py colours it")
    return square


def mean_chroma(image_uint8: np.ndarray) -> float:
    """The mean distance from gray, sqrt(a*^2 + b*^2) in Lab units, of a uint8 RGB image (H, W, 3)."""
    lab01 = images_to_lab01(torch.from_numpy(image_uint8)[None])[0].double()
    return float(torch.hypot(*ab01_to_ab(lab01[1:])).mean())


# ---------------------------------------------------------------------------------------------
# Writing: the input's format where it can be written, its metadata kept where the format holds it

# 8-bit files Pillow writes (it writes their metadata). JPEG and PNG go through OpenCV: the same JPEG as Pillow's
# (the same libjpeg-turbo settings: identical pixels) in 0.8 of the time, PNG several times faster than Pillow's at a
# smaller file (benchmarks/README.md); the metadata OpenCV does not write is added to their bytes
_PILLOW_FORMATS = {".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}
JPEG_QUALITY = 95
JPEG_MAX_EXIF = 2 ** 16 - 1 - 2 - 6  # an APP1 segment: its length field, "Exif\0\0" and the EXIF itself
SIXTEEN_BIT_SUFFIXES = {".png", ".tif", ".tiff", ".jp2", ".ppm", ".pnm"}  # 16 bits out where 16 came in


def output_type(suffix: str, depth16: bool) -> type:
    """The sample type an output of this suffix is written in: 16 bits where the input had them and the format
    holds them."""
    return np.uint16 if depth16 and suffix in SIXTEEN_BIT_SUFFIXES else np.uint8


def encode(image: np.ndarray, suffix: str, exif: bytes | None = None, dpi=None) -> bytes:
    """Samples as OpenCV holds them, BGR(A) (uint8, or uint16 where output_type says) -> bytes in the input's
    format, with the input's EXIF and resolution and an sRGB profile where the format holds them (8-bit JPEG through
    OpenCV, its resolution set in its JFIF header; WebP, TIFF and BMP through Pillow; PNG through OpenCV, the
    metadata added as PNG chunks; 16-bit TIFF with its resolution only; JPEG 2000, PPM and PNM with none). An EXIF
    larger than a JPEG holds: ValueError."""
    srgb = srgb_profile()
    exif = exif[6:] if exif and exif.startswith(b"Exif\0\0") else exif  # the EXIF itself, as OpenCV and PNG take it
    if image.dtype == np.uint8 and suffix in _PILLOW_FORMATS:
        fmt = _PILLOW_FORMATS[suffix]
        options = {"quality": JPEG_QUALITY} if fmt == "WEBP" else {}
        if fmt != "BMP":
            options.update(icc_profile=srgb, **({"exif": b"Exif\0\0" + exif} if exif else {}))
        if dpi and fmt != "WEBP":
            options["dpi"] = dpi
        mode = "RGBA" if image.shape[2] == 4 else "RGB"
        buffer = io.BytesIO()
        Image.frombuffer(mode, image.shape[1::-1], np.ascontiguousarray(image), "raw", mode.replace("RGB", "BGR"), 0,
                         1).save(buffer, format=fmt, **options)
        return buffer.getvalue()
    if suffix in JPEG_SUFFIXES:  # 8-bit: output_type's
        if exif and len(exif) > JPEG_MAX_EXIF:
            raise ValueError(f"EXIF of {len(exif):,} bytes: a JPEG holds {JPEG_MAX_EXIF:,}")
        kinds, chunks = [cv2.IMAGE_METADATA_ICCP], [np.frombuffer(srgb, np.uint8)]
        if exif:
            kinds.append(cv2.IMAGE_METADATA_EXIF)
            chunks.append(np.frombuffer(exif, np.uint8))
        ok, buf = cv2.imencodeWithMetadata(suffix, image, kinds, chunks, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        params = [cv2.IMWRITE_TIFF_XDPI, round(dpi[0]), cv2.IMWRITE_TIFF_YDPI, round(dpi[1]),
                  cv2.IMWRITE_TIFF_RESUNIT, 2] if dpi and suffix in {".tif", ".tiff"} else []
        ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise BadImage(f"OpenCV cannot write {suffix} files", "convert it to PNG or JPEG first")
    if suffix == ".png":
        return with_png_metadata(buf.tobytes(), srgb, exif, dpi)
    return with_jfif_resolution(buf.tobytes(), dpi) if dpi and suffix in JPEG_SUFFIXES else buf.tobytes()


def with_jfif_resolution(jpeg: bytes, dpi) -> bytes:
    """A JPEG whose JFIF header (the APP0 segment libjpeg writes first) says dpi, in dots per inch."""
    if jpeg[2:4] != b"\xff\xe0" or jpeg[6:11] != b"JFIF\0":
        return jpeg
    density = struct.pack(">BHH", 1, *(min(max(round(d), 1), 2 ** 16 - 1) for d in dpi))
    return jpeg[:13] + density + jpeg[18:]


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


# ---------------------------------------------------------------------------------------------
# Lab at a photo's own size: rgb_to_lab's and lab_to_rgb's formulas (common.py's matrices), done a strip of rows at
# a time so that the float temporaries of a 12-megapixel photo stay in the caches, from and to the file's own
# integer samples as OpenCV holds them (B, G, R); tested against scikit-image as common.py's are.

STRIP_PIXELS = 2 ** 15
_Y_FROM_LINEAR_BGR = XYZN_FROM_RGB[1].flip(0).float().numpy()[None]  # Y of linear (B, G, R): OpenCV's order
# (L, a, b) -> (fx, fy, fz): fy = (L + 16) / 116, fx = fy + a / 500, fz = fy - b / 200
_F_FROM_LAB = np.float32([[1 / 116, 1 / 500, 0, 16 / 116], [1 / 116, 0, 0, 16 / 116], [1 / 116, 0, -1 / 200, 16 / 116]])
# max(f, t)^3 + min(f, t) / 7.787 -> linear sRGB (R, G, B): the white and the tangent's offset, -t / 7.787, folded in
_LINEAR_RGB_FROM_WHITE = RGB_FROM_XYZ * torch.tensor(WHITE_D65, dtype=torch.float64)
_LINEAR_RGB_FROM_CUBE = torch.cat([_LINEAR_RGB_FROM_WHITE,
                                   _LINEAR_RGB_FROM_WHITE.sum(1, keepdim=True) * -0.2068966 / 7.787], 1).float().numpy()
_LINEAR_BGR_FROM_CUBE = np.ascontiguousarray(_LINEAR_RGB_FROM_CUBE[::-1])
_SRGB_TO_LINEAR_TABLES = {}  # per sample type: the sRGB curve at each value a sample can take
_LIGHTNESS_TABLES = {}  # per sample type: L* of each gray value


def _strips(height: int, width: int):
    rows = max(1, STRIP_PIXELS // width)
    return (slice(top, min(top + rows, height)) for top in range(0, height, rows))


def _srgb_to_linear_table(dtype: np.dtype) -> np.ndarray:
    if dtype not in _SRGB_TO_LINEAR_TABLES:
        top = np.iinfo(dtype).max
        _SRGB_TO_LINEAR_TABLES[dtype] = srgb_to_linear(torch.arange(top + 1, dtype=torch.float64) / top).float().numpy()
    return _SRGB_TO_LINEAR_TABLES[dtype]


def lightness_of_samples(samples: np.ndarray) -> np.ndarray:
    """A photo's L* (float32, H x W, 0 to 100) from its samples as OpenCV decodes them: uint8 or uint16, gray
    (H x W), gray and alpha, BGR or BGRA; sRGB. rgb_to_lab's L, read through a table of the sRGB curve; gray
    samples, and BGR ones as long as their three channels are equal (black and white stored in colour, a strip of
    rows at a time up to the first that is not), through a table of L* itself: one pass, not eight."""
    linear_table, lightness_table = _srgb_to_linear_table(samples.dtype), _lightness_table(samples.dtype)
    colour_layout = samples.ndim == 3 and samples.shape[2] >= 3
    colour = False  # once a strip is not gray, the rest of the photo is read as colour, unchecked
    lightness = np.empty(samples.shape[:2], np.float32)
    for rows in _strips(*samples.shape[:2]):
        if not colour:
            planes = cv2.split(np.ascontiguousarray(samples[rows])) if samples.ndim == 3 else [samples[rows]]
            colour = colour_layout and not (np.array_equal(planes[0], planes[1]) and
                                            np.array_equal(planes[1], planes[2]))
        if colour:
            linear = cv2.LUT(np.ascontiguousarray(samples[rows, :, :3]), linear_table) \
                if samples.dtype == np.uint8 else linear_table[samples[rows, :, :3]]
            _lightness_of_y(cv2.transform(linear, _Y_FROM_LINEAR_BGR), lightness[rows])
        elif samples.dtype == np.uint8:
            cv2.LUT(np.ascontiguousarray(planes[0]), lightness_table, dst=lightness[rows])
        else:
            np.take(lightness_table, planes[0], out=lightness[rows])
    return lightness


def _lightness_table(dtype: np.dtype) -> np.ndarray:
    """L* of each gray sample value of dtype, as _lightness_of_y computes it."""
    if dtype not in _LIGHTNESS_TABLES:
        y = _srgb_to_linear_table(dtype)[None].copy()
        _LIGHTNESS_TABLES[dtype] = _lightness_of_y(y, np.empty_like(y))[0]
    return _LIGHTNESS_TABLES[dtype]


def lightness_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """L* (float32, H x W) of float sRGB in [0, 1], H x W x 3: rgb_to_lab's L."""
    lightness = np.empty(rgb.shape[:2], np.float32)
    y_from_rgb = np.ascontiguousarray(_Y_FROM_LINEAR_BGR[:, ::-1])
    for rows in _strips(*rgb.shape[:2]):
        linear = srgb_to_linear(torch.from_numpy(np.ascontiguousarray(rgb[rows], np.float32))).numpy()
        _lightness_of_y(cv2.transform(linear, y_from_rgb), lightness[rows])
    return lightness


def _lightness_of_y(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """L* = 116 f(Y) - 16 into out, f the cube root above 0.008856 and its tangent there below (the CIE curve: no
    branch). y is overwritten."""
    cube_root = _power(cv2.max(y, 0.008856), 1 / 3)
    tail = cv2.threshold(y, 0.008856, 0, cv2.THRESH_TRUNC, dst=y)[1]
    return cv2.addWeighted(cube_root, 116, tail, 116 * 7.787, -16 - 116 * 7.787 * 0.008856, dst=out)


def _power(x: np.ndarray, exponent: float) -> np.ndarray:
    """x ** exponent for positive float32 x, in place, as exp(exponent log x): within 3e-7 of it. numpy's cbrt and
    power run a number at a time where the CPU has no AVX-512 (cbrt took 230 of the 250 ms of a 12-MP photo's
    lightness); OpenCV's power takes 1.7 to 1.9 times as long as its log and exp."""
    return cv2.exp(np.multiply(cv2.log(x, dst=x), np.float32(exponent), out=x), dst=x)


def lab_to_samples(lightness: np.ndarray, ab: np.ndarray | None, dtype=np.uint8, out: np.ndarray | None = None,
                   bgr=False):
    """L* (H x W) and a*, b* (H x W x 2; None: gray) in Lab units -> sRGB samples, H x W x 3 of dtype (uint8 or
    uint16; into out if given), (R, G, B) or with bgr (B, G, R) as OpenCV holds them: lab_to_rgb's colours, rounded
    to the nearest sample value."""
    height, width = lightness.shape
    top = np.iinfo(dtype).max
    samples = np.empty((height, width, 3), dtype) if out is None else out
    gray = np.zeros((max(1, STRIP_PIXELS // width), width, 2), np.float32) if ab is None else None
    for strip in _strips(height, width):
        n = strip.stop - strip.start
        f = cv2.transform(cv2.merge([lightness[strip], gray[:n] if ab is None else ab[strip]]), _F_FROM_LAB)
        # (x, y, z) interleaved as 2-D where a scalar is meant for all three: OpenCV's scalars reach the first alone
        flat = f.reshape(n, width * 3)
        # f^3 above 0.2068966, its tangent there below, fz clipped at 0 first as lab_to_rgb does:
        # max(f, t)^3 + min(f, t) / 7.787, the tangent's offset folded into the next matrix
        cube = cv2.pow(cv2.max(flat, 0.2068966), 3)
        tail = cv2.max(cv2.threshold(flat, 0.2068966, 0, cv2.THRESH_TRUNC, dst=flat)[1].reshape(n, width, 3),
                       (-np.inf, -np.inf, 0, 0))
        linear = cv2.transform(cv2.scaleAdd(tail.reshape(n, width * 3), 1 / 7.787, cube, dst=cube)
                               .reshape(n, width, 3), _LINEAR_BGR_FROM_CUBE if bgr else _LINEAR_RGB_FROM_CUBE
                               ).reshape(n, width * 3)
        # the sRGB curve: 1.055 x^(1 / 2.4) - 0.055 above 0.0031308, 12.92 x below (the two meet there), as
        # top * (1.055 max(x, c)^(1 / 2.4) + 12.92 min(x, c)) - the offsets, rounded and clipped to 0..top in one pass
        high = _power(cv2.max(linear, 0.0031308), 1 / 2.4)
        low = cv2.threshold(linear, 0.0031308, 0, cv2.THRESH_TRUNC, dst=linear)[1]
        cv2.addWeighted(high, top * 1.055, low, top * 12.92, -top * (0.055 + 12.92 * 0.0031308),
                        dst=samples[strip].reshape(n, width * 3), dtype=cv2.CV_8U if top == 255 else cv2.CV_16U)
    return samples

"""Faces in photos: where they are, and the scale at which a model saw faces in training.

Faces are found by scikit-image's LBP frontal-face cascade (OpenCV's cascade file, which scikit-image ships:
nothing to download), on a copy of the photo's lightness with DETECT_SIDE pixels along its short side: faces of
at least MIN_FACE pixels there, a tenth of the short side, are found (smaller ones are coloured as the rest of
the photo). How the cascade searches is SEARCH (benchmarks/face_search.py measures it against others). A face's
scale is its side as a fraction of the image's short side; a model's training scale is the median of that over
its training images, kept in its checkpoint's config (face_scale).
"""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

DETECT_SIDE = 256     # the short side faces are searched at (pixels)
MIN_FACE = 24         # the cascade's window: the smallest face it finds, at DETECT_SIDE (pixels)
MAX_FACES = 64        # the largest faces of a photo are kept: memory and time stay bounded whatever it holds
SCALE_SAMPLE = 128    # training images a face scale is measured on


class Search(NamedTuple):
    """How the cascade searches: its window grows by scale_step from scale to scale, moves by step_ratio times
    its scale (rounded) from place to place, and a face is where at least min_neighbours windows found one;
    confirm: if given, each face found is looked for again around itself that way (CONFIRM_MARGIN, CONFIRM_SIDES),
    and kept, as found there, only if found there."""
    scale_step: float
    step_ratio: float
    min_neighbours: int
    confirm: Search | None = None


# The search looks at every other place at its smallest scales (the smallest windows at every place were most of
# the time) and asks fewer neighbours to agree; each face it finds is confirmed by a search at every place around
# it, which the false ones (a texture, a cat) fail: benchmarks/face_search.py measures it against the others
SEARCH = Search(scale_step=1.15, step_ratio=1.5, min_neighbours=2, confirm=Search(1.2, 1, 3))
CONFIRM_MARGIN = 0.5  # a face is confirmed in its box grown by this share of its side on every side
CONFIRM_SIDES = 1.45  # by faces from its side / this to its side * this
_CASCADE = {}
_CASCADE_LOCK = threading.Lock()


class Face(NamedTuple):
    """A face's square, in the photo's pixels: its left, top and side."""
    x: float
    y: float
    side: float


def cascade():
    """scikit-image's LBP frontal-face cascade, loaded once per process (by whichever thread asks first)."""
    with _CASCADE_LOCK:
        if "cascade" not in _CASCADE:
            from skimage import data
            from skimage.feature import Cascade

            _CASCADE["cascade"] = Cascade(data.lbp_frontal_face_cascade_filename())
    return _CASCADE["cascade"]


def load_cascade_in_background() -> None:
    """Start loading the cascade in a thread of its own: importing scikit-image takes about as long as decoding a
    camera-size photo, which lets go of Python's lock, so the two overlap."""
    threading.Thread(target=cascade, name="load-face-cascade", daemon=True).start()


def find_faces(lightness: np.ndarray, largest: float | None = None, search: Search = SEARCH) -> list[Face]:
    """The faces in a photo, largest first, at most MAX_FACES: lightness is its L* (H x W, 0 to 100), at any
    size; largest: the largest side (photo pixels) worth finding, if not any (fewer scales searched). A photo the
    detector cannot search (too small, or anything it raises on) has none."""
    h, w = lightness.shape
    scale = min(1.0, DETECT_SIDE / min(h, w))
    small = np.ascontiguousarray(shrunk(lightness, scale), np.float32) / 100
    biggest = min(small.shape)
    if largest:
        biggest = min(biggest, round(largest * scale * search.scale_step))  # a step more
    if biggest < MIN_FACE:
        return []
    try:
        found = largest_first(detected(small, search, MIN_FACE, biggest))
        if search.confirm is not None:
            found = largest_first(face for face in (confirmed(small, f, search.confirm) for f in found) if face)
    except Exception:  # the detector's own failure: the photo is coloured without faces
        return []
    return [Face(f.x / scale, f.y / scale, f.side / scale) for f in found]


def largest_first(found) -> list[Face]:
    """The faces, largest first, at most MAX_FACES, none centred inside a larger one (two found faces confirmed
    as one)."""
    kept = []
    for f in sorted(found, key=lambda f: -f.side):
        if len(kept) == MAX_FACES:
            break
        if not any(centred_in(f, *k) for k in kept):
            kept.append(f)
    return kept


def centred_in(face: Face, x: float, y: float, side: float) -> bool:
    """Whether face's centre lies in the square of that left, top and side."""
    cx, cy = face.x + face.side / 2, face.y + face.side / 2
    return x <= cx < x + side and y <= cy < y + side


def detected(image: np.ndarray, search: Search, smallest: int, largest: int) -> list[Face]:
    """The faces the cascade finds in image (float32, 0 to 1) with sides from smallest to largest, unconfirmed."""
    found = cascade().detect_multi_scale(image, scale_factor=search.scale_step, step_ratio=search.step_ratio,
                                         min_size=(smallest, smallest), max_size=(largest, largest),
                                         min_neighbor_number=search.min_neighbours)
    return [Face(d["c"], d["r"], d["width"]) for d in found]


def confirmed(image: np.ndarray, face: Face, search: Search) -> Face | None:
    """face as search finds it again around itself in image (the largest face found there), or None."""
    margin = round(face.side * CONFIRM_MARGIN)
    x, y = max(0, round(face.x) - margin), max(0, round(face.y) - margin)
    around = np.ascontiguousarray(image[y:round(face.y + face.side) + margin, x:round(face.x + face.side) + margin])
    largest = min(min(around.shape), int(face.side * CONFIRM_SIDES))
    smallest = max(MIN_FACE, int(face.side / CONFIRM_SIDES))
    found = detected(around, search, smallest, largest) if smallest <= largest else []
    return max((Face(f.x + x, f.y + y, f.side) for f in found), key=lambda f: f.side, default=None)


def shrunk(lightness: np.ndarray, scale: float) -> np.ndarray:
    """lightness resized by scale (at most 1), each pixel the mean of those it covers: first by the largest power
    of two that the scale holds (the photo cut to a multiple of it: a few pixels along two edges), whose whole
    blocks OpenCV averages several times faster, then by what is left."""
    import cv2

    if scale == 1:
        return lightness
    h, w = lightness.shape
    block = 2 ** int(np.log2(1 / scale))
    if block > 1:
        lightness = cv2.resize(lightness[:h - h % block, :w - w % block], (w // block, h // block),
                               interpolation=cv2.INTER_AREA)
    return cv2.resize(lightness, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def face_scale(data_dir, manifest: dict) -> float | None:
    """The scale of a prepared set's faces, measured on its training images (training_face_scale) once and kept
    beside the data (0 there: not a set of faces)."""
    from common import open_rgb_split, training_statistic

    originals = open_rgb_split(data_dir, "train")[::manifest["augment_factor"]]
    kept = training_statistic(data_dir, "face_scale", (1,), lambda: np.array([training_face_scale(originals) or 0.0]),
                              "the scale of the training images' faces")
    return float(kept[0]) or None


def training_face_scale(images: np.ndarray) -> float | None:
    """The median scale of the largest face in up to SCALE_SAMPLE of the images (uint8 RGB, N x S x S x 3,
    evenly drawn): the side of a face as a fraction of the image's; None where faces are found in fewer than a
    quarter of them (not a set of faces)."""
    import torch

    from common import images_to_lab01

    picks = np.linspace(0, len(images) - 1, min(SCALE_SAMPLE, len(images))).round().astype(int)
    scales = []
    for i in picks:
        lightness = images_to_lab01(torch.from_numpy(np.array(images[i]))[None])[0, 0].numpy() * 100
        faces = find_faces(lightness)
        if faces:
            scales.append(faces[0].side / min(lightness.shape))
    return float(np.median(scales)) if len(scales) >= len(picks) / 4 else None


# A face the whole-photo pass sees at less than this share of its training size is coloured in a square of its own;
# the margin below 1 is for the cascade's boxes, which step by its scale_step (a close portrait is
# coloured as it always was)
SEEN_SMALL = 0.6
FADE = 0.1  # the band along a face square's edges in which its colour fades into the whole photo's


class Square(NamedTuple):
    """A square of a photo, in whole pixels: left, top, side."""
    x: int
    y: int
    side: int


def squares_to_colour(faces: list[Face], shape: tuple[int, int], network_scale: float, face_scale: float,
                      size: int) -> list[Square]:
    """For each face that the whole photo, shown to the network at network_scale, shows smaller than
    SEEN_SMALL of its training size (face_scale of size): the square around it in which it fills face_scale, as a
    face filled its training images; moved inside the photo, at most as large as its short side."""
    h, w = shape
    squares = []
    for face in faces:
        if face.side * network_scale >= SEEN_SMALL * face_scale * size:
            continue
        side = min(round(face.side / face_scale), h, w)
        cx, cy = face.x + face.side / 2, face.y + face.side / 2
        x = int(np.clip(round(cx - side / 2), 0, w - side))
        y = int(np.clip(round(cy - side / 2), 0, h - side))
        squares.append(Square(x, y, side))
    return squares


def blend(ab: np.ndarray, square: Square, ab_square: np.ndarray) -> None:
    """ab (H x W x 2, the whole photo's colour), in place: ab_square (the square's own colour, side x side x 2)
    over its square, fully but for a band along its edges (FADE of its side) where it fades into the photo's, so
    no seam shows."""
    side = square.side
    fade = max(1.0, side * FADE)
    t = np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5) / fade
    ramp = np.clip(t, 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no crease where the fade begins or ends
    weight = (ramp[:, None] * ramp[None, :])[..., None].astype(ab.dtype)
    region = ab[square.y:square.y + side, square.x:square.x + side]
    h, w = region.shape[:2]  # a square rounded onto a smaller copy of the photo may cross its edge by a pixel
    region += weight[:h, :w] * (ab_square[:h, :w] - region)

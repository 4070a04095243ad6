"""How faces.py's cascade search does: faces found, false faces and time, for its SEARCH beside other settings of
the same cascade, on group photos of a prepared set's test people and on photos that hold no face.

    python benchmarks/face_search.py --data runs/lfw_shipped/data [--grids 8] [--pasted 48]

Group photos: benchmarks/group_photos.py's (grids of 2x2 to 6x6 test faces, and one to four test faces pasted at
random scales onto another test photo enlarged 3x), searched as colorize.py searches them for the checkpoint
(faces.find_faces at its DETECT_SIDE, no larger than the checkpoint colours apart; a setting whose faces are
confirmed looks for each again around itself, every place, and keeps those found). A face is found when a found
face's centre falls in its square and its side is between half and twice the square's. False faces: in the
grids, found faces centred on no face (every cell is a face; the pasted photos' background is itself a face,
enlarged, so theirs are not counted); and every face found in scikit-image's photos that hold none (a cat,
coffee, coins, text, a retina, the sky, ...). Time: seconds a search, in this process on one thread: on the
group photos, and on four faceless photos enlarged to 12 megapixels (4000 x 3000; the shrinking to DETECT_SIDE
counted; median of three), as colorize.py searches a camera's photo. Writes face_search.json and face_search.md
into --out.
"""
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import colorize  # noqa: E402
import faces  # noqa: E402
from bench import describe_machine, machine, write_results  # noqa: E402
from common import check_prepared  # noqa: E402
from group_photos import add_split_flag, build_photos, faces_of  # noqa: E402
from guards import (ArgumentParser, UserError, exit_on_user_error, positive_int, resolve_device,  # noqa: E402
                    writable_folder)
from photos import lightness_of_samples  # noqa: E402

# SEARCH first; then the search before it (every place, a step of 1.2, four neighbours), SEARCH unconfirmed, and
# what each change alone and its neighbours do
CANDIDATES = (faces.SEARCH, faces.Search(1.2, 1, 4), faces.SEARCH._replace(confirm=None), faces.Search(1.2, 1.5, 4),
              faces.Search(1.3, 1, 4), faces.Search(1.2, 1.5, 2), faces.Search(1.1, 1.5, 2),
              faces.SEARCH._replace(scale_step=1.2))
FACELESS = ("brick", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
            "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina", "rocket",
            "text")
CAMERA = (3000, 4000)  # a 12-megapixel photo's height and width
CAMERA_PHOTOS = ("chelsea", "coffee", "rocket", "retina")  # the faceless photos also timed at CAMERA
CAMERA_REPEATS = 3  # each timed that many times, the median kept (the first search of a size allocates)


def parse_args():
    p = ArgumentParser(__doc__)
    p.add_argument("--data", type=Path, default=Path("runs/lfw_shipped/data"),
                   help="a prepared set of faces: its test split's faces make the group photos")
    p.add_argument("--checkpoint", type=Path, default=colorize.SHIPPED_MODEL,
                   help="whose face scale says how large a face colorize.py looks for")
    add_split_flag(p)
    p.add_argument("--grids", type=positive_int, default=8, help="grids of each size k x k")
    p.add_argument("--pasted", type=positive_int, default=48, help="photos with faces pasted at random scales")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    exit_on_user_error(lambda: writable_folder(args.out))
    return args


def faceless_photos() -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """The lightness of scikit-image's photos that hold no face (read as OpenCV decodes them: gray, BGR or BGRA
    samples), and of CAMERA_PHOTOS among them enlarged to CAMERA."""
    from skimage import data

    photos, camera = {}, []
    for name in FACELESS:
        rgb = getattr(data, name)()
        samples = rgb if rgb.ndim == 2 else np.ascontiguousarray(rgb[..., [2, 1, 0, *range(3, rgb.shape[2])]])
        photos[name] = lightness_of_samples(samples)
        if name in CAMERA_PHOTOS:
            camera.append(lightness_of_samples(cv2.resize(samples, CAMERA[::-1], interpolation=cv2.INTER_CUBIC)))
    return photos, camera


def found_in(square, found: list) -> bool:
    side = square[2]
    return any(faces.centred_in(f, *square) and side / 2 < f.side < 2 * side for f in found)


def centred_on_none(squares, found: list) -> int:
    return sum(not any(faces.centred_in(f, *square) for square in squares) for f in found)


def timed_search(L: np.ndarray, colorizer: colorize.Colorizer, search: faces.Search) -> tuple[list, float]:
    """The faces colorize.py's search would find in L (the largest it looks for), with another search, and the
    seconds it took."""
    h, w = L.shape
    network_height = colorize.network_shape(h, w, colorizer.size, colorizer.multiple)[0]
    largest = colorizer.largest_face_to_find(h, network_height)
    start = time.perf_counter()
    found = faces.find_faces(L, largest, search)
    return found, time.perf_counter() - start


def measure(search: faces.Search, group: dict, faceless: dict, camera: list, colorizer: colorize.Colorizer) -> dict:
    """Faces found per kind of group photo, false faces, seconds a search."""
    out = {"kinds": {}, "seconds": []}
    for kind, photos in group.items():
        found_faces = total = false = 0
        for photo, L in photos:
            found, seconds = timed_search(L, colorizer, search)
            out["seconds"].append(seconds)
            found_faces += sum(found_in(square, found) for square in photo.squares)
            total += len(photo.squares)
            false += centred_on_none(photo.squares, found) if kind.startswith("grid") else 0
        out["kinds"][kind] = {"faces": total, "found": found_faces, "false": false}
    out["faceless_found"] = sum(len(faces.find_faces(L, None, search)) for L in faceless.values())
    out["seconds"] = float(np.mean(out["seconds"]))
    out["camera_seconds"] = float(np.mean([np.median([timed_search(L, colorizer, search)[1]
                                                      for _ in range(CAMERA_REPEATS)]) for L in camera]))
    return out


def main():
    args = parse_args()
    cv2.setNumThreads(1)  # a search on one thread, as each of colorize.py's readers runs one
    colorizer = colorize.Colorizer.from_checkpoint(args.checkpoint, None, None, resolve_device("cpu"))
    if colorizer.face_scale is None:
        raise UserError(f"{args.checkpoint}: its config holds no face scale: it colours no face apart, so there is "
                        "no search of its to measure")
    test_faces = faces_of(args.data, check_prepared(args.data), args.split)[0]
    built = build_photos(test_faces, SimpleNamespace(grids=args.grids, pasted=args.pasted),
                         np.random.default_rng(args.seed))
    group = {kind: [(photo, lightness_of_samples(photo.rgb[..., ::-1])) for photo in photos]
             for kind, photos in built.items() if kind != "portrait"}
    faceless, camera = faceless_photos()
    faces.cascade()  # loaded before anything is timed
    results = {"machine": machine(), "data": str(args.data), "checkpoint": str(args.checkpoint),
               "faceless_photos": len(faceless), "candidates": []}
    for search in CANDIDATES:
        print(f"{search} ...", flush=True)
        results["candidates"].append({"search": as_dict(search),
                                      **measure(search, group, faceless, camera, colorizer)})
    write_results(args.out, "face_search", results, markdown(results))


def as_dict(search: faces.Search | None) -> dict | None:
    return None if search is None else {**search._asdict(), "confirm": as_dict(search.confirm)}


def described(search: dict | None) -> str:
    return "no" if search is None else \
        f"step {search['scale_step']}, ratio {search['step_ratio']}, {search['min_neighbours']} neighbours"


def markdown(r: dict) -> str:
    kinds = list(r["candidates"][0]["kinds"])
    lines = [describe_machine(r["machine"]), "",
             f"Group photos from the test faces of `{r['data']}`, searched for faces as colorize.py searches them "
             f"for `{r['checkpoint']}`; {r['faceless_photos']} of scikit-image's photos that hold no face. Faces "
             "found of the faces there; false: found faces centred on no face in the grids, and all found in the "
             "faceless photos; seconds a search on one thread (the group photos as they are; four faceless ones "
             "enlarged to 12 megapixels). The first row is `faces.SEARCH`, what colorize.py uses.", "",
             "| scale step | step ratio | min neighbours | confirmed | " + " | ".join(kinds)
             + " | all | false (grids) | "
             "false (faceless) | s a search | s a 12-MP photo |",
             "|" + "---|" * (len(kinds) + 9)]
    for c in r["candidates"]:
        s, k = c["search"], c["kinds"]
        found, total = sum(v["found"] for v in k.values()), sum(v["faces"] for v in k.values())
        lines.append(f"| {s['scale_step']} | {s['step_ratio']} | {s['min_neighbours']} | "
                     f"{described(s['confirm'])} | "
                     + " | ".join(f"{k[kind]['found']}/{k[kind]['faces']}" for kind in kinds)
                     + f" | {found / total:.1%} | {sum(v['false'] for v in k.values())} | {c['faceless_found']} | "
                     f"{c['seconds']:.3f} | {c['camera_seconds']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    exit_on_user_error(main)

"""Group photos: colorize.py with --faces off and auto on photos of many faces built from a prepared set's
test split, where the truth is known, beside the mean-face map and gray.

    python benchmarks/group_photos.py --data runs/lfw_shipped/data [--checkpoint models/face_colorizer.pt] [--grids 8]
        [--split test|val|all]

Three kinds of photo, every face from a test person (never seen in training; --split all: every face of a set
the checkpoint never saw, such as people in neither face set, its mean-face map then of the same faces), each
face at the size the split holds it (the training size):
  * grids of k x k faces, k from 2 to 6 (4 to 36 faces): a class photo;
  * one to four faces pasted at random sides (0.3 to 0.9 of the training size) and places onto another test
    photo enlarged 3x, so that the whole photo shows them at a tenth to a third of their training scale: people
    in a street;
  * each test face alone, the photo it is (a close portrait): what a face gets one at a time.
Each photo is coloured through colorize.py's own path (its lightness, the network, each face's square, the
colour upsampled), its L kept. Reported per kind and setting: the seed MSE and the colorfulness gap to the
truth on the whole photo and on the face squares, with 95% bootstrap intervals (photos resampled; face
squares resampled by person), and the face squares' MSE over what the same faces get one at a time. Last,
what colouring faces apart costs colorize.py on a 12-megapixel group photo. Writes
group_photos.json and group_photos.md into --out.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import colorize  # noqa: E402
import evaluate  # noqa: E402
import scores  # noqa: E402
from bench import describe_machine, machine, write_results  # noqa: E402
from common import ab_to_ab01, check_prepared, images_to_lab01, lab01_to_rgb, open_rgb_split  # noqa: E402
from photos import lightness_of_samples  # noqa: E402
from guards import (ArgumentParser, UserError, exit_on_user_error, non_negative_int, positive_int,  # noqa: E402
                    resolve_device, writable_folder)

GRID_SIDES = (2, 3, 4, 5, 6)
PASTE_ENLARGE = 3        # the background photo, enlarged this much
PASTE_SIDES = (0.3, 0.9)  # a pasted face's side, as a share of the training size
SETTINGS = ("off", "auto")


def parse_args():
    p = ArgumentParser(__doc__)
    p.add_argument("--data", type=Path, default=Path("runs/lfw_shipped/data"),
                   help="a prepared set of faces whose test people the checkpoint never saw")
    p.add_argument("--checkpoint", type=Path, default=colorize.SHIPPED_MODEL)
    add_split_flag(p)
    p.add_argument("--grids", type=positive_int, default=8, help="grids of each size k x k")
    p.add_argument("--pasted", type=positive_int, default=48, help="photos with faces pasted at random scales")
    p.add_argument("--cost-repeats", type=non_negative_int, default=5,
                   help="times a 12-megapixel photo is coloured to measure what faces cost (0: not measured)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    exit_on_user_error(lambda: writable_folder(args.out))
    return args


def add_split_flag(p):
    p.add_argument("--split", choices=["test", "val", "all"], default="test",
                   help="the faces the photos are built from; all: every split's (a set of people the checkpoint "
                        "never saw, such as people in neither face set, prepared as any other)")


def faces_of(data: Path, manifest: dict, split: str) -> tuple[np.ndarray, list[str]]:
    """The faces of a prepared set's split, or of all its splits (the training images without their augmented
    copies), uint8 RGB, N x S x S x 3, and each one's person (its file where the set knows no people)."""
    splits = ("train", "val", "test") if split == "all" else (split,)
    step = {name: manifest["augment_factor"] if name == "train" else 1 for name in splits}
    faces = np.concatenate([open_rgb_split(data, name)[::step[name]] for name in splits])
    people = [f.get("person") or f["file"] for name in splits for f in manifest["files"][name]]
    return faces, people


class Photo:
    """A built photo: its truth (uint8 RGB), the face squares in it (x, y, side) and which test faces they are."""

    def __init__(self, rgb, squares, faces):
        self.rgb, self.squares, self.faces = rgb, squares, faces


def build_photos(faces: np.ndarray, args, rng) -> dict:
    """kind -> [Photo]: grids, pasted faces and portraits from the test faces (uint8 RGB, N x S x S x 3)."""
    n, size = len(faces), faces.shape[1]
    kinds = {"portrait": [Photo(faces[i], [(0, 0, size)], [i]) for i in range(n)]}  # every face alone: first
    kinds.update({f"grid {k}x{k}": [] for k in GRID_SIDES})
    for k in GRID_SIDES:
        for _ in range(args.grids):
            pick = rng.choice(n, k * k, replace=k * k > n)  # a small test split repeats faces
            rows = [np.concatenate(list(faces[pick[r * k:(r + 1) * k]]), axis=1) for r in range(k)]
            squares = [(c * size, r * size, size) for r in range(k) for c in range(k)]
            kinds[f"grid {k}x{k}"].append(Photo(np.concatenate(rows, axis=0), squares, list(pick)))
    import cv2

    kinds["pasted"] = []
    big = size * PASTE_ENLARGE
    for _ in range(args.pasted):
        background, *pick = rng.choice(n, 5, replace=n < 5)
        canvas = cv2.resize(faces[background], (big, big), interpolation=cv2.INTER_CUBIC)
        squares, who = [], []
        for i in pick[:int(rng.integers(1, 5))]:
            side = int(rng.uniform(*PASTE_SIDES) * size)
            x, y = (int(v) for v in rng.integers(0, big - side + 1, 2))
            if any(x < sx + ss and sx < x + side and y < sy + ss and sy < y + side for sx, sy, ss in squares):
                continue  # faces do not cover each other
            canvas[y:y + side, x:x + side] = cv2.resize(faces[i], (side, side), interpolation=cv2.INTER_AREA)
            squares.append((x, y, side))
            who.append(i)
        kinds["pasted"].append(Photo(canvas, squares, who))
    return kinds


def colour(colorizer, L: np.ndarray) -> np.ndarray:
    """colorize.py's colour (a*, b*; H x W x 2, Lab units) for a photo of lightness L."""
    item = colorize.lightness_item(L, colorizer)
    return colorize.at_full_size(colorize.predict(colorizer, [item], 32)[0], L.shape)


def measure(photo: Photo, prediction_ab01: torch.Tensor, truth: torch.Tensor) -> dict:
    """Seed MSE and colorfulness of a prediction (Lab01, 1 x 3 x H x W, L the truth's) and of the truth, over the
    whole photo and over each face square."""
    regions = [(slice(None), slice(None))] + [(slice(y, y + s), slice(x, x + s)) for x, y, s in photo.squares]
    out = {"mse": [], "colorfulness": [], "truth_colorfulness": []}
    for rows, cols in regions:
        p, t = prediction_ab01[..., rows, cols], truth[..., rows, cols]
        out["mse"].append(float(scores.seed_mse_per_image(p, t)[0]))
        out["colorfulness"].append(float(scores.colorfulness(lab01_to_rgb(p))[0]))
        out["truth_colorfulness"].append(float(scores.colorfulness(lab01_to_rgb(t))[0]))
    return out


def summarize(rows: list, people: list) -> dict:
    """Means and 95% bootstrap intervals over the photos (whole photo) and over the people (face squares)."""
    whole = torch.tensor([r["mse"][0] for r in rows], dtype=torch.float64)
    faces = torch.tensor([m for r in rows for m in r["mse"][1:]], dtype=torch.float64)
    groups = np.unique(people, return_inverse=True)[1]
    gap = lambda key, part: abs(np.mean([v for r in rows for v in part(r[key])]) -  # noqa: E731
                                np.mean([v for r in rows for v in part(r["truth_colorfulness"])]))
    return {"photo_mse": float(whole.mean()), "photo_mse_interval": scores.bootstrap_interval(whole),
            "face_mse": float(faces.mean()), "face_mse_interval": scores.bootstrap_interval(faces, groups),
            "photo_colorfulness_gap": gap("colorfulness", lambda v: v[:1]),
            "face_colorfulness_gap": gap("colorfulness", lambda v: v[1:])}


def cost_of_faces(checkpoint: Path, grid: np.ndarray, device, repeats: int) -> dict:
    """What colouring faces apart costs colorize.py on a 12-megapixel JPEG of a grid of faces (enlarged to
    4000 x 3000), in process, as its main loop runs (the JPEG decoded, coloured, encoded and written), median of
    `repeats` seconds each: --faces off; the detection alone (faces.find_faces on its lightness); --faces auto."""
    import tempfile

    import cv2

    from faces import find_faces

    def median_seconds(work):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        photo, out = Path(folder) / "group.jpg", Path(folder) / "out.jpg"
        cv2.imwrite(str(photo), cv2.resize(grid, (4000, 3000), interpolation=cv2.INTER_CUBIC)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        for setting in SETTINGS:
            colorizer = colorize.Colorizer.from_checkpoint(checkpoint, None, None, device, faces=setting == "auto")
            item = colorize.load(photo, colorizer)  # once first: caches warm, the cascade loaded

            seconds[setting] = median_seconds(lambda: colorize.colour_one(photo, colorizer, out))
        seconds["detection"] = median_seconds(lambda: find_faces(item["L"]))
    return {"seconds": seconds, "squares": len(item["squares"]), "repeats": repeats,
            "detection_share": seconds["detection"] / seconds["off"], "ratio": seconds["auto"] / seconds["off"]}


def main():
    args = parse_args()
    device = resolve_device(args.device)
    manifest = check_prepared(args.data)
    faces, people = faces_of(args.data, manifest, args.split)
    colorizers = {setting: colorize.Colorizer.from_checkpoint(args.checkpoint, None, None, device,
                                                              faces=setting == "auto") for setting in SETTINGS}
    if colorizers["auto"].face_scale is None:
        raise UserError(f"{args.checkpoint}: its config holds no face scale (trained before checkpoints carried "
                        "it): add it with models/export.py --face-scale-from DATA")
    map_ab = evaluate.training_colours(args.data, manifest, 128, device).map_ab.cpu().numpy()
    kinds = build_photos(faces, args, np.random.default_rng(args.seed))
    results, seconds = {}, {}
    for kind, photos in kinds.items():
        rows = {method: [] for method in (*SETTINGS, "mean-face map", "gray")}
        found = []
        for photo in photos:
            truth = images_to_lab01(torch.from_numpy(photo.rgb)[None]).double()
            L = lightness_of_samples(photo.rgb[..., ::-1])  # as colorize.py reads a file's (B, G, R) samples
            for setting in SETTINGS:
                start = time.perf_counter()
                ab = colour(colorizers[setting], L)
                seconds.setdefault(setting, []).append(time.perf_counter() - start)
                predicted = torch.cat([truth[:, :1], ab_to_ab01(torch.from_numpy(ab).permute(2, 0, 1)[None].double())],
                                      dim=1)
                rows[setting].append(measure(photo, predicted, truth))
            found.append(len(colorize.lightness_item(L, colorizers["auto"])["squares"]))
            gray = truth.clone()
            gray[:, 1:] = ab_to_ab01(0.0)
            rows["gray"].append(measure(photo, gray, truth))
            mapped = truth.clone()
            mapped[:, 1:] = torch.from_numpy(map_ab).double().mean(dim=(1, 2))[None, :, None, None]
            for x, y, s in photo.squares:  # the map over each face, the mean colour around them
                mapped[0, 1:, y:y + s, x:x + s] = torch.nn.functional.interpolate(
                    torch.from_numpy(map_ab)[None].double(), size=(s, s), mode="bilinear", align_corners=False)[0]
            rows["mean-face map"].append(measure(photo, mapped, truth))
        kind_people = [people[i] for photo in photos for i in photo.faces]
        if kind == "portrait":
            alone = np.array([r["mse"][1] for r in rows["auto"]])  # every test face, coloured alone
        results[kind] = {method: summarize(r, kind_people) for method, r in rows.items()}
        results[kind]["faces"] = sum(len(p.squares) for p in photos)
        results[kind]["squares_coloured_apart"] = int(np.sum(found))
        results[kind]["photos"] = len(photos)
        # what the same faces get coloured one at a time (each test face is a portrait of itself)
        results[kind]["alone_face_mse"] = float(np.mean([alone[i] for photo in photos for i in photo.faces]))
        results[kind]["lead_of_auto"] = {
            part: scores.bootstrap_interval(
                torch.tensor(values, dtype=torch.float64), None if part == "photo" else
                np.unique(kind_people, return_inverse=True)[1])
            for part, values in (
                ("photo", [o["mse"][0] - a["mse"][0] for o, a in zip(rows["off"], rows["auto"])]),
                ("faces", [o - a for ro, ra in zip(rows["off"], rows["auto"]) for o, a in zip(ro["mse"][1:],
                                                                                               ra["mse"][1:])]))}
    report = {"data": str(args.data), "checkpoint": str(args.checkpoint), "machine": machine(),
              "face_scale": colorizers["auto"].face_scale, "kinds": results,
              "seconds_per_photo": {s: float(np.mean(v)) for s, v in seconds.items()}}
    if args.cost_repeats:
        report["12mp"] = cost_of_faces(args.checkpoint, kinds["grid 4x4"][0].rgb, device, args.cost_repeats)
    write_results(args.out, "group_photos", report, markdown(report))


def markdown(r: dict) -> str:
    lines = [describe_machine(r["machine"]), "",
             f"Checkpoint `{r['checkpoint']}` (face scale {r['face_scale']:.3f}), test faces of `{r['data']}`. "
             "Seed MSE (95% bootstrap interval) on the whole photo and on the face squares; colorfulness gap to the "
             "truth. 'x alone': the face squares' MSE over what the same faces get coloured one at a time (each "
             "a photo of its own).", "",
             "| photos | faces (coloured apart) | method | photo MSE | face MSE | x alone | photo gap | face gap |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, k in r["kinds"].items():
        for method in ("auto", "off", "mean-face map", "gray"):
            m = k[method]
            lines.append(f"| {kind} ({k['photos']}) | {k['faces']} ({k['squares_coloured_apart']}) | {method} | "
                         f"{m['photo_mse']:.3e} ({m['photo_mse_interval'][0]:.2e} to {m['photo_mse_interval'][1]:.2e})"
                         f" | {m['face_mse']:.3e} ({m['face_mse_interval'][0]:.2e} to {m['face_mse_interval'][1]:.2e})"
                         f" | {m['face_mse'] / k['alone_face_mse']:.2f} | {m['photo_colorfulness_gap']:.1f} "
                         f"| {m['face_colorfulness_gap']:.1f} |")
    lines += ["", "The lead of `--faces auto` over `off` (off's MSE minus auto's, 95% interval; above 0: auto better "
              "beyond the noise):", "", "| photos | whole photo | face squares |", "|---|---|---|"]
    for kind, k in r["kinds"].items():
        lead = k["lead_of_auto"]
        lines.append(f"| {kind} | {lead['photo'][0]:.2e} to {lead['photo'][1]:.2e} | "
                     f"{lead['faces'][0]:.2e} to {lead['faces'][1]:.2e} |")
    seconds, big = r["seconds_per_photo"], r.get("12mp")
    lines += ["", f"Seconds a photo (these small photos, in process): auto {seconds['auto']:.3f}, off "
              f"{seconds['off']:.3f}."]
    if big is None:
        return "\n".join(lines)
    lines[-1] += (f" colorize.py on a 12-megapixel JPEG of a 4x4 grid (enlarged to 4000 x 3000; decoded, coloured, "
                  f"encoded and written, in process, median of {big['repeats']}): --faces off "
                  f"{big['seconds']['off']:.2f} s; the detection {big['seconds']['detection']:.2f} s "
                  f"(**{big['detection_share']:.0%}** of that); --faces auto, {big['squares']} faces coloured apart, "
                  f"{big['seconds']['auto']:.2f} s ({big['ratio']:.2f}x).")
    return "\n".join(lines)


if __name__ == "__main__":
    exit_on_user_error(main)

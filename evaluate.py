"""Step 4: score colorizers and the regressor on the test split, beside three baselines.

For every colorizer checkpoint and for three baselines computed from the same training set
(gray: a = b = 0; the constant mean ab; the per-pixel mean ab map), on the same test images:
the seed's MSE (three [0,1]-scaled Lab channels, L from the input), PSNR and SSIM on RGB
(as ignite computes them, data range 1), mean CIEDE2000 (as scikit-image) and colorfulness (Hasler and Suesstrunk
2003) against the truth's; how much the seed MSEs, and the best colorizer's lead, move with the
test images drawn (95% bootstrap intervals, the people resampled where the images name them).
With --regressor: its predicted vs true mean a*, b* and test MSE. With --temperatures and --chroma-gains: each
classification colorizer also decoded at those annealed-mean temperatures and chroma gains, a row each.
With --photos: the same table on photos that are not in the prepared data (faces of people the
models never saw), each coloured whole as colorize.py colours it and scored at its own size.
Images are scored --batch-size at a time (memory follows the batch, not the number of images).
Writes report.md, metrics.json (per-image numbers too) and figures into --out.

    python evaluate.py --data data/prepared --runs runs/ --out runs/report      # every run in runs/, and baselines
    python evaluate.py --data runs/lfw/data --colorizer models/face_colorizer.pt --out runs/lfw/report
"""
import math
import shlex
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

import colorize
from common import (ARCHITECTURES, ClassifyingColorizer, ab01_to_ab, ab_to_ab01, check_prepared, chroma_gain,
                    colorize_lab01, images_to_lab01, is_history, lab01_batches, lab01_to_rgb, load_checkpoint,
                    load_colorizer, open_rgb_split, plot_loss_curves, run_record_of, save_figure, size_problem,
                    temperature, training_statistic)
from guards import (OWNER_FILE, RUN_CONFIG, TEMP_TAG, ArgumentParser, UserError, add_device_argument, atomic_write,
                    bfloat16_autocast, escape_bytes, exit_on_user_error, hold_for_reading, non_negative_float,
                    positive_int, read_json, relative_to_cwd, resolve_device, take_output_folder, write_json,
                    write_run_config)
from photos import GRAY_CHROMA, BadImage, find_inputs, lab_to_samples, mean_chroma, read_image, read_lightness, to_uint8
from scores import Truth, bootstrap_interval, score, summarize

REPORT_HEADING = "# Evaluation on the "  # report.md's first words: a report folder of evaluate's is known by them
MEAN_FACE_MAP = "mean-face map"  # the baseline that the ratios "x mean-face map" divide by
BASELINES = ("gray", "mean colour", MEAN_FACE_MAP)
# what evaluate writes into --out: a folder holding just these (from before .written-by.json) is its own
EVALUATE_FILES = {".lock", "report.md", "metrics.json", RUN_CONFIG, "loss_curves.png", "grid.png",
                  "lab_channels.png", "best_worst.png", "photos.png"}
GRAY_AB01 = ab_to_ab01(0.0)  # a* = b* = 0
# images colorized and scored at a time (--batch-size is read at a time): the network's layers and the metrics'
# dozens of passes then stay in the CPU's cache, and memory comes back to the allocator instead of being mapped
# afresh by the kernel for every pass
SCORE_CHUNK = 16


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--data", default="data/prepared", help="folder written by prepare_data.py")
    p.add_argument("--colorizer", nargs="*", default=[], metavar="CKPT",
                   help="colorizer checkpoints; several give one comparison table")
    p.add_argument("--runs", nargs="*", default=[], type=Path, metavar="DIR",
                   help="folders of runs: every */best.pt below each is added as a colorizer")
    p.add_argument("--regressor", default=None, metavar="CKPT", help="regressor checkpoint")
    p.add_argument("--temperatures", nargs="*", type=temperature, default=[], metavar="T",
                   help="classification colorizers: also scored at these annealed-mean temperatures, "
                        "one row each (choose one on --split val)")
    p.add_argument("--chroma-gains", nargs="*", type=chroma_gain, default=[], metavar="G",
                   help="classification colorizers: also scored with each image's colours spread from its mean "
                        "colour by these gains (above 1: more vivid), at every temperature; a row each")
    p.add_argument("--max-gap", type=non_negative_float, default=3.0, metavar="GAP",
                   help="with --temperatures or --chroma-gains: name the decoding to colour with, the lowest seed MSE "
                        "among those whose colorfulness is within GAP of the truth's (on --split val)")
    p.add_argument("--photos", nargs="*", default=[], type=Path, metavar="PATH",
                   help="image files or folders outside the prepared data: scored in a second table, each coloured "
                        "as colorize.py colours it")
    p.add_argument("--faces", choices=["auto", "off"], default="auto",
                   help="--photos: as colorize.py's --faces (auto: faces smaller than the training faces coloured "
                        "in squares of their own; off: the whole photo at once)")
    p.add_argument("--out", type=Path, default=Path("runs/report"),
                   help="report folder: a new or empty one, or a report this script wrote (then replaced)")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="the prepared split scored; val to choose a decoding, test to report")
    p.add_argument("--show", type=positive_int, default=6, help="test images in the figures")
    add_device_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="images scored at a time: memory follows it, not the number of images")
    p.add_argument("--amp", action="store_true",
                   help="the networks in bfloat16 where the device has it: faster, but the scores move (seed MSE by "
                        "about 1%%, benchmarks/README.md): compare models in float32")
    return p.parse_args(argv)


def main():
    args = parse_args()
    for folder in args.runs:
        colorizers, regressors = runs_below(folder)
        args.colorizer += colorizers
        if regressors and not args.regressor and len(regressors) == 1:  # the README's layout: runs/regressor
            args.regressor = regressors[0]
        for path in regressors:
            if path != args.regressor:
                print(f"note: {escape_bytes(path)}: a regressor, left out (--regressor scores one)", file=sys.stderr)
    if not args.colorizer and not args.regressor:
        raise UserError("nothing to evaluate: pass --colorizer CKPT [CKPT ...] and/or --regressor CKPT")
    device = resolve_device(args.device)
    args.amp = bfloat16_autocast(device.type, args.amp, "evaluating")
    manifest = check_prepared(args.data)
    reading = hold_for_reading(Path(args.data))  # held to the end: prepare_data.py does not replace it meanwhile
    runs = load_colorizers(args.colorizer, args.temperatures, args.chroma_gains, device, manifest["size"])
    regressor = load_regressor(args.regressor, device, manifest["size"]) if args.regressor else None
    photos = usable_photos([f for path in args.photos for f in photo_files(path, args.out)])
    if args.photos and not photos:
        raise UserError(f"--photos {' '.join(map(str, args.photos))}: no usable image files there")
    colours = training_colours(args.data, manifest, args.batch_size, device)  # kept beside the data: a check too
    # now, not after all the work; the last check, so that a bad input leaves no folder
    # held until the report is written: one evaluation at a time
    _, lock = take_output_folder(args.out, "evaluate.py", ours=is_report_folder)
    write_run_config(args.out, vars(args), device)

    report, results, figures = split_section(args, manifest, colours, runs, device)
    if photos:
        photos_section(args, photos, colours, runs, device, report, results, figures)
    if regressor:
        regressor_section(args, regressor, colours, device, runs, report, results)
    if runs.histories:
        plot_loss_curves(runs.histories, args.out / "loss_curves.png", title="training curves")
        figures.insert(0, "loss_curves.png")
    report += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    # file names that are not UTF-8 (a Latin-1 archive) shown with their odd bytes as \xNN
    atomic_write(args.out / "report.md", lambda tmp: Path(tmp).write_text(escape_bytes("\n".join(report))))
    write_json(args.out / "metrics.json", results)
    lock.release()
    reading.release()
    print(results_table(results["summary"], runs.kinds))
    if "decoding" in results:
        print("\n" + results["decoding"]["sentence"])
    print(f"\nreport: {escape_bytes(args.out / 'report.md')}")


def runs_below(folder: Path) -> tuple[list[str], list[str]]:
    """--runs: the best.pt files below folder -> (the colorizers', the regressors')."""
    found = sorted(str(p) for p in folder.rglob("best.pt"))
    if not found:
        raise UserError(f"{folder}: no best.pt below it; train colorizers with --out {folder}/NAME first")
    tasks = {path: load_checkpoint(path)[1]["task"] for path in found}
    return [p for p in found if tasks[p] == "colorizer"], [p for p in found if tasks[p] == "regressor"]


def is_report_folder(folder: Path) -> bool:
    """Whether folder (without OWNER_FILE) is a report of evaluate's by what it holds: only report files, a
    metrics.json of evaluate's and a report.md that begins as evaluate's do."""
    names = {p.name for p in folder.iterdir() if TEMP_TAG not in p.name} - {OWNER_FILE}
    metrics = read_json(folder / "metrics.json")
    try:
        heading = (folder / "report.md").read_text(errors="replace")[:len(REPORT_HEADING)]
    except OSError:
        return False
    return names <= EVALUATE_FILES and isinstance(metrics, dict) and \
        all(k in metrics for k in ("split", "summary", "kinds")) and heading == REPORT_HEADING


def load_regressor(path: str, device, size: int):
    """The --regressor, checked before any work: -> (model, its checkpoint dict)."""
    regressor, config, ckpt = load_checkpoint(path, task="regressor", device=device)
    problem = size_problem(config, size)
    if problem:
        raise UserError(f"{path}: the prepared images are {size}x{size}, but {problem}")
    return regressor, ckpt


def photo_files(path: Path, out: Path) -> list[Path]:
    """The images a --photos path names, none inside --out (a report's figures are not photos to score); each
    folder below it that cannot be searched named on a line."""
    found = find_inputs(path, out)
    for folder, reason in found.unsearched:
        print(f"skipped {escape_bytes(folder)}: {escape_bytes(reason)}", file=sys.stderr)
    return found.images


READ_AHEAD_PIXELS = 2 ** 26  # photos read ahead of the network, in pixels (colorize.py's default --max-megapixels)
# a photo larger than this is scored shrunk to it, the truth as the prediction: the metrics' passes over a photo of
# 12 megapixels would hold gigabytes
SCORE_PIXELS = 2 ** 20


def truth_of_photo(path: Path) -> np.ndarray:
    """A --photos file as it is scored: uint8 RGB, upright, at most SCORE_PIXELS. BadImage where it cannot be read
    or holds no colour (nothing to score against)."""
    rgb = to_scoring_size(to_uint8(read_image(path).rgb))
    chroma = mean_chroma(rgb)
    if chroma < GRAY_CHROMA:
        raise BadImage(f"black and white (mean chroma {chroma:.1f}, below {GRAY_CHROMA:g}): it holds no colour to "
                       "score against", "colorize.py colours it")
    return rgb


def to_scoring_size(rgb: np.ndarray) -> np.ndarray:
    """A photo's samples (H x W x 3), shrunk to at most SCORE_PIXELS; a copy in any case."""
    h, w = rgb.shape[:2]
    scale = math.sqrt(SCORE_PIXELS / (h * w))
    if scale >= 1:
        return rgb.copy()
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def usable_photos(files: list[Path]) -> list[Path]:
    """The --photos that can be scored, each read once before the work (memory holds one at a time); each other
    one is named on a line and left out, as prepare_data.py leaves out what it cannot use."""
    usable = []
    for f in files:
        try:
            truth_of_photo(f)
            usable.append(f)
        except BadImage as exc:
            print(f"skipped {escape_bytes(f)}: {escape_bytes(exc)}", file=sys.stderr)
    return usable


class Runs(NamedTuple):
    """The colorizers to score, by name ("RUN: description"): (model, regressor or None), and their kind
    (baselines too), training history, config and checkpoint file."""
    models: dict
    kinds: dict
    histories: dict
    configs: dict
    checkpoints: dict


def load_colorizers(paths: list[str], temperatures: list[float], chroma_gains: list[float], device,
                    size: int) -> Runs:
    """Each checkpoint as trained; a classification checkpoint also at each pair of its own and the given
    temperatures and chroma gains (the same network, decoded otherwise: a row "RUN@T=t,chroma=g" each, trained
    once: no history). Each checked before any work: that it takes size x size images."""
    runs = Runs({}, {name: "baseline" for name in BASELINES}, {}, {}, {})
    paths = list(dict.fromkeys(paths))  # a checkpoint named twice is scored once
    labels = run_labels(paths)
    for path in paths:
        model, regressor, config, ckpt = load_colorizer(path, device)
        problem = size_problem(config, size)
        if problem:
            raise UserError(f"{path}: the prepared images are {size}x{size}, but {problem}")
        label = labels[path]
        name = f"{label}: {describe(config)}"
        runs.models[name] = (model, regressor)
        runs.kinds[name], runs.configs[name] = "colorizer", config
        history = run_history(path, ckpt)
        if history is not None:
            runs.histories[name] = history
        runs.checkpoints[name] = path
        if not isinstance(model, ClassifyingColorizer):
            continue
        for t in dict.fromkeys([model.temperature, *temperatures]):
            for g in dict.fromkeys([model.chroma_gain, *chroma_gains]):
                if (t, g) != (model.temperature, model.chroma_gain):
                    variant = {**config, "temperature": t, "chroma_gain": g}
                    changed = [f"T={t:g}"] * (t != model.temperature) + [f"chroma={g:g}"] * (g != model.chroma_gain)
                    name = f"{label}@{','.join(changed)}: {describe(variant)}"
                    runs.models[name] = (ClassifyingColorizer(model.body, t, g).to(device).eval(), regressor)
                    runs.kinds[name], runs.configs[name], runs.checkpoints[name] = "colorizer", variant, path
    if (temperatures or chroma_gains) and not any(isinstance(m, ClassifyingColorizer)
                                                  for m, _ in runs.models.values()):
        raise UserError("--temperatures, --chroma-gains: no classification colorizer among the checkpoints "
                        "(--head classify); leave them out")
    return runs


def run_labels(paths: list[str]) -> dict[str, str]:
    """A name for each checkpoint in the tables: its run folder's name (and the file's, if not best.pt), with as
    many folders above it as make every name differ (runs/a/colorizer and runs/b/colorizer: a/colorizer,
    b/colorizer)."""
    own = {p: [Path(p).parent.name] + ([] if Path(p).stem == "best" else [Path(p).stem]) for p in paths}
    above = {p: Path(p).resolve().parent.parent.parts for p in paths}
    depth = dict.fromkeys(paths, 0)
    while True:
        labels = {p: "/".join([*above[p][len(above[p]) - depth[p]:], *own[p]]) for p in paths}
        clashing = [p for p in paths if list(labels.values()).count(labels[p]) > 1 and depth[p] < len(above[p])]
        if not clashing:
            return labels
        for p in clashing:
            depth[p] += 1


class TrainingColours(NamedTuple):
    """What the baselines learn from the training images, on the Lab01 scale."""
    mean_ab: torch.Tensor  # (2,): the mean colour
    map_ab: torch.Tensor   # (2, H, W): the mean colour at every pixel, the mean face


def training_colours(data_dir, manifest: dict, batch_size: int, device) -> TrainingColours:
    """The mean colour and mean-face map of the original training images (augmented copies excluded), from
    their uint8 RGB batch by batch: computed once, kept beside the prepared data."""
    originals = open_rgb_split(data_dir, "train")[::manifest["augment_factor"]]

    def mean_face_map():
        total = sum(lab01[:, 1:].double().sum(dim=0) for lab01 in lab01_batches(originals, batch_size, device))
        return (total / len(originals)).float().cpu().numpy()

    size = manifest["size"]
    map_ab = torch.from_numpy(training_statistic(data_dir, "mean_face_map", (2, size, size), mean_face_map,
                                                 "the mean-face map of the training images")).to(device)
    return TrainingColours(map_ab.mean(dim=(1, 2)), map_ab)


def split_section(args, manifest, colours: TrainingColours, runs: Runs, device):
    """The table on the prepared split, its figures and how each colorizer was trained -> (report lines,
    results for metrics.json, figure names)."""
    images = open_rgb_split(args.data, args.split)  # memory-mapped: scored batch by batch
    # from the uint8 images, exactly: the stored float16 Lab would add rounding to the scores
    pairs = split_pairs(lab01_batches(images, args.batch_size, device), colours, runs.models, args.amp)
    scores = score_all(pairs, len(images), args.show)
    plot_grid(scores.shown, args.out / "grid.png")
    figures = ["grid.png"]
    models = [n for n in scores.summary if runs.kinds[n] == "colorizer"]
    report = [f"{REPORT_HEADING}{args.split} split ({len(images)} images)", "",
              f"Command: `{' '.join(shlex.quote(relative_to_cwd(a)) for a in ['python', *sys.argv])}`", "",
              f"Data: {manifest['source']} (seed {manifest['seed']}, split by {manifest.get('split_by', 'image')}"
              f"{', DEMO data: these numbers say nothing about faces' if manifest['demo'] else ''}).", "",
              "Seed MSE: mean over the three [0,1]-scaled Lab channels, L from the input. PSNR and SSIM on RGB "
              "in [0, 1] (data range 1). CIEDE2000 in Lab units. Colorfulness: Hasler and Suesstrunk (2003); "
              f"the truth's is {scores.truth_colorfulness:.1f}." + (" The colorizers ran in bfloat16 (--amp): compare "
                                                                   "only with tables made so." if args.amp else ""),
              "", results_table(scores.summary, runs.kinds), ""]
    decoding = choose_decoding(scores.summary, runs, args.max_gap) if args.temperatures or args.chroma_gains else None
    if decoding:
        report += [decoding["sentence"], ""]
    if models:
        best = min(models, key=lambda n: scores.summary[n]["mse"])
        plot_lab_channels(scores.shown["truth"], scores.shown[best], args.out / "lab_channels.png", "model")
        order = np.argsort(scores.per_image[best]["mse"])
        extremes = sorted({int(i) for i in order[:3]} | {int(i) for i in order[-3:]}, key=list(order).index)
        truth = lab01_from_uint8(images[extremes], device)
        model, regressor = runs.models[best]
        with torch.no_grad():
            plot_grid({"truth": truth, best.split(":")[0]: colorize_lab01(model, truth, regressor, args.amp)},
                      args.out / "best_worst.png")
        figures += ["lab_channels.png", "best_worst.png"]
        mse = scores.per_image[best]["mse"]
        noise = noise_of_split(scores.per_image, best, manifest["files"][args.split],
                               by_person=manifest.get("split_by") == "person")
        report += noise_report(noise, args.split)
        report += ["How each colorizer was trained (its run folder's history.json):", "",
                   markdown_table(["colorizer", "epochs trained", "best validation MSE", "at epoch", "settings"],
                                  [training_row(name, runs.histories[name], runs.configs[name])
                                   for name in models if name in runs.histories]),
                   "", f"Per-image seed MSE of {best} (test image index: MSE):", "",
                   ", ".join(f"{i}: {v:.2e}" for i, v in enumerate(mse)) if len(mse) <= 200 else
                   f"{len(mse)} images: in metrics.json (per_image).", ""]
    results = {"split": args.split, "n_images": len(images), "data": manifest["source"], "demo": manifest["demo"],
               "truth_colorfulness": scores.truth_colorfulness, "summary": scores.summary,
               "per_image": scores.per_image, "kinds": runs.kinds, "configs": runs.configs}
    if models:
        results["noise"] = noise
    if decoding:
        results["decoding"] = decoding
    return report, results, figures


def choose_decoding(summary: dict, runs: Runs, max_gap: float) -> dict:
    """Among the classification colorizers' decodings, the one to colour with: the lowest seed MSE whose
    colorfulness gap to the truth is at most max_gap (vivid and right), else the smallest gap."""
    configs = runs.configs
    decodings = [name for name, config in configs.items() if config.get("head") == "classify"]
    vivid = [name for name in decodings if summary[name]["colorfulness_gap"] <= max_gap]
    name = min(vivid, key=lambda n: summary[n]["mse"]) if vivid else \
        min(decodings, key=lambda n: summary[n]["colorfulness_gap"])
    flags = (f"--checkpoint {shlex.quote(str(runs.checkpoints[name]))} --temperature {configs[name]['temperature']:g} "
             f"--chroma-gain {configs[name].get('chroma_gain', 1.0):g}")
    rule = (f"the lowest seed MSE with a colorfulness gap of at most {max_gap:g}" if vivid else
            f"no decoding within {max_gap:g} of the truth's colorfulness; the closest")
    return {"name": name, "flags": flags,
            "sentence": f"Decoding to colour with ({rule}): {name.split(':')[0]}, `python colorize.py PHOTOS {flags}`."}


def noise_of_split(per_image: dict, best: str, files: list[dict], by_person: bool) -> dict:
    """How much each method's seed MSE, its ratio to the mean-face map's and the best colorizer's lead over it
    move with the test images drawn: 95% bootstrap intervals. Photos of one person are alike, so where the data
    was split by person the people are resampled, each with all their photos; otherwise the images (a JPEG
    comment need not name a person: an encoder writes its own name there)."""
    people = [f.get("person") for f in files]
    groups = np.unique(people, return_inverse=True)[1] if by_person else None
    best_mse, map_mse = (torch.tensor(per_image[name]["mse"], dtype=torch.float64) for name in (best, MEAN_FACE_MAP))
    methods = {}
    for name, values in per_image.items():
        mse = torch.tensor(values["mse"], dtype=torch.float64)
        methods[name] = {"mse_interval": bootstrap_interval(mse, groups),
                         "map_ratio_interval": bootstrap_interval(mse, groups, over=map_mse),
                         "best_lead_interval": bootstrap_interval(mse - best_mse, groups)}
    return {"resampled": "people" if groups is not None else "images", "images": len(files),
            "people": len(set(people)) if groups is not None else None, "best": best, "methods": methods}


def noise_report(noise: dict, split: str) -> list[str]:
    best = noise["best"]
    what = f"{noise['images']} images of {noise['people']} people, the people resampled with all their photos" \
        if noise["resampled"] == "people" else f"{noise['images']} images, the images resampled"
    rows = [[name.split(":")[0], f"{m['mse_interval'][0]:.3e} to {m['mse_interval'][1]:.3e}",
             f"{m['map_ratio_interval'][0]:.3f} to {m['map_ratio_interval'][1]:.3f}",
             "" if name == best else f"{m['best_lead_interval'][0]:.2e} to {m['best_lead_interval'][1]:.2e}"]
            for name, m in noise["methods"].items()]
    return [f"The noise of the {split} split ({what}; 95% bootstrap intervals): a lead whose interval lies above 0 is "
            "beyond it.", "",
            markdown_table(["method", "seed MSE", "x mean-face map", f"its MSE minus {best.split(':')[0]}'s"], rows),
            ""]


def photos_section(args, files: list[Path], colours, runs: Runs, device, report, results, figures) -> None:
    """The same table on --photos, outside the prepared data, each photo coloured whole as colorize.py colours it
    and scored at its own size: added to report, results and figures."""
    colorizers = {name: colorize.Colorizer(model, regressor, runs.configs[name], None, device, args.amp,
                                           faces=args.faces == "auto")
                  for name, (model, regressor) in runs.models.items()}
    size = colours.map_ab.shape[-1]

    def thumbnails(lab01):  # each photo's centre square at the training size, for the figure
        h, w = lab01.shape[-2:]
        side = min(h, w)
        square = lab01[..., (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        return F.interpolate(square, size=(size, size), mode="area")

    read = colorize.read_ahead([(path, None) for path in files], lambda path: read_photo(path, colorizers),
                               READ_AHEAD_PIXELS, lambda photo: photo.lightness.size)
    baseline_ab = [ab01_to_ab(x).permute(*range(1, x.dim()), 0).cpu().numpy() for x in colours]  # channels last
    pairs = (photo_pair(batch, baseline_ab, colorizers, device) for batch in alike_batches(read))
    scores = score_all(pairs, len(files), args.show, thumbnails)
    plot_grid(scores.shown, args.out / "photos.png")
    figures.append("photos.png")
    names = ", ".join(f"`{f.name}`" for f in files) if len(files) <= 12 else \
        f"{len(files)} files from {', '.join(f'`{p}`' for p in args.photos)} (listed in metrics.json)"
    report += [f"## {len(files)} photos that are not in the prepared data", "",
               f"Files: {names}. Each is coloured whole, as `colorize.py --faces {args.faces}` colours it (its "
               "short side at the network's input size, with auto the faces it finds at the training scale, the "
               "colour upsampled to the photo and merged with its own lightness, 8-bit samples), and scored against "
               f"itself at its own size (shrunk to at most {SCORE_PIXELS / 2 ** 20:g} megapixel, the truth as the "
               "prediction). The baselines' colour (the mean-face map stretched to the photo) goes through the same "
               f"last step. The truth's colorfulness is {scores.truth_colorfulness:.1f}; baselines from the same "
               "training set.", "",
               results_table(scores.summary, runs.kinds), ""]
    results["photos"] = {"files": [str(f) for f in files], "truth_colorfulness": scores.truth_colorfulness,
                         "summary": scores.summary, "per_image": scores.per_image, "score_pixels": SCORE_PIXELS}


class PhotoRead(NamedTuple):
    """A --photos file read for scoring: its truth (uint8 RGB at most SCORE_PIXELS), its lightness at its own size
    (L*, as colorize.py reads it), and what each colorizer needs to colour it (colorize.lightness_item)."""
    truth: np.ndarray
    lightness: np.ndarray
    items: dict


def read_photo(path: Path, colorizers: dict) -> PhotoRead:
    """Everything about a photo that needs no network: decoding, lightness, the face search (once for colorizers
    that search alike: one checkpoint at several decodings)."""
    lightness = read_lightness(path, colorize.WORKING_BYTES_PER_PIXEL).L
    searched = {}
    for name, colorizer in colorizers.items():
        key = (colorizer.size, colorizer.multiple, colorizer.face_scale)
        if key not in searched:
            searched[key] = colorize.lightness_item(lightness, colorizer)
    items = {name: searched[(c.size, c.multiple, c.face_scale)] for name, c in colorizers.items()}
    return PhotoRead(truth_of_photo(path), lightness, items)


def alike_batches(read):
    """[(path, its PhotoRead)] of consecutive photos of one size, as colorize.py batches a folder: up to its
    BATCH_SIZE at a time, a photo over ALONE_PIXELS alone. The network and the scores then see a batch. read:
    colorize.read_ahead's (path, _, PhotoRead or why it could not be read again)."""
    batch = []
    for path, _, photo in read:
        if isinstance(photo, Exception):  # it was read before the work began: it changed since
            raise UserError(f"{escape_bytes(path)}: {escape_bytes(photo)}")
        if batch and (batch[0][1].lightness.shape != photo.lightness.shape or len(batch) == colorize.BATCH_SIZE):
            yield batch
            batch = []
        batch.append((path, photo))
        if photo.lightness.size > colorize.ALONE_PIXELS:
            yield batch
            batch = []
    if batch:
        yield batch


def photo_pair(batch: list, baseline_ab: list, colorizers: dict, device) -> tuple:
    """(the truth's Lab01, {method: its Lab01}) of a batch of photos of one size, (n, 3, h, w) each: every
    colorizer's colour as colorize.py writes it (8-bit), every baseline's colour through the same last step
    (baseline_ab: the training colours' mean and mean-face map, in Lab units, channels last)."""
    h, w = batch[0][1].lightness.shape
    mean_ab, map_ab = baseline_ab
    colours_ab = dict(zip(BASELINES, (None, np.full((h, w, 2), mean_ab, np.float32),
                                      cv2.resize(map_ab, (w, h), interpolation=cv2.INTER_LINEAR))))
    samples = {name: [to_scoring_size(lab_to_samples(photo.lightness, ab)) for _, photo in batch]
               for name, ab in colours_ab.items()}
    for name, colorizer in colorizers.items():
        items = [photo.items[name] for _, photo in batch]
        samples[name] = []
        for (path, _), item, ab in zip(batch, items, colorize.predict(colorizer, items, colorize.BATCH_SIZE)):
            if ab is None:
                raise UserError(f"{escape_bytes(name)}: its colour for {escape_bytes(path)} is not a finite number "
                                "(NaN or inf); the checkpoint may be damaged: evaluate another")
            samples[name].append(to_scoring_size(colorize.coloured(item, ab, np.uint8)))

    def lab01(images):
        return images_to_lab01(torch.from_numpy(np.stack(images)).to(device))
    return lab01([photo.truth for _, photo in batch]), {name: lab01(images) for name, images in samples.items()}


def regressor_section(args, loaded, colours: TrainingColours, device, runs: Runs, report, results) -> None:
    """The regressor's mean (a, b) per test image against the truth and against the training set's mean
    colour, with bootstrap intervals: added to report and results, its history to runs.histories."""
    regressor, ckpt = loaded
    pred_ab, true_ab = [], []
    with torch.no_grad():
        for lab01 in lab01_batches(open_rgb_split(args.data, args.split), args.batch_size, device):
            pred_ab.append(regressor(lab01[:, :1]))
            true_ab.append(lab01[:, 1:].mean(dim=(2, 3)))
    pred_ab, true_ab = torch.cat(pred_ab), torch.cat(true_ab)
    per_image = ((pred_ab - true_ab) ** 2).mean(dim=1)
    mse = float(per_image.mean())
    pa, ta = ab01_to_ab(pred_ab).tolist(), ab01_to_ab(true_ab).tolist()
    rows = [[i, f"{ta[i][0]:.2f}", f"{pa[i][0]:.2f}", f"{ta[i][1]:.2f}", f"{pa[i][1]:.2f}"]
            for i in range(min(10, len(ta)))]
    constant_per_image = ((colours.mean_ab - true_ab) ** 2).mean(dim=1)
    constant_mse = float(constant_per_image.mean())
    train_mean = ab01_to_ab(colours.mean_ab)
    mse_low, mse_high = bootstrap_interval(per_image)
    gain_low, gain_high = bootstrap_interval(constant_per_image - per_image)
    report += ["## Regressor: mean a*, b* of each test image (Lab units)", "",
               f"Test MSE of the mean (a, b) on the [0, 1] scale: {mse:.3e} "
               f"(the training set's mean colour as a guess: {constant_mse:.3e}; it is a*={train_mean[0]:.2f}, "
               f"b*={train_mean[1]:.2f}).", "",
               f"The noise of {len(true_ab)} test images (95% bootstrap intervals, the images resampled): "
               f"test MSE {mse_low:.3e} to {mse_high:.3e}; the mean colour's MSE minus the regressor's "
               f"{gain_low:.3e} to {gain_high:.3e} (above 0: the regressor is better beyond this noise).", "",
               markdown_table(["test image", "true a*", "predicted a*", "true b*", "predicted b*"], rows), ""]
    results["regressor"] = {"mse": mse, "constant_mean_mse": constant_mse, "mse_interval": [mse_low, mse_high],
                            "gain_over_constant_interval": [gain_low, gain_high], "predicted_ab": pa, "true_ab": ta}
    history = run_history(args.regressor, ckpt)
    if history is not None:
        runs.histories["regressor"] = history


class Scores(NamedTuple):
    per_image: dict           # method -> metric -> one value per image
    summary: dict             # method -> metric -> mean, and the colorfulness gap to the truth
    truth_colorfulness: float
    shown: dict               # "truth" and every method -> Lab01 of the first images, for the figures


def score_all(pairs, n_images: int, show: int, thumbnails=lambda lab01: lab01) -> Scores:
    """Every method's prediction against the truth, pairs of (the truth's Lab01, {method: its Lab01}) of a batch
    each: memory holds a batch and the per-image numbers, whatever the number of images. A progress bar where a
    person watches. thumbnails: a batch as the figures show it (one size for all)."""
    from tqdm import tqdm

    per_image, truth_colorfulness, shown = {}, [], {}
    with tqdm(total=n_images, unit="image", leave=False, disable=not sys.stderr.isatty()) as progress:
        for lab01, predictions in pairs:
            truth = Truth.of(lab01)
            truth_colorfulness += truth.colorfulness.tolist()
            for name, pred in predictions.items():
                for metric, values in score(pred, truth).items():
                    per_image.setdefault(name, {}).setdefault(metric, []).extend(values)
            wanted = show - len(shown.get("truth", []))
            if wanted > 0:
                more = {name: thumbnails(pred[:wanted]) for name, pred in {"truth": lab01, **predictions}.items()}
                shown = {name: torch.cat([shown[name], thumbs]) if name in shown else thumbs
                         for name, thumbs in more.items()}
            progress.update(len(lab01))
    truth = float(np.mean(truth_colorfulness))
    return Scores(per_image, {name: summarize(v, truth) for name, v in per_image.items()}, truth, shown)


def split_pairs(batches, colours: TrainingColours, colorizers: dict, amp: bool):
    """(truth, {method: prediction}) for each SCORE_CHUNK of the prepared images: every baseline and colorizer on
    the same images (amp: the colorizers in bfloat16)."""
    for batch in batches:
        for lab01 in batch.split(SCORE_CHUNK):
            predictions = baselines(colours, lab01)
            with torch.no_grad():
                for name, (model, regressor) in colorizers.items():
                    predictions[name] = colorize_lab01(model, lab01, regressor, amp)
            yield lab01, predictions


def baselines(colours: TrainingColours, lab01: torch.Tensor) -> dict:
    """Predictions that use no model: the colour of nothing, of the average, of the average face."""
    L = lab01[:, :1]
    gray_ab = torch.full_like(lab01[:, 1:], GRAY_AB01)
    mean_ab = colours.mean_ab[None, :, None, None].expand_as(gray_ab)
    map_ab = colours.map_ab[None].expand_as(gray_ab)
    return {name: torch.cat([L, ab], dim=1) for name, ab in zip(BASELINES, (gray_ab, mean_ab, map_ab))}


def lab01_from_uint8(images: np.ndarray, device) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> Lab01 (N, 3, H, W) float32, all in memory (a batch, a few images)."""
    return torch.cat(list(lab01_batches(images, device=device)))


def results_table(summary: dict, kinds: dict) -> str:
    rows = [[name, kinds[name], f"{s['mse']:.3e}", f"{s['psnr']:.2f}", f"{s['ssim']:.4f}", f"{s['ciede2000']:.2f}",
             f"{s['colorfulness']:.1f}", f"{s['colorfulness_gap']:.1f}"] for name, s in summary.items()]
    return markdown_table(["method", "kind", "seed MSE", "PSNR (dB)", "SSIM", "CIEDE2000", "colorfulness",
                           "gap to truth"], rows)


def describe(config: dict) -> str:
    classify = config.get("head") == "classify"
    text = ARCHITECTURES[config["arch"]].name(config, "" if classify else f", {config['activation']}")
    text += " + regressor" if config.get("regressor") else ""
    if classify:
        gain = config.get("chroma_gain", 1.0)
        return text + f", classify (T={config['temperature']}{f', chroma x{gain:g}' if gain != 1 else ''})"
    return text + f", {config['loss']}"


def run_history(checkpoint_path, ckpt: dict) -> dict | None:
    """The whole run's history: history.json beside the checkpoint (best.pt holds only the epochs
    before it was saved) where it is one the trainers wrote, else the checkpoint's own; None where neither is."""
    for history in (read_json(Path(checkpoint_path).with_name("history.json")), run_record_of(ckpt).get("history")):
        if is_history(history):
            return history
    return None


def training_row(name: str, history: dict, config: dict) -> list:
    best = int(np.argmin(history["val_mse"]))
    schedule = " falling along a cosine" if config.get("lr_schedule") == "cosine" else ""  # older runs: constant
    settings = f"lr {config['lr']}{schedule}, batch {config['batch_size']}, patience {config['patience']}"
    return [name.split(":")[0], len(history["epoch"]), f"{history['val_mse'][best]:.3e}", history["epoch"][best],
            settings + (", augment" if config.get("augment") else "")]


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_grid(images: dict, path: Path) -> None:
    """Rows: images. Columns: gray input, truth, then every method (the seed's Fig. 13, in RGB); images
    holds the truth ("truth") and each method's Lab01, the same rows."""
    truth = images["truth"]
    columns = [("gray input", torch.cat([truth[:, :1], torch.full_like(truth[:, 1:], GRAY_AB01)], 1))] + \
        list(images.items())
    plot_montage([(textwrap.fill(name, 22), lab01_to_rgb(lab01).permute(0, 2, 3, 1).cpu().numpy())
                  for name, lab01 in columns], path, fontsize=6)


def plot_lab_channels(true_lab01, pred_lab01, path: Path, name: str) -> None:
    """L, then a* and b* of the truth and of one model, as the seed showed its Lab outputs."""
    from matplotlib import colormaps

    panels = [("L", true_lab01[:, 0], "gray"), ("true a*", true_lab01[:, 1], "RdYlGn_r"),
              (f"{name} a*", pred_lab01[:, 1], "RdYlGn_r"), ("true b*", true_lab01[:, 2], "YlGnBu_r"),
              (f"{name} b*", pred_lab01[:, 2], "YlGnBu_r")]
    # L over its whole range; a* and b* over the Lab01 values a face takes (0.3 to 0.7)
    plot_montage([(title, colormaps[cmap](((channel.cpu().numpy() - low) / (high - low)).clip(0, 1))[..., :3])
                  for (title, channel, cmap), (low, high) in zip(panels, [(0, 1)] + [(0.3, 0.7)] * 4)],
                 path, fontsize=7)


def plot_montage(columns: list, path: Path, fontsize: int) -> None:
    """Titled columns of RGB images (each (rows, H, W, 3) in [0, 1]) as one picture with white gaps, 1.6 inches
    an image: one image drawn, not an axes per image (a tenth of the time)."""
    rows, height, width = columns[0][1].shape[:3]
    gap = max(2, height // 16)
    canvas = np.ones((rows * (height + gap) - gap, len(columns) * (width + gap) - gap, 3))
    for c, (_, images) in enumerate(columns):
        for r, image in enumerate(images):
            canvas[r * (height + gap):r * (height + gap) + height, c * (width + gap):c * (width + gap) + width] = image
    fig = Figure(figsize=(1.6 * len(columns), 1.6 * rows + 0.4), dpi=72)
    axes = fig.add_axes((0.01, 0.01, 0.98, 0.98 * 1.6 * rows / (1.6 * rows + 0.4)))
    axes.imshow(canvas)
    axes.axis("off")
    for c, (title, _) in enumerate(columns):
        axes.text(c * (width + gap) + width / 2, -gap, title, ha="center", va="bottom", fontsize=fontsize)
    save_figure(fig, path)


if __name__ == "__main__":
    exit_on_user_error(main)

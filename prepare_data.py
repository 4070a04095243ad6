"""Step 1: turn a folder of photos into the prepared arrays every other step reads.

Loads every image (recursively), centre-crops and resizes it to --size, shuffles with --seed,
splits 9:1 into train / held-out and the held-out part in half into validation / test, and
augments the training set --augment-factor times (the original plus random flips, resized crops
and rotations). Writes train.npy, val.npy, test.npy (uint8 RGB, N x H x W x 3), beside each its
Lab conversion {split}_lab.npy (float16 Lab in [0, 1], N x 3 x H x W: what training reads, so
that no step of the training loop converts colours), all memory-mappable, and manifest.json
(which file went where, seed, counts, versions). Same seed -> same bytes.

With no --source and no data/face_images/, builds a small demo set from the colour photos that
scikit-image and matplotlib ship, so a fresh clone runs end to end without a download.

    python prepare_data.py --source data/face_images --out data/prepared
    python prepare_data.py --source photos/ --out runs/mine/data --split-by person --person-from file-name
"""
import hashlib
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common import (DEFAULT_BATCH_SIZE, LAB_SUFFIX, MANIFEST, MANIFEST_KEYS, PREPARED_FORMAT, SPLITS, MappedDataset,
                    collate_unchanged, image_size, lab01_batches, random_variant, release_pages)
from guards import (ArgumentParser, UserError, cannot_write, escape_bytes, exit_on_user_error, fraction, no_space_error,
                    non_negative_int, not_ours, positive_int, read_json, real_path, remove_stale_temporaries,
                    temp_prefix, write_json)
from photos import IMAGE_SUFFIXES, BadImage, center_square, find_images, prepare_photo, read_image, to_uint8
from locks import Busy, FolderLock

DEFAULT_SOURCE = Path("data/face_images")
# colour photos shipped inside installed packages: (package, file inside its data folder)
DEMO_PHOTOS = [("skimage", n) for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "ihc.png",
                                        "motorcycle_left.png", "motorcycle_right.png", "retina.jpg",
                                        "hubble_deep_field.jpg")] + \
              [("matplotlib", n) for n in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")]
DEMO_CROPS_PER_PHOTO = 20


PERSON_SOURCES = ("comment", "file-name")  # where --person-from reads whose photo it is


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--source", type=Path, default=None,
                   help=f"folder of images (searched recursively); default {DEFAULT_SOURCE}/ if present, else demo")
    p.add_argument("--demo", action="store_true", help="use the built-in demo photos even if --source exists")
    p.add_argument("--out", type=Path, default=Path("data/prepared"),
                   help="a new or empty folder, or one this script prepared before (then replaced)")
    p.add_argument("--size", type=image_size, default=128, help="side of the square images")
    p.add_argument("--seed", type=int, default=0, help="random seed: the shuffle, the split and the augmentation")
    p.add_argument("--held-out", type=fraction, default=0.1, help="fraction held out for validation and test")
    p.add_argument("--val-share", type=fraction, default=0.5,
                   help="share of the held-out part (images or people) that validates; the rest is the test split")
    p.add_argument("--split-by", choices=["image", "person"], default="image",
                   help="person: keep each person (see --person-from) on one side of the split")
    p.add_argument("--person-from", choices=PERSON_SOURCES, default="comment",
                   help="where a photo names its person: the JPEG comment (the seed's faces: s12) or the file name "
                        "without its number (LFW: Aaron_Peirsol_0003.jpg -> Aaron_Peirsol)")
    p.add_argument("--augment-factor", type=positive_int, default=10, help="training images per original (1: none)")
    p.add_argument("--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                   help="processes that decode, resize and augment the images (0: this one); the bytes written "
                        "do not depend on it")
    args = p.parse_args(argv)
    return args


def person_of(path: Path, source: str) -> str | None:
    """Who the photo shows, if it says: its JPEG comment (the seed's faces keep s1..s50 there), or its file
    name without the trailing number (LFW's Aaron_Peirsol_0003.jpg -> Aaron_Peirsol); None where it says nothing."""
    if source == "file-name":
        numbered = re.fullmatch(r"(.+?)[_-]\d+", path.stem)
        return numbered.group(1) if numbered else None
    from PIL import Image

    try:
        with Image.open(path) as im:
            comment = im.info.get("comment")
    except Exception:
        return None
    if isinstance(comment, bytes):
        comment = comment.decode(errors="replace")
    return comment.strip(" \t\r\n\0") or None if isinstance(comment, str) else None


class SourcePhotos(torch.utils.data.Dataset):
    """The source files, each prepared in whichever worker process loads it: -> (the image as the set
    stores it, or None; why it cannot be used, or None; the person it shows, or None)."""

    def __init__(self, paths: list[Path], size: int, person_from: str):
        self.paths, self.size, self.person_from = paths, size, person_from

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return prepare_photo(self.paths[i], self.size), None, person_of(self.paths[i], self.person_from)
        except (BadImage, OSError) as exc:
            return None, str(exc), None


def new_array_file(path: Path, dtype, shape: tuple) -> np.memmap:
    """A new memory-mapped .npy file with its disk space reserved now: on a full disk, writing into a
    sparse map would kill the process (SIGBUS); reserving it fails with an OSError (ENOSPC) instead."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return array


def load_folder(source: Path, size: int, sources: Path, workers: int, person_from: str):
    """Prepare every image under source, in worker processes, straight into the array file sources
    (N x size x size x 3 uint8, in file order, usable images only): memory does not grow with the
    number of images. -> (records [{file, person}], skipped [{file or folder, reason}])."""
    found = find_images(source)
    paths = found.images
    for folder, reason in found.unsearched:
        print(f"skipped {escape_bytes(folder)}: {escape_bytes(reason)}", file=sys.stderr)
    if not paths:
        raise UserError(f"{source}: no image files found (looked for {' '.join(sorted(IMAGE_SUFFIXES))})")
    images = new_array_file(sources, np.uint8, (len(paths), size, size, 3))
    loader = torch.utils.data.DataLoader(SourcePhotos(paths, size, person_from), batch_size=None,
                                         collate_fn=collate_unchanged, num_workers=workers)
    records = []
    skipped = [{"folder": str(folder.relative_to(source)), "reason": reason} for folder, reason in found.unsearched]
    for path, (image, reason, person) in zip(paths, tqdm(loader, total=len(paths), unit="image", leave=False,
                                                          disable=not sys.stderr.isatty())):
        name = str(path.relative_to(source)) if path != source else path.name
        if reason is not None:
            skipped.append({"file": name, "reason": reason})
            tqdm.write(f"skipped {escape_bytes(path)}: {escape_bytes(reason)}", file=sys.stderr)
            continue
        images[len(records)] = image
        records.append({"file": name, "person": person})
        if len(records) % 1024 == 0:
            release_pages(images)
    images.flush()
    if not records:
        raise UserError(f"{source}: none of the {len(paths)} image files could be used (see the lines above)")
    return records, skipped


def load_demo(size: int, seed: int):
    """Random square crops of the colour photos bundled with scikit-image and matplotlib."""
    import matplotlib
    import skimage

    folders = {"skimage": Path(skimage.__file__).parent / "data",
               "matplotlib": Path(matplotlib.get_data_path()) / "sample_data"}
    rng = np.random.default_rng(seed)
    images, records = [], []
    for package, name in DEMO_PHOTOS:
        path = folders[package] / name
        if not path.is_file():
            continue
        rgb = read_image(path).rgb
        h, w = rgb.shape[:2]
        for _ in range(DEMO_CROPS_PER_PHOTO):
            side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            images.append(to_uint8(center_square(rgb[top:top + side, left:left + side], size)))
            records.append({"file": f"{package}:{name}@{left},{top},{side}", "person": None})
    if not images:
        raise UserError("no demo photos found inside scikit-image or matplotlib; pass --source DIR")
    return np.stack(images), records, []


def split_indices(records, held_out: float, val_share: float, by: str, rng: np.random.Generator):
    """Shuffle, hold out a fraction, and cut the held-out part into validation (val_share) and test."""
    if by == "person":
        people = sorted({r["person"] for r in records if r["person"]})
        if len(people) < 3 or any(not r["person"] for r in records):
            unnamed = next((r["file"] for r in records if not r["person"]), "fewer than 3 people")
            raise UserError(f"--split-by person needs the person of every photo: {escape_bytes(unnamed)} names none "
                            "(see --person-from); use --split-by image")
        order = [people[i] for i in rng.permutation(len(people))]
        n_held = max(2, round(len(order) * held_out))
        held_people = order[:n_held]
        n_val = math.ceil(n_held * val_share)
        val_people, test_people = set(held_people[:n_val]), set(held_people[n_val:])
        shuffled = rng.permutation(len(records))
        pick = lambda group: [int(i) for i in shuffled if records[i]["person"] in group]  # noqa: E731
        return pick(set(order[n_held:])), pick(val_people), pick(test_people)
    order = rng.permutation(len(records))
    n_held = max(2, round(len(records) * held_out))
    n_val = math.ceil(n_held * val_share)
    return [int(i) for i in order[n_held:]], [int(i) for i in order[:n_val]], [int(i) for i in order[n_val:n_held]]


class PreparedRows(MappedDataset):
    """The rows of one split as written: row r is original r // factor (row indices[r // factor] of the
    sources array) when r % factor == 0, else one of its random variants (flips, rotation, resized crop)."""

    def __init__(self, sources: Path, indices: list[int], factor: int, size: int, seed: int):
        super().__init__(sources)
        self.indices, self.factor, self.seed = indices, factor, seed
        self.transform = random_variant(size, upright=False)

    def __len__(self):
        return len(self.indices) * self.factor

    def __getitems__(self, rows: list[int]) -> list[torch.Tensor]:
        """A batch of rows (the DataLoader asks for a batch at once): the map's pages released once per batch."""
        batch = [self[row] for row in rows]
        release_pages(self.array)
        return batch

    def __getitem__(self, row):
        original, copy = divmod(row, self.factor)
        image = torch.from_numpy(np.array(self.array[self.indices[original]])).permute(2, 0, 1)
        if copy:
            # seeded per variant: the same bytes whichever worker process makes it
            # (the CPU generator alone: torch.manual_seed also seeds every accelerator, 70x slower)
            torch.default_generator.manual_seed(self.seed * 1_000_003 + original * (self.factor - 1) + copy - 1)
            image = self.transform(image)
        return image.permute(1, 2, 0)


def rgb_and_lab(rows: list) -> tuple:
    """Collate in the worker: the uint8 rows and their float16 Lab01 (N x 3 x H x W), so that the
    colour conversion runs in the worker processes beside the augmentation."""
    rgb = torch.stack(rows)
    return rgb, torch.cat([lab01.half() for lab01 in lab01_batches(rgb.numpy())]).contiguous()


def write_split(folder: Path, split: str, sources: Path, indices: list[int], factor: int, size: int, seed: int,
                workers: int) -> str:
    """Write {split}.npy (uint8 RGB, each original followed by its factor-1 variants) and
    {split}_lab.npy (the same rows as the networks read them, float16 Lab01: float16 rounds a
    value in [0, 1] by at most 2.4e-4, far below any error that matters here), batch by batch
    into memory maps: memory stays flat however large the set. -> the SHA-256 of the images' bytes."""
    rows = PreparedRows(sources, indices, factor, size, seed)
    content = hashlib.sha256()  # of the images' bytes: the set's identity is its content, not its file names
    # one thread in every process, this one too: the float rounding of the conversion depends on
    # how the work is split among threads, and the bytes must not depend on the machine
    torch.set_num_threads(1)
    rgb = new_array_file(folder / f"{split}.npy", np.uint8, (len(rows), size, size, 3))
    lab = new_array_file(folder / f"{split}{LAB_SUFFIX}.npy", np.float16, (len(rows), 3, size, size))
    loader = torch.utils.data.DataLoader(rows, batch_size=64, collate_fn=rgb_and_lab,
                                         num_workers=workers if factor > 1 else 0)
    row = 0
    for rgb_batch, lab_batch in loader:
        rgb[row:row + len(rgb_batch)], lab[row:row + len(lab_batch)] = rgb_batch, lab_batch
        content.update(rgb_batch.numpy().tobytes())
        row += len(rgb_batch)
        release_pages(rgb)
        release_pages(lab)
    rgb.flush()
    lab.flush()
    return content.hexdigest()


def versions() -> dict:
    import cv2
    import skimage
    import torchvision

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "opencv": cv2.__version__, "scikit-image": skimage.__version__}


# every file a prepared folder holds (the statistics the trainers and evaluate keep there too): an --out holding
# anything else is not replaced
STATISTICS = ("ab_prior", "mean_face_map", "face_scale")
PREPARED_FILES = {MANIFEST} | {f"{name}.npy" for name in STATISTICS} | \
    {f"{split}{kind}.npy" for split in SPLITS for kind in ("", LAB_SUFFIX)}
SOURCES = ".sources.npy"  # while preparing: every usable source image, prepared, before the split


def check_out(out: Path, source: Path | None) -> Path:
    """-> --out with links resolved, once it is safe to replace: refuses a folder that is, holds or lies inside the
    source, a file, and a non-empty folder that is not a set this script prepared (by what its files hold: a
    manifest of ours, arrays whose headers agree with it)."""
    target = real_path(out)
    if source is not None:
        src = real_path(source)
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise UserError(f"{out}: is, holds or lies inside the source folder {source}; pass an --out outside it")
    if not (target.exists() or target.is_symlink()):
        return target
    if not target.is_dir():
        raise UserError(f"{out}: exists and is not a folder; pass a new folder as --out")
    entries = sorted(p.name for p in target.iterdir())
    foreign = [name for name in entries if name not in PREPARED_FILES]
    if foreign or (entries and not prepared_here(target)):
        raise not_ours(out, "prepare_data.py", foreign or entries)
    return target


def prepared_here(folder: Path) -> bool:
    """Whether folder holds a set this script prepared: its manifest as this script writes it, and every array
    there a .npy file whose rows agree with the manifest's counts (its header alone is read)."""
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or any(k not in manifest for k in (*MANIFEST_KEYS, "layout", "versions")):
        return False
    counts = manifest["counts"]
    for path in folder.glob("*.npy"):
        split = path.stem.removesuffix(LAB_SUFFIX)
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError):
            return False
        if split in SPLITS and (not isinstance(counts, dict) or
                                len(array) != counts.get("train_augmented" if split == "train" else split)):
            return False
    return True


def replace_lock(target: Path) -> FolderLock:
    """-> the lock that keeps runs from reading --out while this run replaces it, held until released; a set that a
    training or evaluation reads now is not replaced: one line."""
    if not target.is_dir():
        return FolderLock(target)  # nothing to replace: a lock that holds nothing
    try:
        return FolderLock(target, exclusive=True).acquire()
    except Busy:
        raise UserError(f"{target}: a training or evaluation is reading this prepared set now; prepare into "
                        "another --out, or wait for it to end") from None


def staging_folder(target: Path) -> Path:
    """A new hidden sibling of --out to write into (which also proves, early, that we can write there)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    except OSError as exc:
        raise cannot_write(target, exc) from None
    tmp.chmod(0o755)  # mkdtemp makes it private; the prepared set is for everyone
    return tmp


def swap_in(tmp: Path, target: Path) -> None:
    """Put the finished set in place of --out (a set prepared before, or nothing): never half a dataset."""
    if target.exists():
        old = tmp.with_name(f"{tmp.name}_old")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)


def minimum_images(factor: int, held_out: float) -> int:
    """The fewest usable images whose split leaves one training batch (DEFAULT_BATCH_SIZE rows)."""
    n = 3
    while (n - max(2, round(n * held_out))) * factor < DEFAULT_BATCH_SIZE:
        n += 1
    return n


def main():
    args = parse_args()
    start = time.perf_counter()
    demo = args.demo or (args.source is None and not DEFAULT_SOURCE.is_dir())
    source = None if demo else (args.source if args.source is not None else DEFAULT_SOURCE)
    target = check_out(args.out, source)  # before reading any image
    replacing = replace_lock(target)
    remove_stale_temporaries(target.parent)
    if demo:
        print("=" * 78 + f"\nNO DATASET: no --source and no {DEFAULT_SOURCE}/ folder, so this builds a small DEMO\n"
              "set from the photos bundled with scikit-image and matplotlib. Numbers from it say\n"
              "nothing about faces; pass --source ../shared/data/face_images for the real data.\n" + "=" * 78,
              flush=True)
    elif not source.is_dir():
        what = "not a folder" if source.exists() else "no such folder"
        raise UserError(f"{source}: {what}; pass --source DIR, a folder of your images")
    tmp = staging_folder(target)
    try:
        manifest = prepare(args, source, tmp)
        swap_in(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = no_space_error(exc, target.parent)
        if full is not None:
            raise full from None
        raise
    finally:
        replacing.release()
    seconds = time.perf_counter() - start
    c = manifest["counts"]
    gigabytes = sum(f.stat().st_size for f in target.iterdir()) / 1e9
    print(f"prepared {args.out}: {c['train']} train (x{args.augment_factor} = {c['train_augmented']}), "
          f"{c['val']} validation, {c['test']} test, {c['skipped']} skipped; {gigabytes:.2f} GB written; "
          f"{c['source_images'] / seconds:.0f} source images/s, {c['train_augmented'] / seconds:.0f} written/s")


def prepare(args, source: Path | None, folder: Path) -> dict:
    """Load, split, check and write the whole set into folder; -> its manifest."""
    sources = folder / SOURCES
    if source is None:
        images, records, skipped = load_demo(args.size, args.seed)  # a few hundred crops: in memory
        np.save(sources, images)
        source_name = "demo (scikit-image and matplotlib sample photos)"
    else:
        records, skipped = load_folder(source, args.size, sources, args.workers, args.person_from)
        source_name = str(source)
    rng = np.random.default_rng(args.seed)
    train_idx, val_idx, test_idx = split_indices(records, args.held_out, args.val_share, args.split_by, rng)
    n_written = len(train_idx) * args.augment_factor
    if n_written < DEFAULT_BATCH_SIZE or not val_idx or not test_idx:
        raise UserError(f"{source_name}: {len(records)} usable images give {len(train_idx)} training images "
                        f"(x{args.augment_factor} = {n_written}), {len(val_idx)} validation and {len(test_idx)} "
                        f"test; training needs one batch of {DEFAULT_BATCH_SIZE} and an image in each held-out "
                        f"split: at least {minimum_images(args.augment_factor, args.held_out)} usable images at "
                        "this --augment-factor, or a larger --augment-factor")
    manifest = {
        "format": PREPARED_FORMAT, "source": source_name, "demo": source is None, "seed": args.seed,
        "size": args.size, "held_out": args.held_out, "val_share": args.val_share, "split_by": args.split_by,
        "person_from": args.person_from,
        "augment_factor": args.augment_factor,
        "counts": {"source_images": len(records) + sum("file" in s for s in skipped), "skipped": len(skipped),
                   "train": len(train_idx), "train_augmented": n_written, "val": len(val_idx), "test": len(test_idx)},
        "files": {"train": [records[i] for i in train_idx], "val": [records[i] for i in val_idx],
                  "test": [records[i] for i in test_idx]},
        "skipped": skipped, "versions": versions(),
        "layout": "train.npy rows [i*augment_factor, (i+1)*augment_factor) are files.train[i], original first; "
                  "{split}_lab.npy row k is {split}.npy row k in float16 Lab01, channels first",
    }
    splits = {"train": (train_idx, args.augment_factor), "val": (val_idx, 1), "test": (test_idx, 1)}
    manifest["content"] = {split: write_split(folder, split, sources, indices, factor, args.size, args.seed,
                                              args.workers) for split, (indices, factor) in splits.items()}
    sources.unlink()
    write_json(folder / MANIFEST, manifest)
    return manifest


if __name__ == "__main__":
    exit_on_user_error(main)

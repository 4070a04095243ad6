"""Every face at its own scale: faces found in a photo, coloured at the scale the model saw faces in training,
blended in; a photo without faces, or a close portrait, coloured as before; detection that fails or finds a
thousand faces never stops a photo."""
import json

import cv2
import numpy as np
import pytest
import torch
from skimage import data

import colorize
import faces
from common import torch_load
from photos import lightness_of_samples
from conftest import ROOT, run_script, synthetic_photo

SHIPPED = ROOT / "models" / "face_colorizer.pt"


@pytest.fixture(scope="module")
def astronaut_face():
    """The astronaut's face (scikit-image's photo), framed as the shipped model's training faces are: uint8 RGB."""
    photo = data.astronaut()
    face = faces.find_faces(lightness(photo))[0]
    side = round(face.side / torch_load(SHIPPED)["run"]["config"]["face_scale"])
    x, y = round(face.x + face.side / 2 - side / 2), round(face.y + face.side / 2 - side / 2)
    return cv2.resize(photo[max(0, y):y + side, max(0, x):x + side], (128, 128), interpolation=cv2.INTER_AREA)


def lightness(rgb):
    return lightness_of_samples(rgb[..., ::-1])  # as colorize.py reads a file's (B, G, R) samples


def grid_of(face, k):
    rng = np.random.default_rng(k)
    cells = [np.clip(face.astype(int) + rng.integers(-12, 13, 3), 0, 255).astype(np.uint8) for _ in range(k * k)]
    return np.concatenate([np.concatenate(cells[r * k:(r + 1) * k], axis=1) for r in range(k)], axis=0)


def test_the_shipped_model_carries_the_scale_of_its_training_faces():
    scale = torch_load(SHIPPED)["run"]["config"]["face_scale"]
    assert 0.5 < scale < 0.9  # LFW's faces fill most of their photo


def test_each_face_of_a_group_photo_is_coloured_at_the_training_scale(astronaut_face, tmp_path):
    group = grid_of(astronaut_face, 3)
    cv2.imwrite(str(tmp_path / "group.png"), group[..., ::-1])
    cv2.imwrite(str(tmp_path / "alone.png"), astronaut_face[..., ::-1])
    colorizer = colorize.Colorizer.from_checkpoint(SHIPPED, None, None, torch.device("cpu"))
    squares = colorize.lightness_item(lightness(group), colorizer)["squares"]
    assert len(squares) >= 7  # of 9 faces
    assert colorize.lightness_item(lightness(astronaut_face), colorizer)["squares"] == []  # already at scale
    outputs = {}
    for setting in ("auto", "off"):
        out = tmp_path / setting
        run_script("colorize.py", tmp_path / "group.png", tmp_path / "alone.png", "--out", out, "--faces", setting,
                   "--device", "cpu", "--side-by-side")
        outputs[setting] = {name: cv2.imread(str(out / name)).astype(int)
                            for name in ("group.png", "alone.png", "group_compare.png")}
    assert (outputs["auto"]["alone.png"] == outputs["off"]["alone.png"]).all()  # a close portrait: as before
    auto, off = outputs["auto"]["group.png"], outputs["off"]["group.png"]
    assert np.abs(auto - off).mean() > 1  # the group photo's faces are coloured otherwise
    # the compare image boxes each square a face was coloured in (green on its gray half), only with faces on
    green = lambda image: ((image[..., 1] > 200) & (image[..., 2] < 80)).sum()  # noqa: E731  (BGR)
    assert green(outputs["auto"]["group_compare.png"]) > 0 == green(outputs["off"]["group_compare.png"])
    # coloured apart, a face is as colourful as alone; seen small within the whole photo, duller
    chroma = lambda image: np.hypot(*cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_BGR2Lab)[..., 1:].astype(  # noqa
        float).transpose(2, 0, 1) - 128).mean()
    assert chroma(auto) > chroma(off)


def test_a_model_without_a_face_scale_and_a_photo_without_faces_are_coloured_whole(trained, tmp_path):
    assert torch_load(trained / "colorizer" / "best.pt")["run"]["config"]["face_scale"] is None  # not faces
    cv2.imwrite(str(tmp_path / "field.png"), synthetic_photo(np.random.default_rng(0), 200)[..., ::-1])
    results = {}
    for setting in ("auto", "off"):
        run_script("colorize.py", tmp_path / "field.png", "--out", tmp_path / setting, "--faces", setting,
                   "--device", "cpu")
        results[setting] = (tmp_path / setting / "field.png").read_bytes()
    assert results["auto"] == results["off"]


def test_detection_that_fails_or_finds_a_thousand_faces_still_colours(astronaut_face, monkeypatch):
    colorizer = colorize.Colorizer.from_checkpoint(SHIPPED, None, None, torch.device("cpu"))
    group = lightness(grid_of(astronaut_face, 4))

    class Broken:
        def detect_multi_scale(self, *args, **kwargs):
            raise MemoryError("the detector's own failure")

    monkeypatch.setitem(faces._CASCADE, "cascade", Broken())
    assert colorize.lightness_item(group, colorizer)["squares"] == []

    class Everywhere:  # a thousand small "faces"
        def detect_multi_scale(self, img, *args, **kwargs):
            rng = np.random.default_rng(0)
            return [{"r": int(r), "c": int(c), "width": 24, "height": 24}
                    for r, c in rng.integers(0, min(img.shape) - 24, (1000, 2))]

    monkeypatch.setitem(faces._CASCADE, "cascade", Everywhere())
    item = colorize.lightness_item(group, colorizer)
    assert 16 < len(item["squares"]) <= faces.MAX_FACES
    batches = []
    predict_ab = colorizer.predict_ab
    colorizer.predict_ab = lambda L: batches.append(len(L)) or predict_ab(L)
    ab = colorize.at_full_size(colorize.predict(colorizer, [item], batch_size=16)[0], group.shape)
    assert ab.shape == (*group.shape, 2) and np.isfinite(ab).all()
    assert max(batches) <= 16  # squares coloured a batch at a time: memory bounded whatever the count


def test_a_trained_colorizer_carries_the_face_scale_of_its_data(astronaut_face, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(24):  # the one face, in other colours
        tinted = np.clip(astronaut_face.astype(int) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"face{i:02d}.png"), tinted[..., ::-1])
    run_script("prepare_data.py", "--source", folder, "--out", tmp_path / "data", "--size", 128,
               "--augment-factor", 4)
    run_script("train_colorizer.py", "--data", tmp_path / "data", "--out", tmp_path / "run", "--dry-run",
               "--device", "cpu", "--batch-size", 16)
    scale = torch_load(tmp_path / "run" / "best.pt")["run"]["config"]["face_scale"]
    shipped = torch_load(SHIPPED)["run"]["config"]["face_scale"]
    assert abs(scale - shipped) < 0.1  # framed as the shipped model's faces were
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())  # the set is whole; its statistic beside
    assert np.load(tmp_path / "data" / "face_scale.npy")[0] == scale


@pytest.fixture(scope="module")
def tinted_faces(astronaut_face, tmp_path_factory):
    """A prepared set of 40 tinted copies of the astronaut's face, 20 "people", half of them tested."""
    root = tmp_path_factory.mktemp("tinted")
    folder = root / "faces"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(40):
        tinted = np.clip(astronaut_face.astype(int) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"p{i % 20:02d}_{i:04d}.png"), tinted[..., ::-1])
    run_script("prepare_data.py", "--source", folder, "--out", root / "data", "--size", 128,
               "--augment-factor", 4, "--split-by", "person", "--person-from", "file-name", "--held-out", "0.5")
    return root / "data"


def test_the_group_photo_benchmark_runs(tinted_faces, tmp_path):
    result = run_script("benchmarks/group_photos.py", "--data", tinted_faces, "--grids", 1, "--pasted", 2,
                        "--cost-repeats", 0, "--out", tmp_path / "results")
    report = json.loads((tmp_path / "results" / "group_photos.json").read_text())
    assert set(report["kinds"]) == {"portrait", "grid 2x2", "grid 3x3", "grid 4x4", "grid 5x5", "grid 6x6", "pasted"}
    for kind in report["kinds"].values():
        assert all(np.isfinite(kind[m]["face_mse"]) for m in ("auto", "off", "mean-face map", "gray"))
    assert "| grid 3x3 (1) |" in result.stdout


def test_the_face_search_benchmark_measures_faces_found_false_and_time(tinted_faces, tmp_path):
    result = run_script("benchmarks/face_search.py", "--data", tinted_faces, "--grids", 1, "--pasted", 2,
                        "--out", tmp_path / "results")
    report = json.loads((tmp_path / "results" / "face_search.json").read_text())
    candidates = report["candidates"]
    assert candidates[0]["search"]["scale_step"] == faces.SEARCH.scale_step  # what colorize.py uses, first
    assert candidates[0]["search"]["confirm"]["min_neighbours"] == faces.SEARCH.confirm.min_neighbours
    assert len({json.dumps(c["search"]) for c in candidates}) == len(candidates) > 1
    for c in candidates:
        assert c["seconds"] > 0 and c["camera_seconds"] > 0
        assert all(0 <= kind["found"] <= kind["faces"] for kind in c["kinds"].values())
    grids = [kind for name, kind in candidates[0]["kinds"].items() if name.startswith("grid")]
    assert sum(k["found"] for k in grids) >= 0.8 * sum(k["faces"] for k in grids)  # the search finds faces
    search = faces.SEARCH
    assert f"| {search.scale_step} | {search.step_ratio} | {search.min_neighbours} | step " in result.stdout


@pytest.mark.parametrize("setting", ["auto", "off"])
def test_evaluate_scores_photos_as_colorize_writes_them(astronaut_face, prepared, tmp_path, setting):
    """evaluate --photos scores each photo as colorize.py colours it with the same --faces: the whole photo, its
    faces at the training scale (auto); a photo over the scoring size is shrunk, the truth as the prediction. Its
    per-photo scores are those of colorize.py's own output files."""
    import evaluate
    from common import images_to_lab01
    from scores import Truth, score

    photos = tmp_path / "photos"
    photos.mkdir()
    group = grid_of(astronaut_face, 4)  # 512 x 512, faces coloured apart
    cv2.imwrite(str(photos / "group.png"), group[..., ::-1])
    wide = cv2.resize(grid_of(astronaut_face, 3), (1500, 800), interpolation=cv2.INTER_CUBIC)  # over SCORE_PIXELS
    cv2.imwrite(str(photos / "wide.png"), wide[..., ::-1])
    colorizer = colorize.Colorizer.from_checkpoint(SHIPPED, None, None, torch.device("cpu"))
    assert colorize.lightness_item(lightness(group), colorizer)["squares"]
    assert wide.shape[0] * wide.shape[1] > evaluate.SCORE_PIXELS
    run_script("evaluate.py", "--data", prepared, "--colorizer", SHIPPED, "--photos", photos, "--out",
               tmp_path / "report", "--device", "cpu", "--faces", setting)
    run_script("colorize.py", photos, "--out", tmp_path / "colorized", "--device", "cpu", "--faces", setting)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    shipped = next(name for name, kind in metrics["kinds"].items() if kind == "colorizer")
    scored = metrics["photos"]["per_image"][shipped]
    assert [p.split("/")[-1] for p in metrics["photos"]["files"]] == ["group.png", "wide.png"]

    def lab01(rgb):
        return images_to_lab01(torch.from_numpy(np.ascontiguousarray(rgb))[None])
    for i, name in enumerate(("group.png", "wide.png")):
        written = cv2.imread(str(tmp_path / "colorized" / name))[..., ::-1]
        truth = evaluate.truth_of_photo(photos / name)
        expected = score(lab01(evaluate.to_scoring_size(written)), Truth.of(lab01(truth)))
        for metric, values in expected.items():
            assert scored[metric][i] == pytest.approx(values[0], rel=1e-6, abs=1e-9), (name, metric)

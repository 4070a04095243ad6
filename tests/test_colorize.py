"""colorize.py on a folder of mixed real-world files, and its errors."""
import cv2
import pytest
import numpy as np
from PIL import Image
from skimage import data

from conftest import run_script


def make_mixed_folder(root):
    photo = data.astronaut()[..., ::-1]
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "large.jpg"), cv2.resize(photo, (2000, 1500)))
    cv2.imwrite(str(root / "small.png"), cv2.resize(photo, (90, 50)))
    cv2.imwrite(str(root / "gray.jpg"), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "sub" / "sixteen.png"), photo.astype(np.uint16) * 257)
    cv2.imwrite(str(root / "sub" / "rgba.png"), np.dstack([photo, np.full(photo.shape[:2], 100, np.uint8)]))
    cv2.imwrite(str(root / "tiny.png"), photo[:1, :1])
    (root / "corrupt.jpg").write_bytes((root / "gray.jpg").read_bytes()[:2000])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not a photo")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 300x200, shown rotated a quarter turn: 200x300
    Image.fromarray(cv2.resize(photo, (300, 200))[..., ::-1]).save(root / "rotated.jpg", exif=exif.tobytes())
    return {"rotated.jpg": ((300, 200, 3), np.uint8), "large.jpg": ((1500, 2000, 3), np.uint8),
            "small.png": ((50, 90, 3), np.uint8),
            "gray.jpg": ((512, 512, 3), np.uint8), "sub/sixteen.png": ((512, 512, 3), np.uint16),
            "sub/rgba.png": ((512, 512, 4), np.uint8)}


def test_mixed_folder(trained, tmp_path):
    expected = make_mixed_folder(tmp_path / "in")
    result = run_script("colorize.py", tmp_path / "in", "--checkpoint", trained / "colorizer" / "best.pt",
                        "--out", tmp_path / "out", "--side-by-side", "--device", "cpu", check=False)
    assert result.returncode == 1
    for bad in ("corrupt.jpg: truncated", "empty.png: empty file", "tiny.png: too small", "notes.txt: not an image"):
        assert bad in result.stderr
    assert "6 colorized" in result.stdout and "3 failed" in result.stdout
    for name, (shape, dtype) in expected.items():
        image = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == shape and image.dtype == dtype, name
    rgba = cv2.imread(str(tmp_path / "out" / "sub" / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert (rgba[..., 3] == 100).all()  # transparency kept
    compare = cv2.imread(str(tmp_path / "out" / "large_compare.jpg"))
    assert compare.shape == (1500, 4000, 3)
    # the lightness of the output is the input's, at full resolution
    original = cv2.cvtColor(cv2.imread(str(tmp_path / "in" / "large.jpg")), cv2.COLOR_BGR2Lab)[..., 0]
    colored = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "large.jpg")), cv2.COLOR_BGR2Lab)[..., 0]
    assert np.abs(original.astype(int) - colored.astype(int)).mean() < 3
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_not_a_colorizer_checkpoint(trained, tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    result = run_script("colorize.py", tmp_path / "x.png", "--checkpoint", trained / "regressor" / "best.pt",
                        "--out", tmp_path / "out", check=False)
    assert result.returncode == 2 and "regressor checkpoint, but a colorizer" in result.stderr
    junk = tmp_path / "junk.pt"
    junk.write_text("no")
    result = run_script("colorize.py", tmp_path / "x.png", "--checkpoint", junk, "--out", tmp_path / "o", check=False)
    assert result.returncode == 2 and "not a checkpoint" in result.stderr


def test_unwritable_output_folder(trained, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    cv2.imwrite(str(tmp_path / "a.png"), data.astronaut())
    result = run_script("colorize.py", tmp_path / "a.png", "--checkpoint", trained / "colorizer" / "best.pt",
                        "--out", blocker / "out", check=False)
    assert result.returncode == 2 and f"error: {blocker / 'out'}: cannot write there" in result.stderr


def test_inputs_are_never_overwritten(trained, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), data.astronaut())
    before = (tmp_path / "a.png").read_bytes()
    result = run_script("colorize.py", tmp_path, "--checkpoint", trained / "colorizer" / "best.pt",
                        "--out", tmp_path, check=False)
    assert result.returncode == 1 and f"skipped {tmp_path}: it lies inside --out" in result.stderr
    assert (tmp_path / "a.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # nothing written beside it either


def test_memory_is_bounded_by_held_pixels_not_by_the_number_of_photos(trained, tmp_path, monkeypatch):
    """Photos of one shape wait for a batch only while their full-resolution pixels fit --max-megapixels:
    memory follows the budget, not the folder (twenty 8000x8000 scans would otherwise be held at once)."""
    import sys

    import colorize

    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i}.jpg"), cv2.resize(data.astronaut()[..., ::-1], (400, 400)))  # 0.16 MP each
    batches = []
    predict_ab = colorize.Colorizer.predict_ab
    monkeypatch.setattr(colorize.Colorizer, "predict_ab", lambda self, L: batches.append(len(L)) or predict_ab(self, L))
    outputs = {}
    for budget in ("64", "0.5", "0.01"):
        monkeypatch.setattr(sys, "argv", ["colorize.py", str(folder), "--checkpoint", str(trained / "colorizer" /
                            "best.pt"), "--out", str(tmp_path / budget), "--device", "cpu", "--max-megapixels", budget])
        batches.clear()
        colorize.main()
        outputs[budget] = [cv2.imread(str(tmp_path / budget / f"{i}.jpg")).astype(int) for i in range(6)]
        assert batches == {"64": [6], "0.5": [3, 3], "0.01": [1] * 6}[budget]  # a photo over budget goes alone
    for budget in ("0.5", "0.01"):  # the batching changes how much is held, not the colours (beyond rounding)
        assert all(np.abs(a - b).max() <= 2 for a, b in zip(outputs["64"], outputs[budget]))


def run_main(monkeypatch, *args):
    import sys

    import colorize

    monkeypatch.setattr(sys, "argv", ["colorize.py", *map(str, args)])
    colorize.main()


def camera_folder(folder, n, side=(300, 400)):
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(n):
        photo = cv2.resize(data.astronaut()[..., ::-1], side[::-1]).astype(int) + rng.integers(-20, 21, (*side, 3))
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), np.clip(photo, 0, 255).astype(np.uint8))
    return folder


def test_the_pipeline_writes_the_same_bytes_however_many_readers_and_writers(trained, tmp_path, monkeypatch):
    """Photos are read and written by threads of their own while others are coloured: the outputs are those of
    one photo after another, byte for byte, in the order of the inputs."""
    import colorize

    folder = camera_folder(tmp_path / "in", 7)
    written = []
    for readers, writers in ((1, 1), (2, 2), (3, 1), (1, 3)):
        monkeypatch.setattr(colorize, "READERS", readers)
        monkeypatch.setattr(colorize, "WRITERS", writers)
        out = tmp_path / f"{readers}-{writers}"
        run_main(monkeypatch, folder, "--checkpoint", trained / "colorizer" / "best.pt", "--out", out,
                 "--device", "cpu", "--max-megapixels", 0.3)
        written.append([(out / f"{i:02d}.jpg").read_bytes() for i in range(7)])
    assert all(files == written[0] for files in written)


def test_photos_read_ahead_and_waiting_to_be_written_stay_within_the_budget(trained, tmp_path, monkeypatch):
    """However fast reading runs ahead of writing, the photos held (read, not yet written) stay bounded by
    --max-megapixels: memory does not grow with the folder."""
    import threading
    import time

    import colorize

    folder = camera_folder(tmp_path / "in", 24)  # 0.12 MP each
    held, peak, lock = [0], [0], threading.Lock()
    load, finish = colorize.load, colorize.finish

    def counted_load(*args):
        item = load(*args)
        with lock:
            held[0] += 1
            peak[0] = max(peak[0], held[0])
        return item

    def slow_finish(*args):
        time.sleep(0.05)  # writing slower than reading: reading would run ahead of it unbounded
        finish(*args)
        with lock:
            held[0] -= 1

    monkeypatch.setattr(colorize, "load", counted_load)
    monkeypatch.setattr(colorize, "finish", slow_finish)
    run_main(monkeypatch, folder, "--checkpoint", trained / "colorizer" / "best.pt", "--out", tmp_path / "o",
             "--device", "cpu", "--max-megapixels", 0.25)
    # each of three stages (read and waiting, the batch, being written) holds what the budget holds and the photo
    # that crosses it (3); each reader one more
    assert len(list((tmp_path / "o").glob("*.jpg"))) == 24 and peak[0] <= 3 * 3 + colorize.READERS


def test_a_reader_that_meets_an_error_not_of_the_photo_stops_the_run(trained, tmp_path, monkeypatch):
    """An error that is not the photo's (here the system's) reaches the user: never a reader thread dying in
    silence and the run waiting for it forever."""
    import signal

    import colorize

    folder = camera_folder(tmp_path / "in", 5)
    load = colorize.load

    def failing_load(path, colorizer):
        if path.name == "02.jpg":
            raise MemoryError("the system refused")
        return load(path, colorizer)

    monkeypatch.setattr(colorize, "load", failing_load)
    signal.alarm(120)  # a hang fails the test instead of the suite
    try:
        with pytest.raises(MemoryError):
            run_main(monkeypatch, folder, "--checkpoint", trained / "colorizer" / "best.pt", "--out", tmp_path / "o",
                     "--device", "cpu")
    finally:
        signal.alarm(0)
    for written in (tmp_path / "o").glob("*.jpg"):  # what was written is whole
        assert cv2.imread(str(written)) is not None


@pytest.mark.parametrize("shape, size", [((3000, 4000), (176, 128)), ((2001, 3001), (192, 128)),
                                         ((4000, 6000), (192, 128)), ((20000, 200), (8, 1024)),
                                         ((300, 300), (128, 128)), ((129, 1000), (992, 128))])
def test_the_network_sees_opencvs_area_resize(shape, size):
    """The network's input, shrunk in two steps for speed, is the one-step area resize within float rounding."""
    import colorize

    lightness = np.random.default_rng(5).random(shape, dtype=np.float32) * 100
    np.testing.assert_allclose(colorize.area_shrunk(lightness, size),
                               cv2.resize(lightness, size, interpolation=cv2.INTER_AREA), rtol=0, atol=1e-4)

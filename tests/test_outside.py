"""What a newcomer meets first: the licence, the citation, the model card's header, --help; and what a run folder
says of itself: config.json, TensorBoard."""
import json
import re

import pytest
import torch
import yaml

from conftest import ROOT, run_script


def test_the_citation_file_is_valid_cff_and_names_the_licence():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["title"] and citation["message"] and all("name" in a or "family-names" in a
                                                            for a in citation["authors"])
    assert (ROOT / "LICENSE").read_text().startswith(f"{citation['license']} License")
    assert {r["title"] for r in citation["references"]} >= {"Colorful Image Colorization"}  # the head it follows


def test_the_model_card_header_says_what_its_tables_say():
    card = (ROOT / "models" / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "other" and "research use" in header["license_details"]
    scores = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    row = next(line for line in card.splitlines() if line.startswith("| **face_colorizer.pt**"))
    cells = [cell.strip(" *") for cell in row.split("|")[2:]]
    assert [float(cells[i]) for i in (0, 2, 3, 4, 5)] == [scores[k] for k in ("seed-mse", "psnr", "ssim", "ciede2000",
                                                                            "colorfulness")]


SCRIPTS = ["prepare_data.py", "train_regressor.py", "train_colorizer.py", "evaluate.py", "colorize.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_explains_every_flag_once_with_an_example(script):
    text = run_script(script, "--help").stdout
    options = text.split("options:")[1]
    for entry in re.split(r"\n  (?=-)", options)[1:]:
        name, _, described = entry.partition("  ")  # the help: after the flag and its value, two spaces on
        assert re.sub(r"\(default: [^)]*\)", "", described).strip(), f"{script} {name}: no help text"
        assert entry.count("(default:") <= 1, f"{script} {name}: two defaults"
    assert "(default: True)" not in text and "(default: False)" not in text  # a switch says what it does instead
    assert "example" in text.lower() and f"python {script}" in text


def test_run_and_report_folders_say_which_code_settings_and_machine_made_them(trained, prepared, tmp_path):
    """config.json beside every run's and report's files: the command, every setting, the git commit and whether
    the checkout differed from it, the versions and the device; no path of this machine that the working
    folder reaches."""
    import subprocess

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True,
                                text=True).stdout.strip())
    run_script("evaluate.py", "--data", prepared, "--colorizer", trained / "colorizer" / "best.pt", "--out",
               tmp_path / "report", "--device", "cpu")
    for folder, script in ((trained / "colorizer", "train_colorizer.py"), (trained / "regressor", "train_regressor.py"),
                           (tmp_path / "report", "evaluate.py")):
        config = json.loads((folder / "config.json").read_text())
        assert config["command"][:2] == ["python", script]
        assert config["code"] == {"commit": commit, "dirty": dirty}
        assert config["versions"]["torch"] == torch.__version__ and config["versions"]["python"]
        assert config["machine"]["device"] == "cpu" and config["machine"]["cores"] > 0
        assert config["settings"]["device"] == "cpu" and str(ROOT) not in json.dumps(config["command"])
    assert json.loads((trained / "colorizer" / "config.json").read_text())["settings"]["epochs"] == 2


def test_tensorboard_shows_what_history_json_says(trained, prepared, tmp_path):
    """TensorBoard's own reader finds, in the run folder: every epoch's row of history.json, the training loss and
    learning rate of every iteration, a grid of validation photos each epoch; --no-tensorboard writes none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained / "colorizer"
    history = json.loads((run / "history.json").read_text())
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for key in ("train_loss", "val_loss", "val_mse", "train_images_per_s"):
        logged = events.Scalars(f"epoch/{key}")
        assert [e.step for e in logged] == history["epoch"]
        assert [e.value for e in logged] == pytest.approx(history[key], rel=1e-6)
    iterations = len(events.Scalars("training/loss"))
    assert iterations >= 2 * len(history["epoch"]) and len(events.Scalars("lr/group_0")) == iterations
    assert len(events.Images("validation/gray, coloured, truth")) == len(history["epoch"])
    run_script("train_colorizer.py", "--data", prepared, "--out", tmp_path / "quiet", "--dry-run", "--device", "cpu",
               "--batch-size", 16, "--no-tensorboard")
    assert not (tmp_path / "quiet" / "tensorboard").exists() and (tmp_path / "quiet" / "best.pt").exists()

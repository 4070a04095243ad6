"""What a newcomer meets first: the licence, the citation, the model card's header, --help."""
import re

import pytest
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

"""app.py in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's chromedriver (nothing
downloaded when the test runs)."""
import contextlib
import json
import os
import re
import urllib.error
import urllib.request
import shutil
import subprocess
import sys
import time

import cv2
import pytest
from skimage import data

from conftest import ROOT, run_script

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                    reason="no Chromium here: apt-get install chromium chromium-driver (.ci/run does)")


@contextlib.contextmanager
def serving(*flags):
    """python app.py on a free port of this machine; -> its address."""
    server = subprocess.Popen([sys.executable, "app.py", "--port", "0", "--device", "cpu", *map(str, flags)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        address = re.search(r"http://\S+", line)
        assert address, f"app.py said {line!r}, {server.stderr.read() if server.poll() is not None else ''}"
        yield address.group(0)
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def app():
    with serving() as address:
        yield address


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (requirements.txt has it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,900"):
        options.add_argument(flag)
    (tmp_path / "downloads").mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, seconds=120):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {condition.__doc__ or condition}")


@needs_chromium
def test_a_photo_dropped_on_the_page_comes_back_as_colorize_writes_it(app, browser, tmp_path):
    """Upload a photo and a broken file, move the chroma-gain slider three steps with the keyboard, download:
    the bytes are colorize.py's with --chroma-gain at the slider's value; the broken file is named in one line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    photo, broken = tmp_path / "astronaut.png", tmp_path / "broken.jpg"
    cv2.imwrite(str(photo), cv2.resize(data.astronaut(), (320, 320))[..., ::-1])
    broken.write_bytes(b"\xff\xd8 not a photo")
    browser.get(app)
    wait_for(lambda: "Model: face_colorizer.pt" in browser.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "files").send_keys(f"{photo}\n{broken}")

    def settled():
        cards = browser.find_elements(By.CSS_SELECTOR, ".photo")
        return len(cards) == 2 and all(c.get_attribute("data-state") in ("done", "failed") for c in cards) and cards
    good, bad = wait_for(settled)
    assert good.get_attribute("data-state") == "done" and bad.get_attribute("data-state") == "failed"
    said = bad.find_element(By.CSS_SELECTOR, ".error").text
    assert said.startswith("broken.jpg: ") and "\n" not in said and "Traceback" not in said

    slider = browser.find_element(By.ID, "chroma_gain")
    start = float(slider.get_attribute("value"))
    slider.send_keys(Keys.ARROW_RIGHT * 3)
    gain = float(slider.get_attribute("value"))
    assert abs(gain - (start + 0.15)) < 1e-9
    wait_for(lambda: f"chroma_gain={gain:g}" in (good.get_attribute("data-settings") or "") and
             good.get_attribute("data-state") == "done")
    good.find_element(By.TAG_NAME, "a").click()
    downloaded = wait_for(lambda: [p for p in (tmp_path / "downloads").glob("astronaut*.png")
                                   if not p.name.endswith(".crdownload")])
    run_script("colorize.py", photo, "--out", tmp_path / "cli", "--chroma-gain", f"{gain:g}", "--device", "cpu")
    assert downloaded[0].read_bytes() == (tmp_path / "cli" / "astronaut.png").read_bytes()
    browser.save_screenshot(os.environ.get("APP_SCREENSHOT") or str(tmp_path / "page.png"))


def test_any_checkpoint_serves_and_a_slider_it_lacks_is_one_line(trained, tmp_path):
    """A regressing colorizer of the user's: its colours are colorize.py's; asking it for a chroma gain is refused
    in one line naming the file, and so is a file that is no photo."""
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), cv2.resize(data.astronaut(), (200, 150))[..., ::-1])
    checkpoint = trained / "colorizer" / "best.pt"

    def post(address, query, body):
        request = urllib.request.Request(f"{address}/colorize?{query}", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())["error"]

    with serving("--checkpoint", checkpoint) as address:
        info = json.loads(urllib.request.urlopen(f"{address}/info", timeout=60).read())
        assert info["classify"] is False and info["checkpoint"] == "best.pt"
        status, body = post(address, "name=photo.jpg&faces=auto", photo.read_bytes())
        assert status == 200
        assert post(address, "name=photo.jpg&chroma_gain=1.5", photo.read_bytes()) == \
            (400, "photo.jpg: the decoding sliders apply to classification checkpoints only; leave them as they are")
        status, said = post(address, "name=notes.txt", b"not a photo")
        assert status == 400 and said.startswith("notes.txt: ") and "\n" not in said
    run_script("colorize.py", photo, "--checkpoint", checkpoint, "--out", tmp_path / "cli", "--device", "cpu")
    assert body == (tmp_path / "cli" / "photo.jpg").read_bytes()

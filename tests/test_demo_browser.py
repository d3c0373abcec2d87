"""End to end in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, installed by
`.ci/install-browser`) uploads two images to the running demo, waits for the scores and checks that the numbers
on the page are the pipeline's. In CI (`CI` set, as `.ci/run` runs, or `HF_IQA_REQUIRE_BROWSER=1`) a missing browser is
a failure; elsewhere the test is skipped with the command that installs it, shown in pytest's summary."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

import hf_iqa
from hf_iqa import demo
from tests.models.dog_iqa.test_pipeline_dog_iqa import dog_dir  # noqa: F401  (fixture: a tiny Dog-IQA folder)
from tests.test_pipeline_cli import liqe_dir  # noqa: F401  (fixture: a tiny converted LIQE folder)
from tests.testing_utils import random_image

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1700"]  # fmt: skip


def chrome(profile: str):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        message = (f"browser test needs {', '.join(missing)}: run .ci/install-browser (apt-get install chromium "
                   "chromium-driver)")  # fmt: skip
        if os.environ.get("CI") or os.environ.get("HF_IQA_REQUIRE_BROWSER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_photos")
    paths = []
    for i, (w, h) in enumerate([(320, 240), (240, 300)]):
        paths.append(str(root / f"photo{i}.jpg"))
        random_image(w, h, seed=40 + i).save(paths[-1], quality=90)
    return paths


def test_upload_two_images_and_read_the_scores(liqe_dir, dog_dir, photos, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    models = [str(liqe_dir), str(dog_dir / "dog")]
    app = demo.build_demo(models)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
               max_file_size=demo.MAX_UPLOAD)  # fmt: skip
    profile = tempfile.mkdtemp(prefix="hf_iqa_chromium_")
    driver = chrome(profile)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 300)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#hf-iqa-files input[type=file]"))
        upload.send_keys("\n".join(photos))
        wait.until(lambda d: all(Path(p).stem in d.find_element(By.ID, "hf-iqa-files").text for p in photos))
        driver.find_element(By.ID, "hf-iqa-score").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#hf-iqa-scores .hf-iqa-score")) == 4)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#hf-iqa-regions img")) >= 2)
        shown = {(e.get_attribute("data-image"), e.get_attribute("data-model")): e.text
                 for e in driver.find_elements(By.CSS_SELECTOR, "#hf-iqa-scores .hf-iqa-score")}  # fmt: skip
        details = driver.find_element(By.ID, "hf-iqa-details").text
        driver.save_screenshot(str(tmp_path / "demo.png"))
        if os.environ.get("HF_IQA_SCREENSHOT"):  # to refresh docs/demo.png
            shutil.copyfile(tmp_path / "demo.png", os.environ["HF_IQA_SCREENSHOT"])
    finally:
        driver.quit()
        app.close()
        shutil.rmtree(profile, ignore_errors=True)
    for model in models:
        results = hf_iqa.pipeline(model=model)(photos)
        for path, result in zip(photos, results):
            assert shown[(Path(path).name, model)] == f"{result['score']:.4f}"
    assert "scene_probs" in details and "regions" in details
    assert (tmp_path / "demo.png").stat().st_size > 10_000

"""The page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``; .ci/run installs
them) drives it through selenium. Skipped only when Chromium or its driver is missing.

The app runs on a free local port; an image of the embedded dataset is uploaded; the table shown must hold the
categories and the before / after probabilities computed here directly with transformers and safetensors (to the
4 decimals shown), in order of change; the report tab's search must filter the categories; nothing may be fetched
from outside 127.0.0.1; a folder that is not a calibrated model gets its message on the page. Screenshots are
written to ``$HF_CFT_TEST_ARTIFACTS`` (default: the test's tmp folder) and their paths printed.

``HF_CFT_APP_TEST_MODEL=<folder>`` runs the same checks on a calibrated model of yours (e.g. the demo's
``outputs/cft-digits-mosaic``) instead of the tiny one built here, to time the page on it.
"""

import json
import os
import shutil
import socket
import time

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file
from test_app import calibrated_folder

from hf_cft.app import build_app, launch
from hf_cft.constants import ORIGINAL_HEAD_NAME
from hf_cft.head import CFTHead

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs Chromium and its driver (Debian: apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")
ANSWER_SECONDS = 2.0  # an upload must be answered within this


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                "--disable-background-networking", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = os.environ.get("HF_CFT_TEST_ARTIFACTS") or str(tmp_path_factory.mktemp("artifacts"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, digits):
    given = os.environ.get("HF_CFT_APP_TEST_MODEL")
    if given:
        return given
    root = tmp_path_factory.mktemp("browser")
    return calibrated_folder(root / "cal", digits, root / "cache", examples=2)[0]


def _direct(folder: str, image) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, before and after: σ of the saved model's logits (plain transformers), and σ of the saved original rows
    on the features that give those logits."""
    model = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = transformers.AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt")["pixel_values"]
    original = load_file(os.path.join(folder, ORIGINAL_HEAD_NAME))
    with torch.no_grad():
        features, logits = CFTHead(model).forward_with_features(pixels)
        after = torch.sigmoid(model(pixels).logits)[0].numpy()
        before = torch.sigmoid(features @ original["weight"].T + original["bias"])[0].numpy()
    names = [model.config.id2label[i] for i in range(len(after))]
    return names, before, after


def _cells(driver, elem_id: str) -> tuple[list[str], list[list[str]]]:
    """The headers and the rendered rows of a Gradio table (its cells carry data-row / data-col)."""
    return driver.execute_script("""
        const root = document.getElementById(arguments[0]);
        const heads = [...root.querySelectorAll('th')].map(e => e.innerText.trim()).filter(t => t);
        const rows = {};
        for (const e of root.querySelectorAll('[data-row][data-col]')) {
            (rows[+e.dataset.row] ??= [])[+e.dataset.col] = e.innerText.trim();
        }
        return [heads, Object.keys(rows).sort((a, b) => a - b).map(k => rows[k])];""", elem_id)


def _wait(driver, condition, seconds: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.02).until(condition)


def _outside_requests(driver) -> list[str]:
    """Every URL the page requested that is not on 127.0.0.1 (data: and blob: URLs are in the page)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("http://127.0.0.1", "data:", "blob:")):
                urls.append(url)
    return urls


def test_the_page_shows_before_and_after_as_python_computes_them(browser, model_folder, digits, artifacts,
                                                                  tmp_path):
    from selenium.webdriver.common.by import By

    image_path = tmp_path / "digits_test_0.png"
    digits["test"][0]["image"].save(image_path)
    second = tmp_path / "digits_test_1.png"
    digits["test"][1]["image"].save(second)
    names, before, after = _direct(model_folder, digits["test"][0]["image"].convert("RGB"))
    demo = build_app(model_folder)
    url = launch(demo, port=_free_port(), block=False)
    try:
        assert url.startswith("http://127.0.0.1:")
        browser.get(url)
        upload = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#cft-images input[type=file]"))
        start = time.perf_counter()
        upload.send_keys(str(image_path))
        _wait(browser, lambda d: "scored" in d.find_element(By.ID, "cft-status").text
              and len(_cells(d, "cft-table")[1]) >= min(len(names), 10))
        answered = time.perf_counter() - start
        heads, rows = _cells(browser, "cft-table")
        shot = os.path.join(artifacts, "app_images_tab.png")
        browser.save_screenshot(shot)
        print(f"\nupload answered in {answered:.2f} s; status: {browser.find_element(By.ID, 'cft-status').text}; "
              f"screenshot: {shot}")
        assert heads[:4] == ["category", "before CFT", "after CFT", "change"]
        change = np.abs(after - before)
        for k, row in enumerate(rows):
            j = names.index(row[0])
            assert abs(float(row[1]) - before[j]) <= 5.1e-5 and abs(float(row[2]) - after[j]) <= 5.1e-5, row
            if k:  # sorted by the size of the change (ties within the rounding may swap)
                assert change[j] <= change[names.index(rows[k - 1][0])] + 1e-4
        if len(names) <= 10:  # every category rendered: they are exactly the model's
            assert sorted(r[0] for r in rows) == sorted(names)
        assert answered < ANSWER_SECONDS
        upload = browser.find_element(By.CSS_SELECTOR, "#cft-images input[type=file]")
        upload.send_keys(str(second))  # added to the first: several images, a column names each
        _wait(browser, lambda d: "2 image(s) scored" in d.find_element(By.ID, "cft-status").text)
        heads, rows = _cells(browser, "cft-table")
        assert heads[:2] == ["image", "category"] and rows[0][0] in (image_path.name, second.name)
        examples = browser.find_elements(By.XPATH, "//button[normalize-space()='test_1.png']")
        if examples:  # the model folder's examples/: a click scores that image alone
            examples[0].click()
            _wait(browser, lambda d: "1 image(s) scored" in d.find_element(By.ID, "cft-status").text)
        tab = next(b for b in browser.find_elements(By.XPATH, "//button[@role='tab']") if "Run report" in b.text)
        tab.click()
        _wait(browser, lambda d: _cells(d, "cft-categories")[1])
        heads, rows = _cells(browser, "cft-categories")
        assert {"n_sel", "n_sel_pos", "oof_gain", "p_gain", "reason"} <= set(heads)
        assert browser.find_elements(By.CSS_SELECTOR, "img[src*='cft_gains']")  # the plot
        search = browser.find_element(By.CSS_SELECTOR, "#cft-categories input[type=text]")
        search.send_keys("no such category")  # the search filters the rows ...
        _wait(browser, lambda d: not _cells(d, "cft-categories")[1])
        search.clear()
        search.send_keys(names[3])  # ... and finds a category by name
        _wait(browser, lambda d: any(r[1] == names[3] for r in _cells(d, "cft-categories")[1]))
        assert all(any(names[3] in c for c in r) for r in _cells(browser, "cft-categories")[1])
        browser.set_window_size(1400, 1800)
        browser.execute_script("window.scrollTo(0, 0)")
        shot = os.path.join(artifacts, "app_report_tab.png")
        browser.save_screenshot(shot)
        print(f"report screenshot: {shot}")
        assert not _outside_requests(browser)
    finally:
        demo.close()


def test_a_folder_that_is_not_a_calibrated_model_gets_a_message_on_the_page(browser, tmp_path, artifacts):
    from selenium.webdriver.common.by import By

    (tmp_path / "config.json").write_text("{}")
    demo = build_app(tmp_path)
    url = launch(demo, port=_free_port(), block=False)
    try:
        browser.get(url)
        text = _wait(browser, lambda d: d.find_element(By.ID, "cft-error").text)
        assert "cannot show" in text and "not a calibrated model" in text and "cft_report.json" in text
        assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(os.path.join(artifacts, "app_not_calibrated.png"))
    finally:
        demo.close()

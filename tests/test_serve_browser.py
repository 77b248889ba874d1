"""The web page of `seqtool serve` in headless Chromium, against a live server on
127.0.0.1 with tiny trained models. Needs the Debian packages chromium and
chromium-driver (no browser is downloaded at run time). SEQTOOL_SCREENSHOTS=DIR keeps a
screenshot of each model's page."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and DRIVER.exists()):
    pytest.skip(
        "no headless browser: apt-get install chromium chromium-driver", allow_module_level=True
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -e '.[dev]'")
httpx = pytest.importorskip("httpx", reason="pip install -e '.[dev]'")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.test_serve import free_port, train_runs  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    runs = train_runs(tmp_path_factory.mktemp("browser"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "seqtool", "serve", "--port", str(port), "--threads", "1",
         *(f"{name}={path}" for name, path in runs.items())],
        env={**os.environ, "SEQTOOL_LOG_LEVEL": "warning"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/health")
            break
        except httpx.TransportError:
            assert server.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.2)
    yield base
    server.terminate()
    assert server.wait(30) == 0


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1000,700"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(DRIVER)))
    yield driver
    driver.quit()


def open_page(browser, url, model):
    browser.get(f"{url}/?model={model}")
    WebDriverWait(browser, 10).until(
        lambda b: (
            b.find_element(By.ID, "model").get_attribute("value") == model
            and b.find_element(By.ID, "task").text
        )
    )


def screenshot(browser, name):
    folder = os.environ.get("SEQTOOL_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_generated_text_streams_into_the_page(browser, url):
    open_page(browser, url, "gen")
    assert browser.find_element(By.ID, "generator").is_displayed()
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("the ")
    length = browser.find_element(By.ID, "length")
    length.clear()
    length.send_keys("200")
    browser.find_element(By.ID, "generate").click()
    out = browser.find_element(By.ID, "generated")
    WebDriverWait(browser, 20).until(lambda _: len(out.text.replace("\n", "")) > 150)
    assert browser.find_element(By.ID, "error").text == ""
    screenshot(browser, "generator")


def test_a_translation_comes_with_its_attention_heatmap(browser, url):
    open_page(browser, url, "tr")
    browser.find_element(By.ID, "source").send_keys("3 march 2021")
    browser.find_element(By.ID, "translate").click()
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#heatmap tbody td")
    )
    # the page shows the API's answer: its text (which a tiny model may leave empty),
    # one heatmap column per source piece and one row per target step
    beam = int(browser.find_element(By.ID, "beam_size").get_attribute("value"))
    reply = httpx.post(
        f"{url}/v1/translate",
        json={"model": "tr", "text": "3 march 2021", "beam_size": beam, "attention": True},
    ).json()["translations"][0]
    assert browser.find_element(By.ID, "translation").text == reply["translation"].strip()
    columns = browser.find_elements(By.CSS_SELECTOR, "#heatmap thead th")[1:]
    assert [c.get_attribute("textContent") for c in columns] == reply["source_tokens"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody th")
    labels = [r.get_attribute("textContent") for r in rows]
    assert len(labels) == len(reply["attention"]) and labels[0] == (reply["tokens"] + ["</s>"])[0]
    screenshot(browser, "translator")


def test_classification_shows_bars_and_shaded_words(browser, url):
    open_page(browser, url, "clf")
    browser.find_element(By.ID, "text").send_keys("a gorgeous witty film")
    browser.find_element(By.ID, "classify").click()
    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#bars .bar"))
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar .name")
    assert {b.text for b in bars} == {"pos", "neg"}
    assert browser.find_elements(By.CSS_SELECTOR, "#explained span")
    screenshot(browser, "classifier")

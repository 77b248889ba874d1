"""The web page of `seqtool serve` in headless Chromium, against a live server on
127.0.0.1 with tiny trained models. Needs the Debian packages chromium and
chromium-driver (no browser is downloaded at run time). SEQTOOL_SCREENSHOTS=DIR keeps a
screenshot of each model's page."""

from __future__ import annotations

import os
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

from tests.test_serve import runs, served  # noqa: E402, F401 - fixtures


@pytest.fixture(scope="module")
def url(runs):
    names = (f"{name}={path}" for name, path in runs.items())
    with served(*names, "--max-generate-length", 10_000_000) as (server, base):
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


def fill(browser, field: str, value) -> None:
    box = browser.find_element(By.ID, field)
    box.clear()
    box.send_keys(str(value))


def generated(browser) -> str:
    return browser.find_element(By.ID, "generated").get_attribute("textContent")


def idle(browser, form: str) -> bool:
    return browser.find_element(By.ID, form).get_attribute("aria-busy") == "false"


def test_generated_text_streams_into_the_page_once_per_click(browser, url):
    open_page(browser, url, "gen")
    assert browser.find_element(By.ID, "generator").is_displayed()
    assert browser.find_element(By.ID, "info").text.startswith("generator: ")
    fill(browser, "prompt", "the ")
    fill(browser, "length", 200)
    fill(browser, "seed", 4)
    button = browser.find_element(By.ID, "generate")
    button.click()
    button.click()  # busy: the second click starts nothing
    WebDriverWait(browser, 20).until(lambda b: idle(b, "generator") and generated(b))
    body = {"model": "gen", "prompt": "the ", "length": 200, "seed": 4, "temperature": 0.8}
    assert generated(browser) == httpx.post(f"{url}/v1/generate", json=body).json()["text"]
    assert browser.find_element(By.ID, "error").text == ""
    screenshot(browser, "generator")


def test_stop_ends_a_generation_and_the_page_is_ready_again(browser, url):
    open_page(browser, url, "gen")
    fill(browser, "length", 10_000_000)
    browser.find_element(By.ID, "generate").click()
    form = browser.find_element(By.ID, "generator")
    WebDriverWait(browser, 20).until(lambda b: len(generated(b)) > 20)
    assert form.get_attribute("aria-busy") == "true"
    assert not browser.find_element(By.ID, "generate").is_enabled()
    form.find_element(By.CSS_SELECTOR, "button.stop").click()
    WebDriverWait(browser, 20).until(lambda b: idle(b, "generator"))
    assert browser.find_element(By.ID, "generate").is_enabled()
    assert browser.find_element(By.ID, "error").text == ""
    stopped = generated(browser)
    WebDriverWait(browser, 5).until(lambda b: generated(b) == stopped)  # nothing more comes


def test_a_translation_comes_with_its_attention_heatmap_and_n_best(browser, url):
    open_page(browser, url, "tr")
    fill(browser, "beam_size", 3)
    fill(browser, "n_best", 3)
    fill(browser, "source", "3 march 2021\n")  # Enter translates
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#heatmap tbody td")
    )
    # the page shows the API's answer: its text (which a tiny model may leave empty),
    # the other n-best, one heatmap column per source piece and one row per target step
    reply = httpx.post(
        f"{url}/v1/translate",
        json={"model": "tr", "text": "3 march 2021", "beam_size": 3, "n_best": 3,
              "attention": True},
    ).json()["translations"][0]  # fmt: skip
    assert browser.find_element(By.ID, "translation").text == reply["translation"].strip()
    others = browser.find_elements(By.CSS_SELECTOR, "#nbest li")
    assert len(others) == 2
    columns = browser.find_elements(By.CSS_SELECTOR, "#heatmap thead th")[1:]
    assert [c.get_attribute("textContent") for c in columns] == reply["source_tokens"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody th")
    labels = [r.get_attribute("textContent") for r in rows]
    assert len(labels) == len(reply["attention"]) and labels[0] == (reply["tokens"] + ["</s>"])[0]
    screenshot(browser, "translator")


def test_classification_shows_bars_and_shaded_words(browser, url):
    open_page(browser, url, "clf")
    fill(browser, "labels", 1)
    fill(browser, "text", "the film was superb\n")  # Enter classifies
    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#bars .bar"))
    reply = httpx.post(
        f"{url}/v1/classify", json={"model": "clf", "text": "the film was superb", "top_k": 1}
    ).json()["results"][0]
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar .name")
    assert [b.text for b in bars] == [reply["label"]]  # top-k 1: one bar, the label
    assert browser.find_elements(By.CSS_SELECTOR, "#explained span")
    screenshot(browser, "classifier")


def test_the_api_docs_render_without_a_network(browser, url):
    """Swagger UI's scripts come from the server (this machine reaches nothing else)."""
    browser.get(f"{url}/docs")
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path")
    )
    paths = browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path")
    assert "/v1/completions" in [p.get_attribute("data-path") for p in paths]

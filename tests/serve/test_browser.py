"""The web page in a real headless browser (Debian's chromium + chromedriver, driven by selenium):
key, bad file, upload, indexing progress, question, results, a clip that plays exactly its segment, timeline."""
from __future__ import annotations

import shutil

import pytest

from clsr_testing import SECRET_CANARIES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver on PATH (make system-deps)")
pytest.importorskip("selenium")

KEY = SECRET_CANARIES["browser test API key"]  # conftest checks no file of the run holds it
WAIT_S = 180  # an upper bound for slow or shared CI machines, not a timing check


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--no-first-run",
                "--disable-background-networking"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, retriever, tmp_path, live_server):
    from funasr_clsr.serve import create_app

    app = create_app(retriever, tmp_path / "idx", api_key=KEY)
    with live_server(app) as live:
        browser.get(live.url + "/")
        yield browser


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def error_text(driver) -> str:
    box = driver.find_element("id", "error")
    return box.text if box.is_displayed() else ""


def test_upload_ask_play_and_errors_in_the_page(page, audio):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = page
    # without the key the page says what is missing; with it, it connects
    wait_for(d, lambda d: "API key" in error_text(d), "the page reports the missing API key")
    d.find_element(By.ID, "api-key").send_keys(KEY, Keys.TAB)
    wait_for(d, lambda d: "segments" in d.find_element(By.ID, "health").text, "connected with the key")
    assert error_text(d) == ""

    # a file that is not audio: a one-line error naming it, nothing indexed
    d.find_element(By.ID, "file").send_keys(str(audio / "notaudio.wav"))
    d.find_element(By.ID, "upload").click()
    wait_for(d, lambda d: "notaudio.wav" in error_text(d), "the error for a bad file")
    assert "not" in error_text(d) and "\n" not in error_text(d)

    # upload, watch the job to the end, the recording appears in the picker
    d.find_element(By.ID, "file").send_keys(str(audio / "long.wav"))
    d.find_element(By.ID, "recording-id").send_keys("talk")
    d.find_element(By.ID, "upload").click()
    wait_for(d, lambda d: d.find_element(By.ID, "job-state").text == "done", "indexing finished")
    assert error_text(d) == ""
    assert d.find_element(By.ID, "job-progress").get_property("value") == 1
    assert d.find_element(By.ID, "job-count").text == "8 / 8 windows"
    options = "return [...document.querySelectorAll('#recordings option')].map((o) => o.value)"  # one atomic read
    wait_for(d, lambda d: d.execute_script(options) == ["", "talk"], "the recording in the picker")

    # ask: the top segments with times and transcripts, one player each, and the timeline
    top_k = d.find_element(By.ID, "top-k")
    top_k.clear()
    top_k.send_keys("3")
    d.find_element(By.ID, "question").send_keys("who was the king of the city")
    d.find_element(By.ID, "ask").click()
    wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) == 3, "three results")
    hits = d.find_elements(By.CSS_SELECTOR, "#results li")
    for li in hits:
        assert "talk ·" in li.find_element(By.CLASS_NAME, "meta").text and "score" in li.text
        assert li.find_element(By.CLASS_NAME, "transcript").text
    assert len(d.find_elements(By.CSS_SELECTOR, "#timeline rect")) == 8
    assert len(d.find_elements(By.CSS_SELECTOR, "#timeline rect.top")) == 3

    # the first clip loads and plays: its length is exactly the segment's, and time advances
    first = hits[0]
    start, end = float(first.get_attribute("data-start")), float(first.get_attribute("data-end"))
    audio_el = first.find_element(By.TAG_NAME, "audio")
    wait_for(d, lambda d: d.execute_script("return arguments[0].readyState", audio_el) >= 2, "the clip loaded")
    assert d.execute_script("return arguments[0].duration", audio_el) == pytest.approx(end - start, abs=0.01)
    played = d.execute_async_script("""
        const [el, done] = arguments;
        el.play().then(() => {
          const t0 = el.currentTime;
          const check = () => (el.currentTime > t0 + 0.1 || el.ended) ? done({ok: true, t: el.currentTime})
                                                                       : setTimeout(check, 20);
          check();
        }).catch((e) => done({ok: false, error: String(e)}));""", audio_el)
    assert played["ok"] and played["t"] > 0, played

    # a spoken question that is window 5 itself finds window 5 first
    d.find_element(By.ID, "question-audio").send_keys(str(audio / "c5.wav"))
    d.find_element(By.ID, "ask-spoken").click()
    wait_for(d, lambda d: "c5.wav" in d.find_element(By.ID, "summary").text, "the spoken question's results")
    first = d.find_elements(By.CSS_SELECTOR, "#results li")[0]
    assert (float(first.get_attribute("data-start")), float(first.get_attribute("data-end"))) == (10.0, 12.0)
    assert error_text(d) == ""

"""The page of `catsdogs serve` in a real browser: Debian's Chromium, driven by selenium, against a real server.

The server is a real `catsdogs serve` process (`serve_fixtures.live_server`),
so the page runs under the service's own Content-Security-Policy; a script or
style the policy blocks shows up in the browser's log, which the tests read.
Screenshots go to `$CATSDOGS_TEST_ARTIFACTS/serve_page/` when that variable is
set, else to the test's temporary folder; never into the repository. The tests
skip only when Chromium or chromedriver is not installed (`.ci/run` installs
the Debian packages `chromium` and `chromium-driver`).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

import serve_fixtures
from serve_fixtures import photo_bytes

# The shared server fixtures, bound here so that pytest finds them for this module.
live_server = serve_fixtures.live_server
served_model = serve_fixtures.served_model

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the `dev` extra)")
from selenium.common.exceptions import TimeoutException  # noqa: E402 (only once selenium is known to exist)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = Path(os.environ.get("CATSDOGS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CATSDOGS_CHROMEDRIVER", "/usr/bin/chromedriver"))
SAMPLE_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogs-vs-cats-original-sample" / "train"
DESKTOP_SIZE = (1280, 800)
PHONE_SIZE = (375, 800)
WAIT_S = 20.0
# A JPEG signature followed by bytes that are no image at all.
BROKEN_JPEG = b"\xff\xd8\xff\xe0" + b"this is not really a photo" * 8


def _missing_browser_reason() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{path} not found: install the Debian package {package} to run the page's browser tests"
    return None


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, which logs every console message."""
    reason = _missing_browser_reason()
    if reason:
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={DESKTOP_SIZE[0]},{DESKTOP_SIZE[1]}")
    # Light mode, so every run's screenshots look alike whatever the host prefers.
    options.add_argument("--blink-settings=preferredColorScheme=1")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, live_server):
    """The browser on a freshly loaded page, its log emptied, at desktop size."""
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    # Empty the log first, so that it holds this page's messages only, from its very first one.
    browser.get_log("browser")
    browser.get(f"{live_server.base_url}/")
    WebDriverWait(browser, WAIT_S).until(lambda driver: driver.find_element(By.ID, "model-facts").is_displayed())
    return browser


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where screenshots go: $CATSDOGS_TEST_ARTIFACTS/serve_page, else the test's temporary folder."""
    root = os.environ.get("CATSDOGS_TEST_ARTIFACTS")
    folder = Path(root) / "serve_page" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Two photos: a real cat and a real dog from ../shared when present, else a green and a red square."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ("cat.1.jpg", "dog.12.jpg")
    if all((SAMPLE_PHOTOS / name).is_file() for name in names):
        for name in names:
            shutil.copyfile(SAMPLE_PHOTOS / name, folder / name)
    else:
        (folder / names[0]).write_bytes(photo_bytes("cats", size=96))
        (folder / names[1]).write_bytes(photo_bytes("dogs", size=96, seed=1))
    return [folder / name for name in names]


@pytest.fixture
def broken_file(tmp_path) -> Path:
    path = tmp_path / "broken.jpg"
    path.write_bytes(BROKEN_JPEG)
    return path


def upload(driver, paths) -> None:
    """Choose files through the page's file input, as the file picker would."""
    driver.find_element(By.ID, "file-input").send_keys("\n".join(str(path) for path in paths))


def wait_for_cards(driver, count: int, selector: str = ".card-label:not([hidden]), .card-error:not([hidden])"):
    """Wait until `count` cards show an answer (a label or a reason); return {file name: card element}."""
    try:
        WebDriverWait(driver, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, selector)) >= count)
    except TimeoutException:
        states = [card.text for card in driver.find_elements(By.CSS_SELECTOR, ".card")]
        raise AssertionError(f"{count} answered cards expected within {WAIT_S} s; the cards read: {states}") from None
    return {card.find_element(By.CSS_SELECTOR, ".card-file").text: card for card in cards(driver)}


def cards(driver):
    return driver.find_elements(By.CSS_SELECTOR, ".card")


def api_answer(base_url: str, path: Path) -> httpx.Response:
    """What POST /v1/predict answers for this one file, called directly."""
    files = {"files": (path.name, path.read_bytes(), "application/octet-stream")}
    return httpx.post(f"{base_url}/v1/predict", files=files, timeout=WAIT_S)


def unexpected_console_entries(driver) -> list[dict]:
    """Browser log entries that are errors, except the 4xx a refused photo's request logs by design."""
    unexpected = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        refused_photo = entry.get("source") == "network" and "/v1/predict" in entry["message"]
        if refused_photo and ("status of 415" in entry["message"] or "status of 422" in entry["message"]):
            continue
        unexpected.append(entry)
    return unexpected


def screenshot(driver, folder: Path, name: str, size: tuple[int, int]) -> Path:
    """Save the page at `size` (CSS pixels, phone-like below 600 wide) as folder/name.png."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    driver.execute_script("window.scrollTo(0, 0)")
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"the screenshot {path} could not be written"
    return path


def test_page_labels_two_photos_and_shows_a_broken_files_reason(page, live_server, photos, broken_file, artifacts):
    upload(page, photos)
    answered = wait_for_cards(page, 2)

    assert sorted(answered) == sorted(path.name for path in photos)
    for path in photos:
        expected = api_answer(live_server.base_url, path).json()["predictions"][0]
        card = answered[path.name]
        assert card.find_element(By.CSS_SELECTOR, ".card-label").text.lower() == expected["label"].lower()
        bars = card.find_elements(By.CSS_SELECTOR, ".bar")
        assert len(bars) == len(expected["probabilities"])
        assert re.fullmatch(r"\d+ ms|\d+\.\d s", card.find_element(By.CSS_SELECTOR, ".card-time").text)
        assert card.find_element(By.CSS_SELECTOR, ".card-image").get_attribute("src").startswith("blob:")

    upload(page, [broken_file])
    answered = wait_for_cards(page, 3)
    refusal = api_answer(live_server.base_url, broken_file)
    assert refusal.status_code == 422, refusal.text
    reason = answered[broken_file.name].find_element(By.CSS_SELECTOR, ".card-error")
    assert reason.is_displayed()
    assert reason.text == refusal.json()["error"]["message"]
    assert "not usable" in page.find_element(By.ID, "summary").text
    assert page.find_element(By.ID, "announcer").get_attribute("aria-live") == "polite"

    for name, size in (("desktop", DESKTOP_SIZE), ("phone", PHONE_SIZE)):
        assert screenshot(page, artifacts, f"results-{name}", size).stat().st_size > 0


def test_page_runs_under_the_content_security_policy_without_console_errors(page, live_server, photos, broken_file):
    policy = httpx.get(f"{live_server.base_url}/", timeout=WAIT_S).headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy

    upload(page, [*photos, broken_file])
    wait_for_cards(page, 3)

    assert unexpected_console_entries(page) == []


def test_page_writes_file_names_as_text_never_as_html(page, tmp_path):
    path = tmp_path / "<img id=injected src=x>cat.png"
    path.write_bytes(photo_bytes("cats", format="PNG"))

    upload(page, [path])
    answered = wait_for_cards(page, 1)

    assert path.name in answered
    assert page.find_elements(By.ID, "injected") == []


# Builds a File from base64 bytes and hands it to the page as a drop on the drop zone or as a paste.
_DROP_OR_PASTE = """
const [how, name, encoded] = arguments;
const bytes = Uint8Array.from(atob(encoded), (character) => character.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, { type: "image/png" }));
const event = how === "drop"
  ? new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true })
  : new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true });
document.getElementById("drop-zone").dispatchEvent(event);
return event.defaultPrevented;
"""


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_dropped_and_pasted_photos_are_labelled(page, how):
    encoded = base64.b64encode(photo_bytes("dogs", format="PNG")).decode("ascii")

    handled = page.execute_script(_DROP_OR_PASTE, how, f"{how}.png", encoded)
    answered = wait_for_cards(page, 1)

    assert handled, f"the page let the browser handle the {how} itself"
    assert answered[f"{how}.png"].find_element(By.CSS_SELECTOR, ".card-label").text.lower() == "dogs"


def test_keyboard_focus_reaches_the_picker_with_a_visible_ring(page):
    page.find_element(By.TAG_NAME, "body").click()
    focused_ids = []
    for _ in range(6):
        page.switch_to.active_element.send_keys(Keys.TAB)
        focused = page.switch_to.active_element
        focused_ids.append(focused.get_attribute("id"))
        if focused_ids[-1] == "drop-zone":
            break

    assert focused_ids[-1] == "drop-zone", f"Tab visited {focused_ids}"
    assert focused.tag_name == "button"
    assert page.execute_script("return getComputedStyle(arguments[0]).outlineStyle", focused) != "none"


def test_page_is_one_column_at_phone_width(page, photos, artifacts):
    page.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_SIZE[0], "height": PHONE_SIZE[1], "deviceScaleFactor": 1, "mobile": True},
    )
    upload(page, photos)
    wait_for_cards(page, 2)

    lefts = {card.rect["x"] for card in cards(page)}
    assert len(lefts) == 1, f"cards side by side at {PHONE_SIZE[0]} px: x={sorted(lefts)}"
    page_width = page.execute_script("return document.documentElement.scrollWidth")
    assert page_width <= PHONE_SIZE[0], f"the page scrolls sideways at {PHONE_SIZE[0]} px: {page_width} px wide"


@pytest.mark.slow
def test_one_click_shows_the_grad_cam_overlay(page, live_server, photos, artifacts):
    model = httpx.get(f"{live_server.base_url}/v1/model", timeout=WAIT_S).json()
    if not model["explain"]:
        pytest.skip("this server cannot draw Grad-CAM (it needs TensorFlow, Keras and matplotlib)")
    upload(page, photos[:1])
    card = wait_for_cards(page, 1)[photos[0].name]
    image = card.find_element(By.CSS_SELECTOR, ".card-image")
    preview = image.get_attribute("src")

    card.find_element(By.CSS_SELECTOR, ".card-explain").click()
    badge = card.find_element(By.CSS_SELECTOR, ".card-badge")
    # The first explanation imports TensorFlow and loads the Keras model, which takes a while.
    WebDriverWait(page, 90).until(
        lambda _: badge.is_displayed() or card.find_element(By.CSS_SELECTOR, ".card-note").is_displayed()
    )

    assert badge.is_displayed(), card.find_element(By.CSS_SELECTOR, ".card-note").text
    assert image.get_attribute("src") not in ("", preview)
    assert page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    screenshot(page, artifacts, "grad-cam-desktop", DESKTOP_SIZE)

    card.find_element(By.CSS_SELECTOR, ".card-explain").click()
    assert image.get_attribute("src") == preview
    assert not badge.is_displayed()

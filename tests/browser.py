"""Open a page in a real browser: headless Chromium driven by Selenium through ``/usr/bin/chromedriver``.

``check_page_in_browser(path, screenshot)`` loads a local HTML file and asserts what a reader needs: every image
decoded (``naturalWidth > 0``), no console error, and no network request other than the file itself (``data:`` URIs
are not requests); it saves a full-page screenshot. Without Chromium, chromedriver or selenium the calling test is
skipped with the reason (``.ci/run`` installs them; ``apt-get install chromium chromium-driver``).

Requests are read from Chrome's performance log (``goog:loggingPrefs``: the DevTools ``Network.requestWillBeSent``
events of the tab), console messages from its browser log. One browser is started per test process and reused.
"""

from __future__ import annotations

import atexit
import base64
import importlib.util
import io
import json
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's chromium-driver; given explicitly, so no selenium-manager run
WIDTH, MAX_HEIGHT = 1280, 12000  # window width; a screenshot shows the page's full height, up to MAX_HEIGHT


def missing_browser() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    missing = [f"{path} (apt-get install {package})" for path, package in
               ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")) if not path.is_file()]  # fmt: skip
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package (pip install -e '.[test]')")
    return "real-browser test needs " + " and ".join(missing) if missing else ""


@cache
def _driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="ib-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},900",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    atexit.register(shutil.rmtree, profile, ignore_errors=True)  # atexit runs last-in first-out: after quit
    atexit.register(driver.quit)
    return driver


def _requests(performance_log: list[dict[str, Any]]) -> list[str]:
    """The URLs the tab asked for, from the DevTools events in Chrome's performance log."""
    urls = []
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def check_page_in_browser(path: str | Path, screenshot: str | Path, *, min_images: int = 0) -> None:
    """Load the HTML file ``path`` in headless Chromium and assert it is whole and self-contained; save a
    full-page PNG screenshot to ``screenshot`` (taken before the assertions, so a failing page is seen too).

    Asserts: at least ``min_images`` ``<img>`` elements, each loaded and decoded (``complete`` and
    ``naturalWidth > 0``); no console message at level SEVERE; no request but the page's own ``file://`` URL and
    ``data:`` URIs. Skips the calling test when the browser is missing (see :func:`missing_browser`).
    """
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    path = Path(path).resolve()
    driver = _driver()
    driver.get("about:blank")  # leave the previous page (or the start-up tab, which loads chrome:// resources)
    for log in ("browser", "performance"):
        driver.get_log(log)  # and drop what it logged
    driver.get(path.as_uri())  # returns after the load event: images are fetched and decoded by then
    images = driver.execute_script(
        "return Array.from(document.images, i => [i.getAttribute('src').slice(0, 60), i.complete, i.naturalWidth])"
    )
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(_full_page_png(driver))
    console = [f"{entry['level']}: {entry['message']}" for entry in driver.get_log("browser")]
    requests = _requests(driver.get_log("performance"))

    external = [url for url in requests if url != path.as_uri() and not url.startswith("data:")]
    assert not external, f"{path.name} made network requests: {external}"
    errors = [line for line in console if line.startswith("SEVERE")]
    assert not errors, f"console errors in {path.name}: {errors}"
    assert len(images) >= min_images, f"{path.name} shows {len(images)} images, expected at least {min_images}"
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert not broken, f"images in {path.name} that did not decode: {broken}"
    _check_screenshot(screenshot)


def _full_page_png(driver: Any) -> bytes:
    """The whole page (up to :data:`MAX_HEIGHT` CSS pixels tall) as PNG, through DevTools' Page.captureScreenshot."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], MAX_HEIGHT), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    return base64.b64decode(shot["data"])


def _check_screenshot(screenshot: Path) -> None:
    """The screenshot is a PNG of the page, not a blank window: many distinct colours (text, figures)."""
    from PIL import Image

    with Image.open(io.BytesIO(screenshot.read_bytes())) as image:
        assert image.width >= WIDTH // 2 and image.height >= 100, f"screenshot {screenshot} is {image.size} pixels"
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 16, f"screenshot {screenshot} is nearly blank ({len(colours)} colours)"


def artifact_folder(tmp_path: Path) -> Path:
    """Where screenshots go: ``$IB_TEST_ARTIFACTS`` if set (CI keeps it), else the test's ``tmp_path``."""
    folder = Path(os.environ.get("IB_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder

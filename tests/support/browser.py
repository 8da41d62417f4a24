"""What the real-browser tests share: where Chromium is, how it is started, and small page helpers.

Needs Debian's chromium (/usr/bin/chromium; scripts/install_browser_deps.sh) and PyPI playwright,
driven with executable_path because `playwright install` cannot download a browser here. The
fixtures (one server, one browser for the session) are in tests/conftest.py.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("FACE_EMOTION_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
# Set FACE_EMOTION_SCREENSHOTS=DIR to keep the screenshots the tests take.
SCREENSHOT_DIR = os.environ.get("FACE_EMOTION_SCREENSHOTS")


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright==1.65.2)"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM}: run scripts/install_browser_deps.sh (apt-get install chromium)"
    return None


# A browser test module's `pytestmark`: marked, and skipped (with the reason) where it cannot run.
BROWSER = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


def launch(playwright, *extra_args: str):
    """A headless Chromium from the session's playwright, with the fake camera and microphone."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args])


def screenshot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=True)


def wait_for(page, expression: str, timeout_s: float) -> None:
    """Polls ``expression`` with page.evaluate: wait_for_function evaluates strings in the page,
    which the page's CSP (no unsafe-eval) forbids."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s} s: {expression}")
        time.sleep(0.1)

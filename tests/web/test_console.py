"""The browser page, driven in a real headless Chromium against a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it)")


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        yield page
        browser.close()


def test_generate_from_the_page(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    page.fill("#key", server.key)
    page.dispatch_event("#key", "change")  # loads the engine list with the key
    page.wait_for_function("[...document.querySelectorAll('#engine option')].some(o => o.value === 'tiny')")
    options = page.eval_on_selector_all("#engine option", "os => os.map(o => o.value)")
    assert "lanczos" not in options and "esrgan-v1-x2plus" not in options  # upscalers are not offered
    page.select_option("#engine", "tiny")
    page.select_option("#size", "64")
    page.fill("#steps", "10")
    page.fill("#seed", "42")
    page.click("#generate")
    page.wait_for_selector("#output", timeout=120_000)
    src = page.get_attribute("#output", "src")
    assert src.startswith("data:image/png;base64,") and len(src) > 200
    assert "seed 42" in page.inner_text("#status")
    natural = page.eval_on_selector("#output", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [64, 64]


def test_errors_are_shown(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/")
    page.fill("#key", "sk-dfd-not-a-key")
    page.click("#generate")
    page.wait_for_selector("#status.error")
    assert "unauthorized" in page.inner_text("#status")


def test_openapi_ui_is_served(server: LiveServer, page: Any) -> None:
    page.goto(server.url + "/docs")
    page.wait_for_selector("text=text-to-image", timeout=30_000)

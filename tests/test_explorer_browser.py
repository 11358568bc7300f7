"""The explorer page in headless Chromium (Debian's /usr/bin/chromium) against the real server."""
from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
import urllib.request
import zipfile

import pytest
import uvicorn
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from betavae.explorer.app import create_app
from betavae.explorer.state import load_models

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 15_000
PNG_URL = re.compile(r"^data:image/png;base64,")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(url: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=1) as response:
                if json.load(response)["ok"]:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the explorer at {url} did not answer within {deadline_s} s")


@pytest.fixture(scope="module")
def server_url(tiny_run):
    """The real app under uvicorn on a free local port, serving the tiny run twice (ids 0 and 1)."""
    app = create_app(load_models([tiny_run, tiny_run]), top_k=2)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _wait_until_healthy(url)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    """A fresh page with the explorer loaded and its first image decoded."""
    context = browser.new_context(viewport={"width": 1240, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server_url)
    expect(page.locator(".panel .decoded").first).to_have_attribute("src", PNG_URL)
    yield page
    context.close()


def _png_bytes(size=(48, 48)) -> bytes:
    image = Image.new("RGB", size, "black")
    image.paste((255, 255, 255), (12, 12, 36, 36))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _wait_for_new_src(page, selector: str, old: str) -> str:
    page.wait_for_function("([sel, old]) => { const s = document.querySelector(sel).src; return s && s !== old; }",
                           arg=[selector, old])
    return page.locator(selector).get_attribute("src")


def test_page_loads_with_top_k_sliders_and_a_traversal(page):
    panel = page.locator(".panel")
    expect(panel).to_have_count(1)
    expect(panel.locator(".slider:visible")).to_have_count(2)  # --top-k 2
    panel.locator(".show-all-box").check()
    expect(panel.locator(".slider:visible")).to_have_count(4)
    expect(panel.locator(".strip")).to_have_attribute("src", PNG_URL)
    expect(page.locator("#compare-label")).to_be_visible()
    expect(panel.locator(".error")).to_have_text("")


def test_moving_a_slider_changes_the_image(page):
    before = page.locator(".decoded").get_attribute("src")
    slider = page.locator(".slider input[type=range]").first
    target = "-3" if float(slider.input_value()) > 0 else "3"
    slider.fill(target)
    after = _wait_for_new_src(page, ".decoded", before)
    assert after != before
    expect(page.locator(".slider .value").first).to_have_text(f"{float(target):.2f}")
    assert page.locator(".download").get_attribute("href") == after


def test_an_upload_is_encoded_and_shown(page):
    before = page.locator(".decoded").get_attribute("src")
    page.locator(".upload").set_input_files({"name": "square.png", "mimeType": "image/png", "buffer": _png_bytes()})
    expect(page.locator(".source-figure")).to_be_visible()
    expect(page.locator(".source")).to_have_attribute("src", PNG_URL)
    expect(page.locator(".source-caption")).to_have_text("upload")
    _wait_for_new_src(page, ".decoded", before)
    expect(page.locator(".panel .error")).to_have_text("")


def test_a_bad_upload_shows_an_error(page):
    page.locator(".upload").set_input_files({"name": "notes.png", "mimeType": "image/png", "buffer": b"hello"})
    expect(page.locator(".panel .error")).to_contain_text("not an image")
    expect(page.locator(".source-figure")).to_be_hidden()


def test_a_validation_image_is_shown_beside_its_decoding(page):
    page.locator(".val-position").fill("5")
    page.locator(".start-val").click()
    expect(page.locator(".source-caption")).to_have_text("validation #5")
    expect(page.locator(".source")).to_have_attribute("src", PNG_URL)


def test_two_models_render_side_by_side(page):
    page.locator("#compare").check()
    panels = page.locator(".panel")
    expect(panels).to_have_count(2)
    expect(panels.nth(1).locator(".model")).to_have_value("1")
    expect(panels.nth(1).locator(".decoded")).to_have_attribute("src", PNG_URL)
    first, second = (panels.nth(i).bounding_box() for i in range(2))
    assert abs(first["y"] - second["y"]) < 1 and second["x"] >= first["x"] + first["width"]
    page.locator("#compare").uncheck()
    expect(panels).to_have_count(1)


def test_export_downloads_a_zip_with_the_fixed_value(page):
    row = page.locator(".slider").first
    dim = row.get_attribute("data-dim")
    row.locator("input[type=range]").fill("1.25")
    row.locator(".mode").select_option("fix")
    page.locator(".export-n").fill("3")
    with page.expect_download() as info:
        page.locator(".export").click()
    archive = zipfile.ZipFile(info.value.path())
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["fixed"] == {dim: 1.25} and manifest["n"] == 3
    assert len([n for n in archive.namelist() if n.endswith(".png")]) == 3
    expect(page.locator(".export-status")).to_have_text("3 images exported")

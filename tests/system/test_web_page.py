"""The page at `/` in a real browser: Debian's chromium driven by Playwright, against gunicorn.

Playwright's own browser download cannot work here, so the tests launch /usr/bin/chromium
(installed by `make browser`, which `make test` runs first). A missing browser is a failure
with the reason, never a skip: a page nobody has seen working is not tested.

Everything is real: the trained model store from conftest, the gunicorn server, the MNIST
digits (drawn on the canvas with the mouse or a touch screen, or uploaded as PNG files).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import ROOT, SHARED_MNIST, LiveServer
from helpers import publish_copy

from shared.config import MODEL_NAME
from shared.model_store import METADATA_FILE

CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: no GPU, no background traffic to Google's services, no first-run UI.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PAGE_SIZE = 15  # what the page asks /samples for
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium. Install it with "
            "`make browser` (scripts/install-browser.sh; needs root and apt), or `apt-get install chromium`."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: .venv/bin/pip install -r requirements/dev.txt")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(trained_home: Path, start_module_server) -> LiveServer:
    """One gunicorn for the read-only tests, so the module does not pay a start per test."""
    return start_module_server(trained_home)


@pytest.fixture(scope="module")
def mnist() -> dict[str, np.ndarray]:
    with np.load(SHARED_MNIST) as archive:
        return {name: archive[name] for name in ("x_test", "y_test", "y_train")}


@dataclass
class Visit:
    """An open page plus what it did: every URL it requested and every script error."""

    page: Any
    base_url: str
    requested: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        # The page promises to work offline: nothing may leave the server's own origin.
        outside = [url for url in self.requested if not url.startswith((self.base_url + "/", "data:", "blob:"))]
        assert not outside, f"the page requested something outside {self.base_url}: {outside}"
        assert self.base_url.startswith("http://127.0.0.1:")
        assert not self.errors, f"script errors on the page: {self.errors}"

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def visit(browser: Any) -> Iterator[Callable[..., Visit]]:
    """Factory: `visit(server, **context_options)` opens `/` in a fresh browser context."""
    contexts = []

    def open_page(server: LiveServer, **options: Any) -> Visit:
        # en-US: the page formats numbers for the reader's locale ("10,000"), and the tests read them.
        context = browser.new_context(**{"viewport": DESKTOP, "locale": "en-US", **options})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        seen = Visit(page, server.url)
        page.on("request", lambda request: seen.requested.append(request.url))
        page.on("pageerror", lambda error: seen.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and seen.errors.append(message.text))
        response = page.goto(server.url + "/")
        assert response is not None and response.status == 200
        assert "default-src 'self'" in response.headers.get("content-security-policy", "")
        return seen

    yield open_page
    for context in contexts:
        context.close()


def wait_js(page: Any, expression: str, timeout_ms: float = WAIT_MS) -> None:
    """Polls a JavaScript expression until it is true.

    Playwright's wait_for_function evaluates its predicate with eval(), which the page's
    Content-Security-Policy forbids (as it should); page.evaluate() is not subject to it.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_ms / 1000:.0f} s: {expression}"
        page.wait_for_timeout(100)


def tiles(page: Any) -> list[dict[str, int]]:
    return page.eval_on_selector_all(
        ".tile",
        """tiles => tiles.map(t => ({index: +t.dataset.index, label: +t.dataset.label,
                                    predicted: +t.dataset.predicted, wrong: t.classList.contains('wrong')}))""",
    )


def wait_for_first_tile(page: Any, index: int) -> None:
    page.wait_for_selector(f".gallery .tile:first-child[data-index='{index}']")


def correct_samples(server: LiveServer, count: int) -> list[dict[str, Any]]:
    """Test digits the served model gets right with confidence, of distinct labels, 1s last.

    A '1' is a single stroke that almost anything resembles; other digits prove more.
    """
    page = requests.get(server.url + "/samples", params={"split": "test", "limit": 100}, timeout=30).json()
    confident = [s for s in page["samples"] if s["predicted"] == s["label"] and s["probability"] > 0.9]
    chosen: dict[int, dict[str, Any]] = {}
    for sample in sorted(confident, key=lambda s: s["label"] == 1):
        chosen.setdefault(sample["label"], sample)
    assert len(chosen) >= count, f"the quick model is confident on too few digits: {sorted(chosen)}"
    return list(chosen.values())[:count]


def draw_pixels(page: Any, pixels: list[list[int]]) -> None:
    """Draws an MNIST digit on the pad with the mouse: one stroke per run of bright pixels in each row."""
    box = page.locator("#pad").bounding_box()
    cell = box["width"] / len(pixels)

    def at(row: int, col: float) -> tuple[float, float]:
        return box["x"] + (col + 0.5) * cell, box["y"] + (row + 0.5) * cell

    for row, values in enumerate(pixels):
        col = 0
        while col < len(values):
            if values[col] < 128:
                col += 1
                continue
            start = col
            while col < len(values) and values[col] >= 128:
                col += 1
            page.mouse.move(*at(row, start))
            page.mouse.down()
            page.mouse.move(*at(row, col - 1), steps=2)
            page.mouse.up()


def predicted_label(page: Any) -> int:
    page.wait_for_selector("#result:not([hidden])")
    return int(page.inner_text("#result-label"))


def predict_with(page: Any, action: Callable[[], None]) -> int:
    """Runs `action` (a click, a tap, an upload) and returns the label from the /predict it triggers."""
    with page.expect_response(lambda response: response.url.endswith("/predict")):
        action()
    # The status line reads "Asking the model…" until the answer is drawn, then empties.
    wait_js(page, "document.getElementById('predict-status').textContent === ''")
    return predicted_label(page)


def shown_probabilities(page: Any) -> list[float]:
    texts = page.eval_on_selector_all("#probabilities .bar-value", "values => values.map(v => v.textContent)")
    return [float(text.rstrip("%")) / 100 for text in texts]


def test_gallery_shows_real_mnist_labels_pages_and_filters(served, visit, mnist):
    seen = visit(served)
    page = seen.page
    wait_for_first_tile(page, 0)
    first = tiles(page)
    assert [t["index"] for t in first] == list(range(PAGE_SIZE))
    assert [t["label"] for t in first] == mnist["y_test"][:PAGE_SIZE].tolist()
    # The predictions are the server's, and wrong ones are marked (by class and by text).
    api = requests.get(served.url + "/samples", params={"split": "test", "limit": PAGE_SIZE}, timeout=30).json()
    assert [t["predicted"] for t in first] == [s["predicted"] for s in api["samples"]]
    assert all(t["wrong"] == (t["predicted"] != t["label"]) for t in first)
    assert page.locator(".tile.wrong .verdict").all_inner_texts() == ["✗ wrong"] * sum(t["wrong"] for t in first)
    assert "Label 7" in page.locator(".tile").first.inner_text()
    # Every tile's picture arrives, at MNIST's own 28x28.
    wait_js(page, "[...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth === 28)")
    assert page.inner_text("#page-info") == "1\N{EN DASH}15 of 10,000"

    page.click("#next-page")
    wait_for_first_tile(page, PAGE_SIZE)
    second = tiles(page)
    assert [t["index"] for t in second] == list(range(PAGE_SIZE, 2 * PAGE_SIZE))
    assert [t["label"] for t in second] == mnist["y_test"][PAGE_SIZE: 2 * PAGE_SIZE].tolist()
    page.click("#prev-page")
    wait_for_first_tile(page, 0)

    page.check("input[name=split][value=train]")
    wait_js(page, "document.querySelector('#page-info').textContent.endsWith('of 60,000')")
    assert [t["label"] for t in tiles(page)] == mnist["y_train"][:PAGE_SIZE].tolist()

    page.check("input[name=split][value=test]")
    page.check("#wrong-only")
    wait_js(page, "document.querySelectorAll('.tile').length > 0 && "
                           "[...document.querySelectorAll('.tile')].every(t => t.classList.contains('wrong'))")
    wrong = tiles(page)
    assert all(t["predicted"] != t["label"] for t in wrong)
    assert all(t["label"] == mnist["y_test"][t["index"]] for t in wrong)
    seen.assert_clean()


def test_a_test_digit_drawn_with_the_mouse_is_predicted_as_its_label(served, visit):
    sample = correct_samples(served, 1)[0]
    pixels = requests.get(served.url + sample["pixels_url"], timeout=30).json()["pixels"]
    seen = visit(served)
    page = seen.page
    wait_for_first_tile(page, 0)
    draw_pixels(page, pixels)
    assert predict_with(page, lambda: page.click("#predict-button")) == sample["label"], f"test digit {sample['index']}"
    probabilities = shown_probabilities(page)
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 0.02
    assert max(range(10), key=probabilities.__getitem__) == sample["label"]
    assert page.locator("#probabilities .bar.best").get_attribute("data-digit") == str(sample["label"])
    # The answer names the version and the recipe that gave it (the quick model is the seed recipe's).
    assert "(model version 1, seed recipe)" in page.inner_text("#result-detail")
    assert page.get_attribute("#result", "data-recipe") == "seed"
    seen.screenshot("web-desktop.png")

    # Black ink on white: the pad is inverted, the server un-inverts it, the answer stands.
    page.click("#ink-button")
    assert page.get_attribute("#ink-button", "aria-pressed") == "true"
    assert predict_with(page, lambda: page.click("#predict-button")) == sample["label"]

    page.click("#clear-button")
    assert page.is_hidden("#result")
    seen.assert_clean()


def test_uploaded_png_of_a_test_digit_is_predicted(served, visit, tmp_path):
    # The second pick: a different digit from the drawing test.
    sample = correct_samples(served, 2)[1]
    png = requests.get(served.url + sample["image_url"], params={"scale": 10}, timeout=30)
    assert png.headers["content-type"] == "image/png"
    path = tmp_path / f"digit-{sample['index']}.png"
    path.write_bytes(png.content)
    seen = visit(served)
    page = seen.page
    assert predict_with(page, lambda: page.set_input_files("#upload", str(path))) == sample["label"]
    assert path.name in page.inner_text("#result-detail")
    seen.assert_clean()


def test_model_card_shows_the_served_version_and_its_metadata(served, visit, trained_home):
    metadata = json.loads((trained_home / MODEL_NAME / "1" / METADATA_FILE).read_text())
    seen = visit(served)
    page = seen.page
    page.wait_for_selector("#fact-served-version")
    assert page.inner_text("#header-version") == "1"
    assert page.inner_text("#fact-served-version").startswith("1")
    assert page.inner_text("#fact-test-accuracy") == f"{metadata['test_accuracy'] * 100:.1f}%"
    assert page.inner_text("#fact-recipe") == metadata["recipe"] == "seed"
    # The confusion matrix is the metadata's, cell by cell.
    cells = page.eval_on_selector_all(
        "#confusion tbody tr",
        "rows => rows.map(r => [...r.querySelectorAll('td:not(.accuracy)')].map(c => +c.textContent))",
    )
    assert cells == metadata["confusion_matrix"]
    # At 1280 px the whole matrix fits its card: no column (the last is "accuracy") hidden behind a scroll bar.
    assert page.viewport_size["width"] == 1280
    hidden = page.eval_on_selector(".table-scroll:has(#confusion)", "box => box.scrollWidth - box.clientWidth")
    assert hidden <= 0, f"the confusion matrix is {hidden} px wider than its box"
    last = page.locator("#confusion thead th").last
    card = page.locator(".model-card").bounding_box()
    assert last.inner_text() == "accuracy"
    assert last.bounding_box()["x"] + last.bounding_box()["width"] <= card["x"] + card["width"]
    # Two learning-curve charts, one dot per epoch for each of training and validation.
    epochs = len(metadata["history"])
    assert page.locator("svg.line-chart").count() == 2
    assert page.locator("svg.line-chart circle").count() == 2 * 2 * epochs
    assert page.locator("#versions tbody tr[data-version='1']").inner_text().endswith("serving")
    seen.assert_clean()


def test_page_is_usable_with_the_keyboard(served, visit):
    seen = visit(served)
    page = seen.page
    wait_for_first_tile(page, 0)
    reached = []
    for _ in range(25):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.name || ''"))
    for control in ("predict-button", "clear-button", "ink-button", "upload", "split", "wrong-only", "next-page"):
        assert control in reached, f"{control} cannot be reached with Tab (reached: {reached})"
    page.focus("#predict-button")
    page.keyboard.press("Enter")  # nothing drawn yet: the page says so instead of guessing
    assert "Draw a digit first" in page.inner_text("#predict-status")
    # "Try it" on a tile predicts that sample: the predictor without drawing.
    first_tile = tiles(page)[0]
    page.focus(".tile:first-child button.try")
    assert predict_with(page, lambda: page.keyboard.press("Enter")) == first_tile["predicted"]
    assert "test-0.png" in page.inner_text("#result-detail")
    page.focus("#wrong-only")
    page.keyboard.press("Space")
    wait_js(page, "[...document.querySelectorAll('.tile')].every(t => t.classList.contains('wrong'))")
    page.focus("#next-page")
    before = tiles(page)[0]["index"]
    page.keyboard.press("Enter")
    wait_js(page, f"+document.querySelector('.tile').dataset.index > {before}")
    seen.assert_clean()


def test_touch_drawing_on_a_phone_sized_screen(served, visit):
    seen = visit(served, viewport=PHONE, has_touch=True, is_mobile=True, device_scale_factor=2)
    page = seen.page
    wait_for_first_tile(page, 0)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the page scrolls sideways"
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    # Real touch input through the DevTools protocol: Chromium turns it into pointer events.
    cdp = page.context.new_cdp_session(page)
    x = box["x"] + box["width"] / 2
    points = [(x, box["y"] + box["height"] * (0.15 + 0.7 * step / 10)) for step in range(11)]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": points[0][1]}]})
    # Paced like a finger (about 60 moves a second, resting before it lifts): moves sent all at
    # once read as a fling, and Chromium then takes the next tap as "stop the fling", not a click.
    for px, py in points[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": px, "y": py}]})
        page.wait_for_timeout(16)
    page.wait_for_timeout(150)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    inked = page.evaluate(
        """() => { const pad = document.getElementById('pad');
                   const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
                   let n = 0; for (let i = 0; i < data.length; i += 4) if (data[i] > 128) n++; return n; }"""
    )
    assert inked > 1000, "the touch stroke left no ink on the pad"
    assert predict_with(page, lambda: page.tap("#predict-button")) == 1  # a vertical stroke
    seen.screenshot("web-phone.png")
    seen.assert_clean()


def test_page_shows_a_newly_published_version(home_copy, start_server, visit):
    server = start_server(home_copy)
    seen = visit(server)
    page = seen.page
    page.wait_for_selector("#versions tbody tr[data-version='1']")
    assert page.inner_text("#header-version") == "1"
    wait_for_first_tile(page, 0)
    predict_with(page, lambda: page.click(".tile:first-child button.try"))
    assert "(model version 1, seed recipe)" in page.inner_text("#result-detail")
    # Version 2 says the improved recipe made it (MODEL_RECIPE, in its metadata.json).
    assert publish_copy(home_copy, recipe="improved", created=datetime.now(UTC).isoformat(timespec="seconds")) == 2
    # The server reloads within RELOAD_INTERVAL and the page polls /models every few seconds.
    wait_js(page, "document.getElementById('header-version').textContent === '2'", timeout_ms=30_000)
    assert page.inner_text("#fact-served-version").startswith("2")
    assert page.inner_text("#fact-recipe") == "improved"
    assert page.locator("#versions tbody tr").count() == 2
    assert page.locator("#versions tbody tr[data-version='2']").inner_text().endswith("serving")
    assert "Now serving version 2" in page.inner_text("#model-status")
    # Each answer names the recipe of the version that gave it: the same sample, now from version 2.
    predict_with(page, lambda: page.click(".tile:first-child button.try"))
    assert "(model version 2, improved recipe)" in page.inner_text("#result-detail")
    assert page.get_attribute("#result", "data-recipe") == "improved"
    seen.assert_clean()


def test_page_asks_for_the_token_when_the_server_wants_one(trained_home, start_server, visit):
    server = start_server(trained_home, AUTH_TOKEN="web-page-secret")
    seen = visit(server)
    page = seen.page
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 40, steps=8)
    page.mouse.up()
    page.click("#predict-button")
    page.wait_for_selector("#token-form:not([hidden])")
    page.fill("#token-input", "web-page-secret")
    page.click("#token-form button[type=submit]")
    predicted_label(page)
    assert page.evaluate("sessionStorage.getItem('mnist-api-token')") == "web-page-secret"
    assert page.is_hidden("#token-form")
    # 401s are expected here (the page learns it needs a token from them), so errors are not checked.
    outside = [url for url in seen.requested if not url.startswith((server.url + "/", "data:", "blob:"))]
    assert not outside

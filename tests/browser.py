"""Headless Chromium (Debian's package) driven by Playwright: a page opened from disk with the
network off, waited on until the map's first paint, with every request and error it made."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium")
# WebGL without a GPU: Chromium's software renderer (SwiftShader)
ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None. In CI a missing browser is a failure."""
    if CHROMIUM:
        return None
    if os.environ.get("CI"):
        raise RuntimeError(
            "chromium is not installed in CI: `make test` installs it (`make browser`)"
        )
    return "chromium is not installed (Debian: apt-get install chromium; `make test` does it)"


@dataclass
class Page:
    page: object
    first_paint_ms: float
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def screenshot(self) -> np.ndarray:
        """The viewport as an RGB array (rows, cols, 3)."""
        import io

        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.page.screenshot())).convert("RGB"))

    def project(self, lon: float, lat: float) -> tuple[float, float]:
        """Screen position (CSS px) of a point, by the map's own viewport."""
        return tuple(self.page.evaluate(f"aefDeck.getViewports()[0].project([{lon}, {lat}])"))


@contextmanager
def chromium():
    """A headless Chromium (one Playwright session per thread: open the pages inside it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_map(
    browser,
    path: Path,
    width: int = 1200,
    height: int = 800,
    offline: bool = True,
    timeout_s: float = 120,
    route=None,
):
    """Open the HTML file at `path` in a fresh context and wait for its first paint
    (window.aefFirstPaint). route: optional Playwright handler for every http(s) request."""
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=1, offline=offline
    )
    try:
        if route is not None:
            context.route("http*://**/*", route)
        page = context.new_page()
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(path).resolve().as_uri())
        page.wait_for_function(
            "window.aefFirstPaint !== null && window.aefFirstPaint !== undefined",
            timeout=timeout_s * 1000,
        )
        yield Page(page, page.evaluate("window.aefFirstPaint"), requests, errors)
    finally:
        context.close()

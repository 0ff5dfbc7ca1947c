"""What the browser test modules share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from accelscope.dashboard.server import CHROMIUM


def require_browser() -> None:
    """Skip the calling test module, at import, unless Debian's chromium, Playwright and the
    dashboard extra are all there (``make test`` installs them; as root it installs chromium)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: the browser tests need Debian's chromium", allow_module_level=True)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not importable (pip install playwright)", allow_module_level=True)
    pytest.importorskip("dash", reason="the dashboard extra is not installed")


OVERVIEW_READY = "() => { const e = document.getElementById('overview-steps'); return e && e.textContent.trim() !== '…'; }"


@contextlib.contextmanager
def open_dashboard(app, ready: str | None = OVERVIEW_READY, viewport: dict | None = None, timeout_ms: int = 60_000, wait_until: str = "networkidle") -> Iterator[Any]:
    """Serve a dashboard app and open it in headless Chromium; yield the page once it has
    loaded (``wait_until``) and the ``ready`` function holds. The page's script errors
    collect in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    from accelscope.dashboard.server import CHROMIUM_ARGS, background_server

    with background_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport=viewport or {"width": 1400, "height": 900})
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.goto(url, wait_until=wait_until, timeout=timeout_ms)
            if ready is not None:
                page.wait_for_function(ready, timeout=timeout_ms)
            yield page
        finally:
            browser.close()

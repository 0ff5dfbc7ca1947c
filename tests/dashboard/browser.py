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


def panel_px(pg, graph_id: str, x_ms: float) -> tuple[float, float]:
    """Page coordinates of time ``x_ms`` in the middle of the first panel of the plotly
    figure in ``#graph_id`` (a section on the timeline's time axis)."""
    return tuple(pg.evaluate(
        f"() => {{ const gd = document.querySelector('#{graph_id} .js-plotly-plot'); const r = gd.getBoundingClientRect();"
        f" const fl = gd._fullLayout; return [r.left + fl.xaxis._offset + fl.xaxis.l2p({x_ms}),"
        f" r.top + fl.yaxis._offset + fl.yaxis._length / 2]; }}"))


def drag_zoom(pg, graph_id: str, start_ms: float, end_ms: float) -> None:
    """Drag the mouse across ``#graph_id``'s first panel from ``start_ms`` to ``end_ms``
    (scrolled into view first: mouse events only reach what is on screen)."""
    pg.eval_on_selector(f"#{graph_id}", "e => e.scrollIntoView({block: 'center'})")
    (xa, y), (xb, _) = panel_px(pg, graph_id, start_ms), panel_px(pg, graph_id, end_ms)
    pg.mouse.move(xa, y)
    pg.mouse.down()
    pg.mouse.move(xb, y, steps=8)
    pg.mouse.up()

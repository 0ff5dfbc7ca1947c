"""The page while a large run's first view is prepared: what it shows, then that it goes."""

from __future__ import annotations

import threading

import pytest

from tests.dashboard.browser import open_dashboard, require_browser

pytestmark = pytest.mark.browser
require_browser()

from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.timeline import view as tv  # noqa: E402

TIMEOUT_MS = 60_000


def test_a_slow_first_view_shows_its_progress_until_the_timeline_is_drawn(monkeypatch, fresh_run):
    release = threading.Event()
    real = tv.build_lane_layout

    def slow(*args, **kwargs):
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(tv, "build_lane_layout", slow)  # a lane layout that takes as long as the test needs
    app = create_app([fresh_run])
    app._accelscope.sections["timeline"].progress_after_s = 0.0
    shows = "() => (document.getElementById('load-progress') || {}).textContent || ''"
    try:
        with open_dashboard(app, ready=f"() => ({shows})().includes('laying out the lanes …')", wait_until="domcontentloaded") as page:
            text = page.evaluate(shows)
            assert text.startswith(f"Preparing {fresh_run.name} (") and "reading the events ✓" in text
            release.set()
            page.wait_for_function("() => { const g = document.querySelector('#timeline-graph .js-plotly-plot'); return g && g.data && g.data.length; }", timeout=TIMEOUT_MS)
            page.wait_for_function(f"() => ({shows})() === ''", timeout=TIMEOUT_MS)
            assert page.errors == []
    finally:
        release.set()

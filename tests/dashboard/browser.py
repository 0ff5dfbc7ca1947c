"""What the browser test modules share."""

from __future__ import annotations

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

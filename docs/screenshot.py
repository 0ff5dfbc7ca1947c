"""Take a screenshot of the accelscope dashboard (the image in the README).

    python docs/screenshot.py [RUN] [-o docs/dashboard.png]

Without RUN it first records a fresh demo run (the input-bound demo CNN, 30 steps) into a
temporary directory. The dashboard is served on 127.0.0.1 from a background thread and
loaded in headless Chromium through Playwright; the full page is saved once every graph
has drawn.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from accelscope.dashboard.server import CHROMIUM, CHROMIUM_ARGS

GRAPHS = ("step-graph", "timeline-graph", "metrics-graph")


def wait_for_dashboard(page, timeout_ms: int = 60_000) -> None:
    """Wait until the overview is filled in and every graph has drawn its plot."""
    page.wait_for_function(
        "() => { const e = document.getElementById('overview-steps'); return e && e.textContent.trim() !== '…'; }",
        timeout=timeout_ms,
    )
    for gid in GRAPHS:
        page.wait_for_function(
            f"""() => {{
                const g = document.querySelector('#{gid} .js-plotly-plot');
                return g && g._fullLayout && g.querySelector('.main-svg');
            }}""",
            timeout=timeout_ms,
        )
    page.wait_for_timeout(800)  # WebGL traces draw on the next animation frames


def screenshot(run: Path, out: Path, width: int = 1440, height: int = 900, scale: float = 1.0) -> Path:
    from playwright.sync_api import sync_playwright

    from accelscope.dashboard.app import create_app
    from accelscope.dashboard.server import background_server

    app = create_app([run])
    out.parent.mkdir(parents=True, exist_ok=True)
    with background_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=scale)
            page.goto(url, wait_until="networkidle")
            wait_for_dashboard(page)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="run directory (default: record a fresh demo run)")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parent / "dashboard.png")
    parser.add_argument("--steps", type=int, default=30, help="steps of the demo run recorded when RUN is omitted")
    parser.add_argument("--width", type=int, default=1440)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"screenshot: {CHROMIUM} not found (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="accelscope-shot-") as tmp:
        run = args.run
        if run is None:
            from accelscope.demo import run_demo

            print(f"recording a demo run ({args.steps} steps)...", flush=True)
            run = run_demo(tmp, steps=args.steps, progress=False)
        out = screenshot(run, args.output, width=args.width)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

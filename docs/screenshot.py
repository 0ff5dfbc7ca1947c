"""Take the dashboard screenshots in the README and docs/dashboard.md.

    python docs/screenshot.py [RUN ...] [--nw0 TRACE] [-o docs]

Without RUN it first records two demo runs into a temporary directory: the input-bound
demo CNN (0 DataLoader workers, the default loader delay) and the same with 2 workers, so
the Compare section has something to compare. Writes into the output directory:

* ``dashboard.png``: the top of the page (overview and timeline), as a user first sees it;
* ``screenshots/<section>.png``: each section of the page on the first run (overview,
  timeline, device-and-host-metrics, kernels-and-ops, steps, compare);
* ``screenshots/timeline-gpu.png``: with ``--nw0`` (default: the real V100 ResNet-50 trace
  in ../shared when present), that trace imported, its timeline zoomed to 1 ms of the
  backward pass, where launch -> kernel arrows and every kernel are drawn;
* ``screenshots/memory.png``: with ``--memory`` (default: HTA's df_index_resolver trace in
  ../shared, five training iterations on one GPU with allocator addresses), its Memory
  section, the peak clicked (what was live then) and hovered (else nw0's, without a click);
* ``screenshots/ranks.png``: the Ranks section of a multi-rank run: ``--ranks RUN``, or by
  default a real 3-rank torchrun DDP job (gloo, this CPU) whose rank 2's loader sleeps
  30 ms a step (``tests/jobs/launch.LOADER_3``), recorded into the temporary directory.

The dashboard is served on 127.0.0.1 from a background thread and loaded in headless
Chromium through Playwright; each image is taken once the data it shows has arrived.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from accelscope.dashboard.server import CHROMIUM, CHROMIUM_ARGS

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("ACCELSCOPE_SHARED", HERE.parent.parent / "shared"))
NW0 = SHARED / "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
MEMORY = SHARED / "traces/HolisticTraceAnalysis/tests/data/df_index_resolver/df_index_resolver.json.gz"
GRAPHS = ("step-graph", "timeline-graph", "metrics-graph", "steps-graph")
SECTIONS = ("overview", "timeline", "device-and-host-metrics", "kernels-and-ops", "steps", "compare")
TIMEOUT_MS = 120_000


def wait_for_dashboard(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the overview is filled in, every graph has drawn and the grids hold rows."""
    page.wait_for_function(
        "() => { const e = document.getElementById('overview-steps'); return e && e.textContent.trim() !== '…'; }",
        timeout=timeout_ms,
    )
    page.wait_for_selector("#ops-table .ag-row", state="attached", timeout=timeout_ms)  # the sections below the timeline arrive after it
    page.wait_for_selector("#steps-table .ag-row", state="attached", timeout=timeout_ms)
    for gid in GRAPHS:
        page.wait_for_function(
            f"""() => {{
                const g = document.querySelector('#{gid} .js-plotly-plot');
                return g && g._fullLayout && g.querySelector('.main-svg') && ((g.data || []).length > 0 || (g.layout.annotations || []).length > 0);
            }}""",
            timeout=timeout_ms,
        )
    page.wait_for_timeout(500)


def _pick_compare_run(page, label: str) -> None:
    page.click("#compare-select")
    page.get_by_role("option", name=label, exact=True).click()
    page.wait_for_selector("#compare-table .ag-row", state="attached", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)


def _zoom_timeline(page, start_ms: float, end_ms: float) -> None:
    page.evaluate(
        """([a, b]) => new Promise(resolve => {
            const gd = document.querySelector('#timeline-graph .js-plotly-plot');
            const before = gd.data;
            const done = () => { if (gd.data !== before) { gd.removeListener('plotly_afterplot', done); resolve(); } };
            gd.on('plotly_afterplot', done);
            Plotly.relayout(gd, {'xaxis.range': [a, b]});
        })""",
        [start_ms, end_ms],
    )
    page.wait_for_timeout(500)


@contextlib.contextmanager
def _dashboard_page(runs: list[Path], width: int, height: int) -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page showing the dashboard of ``runs`` once its data has arrived,
    and the runs' labels."""
    from playwright.sync_api import sync_playwright

    from accelscope.dashboard.app import create_app
    from accelscope.dashboard.server import background_server

    app = create_app(runs)
    with background_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            wait_for_dashboard(page)
            yield page, [v.label for v in app._accelscope.views]
        finally:
            browser.close()


def _section(page, name: str, path: Path) -> Path | None:
    el = page.query_selector(f"#section-{name}")
    if el is None:
        return None
    el.scroll_into_view_if_needed()
    el.screenshot(path=str(path))
    return path


def screenshots(runs: list[Path], out: Path, nw0_run: Path | None = None, width: int = 1440, height: int = 1000,
                ranks_run: Path | None = None, memory_run: Path | None = None) -> list[Path]:
    written: list[Path] = []
    (out / "screenshots").mkdir(parents=True, exist_ok=True)
    with _dashboard_page(runs, width, height) as (page, labels):
        if len(runs) > 1:
            _pick_compare_run(page, labels[1])
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(out / "dashboard.png"))
        written.append(out / "dashboard.png")
        written += [p for name in SECTIONS if (p := _section(page, name, out / "screenshots" / f"{name}.png"))]
    if ranks_run is not None:
        with _dashboard_page([ranks_run], width, height) as (page, _):
            page.wait_for_selector("#ranks-table", state="attached", timeout=TIMEOUT_MS)
            written += [p for p in [_section(page, "ranks", out / "screenshots" / "ranks.png")] if p]
    if nw0_run is not None:
        written += nw0_screenshots(nw0_run, out, width, height, memory=memory_run is None)
    if memory_run is not None:
        written += memory_screenshot(memory_run, out, width, height)
    return written


def _hover_peak(page) -> tuple[float, float]:
    """Move the mouse onto the first device's peak marker (its hover text shows); where it is."""
    page.eval_on_selector("#section-memory", "e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    peak = page.evaluate("""() => { const gd = document.querySelector('#memory-graph .js-plotly-plot'), fl = gd._fullLayout, r = gd.getBoundingClientRect();
        const t = gd.data.find(d => d.meta.role === 'peak');
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[0]), r.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[0])]; }""")
    page.mouse.move(*peak)
    page.wait_for_timeout(500)
    return peak


def memory_screenshot(run: Path, out: Path, width: int = 1440, height: int = 1000) -> list[Path]:
    """A run's Memory section with its first peak clicked (what was live then, beneath the
    curves) and hovered."""
    with _dashboard_page([run], width, height) as (page, _):
        page.wait_for_function("() => { const g = document.querySelector('#memory-graph .js-plotly-plot'); return g && (g.data || []).length > 0; }",
                               timeout=TIMEOUT_MS)
        page.wait_for_selector("#memory-ops-table .ag-row", state="attached", timeout=TIMEOUT_MS)
        page.mouse.click(*_hover_peak(page))
        page.wait_for_selector("#memory-live table", timeout=TIMEOUT_MS)
        _hover_peak(page)
        return [p for p in [_section(page, "memory", out / "screenshots" / "memory.png")] if p]


def nw0_screenshots(nw0_run: Path, out: Path, width: int = 1440, height: int = 1000, memory: bool = True) -> list[Path]:
    """The imported V100 trace's Memory section (the whole run; unless ``memory`` is False), then its timeline zoomed."""
    with _dashboard_page([nw0_run], width, height) as (page, _):
        written = []
        if memory:
            page.wait_for_function("() => { const g = document.querySelector('#memory-graph .js-plotly-plot'); return g && (g.data || []).length > 0; }",
                                   timeout=TIMEOUT_MS)
            _hover_peak(page)  # the first device's peak, with its hover text
            written = [p for p in [_section(page, "memory", out / "screenshots" / "memory.png")] if p]
        page.mouse.move(0, 0)
        _zoom_timeline(page, 826.0, 827.0)  # a forward pass, its kernels starting right after their launches
        return written + [p for p in [_section(page, "timeline", out / "screenshots" / "timeline-gpu.png")] if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (default: record two demo runs)")
    parser.add_argument("-o", "--output", type=Path, default=HERE, help="where dashboard.png and screenshots/ go (default: docs/)")
    parser.add_argument("--nw0", type=Path, default=NW0 if NW0.exists() else None, help="a Kineto trace to import for the GPU timeline image")
    parser.add_argument("--memory", type=Path, default=MEMORY if MEMORY.exists() else None, help="a trace with allocator addresses to import for the Memory image")
    parser.add_argument("--ranks", type=Path, default=None, help="a multi-rank run for the Ranks image (default: record a 3-rank torchrun job)")
    parser.add_argument("--steps", type=int, default=30, help="steps of each demo run recorded when RUN is omitted")
    parser.add_argument("--width", type=int, default=1440)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"screenshot: {CHROMIUM} not found (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="accelscope-shot-") as tmp:
        runs = list(args.runs)
        if not runs:
            from accelscope.demo import run_demo

            print(f"recording two demo runs ({args.steps} steps each: 0 and 2 DataLoader workers)...", flush=True)
            runs = [
                run_demo(Path(tmp) / "demo", steps=args.steps, workers=0, name="workers-0", progress=False),
                run_demo(Path(tmp) / "demo", steps=args.steps, workers=2, name="workers-2", progress=False),
            ]
        nw0_run = None
        if args.nw0 is not None:
            from accelscope.traces.importer import import_traces

            print(f"importing {args.nw0.name}...", flush=True)
            nw0_run = import_traces([args.nw0], Path(tmp) / "nw0", progress=False)
        memory_run = None
        if args.memory is not None:
            from accelscope.traces.importer import import_traces

            print(f"importing {args.memory.name}...", flush=True)
            memory_run = import_traces([args.memory], Path(tmp) / "memory", progress=False)
        ranks_run = args.ranks
        if ranks_run is None:
            sys.path.insert(0, str(HERE.parent))
            from tests.jobs.launch import LOADER_3, torchrun

            print("recording a 3-rank torchrun job (rank 2's loader sleeps 30 ms a step)...", flush=True)
            torchrun(Path(tmp), LOADER_3[0], *LOADER_3[1:])
            ranks_run = Path(tmp) / "ddp"
        for path in screenshots(runs, args.output, nw0_run, width=args.width, ranks_run=ranks_run, memory_run=memory_run):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

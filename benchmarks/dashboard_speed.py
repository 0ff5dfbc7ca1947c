"""How fast the dashboard's timeline is in a real browser on a 1M-event run, against the
dashboard before server-side level of detail, measured in the same run of this script.

The trace is the nw0 ResNet-50 trace scaled in time with shared/tools/scale_trace.py to
``--events`` trace events, imported once with ``accelscope import``; both are cached under
``--cache-dir`` (default ~/.cache/accelscope-bench; never under ../shared). For each
dashboard (this one, then the baseline) the app is created fresh, served in-process
(``dashboard.server.background_server``) and driven by headless Chromium (Playwright):

* first render: from navigation start (the page's ``performance.timeOrigin``) until the
  timeline graph holds the whole-run figure and the browser has painted it (two
  animation frames after plotly's ``afterplot``). The server starts cold: the run's
  analysis and timeline are computed by that first request;
* zoom round trip: ``Plotly.relayout`` of the x range, as a drag-zoom does, until the
  server's figure for that window is drawn (afterplot with new data, then two frames);
  windows of 1/10, 1/100, ... of the run around its middle, then a reset to the whole run;
* bytes per update: the body size of each ``_dash-update-component`` response (the first
  render's one response carries every figure and table of the page).

Targets (issue 6): first render <= 3 s, zoom round trip <= 1 s, update <= 2 MB.

The baseline is the dashboard of commit ``--baseline-rev`` (default 2538e65, the last one
before level of detail: the longest 3000 slices per lane, each drawn with up to 400 hover
points per row), loaded from git into a temporary package and measured the same way on
the same run. ``--no-baseline`` skips it.

    python benchmarks/dashboard_speed.py [--events 1000000] [--zooms 5] [--rounds 3] [--no-baseline]
    python benchmarks/dashboard_speed.py --events 10000000 --no-baseline   # the 10M check
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACCELSCOPE_SHARED", REPO.parent / "shared"))
NW0 = SHARED / "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
SCALE_TOOL = SHARED / "tools/scale_trace.py"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "accelscope-bench"
BASELINE_REV = "2538e65"
TARGETS = {"first_render_s": 3.0, "zoom_s": 1.0, "update_mb": 2.0}
VIEWPORT = {"width": 1440, "height": 1000}
TIMEOUT_MS = 300_000


# -- inputs ------------------------------------------------------------------------------
def cached_run(events: int, cache: Path) -> Path:
    """The scaled trace and its imported run, built once and reused."""
    cache = cache.resolve()
    if cache == SHARED.resolve() or SHARED.resolve() in cache.parents:
        raise SystemExit(f"refusing to write into {SHARED}")
    cache.mkdir(parents=True, exist_ok=True)
    trace = cache / f"nw0x{events}.json"
    run = cache / f"run-nw0x{events}"
    if not trace.exists():
        print(f"scaling nw0 to {events:,} events into {trace} ...", flush=True)
        t0 = time.perf_counter()
        tmp = trace.with_suffix(".json.part")
        subprocess.run([sys.executable, str(SCALE_TOOL), str(NW0), str(tmp), "--events", str(events)], check=True)
        tmp.rename(trace)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    if not (run / "meta.json").exists():
        print(f"importing {trace.name} into {run} ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "accelscope", "import", str(trace), "-o", str(run), "--force"], check=True)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def baseline_package(rev: str, work: Path) -> str | None:
    """The dashboard of ``rev`` as an importable package of its own; None when git cannot give it."""
    name = "accelscope_dashboard_baseline"
    pkg = work / name
    pkg.mkdir(parents=True, exist_ok=True)
    for module in ("__init__", "data", "figures", "app", "server"):
        res = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:dashboard/{module}.py"], capture_output=True, text=True)
        if res.returncode:
            print(f"baseline: cannot read dashboard/{module}.py at {rev}: {res.stderr.strip()}")
            return None
        (pkg / f"{module}.py").write_text(res.stdout.replace("accelscope.dashboard", name))
    sys.path.insert(0, str(work))
    return name


# -- browser -----------------------------------------------------------------------------
FIRST_DRAWN = """
() => {
    const gd = document.querySelector('#timeline-graph .js-plotly-plot');
    if (!gd || !gd._fullLayout || !gd.data || !gd.data.length || !gd.layout.title) return false;
    if (!String(gd.layout.title.text || '').includes('in the run')) return false;
    return performance.now();
}
"""

# Resolves with the ms from the relayout call until the server's figure for it was drawn.
ZOOM = """
([update]) => new Promise((resolve, reject) => {
    const gd = document.querySelector('#timeline-graph .js-plotly-plot');
    const before = gd.data;
    const t0 = performance.now();
    const timer = setTimeout(() => reject(new Error('no new figure within 120 s')), 120000);
    const onAfter = () => {
        if (gd.data === before) return;
        gd.removeListener('plotly_afterplot', onAfter);
        clearTimeout(timer);
        requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
    };
    gd.on('plotly_afterplot', onAfter);
    Plotly.relayout(gd, update);
})
"""

TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"


def zoom_centre_ms(run: Path) -> float:
    """A busy instant to zoom around: 60 % into the middle step (its backward pass), in ms since the run's start."""
    import polars as pl

    from accelscope.dashboard.runs import RunView
    from accelscope.traces.run import Run

    view = RunView(Run.open(run), "bench")
    steps = view.slices.filter(pl.col("kind") == "step").sort("start_ns")
    mid = steps.row(steps.height // 2, named=True)
    return (mid["start_ns"] + 0.6 * mid["dur_ns"] - view.origin_ns) / 1e6


def first_render(page, url: str) -> tuple[float, float]:
    """(ms from navigation start until the whole-run timeline holds data, ... until it is painted)."""
    page.goto(url, timeout=TIMEOUT_MS)
    drawn_ms = page.wait_for_function(FIRST_DRAWN, polling="raf", timeout=TIMEOUT_MS).json_value()
    return drawn_ms, page.evaluate(TWO_FRAMES)


def measure(app_module: str, run: Path, zooms: int, label: str, centre_ms: float, prepare: bool = False) -> dict[str, Any]:
    """First render, zoom round trips and update sizes of one dashboard, from a fresh app.

    ``prepare``: create the app as ``accelscope dashboard`` does (the first run's analysis and
    timeline start computing in the background at once) and open the page straight away.
    """
    from playwright.sync_api import sync_playwright

    from accelscope.dashboard.server import CHROMIUM, CHROMIUM_ARGS, background_server

    mod = importlib.import_module(f"{app_module}.app")
    t0 = time.perf_counter()
    app = mod.create_app([run], prepare=True) if prepare else mod.create_app([run])
    create_s = time.perf_counter() - t0
    responses: list[tuple[str, Any]] = []
    out: dict[str, Any] = {"label": label, "create_app_s": create_s}
    with background_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            def on_response(resp) -> None:
                if urlparse(resp.url).path.endswith("/_dash-update-component"):
                    responses.append((phase[0], resp))

            phase = ["first render"]
            page.on("response", on_response)
            drawn_ms, painted_ms = first_render(page, url)
            out["first_render_s"] = painted_ms / 1000
            out["first_data_s"] = drawn_ms / 1000
            out["title"] = page.evaluate("() => document.querySelector('#timeline-graph .js-plotly-plot').layout.title.text")
            end_ms = page.evaluate("() => document.querySelector('#timeline-graph .js-plotly-plot')._fullLayout.xaxis.range[1]")
            page.wait_for_timeout(500)  # let the other callbacks of the first load settle
            mid = centre_ms
            zoom_ms: list[tuple[str, float]] = []
            for k in range(1, zooms + 1):
                half = end_ms / 10**k / 2
                phase[0] = f"zoom 1/{10**k}"
                ms = page.evaluate(ZOOM, [{"xaxis.range[0]": mid - half, "xaxis.range[1]": mid + half}])
                zoom_ms.append((f"{2 * half:,.3f} ms window", ms))
                page.wait_for_timeout(200)
            phase[0] = "reset"
            ms = page.evaluate(ZOOM, [{"xaxis.autorange": True}])
            zoom_ms.append(("reset to the whole run", ms))
            page.wait_for_timeout(300)
            out["zooms"] = zoom_ms
            out["errors"] = errors
            sizes = []
            for what, resp in responses:
                resp.finished()
                size = resp.request.sizes()["responseBodySize"]  # bytes on the wire (no compression here)
                post = resp.request.post_data or ""
                output = json.loads(post).get("output", "") if post.startswith("{") else ""
                sizes.append((what, output, int(size)))
            out["updates"] = sizes
            # The same page loaded again: the server answers from memory, so this is the browser's own share.
            again = browser.new_page(viewport=VIEWPORT)
            out["reload_render_s"] = first_render(again, url)[1] / 1000
            again.close()
            board = getattr(app, "_accelscope", None)
            # The whole-run timeline's builder: the Timeline section's (since its restructuring) or the board's.
            owner = board.sections["timeline"] if board is not None and hasattr(board, "sections") else board
            attr = "whole" if owner is not None and hasattr(owner, "whole") else "whole_timeline"
            if owner is not None and hasattr(owner, attr):
                # The floor: the same page with a two-point timeline (Dash, plotly.js, the grids, the other graphs).
                import plotly.graph_objects as go

                tiny = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]), layout=dict(title=dict(text="in the run"), height=400))
                setattr(owner, attr, lambda *args, **kwargs: tiny)
                floor = browser.new_page(viewport=VIEWPORT)
                out["floor_render_s"] = first_render(floor, url)[1] / 1000
                floor.close()
        finally:
            browser.close()
    return out


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (each a fresh app and page); update sizes are the same every round."""
    out = dict(rounds[-1])
    out["rounds"] = len(rounds)
    for key in ("first_render_s", "first_data_s", "reload_render_s", "prepared_first_render_s", "floor_render_s"):
        values = [r[key] for r in rounds if key in r]
        if values:
            out[key] = statistics.median(values)
            out[key + "_all"] = values
    out["zooms"] = [(what, statistics.median(r["zooms"][i][1] for r in rounds)) for i, (what, _) in enumerate(rounds[-1]["zooms"])]
    out["zooms_max"] = [max(r["zooms"][i][1] for r in rounds) for i in range(len(rounds[-1]["zooms"]))]
    out["errors"] = [e for r in rounds for e in r["errors"]]
    return out


# -- report ------------------------------------------------------------------------------
def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def report(res: dict[str, Any], base: dict[str, Any] | None) -> None:
    print(f"\n== {res['label']}")
    print(f"  timeline title: {res['title'].replace('<br>', ' / ')[:200]}")
    print(f"  medians of {res['rounds']} rounds (each a fresh app and page; all values in brackets)")

    def spread(key: str) -> str:
        return "[" + ", ".join(f"{v:.2f}" for v in res.get(key + "_all", [])) + "]"

    fr = res["first_render_s"]
    print(f"  first render, cold server (navigation start -> timeline painted)  {fr:6.2f} s {spread('first_render_s')}   target <= {TARGETS['first_render_s']} s: {verdict(fr, TARGETS['first_render_s'])}"
          + (f"   baseline {base['first_render_s']:.2f} s, ratio baseline/this {base['first_render_s'] / fr:.2f}x" if base else ""))
    if "prepared_first_render_s" in res:
        pr = res["prepared_first_render_s"]
        print(f"  first render, served as `accelscope dashboard` does (analysis started at launch)  {pr:6.2f} s {spread('prepared_first_render_s')}   target <= {TARGETS['first_render_s']} s: {verdict(pr, TARGETS['first_render_s'])}")
    rl = res["reload_render_s"]
    print(f"  the same page loaded again (server answers from memory: the browser's share)  {rl:6.2f} s {spread('reload_render_s')}"
          + (f"   baseline {base['reload_render_s']:.2f} s" if base else ""))
    if "floor_render_s" in res:
        print(f"  the same page with a two-point timeline instead (the page's own floor)  {res['floor_render_s']:6.2f} s {spread('floor_render_s')}")
    zs = [ms / 1000 for _, ms in res["zooms"]]
    for i, (what, ms) in enumerate(res["zooms"]):
        b = base["zooms"][i][1] / 1000 if base and i < len(base["zooms"]) else None
        print(f"  zoom round trip, {what:28s} {ms / 1000:6.3f} s (max {res['zooms_max'][i] / 1000:.3f})   target <= {TARGETS['zoom_s']} s: {verdict(ms / 1000, TARGETS['zoom_s'])}"
              + (f"   baseline {b:.3f} s ({b / (ms / 1000):.2f}x)" if b else ""))
    print(f"  zoom round trip, median {statistics.median(zs):.3f} s, max {max(zs):.3f} s")
    mb = [(what, out, n / 2**20) for what, out, n in res["updates"]]
    for what, out, size in mb:
        if "timeline-graph.figure" in out:
            kind = "timeline figure"
        elif out.startswith(".."):
            kind = "page (all but the timeline)"
        else:
            kind = out.split("@")[0][:40]
        print(f"  update {what:16s} {kind:28s} {size:7.3f} MiB   target <= {TARGETS['update_mb']} MB: {verdict(size * 2**20 / 1e6, TARGETS['update_mb'])}")
    biggest = max((s for _, _, s in mb), default=0.0)
    zoom_sizes = [s for w, o, s in mb if w.startswith("zoom") and o.startswith("timeline-graph.figure")]
    line = f"  largest update {biggest:.3f} MiB; zoom updates median {statistics.median(zoom_sizes) if zoom_sizes else 0:.3f} MiB"
    if base:
        b_big = max((n / 2**20 for _, _, n in base["updates"]), default=0.0)
        line += f"; baseline largest {b_big:.3f} MiB ({b_big / biggest if biggest else 0:.1f}x)"
    print(line)
    if res["errors"]:
        print(f"  page errors: {res['errors']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="trace events of the scaled trace (default 1M)")
    ap.add_argument("--zooms", type=int, default=5, help="zoom levels: windows of 1/10 ... 1/10**N of the run")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="fresh apps and pages per dashboard; medians are reported")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    if not NW0.exists():
        raise SystemExit(f"{NW0} not found (set ACCELSCOPE_SHARED)")
    run = cached_run(args.events, args.cache_dir)
    centre = zoom_centre_ms(run)
    print(f"zooming around {centre:,.1f} ms (60 % into the middle step)", flush=True)
    results = {"events": args.events, "run": str(run), "zoom_centre_ms": centre}
    label = f"this dashboard (level of detail), {args.events:,}-event trace"
    ours_rounds, base_rounds = [], []
    with tempfile.TemporaryDirectory(prefix="accelscope-baseline-") as tmp:
        name = None if args.no_baseline else baseline_package(args.baseline_rev, Path(tmp))
        for r in range(args.rounds):  # interleaved, so drifts of this shared machine hit both alike
            print(f"round {r + 1}/{args.rounds}", flush=True)
            res = measure("accelscope.dashboard", run, args.zooms, label, centre)
            res["prepared_first_render_s"] = measure("accelscope.dashboard", run, 0, "prepared", centre, prepare=True)["first_render_s"]
            ours_rounds.append(res)
            if name is not None:
                try:
                    base_rounds.append(measure(name, run, args.zooms, f"baseline: dashboard at {args.baseline_rev} (longest 3000 per lane)", centre))
                except Exception as exc:  # the baseline is for comparison only
                    print(f"baseline not measured: {type(exc).__name__}: {exc}")
                    name = None
    ours = combine(ours_rounds)
    base = combine(base_rounds) if base_rounds else None
    results["ours"], results["baseline"] = ours_rounds, base_rounds
    report(ours, base)
    if base:
        report(base, None)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

"""The Dash application: ``create_app(run_paths)`` and ``serve(run_paths)``.

The app serves exactly the runs it was given. The browser picks a run by its index in
that list; nothing the browser sends ever reaches the filesystem. Each run is analysed
and its figures built once, on first view, then served from memory.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from accelscope.dashboard.sections import layout_sections
from accelscope.dashboard.sections import register as register_sections
from accelscope.dashboard.data import RunView, run_labels
from accelscope.dashboard.figures import TIME_MARGIN
from accelscope.dashboard.formatting import GRID_PERSISTENCE
from accelscope.dashboard.plotlyjs import ASSETS
from accelscope.dashboard.devices_view import table_rows
from accelscope.dashboard.lod import DEFAULT_WIDTH_PX, MIN_WIDTH_PX, clamp_width_px
from accelscope.errors import require
from accelscope.traces import schema as S
from accelscope.traces.run import Run

VERDICT_CLASS = {"high": "verdict-high", "moderate": "verdict-moderate", "none": "verdict-none", None: "verdict-unknown"}

INDEX_STRING = """<!DOCTYPE html>
<html lang="en">
<head>
{%metas%}
<title>{%title%}</title>
{%favicon%}
{%css%}
<style>
  :root { --ink:#1f2430; --muted:#6b7280; --line:#e3e6eb; --bg:#f4f5f7; --card:#ffffff; --accent:#3b5b8c; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--ink);
         font-family: Inter, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; font-size:14px; }
  .topbar { background:#1f2a3c; color:#fff; padding:14px 32px; display:flex; align-items:center; gap:24px; }
  .brand { font-size:20px; font-weight:700; letter-spacing:0.2px; }
  .brand span { color:#9fb6d9; font-weight:400; font-size:14px; margin-left:10px; }
  .run-picker { margin-left:auto; display:flex; align-items:center; gap:10px; min-width:380px; }
  .run-picker label { color:#c7d2e3; font-size:13px; }
  .run-picker .dash-dropdown, .run-picker #run-select { flex:1; min-width:320px; color:var(--ink); }
  .page { max-width:1440px; margin:0 auto; padding:20px 32px 40px; }
  .run-info { color:var(--muted); font-size:13px; margin:0 0 16px; }
  .run-info b { color:var(--ink); font-size:15px; margin-right:8px; }
  .section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 20px 10px; margin-bottom:20px;
             box-shadow:0 1px 2px rgba(16,24,40,0.04); }
  .section h2 { margin:0 0 2px; font-size:16px; font-weight:650; }
  .section .sub { color:var(--muted); font-size:12.5px; margin:0 0 10px; }
  .cards { display:grid; grid-template-columns: repeat(4, 1fr); gap:14px; margin:8px 0 14px; }
  .card { border:1px solid var(--line); border-radius:8px; padding:12px 16px; background:#fbfbfc; border-top:4px solid #cfd6e0; }
  .card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:0.6px; }
  .card .value { font-size:28px; font-weight:650; margin-top:4px; font-variant-numeric: tabular-nums; }
  .card .caption { color:var(--muted); font-size:12px; margin-top:2px; }
  .card.verdict-high { border-top-color:#C62828; } .verdict-high .value { color:#C62828; }
  .card.verdict-moderate { border-top-color:#E08E0B; } .verdict-moderate .value { color:#B86E00; }
  .card.verdict-none { border-top-color:#2E7D32; } .verdict-none .value { color:#2E7D32; }
  .card.verdict-unknown .value { color:var(--muted); }
  .card.verdict-high .value, .card.verdict-moderate .value, .card.verdict-none .value { font-size:22px; padding-top:5px; }
  .findings { display:grid; grid-template-columns: 1fr 1fr; gap:14px; margin-top:6px; padding-bottom:8px; }
  .findings h3 { font-size:13px; margin:0 0 4px; color:var(--muted); text-transform:uppercase; letter-spacing:0.6px; font-weight:600; }
  .findings ul { margin:0; padding-left:18px; line-height:1.5; }
  .findings .none { color:var(--muted); }
  .recommendations li { color:#7a2e0e; }
  .live-badge:not(:empty) { display:inline-block; margin:-8px 0 14px; padding:3px 10px; border-radius:12px; background:#fdecec; color:#C62828; font-size:12.5px; font-weight:600; }
  .devices h3 { font-size:13px; margin:4px 0 2px; color:var(--muted); text-transform:uppercase; letter-spacing:0.6px; font-weight:600; }
  .device-table { border-collapse:collapse; font-size:13px; margin:6px 0 8px; width:100%; }
  .device-table th { text-align:left; color:var(--muted); font-weight:600; font-size:12px; padding:3px 14px 3px 0; border-bottom:1px solid var(--line); }
  .device-table td { padding:4px 14px 4px 0; border-bottom:1px solid #eef0f3; font-variant-numeric:tabular-nums; }
  .device-table td.busy { position:relative; min-width:120px; }
  .device-table .busy-bar { position:absolute; left:0; top:5px; bottom:5px; background:#dbe6f3; border-radius:3px; z-index:0; }
  .device-table td.busy span:last-child { position:relative; z-index:1; padding-left:6px; font-weight:600; }
  /* A toast at the bottom of the window, over the page: showing and hiding it moves nothing (no graph resizes). */
  .load-progress:not(:empty) { position:fixed; left:50%; bottom:18px; transform:translateX(-50%); z-index:1000; max-width:90vw;
         padding:9px 16px; border-radius:8px; background:#eef2f8; color:#3b5b8c; font-size:13px; border:1px solid #cfd9e8;
         box-shadow:0 4px 14px rgba(16,24,40,0.16); }
  .load-progress .stage-running { font-weight:600; } .load-progress .stage-failed { color:#C62828; font-weight:600; }
  .compare-picker { display:flex; align-items:center; gap:10px; max-width:560px; margin:4px 0 10px; }
  .compare-picker label { color:var(--muted); font-size:13px; white-space:nowrap; }
  .compare-picker > div { flex:1; }
  .ag-theme-alpine .step-outlier { background:#fdecec !important; }
  .ag-theme-alpine .step-warmup { color:#8a8f98; }
  #timeline-details { border-top:1px solid var(--line); margin-top:6px; padding:10px 4px 6px; min-height:48px; }
  .details-hint { color:var(--muted); font-size:12.5px; margin:0; }
  .details-head { margin-bottom:6px; }
  .details-kind { display:inline-block; background:#eef2f8; color:var(--accent); border-radius:4px; padding:1px 7px; font-size:12px; margin-right:8px; }
  .details-title { font-weight:600; word-break:break-all; }
  .details-rows { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; margin:0 0 6px; font-size:13px; }
  .details-rows dt { color:var(--muted); } .details-rows dd { margin:0; font-variant-numeric:tabular-nums; }
  .details-table { border-collapse:collapse; font-size:12.5px; margin-bottom:4px; }
  .details-table th, .details-table td { text-align:left; padding:2px 14px 2px 0; border-bottom:1px solid #eef0f3; }
</style>
</head>
<body>
{%app_entry%}
<footer>{%config%}
<script>window.__accelscopeNative = [String.prototype.trim, window.parseInt, window.parseFloat];</script>
{%scripts%}
<script>
  /* Dash's Babel polyfill swaps in a regex String.prototype.trim and a parseInt/parseFloat wrapper
     (its feature test rejects U+180E, which Unicode no longer counts as whitespace); plotly.js
     parses every colour with them. The browser's own are correct and much faster. */
  (function (n) { String.prototype.trim = n[0]; window.parseInt = Number.parseInt = n[1]; window.parseFloat = Number.parseFloat = n[2]; })(window.__accelscopeNative);
</script>
{%renderer%}</footer>
</body>
</html>"""


FIGURES = ("step", "timeline", "metrics")
# Whole-run timelines are built per graph width rounded to this, and this many widths kept per run.
WIDTH_STEP_PX = 20
WHOLE_TIMELINES_KEPT = 4
TIME_MARGIN_PX = TIME_MARGIN["l"] + TIME_MARGIN["r"]  # the timeline's plot area is the graph less these


class Dashboard:
    """The runs an app serves, with their per-run caches. Index ``i`` is the ``i``-th path given."""

    PROGRESS_AFTER_S = 1.0  # a first view that takes longer than this shows its progress

    def __init__(self, run_paths: Sequence[str | Path]):
        paths = [Path(p) for p in run_paths]
        if not paths:
            raise ValueError("the dashboard needs at least one run directory")
        runs = [Run.open(p) for p in paths]  # RunFormatError, one line, for the CLI to print
        self.views = [RunView(run, label) for run, label in zip(runs, run_labels(paths))]
        self._figures: dict[tuple[int, str], Any] = {}
        self._locks = {(i, name): threading.Lock() for i in range(len(self.views)) for name in FIGURES}
        self._prepare_lock = threading.Lock()
        self._prepared: set[int] = set()
        self._requested: dict[int, float] = {}  # run -> when the page last asked for its timeline (monotonic s)
        self._failed: dict[int, str] = {}  # run -> why its whole-run timeline could not be built

    def index(self, value: Any) -> int | None:
        """The run index a browser value names, or None when it names none of ours."""
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if 0 <= value < len(self.views) else None

    def figure(self, index: int, name: str) -> Any:
        """One of a run's figures ("step", "timeline", "metrics"), built once."""
        from accelscope.dashboard import figures as F

        if name == "timeline":
            return self.whole_timeline(index)
        key = (index, name)
        with self._locks[key]:
            if key not in self._figures:
                view = self.views[index]
                if name == "step":
                    self._figures[key] = F.step_figure(view.step_bars)
                else:
                    self._figures[key] = F.metrics_figure(view.metrics, (0.0, max(view.end_ms, 1e-3)))
            return self._figures[key]

    def whole_timeline(self, index: int, width_px: Any = None) -> Any:
        """The whole run's timeline figure for a graph about ``width_px`` wide (default 1600),
        built once per width (widths rounded to 20 px; the last few kept)."""
        from accelscope.dashboard import figures as F

        width = DEFAULT_WIDTH_PX if width_px is None else max(clamp_width_px(width_px) // WIDTH_STEP_PX * WIDTH_STEP_PX, MIN_WIDTH_PX)
        key = (index, "timeline", width)
        with self._locks[(index, "timeline")]:
            if key not in self._figures:
                view = self.views[index]
                try:
                    view.prepare(width)
                    tl = view.timeline_window(0.0, view.end_ms, width)
                    fig = F.timeline_figure(tl, uirevision=f"run-{index}")
                except Exception as exc:  # for loading_status: the page stops waiting and says why
                    self._failed[index] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    raise
                self._failed.pop(index, None)
                widths = [k for k in list(self._figures) if k[:2] == (index, "timeline")]
                for old in widths[: max(len(widths) - WHOLE_TIMELINES_KEPT + 1, 0)]:
                    del self._figures[old]
                self._figures[key] = fig
            return self._figures[key]

    def figures(self, index: int) -> dict[str, Any]:
        """All three figures of a run."""
        return {name: self.figure(index, name) for name in FIGURES}

    def prepare_in_background(self, index: int = 0) -> threading.Thread | None:
        """Start computing a run's figures now, so the first page load finds them ready or under
        way; once per run (None when already started)."""
        with self._prepare_lock:
            if index in self._prepared:
                return None
            self._prepared.add(index)

        def work() -> None:
            try:
                # Everything but the timeline's marks, which wait for the width the page will ask for.
                self.views[index].prepare(None)
                self.figure(index, "step")
            except Exception:  # the page's own request will compute it again and report the error
                logging.getLogger("accelscope").exception("preparing the dashboard's first run failed")

        thread = threading.Thread(target=work, name="accelscope-dashboard-prepare", daemon=True)
        thread.start()
        return thread

    def timeline(self, value: Any, width_px: Any = None) -> tuple[Any, dict[str, str]]:
        """The whole-run timeline of a run (the page's second callback) for a graph
        ``width_px`` wide, and the graph's style: as tall as the figure (lanes and panels),
        which zooms never change."""
        index = self.index(value)
        if index is None:
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        fig = self.whole_timeline(index, width_px)
        return fig, {"height": f"{int(fig.layout.height or 450)}px"}

    def timeline_request(self, request: Any) -> tuple[Any, dict[str, str]]:
        """``timeline`` for the browser's request store: {"run": index, "width_px": plot width}."""
        if not isinstance(request, dict):
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        index = self.index(request.get("run"))
        if index is not None:
            self._requested[index] = time.monotonic()
            self._failed.pop(index, None)  # an earlier failure is not this request's
        return self.timeline(request.get("run"), request.get("width_px"))

    def zoom(self, relayout: Any, value: Any, width_px: Any = None):
        """The timeline for the x range the browser zoomed to (the whole run on reset),
        with the level of detail of a graph ``width_px`` pixels wide (clamped; default 1600).

        Only three numbers from the browser are used: the bounds of a time window and a width.
        """
        dash = require("dash", "dashboard", "accelscope dashboard")
        index = self.index(value)
        if index is None or not isinstance(relayout, dict):
            raise dash.exceptions.PreventUpdate
        # The lanes' x axis, or a panel's (x2, x3) that matches it: whichever the browser names.
        axis = next((a for a in ("xaxis", "xaxis2", "xaxis3") if any(k.startswith(a + ".") for k in relayout)), "xaxis")
        if relayout.get(f"{axis}.autorange") is True:
            return self.whole_timeline(index, width_px)
        bounds = relayout.get(f"{axis}.range")
        if not (isinstance(bounds, list) and len(bounds) == 2):
            bounds = [relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bounds) or bounds[1] <= bounds[0]:
            raise dash.exceptions.PreventUpdate
        from accelscope.dashboard.figures import timeline_figure

        view = self.views[index]
        if bounds[0] <= 0.0 and bounds[1] >= view.end_ms:
            return self.whole_timeline(index, width_px)
        return timeline_figure(view.timeline_window(float(bounds[0]), float(bounds[1]), width_px), uirevision=f"run-{index}")

    def zoom_view(self, view_data: Any, value: Any):
        """``zoom`` for the browser's store: {"relayout": relayoutData, "width_px": plot width}."""
        if not isinstance(view_data, dict):
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        return self.zoom(view_data.get("relayout"), value, view_data.get("width_px"))

    def details(self, click: Any, value: Any):
        """The panel under the timeline for a clicked mark (clickData), or a hint."""
        html = require("dash.html", "dashboard", "accelscope dashboard")
        index = self.index(value)
        custom = None
        if isinstance(click, dict) and isinstance(click.get("points"), list) and click["points"]:
            point = click["points"][0]
            if isinstance(point, dict):
                custom = parse_click_id(point.get("hovertext"))
        d = self.views[index].details(custom) if index is not None else None
        if d is None:
            return html.P("Click a slice, a merged mark or an idle gap on the timeline (or a point of the latency plot) to see its details here.", className="details-hint")
        return render_details(d)

    def render(self, value: Any) -> tuple:
        """The run's header and Overview section, in the order of ``OUTPUTS``.

        The page loads in three callbacks, in the order a reader meets them: this one, the
        timeline (``timeline``, computed at the same time), then the sections below it
        (``render_rest``), asked for only once the timeline is painted, so the browser draws
        the timeline first rather than after the tables.
        """
        index = self.index(value)
        if index is None:
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        html = require("dash.html", "dashboard", "accelscope dashboard")
        view = self.views[index]
        ov = view.overview
        info = [html.B(view.label)] + [html.Span(" · " + item if i else item) for i, item in enumerate(view.info)]
        notes = [html.Li(n) for n in ov.notes] or [html.Li("none", className="none")]
        recs = [html.Li(r) for r in ov.recommendations] or [html.Li("none: input is not the bottleneck", className="none")]
        warm = view.step_bars.warmup
        steps_caption = "step 0 counted as warm-up" if any(warm) else "training steps recorded"
        return (
            info,
            ov.steps_text,
            steps_caption,
            ov.mean_step_text,
            ov.input_share_text,
            ov.verdict_text,
            f"card {VERDICT_CLASS[ov.verdict]}",
            notes,
            recs,
            device_table(view),
            self.figure(index, "step"),
        )

    def render_rest(self, request: Any) -> tuple:
        """The sections below the timeline (``REST_OUTPUTS``) for the browser's rest-request
        store: {"run": index, "n": which timeline request it follows}."""
        index = self.index(request.get("run")) if isinstance(request, dict) else None
        if index is None:
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        html = require("dash.html", "dashboard", "accelscope dashboard")
        view = self.views[index]
        kernels = view.name_table([S.KERNEL, S.MEMCPY, S.MEMSET])
        ops = view.name_table([S.CPU_OP])

        def grid(table_id: str, rows: list, none: str):
            return _table(table_id, rows) if rows else html.P(none, id=f"{table_id}-none", className="details-hint")

        return (
            self.figure(index, "metrics"),
            grid("kernels-table", kernels, "No device work (kernels, copies, memsets) was recorded in this run."),
            grid("ops-table", ops, "No host ops were recorded in this run (light mode records steps and input waits only)."),
        )

    def forget_requests(self, index: int) -> None:
        """Drop what the page's earlier timeline requests of a run left (it was reloaded)."""
        self._requested.pop(index, None)
        self._failed.pop(index, None)

    def loading_status(self, _n: Any, value: Any) -> tuple[Any, bool]:
        """While the page waits for a run's whole-run timeline: what is being done, and for
        how long, once the wait passes ``PROGRESS_AFTER_S``; and whether to stop polling (the
        timeline is built, or building it failed, which the line then says)."""
        index = self.index(value)
        if index is None:
            return "", True
        if any(k[:2] == (index, "timeline") for k in list(self._figures)):
            return "", True
        failed = self._failed.get(index)
        requested = self._requested.get(index)
        if failed is None and (requested is None or time.monotonic() - requested < self.PROGRESS_AFTER_S):
            return "", False
        html = require("dash.html", "dashboard", "accelscope dashboard")
        view = self.views[index]
        slices = view.slice_count()
        head = f"Preparing {view.label}" + (f" ({slices:,} slices)" if slices is not None else "") + ": "
        children: list[Any] = [head]
        for st in view.progress():
            # A failed stage is retried by the next request for it; only a failed timeline stops the wait.
            mark = {"done": "✓", "running": "…", "failed": "✗"}[st.state]
            children += [" · "] if len(children) > 1 else []
            children.append(html.Span(f"{st.label} {mark} {st.seconds:.1f} s", className=f"stage stage-{st.state}"))
        if failed is not None:
            children += [" · "] if len(children) > 1 else []
            children.append(html.Span(f"failed: {failed}", className="stage stage-failed"))
        return children, failed is not None


# relayoutData -> {"relayout": ..., "width_px": plot-area width}; nothing for changes that are not zooms.
CLIENT_VIEW = """
function(relayout) {
    const nope = window.dash_clientside.no_update;
    if (!relayout || !Object.keys(relayout).some(k => k.startsWith('xaxis'))) { return nope; }
    const gd = document.querySelector('#timeline-graph .js-plotly-plot');
    const size = gd && gd._fullLayout && gd._fullLayout._size;
    return {relayout: relayout, width_px: size ? Math.round(size.w) : null};
}
"""

# run-select -> {"run": index, "width_px": the width the plot area will have (the graph less its
# margins), "n": a number new for each request (a live reload asks for the same run again)}.
CLIENT_REQUEST = f"""
function(run) {{
    const el = document.getElementById('timeline-graph');
    const w = el ? el.getBoundingClientRect().width - {TIME_MARGIN_PX} : null;
    window._accelscopeRequests = (window._accelscopeRequests || 0) + 1;
    return {{run: run, width_px: w && w > 0 ? Math.round(w) : null, n: window._accelscopeRequests}};
}}
"""

# A new whole-run timeline (not a zoom of it) -> {"run", "n"} two frames later, once it is painted,
# which asks for the sections below it. A timeline that fails still lets them load, after REST_WAIT_MS.
REST_WAIT_MS = 4000
CLIENT_REST = f"""
function(figure, request, last) {{
    const nope = window.dash_clientside.no_update;
    if (!request || (last && last.n === request.n)) {{ return nope; }}
    const triggered = (window.dash_clientside.callback_context.triggered || []).map(t => t.prop_id);
    const drawn = triggered.some(id => id.startsWith('timeline-graph.'));
    return new Promise(resolve => {{
        const done = () => resolve({{run: request.run, n: request.n}});
        if (drawn) {{ requestAnimationFrame(() => requestAnimationFrame(done)); }} else {{ setTimeout(done, {REST_WAIT_MS}); }}
    }});
}}
"""

# Timeline and metrics share their time range: a zoom or pan of either moves the other
# (the timeline's own callback then redraws it for the new range). Each side is moved only when
# its range differs, which ends the echo of the relayout it causes.
CLIENT_SYNC = """
function(timelineRelayout, metricsRelayout) {
    const nope = window.dash_clientside.no_update;
    const tl = document.querySelector('#timeline-graph .js-plotly-plot');
    const mx = document.querySelector('#metrics-graph .js-plotly-plot');
    if (!tl || !mx || !tl._fullLayout || !mx._fullLayout || !mx._fullLayout.xaxis || !tl._fullLayout.xaxis) { return nope; }
    const whole = mx.layout.meta && mx.layout.meta.x_range;
    if (!whole) { return nope; }
    const same = (a, b) => Math.abs(a[0] - b[0]) + Math.abs(a[1] - b[1]) <= 1e-9 * Math.max(Math.abs(b[1] - b[0]), 1e-9);
    const fromTimeline = (window.dash_clientside.callback_context.triggered || []).some(t => t.prop_id.startsWith('timeline-graph.'));
    if (fromTimeline) {
        const rel = timelineRelayout || {};
        const reset = Object.keys(rel).some(k => k.endsWith('.autorange') && rel[k]);
        const range = reset ? whole : tl._fullLayout.xaxis.range;
        if (!same(mx._fullLayout.xaxis.range, range)) { Plotly.relayout(mx, {'xaxis.range': range.slice()}); }
    } else {
        const rel = metricsRelayout || {};
        const reset = Object.keys(rel).some(k => k.endsWith('.autorange') && rel[k]);
        if (reset) { Plotly.relayout(mx, {'xaxis.range': whole.slice()}); }  // the whole run, not the samples' extent
        const range = reset ? whole : mx._fullLayout.xaxis.range;
        if (same(range, whole)) {
            const tlWhole = tl._fullLayout.xaxis.autorange || same(tl._fullLayout.xaxis.range, whole);
            if (!tlWhole) { Plotly.relayout(tl, {'xaxis.autorange': true}); }
        } else if (!same(tl._fullLayout.xaxis.range, range)) {
            Plotly.relayout(tl, {'xaxis.range': range.slice()});
        }
    }
    return nope;
}
"""

OUTPUTS = (
    ("run-info", "children"),
    ("overview-steps", "children"),
    ("overview-steps-caption", "children"),
    ("overview-mean-step", "children"),
    ("overview-input-share", "children"),
    ("overview-verdict", "children"),
    ("overview-verdict-card", "className"),
    ("overview-notes", "children"),
    ("overview-recommendations", "children"),
    ("overview-devices", "children"),
    ("step-graph", "figure"),
)
# The grids are sent with their rows rather than placed in the first layout: creating an
# AG Grid costs the browser ~0.15 s, which would otherwise delay the timeline's first draw.
REST_OUTPUTS = (
    ("metrics-graph", "figure"),
    ("kernels-table-box", "children"),
    ("ops-table-box", "children"),
)
TABLE_PX = 740
PROGRESS_POLL_MS = 500
TABLE_COLUMNS = [
    ("name", "name", "text"),
    ("kind", "kind", "text"),
    ("count", "count", "numeric"),
    ("total_ms", "total ms", "numeric"),
    ("mean_us", "mean µs", "numeric"),
    ("max_us", "max µs", "numeric"),
    ("share_pct", "% of step time", "numeric"),
]


def device_table(view: RunView) -> Any:
    """The Overview's utilisation summary: per device, how busy, why idle, its streams and counters."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    report = view.report
    if report is None or report.devices.height == 0:
        return html.P("No steps were analysed, so there is no utilisation to summarise.", className="details-hint")
    has_device = report.has_device
    headers, rows, rest = table_rows(report.devices, has_device)
    body = []
    for share, cells in zip(report.devices["busy_share"].to_list(), rows):
        pct = 0.0 if share is None else max(0.0, min(100.0, 100 * share))
        busy = html.Td([html.Span(className="busy-bar", style={"width": f"{pct:.1f}%"}), html.Span(cells[1])], className="busy")
        body.append(html.Tr([html.Td(cells[0]), busy, *[html.Td(c) for c in cells[2:]]]))
    table = html.Table([html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(body)], className="device-table")
    what = "each device's busy share of step time (kernels, copies, memsets; each instant once)" if has_device else \
        "no device work was traced: the training thread's busy share of step time (busy whenever it is not waiting)"
    return [html.H3("Utilisation per device"), html.P(what, className="details-hint"), table, *([html.P(rest, className="details-hint")] if rest else [])]


def parse_click_id(text: Any) -> list[int] | None:
    """"category,first,last" (figures.click_ids) as three ints; None for anything else."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    parts = text.split(",")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def render_details(d) -> Any:
    """A Details (data.py) as HTML: a title, label/value pairs, and a table when it has one."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    children = [
        html.Div([html.Span(d.kind, className="details-kind"), html.Span(d.title, className="details-title")], className="details-head"),
        html.Dl([item for label, value in d.rows for item in (html.Dt(label), html.Dd(value))], className="details-rows"),
    ]
    if d.table:
        head = html.Thead(html.Tr([html.Th(h) for h in d.table_header]))
        body = html.Tbody([html.Tr([html.Td(c) for c in row]) for row in d.table])
        children.append(html.Table([head, body], className="details-table"))
    return html.Div(children, className="details-body")


def grid_box(box_id: str, height_px: int) -> Any:
    """Where a grid will go once its rows arrive, holding its place meanwhile."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    return html.Div(html.Div("loading…", className="details-hint", style={"height": f"{height_px}px"}), id=box_id)


def _table(table_id: str, rows: list[dict[str, Any]]):
    """A sortable, filterable grid of ``rows`` (AG Grid: Dash's DataTable is deprecated)."""
    dag = require("dash_ag_grid", "dashboard", "accelscope dashboard")
    columns = []
    for cid, name, typ in TABLE_COLUMNS:
        col = {"field": cid, "headerName": name, "filter": "agNumberColumnFilter" if typ == "numeric" else "agTextColumnFilter"}
        if cid == "name":
            col.update(flex=3, minWidth=320, tooltipField="name")
        else:
            col.update(flex=1, minWidth=90, type="numericColumn" if typ == "numeric" else None)
        columns.append({k: v for k, v in col.items() if v is not None})
    return dag.AgGrid(
        id=table_id,
        columnDefs=columns,
        rowData=rows,
        defaultColDef={"sortable": True, "filter": True, "resizable": True, "floatingFilter": True},
        dashGridOptions={"pagination": True, "paginationPageSize": 20, "paginationPageSizeSelector": [20, 50, 100], "rowHeight": 30, "headerHeight": 34, "floatingFiltersHeight": 36, "tooltipShowDelay": 300, "animateRows": False},
        className="ag-theme-alpine",
        style={"height": f"{TABLE_PX}px"},
        **GRID_PERSISTENCE,
    )


def _card(label: str, value_id: str, caption: str = "", caption_id: str | None = None, card_id: str | None = None):
    html = require("dash.html", "dashboard", "accelscope dashboard")
    cap = html.Div(caption, className="caption", **({"id": caption_id} if caption_id else {}))
    return html.Div(
        [html.Div(label, className="label"), html.Div("…", id=value_id, className="value"), cap],
        className="card",
        **({"id": card_id} if card_id else {}),
    )


def _layout(board: Dashboard):
    dash = require("dash", "dashboard", "accelscope dashboard")
    from dash import dcc, html

    graph_config = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
    options = [{"label": v.label, "value": i} for i, v in enumerate(board.views)]

    def section(title: str, sub: str, *children):
        """A card with a title; its id is ``section-`` and the title in lower case, hyphenated."""
        slug = "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())
        return html.Div([html.H2(title), html.P(sub, className="sub"), *children], className="section", id=f"section-{slug}")

    def loading(*children):
        return dcc.Loading(list(children), type="dot", delay_show=400, color="#3b5b8c")

    return html.Div(
        [
            html.Div(
                [
                    html.Div(["accelscope", html.Span("why did the accelerator sit idle?")], className="brand"),
                    html.Div(
                        [
                            html.Label("Run", htmlFor="run-select"),
                            dcc.Dropdown(id="run-select", options=options, value=0, clearable=False, searchable=len(options) > 8),
                        ],
                        className="run-picker",
                    ),
                ],
                className="topbar",
            ),
            html.Div(
                [
                    html.P(id="run-info", className="run-info"),
                    html.Div(id="live-badge", className="live-badge"),
                    html.Div(id="load-progress", className="load-progress", role="status"),
                    dcc.Interval(id="progress-tick", interval=PROGRESS_POLL_MS),
                    section(
                        "Overview",
                        "Where each step's time went: device work, then what the host did while the device was idle (each instant counted once; see docs/analysis.md).",
                        html.Div(
                            [
                                _card("Steps", "overview-steps", caption_id="overview-steps-caption"),
                                _card("Mean step time", "overview-mean-step", "steady state, warm-up left out"),
                                _card("Input wait", "overview-input-share", "share of step time spent waiting for data"),
                                _card("Verdict", "overview-verdict", "input-bound at ≥5% (moderate), ≥20% (high)", card_id="overview-verdict-card"),
                            ],
                            className="cards",
                        ),
                        html.Div(id="overview-devices", className="devices"),
                        loading(dcc.Graph(id="step-graph", config=graph_config)),
                        html.Div(
                            [
                                html.Div([html.H3("Recommendations"), html.Ul(id="overview-recommendations")], className="recommendations"),
                                html.Div([html.H3("Notes"), html.Ul(id="overview-notes")]),
                            ],
                            className="findings",
                        ),
                    ),
                    section(
                        "Timeline",
                        "One lane per host thread and per device stream; nested slices stack downwards. "
                        "Shaded bands mark every other step; orange marks on a device lane are its idle gaps. "
                        "Slices shorter than a pixel are merged into lighter marks; zoom in to see them. "
                        "Beneath: how many operations each stream had queued, and how long each waited from launch to start.",
                        # Double-click autoranges (rather than "reset" to the range the last zoomed figure
                        # was drawn with), which the zoom callback answers with the whole run.
                        loading(dcc.Graph(id="timeline-graph", config={**graph_config, "scrollZoom": True, "doubleClick": "autosize"})),
                        dcc.Store(id="timeline-view"),
                        dcc.Store(id="timeline-request"),
                        dcc.Store(id="rest-request"),
                        html.Div(id="timeline-details"),
                    ),
                    section(
                        "Device and host metrics",
                        "Sampled over the run, beneath the timeline on its time axis, and zoomed with it: accelerator counters when recorded "
                        "(GPU utilisation, memory, power, temperature and clocks from NVML; TPU duty cycle and HBM from libtpu), "
                        "then CPU and memory of the training process, its children (DataLoader workers) and the whole machine.",
                        # Double-click returns to the whole run (CLIENT_SYNC), which the timeline follows.
                        loading(dcc.Graph(id="metrics-graph", config=graph_config)),
                        dcc.Store(id="time-sync"),
                    ),
                    section(
                        "Kernels and ops",
                        "Time per name over the run, longest first; click a header to sort, type in the row under it to filter. "
                        "Op times are inclusive (nested ops count in their parents too).",
                        html.H3("Device work (kernels, copies, memsets)"),
                        grid_box("kernels-table-box", TABLE_PX),
                        html.H3("Host ops"),
                        grid_box("ops-table-box", TABLE_PX),
                    ),
                    *layout_sections(board, section, loading, graph_config),
                ],
                className="page",
            ),
        ]
    )


def _import_for_first_request() -> None:
    """Import now what the first request would otherwise import, so a page load does not wait for it."""
    for name in ("plotly.graph_objects", "plotly.subplots"):
        importlib.import_module(name)
    # Callbacks create the grids; Dash refuses a component library first imported inside one.
    require("dash_ag_grid", "dashboard", "accelscope dashboard")
    # Plotly loads its template and each property's validator on first use (~0.2 s): use them once.
    from accelscope.dashboard import figures as F
    from accelscope.dashboard.data import StepBars

    F.step_figure(StepBars([0, 1], ["a", "b"], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [True, False], 2.0, [("kernel", [1.0, 1.0])]))
    F.warm_up()


def create_app(run_paths: Sequence[str | Path], prepare: bool = False):
    """A Dash app showing these run directories (raises RunFormatError for a path that is not one).

    ``prepare``: start analysing the first run right away, in a background thread (``serve`` does).
    """
    dash = require("dash", "dashboard", "accelscope dashboard")
    require("plotly", "dashboard", "accelscope dashboard")
    _import_for_first_request()
    board = Dashboard(run_paths)
    if prepare:
        board.prepare_in_background(0)
    app = dash.Dash(
        __name__,
        title="accelscope",
        update_title=None,
        assets_folder=str(ASSETS),
        serve_locally=True,
        index_string=INDEX_STRING,
        enable_mcp=False,
    )
    app.layout = _layout(board)

    # A page request starts the first run's analysis, so it runs while the browser loads the
    # page's scripts (~0.5 s) rather than after it asks for the first figure.
    def start_preparing() -> None:
        if flask.request.path == app.config.routes_pathname_prefix:
            board.prepare_in_background(0)

    flask = require("flask", "dashboard", "accelscope dashboard")
    app.server.before_request(start_preparing)
    outputs = [dash.Output(cid, prop) for cid, prop in OUTPUTS]
    app.callback(*outputs, dash.Input("run-select", "value"))(board.render)
    # The whole-run timeline is drawn for the graph's width, which only the browser knows.
    app.clientside_callback(CLIENT_REQUEST, dash.Output("timeline-request", "data"), dash.Input("run-select", "value"))
    app.callback(dash.Output("timeline-graph", "figure"), dash.Output("timeline-graph", "style"), dash.Input("timeline-request", "data"))(board.timeline_request)
    app.callback(
        dash.Output("load-progress", "children"),
        dash.Output("progress-tick", "disabled"),
        dash.Input("progress-tick", "n_intervals"),
        dash.Input("run-select", "value"),
    )(board.loading_status)
    app.clientside_callback(
        CLIENT_REST,
        dash.Output("rest-request", "data"),
        dash.Input("timeline-graph", "figure"),
        dash.Input("timeline-request", "data"),
        dash.State("rest-request", "data"),
    )
    app.callback(*[dash.Output(cid, prop) for cid, prop in REST_OUTPUTS], dash.Input("rest-request", "data"))(board.render_rest)
    # The browser adds the plot's width in pixels to each zoom, for the level of detail.
    app.clientside_callback(
        CLIENT_VIEW,
        dash.Output("timeline-view", "data"),
        dash.Input("timeline-graph", "relayoutData"),
        prevent_initial_call=True,
    )
    app.callback(
        dash.Output("timeline-graph", "figure", allow_duplicate=True),
        dash.Input("timeline-view", "data"),
        dash.State("run-select", "value"),
        prevent_initial_call=True,
    )(board.zoom_view)
    app.clientside_callback(
        CLIENT_SYNC,
        dash.Output("time-sync", "data"),
        dash.Input("timeline-graph", "relayoutData"),
        dash.Input("metrics-graph", "relayoutData"),
        prevent_initial_call=True,
    )
    app.callback(
        dash.Output("timeline-details", "children"),
        dash.Input("timeline-graph", "clickData"),
        dash.Input("run-select", "value"),
    )(board.details)
    app._accelscope_sections = register_sections(app, board)
    app._accelscope = board  # for tests and the screenshot script
    return app


def serve(run_paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8050, debug: bool = False) -> None:
    """Serve the dashboard until interrupted (Dash prints the URL; request logs are silenced)."""
    app = create_app(run_paths, prepare=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.run(host=host, port=port, debug=bool(debug), use_reloader=False, dev_tools_silence_routes_logging=True)


__all__ = ["create_app", "serve", "Dashboard"]

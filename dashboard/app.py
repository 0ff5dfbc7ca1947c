"""The Dash application: ``create_app(run_paths)`` and ``serve(run_paths)``.

The app serves exactly the runs it was given. The browser picks a run by its index in
that list; nothing the browser sends ever reaches the filesystem. Each run is analysed
and its figures built once, on first view, then served from memory.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any, Sequence

from accelscope.dashboard.data import RunView, run_labels
from accelscope.errors import require
from accelscope.traces import schema as S
from accelscope.traces.run import Run

ASSETS = Path(__file__).resolve().parent / "assets"
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
</style>
</head>
<body>
{%app_entry%}
<footer>{%config%}{%scripts%}{%renderer%}</footer>
</body>
</html>"""


class Dashboard:
    """The runs an app serves, with their per-run caches. Index ``i`` is the ``i``-th path given."""

    def __init__(self, run_paths: Sequence[str | Path]):
        paths = [Path(p) for p in run_paths]
        if not paths:
            raise ValueError("the dashboard needs at least one run directory")
        runs = [Run.open(p) for p in paths]  # RunFormatError, one line, for the CLI to print
        self.views = [RunView(run, label) for run, label in zip(runs, run_labels(paths))]
        self._figures: dict[int, dict[str, Any]] = {}
        self._locks = [threading.Lock() for _ in self.views]

    def index(self, value: Any) -> int | None:
        """The run index a browser value names, or None when it names none of ours."""
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if 0 <= value < len(self.views) else None

    def figures(self, index: int) -> dict[str, Any]:
        from accelscope.dashboard.figures import figures_for

        with self._locks[index]:
            if index not in self._figures:
                self._figures[index] = figures_for(self.views[index], uirevision=f"run-{index}")
            return self._figures[index]

    def zoom(self, relayout: Any, value: Any):
        """The timeline for the x range the browser zoomed to (the whole run on reset).

        Only two numbers from the browser are used, as bounds of a time window.
        """
        dash = require("dash", "dashboard", "accelscope dashboard")
        index = self.index(value)
        if index is None or not isinstance(relayout, dict):
            raise dash.exceptions.PreventUpdate
        if relayout.get("xaxis.autorange") is True:
            return self.figures(index)["timeline"]
        bounds = relayout.get("xaxis.range")
        if not (isinstance(bounds, list) and len(bounds) == 2):
            bounds = [relayout.get("xaxis.range[0]"), relayout.get("xaxis.range[1]")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bounds) or bounds[1] <= bounds[0]:
            raise dash.exceptions.PreventUpdate
        from accelscope.dashboard.figures import timeline_figure

        view = self.views[index]
        tl = view.timeline_window(float(bounds[0]), float(bounds[1]))
        if tl is view.timeline:
            return self.figures(index)["timeline"]
        return timeline_figure(tl, uirevision=f"run-{index}")

    def render(self, value: Any) -> tuple:
        """Everything the page shows for one run, in the order of ``OUTPUTS``."""
        index = self.index(value)
        if index is None:
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        html = require("dash.html", "dashboard", "accelscope dashboard")
        view = self.views[index]
        ov = view.overview
        figs = self.figures(index)
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
            figs["step"],
            figs["timeline"],
            figs["metrics"],
            view.name_table([S.KERNEL, S.MEMCPY, S.MEMSET]),
            view.name_table([S.CPU_OP]),
        )


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
    ("step-graph", "figure"),
    ("timeline-graph", "figure"),
    ("metrics-graph", "figure"),
    ("kernels-table", "rowData"),
    ("ops-table", "rowData"),
)
TABLE_COLUMNS = [
    ("name", "name", "text"),
    ("kind", "kind", "text"),
    ("count", "count", "numeric"),
    ("total_ms", "total ms", "numeric"),
    ("mean_us", "mean µs", "numeric"),
    ("max_us", "max µs", "numeric"),
    ("share_pct", "% of step time", "numeric"),
]


def _table(table_id: str):
    """A sortable, filterable grid (AG Grid: Dash's DataTable is deprecated)."""
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
        rowData=[],
        defaultColDef={"sortable": True, "filter": True, "resizable": True, "floatingFilter": True},
        dashGridOptions={"pagination": True, "paginationPageSize": 20, "paginationPageSizeSelector": [20, 50, 100], "rowHeight": 30, "headerHeight": 34, "floatingFiltersHeight": 36, "tooltipShowDelay": 300, "animateRows": False},
        className="ag-theme-alpine",
        style={"height": "740px"},
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
        return html.Div([html.H2(title), html.P(sub, className="sub"), *children], className="section")

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
                        "Shaded bands mark every other step. Hover a slice for its name and duration.",
                        loading(dcc.Graph(id="timeline-graph", config={**graph_config, "scrollZoom": True})),
                    ),
                    section(
                        "Kernels and ops",
                        "Time per name over the run, longest first; click a header to sort, type in the row under it to filter. "
                        "Op times are inclusive (nested ops count in their parents too).",
                        html.H3("Device work (kernels, copies, memsets)"),
                        _table("kernels-table"),
                        html.H3("Host ops"),
                        _table("ops-table"),
                    ),
                    section(
                        "Host metrics",
                        "Sampled CPU and memory use of the training process, its children (DataLoader workers) and the whole machine.",
                        loading(dcc.Graph(id="metrics-graph", config=graph_config)),
                    ),
                ],
                className="page",
            ),
        ]
    )


def create_app(run_paths: Sequence[str | Path]):
    """A Dash app showing these run directories (raises RunFormatError for a path that is not one)."""
    dash = require("dash", "dashboard", "accelscope dashboard")
    require("plotly", "dashboard", "accelscope dashboard")
    board = Dashboard(run_paths)
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
    outputs = [dash.Output(cid, prop) for cid, prop in OUTPUTS]
    app.callback(*outputs, dash.Input("run-select", "value"))(board.render)
    app.callback(
        dash.Output("timeline-graph", "figure", allow_duplicate=True),
        dash.Input("timeline-graph", "relayoutData"),
        dash.State("run-select", "value"),
        prevent_initial_call=True,
    )(board.zoom)
    app._accelscope = board  # for tests and the screenshot script
    return app


def serve(run_paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8050, debug: bool = False) -> None:
    """Serve the dashboard until interrupted (Dash prints the URL; request logs are silenced)."""
    app = create_app(run_paths)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.run(host=host, port=port, debug=bool(debug), use_reloader=False, dev_tools_silence_routes_logging=True)


__all__ = ["create_app", "serve", "Dashboard"]

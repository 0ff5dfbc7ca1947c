"""The Timeline section: every slice on its lane with the analyzer's idle gaps, the queue
depth and launch latency beneath, zoomed on the server (``timeline/``: lanes, level of
detail, gaps, details, figure), the panel for a clicked mark, and the progress line of a
first view that takes long.

It also paces the page: the browser asks for the whole-run timeline for its graph's width
("timeline-request"), and once that is painted, lets the sections below load
("rest-request", which they listen to).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from accelscope.dashboard.components import graph, loading, section
from accelscope.dashboard.theme import TIME_MARGIN
from accelscope.dashboard.timeline import view as tv
from accelscope.dashboard.timeline.figure import timeline_figure
from accelscope.dashboard.timeline.figure import warm_up as _warm_figure
from accelscope.dashboard.timeline.lod import DEFAULT_WIDTH_PX, MIN_WIDTH_PX, clamp_width_px
from accelscope.dashboard.timeline.view import ALL, MAIN
from accelscope.errors import require

NAME = "timeline"
TITLE = "Timeline"
SUB = ("One lane per device stream and per host thread; nested slices stack downwards. Shaded bands mark every other step; "
       "orange marks on a device lane are its idle gaps. Slices shorter than a pixel are merged into lighter marks; zoom in "
       "to see them. Beneath: how many operations each stream had queued, and how long each waited from launch to start.")
# Whole-run timelines are built per graph width rounded to this, and this many widths kept per run.
WIDTH_STEP_PX = 20
WHOLE_TIMELINES_KEPT = 4
TIME_MARGIN_PX = TIME_MARGIN["l"] + TIME_MARGIN["r"]  # the timeline's plot area is the graph less these
PROGRESS_AFTER_S = 1.0  # a first view that takes longer than this shows its progress
PROGRESS_POLL_MS = 500
REST_WAIT_MS = 4000  # a timeline that fails still lets the sections below load after this
HIDDEN = {"display": "none"}
HINT = "Click a slice, a merged mark or an idle gap on the timeline (or a point of the latency plot) to see its details here."


def parse_click_id(text: Any) -> list[int] | None:
    """"category,first,last" (figure.click_ids) as three ints; None for anything else."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    parts = text.split(",")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def render_details(d: Any) -> Any:
    """A ``Details`` as HTML: a title, label/value pairs, and a table when it has one."""
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


def _revision(index: int, mode: str) -> str:
    """The figure's uirevision: the browser keeps zooms within one run and lane mode."""
    return f"run-{index}" if mode == MAIN else f"run-{index}-{mode}"


class Timeline:
    """The section's server side: whole-run figures per width, zooms, clicks and progress."""

    def __init__(self, board: Any):
        self.board = board
        self.progress_after_s = PROGRESS_AFTER_S
        self._figures: dict[tuple[int, int, str], Any] = {}  # (run, width, lane mode) -> whole-run figure
        self._locks = {i: threading.Lock() for i in range(len(board.views))}
        self._requested: dict[int, float] = {}  # run -> when the page last asked for its timeline (monotonic s)
        self._failed: dict[int, str] = {}  # run -> why its whole-run timeline could not be built
        board.on_reload(self.forget)

    def forget(self, index: int) -> None:
        """Drop what was kept of a run (it was reopened)."""
        with self._locks[index]:
            for k in [k for k in self._figures if k[0] == index]:
                self._figures.pop(k, None)
        self._requested.pop(index, None)
        self._failed.pop(index, None)

    def whole(self, index: int, width_px: Any = None, mode: Any = MAIN) -> Any:
        """The whole run's timeline figure for a graph about ``width_px`` wide (default 1600)
        with host lanes and ranks ``mode`` (``timeline.view.mode_of``), built once per width
        (rounded to 20 px; the last few kept) and mode."""
        width = DEFAULT_WIDTH_PX if width_px is None else max(clamp_width_px(width_px) // WIDTH_STEP_PX * WIDTH_STEP_PX, MIN_WIDTH_PX)
        view = self.board.views[index]
        mode = tv.checked_mode(mode, view)
        key = (index, width, mode)
        with self._locks[index]:
            if key not in self._figures:
                try:
                    kept = tv.kept_whole(view, width, mode)
                    if kept is not None:  # reopened: draw it now, prepare zooms and clicks meanwhile
                        self.board.prepare_in_background(index)
                    else:
                        tv.prepare(view, width, mode)
                    fig = timeline_figure(kept or tv.window(view, 0.0, view.end_ms, width, mode), uirevision=_revision(index, mode))
                except Exception as exc:  # for loading_status: the page stops waiting and says why
                    self._failed[index] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    raise
                self._failed.pop(index, None)
                widths = [k for k in list(self._figures) if k[0] == index]
                for old in widths[: max(len(widths) - WHOLE_TIMELINES_KEPT + 1, 0)]:
                    del self._figures[old]
                self._figures[key] = fig
            return self._figures[key]

    def built(self, index: int) -> bool:
        return any(k[0] == index for k in list(self._figures))

    def request(self, request: Any) -> tuple[Any, dict[str, str]]:
        """The whole-run timeline for the browser's request store ({"run": index, "width_px":
        plot width}), and the graph's style: as tall as the figure, which zooms never change."""
        index = self.board.requested_by(request)
        self._requested[index] = time.monotonic()
        self._failed.pop(index, None)  # an earlier failure is not this request's
        fig = self.whole(index, request.get("width_px"), tv.mode_of(request.get("lanes"), request.get("ranks")))
        return fig, {"height": f"{int(fig.layout.height or 450)}px"}

    def zoom(self, relayout: Any, value: Any, width_px: Any = None, mode: Any = MAIN) -> Any:
        """The timeline for the x range the browser zoomed to (the whole run on reset), with
        the level of detail of a graph ``width_px`` pixels wide (clamped; default 1600).

        Only three numbers from the browser are used: the bounds of a time window and a width.
        """
        dash = require("dash", "dashboard", "accelscope dashboard")
        index = self.board.index(value)
        if index is None or not isinstance(relayout, dict):
            raise dash.exceptions.PreventUpdate
        # The lanes' x axis, or a panel's (x2, x3) that matches it: whichever the browser names.
        axis = next((a for a in ("xaxis", "xaxis2", "xaxis3") if any(k.startswith(a + ".") for k in relayout)), "xaxis")
        mode = tv.checked_mode(mode, self.board.views[index])
        if relayout.get(f"{axis}.autorange") is True:
            return self.whole(index, width_px, mode)
        bounds = relayout.get(f"{axis}.range")
        if not (isinstance(bounds, list) and len(bounds) == 2):
            bounds = [relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bounds) or bounds[1] <= bounds[0]:
            raise dash.exceptions.PreventUpdate
        view = self.board.views[index]
        if bounds[0] <= 0.0 and bounds[1] >= view.end_ms:
            return self.whole(index, width_px, mode)
        return timeline_figure(tv.window(view, float(bounds[0]), float(bounds[1]), width_px, mode), uirevision=_revision(index, mode))

    def zoom_view(self, view_data: Any, value: Any, lanes: Any = MAIN, ranks: Any = None) -> Any:
        """``zoom`` for the browser's store: {"relayout": relayoutData, "width_px": plot width}."""
        if not isinstance(view_data, dict):
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        return self.zoom(view_data.get("relayout"), value, view_data.get("width_px"), tv.mode_of(lanes, ranks))

    def ranks_for(self, value: Any) -> tuple[list[dict], Any, dict[str, str]]:
        """The rank picker of a run: its ranks, those a first view shows (every rank: none
        picked; a big job's first rank), hidden for a single rank."""
        index = self.board.index(value)
        if index is None:
            return [], None, HIDDEN
        view = self.board.views[index]
        ids = view.run.rank_ids()
        if len(ids) < 2:
            return [], None, HIDDEN
        default = view.default_ranks()
        return [{"label": f"rank {r}", "value": r} for r in ids], list(default) if default else None, {}

    def details(self, click: Any, value: Any, lanes: Any = MAIN, ranks: Any = None) -> Any:
        """The panel under the timeline for a clicked mark (clickData), or a hint."""
        html = require("dash.html", "dashboard", "accelscope dashboard")
        index = self.board.index(value)
        custom = None
        if isinstance(click, dict) and isinstance(click.get("points"), list) and click["points"]:
            point = click["points"][0]
            if isinstance(point, dict):
                custom = parse_click_id(point.get("hovertext"))
        d = tv.details(self.board.views[index], custom, tv.mode_of(lanes, ranks)) if index is not None else None
        if d is None:
            return html.P(HINT, className="details-hint")
        return render_details(d)

    def loading_status(self, _n: Any, value: Any) -> tuple[Any, bool]:
        """While the page waits for a run's whole-run timeline: what is being done, and for
        how long, once the wait passes ``PROGRESS_AFTER_S``; and whether to stop polling (the
        timeline is built, or building it failed, which the line then says)."""
        index = self.board.index(value)
        if index is None:
            return "", True
        if self.built(index):
            return "", True
        failed = self._failed.get(index)
        requested = self._requested.get(index)
        if failed is None and (requested is None or time.monotonic() - requested < self.progress_after_s):
            return "", False
        html = require("dash.html", "dashboard", "accelscope dashboard")
        view = self.board.views[index]
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


def layout(board: Any) -> list:
    from dash import dcc, html

    # Double-click autoranges (rather than "reset" to the range the last zoomed figure was drawn
    # with), which the zoom callback answers with the whole run.
    timeline = graph("timeline-graph", scrollZoom=True, doubleClick="autosize")
    return [
        html.Div(id="load-progress", className="load-progress", role="status"),
        dcc.Interval(id="progress-tick", interval=PROGRESS_POLL_MS),
        dcc.Store(id="timeline-config", data={"margin_px": TIME_MARGIN_PX, "rest_wait_ms": REST_WAIT_MS}),
        dcc.Store(id="timeline-request"),
        dcc.Store(id="rest-request"),
        section(
            TITLE, SUB,
            html.Div(
                [html.Span("Host threads", className="control-label"),
                 dcc.RadioItems(id="timeline-lanes", value=MAIN, inline=True, className="lane-mode",
                                options=[{"label": "main threads, the others folded", "value": MAIN}, {"label": "every thread", "value": ALL}]),
                 html.Span([html.Span("Ranks", className="control-label"),
                            dcc.Dropdown(id="timeline-ranks", multi=True, placeholder="every rank", options=[], value=None, className="rank-pick")],
                           id="timeline-ranks-box", className="rank-pick-box", style=HIDDEN)],
                className="timeline-controls",
            ),
            loading(timeline),
            dcc.Store(id="timeline-view"),
            html.Div(id="timeline-details"),
        ),
    ]


def prepare(board: Any, index: int) -> None:
    """First-view work: the events, the analysis beside the lane layout, the launch index
    (the whole run's marks wait for the width the page will ask for)."""
    tv.prepare(board.views[index], None)


def warm_up() -> None:
    _warm_figure()


def register(app: Any, board: Any) -> Timeline:
    from dash import ClientsideFunction, Input, Output, State

    t = Timeline(board)
    # The whole-run timeline is drawn for the graph's width, which only the browser knows.
    app.clientside_callback(ClientsideFunction("accelscope", "request"), Output("timeline-request", "data"),
                            Input("run-select", "value"), Input("timeline-lanes", "value"), Input("timeline-ranks", "value"),
                            State("timeline-config", "data"))
    app.callback(Output("timeline-ranks", "options"), Output("timeline-ranks", "value"), Output("timeline-ranks-box", "style"),
                 Input("run-select", "value"))(t.ranks_for)
    app.callback(Output("timeline-graph", "figure"), Output("timeline-graph", "style"), Input("timeline-request", "data"))(t.request)
    app.callback(Output("load-progress", "children"), Output("progress-tick", "disabled"),
                 Input("progress-tick", "n_intervals"), Input("run-select", "value"))(t.loading_status)
    app.clientside_callback(ClientsideFunction("accelscope", "rest"), Output("rest-request", "data"),
                            Input("timeline-graph", "figure"), Input("timeline-request", "data"), State("rest-request", "data"), State("timeline-config", "data"))
    # The browser adds the plot's width in pixels to each zoom, for the level of detail.
    app.clientside_callback(ClientsideFunction("accelscope", "view"), Output("timeline-view", "data"), Input("timeline-graph", "relayoutData"), prevent_initial_call=True)
    app.callback(Output("timeline-graph", "figure", allow_duplicate=True), Input("timeline-view", "data"), State("run-select", "value"),
                 State("timeline-lanes", "value"), State("timeline-ranks", "value"), prevent_initial_call=True)(t.zoom_view)
    app.callback(Output("timeline-details", "children"), Input("timeline-graph", "clickData"), Input("run-select", "value"),
                 State("timeline-lanes", "value"), State("timeline-ranks", "value"))(t.details)
    return t

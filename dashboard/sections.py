"""The Steps and Compare sections, and live mode, added to the app in ``app.py``.

Live mode: while a shown run is still recording (``meta.complete`` false), the page polls
the run's on-disk fingerprint (``Run.fingerprint``: a few stat calls) every
``LIVE_POLL_MS``. When new parts were flushed, the run is reopened, its caches dropped, and
the run selector re-emits its value, so every section redraws from the new data with no
page reload. Polling stops once the run is complete and its final state shown.
"""

from __future__ import annotations

from typing import Any

from accelscope.dashboard import compare_page, steps_page
from accelscope.dashboard.data import RunView
from accelscope.errors import require
from accelscope.traces.run import Run, run_fingerprint

LIVE_POLL_MS = 2000


class Sections:
    """Steps, Compare and live polling for a ``Dashboard`` (``board.views``)."""

    def __init__(self, board: Any):
        self.board = board
        self._fingerprints = [run_fingerprint(v.run.path) for v in board.views]

    # -- live -------------------------------------------------------------------------
    def any_live(self) -> bool:
        return any(v.run.live for v in self.board.views)

    def reload(self, index: int) -> None:
        """Reopen run ``index`` from disk and drop everything computed from the old one."""
        board = self.board
        old = board.views[index]
        board.views[index] = RunView(Run.open(old.run.path), old.label)
        for key in [k for k in list(board._figures) if k[0] == index]:
            board._figures.pop(key, None)
        board.forget_requests(index)

    def poll(self, _n: Any, value: Any):
        """Interval callback: the run's index again when it changed on disk (which redraws
        the page), else no update; and whether to keep polling."""
        dash = require("dash", "dashboard", "accelscope dashboard")
        index = self.board.index(value)
        if index is None:
            raise dash.exceptions.PreventUpdate
        view = self.board.views[index]
        fp = run_fingerprint(view.run.path)
        if fp == self._fingerprints[index]:
            return dash.no_update, not self.any_live()
        self._fingerprints[index] = fp
        self.reload(index)
        return index, not self.any_live()

    def badge(self, value: Any) -> str:
        """The live badge: shown while the run is still being recorded."""
        index = self.board.index(value)
        if index is None or not self.board.views[index].run.live:
            return ""
        return f"● recording: this page updates every {LIVE_POLL_MS / 1000:g} s"

    # -- steps ------------------------------------------------------------------------
    def steps(self, request: Any):
        """The Steps section, below the timeline: for the page's rest-request store."""
        dash = require("dash", "dashboard", "accelscope dashboard")
        index = self.board.index(request.get("run")) if isinstance(request, dict) else None
        if index is None:
            raise dash.exceptions.PreventUpdate
        report = self.board.views[index].report
        return steps_page.steps_figure(report), steps_page.steps_grid(steps_page.step_rows(report))

    # -- compare ----------------------------------------------------------------------
    def compare_options(self, value: Any) -> list[dict[str, Any]]:
        index = self.board.index(value)
        return [{"label": v.label, "value": i} for i, v in enumerate(self.board.views) if i != index]

    def compare(self, value: Any, other: Any):
        html = require("dash.html", "dashboard", "accelscope dashboard")
        a, b = self.board.index(value), self.board.index(other)
        cmp = None
        if a is not None and b is not None and a != b:
            cmp = compare_page.comparison(self.board.views[a].report, self.board.views[b].report)
        rows = compare_page.summary_rows(cmp)
        if rows:
            head = html.Thead(html.Tr([html.Th(""), html.Th("A (this run)"), html.Th("B"), html.Th("B - A")]))
            body = html.Tbody([html.Tr([html.Td(r["metric"]), html.Td(r["a"]), html.Td(r["b"]), html.Td(r["delta"])]) for r in rows])
            summary = html.Table([head, body], className="details-table compare-summary")
        else:
            summary = html.P("Pick a second run (pass several runs to `accelscope dashboard`).", className="details-hint")
        return summary, compare_page.breakdown_figure(cmp), compare_page.delta_rows(cmp)


def layout_sections(board: Any, section, loading, graph_config: dict) -> list:
    """The Steps and Compare sections, and the live poller, in page order."""
    from dash import dcc, html

    from accelscope.dashboard.app import grid_box

    sections = [
        section(
            "Steps",
            "Every step's time; red points are outlier steps (far slower than the median step), with the breakdown "
            "category that grew most. Warm-up is grey. The table has each step's breakdown; sort or filter it.",
            loading(dcc.Graph(id="steps-graph", config=graph_config)),
            grid_box("steps-table-box", steps_page.GRID_PX),
        ),
    ]
    if len(board.views) > 1:
        sections.append(
            section(
                "Compare",
                "This run (A) against another (B): step time, breakdown per step, and the kernels and ops whose time per step changed most "
                "(`accelscope diff A B` prints the same).",
                html.Div([html.Label("Compare with", htmlFor="compare-select"),
                          dcc.Dropdown(id="compare-select", options=[], value=None, clearable=True)], className="compare-picker"),
                html.Div(id="compare-summary"),
                loading(dcc.Graph(id="compare-graph", config=graph_config)),
                compare_page.delta_grid("compare-table"),
            )
        )
    live = any(v.run.live for v in board.views)
    sections.append(dcc.Interval(id="live-poll", interval=LIVE_POLL_MS, disabled=not live))
    return sections


def register(app: Any, board: Any) -> Sections:
    """Wire the sections' callbacks into ``app``."""
    dash = require("dash", "dashboard", "accelscope dashboard")
    s = Sections(board)
    app.callback(dash.Output("live-badge", "children"), dash.Input("run-select", "value"))(s.badge)
    app.callback(dash.Output("steps-graph", "figure"), dash.Output("steps-table-box", "children"), dash.Input("rest-request", "data"))(s.steps)
    if len(board.views) > 1:
        app.callback(dash.Output("compare-select", "options"), dash.Input("run-select", "value"))(s.compare_options)
        app.callback(
            dash.Output("compare-summary", "children"), dash.Output("compare-graph", "figure"), dash.Output("compare-table", "rowData"),
            dash.Input("run-select", "value"), dash.Input("compare-select", "value"),
        )(s.compare)
    app.callback(
        dash.Output("run-select", "value", allow_duplicate=True),
        dash.Output("live-poll", "disabled"),
        dash.Input("live-poll", "n_intervals"),
        dash.State("run-select", "value"),
        prevent_initial_call=True,
    )(s.poll)
    return s

"""The Dash application: ``create_app(run_paths)`` and ``serve(run_paths)``.

The page is a frame (the run picker, the run's header, the live badge) around the
sections in ``sections.SECTIONS``, each a module with its layout, callbacks and figures.
The app serves exactly the runs it was given: the browser picks a run by its index in
that list, and nothing the browser sends ever reaches the filesystem. Each run is
analysed and its figures built once, on first view, then served from memory.

Loading order (each step asks for the next, so the browser draws what a reader meets
first): the header and Overview on the run picker's value; the timeline for the width the
browser reports ("timeline-request"); the sections below it once the timeline is painted
("rest-request").
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from accelscope.dashboard import live
from accelscope.dashboard.plotlyjs import ASSETS
from accelscope.dashboard.runs import RunView, run_labels
from accelscope.dashboard.sections import SECTIONS
from accelscope.errors import require
from accelscope.traces.run import Run

PAGE = ASSETS / "page.html"  # the page's HTML around Dash's scripts
ASSETS_IGNORE = r"page\.html|report\.css"  # served files the page does not load itself


class Dashboard:
    """The runs an app serves, their views and each section's controller. Index ``i`` is the
    ``i``-th path given."""

    def __init__(self, run_paths: Sequence[str | Path]):
        paths = [Path(p) for p in run_paths]
        if not paths:
            raise ValueError("the dashboard needs at least one run directory")
        runs = [Run.open(p) for p in paths]  # RunFormatError, one line, for the CLI to print
        # A run imported on the fly goes by its source's name (Run.name), not its cache directory's.
        shown = [p if run.name == p.name else p.parent / run.name for p, run in zip(paths, runs)]
        self.views = [RunView(run, label) for run, label in zip(runs, run_labels(shown))]
        self.sections: dict[str, Any] = {}  # section name -> what its register() returned
        self._lock = threading.Lock()
        self._prepared: set[int] = set()
        self._reload_hooks: list[Callable[[int], None]] = []

    def index(self, value: Any) -> int | None:
        """The run index a browser value names, or None when it names none of ours."""
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if 0 <= value < len(self.views) else None

    def requested(self, value: Any) -> int:
        """The run index the run picker's value names; anything else stops the callback
        (``PreventUpdate``)."""
        index = self.index(value)
        if index is None:
            dash = require("dash", "dashboard", "accelscope dashboard")
            raise dash.exceptions.PreventUpdate
        return index

    def requested_by(self, store: Any) -> int:
        """``requested`` for a request store's run (``{"run": index, ...}``)."""
        return self.requested(store.get("run") if isinstance(store, dict) else None)

    def figure(self, index: int, key: str, build: Callable[[RunView], Any]) -> Any:
        """A run's figure ``key``, built once by ``build(view)`` (kept in the run's cache, so a
        reloaded run builds it again)."""
        view = self.views[index]
        return view.cached(f"figure:{key}", lambda: build(view))

    def figures(self, index: int) -> dict[str, Any]:
        """A run's three main figures, as the page shows them: "step", "timeline" (the whole
        run at the default width), "metrics" (for tests and the screenshot script)."""
        from accelscope.dashboard.sections import metrics, overview

        return {
            "step": self.figure(index, "step", lambda v: overview.step_figure(v.report)),
            "timeline": self.sections["timeline"].whole(index),
            "metrics": self.figure(index, "metrics", metrics.figure_of),
        }

    def on_reload(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(index)`` when a run is reopened (a section drops what it kept of it)."""
        self._reload_hooks.append(hook)

    def reload(self, index: int) -> None:
        """Reopen run ``index`` from disk and drop everything computed from the old one."""
        old = self.views[index]
        self.views[index] = RunView(Run.open(old.run.path), old.label)
        for hook in self._reload_hooks:
            hook(index)

    def prepare_in_background(self, index: int = 0) -> threading.Thread | None:
        """Start computing a run's first view now (each section's ``prepare``), so the first
        page load finds it ready or under way; once per run (None when already started)."""
        with self._lock:
            if index in self._prepared:
                return None
            self._prepared.add(index)

        def work() -> None:
            try:
                for section in SECTIONS:
                    if hasattr(section, "prepare"):
                        section.prepare(self, index)
            except Exception:  # the page's own request will compute it again and report the error
                logging.getLogger("accelscope").exception("preparing the dashboard's first run failed")

        thread = threading.Thread(target=work, name="accelscope-dashboard-prepare", daemon=True)
        thread.start()
        return thread

    def header(self, value: Any) -> list:
        """The line under the top bar: the run's label and what it is (from the report)."""
        index = self.requested(value)
        h = require("dash.html", "dashboard", "accelscope dashboard")
        view = self.views[index]
        items = run_facts(view)
        return [h.B(view.label)] + [h.Span(" · " + item if i else item) for i, item in enumerate(items)]


def run_facts(view: RunView) -> list[str]:
    """Facts about a run for its header: when, how long, where, framework, mode, devices, collectors."""
    from accelscope.dashboard.formatting import format_duration_ns

    rep = view.report
    meta = view.run.meta
    out = []
    start = meta.get("start_ns")
    if isinstance(start, int):
        out.append(datetime.fromtimestamp(start / 1e9).strftime("%Y-%m-%d %H:%M:%S"))
    out.append(f"{format_duration_ns(view.end_ms * 1e6)} recorded")
    if rep is None:
        return out
    info = rep.run
    if info.host:
        out.append(f"host {info.host}")
    if info.framework:
        out.append(" ".join(x for x in (info.framework, info.framework_version) if x))
    if info.mode:
        out.append(f"{info.mode} mode")
    if len(info.ranks) > 1:
        out.append(f"{len(info.ranks)} ranks")
    devices = sorted({d for _, d in info.devices if d != "cpu"})
    if devices:
        per = " on each rank" if len(info.ranks) > 1 and len({(r, d) for r, d in info.devices if d != "cpu"}) == len(devices) * len(info.ranks) else ""
        out.append("devices " + ", ".join(devices) + per)
    elif not rep.has_device:
        out.append("no device activity recorded")
    if info.collector_problems:
        out.append("collectors: " + ", ".join(info.collector_problems))
    return out


def _layout(board: Dashboard) -> Any:
    from dash import dcc, html

    options = [{"label": v.label, "value": i} for i, v in enumerate(board.views)]
    sections = [part for section in SECTIONS for part in section.layout(board)]
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
                [html.P(id="run-info", className="run-info"), *live.layout(board), *sections],
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
    for section in SECTIONS:
        if hasattr(section, "warm_up"):
            section.warm_up()


def create_app(run_paths: Sequence[str | Path], prepare: bool = False, token: str | None = None) -> Any:
    """A Dash app showing these run directories (raises RunFormatError for a path that is not one).

    ``prepare``: start analysing the first run right away, in a background thread (``serve`` does).
    ``token``: required on every request (``dashboard/auth.py``); None: none.
    """
    dash = require("dash", "dashboard", "accelscope dashboard")
    require("plotly", "dashboard", "accelscope dashboard")
    flask = require("flask", "dashboard", "accelscope dashboard")
    _import_for_first_request()
    board = Dashboard(run_paths)
    if prepare:
        board.prepare_in_background(0)
    app = dash.Dash(
        __name__,
        title="accelscope",
        update_title=None,
        assets_folder=str(ASSETS),
        assets_ignore=ASSETS_IGNORE,
        serve_locally=True,
        index_string=PAGE.read_text(encoding="utf-8"),
        enable_mcp=False,
    )
    if token:
        from accelscope.dashboard.auth import protect

        protect(app.server, token)  # first: a refused request runs no other hook and opens no run
    app.layout = _layout(board)

    # A page request starts the first run's analysis, so it runs while the browser loads the
    # page's scripts (~0.5 s) rather than after it asks for the first figure.
    def start_preparing() -> None:
        if flask.request.path == app.config.routes_pathname_prefix:
            board.prepare_in_background(0)

    app.server.before_request(start_preparing)
    app.callback(dash.Output("run-info", "children"), dash.Input("run-select", "value"))(board.header)
    board.sections["live"] = live.register(app, board)
    for section in SECTIONS:
        board.sections[section.NAME] = section.register(app, board)
    app._accelscope = board  # for tests and the screenshot script
    return app


def serve(
    run_paths: Sequence[str | Path],
    host: str = "127.0.0.1",
    port: int = 8050,
    debug: bool = False,
    on_listening: Callable[[str], None] | None = None,
    token: str | None = None,
) -> None:
    """Serve the dashboard until interrupted (request logs are silenced).

    The port is bound first (``ServeError``: out of range, in use, unknown host), then the
    app is built (``MissingExtraError``, ``RunFormatError``); only then is
    ``on_listening(url)`` called (default: print the URL), so nothing says the dashboard
    is up before it is. ``port=0`` takes a free port; the URL names it. ``token``: required
    on every request; the URL carries it."""
    from accelscope.dashboard.server import listen, serve_on, url_of

    with listen(host, port) as sock:
        app = create_app(run_paths, prepare=True, token=token)
        app.enable_dev_tools(debug=bool(debug), dev_tools_silence_routes_logging=True)
        url = url_of(host, sock.getsockname()[1]) + (f"?token={token}" if token else "")
        if on_listening is None:
            print(f"dashboard: {url}", flush=True)
        else:
            on_listening(url)
        serve_on(app, sock, host)


__all__ = ["create_app", "serve", "Dashboard"]

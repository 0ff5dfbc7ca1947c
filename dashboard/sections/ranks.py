"""The Ranks section, for runs of several ranks: which rank holds the others back at the
collectives and what that costs (``Report.stragglers``), each rank's step time, busy share
and wait for the others (``accelscope.text.rank_rows``), a rank × step map of step time or
of the wait for other ranks (``Report.steps``), the collectives by kind
(``Report.collectives_by_kind``), and a few steps' collectives drawn rank by rank on one time
axis (``Report.arrivals``, ``Report.collectives``). Single-rank runs have no such section.

The figures are in ``dashboard/rank_figures.py``; every number is the report's.
"""

from __future__ import annotations

from typing import Any

from accelscope.analysis import Report
from accelscope.dashboard.components import graph, loading, section
from accelscope.dashboard.formatting import format_duration_ns
from accelscope.dashboard.rank_figures import STEP, WAIT, collectives_figure, heatmap_figure
from accelscope.dashboard.rank_figures import warm_up as _warm_figures
from accelscope.errors import require
from accelscope.text import rank_rows

NAME = "ranks"
TITLE = "Ranks"
SUB = ("Each rank of the job: which one arrives last at the collectives and holds the others back, what that costs per step, "
       "and why it was late (its own time before arriving, against the other ranks'). Waiting: inside a collective, until the "
       "last rank arrived; transfer: after it.")
HIDDEN = {"display": "none"}
METRICS = [{"label": "step time", "value": STEP}, {"label": "waiting for other ranks", "value": WAIT}]
ZOOM_LABEL = "Show these steps on the timeline"
SHOW_RANK = "rank-show"  # a rank's link in the per-rank table: shows that rank on the timeline


def is_multi_rank(report: Report | None) -> bool:
    """Whether the report is of a job of several ranks (the analyzer's per-rank table is there)."""
    return report is not None and report.ranks is not None and len(report.run.ranks) > 1


def may_be_multi_rank(view: Any) -> bool:
    """Whether a run's metadata names several ranks (read before any analysis)."""
    return len(view.run.meta.get("ranks") or ()) > 1


def summary(report: Report | None) -> list[tuple[str, str]]:
    """The straggler summary as (kind, text) lines: ("straggler", its text and the job's
    projected step) per straggler, else one ("none", ...) line; [] for a single rank."""
    if not is_multi_rank(report):
        return []
    n = len(report.run.ranks)
    if report.stragglers:
        return [("straggler", f"{s.text}. The job's step: {format_duration_ns(s.mean_step_ns)}, about {format_duration_ns(s.projected_step_ns)} if rank {s.rank} were not late "
                              f"(late in {s.steps_late} of {s.steps} steps; the other ranks waited {format_duration_ns(s.waited_ns_per_step)} per step for it, summed over them).")
                for s in report.stragglers]
    matched = 0 if report.collectives is None else report.collectives.height
    if matched == 0:
        return [("none", f"No collectives matched across the {n} ranks, so who waited for whom is not known (see the notes).")]
    return [("none", f"No straggler: {matched:,} collectives matched across the {n} ranks, none held the job back consistently.")]


def _size(n: Any) -> str:
    if n is None:
        return "—"
    n = float(n)
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB" if n >= 2**10 else f"{n:,.0f} B"


def collective_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """``Report.collectives_by_kind`` as text cells (headers, rows)."""
    headers = ["kind", "group", "size", "ranks", "count", "mean transfer", "mean wait for the last rank", "bus bandwidth"]
    rows = []
    for r in report.collectives_by_kind.iter_rows(named=True):
        bw = "—" if r["busbw_gbps"] is None else f"{r['busbw_gbps']:,.1f} GB/s"
        wait = "—" if r["mean_wait_ns"] is None else format_duration_ns(r["mean_wait_ns"])
        rows.append([r["kind"], r["group"] or "—", _size(r["size_bytes"]), str(r["n_ranks"]), f"{r['count']:,}", format_duration_ns(r["mean_transfer_ns"]), wait, bw])
    return headers, rows


# -- the page ------------------------------------------------------------------------------------
def summary_block(report: Report | None, link: bool = False) -> list:
    """The summary lines as page elements (a red line per straggler); with ``link``, each
    ends with a link to this section (the Overview's banner)."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    out = []
    for kind, text in summary(report):
        head = "Straggler: " if kind == "straggler" else ""
        more = [" ", html.A("See Ranks.", href="#section-ranks")] if link else []
        out.append(html.Div([html.B(head) if head else "", text, *more], className=f"rank-line rank-{kind}"))
    return out


def ranks_table(report: Report) -> Any:
    """``rank_rows`` as a table: busy and waiting cells with their share as a bar, straggler rows tinted."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    headers, rows = rank_rows(report)
    late = {s.rank for s in report.stragglers}
    body = []
    for r, cells in zip(report.ranks.iter_rows(named=True), rows):

        def bar(share: Any, text: str, cls: str) -> Any:
            pct = 0.0 if share is None else max(0.0, min(100.0, 100 * share))
            return html.Td([html.Span(className=f"share-bar {cls}", style={"width": f"{pct:.1f}%"}), html.Span(text)], className="busy")

        show = html.A(cells[0], href="#section-timeline", id={"type": SHOW_RANK, "rank": int(r["rank"])}, n_clicks=0,
                      title=f"show rank {r['rank']} on the timeline (its events are read then)", className="rank-show")
        tds = [html.Td(show), html.Td(cells[1]), bar(r["busy_share"], cells[2], "busy-bar"), bar(r["collective_wait_share"], cells[3], "wait-bar"),
               *[html.Td(c) for c in cells[4:]]]
        body.append(html.Tr(tds, className="straggler-row" if r["rank"] in late else None))
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(body)], className="device-table ranks-table", id="ranks-table")


def collectives_table(report: Report) -> Any:
    html = require("dash.html", "dashboard", "accelscope dashboard")
    headers, rows = collective_rows(report)
    if not rows:
        return html.P("No collectives were matched across the ranks.", className="details-hint")
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody([html.Tr([html.Td(c) for c in r]) for r in rows])],
                      className="device-table", id="ranks-collectives-table")


def layout(board: Any) -> list:
    if not any(may_be_multi_rank(v) for v in board.views):
        return []
    from dash import dcc, html

    part = section(
        TITLE, SUB,
        html.Div(id="ranks-summary", className="rank-summary"),
        html.H3("Per rank", className="ranks-h3"),
        html.P("Step time over the steady steps; busy, waiting and idle over the analysed steps; arrived last: at how many of the "
               "collectives it joined (by more than the clocks' error). Click a rank to show it on the timeline.", className="details-hint"),
        html.Div(id="ranks-table-box"),
        html.Div([html.H3("Every rank, step by step", className="ranks-h3"),
                  dcc.RadioItems(id="ranks-metric", value=STEP, inline=True, options=METRICS, className="lane-mode")], className="timeline-controls ranks-controls"),
        loading(graph("ranks-heatmap")),
        html.H3("Collectives by kind", className="ranks-h3"),
        html.P("Transfer: from the last rank's arrival to the end; the wait for the last rank: from the second-to-last arrival to the last, "
               "what the late rank cost each time; bus bandwidth as nccl-tests reports it (where the size is known).", className="details-hint"),
        html.Div(id="ranks-collectives-box"),
        html.Div([html.H3("Collectives across ranks", className="ranks-h3"),
                  html.Button(ZOOM_LABEL, id="ranks-zoom-button", className="link-button", n_clicks=0)], className="timeline-controls ranks-controls"),
        loading(graph("ranks-collectives")),
        dcc.Store(id="ranks-zoom"),
    )
    if not may_be_multi_rank(board.views[0]):
        part.style = HIDDEN  # the callback shows it for a run of several ranks
    return [part]


def render(board: Any, request: Any) -> tuple:
    """The section's visibility, summary and tables, and its collectives figure, once the
    timeline is painted ("rest-request": {"run", "n"})."""
    index = board.requested_by(request)
    view = board.views[index]
    report = view.report
    if not is_multi_rank(report):
        from accelscope.dashboard.theme import empty_figure

        return HIDDEN, [], [], [], empty_figure("a single rank")
    fig = board.figure(index, "ranks-collectives", lambda v: collectives_figure(v.report, v.origin_ns))
    return {}, summary_block(report), ranks_table(report), collectives_table(report), fig


def render_heatmap(board: Any, request: Any, metric: Any) -> Any:
    """The rank × step map of step time or of the wait for other ranks."""
    index = board.requested_by(request)
    metric = metric if metric in (STEP, WAIT) else STEP
    if not is_multi_rank(board.views[index].report):
        dash = require("dash", "dashboard", "accelscope dashboard")
        raise dash.exceptions.PreventUpdate
    return board.figure(index, f"ranks-heatmap:{metric}", lambda v: heatmap_figure(v.report, metric))


def show_rank(n_clicks: Any) -> list[int]:
    """The timeline's ranks after a click on a rank of the per-rank table: that rank alone."""
    dash = require("dash", "dashboard", "accelscope dashboard")
    picked = dash.callback_context.triggered_id
    clicked = any(isinstance(n, int) and n > 0 for n in (n_clicks or []))
    if not clicked or not isinstance(picked, dict) or not isinstance(picked.get("rank"), int):
        raise dash.exceptions.PreventUpdate
    return [picked["rank"]]


def warm_up() -> None:
    _warm_figures()


def register(app: Any, board: Any) -> None:
    if not any(may_be_multi_rank(v) for v in board.views):
        return
    from dash import ALL, ClientsideFunction, Input, Output, State

    app.callback(Output("timeline-ranks", "value", allow_duplicate=True), Input({"type": SHOW_RANK, "rank": ALL}, "n_clicks"),
                 prevent_initial_call=True)(show_rank)
    app.callback(Output("section-ranks", "style"), Output("ranks-summary", "children"), Output("ranks-table-box", "children"),
                 Output("ranks-collectives-box", "children"), Output("ranks-collectives", "figure"),
                 Input("rest-request", "data"))(lambda request: render(board, request))
    app.callback(Output("ranks-heatmap", "figure"), Input("rest-request", "data"), Input("ranks-metric", "value"))(
        lambda request, metric: render_heatmap(board, request, metric))
    # "Show these steps on the timeline": zoom the timeline to the collectives figure's window.
    app.clientside_callback(ClientsideFunction("accelscope", "showOnTimeline"), Output("ranks-zoom", "data"),
                            Input("ranks-zoom-button", "n_clicks"), State("ranks-collectives", "figure"), prevent_initial_call=True)

"""The Compare section: two runs side by side (what ``accelscope diff A B`` prints).

``accelscope.analysis.compare.compare`` does the work; this module shapes its tables for a
summary table, a grouped breakdown figure and a grid of the kernels and ops that changed.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from accelscope.analysis import Report
from accelscope.analysis.compare import Comparison, compare
from accelscope.dashboard.components import graph, grid, loading, section
from accelscope.dashboard.theme import FONT, TEMPLATE, empty_figure, plotly_go
from accelscope.errors import require
from accelscope.verdicts import VERDICT_TEXT

NAME = "compare"
TITLE = "Compare"
SUB = ("This run (A) against another (B): step time, breakdown per step, and the kernels and ops whose time per step changed most "
       "(`accelscope diff A B` prints the same).")
GRID_PX = 560
A_COLOR = "#8E9AAF"
B_COLOR = "#3B6EA8"

DELTA_COLUMNS = [
    ("name", "name", "text"),
    ("what", "kernel / op", "text"),
    # Per traced step: ops and kernels exist only in the steps the framework profiler traced.
    ("a_ms", "A ms/traced step", "numeric"),
    ("b_ms", "B ms/traced step", "numeric"),
    ("delta_ms", "B - A ms/traced step", "numeric"),
]


def comparison(a: Report | None, b: Report | None) -> Comparison | None:
    return None if a is None or b is None else compare(a, b)


def summary_rows(cmp: Comparison | None) -> list[dict[str, str]]:
    """Rows of the summary table: metric, A, B, B - A (as text, formatted)."""
    if cmp is None:
        return []
    s = cmp.summary
    step, busy, wait, n = s["mean_step_ms"], s["busy_share"], s["input_wait_share"], s["steps"]
    device = "device busy" if cmp.a.has_device or cmp.b.has_device else "compute busy"
    rel = f" ({step.relative:+.0%})" if step.relative is not None else ""
    return [
        {"metric": "run", "a": cmp.a.run_name, "b": cmp.b.run_name, "delta": ""},
        {"metric": "verdict", "a": VERDICT_TEXT[cmp.a.verdict], "b": VERDICT_TEXT[cmp.b.verdict], "delta": ""},
        {"metric": "steps", "a": f"{n.a:.0f}", "b": f"{n.b:.0f}", "delta": f"{n.delta:+.0f}"},
        {"metric": "mean step", "a": f"{step.a:,.2f} ms", "b": f"{step.b:,.2f} ms", "delta": f"{step.delta:+,.2f} ms{rel}"},
        {"metric": device, "a": f"{busy.a:.1%}", "b": f"{busy.b:.1%}", "delta": f"{busy.delta * 100:+.1f} pp"},
        {"metric": "input wait", "a": f"{wait.a:.1%}", "b": f"{wait.b:.1%}", "delta": f"{wait.delta * 100:+.1f} pp"},
    ]


def breakdown_figure(cmp: Comparison | None):
    """Per-step breakdown of A and B as grouped bars, one group per category."""
    go = plotly_go()
    if cmp is None:
        return empty_figure("Pick a second run to compare with.", height=300)
    cats = list(cmp.breakdown_ms)
    labels = [c.replace("_", " ") for c in cats]
    fig = go.Figure()
    for side, name, color in ((0, f"A: {cmp.a.run_name}", A_COLOR), (1, f"B: {cmp.b.run_name}", B_COLOR)):
        values = [cmp.breakdown_ms[c][side] for c in cats]
        fig.add_trace(go.Bar(
            name=name, x=labels, y=values, marker_color=color,
            hovertemplate="%{x}: %{y:,.2f} ms per step<extra>" + ("A" if side == 0 else "B") + "</extra>",
        ))
    fig.update_layout(
        template=TEMPLATE, font=FONT, height=320, margin=dict(l=60, r=20, t=30, b=45), barmode="group",
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), yaxis=dict(title="ms per step", rangemode="tozero"),
    )
    return fig


def delta_rows(cmp: Comparison | None) -> list[dict[str, Any]]:
    """The kernels and ops whose time per step changed most, biggest change first."""
    if cmp is None:
        return []
    parts = []
    for what, df in (("kernel", cmp.kernels), ("op", cmp.ops)):
        if df.height:
            parts.append(df.with_columns(what=pl.lit(what)))
    if not parts:
        return []
    both = pl.concat(parts).sort(pl.col("delta_ms").abs(), descending=True)
    return both.select("name", "what", *[pl.col(c).round(3) for c in ("a_ms", "b_ms", "delta_ms")]).to_dicts()


def delta_grid(rows: list[dict[str, Any]], grid_id: str = "compare-table") -> Any:
    """The kernels and ops that changed, biggest change first."""
    return grid(grid_id, DELTA_COLUMNS, rows, GRID_PX, page_size=15, floating_filter=False, persist=False,
                grid_options={"paginationPageSizeSelector": False})


def summary_table(cmp: Comparison | None) -> Any:
    html = require("dash.html", "dashboard", "accelscope dashboard")
    rows = summary_rows(cmp)
    if not rows:
        return html.P("Pick a second run (pass several runs to `accelscope dashboard`).", className="details-hint")
    head = html.Thead(html.Tr([html.Th(""), html.Th("A (this run)"), html.Th("B"), html.Th("B - A")]))
    body = html.Tbody([html.Tr([html.Td(r["metric"]), html.Td(r["a"]), html.Td(r["b"]), html.Td(r["delta"])]) for r in rows])
    return html.Table([head, body], className="details-table compare-summary")


def layout(board: Any) -> list:
    if len(board.views) < 2:
        return []
    from dash import dcc, html

    picker = html.Div([html.Label("Compare with", htmlFor="compare-select"), dcc.Dropdown(id="compare-select", options=[], value=None, clearable=True)],
                      className="compare-picker")
    return [section(TITLE, SUB, picker, html.Div(id="compare-summary"), loading(graph("compare-graph")),
                    html.Div(delta_grid([]), id="compare-table-box"))]


def options(board: Any, value: Any) -> list[dict[str, Any]]:
    """The other runs, to compare this one with."""
    index = board.index(value)
    return [{"label": v.label, "value": i} for i, v in enumerate(board.views) if i != index]


def render(board: Any, value: Any, other: Any) -> tuple:
    """The summary, the breakdown figure and the grid of changes for runs A and B."""
    a, b = board.index(value), board.index(other)
    cmp = None
    if a is not None and b is not None and a != b:
        cmp = comparison(board.views[a].report, board.views[b].report)
    return summary_table(cmp), breakdown_figure(cmp), delta_grid(delta_rows(cmp))


def register(app: Any, board: Any) -> None:
    if len(board.views) < 2:
        return
    from dash import Input, Output

    app.callback(Output("compare-select", "options"), Input("run-select", "value"))(lambda value: options(board, value))
    app.callback(Output("compare-summary", "children"), Output("compare-graph", "figure"), Output("compare-table-box", "children"),
                 Input("run-select", "value"), Input("compare-select", "value"))(lambda value, other: render(board, value, other))

"""The Compare section: two runs side by side (what ``accelscope diff A B`` prints).

``accelscope.analysis.compare.compare`` does the work; this module shapes its tables for a
summary table, a grouped breakdown figure and a grid of the kernels and ops that changed.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from accelscope.analysis import Report
from accelscope.analysis.compare import Comparison, compare
from accelscope.errors import require
from accelscope.verdicts import VERDICT_TEXT

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
    (ma, mb), (ba, bb), (ia, ib), (na, nb) = s["mean_step_ms"], s["busy_share"], s["input_wait_share"], s["steps"]
    device = "device busy" if cmp.a.has_device or cmp.b.has_device else "compute busy"
    rel = f" ({(mb - ma) / ma:+.0%})" if ma else ""
    return [
        {"metric": "run", "a": cmp.a.run_name, "b": cmp.b.run_name, "delta": ""},
        {"metric": "verdict", "a": VERDICT_TEXT[cmp.a.verdict], "b": VERDICT_TEXT[cmp.b.verdict], "delta": ""},
        {"metric": "steps", "a": f"{na:.0f}", "b": f"{nb:.0f}", "delta": f"{nb - na:+.0f}"},
        {"metric": "mean step", "a": f"{ma:,.2f} ms", "b": f"{mb:,.2f} ms", "delta": f"{mb - ma:+,.2f} ms{rel}"},
        {"metric": device, "a": f"{ba:.1%}", "b": f"{bb:.1%}", "delta": f"{(bb - ba) * 100:+.1f} pp"},
        {"metric": "input wait", "a": f"{ia:.1%}", "b": f"{ib:.1%}", "delta": f"{(ib - ia) * 100:+.1f} pp"},
    ]


def breakdown_figure(cmp: Comparison | None):
    """Per-step breakdown of A and B as grouped bars, one group per category."""
    go = require("plotly.graph_objects", "dashboard", "accelscope dashboard")
    from accelscope.dashboard.figures import FONT, TEMPLATE, _empty

    if cmp is None:
        return _empty("Pick a second run to compare with.", height=300)
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


def delta_grid(grid_id: str = "compare-table"):
    dag = require("dash_ag_grid", "dashboard", "accelscope dashboard")
    cols = []
    for cid, name, typ in DELTA_COLUMNS:
        col: dict[str, Any] = {"field": cid, "headerName": name, "filter": "agNumberColumnFilter" if typ == "numeric" else "agTextColumnFilter"}
        if cid == "name":
            col.update(flex=3, minWidth=320, tooltipField="name")
        else:
            col.update(flex=1, minWidth=100)
            if typ == "numeric":
                col["type"] = "numericColumn"
        cols.append(col)
    return dag.AgGrid(
        id=grid_id, columnDefs=cols, rowData=[],
        defaultColDef={"sortable": True, "filter": True, "resizable": True},
        dashGridOptions={"pagination": True, "paginationPageSize": 15, "paginationPageSizeSelector": False, "rowHeight": 30, "headerHeight": 34, "animateRows": False},
        className="ag-theme-alpine", style={"height": "560px"},
    )

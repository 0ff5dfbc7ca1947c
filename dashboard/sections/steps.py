"""The Steps section: every step's time and breakdown, with outlier steps marked.

Data comes from the analyzer's steps table (``Report.steps``: each step's own number,
breakdown columns, input share, verdict, warm-up, ``outlier`` and ``outlier_reason``); this
module only shapes it for a Plotly figure and an AG Grid table.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from accelscope.analysis import Report
from accelscope.analysis.breakdown import BREAKDOWN
from accelscope.dashboard.components import graph, grid, grid_box, loading, section
from accelscope.dashboard.theme import FONT, TEMPLATE, empty_figure, plotly_go, step_ticks

NAME = "steps"
TITLE = "Steps"
SUB = ("Every step's time; red points are outlier steps (far slower than the median step), with the breakdown "
       "category that grew most. Warm-up is grey. The table has each step's breakdown; sort or filter it.")

OUTLIER_COLOR = "#C62828"
STEP_COLOR = "#3B6EA8"
WARMUP_COLOR = "#B3BAC5"

COLUMNS = [
    ("rank", "rank", "numeric"),
    ("step", "step", "numeric"),
    ("dur_ms", "ms", "numeric"),
    ("busy_pct", "busy %", "numeric"),
    ("input_wait_pct", "input wait %", "numeric"),
    ("verdict", "verdict", "text"),
    ("flag", "flag", "text"),
    ("outlier_reason", "why it is slow", "text"),
    *[(f"{c}_ms", f"{c.replace('_', ' ')} ms", "numeric") for c in BREAKDOWN],
]


def step_rows(report: Report | None) -> list[dict[str, Any]]:
    """One row per step for the grid; durations in ms, shares in %."""
    if report is None or report.steps.height == 0:
        return []
    st = report.steps
    # A step the framework profiler did not trace holds no ops or device work: with device work
    # elsewhere in the run its busy share is unknown, not zero.
    untraced = ~pl.col("traced") & pl.lit(report.has_device)
    flag = (
        pl.when(pl.col("warmup")).then(pl.lit("warm-up"))
        .when(pl.col("outlier")).then(pl.lit("outlier"))
        .when(untraced).then(pl.lit("not traced"))
        .otherwise(pl.lit(""))
    )
    out = st.select(
        "rank",
        "step",
        (pl.col("dur_ns") / 1e6).round(3).alias("dur_ms"),
        pl.when(~untraced).then((pl.col("busy_share") * 100).round(1)).alias("busy_pct"),
        pl.when(pl.col("input_timed")).then((pl.col("input_wait_share") * 100).round(1)).alias("input_wait_pct"),
        pl.col("verdict").fill_null("not seen"),
        flag.alias("flag"),
        pl.col("outlier_reason").fill_null(""),
        *[(pl.col(f"{c}_ns") / 1e6).round(3).alias(f"{c}_ms") for c in BREAKDOWN],
    )
    return out.to_dicts()


def steps_figure(report: Report | None):
    """Step time per step, the median as a line, outliers in red with their reason on hover."""
    go = plotly_go()
    if report is None or report.steps.height == 0:
        return empty_figure("No steps recorded: call prof.step() once per training step.")
    st = report.steps.with_columns(dur_ms=pl.col("dur_ns") / 1e6)
    fig = go.Figure()
    ranks = st["rank"].unique().sort().to_list()
    for rank in ranks:
        r = st.filter(pl.col("rank") == rank)
        label = "" if len(ranks) == 1 else f"rank {rank} "
        color = [WARMUP_COLOR if w else OUTLIER_COLOR if o else STEP_COLOR for w, o in zip(r["warmup"], r["outlier"])]
        size = [11 if o else 7 for o in r["outlier"]]
        hover = [
            f"<b>step {s}</b>{' (warm-up)' if w else ''}<br>{d:,.2f} ms"
            + (f"<br>input wait {iw:.0%}" if t else "<br>input wait not seen")
            + (f"<br><b>outlier</b>: {why}" if o else "")
            for s, w, d, iw, t, o, why in zip(r["step"], r["warmup"], r["dur_ms"], r["input_wait_share"], r["input_timed"], r["outlier"], r["outlier_reason"])
        ]
        fig.add_trace(go.Scatter(
            x=r["step"].to_list(), y=r["dur_ms"].to_list(), mode="lines+markers", name=f"{label}step time",
            line=dict(color="#9AA8BD", width=1), marker=dict(color=color, size=size, line=dict(width=0)),
            hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
        ))
    shapes, annotations = [], []
    if math.isfinite(report.median_step_ns):
        med = report.median_step_ns / 1e6
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=med, y1=med, line=dict(color="#2b2f36", width=1, dash="dot")))
        annotations.append(dict(xref="paper", x=1, y=med, text=f"median {med:,.1f} ms", showarrow=False, xanchor="right", yanchor="bottom",
                                font=dict(size=11, color="#2b2f36"), bgcolor="rgba(255,255,255,0.8)"))
    n_out = int(st["outlier"].sum())
    fig.update_layout(
        template=TEMPLATE, font=FONT, height=300, margin=dict(l=60, r=20, t=36, b=45),
        title=dict(text=f"{n_out} outlier step{'s' if n_out != 1 else ''}" if n_out else "no outlier steps", font=dict(size=13), x=0.01),
        xaxis=dict(title="step", showgrid=False, **step_ticks(st["step"].to_list())), yaxis=dict(title="step time (ms)", rangemode="tozero"),
        shapes=shapes, annotations=annotations, showlegend=len(ranks) > 1, hovermode="closest",
    )
    return fig


GRID_PX = 420


def steps_grid(rows: list[dict[str, Any]], grid_id: str = "steps-table") -> Any:
    """A sortable, filterable grid of :func:`step_rows`; outlier rows tinted."""
    return grid(
        grid_id, COLUMNS, rows, GRID_PX, wide="outlier_reason",
        rowClassRules={"step-outlier": "params.data.flag == 'outlier'", "step-warmup": "params.data.flag == 'warm-up'"},
    )


def layout(board: Any) -> list:
    return [section(TITLE, SUB, loading(graph("steps-graph")), grid_box("steps-table-box", GRID_PX))]


def render(board: Any, request: Any) -> tuple:
    """The figure and grid, once the timeline is painted ("rest-request": {"run", "n"})."""
    index = board.requested_by(request)
    report = board.views[index].report
    return board.figure(index, "steps", lambda v: steps_figure(v.report)), steps_grid(step_rows(report))


def register(app: Any, board: Any) -> None:
    from dash import Input, Output

    app.callback(Output("steps-graph", "figure"), Output("steps-table-box", "children"), Input("rest-request", "data"))(lambda request: render(board, request))

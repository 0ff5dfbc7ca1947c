"""The Overview section: why the accelerator sat idle (its idle share and the main causes),
then the input verdict, step time, utilisation per device, every step's breakdown, the
recommendations and the notes. Every number is the report's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from accelscope.analysis.breakdown import BREAKDOWN
from accelscope.analysis.causes import CAUSE_TEXT
from accelscope.dashboard.components import card, graph, loading, section
from accelscope.dashboard.sections.ranks import summary_block
from accelscope.dashboard.theme import BREAKDOWN_COLORS, REST_COLOR, base_layout, empty_figure, plotly_go, step_ticks
from accelscope.errors import require
from accelscope.text import capture_lines, device_rows
from accelscope.verdicts import HIGH_THRESHOLD, MODERATE_THRESHOLD, VERDICT_TEXT

NAME = "overview"
TITLE = "Overview"
SUB = ("Why the accelerator sat idle, then where each step's time went: device work, then what the host did while "
       "the device was idle (each instant counted once; see docs/analysis.md).")
VERDICT_CLASS = {"high": "verdict-high", "moderate": "verdict-moderate", "none": "verdict-none", "unknown": "verdict-unknown", None: "verdict-unknown"}
# Idle share card colour: above these shares of step time an idle device is worth a look / a problem.
IDLE_CLASS = ((0.40, "verdict-high"), (0.15, "verdict-moderate"), (0.0, "verdict-none"))
NO_RECOMMENDATION = "none: no cause idles the device 2% of step time or more"
MAX_RANK_GROUPS = 8  # step bars per rank side by side up to this many ranks, else the mean over ranks

OUTPUTS = (
    ("overview-idle-share", "children"),
    ("overview-idle-caption", "children"),
    ("overview-idle-card", "className"),
    ("overview-idle-causes", "children"),
    ("overview-input-share", "children"),
    ("overview-verdict", "children"),
    ("overview-verdict-card", "className"),
    ("overview-mean-step", "children"),
    ("overview-steps", "children"),
    ("overview-steps-caption", "children"),
    ("overview-ranks", "children"),
    ("overview-devices", "children"),
    ("step-graph", "figure"),
    ("overview-recommendations", "children"),
    ("overview-notes", "children"),
)


def layout(board: Any) -> list:
    from dash import html

    cards = html.Div(
        [
            html.Div(
                [
                    html.Div("Accelerator idle", className="label", id="overview-idle-label"),
                    html.Div("…", id="overview-idle-share", className="value"),
                    html.Div("", id="overview-idle-caption", className="caption"),
                    html.Ul(id="overview-idle-causes", className="cause-list"),
                ],
                className="card card-wide",
                id="overview-idle-card",
            ),
            card("Input wait", "overview-input-share", "share of step time waiting for data, device idle"),
            card("Verdict", "overview-verdict", f"input-bound at ≥{MODERATE_THRESHOLD:.0%} (moderate), ≥{HIGH_THRESHOLD:.0%} (high)", card_id="overview-verdict-card"),
            card("Mean step time", "overview-mean-step", "steady state, warm-up left out"),
            card("Steps", "overview-steps", caption_id="overview-steps-caption"),
        ],
        className="cards",
    )
    findings = html.Div(
        [
            html.Div([html.H3("Recommendations"), html.Ul(id="overview-recommendations")], className="recommendations"),
            html.Div([html.H3("Notes"), html.Ul(id="overview-notes")]),
        ],
        className="findings",
    )
    # A job of several ranks: its straggler (or that none held it back), under the cards.
    ranks_line = html.Div(id="overview-ranks", className="overview-ranks")
    return [section(TITLE, SUB, cards, ranks_line, html.Div(id="overview-devices", className="devices"), loading(graph("step-graph")), findings)]


MEMORY_ONLY = "a memory snapshot records no timeline, so there are no steps, idle causes or device figures: see the Memory section"


def oom_banner(report: Any) -> list:
    """A red line when training ran out of memory (``Report.oom``), above the ranks' lines."""
    if report.oom is None:
        return []
    html = require("dash.html", "dashboard", "accelscope dashboard")
    text = report.oom.text
    return [html.Div([html.B("Out of memory: "), text.removeprefix("out of memory ")], className="rank-line rank-straggler", id="overview-oom")]


def idle_class(share: float) -> str:
    return next(cls for floor, cls in IDLE_CLASS if share >= floor)


def render(board: Any, value: Any) -> tuple:
    """The section's outputs (``OUTPUTS``) for the run the picker names."""
    index = board.requested(value)
    html = require("dash.html", "dashboard", "accelscope dashboard")
    view = board.views[index]
    rep = view.report
    fig = board.figure(index, "step", lambda v: step_figure(v.report))
    if rep is None:
        notes = [html.Li(n) for n in view.run.read_warnings] + [html.Li("no events recorded: call prof.step() once per training step")]
        return ("—", "no steps recorded", "card card-wide verdict-unknown", [], "—", "no steps recorded", "card verdict-unknown",
                "—", "0", "", [], devices_table(rep), fig, [html.Li("none", className="none")], notes)
    if rep.run.memory_only:  # a memory snapshot: its windows are not steps, so no timing card means anything
        line = html.Div([html.B("Allocator events only: "), MEMORY_ONLY], className="rank-line", id="overview-memory-only")
        recs = [html.Li(r) for r in rep.recommendations] or [html.Li(NO_RECOMMENDATION, className="none")]
        return ("—", "no timeline recorded", "card card-wide verdict-unknown", [], "—", "no timeline recorded", "card verdict-unknown",
                "—", "—", "", oom_banner(rep) + [line], devices_table(rep), empty_figure(MEMORY_ONLY), recs, [html.Li("none", className="none")])
    thing = "accelerator" if rep.has_device else "compute thread"
    basis = f"over {rep.basis.text}" if rep.basis.steps != rep.timing_basis.steps else f"over {rep.timing_basis.text}"
    causes = [
        html.Li([html.Span(f"{share:.1%}", className="cause-share"), " ", CAUSE_TEXT[c]])
        for c, _, share in rep.idle_causes[:3]
    ] or [html.Li("never idle", className="none")]
    warm = bool(rep.steps["warmup"].any())
    n_ranks = len(rep.run.ranks)
    found = {"steps": "training steps recorded", "iterations": "iterations: no training steps marked",
             "equal windows": "equal windows: no steps or iterations found"}[rep.step_unit]
    steps_caption = (found if rep.step_unit != "steps" or not warm else "step 0 counted as warm-up") + (f" · {n_ranks} ranks" if n_ranks > 1 else "")
    notes = [html.Li(n) for n in rep.notes] or [html.Li("none", className="none")]
    recs = [html.Li(r) for r in rep.recommendations] or [html.Li(NO_RECOMMENDATION, className="none")]
    return (
        f"{rep.idle_share * 100:.1f}%",
        f"of {rep.step_word} time the {thing} sat idle (busy {rep.busy_share:.1%}) · {basis}",
        f"card card-wide {idle_class(rep.idle_share)}",
        causes,
        "unknown" if "input_wait_share" in rep.unknown else f"{rep.input_wait_share * 100:.1f}%",
        VERDICT_TEXT[rep.verdict],
        f"card {VERDICT_CLASS[rep.verdict]}",
        f"{rep.mean_step_ns / 1e6:,.1f} ms" if np.isfinite(rep.mean_step_ns) else "—",
        str(rep.n_steps),
        steps_caption,
        oom_banner(rep) + summary_block(rep, link=True),
        devices_table(rep),
        fig,
        recs,
        notes,
    )


def devices_table(report: Any) -> Any:
    """Utilisation per device: how busy, why idle, its streams and counters."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    if report is None or report.devices.height == 0:
        return html.P("No steps were analysed, so there is no utilisation to summarise.", className="details-hint")
    has_device = report.has_device
    headers, rows, rest = device_rows(report.devices, has_device)
    body = []
    for share, cells in zip(report.devices["busy_share"].to_list(), rows):
        pct = 0.0 if share is None else max(0.0, min(100.0, 100 * share))
        busy = html.Td([html.Span(className="busy-bar", style={"width": f"{pct:.1f}%"}), html.Span(cells[1])], className="busy")
        body.append(html.Tr([html.Td(cells[0]), busy, *[html.Td(c) for c in cells[2:]]]))
    table = html.Table([html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(body)], className="device-table")
    what = (f"each device's busy share of step time (kernels, copies, memsets; each instant once) over {report.basis.text}" if has_device else
            f"no device work was traced: the training thread's busy share of step time (busy whenever it is not waiting) over {report.basis.text}")
    notes = [rest] if rest else []
    notes += capture_lines(report.devices)
    return [html.H3("Utilisation per device"), html.P(what, className="details-hint"), table, *[html.P(n, className="details-hint") for n in notes]]


# -- the step figure: one stacked bar per step (a group of bars per rank), split by category -------
def step_figure(report: Any) -> Any:
    """Every step's breakdown as stacked bars (warm-up hatched), the mean step as a line. With
    several ranks, each step has one stacked bar per rank side by side (up to
    ``MAX_RANK_GROUPS`` ranks; beyond, each step's mean over the ranks, said so in the title)."""
    go = plotly_go()
    if report is None or report.steps.height == 0:
        return empty_figure("No steps recorded: call prof.step() once per training step.")
    st = report.steps
    ranks = st["rank"].unique().sort().to_list()
    title = None
    if len(ranks) > MAX_RANK_GROUPS:
        st = st.group_by("step").agg(pl.col("name").first(), pl.col("warmup").all(), pl.col("dur_ns").mean(), *[pl.col(f"{c}_ns").mean() for c in BREAKDOWN]).sort("step").with_columns(rank=pl.lit(-1))
        ranks, title = [-1], f"mean over the {len(report.run.ranks)} ranks per step"
    parts = [c for c in BREAKDOWN if st[f"{c}_ns"].sum() > 0]
    traces = []
    for i, rank in enumerate(ranks):
        r = st.filter(pl.col("rank") == rank).sort("step")
        x = r["step"].to_list()
        warm = r["warmup"].to_list()
        totals = (r["dur_ns"].to_numpy() / 1e6).tolist()
        base = np.zeros(r.height)
        who = f"rank {rank} · " if len(ranks) > 1 else ""
        for category in parts:
            values = r[f"{category}_ns"].to_numpy() / 1e6
            label = category.replace("_", " ")
            hover = [
                f"<b>{who}{name}</b>{' (warm-up)' if w else ''}<br>{label} {v:,.2f} ms ({v / t if t else 0:.0%} of {t:,.1f} ms)"
                for name, w, v, t in zip(r["name"].to_list(), warm, values.tolist(), totals)
            ]
            bar = dict(
                name=label, legendgroup=label, showlegend=i == 0, x=x, y=values.tolist(),
                marker=dict(color=BREAKDOWN_COLORS.get(category, REST_COLOR), opacity=[0.45 if w else 1.0 for w in warm],
                            pattern=dict(shape=["/" if w else "" for w in warm], fgcolor="white", size=6, solidity=0.3)),
                hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
            )
            if len(ranks) > 1:
                bar.update(base=base.tolist(), offsetgroup=str(rank))
            traces.append(go.Bar(**bar))
            base = base + values
    fig = go.Figure(traces)
    annotations = []
    for rank in ranks[:1]:
        r = st.filter(pl.col("rank") == rank)
        for s, total in r.filter(pl.col("warmup")).select("step", "dur_ns").iter_rows():
            annotations.append(dict(x=s, y=total / 1e6, text="warm-up", showarrow=False, yanchor="bottom", yshift=2, font=dict(size=11, color="#6B7280")))
    shapes = []
    mean_ms = report.mean_step_ns / 1e6 if np.isfinite(report.mean_step_ns) else None
    if mean_ms is not None:
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=mean_ms, y1=mean_ms, line=dict(color="#2b2f36", width=1, dash="dot")))
        label = f"mean {mean_ms:,.1f} ms" + (" (all ranks)" if len(report.run.ranks) > 1 else "")
        annotations.append(dict(xref="paper", x=1, y=mean_ms, text=label, showarrow=False, xanchor="right", yanchor="bottom", font=dict(size=11, color="#2b2f36"), bgcolor="rgba(255,255,255,0.8)"))
    steps = st["step"].unique().to_list()
    fig.update_layout(
        **base_layout(height=320, margin=dict(l=60, r=20, t=30 if title is None else 46, b=45)),
        barmode="stack" if len(ranks) == 1 else "group",
        bargap=0.25,
        bargroupgap=0.06,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, traceorder="normal"),
        xaxis=dict(title="step" if len(ranks) == 1 else "step (one bar per rank, in rank order)", showgrid=False, **step_ticks(steps)),
        yaxis=dict(title="time (ms)", rangemode="tozero"),
        shapes=shapes,
        annotations=annotations,
        hovermode="closest",
        **({"title": dict(text=title, font=dict(size=12), x=0.01)} if title else {}),
    )
    return fig


def warm_up() -> None:
    """Plotly loads its template and each bar property's validator on first use (~0.2 s)."""
    go = plotly_go()
    fig = go.Figure([go.Bar(x=[0, 1], y=[1.0, 1.0], base=[0.0, 0.0], offsetgroup="0", legendgroup="a", showlegend=True,
                            marker=dict(color="#000", opacity=[1.0, 0.5], pattern=dict(shape=["/", ""], fgcolor="white", size=6, solidity=0.3)),
                            hovertext=["a", "b"], hovertemplate="%{hovertext}")])
    fig.update_layout(**base_layout(height=100), barmode="stack", bargap=0.2, bargroupgap=0.1, xaxis=dict(tickmode="linear", tick0=0, dtick=1, tickformat="d"),
                      shapes=[dict(type="line", x0=0, x1=1, y0=0, y1=0)], annotations=[dict(text="a", x=0, y=0)])


def register(app: Any, board: Any) -> None:
    dash = require("dash", "dashboard", "accelscope dashboard")
    app.callback(*[dash.Output(cid, prop) for cid, prop in OUTPUTS], dash.Input("run-select", "value"))(lambda value: render(board, value))

"""Plotly figures for the dashboard, built from the tables in ``accelscope.dashboard.data``.

Plotly is imported when a figure is built, so this module imports without it.
"""

from __future__ import annotations

from accelscope.dashboard.data import STEPS_LANE, RunView, Series, StepBars, Timeline
from accelscope.errors import require
from accelscope.traces import schema as S

TEMPLATE = "plotly_white"
FONT = dict(family="Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif", size=12, color="#2b2f36")

# One colour per kind of slice; input waits get the strongest.
KIND_COLORS = {
    S.KERNEL: "#4C78A8",
    S.MEMCPY: "#F58518",
    S.MEMSET: "#B279A2",
    getattr(S, "SYNC", "sync"): "#6F4E7C",  # device synchronisation: a wait, not work
    S.CPU_OP: "#5FA8A3",
    S.RUNTIME: "#E2B93B",
    S.PYTHON: "#9D755D",
    S.INPUT_WAIT: "#D62728",
    S.STEP: "#8A8F98",
    S.ANNOTATION: "#59A14F",
    S.OTHER: "#B8B8B8",
    "idle gap": "rgba(255, 140, 0, 0.55)",  # the analyzer's idle gaps, on device lanes
}
STEP_COLORS = ("#7C8594", "#B3BAC5")  # alternating steps
INPUT_WAIT_COLOR = KIND_COLORS[S.INPUT_WAIT]
REST_COLOR = "#4C78A8"
VERDICT_COLORS = {"high": "#C62828", "moderate": "#E08E0B", "none": "#2E7D32", None: "#6B7280"}

ROW_PX = 22  # timeline row height
LINE_PX = 15  # timeline slice thickness
# The timeline and the metrics share their time axis: same plot-area margins, so they line up.
TIME_MARGIN = dict(l=180, r=24)
LANE_LABEL_CHARS = 26


def _go():
    return require("plotly.graph_objects", "dashboard", "accelscope dashboard")


def _base_layout(**extra) -> dict:
    layout = dict(
        template=TEMPLATE,
        font=FONT,
        margin=dict(l=60, r=20, t=40, b=50),
        hoverlabel=dict(bgcolor="white", font_size=12, bordercolor="#c9ced6"),
    )
    layout.update(extra)
    return layout


def _empty(message: str, height: int = 260):
    go = _go()
    fig = go.Figure()
    fig.update_layout(
        **_base_layout(height=height),
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        annotations=[dict(text=message, showarrow=False, font=dict(size=14, color="#6B7280"), xref="paper", yref="paper", x=0.5, y=0.5)],
    )
    return fig


# The analyzer's per-step categories: device work in blues/greens, waiting in red, host in slate.
BREAKDOWN_COLORS = {
    "kernel": "#3B6EA8",
    "communication": "#7B5EA7",
    "memcpy": "#2A9D8F",
    "memset": "#8AB17D",
    "runtime": "#E9A23B",
    "input_wait": INPUT_WAIT_COLOR,
    "host_compute": "#8E9AAF",
    "other_idle": "#D9DDE3",
}


# -- overview: one stacked bar per step, split by the analyzer's categories ------------------
def step_figure(bars: StepBars):
    go = _go()
    if not bars.step:
        return _empty("No steps recorded: call prof.step() once per training step.")
    warm = bars.warmup
    opacity = [0.45 if w else 1.0 for w in warm]
    pattern = dict(shape=["/" if w else "" for w in warm], fgcolor="white", size=6, solidity=0.3)
    totals = [wait + rest for wait, rest in zip(bars.input_wait_ms, bars.rest_ms)]
    traces = []
    for category, values in bars.parts:
        label = category.replace("_", " ")
        hover = [
            f"<b>{name}</b>{' (warm-up)' if w else ''}<br>{label} {v:,.2f} ms ({v / t if t else 0:.0%} of {t:,.1f} ms)"
            for name, w, v, t in zip(bars.name, warm, values, totals)
        ]
        traces.append(
            go.Bar(
                name=label,
                x=bars.step,
                y=values,
                marker=dict(color=BREAKDOWN_COLORS.get(category, REST_COLOR), opacity=opacity, pattern=pattern),
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    fig = go.Figure(traces)
    annotations = []
    for i, w in enumerate(warm):
        if w:
            annotations.append(
                dict(x=bars.step[i], y=bars.input_wait_ms[i] + bars.rest_ms[i], text="warm-up", showarrow=False, yanchor="bottom", yshift=2, font=dict(size=11, color="#6B7280"))
            )
    shapes = []
    if bars.mean_step_ms is not None:
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=bars.mean_step_ms, y1=bars.mean_step_ms, line=dict(color="#2b2f36", width=1, dash="dot")))
        annotations.append(
            dict(xref="paper", x=1, y=bars.mean_step_ms, text=f"mean {bars.mean_step_ms:,.1f} ms", showarrow=False, xanchor="right", yanchor="bottom", font=dict(size=11, color="#2b2f36"), bgcolor="rgba(255,255,255,0.8)")
        )
    fig.update_layout(
        **_base_layout(height=320, margin=dict(l=60, r=20, t=30, b=45)),
        barmode="stack",
        bargap=0.25,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, traceorder="normal"),
        xaxis=dict(title="step", showgrid=False),
        yaxis=dict(title="time (ms)", rangemode="tozero"),
        shapes=shapes,
        annotations=annotations,
        hovermode="closest",
    )
    return fig


# -- timeline -----------------------------------------------------------------------------------
def timeline_figure(tl: Timeline, uirevision: str | None = None):
    go = _go()
    if not tl.lanes:
        return _empty("No slices recorded in this run.")
    traces = []
    legend_done: set[str] = set()
    for seg in tl.segments:
        if seg.kind.startswith(S.STEP):
            kind = S.STEP
            color = STEP_COLORS[0] if seg.kind == S.STEP else STEP_COLORS[1]
        else:
            kind = seg.kind
            color = KIND_COLORS.get(kind, KIND_COLORS[S.OTHER])
        traces.append(
            go.Scattergl(
                name=kind,
                legendgroup=kind,
                showlegend=kind not in legend_done,
                x=seg.x,
                y=seg.y,
                text=seg.text,
                mode="lines",
                line=dict(color=color, width=LINE_PX if kind != S.STEP else LINE_PX - 3),
                hovertemplate="%{text}<extra></extra>",
                connectgaps=False,
            )
        )
        legend_done.add(kind)
    # Put the input waits on top so they are never hidden.
    traces.sort(key=lambda t: t.name == S.INPUT_WAIT)

    rows = tl.rows
    shapes = [
        dict(type="rect", xref="x", yref="paper", x0=a, x1=b, y0=0, y1=1, fillcolor="rgba(60,72,88,0.06)", line=dict(width=0), layer="below")
        for a, b in tl.step_bands
    ]
    for lane in tl.lanes[1:]:
        y = lane.row0 - 0.5
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=y, y1=y, line=dict(color="#d5d9e0", width=1), layer="below"))
    tickvals = [lane.row0 + (lane.rows - 1) / 2 for lane in tl.lanes]
    ticktext = [_lane_tick(lane.label, lane.rows, lane.shown, lane.total) for lane in tl.lanes]

    where = "in this view" if tl.window is not None else "in the run"
    if tl.dropped:
        title = (
            f"{tl.shown_slices:,} of {tl.total_slices:,} slices {where} shown: the longest {tl.max_per_lane:,} per lane; "
            f"{tl.dropped:,} shorter slices not drawn (zoom in to see them)"
        )
        title_color = "#B45309"
    else:
        title = f"{tl.total_slices:,} slices {where} on {len(tl.lanes)} lanes · drag to zoom, double-click to reset"
        title_color = "#6B7280"
    height = max(260, rows * ROW_PX + 120)
    fig = go.Figure(traces)
    fig.update_layout(
        **_base_layout(height=height, margin=dict(**TIME_MARGIN, t=64, b=50)),
        title=dict(text=title, font=dict(size=12, color=title_color), x=0, xanchor="left", y=1, yanchor="top", pad=dict(t=8), xref="paper"),
        showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0, itemsizing="constant", traceorder="normal"),
        xaxis=dict(title="time since run start (ms)", range=list(tl.x_range), showgrid=True, gridcolor="#eef0f3", zeroline=False, ticksuffix=""),
        yaxis=dict(
            range=[rows - 0.5, -0.5],
            tickmode="array",
            tickvals=tickvals,
            ticktext=ticktext,
            showgrid=False,
            zeroline=False,
            fixedrange=True,
            automargin=False,
            ticks="",
            ticklabelstandoff=8,
        ),
        shapes=shapes,
        hovermode="closest",
        hoverdistance=12,
        dragmode="zoom",
        uirevision=uirevision,
    )
    return fig


def _lane_tick(label: str, rows: int, shown: int, total: int) -> str:
    if len(label) > LANE_LABEL_CHARS:
        label = label[: LANE_LABEL_CHARS - 1] + "…"
    text = label if label != STEPS_LANE else "<b>steps</b>"
    if shown < total:
        text += f"<br><span style='font-size:10px;color:#B45309'>{shown:,} of {total:,} slices</span>"
    return text


# -- host metrics ---------------------------------------------------------------------------------
METRIC_COLORS = ["#4C78A8", "#F58518", "#8A8F98", "#59A14F", "#B279A2", "#9D755D", "#E2B93B", "#5FA8A3"]
GROUP_TITLES = {"cpu": "CPU (%)", "memory": "Memory (MiB)", "count": "Processes"}


def metrics_figure(series: list[Series], x_range: tuple[float, float]):
    go = _go()
    if not series:
        return _empty("No host metrics sampled in this run.")
    make_subplots = require("plotly.subplots", "dashboard", "accelscope dashboard").make_subplots
    groups = [g for g in ("cpu", "memory", "count") if any(s.group == g for s in series)]
    heights = {"cpu": 1.0, "memory": 1.0, "count": 0.5}
    total = sum(heights[g] for g in groups)
    fig = make_subplots(
        rows=len(groups),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.14 if len(groups) > 1 else 0.0,
        row_heights=[heights[g] / total for g in groups],
    )
    for r, group in enumerate(groups, start=1):
        legend = "legend" if r == 1 else f"legend{r}"
        members = [s for s in series if s.group == group]
        for i, s in enumerate(members):
            unit = {"cpu": "%", "memory": " MiB", "count": ""}[group]
            fig.add_trace(
                go.Scatter(
                    name=s.label,
                    x=s.x_ms,
                    y=s.y,
                    mode="lines",
                    line=dict(color=METRIC_COLORS[i % len(METRIC_COLORS)], width=2 if i == 0 else 1.5, shape="linear"),
                    legend=legend,
                    hovertemplate=f"{s.label}: %{{y:,.1f}}{unit}<extra></extra>",
                ),
                row=r,
                col=1,
            )
        fig.update_yaxes(rangemode="tozero", row=r, col=1, gridcolor="#eef0f3", title=dict(text=GROUP_TITLES[group], font=dict(size=12, color="#4b5563")))
    # One legend per subplot, on the line of its title.
    legends = {}
    for r in range(1, len(groups) + 1):
        top = fig.get_subplot(r, 1).yaxis.domain[1]
        key = "legend" if r == 1 else f"legend{r}"
        legends[key] = dict(orientation="h", x=1, xanchor="right", y=top, yanchor="bottom", bgcolor="rgba(0,0,0,0)", font=dict(size=11))
    fig.update_layout(
        **_base_layout(height=130 + 150 * len(groups), margin=dict(**TIME_MARGIN, t=34, b=50)),
        hovermode="x unified",
        **legends,
    )
    fig.update_xaxes(range=list(x_range), gridcolor="#eef0f3", showspikes=True, spikemode="across", spikethickness=1, spikecolor="#9aa1ab")
    fig.update_xaxes(title_text="time since run start (ms)", row=len(groups), col=1)
    return fig


def figures_for(view: RunView, uirevision: str | None = None) -> dict:
    """All three figures of one run (the dashboard caches this per run)."""
    return {
        "step": step_figure(view.step_bars),
        "timeline": timeline_figure(view.timeline, uirevision),
        "metrics": metrics_figure(view.metrics, (0.0, max(view.end_ms, 1e-3))),
    }

"""The timeline as a Plotly figure: lanes of line segments, invisible hover points, step
bands, and beneath them the queue-depth track and the launch-latency plot.

Plotly is imported when a figure is built, so this module imports without it.
"""

from __future__ import annotations

import html

import numpy as np
import polars as pl

from accelscope.dashboard.formatting import format_duration_ns
from accelscope.dashboard.theme import KIND_COLORS, STEP_COLORS, TIME_MARGIN, base_layout, empty_figure, plotly_go
from accelscope.dashboard.timeline.lanes import STEPS, Lane, short_label
from accelscope.dashboard.timeline.launches import LATENCY_PLOT_PX, MAX_FLOWS, Latency
from accelscope.dashboard.timeline.marks import MarkTrace, Timeline
from accelscope.traces import schema as S

ROW_PX = 22  # timeline row height
LINE_PX = 15  # timeline slice thickness
LATENCY_DASH_PX = 4  # a latency point: a dash this wide and thick
LANE_LABEL_CHARS = 38  # fits the time axes' left margin (theme.TIME_MARGIN) at 12 px
MERGED_OPACITY = 0.55  # merged marks are drawn lighter than slices drawn one by one
PANEL_GAP_PX = 56  # room between the lanes and each scheduling panel, for its title
QUEUE_PX = 110
FLOW_COLOR = "rgba(60, 72, 88, 0.35)"
HOVER_LABEL = dict(bgcolor="white", font=dict(color="#1f2430", size=12), bordercolor="#9aa1ab")
LATENCY_TEMPLATE = (
    "<b>%{text}</b><br>launch → start %{customdata[3]:.3~s}s<br>launched at %{customdata[5]:,.3f} ms, started at %{x:,.3f} ms<extra></extra>"
)
STREAM_COLORS = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D", "#EECA3B"]


def _dashes(x: np.ndarray, half: float) -> np.ndarray:
    """[x - half, x + half, NaN] per point: short horizontal segments, one path for them all."""
    out = np.empty((np.size(x), 3), dtype=np.float64)
    out[:, 0] = np.asarray(x, dtype=np.float64) - half
    out[:, 1] = out[:, 0] + 2 * half
    out[:, 2] = np.nan
    return out.ravel()


def _strings(texts: list[str] | None) -> np.ndarray | None:
    """Per-point strings as a numpy unicode array: plotly validates it at once, not string by string."""
    return None if texts is None else np.asarray(texts, dtype=str)


def click_ids(custom: np.ndarray) -> np.ndarray:
    """"category,first,last" per point, sent as ``hovertext``: Dash puts a clicked point's
    hovertext in clickData, but reads customdata from the figure as sent, where a base64
    array cannot be indexed. (The hovertemplate shows neither.)"""
    if custom.size == 0:
        return np.array([], dtype=str)
    ids = pl.DataFrame({c: custom[:, i].astype(np.int64) for i, c in enumerate(("c", "a", "b"))})
    return ids.select(pl.concat_str([pl.col("c"), pl.col("a"), pl.col("b")], separator=",")).to_series().to_numpy().astype(str)


def _mark_trace(go, tr: MarkTrace, show_legend: bool):
    if tr.kind == S.STEP:
        color = STEP_COLORS[1] if tr.name.endswith("(odd)") else STEP_COLORS[0]
        width = LINE_PX - 3
    else:
        color = KIND_COLORS.get(tr.kind, KIND_COLORS[S.OTHER])
        width = LINE_PX
    return go.Scatter(
        name=tr.kind,
        legendgroup=tr.kind,
        showlegend=show_legend,
        x=tr.x_ms,
        y=tr.y,
        mode="lines",
        line=dict(color=color, width=width),
        opacity=MERGED_OPACITY if tr.merged else 1.0,
        hoverinfo="skip",
        connectgaps=False,
        meta=dict(marks=tr.marks, slices=tr.slices, merged=tr.merged, trace=tr.name),
    )


def _title(tl: Timeline, static: bool = False) -> str:
    """Two lines: what is drawn (slices, marks, what was merged), then what to do (a static
    report's figure has no server behind it: zooming only enlarges what was drawn)."""
    shown = tl.ranks_shown
    of_ranks = f" of rank{'s' if len(shown) > 1 else ''} {', '.join(map(str, shown))}" if shown else ""
    where = ("in this view" if tl.window is not None else "in the run") + of_ranks
    text = f"{tl.total_slices:,} slices {where} on {len(tl.lanes)} lanes, drawn as {tl.marks:,} marks"
    if tl.merged_slices:
        text += (
            f": {tl.kept_slices:,} one by one, {tl.merged_slices:,} shorter than a pixel ({format_duration_ns(tl.bucket_ns)})"
            f" merged into {tl.merged_marks:,} lighter marks"
        )
    hints = []
    if tl.flows is not None:
        if tl.flows.shown:
            hints.append(f"{tl.flows.shown:,} launch → kernel arrows")
        elif tl.flows.in_view > MAX_FLOWS:
            hints.append(f"launch → kernel arrows below {MAX_FLOWS} launches in view ({tl.flows.in_view:,} now)")
    if tl.folded_threads:
        hints.append(f"{tl.folded_threads:,} minor host threads folded into one lane per rank")
    if static:
        hints.append("a static picture of the whole run: open the run in `accelscope dashboard` to zoom into every slice")
    else:
        hints.append("drag to zoom, double-click to reset, click a mark for details")
    return text + "<br>" + " · ".join(hints)


def latency_title(lat: Latency) -> str:
    if lat.in_view == 0 or lat.median_ns is None or lat.p90_ns is None:
        return "launch → start latency: no device work starts in this view"
    text = (
        f"launch → start latency of {lat.in_view:,} device ops: median {format_duration_ns(lat.median_ns)}, "
        f"p90 {format_duration_ns(lat.p90_ns)}"
    )
    if lat.run_median_ns is not None and lat.run_p90_ns is not None and (lat.run_median_ns, lat.run_p90_ns) != (lat.median_ns, lat.p90_ns):
        text += f" (whole run: {format_duration_ns(lat.run_median_ns)}, {format_duration_ns(lat.run_p90_ns)})"
    if lat.thinned:
        text += f" · one point per {lat.cell_px:.3g}×{lat.cell_px:.3g} px"
    return text


def queue_title(queue: list) -> str:
    peak = max((q.max_in_view for q in queue), default=0)
    return f"queue depth per stream (device ops launched, not finished) · max {peak:,} in view"


def timeline_figure(tl: Timeline, uirevision: str | None = None, static: bool = False):
    """The figure of a ``Timeline``; ``static``: for a file with no server behind it (the HTML report)."""
    go = plotly_go()
    if not tl.lanes:
        return empty_figure("No slices recorded in this run.")
    traces = []
    legend_done: set[str] = set()
    for tr in tl.traces:  # one legend entry per kind (it toggles the kind's merged marks too)
        traces.append(_mark_trace(go, tr, tr.kind not in legend_done))
        legend_done.add(tr.kind)
    # Merged marks under the slices they sit beside; input waits on top so they are never hidden.
    traces.sort(key=lambda t: (t.name == S.INPUT_WAIT, not t.meta["merged"]))

    if tl.flows is not None and tl.flows.shown:
        sizes = np.tile(np.array([0, 8, 0], dtype=np.float32), tl.flows.shown)
        traces.append(
            go.Scatter(
                name="launch → kernel",
                x=tl.flows.x_ms,
                y=tl.flows.y,
                mode="lines+markers",
                line=dict(color=FLOW_COLOR, width=1),
                marker=dict(size=sizes, symbol="triangle-down", color=FLOW_COLOR),
                hoverinfo="skip",
                connectgaps=False,
            )
        )
    for h in tl.hover:
        traces.append(
            go.Scatter(
                name=h.name,
                x=h.x_ms,
                y=h.y,
                text=_strings(h.text),
                customdata=h.custom,
                hovertext=click_ids(h.custom),
                # Nothing drawn, yet hovered and clicked on its points: transparent markers
                # would cost one SVG node per mark.
                mode="none",
                hoveron="points",
                hoverlabel=HOVER_LABEL,  # the trace draws nothing: plotly would take its hover colours from that
                hovertemplate=h.template,
                showlegend=False,
            )
        )

    # Vertical layout in pixels: lanes, then the queue-depth track, then the latency plot.
    rows = tl.rows
    lanes_px = rows * ROW_PX
    panels: list[tuple[str, int]] = []
    if tl.queue:
        panels.append(("queue", QUEUE_PX))
    if tl.latency is not None and tl.latency.in_view >= 0 and (tl.latency.in_view or tl.latency.run_median_ns is not None):
        panels.append(("latency", LATENCY_PLOT_PX))
    plot_px = lanes_px + sum(PANEL_GAP_PX + px for _, px in panels)
    domains: dict[str, tuple[float, float]] = {}
    top = plot_px
    domains["lanes"] = ((top - lanes_px) / plot_px, 1.0)
    top -= lanes_px
    axis_of = {"lanes": "y"}
    for i, (name, px) in enumerate(panels, start=2):
        top -= PANEL_GAP_PX
        domains[name] = (max(top - px, 0) / plot_px, top / plot_px)
        axis_of[name] = f"y{i}"
        top -= px
    annotations = []
    extra_axes: dict[str, dict] = {}
    # Each panel has its own x axis matching the lanes' one, anchored to the panel: an x axis drawn
    # away from a subplot leaves its drag strip inside that subplot, over the device lane.
    x_common = dict(range=list(tl.x_range), showgrid=True, gridcolor="#eef0f3", zeroline=False)
    for name, _ in panels:
        ax = axis_of[name]
        xa = "x" + ax[1:]
        key = "yaxis" + ax[1:]
        lo, hi = domains[name]
        last = name == panels[-1][0]
        extra_axes["xaxis" + ax[1:]] = dict(
            x_common, matches="x", anchor=ax, showticklabels=last, title="time since run start (ms)" if last else None
        )
        common = dict(domain=[lo, hi], anchor=xa, fixedrange=True, gridcolor="#eef0f3", zeroline=False, rangemode="tozero")
        if name == "queue":
            extra_axes[key] = dict(common, title=dict(text="ops queued", font=dict(size=11, color="#4b5563")))
            for i, q in enumerate(tl.queue):
                traces.append(
                    go.Scatter(
                        name=q.label,
                        legendgroup="queue",
                        showlegend=False,
                        x=q.x_ms,
                        y=q.depth,
                        mode="lines",
                        line=dict(color=STREAM_COLORS[i % len(STREAM_COLORS)], width=1.5, shape="hv"),
                        fill="tozeroy",
                        xaxis=xa,
                        yaxis=ax,
                        hovertemplate=f"{q.label}: %{{y}} queued at %{{x:.3f}} ms<extra></extra>",
                    )
                )
            title = queue_title(tl.queue)
        else:
            lat = tl.latency
            unit_ms = lat.run_p90_ns is not None and lat.run_p90_ns >= 1e6
            extra_axes[key] = dict(common, title=dict(text="latency (ms)" if unit_ms else "latency (µs)", font=dict(size=11, color="#4b5563")))
            # Each point is drawn as a dash LATENCY_DASH_PX wide in one SVG path per stream (markers
            # would be a node each, ~0.1 ms apiece), hovered through a trace that draws nothing.
            half_ms = (tl.x_range[1] - tl.x_range[0]) / max(tl.width_px, 1) * LATENCY_DASH_PX / 2
            for i, s in enumerate(lat.series):
                y = s.latency_us / 1e3 if unit_ms else s.latency_us
                color = STREAM_COLORS[i % len(STREAM_COLORS)]
                traces.append(
                    go.Scatter(
                        name=s.label,
                        legendgroup="latency",
                        showlegend=False,
                        x=_dashes(s.x_ms, half_ms),
                        y=np.repeat(np.asarray(y, dtype=np.float64), 3),
                        mode="lines",
                        line=dict(color=color, width=LATENCY_DASH_PX),
                        opacity=0.75,
                        connectgaps=False,
                        hoverinfo="skip",
                        xaxis=xa,
                        yaxis=ax,
                    )
                )
                traces.append(
                    go.Scatter(
                        name=f"{s.label} latency details",
                        legendgroup="latency",
                        showlegend=False,
                        x=s.x_ms,
                        y=y,
                        text=_strings(s.text),
                        customdata=s.custom,
                        hovertext=click_ids(s.custom),
                        mode="none",
                        hoveron="points",
                        hoverlabel=dict(HOVER_LABEL, bordercolor=color),
                        xaxis=xa,
                        yaxis=ax,
                        hovertemplate=LATENCY_TEMPLATE if s.text is not None else f"launch → start %{{customdata[3]:.3~s}}s<br>started at %{{x:,.3f}} ms<extra>{s.label}</extra>",
                    )
                )
            title = latency_title(lat)
        annotations.append(
            dict(text=title, xref="paper", yref="paper", x=0, y=hi, yshift=6, xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=12, color="#4b5563"))
        )

    band = dict(type="rect", xref="x", fillcolor="rgba(60,72,88,0.06)", line=dict(width=0), layer="below")
    shapes = [
        dict(band, yref="paper", x0=b.x0_ms, x1=b.x1_ms, y0=0, y1=1) if b.row_lo is None else
        dict(band, yref="y", x0=b.x0_ms, x1=b.x1_ms, y0=b.row_lo - 0.5, y1=b.row_hi + 0.5)
        for b in tl.step_bands
    ]
    for prev, lane in zip(tl.lanes, tl.lanes[1:]):
        y = lane.row0 - 0.5
        new_rank = lane.rank != prev.rank  # a darker line between ranks
        shapes.append(dict(type="line", xref="paper", yref="y", x0=0, x1=1, y0=y, y1=y, line=dict(color="#8a93a3" if new_rank else "#d5d9e0", width=1.5 if new_rank else 1), layer="below"))
    tickvals = [lane.row0 + (lane.rows - 1) / 2 for lane in tl.lanes]
    ticktext = [_lane_tick(lane) for lane in tl.lanes]

    margin = dict(**TIME_MARGIN, t=92, b=50)
    height = max(260, plot_px + margin["t"] + margin["b"])
    # Built from validated traces; the layout alone takes plotly ~50 ms to validate on a first view.
    fig = go.Figure(traces, _validate=False)
    fig.update_layout(
        **base_layout(height=height, margin=margin),
        title=dict(text=_title(tl, static), font=dict(size=12, color="#6B7280"), x=0, xanchor="left", y=1, yanchor="top", pad=dict(t=16), xref="paper"),
        showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0, itemsizing="constant", traceorder="normal"),
        xaxis=dict(x_common, anchor="y", showticklabels=not panels, title="time since run start (ms)" if not panels else None),
        yaxis=dict(
            domain=list(domains["lanes"]),
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
            anchor="x",
        ),
        shapes=shapes,
        annotations=annotations,
        hovermode="closest",
        hoverdistance=12,
        dragmode="zoom",
        uirevision=uirevision,
        meta=dict(width_px=tl.width_px, bucket_ns=tl.bucket_ns, window=list(tl.window) if tl.window else None),
        **extra_axes,
    )
    return fig


def warm_up() -> None:
    """Build one small figure with every trace type and property the timeline uses."""
    go = plotly_go()
    one = np.zeros(1)
    fig = go.Figure(
        [
            go.Scatter(x=one, y=one, mode="lines+markers", line=dict(color="#000", width=1, shape="hv"), marker=dict(size=one, symbol="triangle-down", color="#000", opacity=1.0),
                         text=[""], customdata=np.zeros((1, 3)), hovertemplate="%{text}", hoverinfo="skip", fill="tozeroy", connectgaps=False, opacity=1.0, meta={}, legendgroup="a", yaxis="y2"),
            go.Scatter(x=one, y=one, mode="lines", line=dict(color="#000", width=1), legend="legend2", hovertemplate="%{y}"),
        ]
    )
    fig.update_layout(**base_layout(height=100), yaxis=dict(domain=[0, 1], tickvals=[0], ticktext=["a"]), yaxis2=dict(domain=[0, 1], anchor="x"), shapes=[dict(type="rect", x0=0, x1=1, y0=0, y1=1)],
                      annotations=[dict(text="a", x=0, y=0)], title=dict(text="a", pad=dict(t=1)), legend=dict(itemsizing="constant"), uirevision="a", meta={})


def _lane_tick(lane: Lane) -> str:
    """A lane's label (cut in the middle to fit the margin, steps lanes bold) and, on lanes of
    two rows or more (one row has no room for a second line), how many slices were merged."""
    label = html.escape(short_label(lane.label, LANE_LABEL_CHARS))
    text = f"<b>{label}</b>" if lane.lane_type == STEPS else label
    if lane.merged and lane.rows >= 2:
        text += f"<br><span style='font-size:10px;color:#6B7280'>{lane.total:,} slices, {lane.merged:,} merged</span>"
    return text



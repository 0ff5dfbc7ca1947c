"""The Memory section, for runs with allocator events (``Run.memory``): allocated memory over
time per (rank, device) as a step line, reserved memory dashed where the trace records it,
each device's peak marked (``Report.memory``: bytes, step, op), the device's total dotted
where the run's metadata knows it. Beneath the metrics, on the timeline's time axis and
zoomed with it. Where a panel holds one device whose events carry addresses, what it held is
stacked by category beneath the curve (``memory_categories.run_timeline``). A click on a
curve asks ``memory_live.live_at`` what was live then; the leaks and memory by op are
beneath (``memory_tables``).

The curve is the analyzer's (``analysis.memory.allocated``), thinned for drawing only: per
pixel-wide bucket of time, the rows holding the bucket's most and least allocated and its
last row are kept, so the peak is always drawn and the level between buckets is right. The
categories are thinned the same way, by their sum.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from accelscope.analysis.memory import GROUP, allocated
from accelscope.analysis.memory_categories import CATEGORIES, run_timeline
from accelscope.dashboard.components import graph, grid_box, loading, section
from accelscope.dashboard.sections import memory_tables as mt
from accelscope.dashboard.theme import TIME_MARGIN, base_layout, empty_figure, plotly_go

NAME = "memory"
TITLE = "Memory"
SUB = ("What the allocator held over the run, beneath the timeline on its time axis and zoomed with it: allocated memory per device "
       "(solid), stacked by category (parameters, activations, gradients, ...) where the trace records addresses and the panel holds "
       "one device, reserved by the caching allocator (dashed) where the trace records it, each device's peak marked with its step "
       "and the op running, the device's total (dotted) where it is known. Click the allocated curve or a peak for what was live "
       "then; beneath, the leaks and memory by op.")
NONE = "No allocator events recorded (torch.profiler with profile_memory=True, or a TF/JAX profile)."
HIDDEN = {"display": "none"}
BUCKETS = 2000  # time buckets over the run: about one per pixel of a wide screen
COLORS = ["#4C78A8", "#F58518", "#59A14F", "#B279A2", "#9D755D", "#E2B93B", "#5FA8A3", "#8A8F98"]
GIB, MIB, KIB = 1024**3, 1024**2, 1024
TOTAL_SHOWN_FROM = 0.25  # a device's total is drawn when its peak reaches this share of it, else only in the legend
PANEL_PX, GAP_PX = 220, 40
# The categories' areas, stacked from the bottom in this order: what was held before the trace,
# then the model's state, then what the step makes and frees.
STACK = ("before_trace", "parameter", "optimizer_state", "input", "gradient", "activation", "autograd_detail", "temporary", "unknown")
CATEGORY_COLORS = {"before_trace": "#D5DAE1", "parameter": "#9ECAE9", "optimizer_state": "#C5B0D5", "input": "#8FD3C7",
                   "gradient": "#B2DF8A", "activation": "#FDBF6F", "autograd_detail": "#E7E3A1", "temporary": "#F4CCCC", "unknown": "#BDBDBD"}
RELATIVE = "relative to the capture's start"


def may_have_memory(view: Any) -> bool:
    """Whether a run may have allocator events, read before any analysis: it holds memory
    parts, or it is still being recorded (they may come)."""
    return view.run.live or view.run.holds("memory")


def thin(memory: pl.DataFrame, origin_ns: int, span_ns: int, buckets: int = BUCKETS) -> pl.DataFrame:
    """The rows to draw, per (rank, device) in time order: ``time_ns``, ``allocated_bytes`` and
    ``reserved_bytes`` (``total_reserved_bytes`` forward-filled). Of each of ``buckets`` equal
    spans of time from ``origin_ns``, the rows of the bucket's first maximum and minimum of
    allocated memory and its last row; so the peak (the first maximum) is always kept."""
    rows = allocated(memory).with_columns(reserved_bytes=pl.col("total_reserved_bytes").forward_fill().over(GROUP))
    return thin_rows(rows, pl.col("allocated_bytes"), origin_ns, span_ns, buckets).select(*GROUP, "time_ns", "allocated_bytes", "reserved_bytes")


def thin_rows(rows: pl.DataFrame, value: pl.Expr, origin_ns: int, span_ns: int, buckets: int = BUCKETS) -> pl.DataFrame:
    """Of ``rows`` (per (rank, device) in time order), per bucket of time the rows of the first
    maximum and minimum of ``value`` and the last row, in their order."""
    rows = rows.with_row_index("_i").with_columns(
        _v=value, _b=((pl.col("time_ns") - origin_ns) * buckets / max(span_ns, 1)).floor().cast(pl.Int64))
    per_bucket = rows.group_by([*GROUP, "_b"]).agg(
        hi=pl.col("_i").get(pl.col("_v").arg_max()),
        lo=pl.col("_i").get(pl.col("_v").arg_min()),
        last=pl.col("_i").max(),
    )
    keep = pl.concat([per_bucket.select(_i=pl.col(c)) for c in ("hi", "lo", "last")])["_i"]
    return rows.filter(pl.col("_i").is_in(keep.implode())).drop("_i", "_v", "_b")


def thin_categories(timeline: pl.DataFrame, origin_ns: int, span_ns: int, buckets: int = BUCKETS) -> pl.DataFrame:
    """``memory_categories.timeline``'s rows to draw as stacked areas, thinned as ``thin``
    thins the allocated curve (by the categories' sum, which is what the allocator held)."""
    return thin_rows(timeline.sort([*GROUP, "time_ns"], maintain_order=True), pl.sum_horizontal(CATEGORIES), origin_ns, span_ns, buckets)


def capacities(peaks: pl.DataFrame) -> dict[tuple[int | None, str], int]:
    """(rank, device id) -> the device's total memory, as the report found it (``Report.memory``'s
    ``memory_total_bytes``: NVML's sampled total, else the trace's own)."""
    known = peaks.drop_nulls("memory_total_bytes")
    return {(int(r), str(d)): int(t) for r, d, t in known.select("rank", "device", "memory_total_bytes").iter_rows()}


def display_unit(most: int) -> tuple[str, int]:
    """(unit, bytes per unit) for a panel whose largest value is ``most``: GiB from 2 GiB,
    MiB from 2 MiB, KiB from 2 KiB, else bytes."""
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if most >= 2 * div:
            return unit, div
    return "B", 1


def _size(n: int) -> str:
    return f"{n / GIB:,.2f} GiB" if n >= GIB else f"{n / MIB:,.1f} MiB" if n >= MIB else f"{n:,} B"


def peak_text(peak: dict[str, Any], label: str, held: dict[str, int] | None = None) -> str:
    """A peak's hover text, from its ``Report.memory`` row and what it held by category
    (``Report.categories_at_peak``), the largest first."""
    step = "outside every step" if peak["peak_step"] is None else f"step {peak['peak_step']}"
    op = peak["peak_op"] or "no host op running"
    lines = [f"<b>{label} peak</b>: {_size(peak['peak_allocated_bytes'])} ({peak['peak_allocated_bytes']:,} B)", f"{step} · {op}"]
    if peak["peak_reserved_bytes"] is not None:
        lines.append(f"reserved at most {_size(peak['peak_reserved_bytes'])}")
    if peak["relative"]:
        lines.append(f"{RELATIVE}: the trace records no allocator totals")
    if held:
        most = sorted(held.items(), key=lambda kv: -kv[1])
        lines.append("held: " + ", ".join(f"{c.replace('_', ' ')} {_size(b)}" for c, b in most[:4]) + (", ..." if len(most) > 4 else ""))
    return "<br>".join(lines)


def _total_shown(peak: dict[str, Any], total: int) -> bool:
    """Whether a device's total is drawn rather than left in the legend: not beside a relative
    peak (which does not count what was held before the capture), and only when the peak
    reaches TOTAL_SHOWN_FROM of it (else the curve would be flattened against the axis)."""
    most = max(peak["peak_allocated_bytes"], peak["peak_reserved_bytes"] or 0)
    return not peak["relative"] and most >= TOTAL_SHOWN_FROM * total


def memory_figure(peaks: pl.DataFrame, rows: pl.DataFrame, totals: dict[tuple[int | None, str], int], origin_ns: int, x_range: tuple[float, float],
                  categories: pl.DataFrame | None = None, held: dict[tuple[int, str], dict[str, int]] | None = None):
    """Accelerator devices in one panel, host (``cpu``) allocators in another beneath it, each
    in a unit from its peak; ``peaks`` is ``Report.memory``, ``rows`` from ``thin``. A device's
    total is drawn where ``_total_shown``, else only in the legend (a click draws it). Where a
    panel holds one device and ``categories`` (from ``thin_categories``) has its rows, what it
    held is stacked by category beneath its allocated curve; ``held``: (rank, device) -> its
    categories at the peak, for the peak's hover text."""
    go = plotly_go()
    if peaks.height == 0:
        return empty_figure(NONE)
    multi_rank = peaks["rank"].n_unique() > 1
    panels = [p for p in ("device", "host") if any((d == "cpu") == (p == "host") for d in peaks["device"])]
    plot_px = PANEL_PX * len(panels) + GAP_PX * (len(panels) - 1)
    series = rows.partition_by(GROUP, as_dict=True, maintain_order=True)
    by_category = {} if categories is None else categories.partition_by(GROUP, as_dict=True, maintain_order=True)
    drawn = peaks.sort(pl.col("device") == "cpu", "rank", "device")  # accelerators first: they take the first colours
    colours = {(r["rank"], r["device"]): COLORS[i % len(COLORS)] for i, r in enumerate(drawn.iter_rows(named=True))}
    traces, marks, layout, top = [], [], {}, plot_px  # peak markers first: listed first in the hover box
    for r, panel in enumerate(panels, start=1):
        suffix = "" if r == 1 else str(r)
        lo, hi = (top - PANEL_PX) / plot_px, top / plot_px
        top -= PANEL_PX + GAP_PX
        mine = peaks.filter((pl.col("device") == "cpu") == (panel == "host"))
        most = max(mine["peak_allocated_bytes"].max(), mine["peak_reserved_bytes"].max() or 0)
        unit, div = display_unit(most)
        axes = dict(xaxis="x" + suffix, yaxis="y" + suffix)
        labelled: list[tuple[str, float]] = []  # peak labels of this panel, to write each only once where they coincide
        for p in mine.iter_rows(named=True):
            rank, device = p["rank"], p["device"]
            label = f"{device} (rank {rank})" if multi_rank else device
            colour = colours[(rank, device)]
            group = dict(legendgroup=f"{rank}/{device}", legend="legend" + suffix, **axes)
            stacked = by_category.get((rank, device)) if mine.height == 1 else None  # one device: its areas alone in the panel
            if stacked is not None:
                traces.extend(category_traces(stacked, origin_ns, div, unit, axes, suffix))
            s = series.get((rank, device))
            if s is not None:
                x = (s["time_ns"].to_numpy() - origin_ns) / 1e6
                traces.append(go.Scatter(
                    x=x, y=s["allocated_bytes"].to_numpy() / div, name=f"{label} allocated" + (" (relative)" if p["relative"] else ""),
                    mode="lines", line=dict(color=colour, width=1.6, shape="hv"), meta=dict(role="allocated", rank=rank, device=device),
                    hovertemplate=f"{label} allocated: %{{y:,.2f}} {unit}<extra></extra>", **group))
                if (s["reserved_bytes"].max() or 0) > 0:  # recorded, and not a host allocator's constant 0
                    traces.append(go.Scatter(
                        x=x, y=s["reserved_bytes"].to_numpy() / div, name=f"{label} reserved", mode="lines",
                        line=dict(color=colour, width=1.2, dash="dash", shape="hv"), meta=dict(role="reserved", rank=rank, device=device),
                        hovertemplate=f"{label} reserved: %{{y:,.2f}} {unit}<extra></extra>", **group))
            peak_ms = (p["peak_time_ns"] - origin_ns) / 1e6
            late = peak_ms > x_range[0] + 0.7 * (x_range[1] - x_range[0])  # its label goes left of it, inside the plot
            text = f"peak {_size(p['peak_allocated_bytes'])}" + ("*" if p["relative"] else "")
            near = 0.02 * (x_range[1] - x_range[0])
            if any(t == text and abs(at - peak_ms) <= near for t, at in labelled):
                text = ""  # the same size at the same place (devices of one job): one label over the markers
            else:
                labelled.append((text, peak_ms))
            marks.append(go.Scatter(
                x=[peak_ms], y=[p["peak_allocated_bytes"] / div], name=f"{label} peak", mode="markers+text",
                marker=dict(color=colour, size=12, symbol="triangle-down", line=dict(color="white", width=1)),
                text=[text], textposition="top left" if late else "top right", cliponaxis=False,
                textfont=dict(size=11, color=colour), hovertext=[peak_text(p, label, (held or {}).get((rank, device)))], hoverinfo="text", showlegend=False,
                meta=dict(role="peak", rank=rank, device=device), **group))
            total = totals.get((rank, device), totals.get((None, device)))
            if total is not None:
                traces.append(go.Scatter(
                    x=list(x_range), y=[total / div] * 2, name=f"{label} total ({_size(total)})", mode="lines",
                    line=dict(color=colour, width=1.2, dash="dot"), visible=True if _total_shown(p, total) else "legendonly",
                    meta=dict(role="total", rank=rank, device=device), hovertemplate=f"{label} total: %{{y:,.2f}} {unit}<extra></extra>", **group))
        title = ("Accelerator" if panel == "device" else "Host") + f" memory ({unit})"
        layout["yaxis" + suffix] = dict(domain=[max(lo, 0.0), min(hi, 1.0)], anchor="x" + suffix, rangemode="tozero", gridcolor="#eef0f3",
                                        autorangeoptions=dict(include=[most / div * 1.15]),  # room for the peaks' labels above them
                                        zeroline=False, fixedrange=True, title=dict(text=title, font=dict(size=11.5, color="#4b5563")))
        last = r == len(panels)
        layout["xaxis" + suffix] = dict(anchor="y" + suffix, range=list(x_range), gridcolor="#eef0f3", showticklabels=last,
                                        showspikes=True, spikemode="across", spikethickness=1, spikecolor="#9aa1ab",
                                        title="time since run start (ms)" if last else None, **({} if r == 1 else {"matches": "x"}))
        layout["legend" + suffix] = dict(orientation="h", x=1, xanchor="right", y=hi, yanchor="bottom", bgcolor="rgba(0,0,0,0)", font=dict(size=11))
    if peaks["relative"].any():
        layout["annotations"] = [dict(text=f"* {RELATIVE}: counts only what was allocated while the trace was recorded, not what was held before",
                                      xref="paper", yref="paper", x=0, y=-60 / plot_px, xanchor="left", yanchor="top", showarrow=False,
                                      font=dict(size=11, color="#6B7280"))]
    margin = dict(**TIME_MARGIN, t=34, b=80)
    fig = go.Figure(marks + traces)
    fig.update_layout(**base_layout(height=plot_px + margin["t"] + margin["b"], margin=margin), hovermode="x unified",
                      uirevision="memory", meta=dict(x_range=list(x_range)), **layout)
    return fig


def category_traces(rows: pl.DataFrame, origin_ns: int, div: int, unit: str, axes: dict[str, str], suffix: str) -> list:
    """One device's categories as stacked areas (STACK order, those it ever held), in a legend
    group per category."""
    go = plotly_go()
    x = (rows["time_ns"].to_numpy() - origin_ns) / 1e6
    out = []
    for c in STACK:
        if (rows[c].max() or 0) <= 0:
            continue
        name = c.replace("_", " ")
        out.append(go.Scatter(
            x=x, y=rows[c].to_numpy() / div, name=name, mode="lines", stackgroup="categories" + suffix, line=dict(width=0, shape="hv"),
            fillcolor=CATEGORY_COLORS[c], legendgroup=f"category/{c}", legend="legend" + suffix,
            meta=dict(role="category", category=c, rank=int(rows["rank"][0]), device=rows["device"][0]),
            hovertemplate=f"{name}: %{{y:,.2f}} {unit}<extra></extra>", **axes))
    return out


def figure_of(view: Any) -> Any:
    """The run's memory figure over its whole time axis (the empty figure without allocator
    events or without a report)."""
    report = view.report
    memory = view.run.memory
    if report is None or memory.height == 0:
        return empty_figure(NONE)
    end_ms = max(view.end_ms, 1e-3)
    span_ns = int(end_ms * 1e6)
    rows = thin(memory, view.origin_ns, span_ns)
    categories = thin_categories(run_timeline(view.run), view.origin_ns, span_ns)
    held = {(r, d): report.categories_at_peak(r, d) for r, d in report.memory.select("rank", "device").iter_rows()}
    return memory_figure(report.memory, rows, capacities(report.memory), view.origin_ns, (0.0, end_ms), categories, held)


def layout(board: Any) -> list:
    if not any(may_have_memory(v) for v in board.views):
        return []
    from dash import dcc, html

    part = section(TITLE, SUB, loading(graph("memory-graph")), dcc.Store(id="memory-time-sync"),
                   html.Div(html.P(mt.LIVE_HINT, className="details-hint"), id="memory-live"),
                   html.Div(id="memory-leaks"),
                   html.H3("Memory by op", className="memory-h3"), html.P(mt.OPS_HINT, className="details-hint"),
                   grid_box("memory-ops-box", mt.OPS_PX))
    if not may_have_memory(board.views[0]):
        part.style = HIDDEN  # the callback shows it for a run with allocator events
    return [part]


def render(board: Any, request: Any) -> tuple:
    """The section's visibility, figure, leaks and memory by op, once the timeline is painted ("rest-request")."""
    index = board.requested_by(request)
    view = board.views[index]
    if view.run.memory.height == 0:
        return HIDDEN, empty_figure(NONE), [], []
    return {}, board.figure(index, NAME, figure_of), mt.leaks_part(view.report), mt.ops_part(view.report)


def clicked(fig: Any, click: Any) -> tuple[int, str, float] | None:
    """(rank, device, time in ms since the run's start) of a click on a device's peak, else on
    its allocated or reserved curve (the first such point of the click; the unified hover gives
    each curve's nearest drawn point), else None. The device is read from the figure's trace,
    which the server keeps: the browser only says which one."""
    points = click.get("points") if isinstance(click, dict) else None
    found = []
    for p in points if isinstance(points, list) else []:
        n, x = (p.get("curveNumber"), p.get("x")) if isinstance(p, dict) else (None, None)
        if isinstance(n, int) and 0 <= n < len(fig.data) and isinstance(x, (int, float)) and not isinstance(x, bool):
            meta = fig.data[n].meta or {}
            if meta.get("role") in ("allocated", "reserved", "peak"):
                found.append((meta["role"] != "peak", meta["rank"], meta["device"], float(x)))
    return min(found, key=lambda f: f[0])[1:] if found else None


def has_addresses(view: Any, rank: int, device: str) -> bool:
    """Whether the device's allocator events record addresses (traces of 2021 do not):
    without them, what was live at an instant is unknown."""
    with_addresses = view.cached("memory:addresses", lambda: {
        (int(r), str(d)) for r, d in view.run.memory.filter(pl.col("addr").is_not_null()).select(GROUP).unique().iter_rows()})
    return (rank, device) in with_addresses


def live(board: Any, click: Any, value: Any, run_changed: bool = False) -> Any:
    """The panel under the curves for a click: what was live on the clicked device then (one
    ``memory_live.live_at`` call), or the hint."""
    from dash import html

    index = board.index(value)
    if index is None or run_changed or not click:
        return html.P(mt.LIVE_HINT, className="details-hint")
    view = board.views[index]
    if view.run.memory.height == 0:
        return html.P(mt.LIVE_HINT, className="details-hint")
    got = clicked(board.figure(index, NAME, figure_of), click)
    if got is None:
        return html.P(mt.LIVE_HINT, className="details-hint")
    rank, device, at_ms = got
    label = mt.device_label(rank, device, view.run.memory["rank"].n_unique() > 1)
    if not has_addresses(view, rank, device):
        return mt.live_part(None, label, at_ms)
    from accelscope.analysis.memory_live import live_at

    return mt.live_part(live_at(view.run, rank, device, view.origin_ns + round(at_ms * 1e6), n=mt.LIVE_ROWS), label, at_ms)


def register(app: Any, board: Any) -> None:
    if not any(may_have_memory(v) for v in board.views):
        return
    from dash import ClientsideFunction, Input, Output, State, ctx

    app.callback(Output("section-memory", "style"), Output("memory-graph", "figure"), Output("memory-leaks", "children"),
                 Output("memory-ops-box", "children"), Input("rest-request", "data"))(lambda request: render(board, request))
    app.callback(Output("memory-live", "children"), Input("memory-graph", "clickData"), Input("run-select", "value"))(
        lambda click, value: live(board, click, value, run_changed=ctx.triggered_id == "run-select"))
    # Zoomed with the timeline, as the metrics are (the same "sync", this graph its follower).
    app.clientside_callback(ClientsideFunction("accelscope", "sync"), Output("memory-time-sync", "data"),
                            Input("timeline-graph", "relayoutData"), Input("memory-graph", "relayoutData"), State("memory-graph", "id"),
                            prevent_initial_call=True)

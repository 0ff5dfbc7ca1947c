"""The Device and host metrics section: sampled counters as line panels, one per quantity,
beneath the timeline on its time axis and zoomed with it (``metrics_view`` shapes the series).
"""

from __future__ import annotations

from typing import Any

from accelscope.dashboard.components import graph, loading, section
from accelscope.dashboard.metrics_view import Metrics, build_metrics
from accelscope.dashboard.theme import TIME_MARGIN, base_layout, empty_figure, plotly_go

NAME = "metrics"
TITLE = "Device and host metrics"
SUB = ("Sampled over the run, beneath the timeline on its time axis, and zoomed with it: accelerator counters when recorded "
       "(GPU utilisation, memory, power, temperature and clocks from NVML; TPU duty cycle and HBM from libtpu), "
       "then CPU and memory of the training process, its children (DataLoader workers) and the whole machine.")
METRIC_COLORS = ["#4C78A8", "#F58518", "#8A8F98", "#59A14F", "#B279A2", "#9D755D", "#E2B93B", "#5FA8A3"]
METRIC_GAP_PX = 34  # between panels: room for the next panel's legend


def metrics_figure(metrics: Metrics, x_range: tuple[float, float]):
    """One panel per quantity (metrics_view.PANELS), stacked on the timeline's time axis:
    same plot-area margins, and the browser keeps the x range equal to the timeline's."""
    go = plotly_go()
    if not metrics:
        return empty_figure("No host or device metrics sampled in this run.")
    panels = metrics.panels
    plot_px = sum(p.height_px for p in panels) + METRIC_GAP_PX * (len(panels) - 1)
    traces = []
    layout: dict = {}
    top = plot_px
    for r, panel in enumerate(panels, start=1):
        suffix = "" if r == 1 else str(r)
        lo, hi = (top - panel.height_px) / plot_px, top / plot_px
        top -= panel.height_px + METRIC_GAP_PX
        unit = metrics.units[panel.key]
        members = [s for s in metrics.series if s.group == panel.key]
        # Accelerator panels: a colour per device, a line style per counter (capacities dashed);
        # host panels: a colour per series.
        devices = list(dict.fromkeys(s.device for s in members if s.device is not None))
        styles: dict[str, str] = {}
        legend = "legend" + suffix
        for i, s in enumerate(members):
            if s.device is not None:
                colour = METRIC_COLORS[devices.index(s.device) % len(METRIC_COLORS)]
                dash = "dash" if s.capacity else styles.setdefault(s.name, ("solid", "dot", "dashdot")[min(len(styles), 2)])
            else:
                colour, dash = METRIC_COLORS[i % len(METRIC_COLORS)], "solid"
            traces.append(
                go.Scatter(
                    name=s.label,
                    x=s.x_ms,
                    y=s.y,
                    mode="lines",
                    line=dict(color=colour, width=1.2 if s.capacity or dash != "solid" else 1.8, dash=dash),
                    legend=legend,
                    xaxis="x" + suffix,
                    yaxis="y" + suffix,
                    hovertemplate=f"{s.label}: %{{y:,.1f}} {unit}<extra></extra>".replace(" %<", "%<"),
                )
            )
        title = f"{panel.title} ({unit})" if unit else panel.title
        layout["yaxis" + suffix] = dict(
            domain=[max(lo, 0.0), min(hi, 1.0)], anchor="x" + suffix, rangemode="tozero", gridcolor="#eef0f3", zeroline=False,
            title=dict(text=title, font=dict(size=11.5, color="#4b5563")), fixedrange=True,
        )
        last = r == len(panels)
        layout["xaxis" + suffix] = dict(
            anchor="y" + suffix, range=list(x_range), gridcolor="#eef0f3", showticklabels=last,
            showspikes=True, spikemode="across", spikethickness=1, spikecolor="#9aa1ab",
            title="time since run start (ms)" if last else None,
            **({} if r == 1 else {"matches": "x"}),
        )
        layout[legend] = dict(orientation="h", x=1, xanchor="right", y=hi, yanchor="bottom", bgcolor="rgba(0,0,0,0)", font=dict(size=11))
    margin = dict(**TIME_MARGIN, t=34, b=50)
    fig = go.Figure(traces)
    fig.update_layout(
        **base_layout(height=plot_px + margin["t"] + margin["b"], margin=margin),
        hovermode="x unified", uirevision="metrics", meta=dict(x_range=list(x_range)), **layout,
    )
    return fig




def figure_of(view: Any) -> Any:
    """The run's metrics figure over its whole time axis."""
    metrics = view.cached("metrics", lambda: build_metrics(view.run.counters, view.origin_ns))
    return metrics_figure(metrics, (0.0, max(view.end_ms, 1e-3)))


def layout(board: Any) -> list:
    from dash import dcc

    # Double-click returns to the whole run (the "sync" clientside callback), which the timeline follows.
    return [section(TITLE, SUB, loading(graph("metrics-graph")), dcc.Store(id="time-sync"))]


def render(board: Any, request: Any) -> Any:
    """The figure, once the timeline is painted ("rest-request": {"run", "n"})."""
    return board.figure(board.requested_by(request), "metrics", figure_of)


def register(app: Any, board: Any) -> None:
    from dash import ClientsideFunction, Input, Output, State

    app.callback(Output("metrics-graph", "figure"), Input("rest-request", "data"))(lambda request: render(board, request))
    # Timeline and metrics share their time range (each follows the other's zooms).
    app.clientside_callback(ClientsideFunction("accelscope", "sync"), Output("time-sync", "data"),
                            Input("timeline-graph", "relayoutData"), Input("metrics-graph", "relayoutData"), State("metrics-graph", "id"),
                            prevent_initial_call=True)

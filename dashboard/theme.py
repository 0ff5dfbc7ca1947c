"""The dashboard's look, shared by every figure and the HTML report: plotly template, font,
colours per kind of slice and per breakdown category, and the empty-figure placeholder.

Plotly is imported when a figure is built, so this module imports without it.
"""

from __future__ import annotations

import math

from accelscope.errors import require
from accelscope.traces import schema as S

TEMPLATE = "plotly_white"
FONT = dict(family="Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif", size=12, color="#2b2f36")

# One colour per kind of slice; input waits get the strongest.
KIND_COLORS = {
    S.KERNEL: "#4C78A8",
    S.MEMCPY: "#F58518",
    S.MEMSET: "#B279A2",
    S.SYNC: "#6F4E7C",  # device synchronisation: a wait, not work
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
# The timeline and the metrics share their time axis: same plot-area margins, so they line up.
TIME_MARGIN = dict(l=260, r=24)


def plotly_go():
    """plotly.graph_objects, or MissingExtraError naming the dashboard extra."""
    return require("plotly.graph_objects", "dashboard", "accelscope dashboard")


def base_layout(**extra) -> dict:
    pio = require("plotly.io", "dashboard", "accelscope dashboard")
    layout = dict(
        template=pio.templates[TEMPLATE],  # the object: an unvalidated figure would send only its name
        font=FONT,
        margin=dict(l=60, r=20, t=40, b=50),
        hoverlabel=dict(bgcolor="white", font_size=12, bordercolor="#c9ced6"),
    )
    layout.update(extra)
    return layout


def empty_figure(message: str, height: int = 260):
    go = plotly_go()
    fig = go.Figure()
    fig.update_layout(
        **base_layout(height=height),
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        annotations=[dict(text=message, showarrow=False, font=dict(size=14, color="#6B7280"), xref="paper", yref="paper", x=0.5, y=0.5)],
    )
    return fig


# The analyzer's per-step categories: device work in blues/greens, waiting in red, host in slate.
BREAKDOWN_COLORS = {
    "kernel": "#3B6EA8",
    "rank_wait": "#D6609F",  # inside a collective, waiting for another rank to arrive
    "communication": "#7B5EA7",
    "memcpy": "#2A9D8F",
    "memset": "#8AB17D",
    "runtime": "#E9A23B",
    "input_wait": INPUT_WAIT_COLOR,
    "host_compute": "#8E9AAF",
    "other_idle": "#D9DDE3",
}


def step_ticks(steps: list[int]) -> dict:
    """x-axis settings for step numbers: integers only, at most about 20 ticks."""
    if not steps:
        return {}
    lo, hi = min(steps), max(steps)
    return dict(tickmode="linear", tick0=lo, dtick=max(1, math.ceil((hi - lo + 1) / 20)), tickformat="d")

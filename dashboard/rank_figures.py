"""The Ranks section's figures (also in the HTML report), drawn from the report's tables:

* ``heatmap_figure``: a rank × step map of step time or of the wait for other ranks
  (``Report.steps``), over the analysed steps. plotly.js's basic bundle has no heatmap trace
  (``plotlyjs.TRACE_TYPES``), so each cell is a bar tile coloured on one colour scale;
  beyond ``MAX_STEP_COLUMNS`` steps (fewer with many ranks: ``MAX_TILES`` cells),
  consecutive steps share a column (their mean);
* ``collectives_figure``: a few steps' collectives rank by rank on one time axis (the
  timeline's: ms since the run's start): each rank's steps, and per collective each rank's
  wait for the last one to arrive, then the transfer; a band per collective from its first
  to its last arrival, and a mark where its last rank arrived.

Plotly is imported when a figure is built, so this module imports without it.
"""

from __future__ import annotations

import math

import polars as pl

from accelscope.analysis import Report
from accelscope.dashboard.formatting import format_duration_ns
from accelscope.dashboard.theme import BREAKDOWN_COLORS, base_layout, empty_figure, plotly_go, step_ticks

STEP, WAIT = "step", "wait"  # what the map shows: step time, or the wait for other ranks
MAX_STEP_COLUMNS = 200  # more analysed steps than this: consecutive steps share a column
MAX_TILES = 8000  # ... and fewer columns with many ranks, so the map stays this many cells at most
WINDOW_STEPS = 3  # the collectives figure shows the first this many analysed steps with collectives
MAX_ARRIVALS = 1500  # ... fewer when they hold more arrivals than this (one bar each, two with the transfer)
MAX_BANDS = 200  # first-to-last-arrival bands drawn at most (layout shapes)
STRAGGLER_COLOR = "#C62828"
WAIT_COLOR = BREAKDOWN_COLORS["rank_wait"]
TRANSFER_COLOR = BREAKDOWN_COLORS["communication"]
STEP_BAND_COLORS = ("#E6E9EE", "#D3D8E0")  # alternate steps on each rank's row
LAST_COLOR = "#1f2430"
BAND_COLOR = "rgba(214, 96, 159, 0.12)"  # a collective's first to last arrival, over every rank's row
# Light (never white: a cell stays visible) to dark; the wait in the hue of waiting for other ranks.
SCALES = {STEP: [[0.0, "#dde8f4"], [1.0, "#0b3a75"]], WAIT: [[0.0, "#f7e9f1"], [1.0, "#7a0f4f"]]}


def _rank_axis(ranks: list[int], late: set[int], prefix: str = "") -> dict:
    """A y axis of ranks, rank 0 on top, one integer tick each (fewer beyond 32), stragglers in red."""
    every = max(1, math.ceil(len(ranks) / 32))
    ticks = ranks[::every]
    text = [f"<b><span style='color:{STRAGGLER_COLOR}'>{prefix}{r}</span></b>" if r in late else f"{prefix}{r}" for r in ticks]
    return dict(tickmode="array", tickvals=ticks, ticktext=text, range=[max(ranks) + 0.5, min(ranks) - 0.5], showgrid=False, zeroline=False, fixedrange=True)


def _row_px(n: int, most: int = 34, total: int = 420) -> int:
    return max(14, min(most, total // max(n, 1)))


# -- rank × step -----------------------------------------------------------------------------------
def heatmap_figure(report: Report | None, metric: str = STEP):
    """Step time (``STEP``) or the wait for other ranks (``WAIT``, ``rank_wait_ns``) per rank and
    step, over the analysed steps (the steady ones when none was analysed)."""
    go = plotly_go()
    if report is None or report.steps.height == 0:
        return empty_figure("No steps recorded.", height=200)
    st = report.steps.filter(pl.col("analysed"))
    over = f"over {report.basis.text}"
    if st.height == 0:
        st, over = report.steps.filter(~pl.col("warmup")), f"over {report.timing_basis.text}"
    if st.height == 0:
        return empty_figure("No steady steps recorded.", height=200)
    steps = st["step"].unique().sort().to_list()
    columns = max(20, min(MAX_STEP_COLUMNS, MAX_TILES // st["rank"].n_unique()))
    width = math.ceil((steps[-1] - steps[0] + 1) / columns)
    if width > 1:  # consecutive steps share a column: their mean
        st = (st.with_columns(first=pl.col("step") - (pl.col("step") - steps[0]) % width)
              .group_by("rank", "first").agg(pl.col("step").max().alias("last"), pl.col("dur_ns").mean(), pl.col("rank_wait_ns").mean())
              .rename({"first": "step"}))
        over += f", {width} consecutive steps per column (their mean)"
    else:
        st = st.with_columns(last=pl.col("step"))
    st = st.sort("rank", "step")
    ranks = st["rank"].unique().sort().to_list()
    dur = (st["dur_ns"].cast(pl.Float64) / 1e6).to_list()
    wait = (st["rank_wait_ns"].cast(pl.Float64) / 1e6).to_list()
    values = dur if metric == STEP else wait
    hover = [
        f"<b>rank {r} · step {s}{f'–{e}' if e != s else ''}</b><br>step time {d:,.1f} ms<br>waiting for other ranks {w:,.1f} ms ({w / d if d else 0:.0%})"
        for r, s, e, d, w in zip(st["rank"].to_list(), st["step"].to_list(), st["last"].to_list(), dur, wait)
    ]
    lo, hi = (min(values), max(values)) if metric == STEP else (0.0, max(max(values), 1e-3))
    what = "step time" if metric == STEP else "waiting for other ranks (inside collectives, until the last rank arrived)"
    tiles = go.Bar(
        x=st["step"].to_list(), y=[0.92] * st.height, base=[r - 0.46 for r in st["rank"].to_list()], width=0.94 * width,
        marker=dict(color=values, colorscale=SCALES[metric], cmin=lo, cmax=hi if hi > lo else lo + 1e-3, line=dict(width=0),
                    colorbar=dict(title=dict(text="ms", side="top"), thickness=12, outlinewidth=0, x=1.0, xpad=8)),
        hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", showlegend=False, name=metric,
    )
    late = {s.rank for s in report.stragglers}
    fig = go.Figure([tiles])
    row = _row_px(len(ranks))
    margin = dict(l=56, r=90, t=34, b=44)
    fig.update_layout(
        **base_layout(height=len(ranks) * row + margin["t"] + margin["b"], margin=margin),
        title=dict(text=f"{what} per rank and step, {over}", font=dict(size=12.5), x=0.01, y=0.98, yanchor="top"),
        barmode="overlay", bargap=0, hovermode="closest",
        xaxis=dict(title=dict(text="step", standoff=6), showgrid=False, zeroline=False, range=[steps[0] - width / 2, st["step"].max() + width / 2],
                   **step_ticks(steps)),
        yaxis=dict(title=dict(text="rank", standoff=4), **_rank_axis(ranks, late)),
        plot_bgcolor="white",
    )
    return fig


# -- collectives, rank by rank ---------------------------------------------------------------------
def collective_window(report: Report) -> tuple[list[int], pl.DataFrame, pl.DataFrame]:
    """The steps the collectives figure shows (the first ``WINDOW_STEPS`` analysed steps with
    collectives, fewer when they hold over ``MAX_ARRIVALS`` arrivals), their collectives and
    the arrivals at them (only the earliest collectives of one step when even it holds more)."""
    colls, arr = report.collectives, report.arrivals
    if colls is None or arr is None or colls.height == 0:
        return [], pl.DataFrame(), pl.DataFrame()
    have = colls["step"].drop_nulls().unique().sort().to_list()
    analysed = set(report.steps.filter(pl.col("analysed"))["step"].to_list())
    steps = [s for s in have if s in analysed][:WINDOW_STEPS] or have[:WINDOW_STEPS]
    per_step = dict(arr.filter(pl.col("step").is_in(steps)).group_by("step").len().iter_rows())
    while len(steps) > 1 and sum(per_step.get(s, 0) for s in steps) > MAX_ARRIVALS:
        steps = steps[:-1]
    inst = colls.filter(pl.col("step").is_in(steps)).sort("first_arrival_ns")
    inst = inst.filter(pl.col("n_ranks").cum_sum() <= max(MAX_ARRIVALS, int(inst["n_ranks"][0]) if inst.height else 0))
    return steps, inst, arr.join(inst.select("instance", "kind", "last_rank"), on="instance")


def _ms_since(ns: pl.Expr, origin_ns: int) -> pl.Expr:
    return (ns - origin_ns).cast(pl.Float64) / 1e6


def collectives_figure(report: Report | None, origin_ns: int):
    """A few steps' collectives on one time axis (ms since ``origin_ns``, the timeline's), one
    row per rank: its steps, its wait for the last rank and the transfer at each collective."""
    go = plotly_go()
    if report is None:
        return empty_figure("No steps recorded.", height=200)
    steps, inst, arr = collective_window(report)
    if not steps:
        matched = report.collectives is not None and report.collectives.height > 0
        return empty_figure("The matched collectives lie outside the steps." if matched else "No collectives were matched across the ranks.", height=200)
    late = {s.rank for s in report.stragglers}
    spans = report.steps.filter(pl.col("step").is_in(steps)).select(
        "rank", "step", _ms_since(pl.col("start_ns"), origin_ns).alias("start"), (pl.col("dur_ns") / 1e6).alias("dur"))
    arr = arr.with_columns(start=_ms_since(pl.col("start_ns"), origin_ns), wait=pl.col("wait_ns") / 1e6, end=_ms_since(pl.col("end_ns"), origin_ns))
    ranks = sorted(set(spans["rank"].to_list()) | set(arr["rank"].to_list()))
    traces = []
    for parity in (0, 1):
        sp = spans.filter(pl.col("step") % 2 == parity)
        traces.append(go.Bar(
            orientation="h", y=sp["rank"].to_list(), x=sp["dur"].to_list(), base=sp["start"].to_list(), width=0.86,
            marker=dict(color=STEP_BAND_COLORS[parity], line=dict(width=0)), name="step", legendgroup="step", showlegend=parity == 0,
            hovertext=[f"rank {r} · step {s}: {format_duration_ns(d * 1e6)}" for r, s, d in sp.select("rank", "step", "dur").iter_rows()],
            hovertemplate="%{hovertext}<extra></extra>",
        ))
    ordinal = {i: k for k, i in enumerate(inst["instance"].to_list(), start=1)}
    w = arr.filter(pl.col("wait") > 0)
    traces.append(go.Bar(
        orientation="h", y=w["rank"].to_list(), x=w["wait"].to_list(), base=w["start"].to_list(), width=0.5,
        marker=dict(color=WAIT_COLOR, line=dict(width=0)), name="waiting for the last rank",
        hovertext=[f"<b>{k} #{ordinal[i]}</b> · step {s}<br>rank {r} waited {format_duration_ns(d * 1e6)} for rank {lr}"
                   for k, i, s, r, d, lr in w.select("kind", "instance", "step", "rank", "wait", "last_rank").iter_rows()],
        hovertemplate="%{hovertext}<extra></extra>",
    ))
    t = arr.with_columns(tstart=pl.col("start") + pl.col("wait")).with_columns(tdur=pl.col("end") - pl.col("tstart")).filter(pl.col("tdur") > 0)
    traces.append(go.Bar(
        orientation="h", y=t["rank"].to_list(), x=t["tdur"].to_list(), base=t["tstart"].to_list(), width=0.5,
        marker=dict(color=TRANSFER_COLOR, line=dict(width=0)), name="transfer (after the last arrival)",
        hovertext=[f"<b>{k} #{ordinal[i]}</b> · step {s}<br>rank {r}: transfer {format_duration_ns(d * 1e6)}" for k, i, s, r, d in t.select("kind", "instance", "step", "rank", "tdur").iter_rows()],
        hovertemplate="%{hovertext}<extra></extra>",
    ))
    ic = inst.with_columns(first=_ms_since(pl.col("first_arrival_ns"), origin_ns), last=_ms_since(pl.col("last_arrival_ns"), origin_ns))
    traces.append(go.Scatter(
        x=ic["last"].to_list(), y=[r - 0.36 for r in ic["last_rank"].to_list()], mode="markers", name="last arrival",
        marker=dict(symbol="triangle-down", size=9, color=LAST_COLOR),
        hovertext=[f"<b>{k} #{ordinal[i]}</b> · step {s}<br>last rank {lr}, {format_duration_ns(lt)} after the one before it"
                   f"<br>first to last arrival {format_duration_ns(la - fa)}, transfer {format_duration_ns(tr)}"
                   for k, i, s, lr, lt, la, fa, tr in ic.select("kind", "instance", "step", "last_rank", "lateness_ns", "last_arrival_ns",
                                                              "first_arrival_ns", "transfer_ns").iter_rows()],
        hovertemplate="%{hovertext}<extra></extra>",
    ))
    bands = [dict(type="rect", xref="x", yref="paper", x0=a, x1=b, y0=0, y1=1, layer="above", line=dict(width=0), fillcolor=BAND_COLOR)
             for a, b in ic.select("first", "last").head(MAX_BANDS).iter_rows()]
    lo = min(spans["start"].min(), arr["start"].min())
    hi = max((spans["start"] + spans["dur"]).max(), arr["end"].max())
    pad = (hi - lo) * 0.01
    window = [lo - pad, hi + pad]
    kinds = ", ".join(f"{n} {k}" for k, n in inst.group_by("kind").len().sort("len", descending=True).iter_rows())
    which = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}–{steps[-1]}" if steps == list(range(steps[0], steps[-1] + 1)) else "steps " + ", ".join(map(str, steps))
    row = _row_px(len(ranks), most=40)
    margin = dict(l=80, r=24, t=58, b=44)
    fig = go.Figure(traces)
    fig.update_layout(
        **base_layout(height=len(ranks) * row + margin["t"] + margin["b"], margin=margin),
        title=dict(text=f"{which}: {kinds}; each rank's arrivals, shaded from the first rank's arrival to the last's", font=dict(size=12.5), x=0.01, y=0.985, yanchor="top"),
        barmode="overlay", hovermode="closest", shapes=bands,
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom", font=dict(size=11.5), traceorder="normal"),
        xaxis=dict(title=dict(text="time since run start (ms)", standoff=6), range=window, showgrid=True, gridcolor="#eef0f3", zeroline=False),
        yaxis=dict(**_rank_axis(ranks, late, prefix="rank ")),
        plot_bgcolor="white", meta=dict(window_ms=window),
    )
    return fig


def warm_up() -> None:
    """Plotly loads each horizontal bar property's validator on first use: use them once."""
    go = plotly_go()
    go.Figure([go.Bar(orientation="h", y=[0], x=[1.0], base=[0.0], width=0.5, marker=dict(color=[1.0], colorscale="Blues", cmin=0, cmax=1,
                                                                                        colorbar=dict(title=dict(text="ms", side="top"), thickness=12)))])

"""``accelscope report RUN -o report.html``: the dashboard's views as one HTML file that
opens offline (plotly.js's basic bundle is embedded, 1.2 MB), to attach to a ticket or a
pull request. It renders the analyzer's report; its style is ``assets/report.css``."""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path

from accelscope.analysis.causes import CAUSE_TEXT
from accelscope.analysis.tables import short_name
from accelscope.dashboard import plotlyjs
from accelscope.dashboard.runs import RunView
from accelscope.errors import require
from accelscope.text import capture_lines, device_rows, rank_rows
from accelscope.traces.run import Run
from accelscope.verdicts import VERDICT_TEXT

STYLE = plotlyjs.ASSETS / "report.css"
STEP_ROWS = 50  # the steps table lists every step up to this many, else the slowest


def _table(headers: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    classes = row_classes or [""] * len(rows)
    body = "".join((f"<tr class='{c}'>" if c else "<tr>") + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r, c in zip(rows, classes))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rank_lines(rep) -> str:
    """The straggler summary (ranks.summary): a red line per straggler, else a green one."""
    from accelscope.dashboard.sections import ranks

    return "".join(f"<p class='rank-line rank-{kind}'>{'<b>Straggler:</b> ' if kind == 'straggler' else ''}{html.escape(text)}</p>" for kind, text in ranks.summary(rep))


def _ranks_section(rep, view: RunView, plot) -> str:
    """The Ranks section: the straggler summary, the per-rank table, step time and the wait for
    other ranks per rank and step, the collectives by kind, and a few steps' collectives rank by rank."""
    from accelscope.dashboard import rank_figures as rf
    from accelscope.dashboard.sections import ranks

    headers, rows = rank_rows(rep)
    late = {s.rank for s in rep.stragglers}
    classes = ["straggler" if r in late else "" for r in rep.ranks["rank"].to_list()]
    parts = ["<section><h2>Ranks</h2>", _rank_lines(rep), _table(headers, rows, classes)]
    parts += [plot(rf.heatmap_figure(rep, rf.STEP)), plot(rf.heatmap_figure(rep, rf.WAIT))]
    c_headers, c_rows = ranks.collective_rows(rep)
    if c_rows:
        parts.append("<h2>Collectives by kind</h2>" + _table(c_headers, c_rows))
        parts.append(plot(rf.collectives_figure(rep, view.origin_ns)))
    return "".join(parts) + "</section>"


def _steps_table(rep) -> str:
    steps = rep.steps
    slowest = steps.height > STEP_ROWS
    shown = steps.sort("dur_ns", descending=True).head(STEP_ROWS) if slowest else steps
    rows = []
    for r in shown.iter_rows(named=True):
        flag = "warm-up" if r["warmup"] else "outlier" if r["outlier"] else ""
        rows.append([str(r["rank"]), str(r["step"]), f"{r['dur_ns'] / 1e6:.2f}", f"{r['busy_share']:.1%}",
                     f"{r['input_wait_share']:.1%}" if r["input_timed"] else "not seen", r["verdict"] or "—", flag, r["outlier_reason"] or ""])
    title = f"Steps (the {STEP_ROWS} slowest, slowest first)" if slowest else "Steps"
    return f"<section><h2>{title}</h2>" + _table(["rank", "step", "ms", "busy", "input wait", "verdict", "flag", "why it is slow"], rows) + "</section>"


def _memory_tables(rep) -> str:
    """Under the Memory figure: the leaks, then memory by op, a table per device (``Report.memory_ops``)."""
    from accelscope.dashboard.sections import memory_tables as mt

    parts = []
    leaks = mt.leak_rows(rep)
    if leaks:
        word = rep.step_word
        parts.append("<div class='memory-leaks'><h3>Leaks: memory growing step over step</h3>"
                     + _table(["device", f"grows per {word}", f"{word}s fitted", "op allocating what is never freed", "it never freed"], leaks) + "</div>")
    ops = rep.memory_ops
    if ops.height:
        parts.append(f"<h3>Memory by op</h3><p class='muted'>{html.escape(mt.OPS_HINT.rsplit(' Click', 1)[0])}</p>")
        multi = ops["rank"].n_unique() > 1
        headers = [h for f, h, _ in mt.OP_COLUMNS if f != "device"]
        for (rank, device), rows in mt.by_device(ops).partition_by(["rank", "device"], as_dict=True, maintain_order=True).items():
            cells = [[short_name(r["name"], 90), f"{r['allocations']:,}", *(mt.size_text(r[f]) for f, _, k in mt.OP_COLUMNS if k == "bytes")]
                     for r in rows.iter_rows(named=True)]
            parts.append(f"<h4>{html.escape(mt.device_label(rank, device, multi))}</h4>" + _table(headers, cells))
        more = mt.more_text(rep)
        if more:
            parts.append(f"<p class='muted'>{html.escape(more)}</p>")
    return "".join(parts)


def build_report(run_path: str | os.PathLike[str]) -> str:
    """The report of one run as a self-contained HTML document."""
    require("plotly", "dashboard", "accelscope report")
    from accelscope.dashboard.sections import memory, metrics, overview, ranks
    from accelscope.dashboard.timeline import view as tv
    from accelscope.dashboard.timeline.figure import timeline_figure

    run = Run.open(run_path)
    view = RunView(run, run.name)
    rep = view.report
    style = STYLE.read_text(encoding="utf-8")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>accelscope report: {html.escape(run.name)}</title><style>{style}</style>{plotlyjs.script_tag()}</head><body>"]
    parts.append("<header>accelscope<span>report: why did the accelerator sit idle?</span></header><main>")
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p class='muted'><b>{html.escape(run.name)}</b> · report written {made} · {html.escape(str(run.path.resolve()))}</p>")

    def plot(fig) -> str:
        return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})

    if rep is not None and rep.run.memory_only:  # a memory snapshot: no timing figure means anything
        parts.append("<section><h2>Overview</h2>")
        if rep.oom is not None:
            parts.append(f"<div class='rank-line rank-straggler'><b>Out of memory:</b> {html.escape(rep.oom.text.removeprefix('out of memory '))}</div>")
        parts.append(f"<div class='rank-line'><b>Allocator events only:</b> {html.escape(overview.MEMORY_ONLY)}</div>")
        if rep.recommendations:
            parts.append("<h2>Recommendations</h2><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rep.recommendations) + "</ul>")
        parts.append("</section>")
    elif rep is not None:
        thing = "accelerator" if rep.has_device else "compute thread"
        causes = ", ".join(f"{CAUSE_TEXT[c]} {share:.1%}" for c, _, share in rep.idle_causes[:3]) or "never idle"
        cards = [
            (f"{thing} idle", f"{rep.idle_share:.1%}", overview.idle_class(rep.idle_share).replace("verdict-", ""), f"busy {rep.busy_share:.1%}; idle mostly: {causes}"),
            ("input wait", "unknown" if "input_wait_share" in rep.unknown else f"{rep.input_wait_share:.1%}", "", rep.unknown.get("input_wait_share", "")),
            ("verdict", VERDICT_TEXT[rep.verdict], rep.verdict, ""),
            (f"mean {rep.step_word} time", f"{rep.mean_step_ns / 1e6:,.1f} ms", "", f"{rep.n_steps} {rep.step_unit}"),
        ]
        parts.append("<section><h2>Overview</h2><div class='cards'>")
        for label, value, cls, caption in cards:
            cap = f"<div class='caption'>{html.escape(caption)}</div>" if caption else ""
            parts.append(f"<div class='card'><div class='label'>{html.escape(label)}</div><div class='value {cls}'>{html.escape(value)}</div>{cap}</div>")
        parts.append("</div>")
        if rep.oom is not None:
            parts.append(f"<div class='rank-line rank-straggler'><b>Out of memory:</b> {html.escape(rep.oom.text.removeprefix('out of memory '))}</div>")
        parts.append(_rank_lines(rep))
        parts.append(f"<p class='muted'>Shares of step time over {html.escape(rep.basis.text)}; step time over {html.escape(rep.timing_basis.text)}.</p>")
        headers, rows, rest = device_rows(rep.devices, rep.has_device)
        if rows:
            parts.append("<h2>Utilisation per device</h2>" + _table(headers, rows) + (f"<p class='muted'>{html.escape(rest)}</p>" if rest else ""))
            parts.extend(f"<p class='muted'>{html.escape(line)}</p>" for line in capture_lines(rep.devices))
        parts.append(plot(overview.step_figure(rep)))
        if rep.recommendations:
            parts.append("<h2>Recommendations</h2><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rep.recommendations) + "</ul>")
        if rep.notes:
            parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes) + "</ul>")
        parts.append("</section>")
        if ranks.is_multi_rank(rep):
            parts.append(_ranks_section(rep, view, plot))
        idle_rows = [[CAUSE_TEXT[c], f"{rep.per_step_ms(v):.2f}", f"{share:.1%}"] for c, v, share in rep.idle_causes]
        parts.append(f"<section><h2>Why the {thing} was idle</h2>")
        parts.append(_table(["cause", f"ms per {rep.step_word}", f"share of {rep.step_word} time"], idle_rows) if idle_rows else "<p class='muted'>no idle time</p>")
        parts.append("</section>")
        parts.append(_steps_table(rep))
        for title, df in (("Top device work", rep.top_kernels), ("Top ops (inclusive time)", rep.top_ops)):
            if df.height:
                rows = [[short_name(r["name"], 90), str(r["count"]), f"{r['total_ns'] / 1e6:.2f}", f"{r['mean_ns'] / 1e3:.1f}", f"{r['share_of_step_time']:.1%}"] for r in df.iter_rows(named=True)]
                parts.append(f"<section><h2>{title}</h2>" + _table(["name", "count", "total ms", "mean µs", f"share of step time ({rep.table_basis.text})"], rows) + "</section>")
    if rep is None or not rep.run.memory_only:
        parts.append("<section><h2>Timeline</h2>" + plot(timeline_figure(tv.whole(view), static=True)) + "</section>")
        parts.append("<section><h2>Device and host metrics</h2>" + plot(metrics.figure_of(view)) + "</section>")
    if rep is not None and rep.memory.height:
        parts.append(f"<section><h2>{memory.TITLE}</h2>" + plot(memory.figure_of(view)) + _memory_tables(rep) + "</section>")
    parts.append("</main></body></html>")
    return "".join(parts)


def write_report(run_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    text = build_report(run_path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out

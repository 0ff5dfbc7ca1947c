"""``accelscope report RUN -o report.html``: the dashboard's views as one HTML file that
opens offline (plotly.js's basic bundle is embedded, 1.2 MB), to attach to a ticket or a
pull request."""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path

from accelscope.analysis.causes import CAUSE_TEXT
from accelscope.analysis.tables import short_name
from accelscope.dashboard import plotlyjs
from accelscope.dashboard.data import RunView
from accelscope.dashboard.devices_view import table_rows
from accelscope.errors import require
from accelscope.traces.run import Run
from accelscope.verdicts import VERDICT_TEXT

STYLE = """
body { font-family: Inter, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2430; background: #f4f5f7; margin: 0; }
header { background: #1f2a3c; color: #fff; padding: 14px 32px; font-size: 20px; font-weight: 700; }
header span { color: #9fb6d9; font-weight: 400; font-size: 14px; margin-left: 10px; }
main { max-width: 1400px; margin: 0 auto; padding: 20px 32px 40px; }
section { background: #fff; border: 1px solid #e3e6eb; border-radius: 10px; padding: 16px 20px; margin-bottom: 20px; }
h2 { font-size: 16px; margin: 0 0 8px; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 14px; }
.card { border: 1px solid #e3e6eb; border-radius: 8px; padding: 10px 14px; background: #fbfbfc; }
.card .label { color: #6b7280; font-size: 12px; text-transform: uppercase; letter-spacing: .6px; }
.card .value { font-size: 24px; font-weight: 650; margin-top: 4px; }
.high { color: #C62828; } .moderate { color: #B86E00; } .none { color: #2E7D32; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid #eef0f3; }
th:first-child, td:first-child { text-align: left; }
li { margin-bottom: 4px; }
.muted { color: #6b7280; font-size: 12.5px; }
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(run_path: str | os.PathLike[str]) -> str:
    """The report of one run as a self-contained HTML document."""
    require("plotly", "dashboard", "accelscope report")
    from accelscope.dashboard.figures import figures_for

    run = Run.open(run_path)
    view = RunView(run, run.name)
    rep = view.report
    figs = figures_for(view)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>accelscope report: {html.escape(run.name)}</title><style>{STYLE}</style>{plotlyjs.script_tag()}</head><body>"]
    parts.append("<header>accelscope<span>report: why did the accelerator sit idle?</span></header><main>")
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p class='muted'><b>{html.escape(run.name)}</b> · report written {made} · {html.escape(str(run.path.resolve()))}</p>")

    def plot(fig) -> str:
        return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})

    if rep is not None:
        cards = [
            ("steps", str(rep.n_steps), ""),
            ("mean step time", f"{rep.mean_step_ns / 1e6:,.1f} ms", ""),
            ("input wait", f"{rep.input_wait_share:.1%}", ""),
            ("verdict", VERDICT_TEXT[rep.verdict], rep.verdict),
        ]
        parts.append("<section><h2>Overview</h2><div class='cards'>")
        for label, value, cls in cards:
            parts.append(f"<div class='card'><div class='label'>{label}</div><div class='value {cls}'>{html.escape(value)}</div></div>")
        parts.append("</div>")
        headers, rows, rest = table_rows(rep.devices, rep.has_device)
        if rows:
            parts.append("<h2>Utilisation per device</h2>" + _table(headers, rows) + (f"<p class='muted'>{html.escape(rest)}</p>" if rest else ""))
        parts.append(plot(figs["step"]))
        if rep.recommendations:
            parts.append("<h2>Recommendations</h2><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rep.recommendations) + "</ul>")
        if rep.notes:
            parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes) + "</ul>")
        parts.append("</section>")
        n = max(rep.steps.filter(~rep.steps["warmup"]).height, 1)
        total = rep.steady_ns or 1
        idle_rows = [[CAUSE_TEXT[c], f"{v / n / 1e6:.2f}", f"{v / total:.1%}"] for c, v in sorted(rep.idle_by_cause_ns.items(), key=lambda kv: -kv[1]) if v]
        parts.append("<section><h2>Why the " + ("accelerator" if rep.has_device else "compute thread") + " was idle</h2>")
        parts.append(_table(["cause", "ms per step", "share of step time"], idle_rows) if idle_rows else "<p class='muted'>no idle time</p>")
        parts.append("</section>")
        for title, df in (("Top device work", rep.top_kernels), ("Top ops (inclusive time)", rep.top_ops)):
            if df.height:
                rows = [[short_name(r["name"], 90), str(r["count"]), f"{r['total_ns'] / 1e6:.2f}", f"{r['mean_ns'] / 1e3:.1f}", f"{r['share_of_step_time']:.1%}"] for r in df.iter_rows(named=True)]
                parts.append(f"<section><h2>{title}</h2>" + _table(["name", "count", "total ms", "mean µs", "share of step time"], rows) + "</section>")
    parts.append("<section><h2>Timeline</h2>" + plot(figs["timeline"]) + "</section>")
    parts.append("<section><h2>Device and host metrics</h2>" + plot(figs["metrics"]) + "</section>")
    parts.append("</main></body></html>")
    return "".join(parts)


def write_report(run_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    text = build_report(run_path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out

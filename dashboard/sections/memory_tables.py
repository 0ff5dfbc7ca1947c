"""The Memory section's tables, beneath its curves: memory by op (``Report.memory_ops``, like
the memory table of TensorBoard's removed PyTorch plugin), the leaks (``Report.memory_leaks``),
and what was live at a clicked instant (``analysis.memory_live.live_at``, asked once per
click). They format the analysis' figures; they compute none of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from accelscope.errors import require

if TYPE_CHECKING:
    from accelscope.analysis.memory_live import Live

OPS_PX = 520  # the grid's place while it loads
OPS_PAGE = 10  # rows a page (the grid is as tall as that; more rows a page scroll in it)
ROW_PX, CHROME_PX = 30, 124  # a row; the header, its filters and the pager
OP_COLUMNS = [  # (field, header, kind): bytes columns hold bytes, shown in human units (the "bytes" formatter in accelscope.js)
    ("name", "op", "text"),
    ("device", "device", "text"),
    ("allocations", "allocations", "numeric"),
    ("allocated_bytes", "allocated (self)", "bytes"),
    ("self_increase_bytes", "self increase", "bytes"),
    ("total_allocated_bytes", "total allocated", "bytes"),
    ("total_increase_bytes", "total increase", "bytes"),
]
OPS_HINT = ("Per host op name: what it allocated itself (as the innermost host op of the allocating thread), its net increase "
            "(less what it freed), and the same under it, its children's included. Click a header to sort.")
LIVE_ROWS = 20  # (op, category) rows listed of what was live at a clicked instant
LIVE_HINT = "Click the allocated curve (or a peak) to see what was live on that device at that instant."
NO_ADDRESSES = "This trace does not record addresses, so what was live is unknown."
BYTES_FORMAT = {"function": "bytes(params.value)"}


def size_text(n: int | None) -> str:
    """Bytes, signed, in the largest unit under them: 1.5 GiB, 12.0 MiB, 3.2 KiB, 512 B."""
    if n is None:
        return "—"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:,.2f} {unit}" if abs(v) < 10 else f"{v:,.1f} {unit}" if abs(v) < 100 else f"{v:,.0f} {unit}"
    return f"{n:,} B"


def device_label(rank: int | None, device: str, multi_rank: bool) -> str:
    return f"rank {rank} · {device}" if multi_rank else device


def op_rows(report: Any) -> list[dict[str, Any]]:
    """``Report.memory_ops`` as grid rows, in its order (per device, the ops allocating most
    first), accelerators before the host's allocator."""
    ops = by_device(report.memory_ops)
    if ops.height == 0:
        return []
    multi = ops["rank"].n_unique() > 1
    rows = ops.with_columns(device=pl.format("rank {} · {}", "rank", "device") if multi else pl.col("device"))
    return rows.select([c for c, _, _ in OP_COLUMNS]).to_dicts()


def by_device(ops: pl.DataFrame) -> pl.DataFrame:
    """``Report.memory_ops`` with the host's allocator (``cpu``) after the accelerators, each device's rows in the report's order."""
    return ops.sort(pl.col("device") == "cpu", maintain_order=True)


def more_text(report: Any) -> str:
    """The line under the table: how many ops holding memory it leaves out (``Report.memory_ops_more``)."""
    more = report.memory_ops_more
    return f"{more:,} more op{'s' if more != 1 else ''} held memory and are not listed (the table keeps the ops allocating most on each device)." if more else ""


def ops_grid(rows: list[dict[str, Any]], grid_id: str = "memory-ops-table") -> Any:
    """The sortable grid of memory by op; bytes columns sort by their bytes and show human units."""
    from accelscope.dashboard.components import column_width_px, grid

    columns = [(f, h, "text" if k == "text" else "numeric") for f, h, k in OP_COLUMNS]
    height_px = CHROME_PX + ROW_PX * max(min(len(rows), OPS_PAGE), 1)  # as tall as a page of its rows (a short table leaves no blank)
    g = grid(grid_id, columns, rows, height_px, page_size=OPS_PAGE, grid_options={"paginationPageSizeSelector": [OPS_PAGE, 25, 50]})
    shown = {f: h for f, h, k in OP_COLUMNS if k == "bytes"}
    for col in g.columnDefs:
        if col["field"] in shown:  # as wide as the values shown, not their bytes
            col.update(valueFormatter=BYTES_FORMAT, minWidth=column_width_px(shown[col["field"]], [size_text(r[col["field"]]) for r in rows]))
    return g


def ops_part(report: Any) -> list:
    """The grid (or a line saying there is none) and the line of ops left out."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    rows = op_rows(report) if report is not None else []
    if not rows:
        return [html.P("No host op held an allocation (the trace records no host ops on the allocating threads).", className="details-hint")]
    more = more_text(report)
    return [ops_grid(rows), *([html.P(more, className="details-hint memory-more")] if more else [])]


def leak_rows(report: Any) -> list[list[str]]:
    """``Report.memory_leaks`` as cells: device, growth per step, steps fitted, the op and what it never freed."""
    leaks = report.memory_leaks
    multi = len(report.run.ranks) > 1
    rows = []
    for r in leaks.iter_rows(named=True):
        op = r["op"] or "unknown (the trace records no addresses)"
        never = "—" if r["op_never_freed_bytes"] is None else size_text(r["op_never_freed_bytes"])
        rows.append([device_label(r["rank"], r["device"], multi), f"{r['bytes_per_step'] / 2**20:,.1f} MiB", str(r["steps"]), op, never])
    return rows


def _table(headers: list[str], rows: list[list[str]], class_name: str) -> Any:
    html = require("dash.html", "dashboard", "accelscope dashboard")
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody([html.Tr([html.Td(c) for c in r]) for r in rows])],
                      className=class_name)


def leaks_part(report: Any) -> list:
    """A short table of the leaks, under a red heading; nothing without any."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    rows = leak_rows(report) if report is not None else []
    if not rows:
        return []
    word = report.step_word
    headers = ["device", f"grows per {word}", f"{word}s fitted", "op allocating what is never freed", "it never freed"]
    return [html.H3("Leaks: memory growing step over step", className="memory-h3 memory-leak-h3"), _table(headers, rows, "details-table memory-leaks")]


def live_part(live: Live | None, label: str, at_ms: float) -> Any:
    """What was live at a clicked instant on one device (``memory_live.live_at``: its largest
    rows, most bytes first, the rest in one row and the total, as the analysis summed them);
    or the line saying the trace cannot tell (``live`` None)."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    head = html.Div([html.Span("live memory", className="details-kind"), html.Span(f"{label} at {at_ms:,.3f} ms", className="details-title")],
                    className="details-head")
    if live is None:
        return html.Div([head, html.P(NO_ADDRESSES, className="details-hint")])
    if live.rows.height == 0:
        return html.Div([head, html.P("Nothing was allocated on this device then.", className="details-hint")])
    rows = [[r["op"] or "(no host op)", r["category"].replace("_", " "), size_text(r["live_bytes"]), f"{r['allocations']:,}"]
            for r in live.rows.iter_rows(named=True)]
    if live.more_rows > 0:
        rows.append([f"{live.more_rows:,} more (op, category) pairs", "", size_text(live.more_bytes), f"{live.more_allocations:,}"])
    rows.append(["total", "", size_text(live.total_bytes), f"{live.total_allocations:,}"])
    return html.Div([head, _table(["op", "category", "live", "allocations"], rows, "details-table memory-live-table")])

"""The Kernels and ops section: time per name of device work and of host ops, from the
report's tables (``Report.kernels_by_name``, ``Report.ops_by_name``), in sortable grids."""

from __future__ import annotations

from typing import Any

import polars as pl

from accelscope.dashboard.components import grid, grid_box, section
from accelscope.errors import require

NAME = "kernels"
TITLE = "Kernels and ops"
SUB = ("Time per name over the steps the framework profiler traced (every steady step when it traced them all), longest "
       "first; click a header to sort, type in the row under it to filter. "
       "Op times are inclusive (nested ops count in their parents too).")
TABLE_PX = 740
TABLE_ROWS = 500  # rows sent to each grid (the longest by total time); the browser sorts and filters them
COLUMNS = [
    ("name", "name", "text"),
    ("kind", "kind", "text"),
    ("count", "count", "numeric"),
    ("total_ms", "total ms", "numeric"),
    ("mean_us", "mean µs", "numeric"),
    ("max_us", "max µs", "numeric"),
    ("share_pct", "% of step time", "numeric"),
]


def rows_of(table: pl.DataFrame | None) -> list[dict[str, Any]]:
    """A report name table as grid rows (ms, µs, %); shares are of the traced steady steps' time."""
    if table is None:
        return []
    return (
        table.head(TABLE_ROWS)
        .select(
            "name",
            "kind",
            "count",
            (pl.col("total_ns") / 1e6).round(3).alias("total_ms"),
            (pl.col("mean_ns") / 1e3).round(2).alias("mean_us"),
            (pl.col("max_ns") / 1e3).round(2).alias("max_us"),
            (pl.col("share_of_step_time") * 100).round(2).alias("share_pct"),
        )
        .to_dicts()
    )


def layout(board: Any) -> list:
    from dash import html

    return [section(TITLE, SUB, html.H3("Device work (kernels, copies, memsets)"), grid_box("kernels-table-box", TABLE_PX),
                    html.H3("Host ops"), grid_box("ops-table-box", TABLE_PX))]


def render(board: Any, request: Any) -> tuple:
    """Both grids, once the timeline is painted ("rest-request": {"run", "n"})."""
    html = require("dash.html", "dashboard", "accelscope dashboard")
    index = board.requested_by(request)
    view = board.views[index]
    rep = view.report
    kernels = view.cached("table:kernels", lambda: rows_of(rep.kernels_by_name if rep else None))
    ops = view.cached("table:ops", lambda: rows_of(rep.ops_by_name if rep else None))

    def one(table_id: str, rows: list, none: str) -> Any:
        return grid(table_id, COLUMNS, rows, TABLE_PX, grid_options={"paginationPageSizeSelector": [20, 50, 100]}) if rows else html.P(none, id=f"{table_id}-none", className="details-hint")

    return (
        one("kernels-table", kernels, "No device work (kernels, copies, memsets) was recorded in this run."),
        one("ops-table", ops, "No host ops were recorded in this run (light mode records steps and input waits only)."),
    )


def register(app: Any, board: Any) -> None:
    from dash import Input, Output

    app.callback(Output("kernels-table-box", "children"), Output("ops-table-box", "children"), Input("rest-request", "data"))(lambda request: render(board, request))

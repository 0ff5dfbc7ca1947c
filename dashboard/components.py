"""The page's building blocks, shared by the sections: a section card, a number card, a
loading wrapper, a grid's placeholder, and sortable, filterable grids (AG Grid) whose
columns are as wide as their values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from accelscope.errors import require

# Grids are rebuilt whenever a live run flushes (every few seconds): the user's sort and
# filters must survive that.
GRID_PERSISTENCE = {"persistence": True, "persisted_props": ["filterModel", "columnState"], "persistence_type": "memory"}
CHAR_PX = 7.6  # width of one character of the grids' 13 px font, about
CELL_PAD_PX = 36  # a cell's padding plus the header's sort and menu icons
MIN_COLUMN_PX, MAX_COLUMN_PX = 72, 560


def html():
    return require("dash.html", "dashboard", "accelscope dashboard")


def slug(title: str) -> str:
    """A section's id part: its title in lower case, hyphenated ("Kernels and ops" -> "kernels-and-ops")."""
    return "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())


def section(title: str, sub: str, *children: Any) -> Any:
    """A card with a title; its id is ``section-`` and the title's slug."""
    h = html()
    return h.Div([h.H2(title), h.P(sub, className="sub"), *children], className="section", id=f"section-{slug(title)}")


def loading(*children: Any) -> Any:
    dcc = require("dash.dcc", "dashboard", "accelscope dashboard")
    return dcc.Loading(list(children), type="dot", delay_show=400, color="#3b5b8c")


def graph(graph_id: str, **config: Any) -> Any:
    """A plotly graph with the page's toolbar (no logo, no lasso or box select), resizing with
    the page; ``config`` adds to or overrides plotly's config."""
    dcc = require("dash.dcc", "dashboard", "accelscope dashboard")
    base = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
    return dcc.Graph(id=graph_id, config={**base, **config})


def card(label: str, value_id: str, caption: str = "", caption_id: str | None = None, card_id: str | None = None) -> Any:
    """A number card: a label, a value filled in by a callback, a caption."""
    h = html()
    cap = h.Div(caption, className="caption", **({"id": caption_id} if caption_id else {}))
    return h.Div(
        [h.Div(label, className="label"), h.Div("…", id=value_id, className="value"), cap],
        className="card",
        **({"id": card_id} if card_id else {}),
    )


def grid_box(box_id: str, height_px: int) -> Any:
    """Where a grid will go once its rows arrive, holding its place meanwhile."""
    h = html()
    return h.Div(h.Div("loading…", className="details-hint", style={"height": f"{height_px}px"}), id=box_id)


def column_width_px(header: str, values: Sequence[Any]) -> int:
    """A column wide enough for its header and its longest value (clamped)."""
    longest = max([len(header)] + [len(_cell_text(v)) for v in values])
    return int(min(max(longest * CHAR_PX + CELL_PAD_PX, MIN_COLUMN_PX), MAX_COLUMN_PX))


def _cell_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return "" if value is None else str(value)


def grid(
    grid_id: str,
    columns: Sequence[tuple[str, str, str]],
    rows: list[dict[str, Any]],
    height_px: int,
    *,
    wide: str | None = "name",
    page_size: int = 20,
    floating_filter: bool = True,
    persist: bool = True,
    **options: Any,
) -> Any:
    """A sortable, filterable AG Grid (Dash's DataTable is deprecated) of ``rows``.

    ``columns``: (field, header, "text" or "numeric"). Every column is at least as wide as
    its header and longest value; the ``wide`` column (long names) takes the spare width
    and shows its whole value on hover.
    """
    dag = require("dash_ag_grid", "dashboard", "accelscope dashboard")
    defs = []
    for field, header, kind in columns:
        col: dict[str, Any] = {
            "field": field,
            "headerName": header,
            "filter": "agNumberColumnFilter" if kind == "numeric" else "agTextColumnFilter",
            "minWidth": column_width_px(header, [r.get(field) for r in rows]),
        }
        if field == wide:
            col.update(flex=3, minWidth=min(col["minWidth"], 320), tooltipField=field)
        else:
            col["flex"] = 1
            if kind == "numeric":
                col["type"] = "numericColumn"
        defs.append(col)
    grid_options = {
        "pagination": True, "paginationPageSize": page_size, "rowHeight": 30, "headerHeight": 34,
        "tooltipShowDelay": 300, "animateRows": False,
    }
    if floating_filter:
        grid_options["floatingFiltersHeight"] = 36
    grid_options.update(options.pop("grid_options", {}))
    return dag.AgGrid(
        id=grid_id,
        columnDefs=defs,
        rowData=rows,
        defaultColDef={"sortable": True, "filter": True, "resizable": True, "floatingFilter": floating_filter},
        dashGridOptions=grid_options,
        className="ag-theme-alpine",
        style={"height": f"{height_px}px"},
        **(GRID_PERSISTENCE if persist else {}),
        **options,
    )

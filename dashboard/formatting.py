"""Formatting shared by the dashboard's tables and hover texts, and the click categories.

``duration_expr`` is ``format_duration_ns`` as a Polars expression, so hover texts for
thousands of marks are built column-wise, not one Python f-string per mark.
"""

from __future__ import annotations

import polars as pl

# The first value of each hover point's customdata says what was clicked.
CAT_SLICE = 0  # [CAT_SLICE, table position, 0]
CAT_MERGED = 1  # [CAT_MERGED, first position, last position] (one row of the lane layout)
CAT_GAP = 2  # [CAT_GAP, gap position, 0]
CAT_MERGED_GAPS = 3  # [CAT_MERGED_GAPS, first gap position, last gap position]
CAT_LAUNCH = 4  # [CAT_LAUNCH, table position of the device slice, 0]


def format_duration_ns(ns: float) -> str:
    """A duration for people: 41.1 ms, 552 µs, 2.35 s."""
    ns = float(ns)
    if ns >= 1e9:
        return f"{ns / 1e9:.3g} s" if ns < 1e11 else f"{ns / 1e9:,.0f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms" if ns < 1e8 else f"{ns / 1e6:.0f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs" if ns < 1e5 else f"{ns / 1e3:.0f} µs"
    return f"{ns:.0f} ns"


def _sig3(x: pl.Expr) -> pl.Expr:
    """About three significant digits for x in [1, 1000)."""
    return (
        pl.when(x < 9.995)
        .then(x.round(2).cast(pl.String))
        .when(x < 99.95)
        .then(x.round(1).cast(pl.String))
        .otherwise(x.round(0).cast(pl.Int64).cast(pl.String))
    )


def duration_expr(ns: pl.Expr) -> pl.Expr:
    """``format_duration_ns`` for a column of nanoseconds (negative values keep their sign)."""
    v = ns.cast(pl.Float64)
    a = v.abs()
    sign = pl.when(v < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    body = (
        pl.when(a >= 1e9)
        .then(pl.concat_str([_sig3(a / 1e9), pl.lit(" s")]))
        .when(a >= 1e6)
        .then(pl.concat_str([_sig3(a / 1e6), pl.lit(" ms")]))
        .when(a >= 1e3)
        .then(pl.concat_str([_sig3(a / 1e3), pl.lit(" µs")]))
        .otherwise(pl.concat_str([a.round(0).cast(pl.Int64).cast(pl.String), pl.lit(" ns")]))
    )
    return pl.concat_str([sign, body])

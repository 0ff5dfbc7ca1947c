"""Compare two reports: step time, breakdown, idle causes and the kernels and ops that changed.

A table in, a table out: ``compare(a, b)`` returns a ``Comparison`` whose parts are
plain dicts and Polars tables (ms per step, for people); the CLI prints it (``accelscope
diff A B``), the dashboard's Compare section draws it, and ``to_dict`` is ``diff --json``
(µs, like ``analyze --json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from accelscope.analysis import causes as C
from accelscope.analysis.breakdown import BREAKDOWN
from accelscope.analysis.report import SCHEMA_VERSION, Report

TOP_N = 15


@dataclass
class Comparison:
    a: Report
    b: Report
    summary: dict[str, tuple[float, float]]  # metric -> (a, b)
    breakdown_ms: dict[str, tuple[float, float]]  # category -> ms per step (a, b)
    idle_ms: dict[str, tuple[float, float]]  # cause -> ms per step (a, b)
    kernels: pl.DataFrame  # name, a_ms, b_ms, delta_ms (per step), sorted by |delta|
    ops: pl.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """The ``diff --json`` document (docs/cli.md): every time in µs."""

        def one(a: float, b: float, scale: float = 1.0) -> dict[str, float]:
            return {"a": round(a * scale, 6), "b": round(b * scale, 6), "delta": round((b - a) * scale, 6)}

        def pair(d: dict[str, tuple[float, float]], scale: float = 1.0) -> dict[str, dict[str, float]]:
            return {k: one(a, b, scale) for k, (a, b) in d.items()}

        summary = {k.replace("_ms", "_us"): one(a, b, 1000.0 if k.endswith("_ms") else 1.0) for k, (a, b) in self.summary.items()}
        us = [(pl.col(f"{c}_ms") * 1000).round(3).alias(f"{c}_us") for c in ("a", "b", "delta")]
        return {
            "schema_version": SCHEMA_VERSION,
            "a": self.a.run_name,
            "b": self.b.run_name,
            "verdict": {"a": self.a.verdict, "b": self.b.verdict},
            "summary": summary,
            "breakdown_us_per_step": pair(self.breakdown_ms, 1000.0),
            "idle_us_per_step": pair(self.idle_ms, 1000.0),
            "kernels": self.kernels.select("name", *us).to_dicts(),
            "ops": self.ops.select("name", *us).to_dicts(),
        }


def _per_step(report: Report, values: dict[str, int]) -> dict[str, float]:
    return {k: report.per_step_ms(v) for k, v in values.items()}


def _by_name(report: Report, attr: str) -> pl.DataFrame:
    """Every name's time (a name outside one run's top table is not absent from that run)."""
    full = getattr(report, attr.replace("top_", "") + "_by_name")
    return full if full is not None else getattr(report, attr)


def _top_delta(a: Report, b: Report, attr: str) -> pl.DataFrame:
    """Per name, ms per step in A and B: per *traced* step, as ops and kernels are recorded
    only in the steps the framework profiler traced."""
    na = max(a.traced_steady.height, 1)
    nb = max(b.traced_steady.height, 1)
    ta = _by_name(a, attr).select("name", (pl.col("total_ns") / na / 1e6).alias("a_ms"))
    tb = _by_name(b, attr).select("name", (pl.col("total_ns") / nb / 1e6).alias("b_ms"))
    both = ta.join(tb, on="name", how="full", coalesce=True).fill_null(0.0)
    return both.with_columns(delta_ms=pl.col("b_ms") - pl.col("a_ms")).sort(pl.col("delta_ms").abs(), descending=True).head(TOP_N)


def compare(a: Report, b: Report) -> Comparison:
    """Everything that differs between two analysed runs, per step (warm-up left out)."""
    summary = {
        "mean_step_ms": (a.mean_step_ns / 1e6, b.mean_step_ns / 1e6),
        "busy_share": (a.busy_share, b.busy_share),
        "input_wait_share": (a.input_wait_share, b.input_wait_share),
        "steps": (float(a.n_steps), float(b.n_steps)),
    }
    ba, bb = _per_step(a, a.breakdown_ns), _per_step(b, b.breakdown_ns)
    ia, ib = _per_step(a, a.idle_by_cause_ns), _per_step(b, b.idle_by_cause_ns)
    return Comparison(
        a=a,
        b=b,
        summary=summary,
        breakdown_ms={c: (ba[c], bb[c]) for c in BREAKDOWN if ba[c] or bb[c]},
        idle_ms={c: (ia[c], ib[c]) for c in C.CAUSES if ia[c] or ib[c]},
        kernels=_top_delta(a, b, "top_kernels"),
        ops=_top_delta(a, b, "top_ops"),
    )

"""Compare two reports: step time, breakdown, idle causes and the kernels and ops that changed.

A table in, a table out: ``compare(a, b)`` returns a ``Comparison`` whose parts are
plain dicts and Polars tables (ms per step, for people); the CLI prints it (``accelscope
diff A B``), the dashboard's Compare section draws it, and ``to_dict`` is ``diff --json``
(µs, like ``analyze --json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import polars as pl

from accelscope.analysis import causes as C
from accelscope.analysis.breakdown import BREAKDOWN
from accelscope.analysis.report import SCHEMA_VERSION, Report

TOP_N = 15


class Change(NamedTuple):
    """One figure of runs A and B, and how it changed (every output shows these, none computes them)."""

    a: float
    b: float

    @property
    def delta(self) -> float:
        """B - A."""
        return self.b - self.a

    @property
    def relative(self) -> float | None:
        """(B - A) / A; None when A is 0."""
        return self.delta / self.a if self.a else None


@dataclass
class Comparison:
    a: Report
    b: Report
    summary: dict[str, Change]  # metric -> (a, b)
    breakdown_ms: dict[str, Change]  # category -> ms per step
    idle_ms: dict[str, Change]  # cause -> ms per step
    kernels: pl.DataFrame  # name, a_ms, b_ms, delta_ms (per step), sorted by |delta|
    ops: pl.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """The ``diff --json`` document (docs/cli.md): every time in µs."""

        def one(c: Change, scale: float = 1.0) -> dict[str, float]:
            return {"a": round(c.a * scale, 6), "b": round(c.b * scale, 6), "delta": round(c.delta * scale, 6)}

        def pair(d: dict[str, Change], scale: float = 1.0) -> dict[str, dict[str, float]]:
            return {k: one(c, scale) for k, c in d.items()}

        summary = {k.replace("_ms", "_us"): one(c, 1000.0 if k.endswith("_ms") else 1.0) for k, c in self.summary.items()}
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


def _top_delta(a: Report, b: Report, attr: str) -> pl.DataFrame:
    """Per name, ms per step in A and B (``attr``: a table of every name, so a name outside
    one run's top table is not taken for absent): per *traced* step, as ops and kernels are
    recorded only in the steps the framework profiler traced."""
    na = max(a.traced_steady.height, 1)
    nb = max(b.traced_steady.height, 1)
    ta = getattr(a, attr).select("name", (pl.col("total_ns") / na / 1e6).alias("a_ms"))
    tb = getattr(b, attr).select("name", (pl.col("total_ns") / nb / 1e6).alias("b_ms"))
    both = ta.join(tb, on="name", how="full", coalesce=True).fill_null(0.0)
    return both.with_columns(delta_ms=pl.col("b_ms") - pl.col("a_ms")).sort(pl.col("delta_ms").abs(), descending=True).head(TOP_N)


def compare(a: Report, b: Report) -> Comparison:
    """Everything that differs between two analysed runs, per step (warm-up left out)."""
    summary = {
        "mean_step_ms": Change(a.mean_step_ns / 1e6, b.mean_step_ns / 1e6),
        "busy_share": Change(a.busy_share, b.busy_share),
        "input_wait_share": Change(a.input_wait_share, b.input_wait_share),
        "steps": Change(float(a.n_steps), float(b.n_steps)),
    }
    ba, bb = _per_step(a, a.breakdown_ns), _per_step(b, b.breakdown_ns)
    ia, ib = _per_step(a, a.idle_by_cause_ns), _per_step(b, b.idle_by_cause_ns)
    return Comparison(
        a=a,
        b=b,
        summary=summary,
        breakdown_ms={c: Change(ba[c], bb[c]) for c in BREAKDOWN if ba[c] or bb[c]},
        idle_ms={c: Change(ia[c], ib[c]) for c in C.CAUSES if ia[c] or ib[c]},
        kernels=_top_delta(a, b, "kernels_by_name"),
        ops=_top_delta(a, b, "ops_by_name"),
    )

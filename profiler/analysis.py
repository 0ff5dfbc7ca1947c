"""Step-level analysis of a run: step times, input-wait share, verdict.

A table in, a table out: ``step_table`` turns a run's events into one row per step;
``analyze`` summarises it. Plotting and printing live elsewhere (cli, dashboard).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from accelscope.intervals import covered_within
from accelscope.traces import schema as S
from accelscope.traces.run import Run

# XProf's input-pipeline thresholds (share of step time spent waiting for input).
HIGH_THRESHOLD = 0.20
MODERATE_THRESHOLD = 0.05
VERDICTS = ("high", "moderate", "none")
VERDICT_TEXT = {
    "high": "highly input-bound",
    "moderate": "moderately input-bound",
    "none": "not input-bound",
}


def verdict_for(share: float) -> str:
    """XProf's classification of an input-wait share."""
    if share >= HIGH_THRESHOLD:
        return "high"
    if share >= MODERATE_THRESHOLD:
        return "moderate"
    return "none"


def step_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per step: index, name, start/end/duration, input-wait time and share, warmup flag.

    The first step counts as warm-up (worker start-up, lazy initialisation, allocator
    growth) when there are at least three steps; summaries leave it out.
    """
    steps = events.filter(pl.col("kind") == S.STEP).sort("start_ns")
    waits = events.filter(pl.col("kind") == S.INPUT_WAIT)
    starts = steps["start_ns"].to_numpy()
    ends = starts + steps["dur_ns"].to_numpy()
    wait_ns = covered_within(waits["start_ns"].to_numpy(), (waits["start_ns"] + waits["dur_ns"]).to_numpy(), starts, ends)
    n = steps.height
    dur = ends - starts
    share = np.divide(wait_ns, dur, out=np.zeros(n, dtype=np.float64), where=dur > 0)
    return pl.DataFrame(
        {
            "step": np.arange(n, dtype=np.int64),
            "name": steps["name"],
            "rank": steps["rank"],
            "start_ns": starts,
            "end_ns": ends,
            "dur_ns": dur,
            "input_wait_ns": wait_ns.astype(np.int64),
            "input_wait_share": share,
            "verdict": [verdict_for(x) for x in share],
            "warmup": np.arange(n) == 0 if n >= 3 else np.zeros(n, dtype=bool),
        },
        schema_overrides={"name": pl.String, "rank": pl.Int32},
    )


@dataclass
class Report:
    run_name: str
    steps: pl.DataFrame
    n_steps: int
    mean_step_ns: float
    input_wait_share: float
    verdict: str
    notes: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``analyze --json`` document (see docs/cli.md)."""
        return {
            "run": self.run_name,
            "verdict": self.verdict,
            "verdict_text": VERDICT_TEXT[self.verdict],
            "input_wait_share": round(self.input_wait_share, 6),
            "step_count": self.n_steps,
            "mean_step_us": round(self.mean_step_ns / 1000, 3),
            "thresholds": {"high": HIGH_THRESHOLD, "moderate": MODERATE_THRESHOLD},
            "steps": [
                {
                    "step": r["step"],
                    "name": r["name"],
                    "dur_us": round(r["dur_ns"] / 1000, 3),
                    "input_wait_us": round(r["input_wait_ns"] / 1000, 3),
                    "input_wait_share": round(r["input_wait_share"], 6),
                    "verdict": r["verdict"],
                    "warmup": r["warmup"],
                }
                for r in self.steps.iter_rows(named=True)
            ],
            "notes": self.notes,
            "recommendations": self.recommendations,
        }


class NoStepsError(ValueError):
    pass


def analyze(run: Run) -> Report:
    """Summarise a run's steps. Raises NoStepsError when the run recorded none."""
    steps = step_table(run.events)
    if steps.height == 0:
        raise NoStepsError(f"{run.path}: no steps recorded (call prof.step() once per training step)")
    notes: list[str] = list(run.read_warnings)
    if not run.meta.get("complete", False):
        notes.append("the run did not finish cleanly: analysing what was flushed before it stopped")
    steady = steps.filter(~pl.col("warmup"))
    if steady.height < steps.height:
        notes.append("step 0 is treated as warm-up and left out of the summary")
    total = int(steady["dur_ns"].sum())
    share = float(steady["input_wait_ns"].sum()) / total if total > 0 else 0.0
    verdict = verdict_for(share)
    recs = []
    if verdict != "none":
        recs.append(
            f"input wait is {share:.1%} of step time: the accelerator waits for data. "
            "Load batches in parallel (DataLoader num_workers > 0, persistent_workers=True), "
            "prefetch (prefetch_factor, tf.data prefetch), and pin host memory (pin_memory=True)."
        )
    return Report(
        run_name=run.name,
        steps=steps,
        n_steps=steps.height,
        mean_step_ns=float(steady["dur_ns"].mean()),
        input_wait_share=share,
        verdict=verdict,
        notes=notes,
        recommendations=recs,
    )

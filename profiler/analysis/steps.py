"""The steps table: every step of every rank with its breakdown, flags and verdict.

``finish_steps`` adds warm-up flags, shares and verdicts to the per-rank breakdown rows;
``traced_mask`` says which steps the framework profiler traced, from what the recorder
wrote into the run (``meta["traced_steps"]``); ``mark_outliers`` flags unusually slow
steps. Steps keep their own numbers (``ProfilerStep#N`` is step N on every rank).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from accelscope.analysis.breakdown import BREAKDOWN, MIN_STEPS_FOR_WARMUP, WARMUP_STEP, analyze_rank
from accelscope.verdicts import HIGH_THRESHOLD, MODERATE_THRESHOLD

# A step is an outlier when its modified z-score (Iglewicz and Hoaglin: 0.6745 * (x -
# median) / MAD) exceeds this, and it is also this much slower than the median step
# (steady loops have tiny MADs, so a z-score alone would flag jitter).
OUTLIER_Z = 3.5
OUTLIER_MIN_EXCESS = 0.25
# Framework profilers whose windows the recorder lists in meta["traced_steps"].
FRAMEWORK_PROFILERS = ("torch_profiler", "tensorflow_profiler")


def finish_steps(steps: pl.DataFrame) -> pl.DataFrame:
    """Add warm-up flags, shares and per-step verdicts to breakdown rows of any ranks.

    Step 0 (``ProfilerStep#0``: worker start-up, lazy initialisation, allocator growth) is
    warm-up when a rank has at least three steps; summaries leave it out.
    """
    steps = steps.sort("rank", "start_ns")
    n_per_rank = steps.group_by("rank").len()["len"].max() if steps.height else 0
    share = pl.col("input_wait_ns") / pl.col("dur_ns").clip(lower_bound=1)
    return steps.with_columns(
        warmup=(pl.col("name") == WARMUP_STEP) & pl.lit((n_per_rank or 0) >= MIN_STEPS_FOR_WARMUP),
        busy_share=pl.col("busy_ns") / pl.col("dur_ns").clip(lower_bound=1),
        input_wait_share=share,
        verdict=pl.when(share >= HIGH_THRESHOLD).then(pl.lit("high")).when(share >= MODERATE_THRESHOLD).then(pl.lit("moderate")).otherwise(pl.lit("none")),
    )


def traced_mask(meta: dict[str, Any], steps: pl.DataFrame) -> pl.Series:
    """Per step: did the framework profiler record its ops and device work?

    The recorder lists the steps each framework profiler traced as inclusive ranges of
    step numbers (``meta["traced_steps"] = {"torch_profiler": [[2, 4], [13, 15]]}``): only
    those steps hold ops and kernels. A run without the key (imported traces, light runs,
    runs without a windowed profiler) counts every step as traced. The same mask says
    which steps saw input waits when the training loop did not time them itself (no
    ``prof.iter``, as in Keras ``model.fit``): then waits are seen only as the profiler's
    ``IteratorGetNext`` / DataLoader ops.
    """
    windows = traced_windows(meta)
    if windows is None:
        return pl.Series("traced", [True] * steps.height, dtype=pl.Boolean)
    numbers = steps["step"].to_numpy()
    traced = np.zeros(numbers.shape, dtype=bool)
    for first, last in windows:
        traced |= (numbers >= first) & (numbers <= last)
    return pl.Series("traced", traced, dtype=pl.Boolean)


def traced_windows(meta: dict[str, Any]) -> list[tuple[int, int]] | None:
    """The framework profilers' windows as inclusive (first, last) step numbers, from
    ``meta["traced_steps"]`` (malformed entries left out); None when the run lists none
    (every step counts as traced)."""
    listed = meta.get("traced_steps")
    if not isinstance(listed, dict) or not any(name in listed for name in FRAMEWORK_PROFILERS):
        return None
    return [(pair[0], pair[1]) for name in FRAMEWORK_PROFILERS for pair in listed.get(name) or []
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, int) for v in pair)]


def mark_outliers(steps: pl.DataFrame) -> pl.DataFrame:
    """Add ``outlier`` and ``outlier_reason`` per step: unusually slow steady-state steps
    of each rank, with the breakdown category that grew most against that rank's median."""
    steady = ~pl.col("warmup")
    med = pl.col("dur_ns").filter(steady).median().over("rank")
    mad = (pl.col("dur_ns") - med).abs().filter(steady).median().over("rank")
    z = 0.6745 * (pl.col("dur_ns") - med) / pl.max_horizontal(mad, pl.lit(1.0))
    out = steps.with_columns(
        # (a median of 0, windows of a trace with no activity in most of them, has no "x the median")
        outlier=steady & (med > 0) & (z > OUTLIER_Z) & (pl.col("dur_ns") > med * (1 + OUTLIER_MIN_EXCESS)) & (pl.len().over("rank") >= 5),
        _median_ns=med,
    )
    if not out["outlier"].any():
        return out.with_columns(outlier_reason=pl.lit(None, dtype=pl.String)).drop("_median_ns")
    # Which category grew most: that step minus the rank's median of that category.
    excess = [(pl.col(f"{c}_ns") - pl.col(f"{c}_ns").filter(steady).median().over("rank")).alias(c) for c in BREAKDOWN]
    grown = out.select(excess).to_numpy()
    top = np.argmax(grown, axis=1)
    label = {c: c.replace("_", " ") for c in BREAKDOWN}
    reasons = [
        f"{d / m:.1f}x the median step; +{g / 1e6:.1f} ms {label[BREAKDOWN[t]]}" if o else None
        for o, d, m, g, t in zip(out["outlier"], out["dur_ns"], out["_median_ns"], grown[np.arange(len(top)), top], top)
    ]
    return out.with_columns(outlier_reason=pl.Series(reasons, dtype=pl.String)).drop("_median_ns")


def step_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per step of a single-rank events table, with its breakdown and verdict."""
    return finish_steps(analyze_rank(events, int(events["rank"][0]) if events.height else 0).steps)

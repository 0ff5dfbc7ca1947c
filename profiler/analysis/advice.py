"""Recommendations: for each cause that idles the device, what triggered it, what to change,
and the step time to expect if that idle time went away.

The advice for each cause comes from the cause table (``causes.TABLE``); this module adds
the evidence (shares, milliseconds per step, the DataLoader's settings) and the projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from accelscope.analysis.causes import ADVICE, CAUSE_TEXT, CAUSES, INPUT_WAIT
from accelscope.analysis.report import Recommendation
from accelscope.verdicts import RECOMMEND_SHARE


def dataloader_evidence(meta: dict[str, Any], host_names: pl.Series) -> str:
    """" with num_workers=0" when the run or the trace's DataLoader op names (``host_names``:
    the distinct names of host slices) say how data was loaded."""
    pipeline = meta.get("input_pipeline") or {}
    if "num_workers" in pipeline:
        return f" with num_workers={pipeline['num_workers']}"
    names = host_names.filter(host_names.str.contains(r"DataLoader\)#")).to_list()
    if any("_SingleProcessDataLoaderIter" in n for n in names):
        return " with num_workers=0 (single-process DataLoader)"
    if any("_MultiProcessingDataLoaderIter" in n for n in names):
        return " with DataLoader workers"
    return ""


def recommend(
    idle_by_cause_ns: dict[str, int], total_ns: int, n_steady: int, mean_step_ns: float, has_device: bool, input_evidence: Callable[[], str]
) -> list[Recommendation]:
    """One recommendation per cause idling the device at least ``RECOMMEND_SHARE`` of step
    time, largest first. ``idle_by_cause_ns`` and ``total_ns`` are over the steady steps;
    ``input_evidence`` says how data was loaded (asked only when input wait gets advice)."""
    out = []
    what = "accelerator" if has_device else "compute thread"
    ranked = sorted(idle_by_cause_ns.items(), key=lambda kv: (-kv[1], CAUSES.index(kv[0])))
    for cause, idle_ns in ranked:
        share = idle_ns / total_ns if total_ns else 0.0
        if share < RECOMMEND_SHARE:
            continue
        per_step = idle_ns / max(n_steady, 1)
        evidence = f"{CAUSE_TEXT[cause]} idles the {what} {share:.1%} of step time ({per_step / 1e6:.1f} ms per step)"
        if cause == INPUT_WAIT:
            evidence = f"input wait is {share:.1%} of step time{input_evidence()}"
        out.append(Recommendation(cause, evidence, ADVICE[cause], share, mean_step_ns - per_step, mean_step_ns))
    return out

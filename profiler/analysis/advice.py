"""Recommendations: for each cause that idles the device, what triggered it, what to change,
and the step time to expect if that idle time went away.

The advice for each cause comes from the cause table (``causes.TABLE``); this module adds
the evidence (shares, milliseconds per step, the DataLoader's settings) and the projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from accelscope.analysis.causes import ADVICE, CAUSE_TEXT, CAUSES, HOST_COMPUTE, INPUT_WAIT, RANK_WAIT
from accelscope.analysis.report import Recommendation
from accelscope.analysis.stragglers import Straggler
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


# What the late rank should change, by the cause of its lateness (stragglers.LATE_CAUSES).
_LATE_ADVICE = {
    "device_work": "give it less work (uneven batches or sequence lengths, an unbalanced model or pipeline split) "
                   "or find why its device is slower (clocks, thermals, another job on it)",
    "communication": "its earlier collectives take longer: check its links (NVLink/PCIe/network) and its NIC",
    RANK_WAIT: "it waits for yet another rank first: fix that rank",
}
# Exposed communication: collective time the device spends with no compute beside it.
EXPOSED_COMM_SHARE = 0.10
EXPOSED_COMM_ADVICE = (
    "overlap communication with compute (DDP bucket_cap_mb, FSDP prefetch, no synchronising call between backward and "
    "the optimizer), send less (gradient compression, fewer/larger buckets, bf16 gradients), or a faster interconnect"
)


def straggler_advice(stragglers: list[Straggler]) -> list[Recommendation]:
    """One recommendation per straggler: its rank, why it is late, what to change there, and
    the job's step time if it were not late."""
    out = []
    for s in stragglers:
        action = f"on rank {s.rank}, {_LATE_ADVICE.get(s.cause) or ADVICE.get(s.cause, ADVICE[HOST_COMPUTE])}"
        evidence = (f"rank {s.rank} arrives last at collectives and holds every other rank back {s.cost_ns_per_step / 1e6:.1f} ms "
                    f"per step ({s.share_of_step:.1%} of step time); before arriving it spent more time than the others in {s.cause_label}")
        out.append(Recommendation(RANK_WAIT, evidence, action, s.share_of_step, s.projected_step_ns, s.mean_step_ns))
    return out


def exposed_communication(comm_ns: int, wait_ns: int, total_ns: int, n_steady: int, mean_step_ns: float, straggler_named: bool) -> list[Recommendation]:
    """A recommendation when collectives run with no compute beside them for at least
    ``EXPOSED_COMM_SHARE`` of step time: the breakdown's communication (transfer) and, unless
    a straggler's own recommendation already covers it, its waiting for the last rank."""
    exposed = comm_ns + (0 if straggler_named else wait_ns)
    share = exposed / total_ns if total_ns else 0.0
    if share < EXPOSED_COMM_SHARE:
        return []
    per_step = exposed / max(n_steady, 1)
    evidence = f"collectives run with no compute beside them {share:.1%} of step time ({per_step / 1e6:.1f} ms per step"
    if not straggler_named and wait_ns:
        evidence += f": {wait_ns / total_ns:.1%} waiting for the last rank to arrive, {comm_ns / total_ns:.1%} transferring"
    action = EXPOSED_COMM_ADVICE
    if not straggler_named and wait_ns > comm_ns:
        action += "; most of it is waiting for late ranks, no single one consistently: balance the work per rank (the Ranks table's arrivals)"
    return [Recommendation("communication", evidence + ")", action, share, mean_step_ns - per_step, mean_step_ns)]

"""Which rank holds the job back, what it costs per step, and why it was late.

From matched collectives (collectives.py) and each rank's breakdown (breakdown.py):

* per instance, the last rank to arrive made every other rank wait; the job's step could
  not end before it arrived, so the time between the second-to-last and the last arrival
  is what that rank cost the job (its *cost*; several instances in one step count once
  where they overlap);
* per straggler, why it was late: its own breakdown from its step's start to its arrival,
  against the median of the other ranks' over the same stretch of the same step; the
  category it spent most extra time in is the cause (input wait, host compute / late
  launches, host-to-device copy, more device work than the others, ...);
* per rank: step time, busy share, share of step time spent waiting for other ranks, and
  how often it arrived last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from accelscope.analysis import breakdown as B
from accelscope.analysis import causes as C
from accelscope.analysis.intervals import covered_within
from accelscope.verdicts import STRAGGLER_SHARE, STRAGGLER_STEPS

# A late rank's extra time per breakdown category, as the cause users read.
LATE_CAUSES: dict[str, tuple[str, str]] = {
    B.INPUT_WAIT: (C.INPUT_WAIT, "input wait"),
    B.HOST_COMPUTE: (C.HOST_COMPUTE, "host compute / late launches"),
    B.RUNTIME: (C.HOST_COMPUTE, "host compute / late launches"),
    B.MEMCPY: (C.H2D_COPY, "host-to-device copy"),
    B.MEMSET: (C.H2D_COPY, "host-to-device copy"),
    B.KERNEL: ("device_work", "more device work than the other ranks"),
    B.COMMUNICATION: ("communication", "longer communication before it"),
    B.RANK_WAIT: (C.RANK_WAIT, "waiting for yet another rank"),
    B.OTHER_IDLE: (C.SYNC, "synchronisation / idle with nothing recorded"),
}

RANKS_SCHEMA = {
    "rank": pl.Int32, "steps": pl.Int64, "mean_step_ns": pl.Float64, "busy_share": pl.Float64, "collective_wait_share": pl.Float64,
    "last_arrivals": pl.Int64, "collectives": pl.Int64, "main_cause": pl.String, "complete": pl.Boolean,
}


@dataclass(frozen=True)
class Straggler:
    rank: int
    cause: str  # a cause name (causes.py, or "device_work" / "communication")
    cause_label: str
    cost_ns_per_step: float  # how much later each step ended because this rank arrived last
    share_of_step: float  # that, over the job's mean step
    waited_ns_per_step: float  # the other ranks' summed wait for it, per step
    last_arrivals: int  # collectives it arrived last at (by more than the clocks' error)
    steps_late: int  # steps in which it cost the job time
    steps: int  # steps with matched collectives
    mean_step_ns: float  # the job's, over those steps
    excess_ns_per_step: dict[str, float]  # its extra time per breakdown category before arriving

    @property
    def projected_step_ns(self) -> float:
        """The job's mean step if this rank were not late."""
        return max(self.mean_step_ns - self.cost_ns_per_step, 0.0)

    @property
    def text(self) -> str:
        return (f"rank {self.rank} arrives last at collectives and holds the other ranks back "
                f"{self.cost_ns_per_step / 1e6:.1f} ms per step ({self.share_of_step:.1%} of step time): {self.cause_label}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "cause": self.cause, "cause_label": self.cause_label,
            "cost_us_per_step": round(self.cost_ns_per_step / 1000, 3), "share_of_step": round(self.share_of_step, 6),
            "waited_us_per_step": round(self.waited_ns_per_step / 1000, 3), "last_arrivals": self.last_arrivals,
            "steps_late": self.steps_late, "steps": self.steps, "projected_step_us": round(self.projected_step_ns / 1000, 3),
            "excess_us_per_step": {k: round(v / 1000, 3) for k, v in self.excess_ns_per_step.items()}, "text": self.text,
        }


def attribute(instances: pl.DataFrame, arrivals: pl.DataFrame, steps: pl.DataFrame, results: list[B.RankResult], tolerance_ns: int) -> tuple[list[Straggler], pl.DataFrame]:
    """Every rank that arrived last anywhere, as a straggler candidate, most costly first
    (``named`` picks the stragglers), and each instance's cost (``instance``, ``step``,
    ``late_rank``, ``cost_ns``). ``steps``: every rank's steps (rank, step, start_ns, dur_ns)."""
    late = instances.filter(pl.col("lateness_ns") > tolerance_ns)
    job_steps = instances.select("step").unique().drop_nulls()
    n_steps = job_steps.height
    if late.height == 0 or n_steps == 0:
        return [], pl.DataFrame(schema={"instance": pl.Int64, "step": pl.Int64, "late_rank": pl.Int32, "cost_ns": pl.Int64})
    on_steps = steps.join(job_steps, on="step", how="semi")
    mean_step = float(on_steps.group_by("step").agg(pl.col("dur_ns").max())["dur_ns"].mean())
    by_rank = {r.rank: r for r in results}
    stragglers = []
    costs = []
    for (rank,), mine in late.group_by(["last_rank"], maintain_order=True):
        rank = int(rank)
        # Cost: the union of [second-to-last, last arrival] over its late instances, per step.
        cost_total = 0
        steps_late = 0
        for (_step,), in_step in mine.group_by(["step"]):
            s = in_step["second_last_arrival_ns"].to_numpy()
            e = in_step["last_arrival_ns"].to_numpy()
            c = int(covered_within(s, e, np.array([s.min()]), np.array([e.max()]))[0])
            cost_total += c
            steps_late += c > 0
        costs.append(mine.select("instance", "step", pl.col("last_rank").alias("late_rank"), pl.col("lateness_ns").alias("cost_ns")))
        waited = _summed_wait(arrivals.join(mine.select("instance"), on="instance").filter(pl.col("rank") != rank))
        excess = _excess(rank, mine, arrivals, steps, by_rank)
        key = max(excess, key=lambda k: excess[k]) if excess and max(excess.values()) > 0 else B.HOST_COMPUTE
        cause, label = LATE_CAUSES[key]
        stragglers.append(Straggler(
            rank=rank, cause=cause, cause_label=label, cost_ns_per_step=cost_total / n_steps,
            share_of_step=cost_total / n_steps / mean_step if mean_step > 0 else 0.0, waited_ns_per_step=float(waited) / n_steps,
            last_arrivals=mine.height, steps_late=steps_late, steps=n_steps, mean_step_ns=mean_step,
            excess_ns_per_step={k: excess.get(k, 0.0) / max(steps_late, 1) for k in B.BREAKDOWN},
        ))
    stragglers.sort(key=lambda s: -s.cost_ns_per_step)
    return stragglers, pl.concat(costs).cast({"cost_ns": pl.Int64})


def named(candidates: list[Straggler]) -> list[Straggler]:
    """The ranks called stragglers: holding the job back a material share of step time
    (``STRAGGLER_SHARE``), step after step (``STRAGGLER_STEPS``). Below that, who arrives
    last is the ranks' natural imbalance (docs/analysis.md)."""
    return [s for s in candidates if s.share_of_step >= STRAGGLER_SHARE and s.steps_late >= STRAGGLER_STEPS * s.steps]


def _summed_wait(arrivals: pl.DataFrame) -> int:
    """The waiting ranks' time waiting, each rank's overlapping waits counted once."""
    total = 0
    for _, rows in arrivals.group_by(["rank", "step"]):
        s = rows["start_ns"].to_numpy()
        e = s + rows["wait_ns"].to_numpy()
        total += int(covered_within(s, e, np.array([s.min()]), np.array([e.max()]))[0])
    return total


def _excess(rank: int, mine: pl.DataFrame, arrivals: pl.DataFrame, steps: pl.DataFrame, by_rank: dict[int, B.RankResult]) -> dict[str, float]:
    """Extra time per breakdown category the late rank spent, in each step it was late,
    from its step's start to its arrival at the first instance it was late for, against
    the median of the other ranks over the same stretch of their own step."""
    first = mine.sort("last_arrival_ns").group_by("step", maintain_order=True).agg(pl.col("instance").first())
    a = arrivals.join(first.select("instance"), on="instance").join(
        steps.select("rank", "step", pl.col("start_ns").alias("step_start_ns")), on=["rank", "step"], how="inner")
    totals: dict[str, float] = {c: 0.0 for c in B.BREAKDOWN}
    per_rank: dict[int, dict[str, np.ndarray]] = {}
    for (r,), rows in a.group_by(["rank"]):
        res = by_rank.get(int(r))
        if res is None or not res.layers:
            continue
        cats = B.categories_within(res.layers, res.has_device, rows["step_start_ns"].to_numpy(), np.maximum(rows["start_ns"].to_numpy(), rows["step_start_ns"].to_numpy()))
        per_rank[int(r)] = {"instance": rows["instance"].to_numpy(), **cats}
    if rank not in per_rank or len(per_rank) < 2:
        return {}
    me = per_rank[rank]
    for i, inst in enumerate(me["instance"]):
        for c in B.BREAKDOWN:
            others = [float(v[c][np.flatnonzero(v["instance"] == inst)[0]]) for r, v in per_rank.items() if r != rank and inst in v["instance"]]
            if others:
                totals[c] += float(me[c][i]) - float(np.median(others))
    return totals


def rank_table(steps: pl.DataFrame, instances: pl.DataFrame, arrivals: pl.DataFrame, gaps: pl.DataFrame, incomplete: list[int], tolerance_ns: int) -> pl.DataFrame:
    """One row per rank (``RANKS_SCHEMA``): its steady steps' mean time, busy share and
    share waiting for other ranks over its analysed steps, the collectives it arrived
    last at, and its main idle cause."""
    steady = steps.filter(~pl.col("warmup"))
    analysed = steps.filter(pl.col("analysed"))
    base = steady.group_by("rank").agg(steps=pl.len(), mean_step_ns=pl.col("dur_ns").mean())
    shares = analysed.group_by("rank").agg(
        busy_share=pl.col("busy_ns").sum() / pl.col("dur_ns").sum(), collective_wait_share=pl.col(f"{B.RANK_WAIT}_ns").sum() / pl.col("dur_ns").sum())
    last = instances.filter(pl.col("lateness_ns") > tolerance_ns).group_by(pl.col("last_rank").alias("rank")).agg(last_arrivals=pl.len())
    count = arrivals.group_by("rank").agg(collectives=pl.len())
    idle = gaps.join(analysed.select("rank", "step"), on=["rank", "step"], how="semi")
    cause = (
        idle.select("rank", *[pl.col(f"{c}_ns") for c in C.CAUSES]).group_by("rank").sum()
        .unpivot(index="rank", variable_name="cause", value_name="ns").filter(pl.col("ns") > 0)
        .sort("ns", descending=True).group_by("rank", maintain_order=True).first()
        .with_columns(main_cause=pl.col("cause").str.replace(r"_ns$", "")).select("rank", "main_cause")
    )
    out = base.join(shares, on="rank", how="left").join(last, on="rank", how="left").join(count, on="rank", how="left").join(cause, on="rank", how="left")
    out = out.with_columns(
        pl.col("last_arrivals").fill_null(0), pl.col("collectives").fill_null(0), complete=~pl.col("rank").is_in(incomplete),
    )
    return out.select(list(RANKS_SCHEMA)).cast(RANKS_SCHEMA).sort("rank")  # type: ignore[arg-type]

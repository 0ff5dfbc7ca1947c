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
from accelscope.analysis.intervals import union
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
    "last_arrivals": pl.Int64, "collectives": pl.Int64, "main_cause": pl.String, "waits_for_rank": pl.Int32, "waits_in": pl.String,
    "complete": pl.Boolean,
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
    before = _before_arrival(late, arrivals, steps, by_rank)
    stragglers = []
    costs = []
    for (rank,), mine in late.group_by(["last_rank"], maintain_order=True):
        rank = int(rank)
        # Cost: the union of [second-to-last, last arrival] over its late instances (per step,
        # summed: the steps do not overlap in time).
        cost_total = _union_ns(mine["second_last_arrival_ns"].to_numpy(), mine["last_arrival_ns"].to_numpy())
        steps_late = mine["step"].drop_nulls().n_unique()
        costs.append(mine.select("instance", "step", pl.col("last_rank").alias("late_rank"), pl.col("lateness_ns").alias("cost_ns")))
        others = arrivals.join(mine.select("instance"), on="instance").filter(pl.col("rank") != rank)
        waited = sum(_union_ns(g["start_ns"].to_numpy(), (g["start_ns"] + g["wait_ns"]).to_numpy()) for _, g in others.group_by("rank"))
        excess = _excess(rank, before)
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


def _union_ns(starts: np.ndarray, ends: np.ndarray) -> int:
    if starts.size == 0:
        return 0
    s, e = union(starts, ends)
    return int((e - s).sum())


def _before_arrival(late: pl.DataFrame, arrivals: pl.DataFrame, steps: pl.DataFrame, by_rank: dict[int, B.RankResult]) -> pl.DataFrame:
    """For each late rank's first late instance in each step: every rank's breakdown from
    its step's start to its arrival there (``late_rank``, ``instance``, ``rank``, a column
    per category). One pass per rank over every such instance."""
    first = late.sort("last_arrival_ns").group_by("last_rank", "step", maintain_order=True).agg(pl.col("instance").first())
    a = arrivals.join(first.select("instance", pl.col("last_rank").alias("late_rank")), on="instance").join(
        steps.select("rank", "step", pl.col("start_ns").alias("step_start_ns")), on=["rank", "step"], how="inner")
    frames = []
    for (r,), rows in a.group_by(["rank"]):
        res = by_rank.get(int(r))
        if res is None or not res.layers:
            continue
        ws = rows["step_start_ns"].to_numpy()
        cats = B.categories_within(res.layers, res.has_device, ws, np.maximum(rows["start_ns"].to_numpy(), ws))
        frames.append(rows.select("late_rank", "instance", "rank").with_columns(pl.Series(c, cats[c].astype(np.float64)) for c in B.BREAKDOWN))
    return pl.concat(frames) if frames else pl.DataFrame(schema={"late_rank": pl.Int32, "instance": pl.Int64, "rank": pl.Int32, **{c: pl.Float64 for c in B.BREAKDOWN}})


def _excess(rank: int, before: pl.DataFrame) -> dict[str, float]:
    """Extra time per breakdown category the late rank spent before arriving, in each step
    it was late, against the median of the other ranks over the same stretch of their own
    step, summed over those steps."""
    table = before.filter(pl.col("late_rank") == rank)
    me = table.filter(pl.col("rank") == rank)
    others = table.filter(pl.col("rank") != rank).group_by("instance").agg(pl.col(c).median() for c in B.BREAKDOWN)
    both = me.join(others, on="instance", suffix="_others")
    if both.height == 0:
        return {}
    return {c: float((both[c] - both[f"{c}_others"]).sum()) for c in B.BREAKDOWN}


def rank_table(steps: pl.DataFrame, instances: pl.DataFrame, arrivals: pl.DataFrame, gaps: pl.DataFrame, incomplete: list[int], tolerance_ns: int) -> pl.DataFrame:
    """One row per rank (``RANKS_SCHEMA``): its steady steps' mean time, busy share and
    share waiting for other ranks over its analysed steps, the collectives it arrived
    last at, its main idle cause, and the rank and collective kind it waited for most."""
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
    # Whom each rank waited for most, and in which kind of collective.
    whom = (
        arrivals.filter(pl.col("wait_ns") > 0).join(instances.select("instance", "last_rank", "kind"), on="instance")
        .group_by("rank", "last_rank", "kind").agg(pl.col("wait_ns").sum()).sort("wait_ns", descending=True)
        .group_by("rank", maintain_order=True).first().select("rank", pl.col("last_rank").alias("waits_for_rank"), pl.col("kind").alias("waits_in"))
    )
    out = (base.join(shares, on="rank", how="left").join(last, on="rank", how="left").join(count, on="rank", how="left")
           .join(cause, on="rank", how="left").join(whom, on="rank", how="left"))
    out = out.with_columns(
        pl.col("last_arrivals").fill_null(0), pl.col("collectives").fill_null(0), complete=~pl.col("rank").is_in(incomplete),
    )
    return out.select(list(RANKS_SCHEMA)).cast(RANKS_SCHEMA).sort("rank")  # type: ignore[arg-type]

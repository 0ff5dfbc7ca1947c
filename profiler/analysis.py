"""Run-level analysis: per-step breakdown, idle time by cause, verdict, recommendations.

A table in, tables out: ``analyze(run)`` runs ``breakdown.analyze_rank`` on each rank and
summarises. Plotting and printing live elsewhere (cli, dashboard).

The verdict uses XProf's thresholds on the *input-wait share*: the share of step time
during which the accelerator had no work while the training loop waited for input
(exclusive time, so waiting that overlaps device work does not count). On CPU-only runs
there is no device, so it is simply the share of step time spent waiting for input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from accelscope import causes as C
from accelscope.breakdown import BREAKDOWN, DEVICE_CATEGORIES, RankResult, analyze_rank, device_busy, empty_gaps
from accelscope.traces import schema as S
from accelscope.traces.run import Run

HIGH_THRESHOLD = 0.20
MODERATE_THRESHOLD = 0.05
VERDICTS = ("high", "moderate", "none")
VERDICT_TEXT = {"high": "highly input-bound", "moderate": "moderately input-bound", "none": "not input-bound"}
# A cause gets a recommendation when it idles the accelerator at least this share of step time.
RECOMMEND_SHARE = 0.02
TOP_N = 20


def verdict_for(share: float) -> str:
    """XProf's classification of an input-wait share."""
    if share >= HIGH_THRESHOLD:
        return "high"
    if share >= MODERATE_THRESHOLD:
        return "moderate"
    return "none"


class NoStepsError(ValueError):
    pass


@dataclass
class Report:
    run_name: str
    steps: pl.DataFrame  # one row per (rank, step): breakdown columns <category>_ns, shares, verdict, warmup
    gaps: pl.DataFrame  # one row per idle interval per device: cause and time per cause
    devices: pl.DataFrame
    streams: pl.DataFrame
    n_steps: int
    mean_step_ns: float
    input_wait_share: float
    busy_share: float
    verdict: str
    idle_by_cause_ns: dict[str, int]
    breakdown_ns: dict[str, int]
    top_kernels: pl.DataFrame  # the TOP_N device-work names with most time
    top_ops: pl.DataFrame
    has_device: bool
    notes: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    advice: list[dict[str, Any]] = field(default_factory=list)
    # Every name, not just the top ones: comparisons need both runs' time for each name.
    kernels_by_name: pl.DataFrame | None = None
    ops_by_name: pl.DataFrame | None = None

    @property
    def steady_ns(self) -> int:
        return int(self.steps.filter(~pl.col("warmup"))["dur_ns"].sum())

    @property
    def traced_steady(self) -> pl.DataFrame:
        """The steady steps whose ops and device work were recorded: those the framework
        profiler traced when it ran only in windows, else every steady step."""
        steady = self.steps.filter(~pl.col("warmup"))
        traced = steady.filter(pl.col("traced"))
        return traced if traced.height else steady

    @property
    def traced_ns(self) -> int:
        """Step time the op and kernel tables' shares are of (``traced_steady``)."""
        return int(self.traced_steady["dur_ns"].sum())

    @property
    def idle_share(self) -> float:
        return 1.0 - self.busy_share

    def to_dict(self) -> dict[str, Any]:
        """The ``analyze --json`` document (schema in docs/cli.md)."""
        total = self.steady_ns or 1
        us = lambda ns: round(ns / 1000, 3)  # noqa: E731
        return {
            "run": self.run_name,
            "verdict": self.verdict,
            "verdict_text": VERDICT_TEXT[self.verdict],
            "input_wait_share": round(self.input_wait_share, 6),
            "busy_share": round(self.busy_share, 6),
            "idle_share": round(self.idle_share, 6),
            "step_count": self.n_steps,
            "mean_step_us": us(self.mean_step_ns),
            "has_device": self.has_device,
            "thresholds": {"high": HIGH_THRESHOLD, "moderate": MODERATE_THRESHOLD},
            "devices": [{"rank": r["rank"], "device": r["device"], "busy_share": round(r["busy_share"], 6)} for r in self.devices.iter_rows(named=True)],
            "breakdown": {c: {"us": us(v), "share": round(v / total, 6)} for c, v in self.breakdown_ns.items()},
            "idle_by_cause": {c: {"us": us(v), "share": round(v / total, 6)} for c, v in self.idle_by_cause_ns.items()},
            "steps": [
                {
                    "rank": r["rank"],
                    "step": r["step"],
                    "name": r["name"],
                    "dur_us": us(r["dur_ns"]),
                    "busy_share": round(r["busy_share"], 6),
                    "input_wait_us": us(r["input_wait_ns"]),
                    "input_wait_share": round(r["input_wait_share"], 6),
                    "verdict": r["verdict"],
                    "warmup": r["warmup"],
                    "input_timed": r["input_timed"],
                    "traced": r["traced"],
                    "outlier": r["outlier"],
                    "outlier_reason": r["outlier_reason"],
                    "breakdown": {c: us(r[f"{c}_ns"]) for c in BREAKDOWN},
                }
                for r in self.steps.iter_rows(named=True)
            ],
            "recommendations": self.advice,
            "top_kernels": _table_json(self.top_kernels),
            "top_ops": _table_json(self.top_ops),
            "notes": self.notes,
        }


def _table_json(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of a table for JSON: ``*_ns`` columns become ``*_us``."""
    out = []
    for r in df.iter_rows(named=True):
        row = {}
        for k, v in r.items():
            if k.endswith("_ns"):
                row[k[:-3] + "_us"] = round(v / 1000, 3)
            else:
                row[k] = round(v, 6) if isinstance(v, float) else v
        out.append(row)
    return out


def short_name(name: str, width: int = 60) -> str:
    """A kernel or op name short enough for a table: no ``void``, no trailing argument list."""
    if name.startswith("void "):
        name = name[5:]
    if name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):  # the "(" that opens the final argument list
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                if i > 0:
                    name = name[:i]
                break
    return name if len(name) <= width else name[: width - 1] + "…"


def time_per_name(events: pl.DataFrame, kinds: list[str], total_ns: int, limit: int | None = TOP_N) -> pl.DataFrame:
    """Slices of ``kinds`` grouped by name: count, total/mean/max ns and share of ``total_ns``,
    longest total first (the report's top tables and the dashboard's grids)."""
    df = events.filter(pl.col("kind").is_in(kinds))
    if df.height == 0:
        return pl.DataFrame(schema={"name": pl.String, "kind": pl.String, "count": pl.UInt32, "total_ns": pl.Int64, "mean_ns": pl.Float64, "max_ns": pl.Int64, "share_of_step_time": pl.Float64})
    return (
        df.group_by("name")
        .agg(pl.col("kind").first(), pl.len().alias("count"), pl.col("dur_ns").sum().alias("total_ns"), pl.col("dur_ns").mean().alias("mean_ns"), pl.col("dur_ns").max().alias("max_ns"))
        .with_columns((pl.col("total_ns") / max(total_ns, 1)).alias("share_of_step_time"))
        .sort(["total_ns", "name"], descending=[True, False])  # ties by name: the same order every time
        .head(limit if limit is not None else df.height)
    )


def _dataloader_evidence(run: Run, events: pl.DataFrame) -> str:
    pipeline = run.meta.get("input_pipeline") or {}
    if "num_workers" in pipeline:
        return f" with num_workers={pipeline['num_workers']}"
    names = events.filter(pl.col("name").str.contains(r"DataLoader\)#"))["name"].unique().to_list()
    if any("_SingleProcessDataLoaderIter" in n for n in names):
        return " with num_workers=0 (single-process DataLoader)"
    if any("_MultiProcessingDataLoaderIter" in n for n in names):
        return " with DataLoader workers"
    return ""


ADVICE = {
    C.INPUT_WAIT: "raise DataLoader num_workers, set pin_memory=True and persistent_workers=True, prefetch (prefetch_factor; tf.data .prefetch), or move decoding/augmentation off the critical path",
    C.H2D_COPY: "pin host memory (pin_memory=True) and copy with .to(device, non_blocking=True), or prefetch the next batch to the device on a side stream",
    C.COLLECTIVE: "overlap communication with compute (DDP bucket_cap_mb, gradient accumulation), and look for a straggler rank",
    C.SYNC: "remove host-device syncs from the loop (.item(), .cpu(), printing tensors, torch.cuda.synchronize); log metrics every N steps",
    C.OPTIMIZER: "use a fused or foreach optimizer (fused=True / foreach=True) and keep Python work out of the step",
    C.PROFILER: "reduce profiler overhead (record_shapes/with_stack off, shorter active windows)",
    C.HOST_COMPUTE: "the host launches work too slowly for the device: fewer, larger kernels (torch.compile, CUDA graphs), a larger batch, or less Python per step",
    C.NO_HOST: "nothing was traced on the host then: usually Python between ops; record with stacks (with_stack=True) to see it",
}


def analyze(run: Run) -> Report:
    """Analyse every rank of ``run``. Raises NoStepsError when it has no events at all."""
    events = run.slices
    if events.height == 0:
        raise NoStepsError(f"{run.path}: no events recorded")
    notes: list[str] = list(run.read_warnings)
    if not run.meta.get("complete", False):
        notes.append("the run did not finish cleanly: analysing what was flushed before it stopped")
    bad = events.filter(pl.col("dur_ns") < 0).height
    if bad:
        notes.append(f"{bad} slices with negative durations were ignored")
        events = events.filter(pl.col("dur_ns") >= 0)
    results: list[RankResult] = []
    for (rank,), ev in events.group_by(["rank"], maintain_order=True):
        results.append(analyze_rank(ev, int(rank)))
    for r in results:
        notes.extend(n if len(results) == 1 else f"rank {r.rank}: {n}" for n in r.notes)
    steps = _finish_steps(pl.concat([r.steps for r in results]))
    steps = steps.with_columns(traced=_traced(run, steps))
    steps = steps.with_columns(input_timed=pl.lit(True) if run.meta.get("input_timing") == "every step" else pl.col("traced"))
    steps = steps.with_columns(verdict=pl.when(pl.col("input_timed")).then(pl.col("verdict")))
    steps = mark_outliers(steps)
    n_out = int(steps["outlier"].sum())
    if n_out:
        notes.append(f"{n_out} outlier step{'s' if n_out > 1 else ''} (far slower than the median step; see the steps table)")
    if steps["warmup"].any():
        notes.append("step 0 is treated as warm-up and left out of the summary")
    steady = steps.filter(~pl.col("warmup"))
    total = int(steady["dur_ns"].sum())
    # Ops and device work exist only in the steps the framework profiler traced. When it ran in
    # windows, the device's figures come from those steps, scaled to the whole run: the steps
    # between windows hold no kernels, and counting them would read as an idle device.
    has_device = any(r.has_device for r in results)
    traced = steady.filter(pl.col("traced"))
    partial = 0 < traced.height < steady.height
    if partial:
        notes.append(
            f"ops{' and device work' if has_device else ''} were recorded in {traced.height} of {steady.height} steady steps "
            f"(the framework profiler's windows): {'busy time, the breakdown, input wait, idle causes and ' if has_device else ''}"
            "the op and kernel tables come from those steps"
        )
    basis = traced if partial and has_device else steady
    timed_all = steady.filter(pl.col("input_timed"))
    if 0 < timed_all.height < steady.height:
        notes.append(
            f"input waits were seen only in the {timed_all.height} of {steady.height} steps the framework profiler traced "
            "(its IteratorGetNext / DataLoader ops): the input-wait share and its advice come from those steps "
            "(prof.iter times every step)"
        )
    # With device work, an input wait idles the device only where no kernel overlaps it, which only
    # traced steps show: the share comes from the same steps as the breakdown.
    timed = timed_all.join(basis.select("rank", "step"), on=["rank", "step"], how="semi") if basis is traced else timed_all
    timed_total = int(timed["dur_ns"].sum())
    share = float(timed["input_wait_ns"].sum()) / timed_total if timed_total else 0.0
    basis_total = int(basis["dur_ns"].sum())
    scale = total / basis_total if basis_total else 1.0
    busy = float(basis["busy_ns"].sum()) / basis_total if basis_total else 0.0
    gaps = pl.concat([r.gaps for r in results]) if results else empty_gaps()
    steady_gaps = gaps.join(steady.select("rank", "step"), on=["rank", "step"], how="semi")
    basis_gaps = gaps.join(basis.select("rank", "step"), on=["rank", "step"], how="semi")
    n_devices = max(sum(max(r.devices.height, 1) for r in results) / max(len(results), 1), 1)
    idle_by_cause = {c: int(basis_gaps[f"{c}_ns"].sum() / n_devices * scale) for c in C.CAUSES}
    if 0 < timed.height < steady.height:  # extrapolate input waits from the steps that saw them
        timed_gaps = steady_gaps.join(timed.select("rank", "step"), on=["rank", "step"], how="semi")
        idle_by_cause[C.INPUT_WAIT] = int(timed_gaps[f"{C.INPUT_WAIT}_ns"].sum() / n_devices * total / max(timed_total, 1))
    breakdown_ns = {c: int(basis[f"{c}_ns"].sum() * scale) for c in BREAKDOWN}
    tables_total = int((traced if partial else steady)["dur_ns"].sum())
    verdict = verdict_for(share)
    n_steady = steady.height or 1
    mean_step = float(steady["dur_ns"].mean()) if steady.height else float("nan")
    advice = []
    for cause, idle_ns in sorted(idle_by_cause.items(), key=lambda kv: -kv[1]):
        cause_share = idle_ns / total if total else 0.0
        if cause_share < RECOMMEND_SHARE:
            continue
        per_step = idle_ns / n_steady
        evidence = f"{C.CAUSE_TEXT[cause]} idles the {'accelerator' if has_device else 'compute thread'} {cause_share:.1%} of step time ({per_step / 1e6:.1f} ms per step)"
        if cause == C.INPUT_WAIT:
            evidence = f"input wait is {cause_share:.1%} of step time{_dataloader_evidence(run, events)}"
        projected = mean_step - per_step
        advice.append(
            {
                "cause": cause,
                "evidence": evidence,
                "action": ADVICE[cause],
                "idle_share": round(cause_share, 6),
                "projected_step_us": round(projected / 1000, 3),
                "projected_speedup": round(mean_step / projected, 4) if projected > 0 else None,
                "text": f"{evidence}: {ADVICE[cause]}. Expected: {mean_step / 1e6:.1f} -> {projected / 1e6:.1f} ms per step ({mean_step / projected:.2f}x) if this idle time goes."
                if projected > 0 else f"{evidence}: {ADVICE[cause]}.",
            }
        )
    kernels_by_name = time_per_name(events, [S.KERNEL, S.MEMCPY, S.MEMSET], tables_total, limit=None)
    ops_by_name = time_per_name(events, [S.CPU_OP], tables_total, limit=None)
    # Busy per device and stream over the same steps as the run's busy share (the steady
    # steps, or the traced ones): never the warm-up step.
    device_rows, stream_rows = [], []
    device_slices = (
        events.lazy().filter(pl.col("kind").is_in(list(S.DEVICE_KINDS)) & (pl.col("device") != "cpu")).select("rank", "start_ns", "dur_ns", "device", "stream").collect()
        if has_device else None
    )
    for r in results:
        b = basis.filter(pl.col("rank") == r.rank)
        if b.height == 0:  # a rank with no step in the basis (only a warm-up step): over all its steps
            device_rows.append(r.devices)
            stream_rows.append(r.streams)
        elif r.has_device:
            d, st = device_busy(device_slices.filter(pl.col("rank") == r.rank), r.rank, b["start_ns"].to_numpy(), b["end_ns"].to_numpy())
            device_rows.append(d)
            stream_rows.append(st)
        else:  # the training thread: busy whenever it was not waiting
            step_ns, busy_ns = int(b["dur_ns"].sum()), int(b["busy_ns"].sum())
            device_rows.append(pl.DataFrame([{"rank": r.rank, "device": "cpu", "busy_ns": busy_ns, "busy_share": busy_ns / step_ns if step_ns else 0.0}], schema=r.devices.schema))
            stream_rows.append(r.streams)
    devices = pl.concat(device_rows)
    streams = pl.concat(stream_rows)
    return Report(
        run_name=run.name,
        steps=steps,
        gaps=gaps,
        devices=devices,
        streams=streams,
        n_steps=steps.height,
        mean_step_ns=mean_step,
        input_wait_share=share,
        busy_share=busy,
        verdict=verdict,
        idle_by_cause_ns=idle_by_cause,
        breakdown_ns=breakdown_ns,
        top_kernels=kernels_by_name.head(TOP_N),
        top_ops=ops_by_name.head(TOP_N),
        has_device=has_device,
        notes=notes,
        recommendations=[a["text"] for a in advice],
        advice=advice,
        kernels_by_name=kernels_by_name,
        ops_by_name=ops_by_name,
    )


# A step is an outlier when its modified z-score (Iglewicz and Hoaglin: 0.6745 * (x -
# median) / MAD) exceeds this, and it is also this much slower than the median step
# (steady loops have tiny MADs, so a z-score alone would flag jitter).
OUTLIER_Z = 3.5
OUTLIER_MIN_EXCESS = 0.25


def mark_outliers(steps: pl.DataFrame) -> pl.DataFrame:
    """Add ``outlier`` and ``outlier_reason`` per step: unusually slow steady-state steps
    of each rank, with the breakdown category that grew most against that rank's median."""
    steady = ~pl.col("warmup")
    med = pl.col("dur_ns").filter(steady).median().over("rank")
    mad = (pl.col("dur_ns") - med).abs().filter(steady).median().over("rank")
    z = 0.6745 * (pl.col("dur_ns") - med) / pl.max_horizontal(mad, pl.lit(1.0))
    out = steps.with_columns(
        outlier=steady & (z > OUTLIER_Z) & (pl.col("dur_ns") > med * (1 + OUTLIER_MIN_EXCESS)) & (pl.len().over("rank") >= 5),
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


def _traced(run: Run, steps: pl.DataFrame) -> pl.Series:
    """Per step: did the framework profiler record its ops and device work?

    A recorded run's torch.profiler / TensorFlow profiler traces only the windows of its
    schedule; every other run (imported traces, light runs) counts every step as traced.
    The same mask says which steps saw input waits when the training loop did not time
    them itself (no ``prof.iter``, as in Keras ``model.fit``): then waits are seen only as
    the profiler's ``IteratorGetNext`` / DataLoader ops.
    """
    meta = run.meta
    schedule = meta.get("schedule")
    traced_ok = any(
        name in (meta.get("collectors") or {}) and meta["collectors"][name].get("status") == "ok"
        for name in ("torch_profiler", "tensorflow_profiler")
    )
    if not schedule or not traced_ok:
        return pl.Series("traced", [True] * steps.height, dtype=pl.Boolean)
    from accelscope.schedule import Schedule

    n = int(steps["step"].max()) + 1 if steps.height else 0
    windows = Schedule(**schedule).windows(n)
    traced = np.zeros(n, dtype=bool)
    for first, last in windows:
        traced[first:last + 1] = True
    numbers = steps["step"].to_numpy()
    ok = (numbers >= 0) & (numbers < n)
    return pl.Series("traced", np.where(ok, traced[np.clip(numbers, 0, max(n - 1, 0))], False), dtype=pl.Boolean)


def _finish_steps(steps: pl.DataFrame) -> pl.DataFrame:
    """Add warm-up flags, shares and per-step verdicts to breakdown rows of any ranks.

    Step 0 (``ProfilerStep#0``: worker start-up, lazy initialisation, allocator growth) is
    warm-up when a rank has at least three steps; summaries leave it out.
    """
    steps = steps.sort("rank", "start_ns")
    n_per_rank = steps.group_by("rank").len()["len"].max() if steps.height else 0
    share = pl.col("input_wait_ns") / pl.col("dur_ns").clip(lower_bound=1)
    return steps.with_columns(
        warmup=(pl.col("name") == "ProfilerStep#0") & pl.lit((n_per_rank or 0) >= 3),
        busy_share=pl.col("busy_ns") / pl.col("dur_ns").clip(lower_bound=1),
        input_wait_share=share,
        verdict=pl.when(share >= HIGH_THRESHOLD).then(pl.lit("high")).when(share >= MODERATE_THRESHOLD).then(pl.lit("moderate")).otherwise(pl.lit("none")),
    )


def step_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per step of a single-rank events table, with its breakdown and verdict."""
    return _finish_steps(analyze_rank(events, int(events["rank"][0]) if events.height else 0).steps)


_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*$")


def check_gates(doc: dict[str, Any], gates: list[str]) -> list[str]:
    """The gates (``"input_wait_share>0.10"``) that ``doc`` crosses, as messages.

    A metric is a dotted path into the ``analyze --json`` document, e.g. ``idle_share``,
    ``mean_step_us`` or ``idle_by_cause.h2d_copy.share``. Raises ValueError for a gate
    that does not parse or names no number.
    """
    crossed = []
    ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "==": np.equal, "!=": np.not_equal}
    for gate in gates:
        m = _GATE.match(gate)
        if not m:
            raise ValueError(f"--fail-if {gate!r}: expected METRIC OP NUMBER, e.g. 'input_wait_share>0.10'")
        path, op, value = m.group(1), m.group(2), float(m.group(3))
        node: Any = doc
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"--fail-if {gate!r}: no metric {path!r} in the analysis (see docs/cli.md)")
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise ValueError(f"--fail-if {gate!r}: {path!r} is not a number")
        if ops[op](node, value):
            crossed.append(f"{path} = {node:g} {op} {value:g}")
    return crossed

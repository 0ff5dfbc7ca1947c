"""Memory by category: what kind of tensor each allocation was (parameters, inputs,
activations, gradients, optimizer state, temporaries), inferred from when it was allocated
and freed in the training step, and the categories held at each device's peak.

torch's memory profiler names categories from tensor identities and the autograd graph,
which a trace does not carry; here they come from the allocation lifetimes
(``memory_live.lifetimes``) and the phases of each step, as the host ops mark them:

* **backward**: from the step's first to its last ``autograd::engine::evaluate_function``;
* **optimizer**: inside ``Optimizer.step#...``; **zero_grad**: inside ``Optimizer.zero_grad#...``;
* **forward**: the rest of the step before its backward (all of it in a step without one).

An allocation made in the forward and freed in the step's backward is an **activation**
(freed in the forward: a **temporary**); one made in the forward by a copy op
(``INPUT_OPS``: ``.to()``, collation, pinning) that outlives the step is an **input**; one
made in the backward that outlives it is a **gradient** (freed within it:
**autograd_detail**, the backward's own intermediates); one made in the optimizer step that
outlives the step is **optimizer_state** (else a temporary); one made before the first step
and never freed is a **parameter**. A block allocated before the trace and freed in a
``zero_grad`` is a gradient (``zero_grad(set_to_none=True)``), in a backward an activation.
What fits no rule is **unknown**; what the allocator held before the trace began and never
freed in it is **before_trace** (in a steady-state capture, mostly parameters and optimizer
state): the device's allocated total less the blocks seen.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from accelscope.analysis.memory import GROUP, allocated
from accelscope.analysis.memory_live import alive
from accelscope.traces import schema as S

CATEGORIES = ("parameter", "optimizer_state", "input", "activation", "gradient", "autograd_detail", "temporary", "unknown", "before_trace")
BACKWARD_OP = "autograd::engine::evaluate_function"
OPTIMIZER_STEP = "Optimizer.step#"
ZERO_GRAD = "Optimizer.zero_grad#"
# Copy and collation ops that bring a batch in: their allocations outliving the step are its inputs.
INPUT_OPS = ("aten::to", "aten::_to_copy", "aten::copy_", "aten::pin_memory", "aten::_pin_memory", "aten::stack", "aten::cat")
# Report.memory_categories: one row per (rank, device, category) held at the device's peak.
CATEGORIES_SCHEMA = {"rank": pl.Int32, "device": pl.String, "category": pl.String, "bytes": pl.Int64}
_SPAN = {"rank": pl.Int32, "start_ns": pl.Int64, "end_ns": pl.Int64}


def empty() -> pl.DataFrame:
    """Report.memory_categories of a run whose allocator events carry no addresses."""
    return pl.DataFrame(schema=CATEGORIES_SCHEMA)


def phase_filter() -> pl.Expr:
    """A predicate for the slices that mark the phases (backward ops, optimizer annotations),
    to read with the allocating threads' host ops (``memory.op_filter``)."""
    name = pl.col("name")
    return name.str.starts_with(BACKWARD_OP) | name.str.starts_with(OPTIMIZER_STEP) | name.str.starts_with(ZERO_GRAD)


def step_spans(run: Any, rank: int | None = None) -> pl.DataFrame:
    """The step slices (``ProfilerStep#N``) of ``rank`` (every rank: None) as (rank, start_ns, end_ns)."""
    where = pl.col("kind") == S.STEP
    if rank is not None:
        where &= pl.col("rank") == rank
    return _spans(run.slices_where(where))


def _spans(slices: pl.DataFrame) -> pl.DataFrame:
    return slices.select(pl.col("rank").cast(pl.Int32), pl.col("start_ns").cast(pl.Int64),
                         end_ns=(pl.col("start_ns") + pl.col("dur_ns")).cast(pl.Int64)).cast(_SPAN).sort("start_ns")


def _inside(rows: pl.DataFrame, time: str, spans: pl.DataFrame, out: str) -> pl.DataFrame:
    """``rows`` with boolean ``out``: whether ``time`` falls in one of the rank's ``spans``
    (spans may nest or overlap: the latest to start, else an earlier still open)."""
    if spans.height == 0:
        return rows.with_columns(pl.lit(False).alias(out))
    merged = _merge(spans)
    keyed = rows.with_row_index("_r").sort(time, nulls_last=True)
    hit = keyed.filter(pl.col(time).is_not_null()).join_asof(
        merged.rename({"start_ns": "_s", "end_ns": "_e"}), left_on=time, right_on="_s", by="rank", strategy="backward", check_sortedness=False)
    hit = hit.select("_r", (pl.col(time) <= pl.col("_e")).fill_null(False).alias(out))
    return keyed.join(hit, on="_r", how="left").with_columns(pl.col(out).fill_null(False)).sort("_r").drop("_r")


def _merge(spans: pl.DataFrame) -> pl.DataFrame:
    """Per rank, the union of ``spans`` as disjoint intervals."""
    s = spans.sort("rank", "start_ns").with_columns(_reach=pl.col("end_ns").cum_max().over("rank"))
    new = (pl.col("start_ns") > pl.col("_reach").shift(1).over("rank")).fill_null(True)
    return (s.with_columns(_g=new.cast(pl.Int64).cum_sum().over("rank"))
            .group_by("rank", "_g").agg(pl.col("start_ns").min(), pl.col("end_ns").max()).drop("_g").sort("start_ns"))


def _backward_spans(steps: pl.DataFrame, ops: pl.DataFrame) -> pl.DataFrame:
    """Per step (rank, start_ns, end_ns) its backward: the first to the last backward op in it
    (``_b0``, ``_b1``; null: no backward)."""
    bwd = ops.filter(pl.col("name").str.starts_with(BACKWARD_OP)).select(
        pl.col("rank").cast(pl.Int32), _o0=pl.col("start_ns").cast(pl.Int64), _o1=(pl.col("start_ns") + pl.col("dur_ns")).cast(pl.Int64)).sort("_o0")
    st = steps.sort("start_ns").with_row_index("_step")
    if bwd.height == 0:
        return st.with_columns(_b0=pl.lit(None, pl.Int64), _b1=pl.lit(None, pl.Int64))
    owned = bwd.join_asof(st, left_on="_o0", right_on="start_ns", by="rank", strategy="backward", check_sortedness=False).filter(
        pl.col("_o0") < pl.col("end_ns"))
    per = owned.group_by("_step").agg(_b0=pl.col("_o0").min(), _b1=pl.col("_o1").max())
    return st.join(per, on="_step", how="left")


def categorise(lives: pl.DataFrame, ops: pl.DataFrame | None, steps: pl.DataFrame) -> pl.DataFrame:
    """``lives`` (``memory_live.with_ops``: lifetimes with their allocating ``op``) with
    ``category``. ``ops``: host ops and phase annotations (``phase_filter``) of the rank(s);
    ``steps``: (rank, start_ns, end_ns) of each step."""
    if lives.height == 0:
        return lives.with_columns(category=pl.lit(None, pl.String))
    ops = ops if ops is not None else pl.DataFrame(schema={"name": pl.String, "rank": pl.Int32, "start_ns": pl.Int64, "dur_ns": pl.Int64})
    ops = ops.with_columns(pl.col("rank").cast(pl.Int32))
    steps = steps.select(pl.col("rank").cast(pl.Int32), pl.col("start_ns").cast(pl.Int64), pl.col("end_ns").cast(pl.Int64))
    in_steps = _backward_spans(steps, ops).rename({"start_ns": "_s0", "end_ns": "_s1"}).drop("_step")
    rows = lives.with_row_index("_lid").sort("alloc_ns", nulls_last=True)
    known = rows.filter(pl.col("alloc_ns").is_not_null()).join_asof(
        in_steps, left_on="alloc_ns", right_on="_s0", by="rank", strategy="backward", check_sortedness=False)
    unseen = rows.filter(pl.col("alloc_ns").is_null()).with_columns(
        _s0=pl.lit(None, pl.Int64), _s1=pl.lit(None, pl.Int64), _b0=pl.lit(None, pl.Int64), _b1=pl.lit(None, pl.Int64))
    rows = pl.concat([known, unseen.select(known.columns)])
    in_step = pl.col("alloc_ns") < pl.col("_s1")
    rows = rows.with_columns(pl.when(in_step).then("_s0").alias("_s0"), pl.when(in_step).then("_s1").alias("_s1"),
                             pl.when(in_step).then("_b0").alias("_b0"), pl.when(in_step).then("_b1").alias("_b1"))
    for name, prefix in (("_opt", OPTIMIZER_STEP), ("_zero", ZERO_GRAD)):
        spans = _spans(ops.filter(pl.col("name").str.starts_with(prefix)))
        rows = _inside(rows, "alloc_ns", spans, name)
    rows = _inside(rows, "free_ns", _spans(ops.filter(pl.col("name").str.starts_with(ZERO_GRAD))), "_freed_in_zero")
    rows = _inside(rows, "free_ns", _spans(ops.filter(pl.col("name").str.starts_with(BACKWARD_OP))), "_freed_in_bwd")
    first_step = steps.group_by("rank").agg(_first=pl.col("start_ns").min())
    rows = rows.join(first_step, on="rank", how="left")
    return rows.with_columns(category=_rules()).sort("_lid").drop(
        "_lid", "_s0", "_s1", "_b0", "_b1", "_opt", "_zero", "_freed_in_zero", "_freed_in_bwd", "_first")


def _rules() -> pl.Expr:
    a, f = pl.col("alloc_ns"), pl.col("free_ns")
    outlives_step = f.is_null() | (f >= pl.col("_s1"))
    in_step = pl.col("_s0").is_not_null()
    has_bwd = pl.col("_b0").is_not_null()
    forward = in_step & (~has_bwd | (a < pl.col("_b0")))
    backward = in_step & has_bwd & (a >= pl.col("_b0")) & (a <= pl.col("_b1"))
    return (
        pl.when(a.is_null() & pl.col("_freed_in_zero")).then(pl.lit("gradient"))
        .when(a.is_null() & pl.col("_freed_in_bwd")).then(pl.lit("activation"))
        .when(a.is_null()).then(pl.lit("before_trace"))
        .when(pl.col("_opt")).then(pl.when(outlives_step).then(pl.lit("optimizer_state")).otherwise(pl.lit("temporary")))
        .when(pl.col("_zero")).then(pl.lit("temporary"))
        .when(backward).then(pl.when(f.is_not_null() & (f <= pl.col("_b1"))).then(pl.lit("autograd_detail")).otherwise(pl.lit("gradient")))
        .when(forward & has_bwd & f.is_not_null() & (f < pl.col("_b0"))).then(pl.lit("temporary"))
        .when(forward & has_bwd & ~outlives_step).then(pl.lit("activation"))
        .when(forward & ~has_bwd & ~outlives_step).then(pl.lit("temporary"))
        .when(forward & pl.col("op").is_in(list(INPUT_OPS))).then(pl.lit("input"))
        .when(in_step & ~outlives_step).then(pl.lit("temporary"))
        .when(~in_step & (a < pl.col("_first")) & f.is_null()).then(pl.lit("parameter"))
        .when(~in_step & f.is_not_null()).then(pl.lit("temporary"))
        .otherwise(pl.lit("unknown"))
    )


def at(categorised: pl.DataFrame, times: pl.DataFrame) -> pl.DataFrame:
    """Per row of ``times`` (rank, device, time_ns, allocated_bytes): the bytes of each
    category live then, with ``before_trace`` topped up to the allocated total (what the
    allocator held that no seen block accounts for). CATEGORIES_SCHEMA rows, no zero rows."""
    pairs = categorised.join(times.select(pl.col("rank").cast(pl.Int32), "device", pl.col("time_ns").alias("_t")), on=GROUP)
    live = pairs.filter(alive(pairs, pl.col("_t"))).group_by(*GROUP, "category").agg(bytes=pl.col("bytes").sum())
    seen = live.group_by(GROUP).agg(_seen=pl.col("bytes").sum())
    rest = (times.select(pl.col("rank").cast(pl.Int32), "device", "allocated_bytes").join(seen, on=GROUP, how="left")
            .select(*GROUP, category=pl.lit("before_trace"), bytes=(pl.col("allocated_bytes") - pl.col("_seen").fill_null(0)).clip(lower_bound=0)))
    out = pl.concat([live, rest.cast(live.schema)]).group_by(*GROUP, "category").agg(pl.col("bytes").sum())
    order = pl.col("category").replace_strict({c: i for i, c in enumerate(CATEGORIES)}, default=len(CATEGORIES))
    return out.filter(pl.col("bytes") > 0).sort(*GROUP, order).cast(CATEGORIES_SCHEMA)


def at_peaks(categorised: pl.DataFrame, memory: pl.DataFrame, peaks: pl.DataFrame) -> pl.DataFrame:
    """Report.memory_categories: the categories held at each device's peak (``peaks``:
    Report.memory), only for devices whose blocks carry addresses (``categorised``)."""
    with_blocks = categorised.select(GROUP).unique()
    times = peaks.select(pl.col("rank").cast(pl.Int32), "device", time_ns="peak_time_ns", allocated_bytes="peak_allocated_bytes").join(
        with_blocks, on=GROUP, how="semi")
    if times.height == 0:
        return empty()
    return at(categorised, times)


def timeline(categorised: pl.DataFrame, memory: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device) with blocks, at each allocator event: the bytes of each category
    live after it (one column per category of CATEGORIES, ``before_trace`` the allocated
    total less the blocks seen), for stacked curves."""
    if categorised.height == 0:
        return pl.DataFrame(schema={"rank": pl.Int32, "device": pl.String, "time_ns": pl.Int64, **{c: pl.Int64 for c in CATEGORIES}})
    ups = categorised.filter(pl.col("alloc_ns").is_not_null()).select(*GROUP, "category", time_ns="alloc_ns", _d="bytes")
    before = categorised.filter(pl.col("alloc_ns").is_null()).select(*GROUP, "category", time_ns=pl.lit(None, pl.Int64), _d="bytes")
    downs = categorised.filter(pl.col("free_ns").is_not_null()).select(*GROUP, "category", time_ns="free_ns", _d=-pl.col("bytes"))
    deltas = pl.concat([before, ups, downs]).group_by(*GROUP, "time_ns", "category").agg(pl.col("_d").sum())
    wide = deltas.pivot(on="category", index=[*GROUP, "time_ns"], values="_d").sort(*GROUP, "time_ns", nulls_last=False)
    present = [c for c in CATEGORIES if c in wide.columns]
    wide = wide.with_columns(pl.col(present).fill_null(0).cum_sum().over(GROUP))
    wide = wide.with_columns(*(pl.lit(0, pl.Int64).alias(c) for c in CATEGORIES if c not in wide.columns)).filter(pl.col("time_ns").is_not_null())
    totals = (allocated(memory.with_columns(pl.col("rank").cast(pl.Int32))).group_by(*GROUP, "time_ns", maintain_order=True).last()
              .select(*GROUP, "time_ns", "allocated_bytes").sort("time_ns"))
    wide = wide.sort("time_ns").join_asof(totals, on="time_ns", by=GROUP, strategy="backward", check_sortedness=False)
    seen = pl.sum_horizontal([c for c in CATEGORIES if c != "before_trace"])
    wide = wide.with_columns(before_trace=(pl.col("before_trace") + (pl.col("allocated_bytes") - seen - pl.col("before_trace")).clip(lower_bound=0)).fill_null(
        pl.col("before_trace")))
    return wide.select(*GROUP, "time_ns", *CATEGORIES).sort(*GROUP, "time_ns").cast({"rank": pl.Int32, **{c: pl.Int64 for c in CATEGORIES}})


def run_timeline(run: Any) -> pl.DataFrame:
    """``timeline`` of a whole run (the dashboard's stacked memory curves): its allocator
    events, the allocating threads' host ops and phase annotations, and its step slices."""
    from accelscope.analysis.leaks import ALLOCATION_OPS
    from accelscope.analysis.memory import op_filter
    from accelscope.analysis.memory_live import lifetimes, with_ops

    memory = run.memory
    lives = lifetimes(memory)
    if lives.height == 0:
        return timeline(lives.with_columns(category=pl.lit(None, pl.String)), memory)
    ops = run.slices_where(op_filter(memory) | phase_filter())
    return timeline(categorise(with_ops(lives, ops, ALLOCATION_OPS), ops, step_spans(run)), memory)

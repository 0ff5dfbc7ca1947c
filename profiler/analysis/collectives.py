"""Collectives across ranks: recognised on every rank, matched into instances, and split
into waiting (until the last rank arrives) and transfer (after). Tables in, tables out.

* ``find``: every collective a rank executed, from what executes it: NCCL/RCCL kernels
  (``ncclKernel_*``, ``ncclDevKernel_*``), XLA collectives on TPUs/GPUs (``all-reduce``,
  ``all-gather``, ``reduce-scatter``, ...), gloo's ``gloo:<op>`` on its worker threads,
  TensorFlow's collective ops (``CollectiveReduceV2``, ``NcclAllReduce``, ...). Host calls
  that only enqueue work (``c10d::allreduce_``, ``record_param_comms``, ``nccl:all_reduce``)
  stand in for a rank that has no executing event. Process group, sequence number and
  message size come from the event's args, or from the ``record_param_comms`` call that
  launched an NCCL kernel.
* ``match``: one instance per collective call of the job. By (process group, sequence
  number) where every event of the group has one; else by order within each step, per
  group and kind, checked by overlap in time (every rank's interval of a
  blocking collective contains the moment the last rank arrived). What cannot be matched
  is counted and reported, never guessed.
* per rank and instance: arrival (its start), the last arriver, ``wait_ns`` = last
  arrival − own arrival, clipped to the collective; transfer = the rest.

Bandwidth follows nccl-tests (docs/analysis.md): algorithm bandwidth = message bytes /
transfer time; bus bandwidth = that × a factor of the kind and group size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from accelscope.traces import schema as S

# Kinds of collective, in the order the name rules are tried (all_reduce before reduce).
KIND_RULES: tuple[tuple[str, str], ...] = (
    ("all_reduce", r"(?i)all_?reduce|allreduce|all-reduce|CollectiveReduce|NcclAllReduce"),
    ("reduce_scatter", r"(?i)reduce_?scatter|reducescatter|reduce-scatter"),
    ("all_gather", r"(?i)all_?gather|allgather|all-gather|CollectiveGather"),
    ("all_to_all", r"(?i)all_?to_?all|alltoall|all-to-all"),
    ("broadcast", r"(?i)broadcast|bcast"),
    ("reduce", r"(?i)reduce"),
    ("barrier", r"(?i)barrier"),
    ("send_recv", r"(?i)sendrecv|send|recv|collective-permute"),
)
# nccl-tests' bus bandwidth factor per kind, for n ranks (doc/PERFORMANCE.md).
BUS_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "send_recv": lambda n: 1.0,
}

# What executes a collective (its interval is the rank's time in it), by source.
DEVICE_NAME = r"(?i)^(nccl|rccl)\w*Kernel|^nccl|^rccl|^(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:[.-]|$)"
GLOO_NAME = r"^gloo:"
TF_NAME = r"^(CollectiveReduce(V\d)?|CollectiveGather(V\d)?|CollectiveBcast(Send|Recv)(V\d)?|CollectiveAllToAll(V\d)?|CollectiveReduceScatter(V\d)?|NcclAllReduce)$"
# Host calls that launch one (no execution of their own): used only where a rank has nothing better.
LAUNCH_NAME = r"^c10d::(allreduce|allgather|_allgather_base|reduce_scatter|_reduce_scatter_base|broadcast|reduce|alltoall|barrier)|^nccl:|^record_param_comms$"
ANY_NAME = f"{DEVICE_NAME}|{GLOO_NAME}|{TF_NAME}|{LAUNCH_NAME}"
_XLA_WAIT = r"-done(?:[.-]|$)"  # the completion half of an async XLA collective: a wait, not the collective

FOUND_SCHEMA = {
    "rank": pl.Int32, "kind": pl.String, "name": pl.String, "source": pl.String, "start_ns": pl.Int64, "end_ns": pl.Int64,
    "group": pl.String, "seq": pl.Int64, "size_bytes": pl.Int64,
}
_DTYPE_BYTES = {"float": 4, "float32": 4, "f32": 4, "c10::float": 4, "double": 8, "float64": 8, "half": 2, "float16": 2, "bfloat16": 2,
                "c10::bfloat16": 2, "c10::half": 2, "int": 4, "int32": 4, "long": 8, "int64": 8, "char": 1, "int8": 1, "uint8": 1, "byte": 1, "bool": 1}


def kind_expr(name: pl.Expr) -> pl.Expr:
    """The collective kind of a name (null when no rule matches)."""
    expr = None
    for kind, rule in KIND_RULES:
        expr = (pl.when if expr is None else expr.when)(name.str.contains(rule)).then(pl.lit(kind))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def _arg(args: pl.Expr, *keys: str) -> pl.Expr:
    """The first of ``keys`` present in each row's args JSON, as a string (vectorised)."""
    return pl.coalesce([args.str.json_path_match(f"$['{k}']") for k in keys])


def _args_facts(args: pl.Series) -> pl.DataFrame:
    """Process group, sequence number and message bytes from Kineto's collective args;
    TensorFlow's collective ops carry ``group_key`` and ``instance_key``, the same on every
    worker for one instance."""
    a = pl.col("args")
    width = _arg(a, "dtype").str.to_lowercase().replace_strict(list(_DTYPE_BYTES), list(_DTYPE_BYTES.values()), default=None, return_dtype=pl.Int64)
    return args.to_frame("args").select(
        group=pl.coalesce(_arg(a, "Process Group Name", "Process Group ID", "pg_name", "Process Group Description"),
                          pl.lit("tf group ") + _arg(a, "group_key")),
        seq=_arg(a, "Seq", "seq", "instance_key").cast(pl.Int64, strict=False),
        size_bytes=_arg(a, "In msg nelems", "Out msg nelems").cast(pl.Float64, strict=False).cast(pl.Int64) * width,
    )


def find(events: pl.DataFrame, launches: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every collective each rank executed (``FOUND_SCHEMA``). ``events``: the rows whose
    name matches ``ANY_NAME`` (rank, kind, name, device, tid, start_ns, dur_ns,
    correlation_id, args); ``launches``: the host runtime calls that launched them (rank,
    tid, start_ns, correlation_id), to find the ``record_param_comms`` call of a kernel."""
    if events.height == 0:
        return pl.DataFrame(schema=FOUND_SCHEMA)
    ev = events.with_columns(end_ns=pl.col("start_ns") + pl.col("dur_ns"))
    host = pl.col("device") == "cpu"
    ev = ev.with_columns(
        source=pl.when(~host & (pl.col("kind") == S.KERNEL) & pl.col("name").str.contains(DEVICE_NAME) & ~pl.col("name").str.contains(_XLA_WAIT)).then(pl.lit("device"))
        .when(host & pl.col("name").str.contains(GLOO_NAME)).then(pl.lit("gloo"))
        .when(host & pl.col("name").str.contains(TF_NAME)).then(pl.lit("tf"))
        .when(host & pl.col("name").str.contains(LAUNCH_NAME)).then(pl.lit("launch"))
        .otherwise(None)
    ).filter(pl.col("source").is_not_null())
    ev = pl.concat([ev, _args_facts(ev["args"])], how="horizontal").with_columns(_coll_name=pl.lit(None, dtype=pl.String))
    ev = _facts_from_params(ev, launches)
    ev = ev.with_columns(kind=pl.coalesce(kind_expr(pl.col("_coll_name")), kind_expr(pl.col("name"))))
    # A rank's launch calls stand in only where it has no executing event at all (and then
    # the named c10d/nccl calls, not the generic record_param_comms around them).
    executing = ev.filter(pl.col("source") != "launch").select("rank").unique()
    launch_only = ev.filter(pl.col("source") == "launch").join(executing, on="rank", how="anti")
    named = launch_only.filter(pl.col("name") != "record_param_comms")
    out = pl.concat([ev.filter(pl.col("source") != "launch"), named if named.height else launch_only])
    return (
        out.filter(pl.col("kind").is_not_null())
        .with_columns(group=pl.col("group").fill_null("default"))
        .select(list(FOUND_SCHEMA)).cast(FOUND_SCHEMA).sort("rank", "start_ns")  # type: ignore[arg-type]
    )


def _facts_from_params(ev: pl.DataFrame, launches: pl.DataFrame | None) -> pl.DataFrame:
    """Give an NCCL kernel what it lacks from the host calls that launched it, on the
    launching thread around the runtime launch with the kernel's correlation id: group,
    sequence number, size and collective name from ``record_param_comms``; else the kind
    from the enclosing ``nccl:<op>`` / ``c10d::<op>_`` call (older NCCL launches every
    collective as a ``SendRecv`` kernel: the name alone would say send/recv)."""
    device = ev.filter(pl.col("source") == "device")
    calls = ev.filter(pl.col("source") == "launch")
    if calls.height == 0 or device.height == 0 or launches is None or launches.height == 0:
        return ev
    lk = launches.select("rank", "correlation_id", pl.col("tid").alias("_lt"), pl.col("start_ns").alias("_ls"))
    d = device.join(lk, on=["rank", "correlation_id"], how="left").sort("_ls")
    params = calls.filter(pl.col("name") == "record_param_comms").select(
        "rank", pl.col("tid").alias("_lt"), pl.col("start_ns").alias("_ps"), pl.col("end_ns").alias("_pe"), pl.col("group").alias("_g"),
        pl.col("seq").alias("_s"), pl.col("size_bytes").alias("_b"), _arg(pl.col("args"), "Collective name").alias("_n")).sort("_ps")
    named = calls.filter(pl.col("name") != "record_param_comms").select(
        "rank", pl.col("tid").alias("_lt"), pl.col("start_ns").alias("_cs"), pl.col("end_ns").alias("_ce"), pl.col("name").alias("_call")).sort("_cs")
    d = d.join_asof(params, left_on="_ls", right_on="_ps", by=["rank", "_lt"], strategy="backward", check_sortedness=False)
    d = d.join_asof(named, left_on="_ls", right_on="_cs", by=["rank", "_lt"], strategy="backward", check_sortedness=False)
    in_params = pl.col("_pe") >= pl.col("_ls")
    d = d.with_columns(
        group=pl.coalesce("group", pl.when(in_params).then("_g")), seq=pl.coalesce("seq", pl.when(in_params).then("_s")),
        size_bytes=pl.coalesce("size_bytes", pl.when(in_params).then("_b")),
        _coll_name=pl.coalesce(pl.when(in_params).then("_n"), pl.when(pl.col("_ce") >= pl.col("_ls")).then("_call")),
    )
    return pl.concat([d.select(ev.columns), ev.filter(pl.col("source") != "device")])


@dataclass
class Matched:
    arrivals: pl.DataFrame  # per (instance, rank): start/end on the run's clock, step, wait_ns
    instances: pl.DataFrame  # per instance: kind, group, step, ranks, first/last arrival, last_rank, lateness, transfer, bandwidth
    unmatched: int  # collective events that belong to no complete instance
    notes: list[str]


ARRIVALS_SCHEMA = {"instance": pl.Int64, "rank": pl.Int32, "step": pl.Int64, "start_ns": pl.Int64, "end_ns": pl.Int64, "wait_ns": pl.Int64}
INSTANCES_SCHEMA = {
    "instance": pl.Int64, "kind": pl.String, "group": pl.String, "step": pl.Int64, "size_bytes": pl.Int64, "n_ranks": pl.Int64,
    "first_arrival_ns": pl.Int64, "last_arrival_ns": pl.Int64, "second_last_arrival_ns": pl.Int64, "last_rank": pl.Int32,
    "end_ns": pl.Int64, "lateness_ns": pl.Int64, "transfer_ns": pl.Int64, "algbw_gbps": pl.Float64, "busbw_gbps": pl.Float64,
}


def empty(unmatched: int = 0, notes: list[str] | None = None) -> Matched:
    return Matched(pl.DataFrame(schema=ARRIVALS_SCHEMA), pl.DataFrame(schema=INSTANCES_SCHEMA), unmatched, notes or [])


# Lined-up clocks are kept only when at least this share of the calls then overlaps.
LINED_UP_SHARE = 0.9
# A call (its events aggregated per match key, with its group's ``_members``) seen once on
# every rank of its group.
_COMPLETE = (pl.col("n_ranks") == pl.col("_members")) & (pl.col("n_events") == pl.col("n_ranks")) & (pl.col("n_ranks") >= 2)


def match(found: pl.DataFrame, windows: pl.DataFrame, tolerance_ns: int = 0, align_clocks: bool = False) -> Matched:
    """Instances of the job's collectives. ``windows``: every rank's steps (rank, step,
    start_ns, end_ns). ``tolerance_ns``: the clocks' error, allowed in the overlap check.
    ``align_clocks``: the ranks' clocks were never measured against each other (imported
    traces); where calls matched by order do not overlap as recorded, line the ranks up on
    the calls' ends (``line_up``)."""
    ranks = found["rank"].unique()
    if ranks.len() < 2:
        return empty()
    steps = windows.select("rank", "step", pl.col("start_ns").alias("_ws"), pl.col("end_ns").alias("_we")).sort("rank", "_ws")
    f = found.sort("rank", "start_ns").join_asof(steps, left_on="start_ns", right_on="_ws", by="rank", strategy="backward", check_sortedness=False)
    f = f.with_columns(step=pl.when(pl.col("start_ns") < pl.col("_we")).then(pl.col("step")).otherwise(None)).drop("_ws", "_we")
    # Sequence numbers where the whole group has them, else order within the step.
    has_seq = f.group_by("group").agg(all_seq=pl.col("seq").is_not_null().all())
    f = f.join(has_seq, on="group")
    # (Not the size: an uneven all_to_all sends a different amount from every rank.)
    by_order = ["group", "kind", "step"]
    f = f.sort("start_ns").with_columns(_order=pl.int_range(pl.len()).over(["rank", *by_order]))
    f = f.with_columns(_key=pl.when(pl.col("all_seq")).then(pl.concat_str(["group", pl.lit("#"), pl.col("seq").cast(pl.String)]))
                       .otherwise(pl.concat_str(["group", pl.lit("|"), "kind", pl.lit("|"), pl.col("step").cast(pl.String).fill_null("-"),
                                                 pl.lit("|"), pl.col("_order").cast(pl.String)])))
    # Ranks that take part in each group: every rank with an event of it.
    members = f.group_by("group").agg(_members=pl.col("rank").n_unique())
    notes: list[str] = []
    if align_clocks:
        f, offsets = line_up(f, members)
        if offsets:
            worst = max(offsets, key=lambda r: abs(offsets[r]))
            notes.append(f"the ranks' clocks disagree (imported traces, never synchronised): collectives were lined up on their ends, "
                         f"ranks shifted by up to {abs(offsets[worst]) / 1e3:.0f} µs (rank {worst}); cross-rank figures are on those lined-up clocks")
    inst = f.group_by("_key").agg(
        pl.col("group").first(), pl.col("kind").first(), pl.col("step").min(), pl.col("size_bytes").max(),
        n_ranks=pl.col("rank").n_unique(), n_events=pl.len(), first_arrival_ns=pl.col("start_ns").min(),
        last_arrival_ns=pl.col("start_ns").max(), min_end_ns=pl.col("end_ns").min(), end_ns=pl.col("end_ns").max(),
        last_rank=pl.col("rank").sort_by("start_ns").last(),
        second_last_arrival_ns=pl.col("start_ns").sort(descending=True).slice(1, 1).first(),
    ).join(members, on="group")
    complete = _COMPLETE
    overlapping = pl.col("last_arrival_ns") <= pl.col("min_end_ns") + tolerance_ns
    good = inst.filter(complete & overlapping)
    n_incomplete = inst.filter(~complete).height
    n_apart = inst.filter(complete & ~overlapping).height
    unmatched = int(inst.filter(~(complete & overlapping))["n_events"].sum() or 0)
    if n_incomplete:
        notes.append(f"{n_incomplete} collective call(s) were not seen on every rank of their group (outside some ranks' traced window, or a rank's trace is cut short): left out of the cross-rank figures")
    if n_apart:
        notes.append(f"{n_apart} collective call(s) matched by order did not overlap in time across ranks (a different call order, or clocks further apart than measured): left out")
    if good.height == 0:
        return empty(unmatched, notes)
    good = good.sort("first_arrival_ns").with_columns(instance=pl.int_range(pl.len(), dtype=pl.Int64))
    arr = f.join(good.select("_key", "instance", "last_arrival_ns"), on="_key").with_columns(
        wait_ns=(pl.min_horizontal(pl.col("last_arrival_ns"), pl.col("end_ns")) - pl.col("start_ns")).clip(0),
    )
    transfer = arr.group_by("instance").agg(transfer_ns=(pl.col("end_ns") - pl.col("last_arrival_ns")).clip(0).median().cast(pl.Int64))
    good = good.join(transfer, on="instance").with_columns(lateness_ns=pl.col("last_arrival_ns") - pl.col("second_last_arrival_ns"))
    good = _bandwidth(good)
    return Matched(
        arr.select(list(ARRIVALS_SCHEMA)).cast(ARRIVALS_SCHEMA).sort("instance", "rank"),  # type: ignore[arg-type]
        good.select(list(INSTANCES_SCHEMA)).cast(INSTANCES_SCHEMA),  # type: ignore[arg-type]
        unmatched, notes,
    )


def line_up(f: pl.DataFrame, members: pl.DataFrame) -> tuple[pl.DataFrame, dict[int, int]]:
    """Collective calls (with their match ``_key``) moved onto one clock, and each rank's shift.

    A collective ends on every rank at about the same moment, when the last rank's data has
    arrived, however late each rank came (a straggler's call is short, not early). So each
    rank's offset is the median, over the calls every member of the group made, of how much
    later its call ended than the call's median end. Nothing moves when every such call
    overlaps across ranks as recorded (clocks good enough to match), or when the shifts
    would not make nearly all of them overlap (LINED_UP_SHARE)."""
    calls = f.group_by("_key").agg(pl.col("group").first(), n_ranks=pl.col("rank").n_unique(), n_events=pl.len()).join(members, on="group")
    whole = f.join(calls.filter(_COMPLETE).select("_key"), on="_key", how="semi")
    before = _overlapping_share(whole)
    if before == 1.0:
        return f, {}
    off = whole.with_columns(_d=pl.col("end_ns") - pl.col("end_ns").median().over("_key")).group_by("rank").agg(
        _off=pl.col("_d").median().round(0).cast(pl.Int64))

    def shifted(frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.join(off, on="rank", how="left").with_columns(_off=pl.col("_off").fill_null(0))
        return frame.with_columns(start_ns=pl.col("start_ns") - pl.col("_off"), end_ns=pl.col("end_ns") - pl.col("_off")).drop("_off")

    # Calls paired by order that are not the same call (ranks that kept different subsets)
    # give offsets that line up nothing: keep the clocks unless nearly every call then overlaps.
    after = _overlapping_share(shifted(whole))
    if after < LINED_UP_SHARE or after <= before:
        return f, {}
    return shifted(f), {int(r): int(o) for r, o in off.iter_rows() if o}


def _overlapping_share(calls: pl.DataFrame) -> float:
    """The share of calls (rows per ``_key``) whose ranks' spans have a common instant."""
    per = calls.group_by("_key").agg(ok=pl.col("start_ns").max() <= pl.col("end_ns").min())
    return float(per["ok"].mean()) if per.height else 1.0


def _bandwidth(inst: pl.DataFrame) -> pl.DataFrame:
    """Algorithm and bus bandwidth (GB/s) where the message size is known."""
    factor = np.array([BUS_FACTOR.get(k, lambda n: float("nan"))(max(int(n), 1)) for k, n in zip(inst["kind"].to_list(), inst["n_ranks"].to_list())], dtype=float)
    algbw = pl.when((pl.col("transfer_ns") > 0) & pl.col("size_bytes").is_not_null()).then(pl.col("size_bytes") / pl.col("transfer_ns"))
    return inst.with_columns(algbw_gbps=algbw).with_columns(busbw_gbps=pl.col("algbw_gbps") * pl.Series(factor).fill_nan(None))


def wait_intervals(arrivals: pl.DataFrame, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """[arrival, arrival + wait) of every instance on ``rank``: its time waiting for the others."""
    a = arrivals.filter((pl.col("rank") == rank) & (pl.col("wait_ns") > 0))
    s = a["start_ns"].to_numpy()
    return s, s + a["wait_ns"].to_numpy()


def summary(instances: pl.DataFrame) -> pl.DataFrame:
    """Per collective kind, group and message size: count, transfer time, bandwidth."""
    if instances.height == 0:
        return pl.DataFrame(schema={"kind": pl.String, "group": pl.String, "size_bytes": pl.Int64, "n_ranks": pl.Int64, "count": pl.UInt32,
                                    "mean_transfer_ns": pl.Float64, "mean_wait_ns": pl.Float64, "algbw_gbps": pl.Float64, "busbw_gbps": pl.Float64})
    return (
        instances.group_by("kind", "group", "size_bytes", "n_ranks")
        .agg(count=pl.len(), mean_transfer_ns=pl.col("transfer_ns").mean(), mean_wait_ns=pl.col("lateness_ns").mean(),
             algbw_gbps=pl.col("algbw_gbps").median(), busbw_gbps=pl.col("busbw_gbps").median())
        .sort("count", "kind", descending=[True, False])
    )

"""``analyze(run)``: the one pass from a run's tables to its :class:`~accelscope.analysis.report.Report`.

A table in, tables out: ``breakdown.analyze_rank`` runs on each rank; this module picks
the steps each figure is over (its basis), scales them to the run, and adds the per-device
utilisation, the launch tables, recommendations and the top kernels and ops. Printing and
plotting live elsewhere (cli, dashboard); none of them computes a figure of its own.

Bases (docs/analysis.md): step timing is over the steady steps (warm-up left out).
Shares, the breakdown, idle time by cause and per-device utilisation are over the
*analysed* steps: the steady steps whose device work was traced (when the framework
profiler ran in windows and the run has device work) and whose input waits were seen
(when only the profiler's windows show them, as under Keras ``fit``); their times are
scaled to the steady steps' total. The kernel and op tables are over the traced steady steps.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from accelscope.analysis import causes as C
from accelscope.analysis import collectives as K
from accelscope.analysis import leaks as LK
from accelscope.analysis import memory as M
from accelscope.analysis import memory_categories as MC
from accelscope.analysis import memory_live as ML
from accelscope.analysis import memory_ops as MO
from accelscope.analysis import memory_samples as MS
from accelscope.analysis import oom as OOM
from accelscope.analysis import rank_tasks as T
from accelscope.analysis.advice import Evidence, dataloader_evidence, exposed_communication, framework_of, leak_advice, recommend, straggler_advice
from accelscope.analysis.breakdown import BREAKDOWN, COMMUNICATION, RANK_WAIT, STEP_WORDS, WINDOW_NAME, empty_gaps, step_unit
from accelscope.analysis.busy import summarise_busy
from accelscope.analysis.gap_ops import host_ops_in_gaps, ops_of
from accelscope.analysis.launches import match_launches, summarise
from accelscope.analysis.memory_advice import memory_advice
from accelscope.analysis.report import LEAK_METRIC, PEAK_SHARE_METRIC, Basis, Report, RunInfo
from accelscope.analysis.steps import finish_steps, mark_outliers, traced_mask
from accelscope.analysis.stragglers import attribute, named, rank_table
from accelscope.analysis.tables import merge_names
from accelscope.analysis.utilisation import device_utilisation
from accelscope.errors import AccelscopeError
from accelscope.traces.run import Run
from accelscope.verdicts import LEAK_MIN_CHANGES, verdict_for


class NoStepsError(AccelscopeError, ValueError):
    """The run holds no events at all, so there is nothing to analyse."""


def _basis(kind: str, steps: pl.DataFrame, what: str) -> Basis:
    n, ranks = steps.height, steps["rank"].n_unique() if steps.height else 0
    of = f" of {ranks} ranks" if ranks > 1 else ""
    return Basis(kind, n, ranks, f"the {n} {what} step{'s' if n != 1 else ''}{of}")


def _run_info(run: Run, devices: pl.DataFrame, slices_range: tuple[int, int] | None) -> RunInfo:
    meta = run.meta
    fw = meta.get("framework") if isinstance(meta.get("framework"), dict) else {}
    first, last = run.span_ns(slices_range)
    collectors = meta.get("collectors") or {}
    problems = tuple(f"{name} {c.get('status')}" for name, c in collectors.items() if isinstance(c, dict) and c.get("status") != "ok")
    pairs = tuple((int(r), str(d)) for r, d in devices.select("rank", "device").iter_rows())
    start = meta.get("start_ns")
    return RunInfo(
        name=run.name,
        path=str(run.path),
        ranks=tuple(sorted({r for r, _ in pairs})),
        devices=pairs,
        framework=fw.get("name") if fw.get("name") not in (None, "none") else None,
        framework_version=str(fw["version"]) if fw.get("version") else None,
        mode=meta.get("mode"),
        host=meta.get("host"),
        start_ns=start if isinstance(start, int) else None,
        duration_ns=last - first,
        complete=bool(meta.get("complete", False)),
        live=run.live,
        collector_problems=problems,
        memory_only="snapshot" in meta,
    )


# Runs of more events than this are analysed one rank at a time, each rank read from disk when
# its turn comes (twice for a multi-rank run: once for its collectives, once for the rest), so
# the whole events table is never in memory; smaller runs are read once, whole.
BY_RANK_MIN_EVENTS = 20_000_000
RANK_THREADS = 8  # ranks analysed at once (Polars and NumPy release the GIL)


def analyze(run: Run, by_rank: bool | None = None, cluster: Any = None) -> Report:
    """Analyse every rank of ``run``. Raises NoStepsError when it has no events at all.

    ``by_rank``: read and analyse one rank at a time, never holding the whole events table
    (None: for runs of more than BY_RANK_MIN_EVENTS events whose events are not loaded yet);
    ``cluster``: run those per-rank tasks on the Dask cluster at this address (or Client),
    whose workers read the run by its path (rank_tasks.py). The report is the same either way."""
    with ThreadPoolExecutor(1, thread_name_prefix="accelscope-memory") as pool:
        return _analyze(run, by_rank, cluster, pool)


def _analyze(run: Run, by_rank: bool | None, cluster: Any, pool: ThreadPoolExecutor) -> Report:
    if cluster is not None:
        by_rank = True
    if by_rank is None:
        by_rank = not run.slices_loaded and run.event_rows() > BY_RANK_MIN_EVENTS
    if by_rank:
        rank_ids = run.rank_ids()
        events_of = run.rank_slices
    else:
        events = run.slices
        rank_ids = sorted(events["rank"].unique().to_list())
        grouped = {int(r): ev for (r,), ev in events.group_by(["rank"])} if len(rank_ids) > 1 else {int(r): events for r in rank_ids}
        events_of = grouped.__getitem__
    if not rank_ids:
        raise NoStepsError(f"{run.path}: no events recorded")
    # The memory work that needs no steps runs beside the ranks' (Polars releases the GIL).
    held_memory = pool.submit(_held_memory, run)
    notes: list[str] = []
    empty_planes = (run.meta.get("xplane") or {}).get("empty_device_planes") or []
    if empty_planes:
        notes.append(f"{len(empty_planes)} device plane{'s' if len(empty_planes) > 1 else ''} recorded nothing and "
                     f"{'are' if len(empty_planes) > 1 else 'is'} left out of every figure: {', '.join(map(str, empty_planes[:8]))}"
                     + (", ..." if len(empty_planes) > 8 else ""))
    failed = [f for f in run.meta.get("failed_sources") or [] if isinstance(f, dict)]
    if failed:
        notes.insert(0, f"{len(failed)} trace file{'s' if len(failed) > 1 else ''} could not be read and "
                        f"{'are' if len(failed) > 1 else 'is'} missing from every figure: " + "; ".join(str(f.get("error")) for f in failed[:3])
                     + ("; ..." if len(failed) > 3 else ""))
    if not run.meta.get("complete", False):
        notes.append("the run did not finish cleanly: analysing what was flushed before it stopped")
    tolerance = _clock_tolerance(run.meta)
    threads = min(len(rank_ids), os.cpu_count() or 1, RANK_THREADS)

    colls = K.empty()
    if len(rank_ids) > 1:
        colls = _match_collectives(run, rank_ids, events_of, tolerance, threads, cluster)
        notes.extend(colls.notes)
        if colls.instances.height == 0 and colls.unmatched == 0:
            light = run.meta.get("mode") == "light"
            notes.append("no collectives recorded on these ranks" + (": light mode records steps and input waits only; record with "
                         "mode='full' to match collectives across ranks and find stragglers" if light else ": nothing to match across ranks"))

    def waits(rank: int) -> tuple:
        return (K.wait_intervals(colls.arrivals, rank) if colls.arrivals.height else None,)

    passes: list[T.RankPass] = T.map_ranks(T.rank_pass, waits, rank_ids, events_of, threads, cluster, str(run.path))
    at = 1 if failed else 0  # after the files that could not be read, before the rest
    notes[at:at] = list(dict.fromkeys(run.read_warnings))
    bad = sum(p.negative for p in passes)
    if bad:
        notes.append(f"{bad} slices with negative durations were ignored")
    results = [p.result for p in passes]
    for r in results:
        notes.extend(n if len(results) == 1 else f"rank {r.rank}: {n}" for n in r.notes)
    has_device = any(r.has_device for r in results)
    uncaptured = _uncaptured_device(sum(p.device_launches for p in passes)) if not has_device else None

    # -- the steps and which of them each figure is over ---------------------------------------
    steps = finish_steps(pl.concat([r.steps for r in results]))
    steps = steps.with_columns(traced=traced_mask(run.meta, steps))
    # A light run sees input waits only where the loop timed them (prof.iter, input_wait_ended);
    # without that (Keras fit, a loop not behind prof.iter) it never saw them: unknown, not 0.
    timed_every_step = run.meta.get("input_timing") == "every step"
    input_unseen = run.meta.get("mode") == "light" and not timed_every_step
    steps = steps.with_columns(input_timed=pl.lit(True) if timed_every_step else pl.lit(False) if input_unseen else pl.col("traced"))
    steps = steps.with_columns(verdict=pl.when(pl.col("input_timed")).then(pl.col("verdict")))
    steps = mark_outliers(steps)
    steady_rows = ~pl.col("warmup")
    steady = steps.filter(steady_rows)
    n_traced = steady.filter(pl.col("traced")).height
    n_timed = steady.filter(pl.col("input_timed")).height
    partial_trace = 0 < n_traced < steady.height
    partial_timing = 0 < n_timed < steady.height
    # Device work exists only in traced steps; input waits, under Keras fit, only in timed ones.
    analysed_rows = steady_rows
    if partial_trace and (has_device or colls.instances.height):  # collectives too are seen only in traced steps
        analysed_rows = analysed_rows & pl.col("traced")
    if partial_timing:
        analysed_rows = analysed_rows & pl.col("input_timed")
    steps = steps.with_columns(analysed=analysed_rows)
    basis = steps.filter(pl.col("analysed"))
    traced = steady.filter(pl.col("traced")) if n_traced else steady

    n_out = int(steps["outlier"].sum())
    if n_out:
        notes.append(f"{n_out} outlier step{'s' if n_out > 1 else ''} (far slower than the median step; see the steps table)")
    if steps["warmup"].any():
        notes.append("step 0 is treated as warm-up and left out of the summary")
    if partial_trace:
        notes.append(
            f"ops{' and device work' if has_device else ''} were recorded in {n_traced} of {steady.height} steady steps "
            f"(the framework profiler's windows): {'busy time, the breakdown, input wait, idle causes and ' if has_device else ''}"
            "the op and kernel tables come from those steps"
        )
    if partial_timing:
        notes.append(
            f"input waits were seen only in the {n_timed} of {steady.height} steps the framework profiler traced "
            "(its IteratorGetNext / DataLoader ops): busy time, the breakdown, input wait, idle causes and their advice "
            "come from those steps (prof.iter times every step)"
        )

    unknown: dict[str, str] = {}
    if uncaptured:
        unknown["busy_share"] = unknown["idle_share"] = uncaptured
        notes.insert(0, uncaptured)
    if input_unseen:
        unknown["input_wait_share"] = ("input waits were not seen: this light-mode run's loop did not time its input "
                                       "(iterate with prof.iter, or record with mode='full' so the framework profiler's windows show them)")
        notes.append(unknown["input_wait_share"])

    # -- shares over the analysed steps, times scaled to the steady steps ----------------------
    total = int(steady["dur_ns"].sum())
    basis_total = int(basis["dur_ns"].sum())
    scale = total / basis_total if basis_total else 1.0
    share = float(basis["input_wait_ns"].sum()) / basis_total if basis_total else 0.0
    busy = float(basis["busy_ns"].sum()) / basis_total if basis_total else 0.0
    gaps = pl.concat([r.gaps for r in results]) if results else empty_gaps()
    gaps, host_ops = host_ops_in_gaps(gaps, pl.concat([p.driver_ops for p in passes]), basis)
    basis_gaps = gaps.join(basis.select("rank", "step"), on=["rank", "step"], how="semi")
    n_devices = max(sum(r.n_devices for r in results) / max(len(results), 1), 1)
    idle_by_cause = {c: int(basis_gaps[f"{c}_ns"].sum() / n_devices * scale) for c in C.CAUSES}
    host_ops = host_ops.with_columns(self_ns=(pl.col("self_ns") / n_devices * scale).cast(pl.Int64))
    breakdown_ns = {c: int(basis[f"{c}_ns"].sum() * scale) for c in BREAKDOWN}
    mean_step = float(steady["dur_ns"].mean()) if steady.height else float("nan")
    median_step = float(steady["dur_ns"].median()) if steady.height else float("nan")

    # -- per device and stream, over the analysed steps ------------------------------------------
    # (a rank with no analysed step, only a warm-up step, over all its steps)
    busy_steps = pl.concat([basis.select("rank", "step", "dur_ns"), steps.join(basis.select("rank"), on="rank", how="anti").select("rank", "step", "dur_ns")])
    device_busy, streams, overlap = summarise_busy(
        pl.concat([r.device_steps for r in results]), pl.concat([r.stream_steps for r in results]), busy_steps
    )
    devices = device_utilisation(device_busy, streams, gaps, basis, run.counters)
    if has_device:
        devices = devices.join(pl.concat([p.capture for p in passes if p.capture is not None]), on=["rank", "device"], how="left")
    matched = match_launches(pl.concat([r.device_slices for r in results]), pl.concat([r.runtime for r in results]))
    launches = summarise(matched, overlap.filter(pl.col("device") != "cpu"))

    tables_total = int(traced["dur_ns"].sum())
    kernels_by_name = merge_names([r.kernel_names for r in results], tables_total)
    ops_by_name = merge_names([r.op_names for r in results], tables_total)
    host_names = pl.concat([r.host_names for r in results]).unique() if len(results) > 1 else results[0].host_names
    # -- across ranks: who waited for whom ------------------------------------------------------
    candidates, straggler_costs = attribute(colls.instances, colls.arrivals, steps, results, tolerance)
    stragglers = named(candidates)
    ranks = rank_table(steps, colls.instances, colls.arrivals, gaps, list(run.meta.get("incomplete_ranks") or []), tolerance) if len(results) > 1 else None
    evidence = Evidence(
        steps=int(basis.group_by("rank").len()["len"].max()) if basis.height else 0,
        real_steps=basis.height > 0 and not basis["name"].str.starts_with(WINDOW_NAME).all(),
        busy_ns_per_step=busy * mean_step if basis_total else 0.0,
        unit=STEP_WORDS[step_unit(steps["name"])],
    )
    advice = recommend(idle_by_cause, total, steady.height, mean_step, has_device, lambda: dataloader_evidence(run.meta, host_names), evidence,
                       framework_of(run.meta), host_names, lambda c: ops_of(host_ops, c))
    # Waiting for other ranks is advised on as the straggler's own cause, said with its rank,
    # or (no straggler) as exposed communication; largest share first, stragglers leading.
    # A straggler's own cause is advised on once, with its rank and the job's projection
    # (the run-wide figure averages it over ranks that never had it).
    advice = [a for a in advice if a.cause != C.RANK_WAIT and a.cause not in {s.cause for s in stragglers}]
    advice += exposed_communication(breakdown_ns[COMMUNICATION], breakdown_ns[RANK_WAIT], total, steady.height, mean_step, bool(stragglers), evidence)
    advice = straggler_advice(stragglers, framework_of(run.meta)) + sorted(advice, key=lambda a: -a.idle_share)
    allocator, allocating_ops, held_ops, (memory_ops, memory_ops_more) = held_memory.result()
    memory = _memory(run, allocator, held_ops, steps, devices)
    memory_categories = _memory_categories(allocator, allocating_ops, held_ops, steps, memory)
    memory_leaks, why_unknown = _leaks(allocator, held_ops, basis.filter(pl.col("traced")))
    # devices without allocator events but read at every step's end (light mode on CUDA): memory_samples.py
    sampled = MS.per_step(run.counters, steps, allocator.select("rank", "device"))
    sampled_peaks = MS.peaks(sampled)
    memory = MS.combine(memory, M.with_capacity(sampled_peaks, _memory_totals(run, devices, sampled_peaks)))
    memory_leaks, why_unknown = MS.leaks(MS.fit(sampled, steady), memory_leaks, why_unknown)
    if why_unknown:
        unknown[LEAK_METRIC] = why_unknown
    if memory["peak_share"].drop_nulls().len() == 0:
        unknown[PEAK_SHARE_METRIC] = ("no device has both allocator events with the allocator's totals and a known memory size (NVML's total, "
                                      "Kineto's deviceProperties, XPlane's memory_size)" if memory.height else
                                      "no allocator events were recorded (torch.profiler's profile_memory; TF/JAX profiles)")
    advice += leak_advice(memory_leaks, mean_step, len(rank_ids) > 1, evidence.unit)
    if "snapshot" in run.meta:  # a memory snapshot: its windows are not steps, so neither a peak's step nor growth per step means anything
        memory = memory.with_columns(peak_step=pl.lit(None, pl.Int64))
        memory_leaks, unknown[LEAK_METRIC] = memory_leaks.clear(), "a memory snapshot records no steps to fit memory growth over"
    oom = OOM.analyse(run.meta.get("oom"), allocator, allocating_ops, run.meta, steps)
    ran_out = {(oom.rank, oom.device or oom.held_device)} if oom is not None and (oom.device or oom.held_device) else set()
    advice += memory_advice(memory, memory_categories, mean_step, len(rank_ids) > 1, evidence.unit, ran_out)
    return Report(
        run=_run_info(run, devices, _slices_range(passes)),
        timing_basis=_basis("steady", steady, "steady"),
        basis=_basis("analysed", basis, "traced steady" if basis.height < steady.height else "steady"),
        table_basis=_basis("traced", traced, "traced steady" if traced.height < steady.height else "steady"),
        steps=steps,
        gaps=gaps,
        devices=devices,
        streams=streams,
        mean_step_ns=mean_step,
        median_step_ns=median_step,
        input_wait_share=share,
        busy_share=busy,
        verdict="unknown" if "input_wait_share" in unknown else verdict_for(share),
        idle_by_cause_ns=idle_by_cause,
        breakdown_ns=breakdown_ns,
        kernels_by_name=kernels_by_name,
        ops_by_name=ops_by_name,
        has_device=has_device,
        launches=launches,
        notes=notes,
        advice=advice,
        ranks=ranks,
        stragglers=stragglers,
        straggler_share=candidates[0].share_of_step if candidates else 0.0,
        collectives=colls.instances,
        arrivals=colls.arrivals,
        straggler_costs=straggler_costs,
        unmatched_collectives=colls.unmatched,
        unknown=unknown,
        host_ops_by_cause=host_ops,
        memory=memory,
        memory_leaks=memory_leaks,
        memory_ops=memory_ops,
        memory_ops_more=memory_ops_more,
        memory_categories=memory_categories,
        oom=oom,
    )


def _held_memory(run: Run) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None, tuple[pl.DataFrame, int]]:
    """(the allocator events, the host ops of the allocating threads, which of those ops hold
    each event, (Report.memory_ops, the ops left out of it)): the memory figures that need no
    steps. The ops are read once (from the loaded slices, else pushed into the scan) and
    joined to the events once (``memory_ops.held``); the peaks' ops, memory by op, the
    categories and the leaks' ops all come from them."""
    allocator = run.memory
    if allocator.height == 0:
        return allocator, None, None, (MO.empty(), 0)
    allocator = M.allocated(allocator)  # once, for the peaks, the leaks, fragmentation and the categories
    allocating_ops = run.slices_where(M.op_filter(allocator) | MC.phase_filter())
    held_ops = MO.held(allocator, allocating_ops)
    return allocator, allocating_ops, held_ops, MO.top(MO.table(allocator, held_ops))


def _memory(run: Run, memory: pl.DataFrame, held_ops: pl.DataFrame | None, steps: pl.DataFrame, devices: pl.DataFrame) -> pl.DataFrame:
    """Report.memory: each device's allocation peak (memory.py) with the op holding it;
    ``held_ops``: which host ops hold each allocator event (``memory_ops.held``)."""
    peaks = M.peaks(memory, steps)
    if peaks.height == 0 or held_ops is None:
        return M.empty()
    out = M.with_capacity(MO.with_peak_ops(peaks, held_ops), _memory_totals(run, devices, peaks))
    return M.with_fragmentation(out, M.fragmentation(memory, steps))


def _memory_categories(memory: pl.DataFrame, host_ops: pl.DataFrame | None, held_ops: pl.DataFrame | None, steps: pl.DataFrame,
                       peaks: pl.DataFrame) -> pl.DataFrame:
    """Report.memory_categories: what kinds of tensor held each device at its peak
    (memory_categories.py), for devices whose allocator events carry addresses."""
    if peaks.height == 0:
        return MC.empty()
    lives = ML.with_ops(ML.lifetimes(memory), host_ops, LK.ALLOCATION_OPS, held_ops)
    spans = steps.select("rank", "start_ns", end_ns=pl.col("start_ns") + pl.col("dur_ns"))
    return MC.at_peaks(MC.categorise(lives, host_ops, spans), memory, peaks)


def _memory_totals(run: Run, devices: pl.DataFrame, peaks: pl.DataFrame) -> pl.DataFrame:
    """Each (rank, device)'s memory: sampled (NVML's total, in the devices table) first, else
    what the trace's header says of the device (Kineto's deviceProperties, XPlane's
    memory_size: the run's ``devices`` meta, one hardware for every rank)."""
    sampled = devices.select(pl.col("rank").cast(pl.Int32), "device", pl.col("memory_total_bytes").cast(pl.Int64)).drop_nulls()
    known = {d["id"]: d["memory_total_bytes"] for d in run.meta.get("devices") or [] if isinstance(d, dict) and isinstance(d.get("memory_total_bytes"), int)}
    declared = peaks.select(pl.col("rank").cast(pl.Int32), "device").with_columns(
        memory_total_bytes=pl.col("device").replace_strict(known, default=None, return_dtype=pl.Int64))
    return pl.concat([sampled, declared.drop_nulls()])


def _leaks(memory: pl.DataFrame, held_ops: pl.DataFrame | None, steps: pl.DataFrame) -> tuple[pl.DataFrame, str | None]:
    """(Report.memory_leaks, why leaks cannot be known or None): the growth of each device's
    allocated memory over ``steps`` (the analysed steps the allocator events were recorded in,
    leaks.py), and for the leaking ones the op; ``held_ops``: which host ops hold each event."""
    fitted = LK.fit(memory, steps)
    if fitted.height == 0:
        return LK.empty(), ("no allocator events were recorded in the analysed steps (torch.profiler's profile_memory: "
                            "accelscope.profile records them in full mode with PyTorch)")
    if not (fitted["changes"].fill_null(0) >= LEAK_MIN_CHANGES).any():
        return LK.empty(), (f"allocator events were recorded over fewer than {LEAK_MIN_CHANGES} changes from one analysed step to the "
                            f"next (at most {fitted['changes'].fill_null(0).max()}): too few to tell growth from noise")
    leaking = fitted.filter(pl.col("leak"))
    if leaking.height == 0:
        return LK.empty(), None
    allocations = LK.never_freed(memory, steps, leaking)
    return LK.leaks(fitted, LK.attribute(allocations, held_ops)), None


def _slices_range(passes: list[T.RankPass]) -> tuple[int, int] | None:
    firsts = [p.first_ns for p in passes if p.first_ns is not None]
    lasts = [p.last_ns for p in passes if p.last_ns is not None]
    return (min(firsts), max(lasts)) if firsts else None


def _uncaptured_device(launches: int) -> str | None:
    """Why the device's figures are unknown when the host launched work on a device but the
    trace holds none of it (CUPTI / roctracer off or failed), else None."""
    if not launches:
        return None
    return (f"device activity missing: the host made {launches:,} kernel launches and async copies, but the trace holds no "
            "kernels, copies or memsets, so the device side was not captured (CUPTI/roctracer off or failed: "
            "ProfilerActivity.CUDA not requested, another profiler holding CUPTI, a driver/CUPTI mismatch): the device's "
            "busy share is unknown, and what follows is the training thread's")


def _clock_tolerance(meta: dict) -> int:
    """How far apart two ranks' clocks may be: twice the largest offset error measured when
    the run was recorded (0 for imported traces, kept as recorded)."""
    errors = [p.get("clock_error_ns") for p in meta.get("rank_parts") or [] if isinstance(p, dict)]
    errors = [e for e in errors if isinstance(e, int)]
    return 2 * max(errors) if errors else 0


def _match_collectives(run: Run, rank_ids: list[int], events_of, tolerance: int, threads: int, cluster: Any = None) -> K.Matched:
    """Every rank's collectives (with their args), matched into instances: each rank's step
    windows and the launches of its collectives' kernels come from its own events."""
    rows = run.events_named(K.ANY_NAME).filter(pl.col("dur_ns") >= 0)
    if rows.height == 0:
        return K.empty()
    ids = rows.filter(pl.col("device") != "cpu").select("rank", "correlation_id").drop_nulls().unique()

    def mine(rank: int) -> tuple:
        return (ids.filter(pl.col("rank") == rank)["correlation_id"],)

    per_rank = T.map_ranks(T.collective_pass, mine, rank_ids, events_of, threads, cluster, str(run.path))
    launches = [lc for _, lc in per_rank if lc is not None]
    found = K.find(rows, pl.concat(launches) if launches else None)
    # Imported ranks keep their hosts' clocks, never measured against each other.
    imported = tolerance == 0 and "clock_alignment" in run.meta
    return K.match(found, pl.concat([w for w, _ in per_rank]), tolerance, align_clocks=imported)

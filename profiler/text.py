"""The report and a comparison as rich text, for ``accelscope analyze`` and ``accelscope diff``.

Rendering only: every number comes from the :class:`~accelscope.analysis.Report` (or the
:class:`~accelscope.analysis.compare.Comparison`), formatted, never recomputed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from accelscope.verdicts import VERDICT_TEXT

if TYPE_CHECKING:
    import polars as pl
    from rich.console import Console

    from accelscope.analysis.compare import Change, Comparison
    from accelscope.analysis.report import Report

STEP_ROWS = 20  # steps printed: all of them up to this many, else the slowest


def _table(title: str, columns: list[str], right_from: int = 1):
    from rich.table import Table

    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="right" if i >= right_from else "left")
    return t


MIN_NAME_WIDTH = 24  # below this, a name table drops its least telling columns instead


def name_table(title: str, rows: list[dict], width: int):
    """A top-names table that fits ``width`` columns: names shortened in the middle to what
    is left after the figures, and, if even ``MIN_NAME_WIDTH`` is not left, figures dropped
    deliberately (mean, then count, then total; the share stays), said in a caption."""
    from rich.table import Table

    from accelscope.analysis.tables import middle_name

    columns = {
        "total ms": [f"{r['total_ns'] / 1e6:.2f}" for r in rows],
        "count": [str(r["count"]) for r in rows],
        "mean µs": [f"{r['mean_ns'] / 1e3:.1f}" for r in rows],
        "% of step": [f"{r['share_of_step_time']:.1%}" for r in rows],
    }
    order = ["count", "total ms", "mean µs", "% of step"]

    def used() -> int:  # the figure columns' width with their padding and rules, and the borders
        return sum(max(len(c), *(len(v) for v in columns[c])) + 3 for c in order) + 4

    dropped = []
    for victim in ("mean µs", "count", "total ms"):
        if width - used() >= MIN_NAME_WIDTH:
            break
        order.remove(victim)
        dropped.append(victim)
    name_width = max(width - used(), 8)
    t = Table(title=title, caption=f"left out at this width: {', '.join(dropped)}" if dropped else None)
    t.add_column("name", no_wrap=True, min_width=min(name_width, 8), max_width=name_width)
    for c in order:
        t.add_column(c, justify="right", no_wrap=True)
    for i, r in enumerate(rows):
        t.add_row(middle_name(r["name"], name_width), *(columns[c][i] for c in order))
    return t


def oom_lines(report: Report) -> list[str]:
    """When training ran out of memory: the line that says where and what held the memory,
    and the CUDA allocator's figures at the failure (rich markup); else nothing."""
    from rich.markup import escape

    if report.oom is None:
        return []
    lines = [f"[bold red]{escape(report.oom.text)}[/]"]
    if report.oom.allocator_text:
        lines.append(escape(report.oom.allocator_text))
    return lines


def headline(report: Report) -> list[str]:
    """The first lines: what the device did, why it sat idle, the input verdict, and on
    which steps each figure is (rich markup)."""
    what = "accelerator" if report.has_device else "compute thread (no device activity recorded)"
    thing = "accelerator" if report.has_device else "compute thread"
    lines = [f"[bold red]{report.unknown['busy_share']}[/]"] if "busy_share" in report.unknown else []
    lines.append(f"[bold]{report.run_name}[/]: {report.n_steps} {report.step_unit}, mean {report.step_word} {report.mean_step_ns / 1e6:.1f} ms, {what} busy {report.busy_share:.1%}")
    causes = report.idle_causes[:3]
    if causes:
        parts = ", ".join(f"{report_label(c)} {share:.1%}" for c, _, share in causes)
        lines.append(f"{thing} idle [bold]{report.idle_share:.1%}[/] of {report.step_word} time: {parts}")
    if "input_wait_share" in report.unknown:
        lines.append("input wait: [bold]unknown[/] (this run never saw its input waits; see the notes)")
    else:
        colour = {"high": "bold red", "moderate": "bold yellow", "none": "bold green"}[report.verdict]
        lines.append(f"input wait: [bold]{report.input_wait_share:.1%}[/] of {report.step_word} time -> [{colour}]{VERDICT_TEXT[report.verdict]}[/]")
    if report.basis.steps != report.timing_basis.steps:
        lines.append(f"busy, idle, input wait and the breakdown are over {report.basis.text} (step time over {report.timing_basis.text})")
    for s in report.stragglers:
        lines.append(f"[bold red]straggler:[/] {s.text}")
    if report.ranks is not None and not report.stragglers and report.collectives is not None and report.collectives.height:
        lines.append(f"no straggler: {report.collectives.height} collectives matched across {len(report.run.ranks)} ranks, none held the job back consistently")
    return lines


def rank_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """``Report.ranks`` as text cells (headers, rows), for ``accelscope analyze``, the
    dashboard's Ranks section and the HTML report alike."""
    from accelscope.analysis.causes import CAUSE_TEXT

    headers = ["rank", "mean step", "busy", "waiting for other ranks", "arrived last", "idle mostly"]
    rows = []
    if report.ranks is None:
        return headers, rows
    late = {s.rank for s in report.stragglers}
    for r in report.ranks.iter_rows(named=True):
        name = f"{r['rank']}" + (" (straggler)" if r["rank"] in late else "") + ("" if r["complete"] else " (incomplete)")
        busy = "—" if r["busy_share"] is None else f"{r['busy_share']:.1%}"
        wait = "—" if r["collective_wait_share"] is None else f"{r['collective_wait_share']:.1%}"
        last = f"{r['last_arrivals']} of {r['collectives']}" if r["collectives"] else "—"
        idle = CAUSE_TEXT.get(r["main_cause"] or "", "—")
        if r["main_cause"] == "rank_wait" and r["waits_for_rank"] is not None:
            idle = f"waiting for rank {r['waits_for_rank']} in {r['waits_in']}"
        rows.append([name, f"{r['mean_step_ns'] / 1e6:.1f} ms", busy, wait, last, idle])
    return headers, rows


def report_label(cause: str) -> str:
    from accelscope.analysis.causes import CAUSE_TEXT

    return CAUSE_TEXT[cause]


MAX_DEVICE_ROWS = 16  # a job of many ranks: the first ones, then one line for the rest


def _bytes(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def device_rows(devices: pl.DataFrame, has_device: bool) -> tuple[list[str], list[list[str]], str]:
    """``Report.devices`` as text cells: (headers, rows, a line for the rows left out, or ""), for
    ``accelscope analyze``, the dashboard's Overview and the HTML report alike."""
    from accelscope.analysis.causes import CAUSE_TEXT

    multi_rank = devices["rank"].n_unique() > 1 if devices.height else False
    headers = ["device", "busy", "idle mostly", "streams", "device counters", "memory peak"]
    rows = []
    for u in devices.head(MAX_DEVICE_ROWS).iter_rows(named=True):
        name = f"{u['device']} (training thread)" if u["device"] == "cpu" and not has_device else u["device"]
        if multi_rank:
            name = f"rank {u['rank']} · {name}"
        if u["busy_share"] is None:
            busy, idle = "not traced", "—"
        else:
            busy = f"{u['busy_share']:.1%}"
            idle = "never idle" if u["idle_cause"] is None else f"{CAUSE_TEXT[u['idle_cause']]} ({u['idle_cause_share']:.0%} of idle time)"
        if not u["streams"]:
            streams = "—"
        elif u["streams"] == 1:
            streams = f"stream {u['busiest_stream']}"
        else:
            streams = f"{u['streams']}; busiest: stream {u['busiest_stream']} ({u['busiest_stream_share']:.0%} busy)"
        sampled = "—" if u["sampled_counter"] is None else f"{u['sampled_counter']} {u['sampled_mean_percent']:.0f}% (mean)"
        memory = "—"
        if u["memory_peak_bytes"] is not None:
            memory = _bytes(u["memory_peak_bytes"]) + (f" of {_bytes(u['memory_total_bytes'])}" if u["memory_total_bytes"] else "")
        rows.append([name, busy, idle, streams, sampled, memory])
    rest = ""
    if devices.height > MAX_DEVICE_ROWS:
        left = devices.slice(MAX_DEVICE_ROWS)
        shares = left["busy_share"].drop_nulls()
        rest = f"and {left.height} more devices" + (f", busy {shares.min():.1%} to {shares.max():.1%}" if shares.len() else "")
    return headers, rows, rest


def capture_lines(devices: pl.DataFrame) -> list[str]:
    """One line per device on its whole-capture busy time (``capture.py``: TraceLens's
    gpu_timeline definition), for ``accelscope analyze``, the Overview and the HTML report."""
    import polars as pl

    from accelscope.analysis.capture import WINDOW_TEXT

    if "capture_busy_share" not in devices.columns:
        return []
    multi_rank = devices["rank"].n_unique() > 1
    out = []
    for u in devices.filter(pl.col("capture_busy_share").is_not_null()).head(MAX_DEVICE_ROWS).iter_rows(named=True):
        name = f"rank {u['rank']} · {u['device']}" if multi_rank else u["device"]
        out.append(f"whole capture: {name} busy {u['capture_busy_ns'] / 1e6:,.2f} of {u['capture_span_ns'] / 1e6:,.2f} ms "
                   f"({u['capture_busy_share']:.1%}), over {WINDOW_TEXT[u['capture_window']]}")
    return out


def memory_rows(report: Report) -> tuple[list[str], list[list[str]], str]:
    """``Report.memory`` as text cells: (headers, rows, a caption for relative and sampled peaks, or "")."""
    from accelscope.analysis.memory_samples import SOURCE_SAMPLES

    multi_rank = len(report.run.ranks) > 1
    headers = ["device", "peak allocated", "reserved (max)", "of its memory", report.step_word, "under (host op)"]
    rows = []
    for m in report.memory.head(MAX_DEVICE_ROWS).iter_rows(named=True):
        name = f"rank {m['rank']} · {m['device']}" if multi_rank else m["device"]
        peak = (_bytes(m["peak_allocated_bytes"]) if m["peak_allocated_bytes"] >= 2**20 else f"{m['peak_allocated_bytes']:,} B") + (" *" if m["relative"] else "")
        reserved = "—" if m["peak_reserved_bytes"] is None else _bytes(m["peak_reserved_bytes"])
        share = "—" if m["peak_share"] is None else f"{m['peak_share']:.1%} of {_bytes(m['memory_total_bytes'])}"
        rows.append([name, peak, reserved, share, "—" if m["peak_step"] is None else str(m["peak_step"]), m["peak_op"] or "—"])
    if report.run.memory_only:  # no steps: drop their column
        headers, rows = headers[:4] + headers[5:], [r[:4] + r[5:] for r in rows]
    caption = ("* allocated since the trace began: the trace records no allocator totals, so what was already held "
               "when it began is unknown") if report.memory["relative"].any() else ""
    if "source" in report.memory.columns and (report.memory["source"] == SOURCE_SAMPLES).any():
        caption = "\n".join(filter(None, [caption, "devices without allocator events: torch.cuda's allocator read at each "
                                           f"{report.step_word}'s end (per-step samples), so the op at the peak is unknown"]))
    return headers, rows, caption


def _size(n: int) -> str:
    """Bytes, signed, in the largest unit under them (B, KiB, MiB, GiB), three digits or so."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:,.1f} {unit}" if abs(v) < 100 else f"{v:,.0f} {unit}"
    return f"{n:,} B"


MEMORY_OP_NAME_MIN = 12  # the op column's narrowest: narrower consoles wrap the figures instead


def memory_op_rows(report: Report, width: int = 120) -> tuple[list[str], list[list[str]]]:
    """``Report.top_memory_ops`` as text cells for a console ``width`` wide: (headers, rows),
    op names shortened in the middle to what the figures leave."""
    from accelscope.analysis.tables import middle_name

    multi_rank = len(report.run.ranks) > 1
    headers = ["device", "op", "allocs", "self", "self net", "total", "total net"]
    figures = []
    for r in report.top_memory_ops.iter_rows(named=True):
        name = f"rank {r['rank']} · {r['device']}" if multi_rank else r["device"]
        figures.append((r["name"], [name, f"{r['allocations']:,}", _size(r["allocated_bytes"]), _size(r["self_increase_bytes"]),
                                    _size(r["total_allocated_bytes"]), _size(r["total_increase_bytes"])]))
    others = [h for h in headers if h != "op"]
    used = sum(max(len(h), *(len(cells[i]) for _, cells in figures)) + 3 for i, h in enumerate(others)) + 4 if figures else 0
    name_width = max(width - used, MEMORY_OP_NAME_MIN)
    return headers, [[cells[0], middle_name(op, name_width), *cells[1:]] for op, cells in figures]


def print_memory(report: Report, console: Console) -> None:
    """``analyze``'s memory sections: peaks, what held them, memory by op, leaks."""
    if report.memory.height:
        headers, rows, caption = memory_rows(report)
        mt = _table("Memory peaks", headers, right_from=1)
        mt.columns[-1].justify = "left"
        for cells in rows:
            mt.add_row(*cells)
        console.print(mt)
        if caption:
            console.print(caption)
        for line in report.memory_peak_texts:
            console.print(line)
        headers, rows = memory_op_rows(report, console.width)
        if rows:
            ot = _table("Memory by op (the whole trace)", headers, right_from=2)
            ot.caption = ("self: bytes allocated while the op was the innermost host op of the allocating thread; "
                          "total: under it too; net: less the bytes freed")
            for cells in rows:
                ot.add_row(*cells)
            console.print(ot)
    for line in report.memory_leak_texts:
        console.print(f"[bold red]{line}[/]")



def print_report(report: Report, console: Console | None = None) -> None:
    """``accelscope analyze``'s text: an out-of-memory failure first, if training ran out of
    memory, then the headline, breakdown, idle causes, devices, memory peaks
    and memory by op (when the run has allocator events) and leaks, steps, top device work, launches, notes and recommendations."""
    import polars as pl
    from rich.console import Console

    from accelscope.analysis.breakdown import BREAKDOWN
    from accelscope.analysis.tables import middle_name

    console = console or Console()
    for line in oom_lines(report):  # first, each on one line however narrow the console
        console.print(line, soft_wrap=True)
    if report.run.memory_only:
        console.print(f"[bold]{report.run_name}[/]: allocator events only (a memory snapshot): no timeline was recorded, so there are no "
                      "steps, idle causes or device figures", soft_wrap=True)
        print_memory(report, console)
        for rec in report.recommendations:
            console.print(f"[bold]recommendation:[/] {rec}")
        return
    for line in headline(report):
        console.print(line)

    one = report.step_word
    table = _table(f"Where {one} time went (each instant counted once, first category wins)", ["category", f"ms per {one}", "share"])
    for c in BREAKDOWN:
        v = report.breakdown_ns[c]
        if v:
            table.add_row(c.replace("_", " "), f"{report.per_step_ms(v):.2f}", f"{report.share(v):.1%}")
    console.print(table)

    idle = _table("Why the " + ("accelerator" if report.has_device else "compute thread") + " was idle", ["cause", f"ms per {report.step_word}", "share", "mostly under (host op)"], right_from=1)
    idle.columns[-1].justify = "left"
    for c, v, share in report.idle_causes:
        ops = report.host_ops_of(c)
        under = f"{middle_name(ops[0][0], 32)} {report.per_step_ms(ops[0][1]):.1f} ms" if ops else "—"
        idle.add_row(report_label(c), f"{report.per_step_ms(v):.2f}", f"{share:.1%}", under)
    console.print(idle)

    if report.has_device:
        headers, rows, rest = device_rows(report.devices, report.has_device)
        dev = _table("Devices", headers, right_from=len(headers))  # text cells
        for cells in rows:
            dev.add_row(*cells)
        console.print(dev)
        if rest:
            console.print(rest)
        for line in capture_lines(report.devices):
            console.print(line)

    print_memory(report, console)

    if report.ranks is not None:
        headers, rows = rank_rows(report)
        rt = _table("Ranks (waiting: inside collectives, until the last rank arrived)", headers)
        for cells in rows:
            rt.add_row(*cells)
        console.print(rt)
        if report.collectives_by_kind.height:
            ct = _table("Collectives (transfer: after the last rank arrived)", ["kind", "group", "size", "count", "transfer ms", "bus bandwidth"])
            for r in report.collectives_by_kind.iter_rows(named=True):
                size = "—" if r["size_bytes"] is None else _bytes(r["size_bytes"]) if r["size_bytes"] >= 2**20 else f"{r['size_bytes']:,} B"
                bw = "—" if r["busbw_gbps"] is None else f"{r['busbw_gbps']:.1f} GB/s"
                ct.add_row(r["kind"], r["group"], size, str(r["count"]), f"{r['mean_transfer_ns'] / 1e6:.2f}", bw)
            console.print(ct)

    steps = report.steps
    slowest = steps.height > STEP_ROWS
    st = _table(f"Steps (the {STEP_ROWS} slowest, slowest first)" if slowest else "Steps", ["rank", "step", "ms", "busy", "input wait", "verdict"])
    shown = steps.sort("dur_ns", descending=True).head(STEP_ROWS) if slowest else steps
    for r in shown.iter_rows(named=True):
        tag = " (warm-up)" if r["warmup"] else " (outlier)" if r["outlier"] else ""
        st.add_row(str(r["rank"]), f"{r['step']}{tag}", f"{r['dur_ns'] / 1e6:.2f}",
                   f"{r['busy_share']:.1%}", f"{r['input_wait_share']:.1%}" if r["input_timed"] else "not seen", r["verdict"] or "—")
    console.print(st)
    if report.top_kernels.height:
        console.print(name_table("Top device work", list(report.top_kernels.head(10).iter_rows(named=True)), console.width))
    launches = report.launches
    if launches.per_device.height:
        lt = _table("Launches (launch → device start; queue: ops launched, not finished)", ["device", "device ops", "latency median", "p90", "max queue"])
        deepest = launches.per_stream.group_by("rank", "device").agg(pl.col("max_depth").max())
        queue = {(r["rank"], r["device"]): r["max_depth"] for r in deepest.iter_rows(named=True)}
        multi = len(report.run.ranks) > 1
        for r in launches.per_device.iter_rows(named=True):
            name = f"rank {r['rank']} · {r['device']}" if multi else r["device"]
            med = "—" if r["median_ns"] is None else f"{r['median_ns'] / 1e3:,.1f} µs"
            p90 = "—" if r["p90_ns"] is None else f"{r['p90_ns'] / 1e3:,.1f} µs"
            lt.add_row(name, f"{r['device_ops']:,}", med, p90, str(queue.get((r["rank"], r["device"]), "—")))
        console.print(lt)
    for note in report.notes:
        console.print(f"note: {note}")
    for rec in report.recommendations:
        console.print(f"[bold]recommendation:[/] {rec}")


def print_comparison(cmp: Comparison, console: Console | None = None) -> None:
    """``accelscope diff``'s text: summary, breakdown and idle causes per step, and the
    kernels and ops whose time per traced step changed most."""
    from rich.console import Console
    from rich.table import Table

    from accelscope.analysis.causes import CAUSE_TEXT
    from accelscope.analysis.tables import short_name

    console = console or Console()

    def delta(c: Change, unit: str = " ms", pct: bool = False) -> str:
        if pct:
            return f"{c.delta * 100:+.1f} pp"
        rel = f" ({c.relative:+.0%})" if c.relative is not None else ""
        return f"{c.delta:+.2f}{unit}{rel}"

    console.print(f"[bold]A[/] {cmp.a.run_name}: {VERDICT_TEXT[cmp.a.verdict]}    [bold]B[/] {cmp.b.run_name}: {VERDICT_TEXT[cmp.b.verdict]}")
    t = _table("Summary (steady-state steps)", ["", "A", "B", "B - A"])
    c = cmp.summary["mean_step_ms"]
    t.add_row("mean step", f"{c.a:.2f} ms", f"{c.b:.2f} ms", delta(c))
    for key, label in (("busy_share", "device busy"), ("input_wait_share", "input wait")):
        c = cmp.summary[key]
        t.add_row(label, f"{c.a:.1%}", f"{c.b:.1%}", delta(c, pct=True))
    console.print(t)
    for title, rows, names in (("Breakdown, ms per step", cmp.breakdown_ms, None), ("Idle time by cause, ms per step", cmp.idle_ms, CAUSE_TEXT)):
        t = _table(title, ["", "A", "B", "B - A"])
        for k, c in rows.items():
            t.add_row(names[k] if names else k.replace("_", " "), f"{c.a:.2f}", f"{c.b:.2f}", delta(c, unit=""))
        console.print(t)
    for title, df in (("Largest changes in device work, ms per traced step", cmp.kernels), ("Largest changes in ops (inclusive), ms per traced step", cmp.ops)):
        if df.height == 0:
            continue
        t = Table(title=title)
        t.add_column("name", overflow="ellipsis", no_wrap=True, max_width=44)
        for col in ("A", "B", "B - A"):
            t.add_column(col, justify="right", no_wrap=True, min_width=7)
        for r in df.head(10).iter_rows(named=True):
            t.add_row(short_name(r["name"], 44), f"{r['a_ms']:.2f}", f"{r['b_ms']:.2f}", f"{r['delta_ms']:+.2f}")
        console.print(t)

"""Memory by op (analysis/memory_ops.py): on the V100 nw0 trace against a reference computed
here from the raw JSON (gunzip + json.load, a plain loop over each thread's ops), and on a
real CPU torch run where a known op allocates a known amount through ``aten::empty``."""

from __future__ import annotations

import gzip
import io
import json
import warnings
from collections import defaultdict

import polars as pl
import pytest
from rich.console import Console

from accelscope.analysis import analyze
from accelscope.analysis import memory_ops as MO
from accelscope.text import print_report
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run, write_run
from tests.builders import numbered_steps

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
ONES = 262144  # float32: 1 MiB per torch.ones
MIB = 2**20
HOST_OP_CATEGORIES = ("cpu_op", "Operator")  # "Operator": 2020-2021 traces


def _reference(path) -> dict[str, dict[tuple[str, str], int]]:
    """Per figure, per (device, op name), from the raw events: each [memory] event's innermost
    host op on its pid/tid (latest start holding its ts, then shortest), and every op holding it.
    ProfilerStep#N is a step, not a host op."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        events = json.load(fh)["traceEvents"]
    ops, mems = defaultdict(list), defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in HOST_OP_CATEGORIES and not e["name"].startswith("ProfilerStep#"):
            ops[(int(e["pid"]), int(e["tid"]))].append((e["ts"], -e["dur"], e["name"]))  # by start, the shortest last
        elif e.get("ph") == "i" and e.get("name") == "[memory]":
            a = e["args"]
            device = "cpu" if a["Device Type"] == 0 else f"cuda:{a['Device Id']}"
            mems[(int(e["pid"]), int(e["tid"]))].append((e["ts"], device, a["Bytes"]))
    out = {k: defaultdict(int) for k in ("allocated", "allocations", "self_increase", "total_allocated")}
    for thread, rows in mems.items():
        starts, stack, i = sorted(ops.get(thread, [])), [], 0
        for ts, device, b in sorted(rows, key=lambda r: r[0]):
            while i < len(starts) and starts[i][0] <= ts:
                stack.append(starts[i])
                i += 1
            while stack and stack[-1][0] - stack[-1][1] < ts:  # ended before ts
                stack.pop()
            if not stack:
                continue
            inner = (device, stack[-1][2])
            out["self_increase"][inner] += b
            if b > 0:
                out["allocated"][inner] += b
                out["allocations"][inner] += 1
                for name in {n for s, nd, n in stack if s - nd >= ts}:
                    out["total_allocated"][(device, name)] += b
    return out


@pytest.fixture(scope="module")
def nw0(shared_dir, tmp_path_factory):
    path = import_traces([shared_dir / NW0], tmp_path_factory.mktemp("memory_ops") / "run", progress=False, workers=1)
    run = Run.open(path)
    return analyze(run), _reference(shared_dir / NW0), MO.table(run.memory, MO.held(run.memory, run.slices))


def _got(table: pl.DataFrame, column: str) -> dict[tuple[str, str], int]:
    return {(r["device"], r["name"]): r[column] for r in table.iter_rows(named=True)}


def _top(reference: dict[tuple[str, str], int], n: int = 10) -> dict[tuple[str, str], int]:
    """The ``n`` largest of each device."""
    out = {}
    for device in {d for d, _ in reference}:
        mine = sorted(((k, v) for k, v in reference.items() if k[0] == device), key=lambda kv: -kv[1])
        out.update(mine[:n])
    return out


@pytest.mark.parametrize(("column", "figure"), [("allocated_bytes", "allocated"), ("allocations", "allocations"),
                                                ("self_increase_bytes", "self_increase"), ("total_allocated_bytes", "total_allocated")])
def test_the_v100_figures_per_op_equal_the_raw_events(nw0, column, figure):
    """The top 10 ops of each device by the reference's own figure; self: the innermost op
    holding the event (frees too, for the increase); total: every op holding it."""
    _, ref, full = nw0
    want = _top(ref[figure])
    got = _got(full, column)
    assert len(want) > 10 and {k: got.get(k) for k in want} == want


def test_each_device_keeps_its_top_ops_and_counts_the_rest(nw0):
    _, _, full = nw0
    kept, more = MO.top(full, n=10)
    assert kept.group_by("rank", "device", maintain_order=True).len()["len"].to_list() == [10, 10]  # cpu, cuda:0: 15 and 44 ops
    assert more == full.height - 20
    cuda = full.filter(pl.col("device") == "cuda:0").sort("allocated_bytes", descending=True)
    assert kept.filter(pl.col("device") == "cuda:0")["allocated_bytes"].to_list() == cuda["allocated_bytes"].head(10).to_list()


def test_the_report_keeps_the_top_ops_of_every_device(nw0):
    report, _, full = nw0
    kept, more = MO.top(full)
    assert report.memory_ops.equals(kept) and report.memory_ops_more == more == 0  # fewer than TOP_N ops per device


def test_threads_split_over_several_joins_pair_the_same(nw0, monkeypatch):
    """A run too long for every thread's band in one Int64 range joins a few threads at a time."""
    report = nw0[0]
    run = Run.open(report.run.path)
    rows = run.memory.with_row_index("_id")
    whole = MO.holding(rows, run.slices).sort("_id", "start_ns", "name")
    threads = rows.select("rank", "pid", "tid").unique().height
    assert threads > 1
    monkeypatch.setattr(MO, "_BAND_LIMIT", 1)  # one thread per join
    assert MO.holding(rows, run.slices).sort("_id", "start_ns", "name").equals(whole)


def test_the_json_document_lists_the_ops_and_how_many_more(nw0):
    report = nw0[0]
    doc = report.to_dict()["memory"]
    assert doc["ops"] == report.memory_ops.to_dicts() and doc["ops_more"] == report.memory_ops_more


def test_analyze_prints_memory_by_op_with_the_op_allocating_most(nw0):
    report = nw0[0]
    buf = io.StringIO()
    print_report(report, console=Console(file=buf, width=160, force_terminal=False))
    text = buf.getvalue()
    assert "Memory by op" in text and report.top_memory_ops["name"][0] in text.split("Memory by op")[1]


def test_a_run_without_allocator_events_prints_no_memory_by_op(tmp_path):
    path = write_run(tmp_path / "r", numbered_steps([(i * 100, 100, "step") for i in range(4)]), None, {"complete": True})
    buf = io.StringIO()
    print_report(analyze(Run.open(path)), console=Console(file=buf, width=160, force_terminal=False))
    assert "Memory by" not in buf.getvalue()


@pytest.fixture(scope="module")
def ones_run(tmp_path_factory):
    """A real torch.profiler run on the CPU with profile_memory=True: steps 1-3 traced (one of
    warm-up), each creating a 1 MiB tensor with torch.ones and keeping it."""
    torch = pytest.importorskip("torch", reason="the torch extra is needed to record allocator events")
    from torch.profiler import ProfilerActivity, profile, schedule

    out = tmp_path_factory.mktemp("ones")
    trace = out / "trace.json"
    kept = []
    with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, schedule=schedule(wait=0, warmup=1, active=3),
                                            on_trace_ready=lambda p: p.export_chrome_trace(str(trace))) as prof:
        warnings.simplefilter("ignore", UserWarning)  # "the profiler clears events at the end of each cycle": one cycle here
        for _ in range(4):
            kept.append(torch.ones(ONES))
            prof.step()
    report = analyze(Run.open(import_traces([trace], out / "run", progress=False, workers=1)))
    calls = Run.open(report.run.path).slices.filter(pl.col("name") == "aten::ones").height
    return report, calls


def _row(report, name: str) -> dict:
    rows = report.memory_ops.filter((pl.col("device") == "cpu") & (pl.col("name") == name)).to_dicts()
    assert len(rows) == 1, report.memory_ops
    return rows[0]


def test_an_op_allocating_through_aten_empty_has_it_in_its_total_not_its_self(ones_run):
    report, calls = ones_run
    ones = _row(report, "aten::ones")
    assert calls == 3
    assert (ones["total_allocated_bytes"], ones["total_increase_bytes"]) == (calls * MIB, calls * MIB)
    assert (ones["allocations"], ones["allocated_bytes"], ones["self_increase_bytes"]) == (0, 0, 0)


def test_the_allocation_is_self_to_aten_empty(ones_run):
    report, calls = ones_run
    empty = _row(report, "aten::empty")
    assert (empty["allocations"], empty["allocated_bytes"]) == (calls, calls * MIB)

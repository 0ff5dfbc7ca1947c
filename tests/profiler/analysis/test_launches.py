"""Launch latency, queue depth and stream overlap on real traces, and exact values on a small table."""

import gzip
import json
import time

import numpy as np
import polars as pl
import pytest

from accelscope.analysis import launches as sch
from accelscope.analysis.intervals import covered_within, union
from accelscope.traces import schema as S
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run
from tests.builders import event_table

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
HTA = "traces/HolisticTraceAnalysis/tests/data"
NCCL = f"{HTA}/nccl_parser_config/nccl_data.json.gz"
EVENT_SYNC = f"{HTA}/critical_path/cuda_event_sync_multi_stream/event_sync_trace.json.gz"
TWO_RANKS = [f"{HTA}/trace_filter/sampled_rank-0.json.gz", f"{HTA}/trace_filter/sampled_rank-1.json.gz"]


@pytest.fixture(scope="module")
def events(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scheduling")
    paths = {"nw0": [NW0], "nccl": [NCCL], "sync": [EVENT_SYNC], "two_ranks": TWO_RANKS}
    return {k: Run.open(import_traces([shared_dir / p for p in v], out / k, progress=False)).events for k, v in paths.items()}


def _device(ev: pl.DataFrame) -> pl.DataFrame:
    return ev.filter(pl.col("kind").is_in(list(S.DEVICE_KINDS)) & (pl.col("device") != "cpu"))


def _check_depth_series(ev: pl.DataFrame, depth: pl.DataFrame) -> None:
    """Never negative, ends at 0, and equal to launched-minus-finished counted independently."""
    assert (depth["depth"] >= 0).all()
    keys = ["rank", "device", "stream"]
    assert depth.group_by(keys).agg(pl.col("depth").last())["depth"].to_list() == [0] * depth.select(keys).unique().height
    assert depth.equals(depth.sort(*keys, "time_ns"))
    lat = sch.launch_latency(ev)
    dev = _device(ev).with_columns(end_ns=pl.col("start_ns") + pl.col("dur_ns"))
    dev = dev.join(lat.select("rank", "correlation_id", "start_ns", "launch_start_ns"), on=["rank", "correlation_id", "start_ns"], how="left")
    for (rank, device, stream), g in depth.group_by(keys):
        ops = dev.filter((pl.col("rank") == rank) & (pl.col("device") == device) & (pl.col("stream") == stream))
        enter = np.sort(np.minimum(ops["launch_start_ns"].fill_null(ops["start_ns"]).to_numpy(), ops["start_ns"].to_numpy()))
        leave = np.sort(ops["end_ns"].to_numpy())
        t = g["time_ns"].to_numpy()
        expect = np.searchsorted(enter, t, side="right") - np.searchsorted(leave, t, side="right")
        np.testing.assert_array_equal(g["depth"].to_numpy(), expect)


# -- real traces -----------------------------------------------------------------------------
def test_nw0_launch_latency(events, shared_dir):
    ev = events["nw0"]
    lat = sch.launch_latency(ev)
    kernels = _device(ev).filter(pl.col("kind") == S.KERNEL)
    matched = lat.filter(pl.col("kind") == S.KERNEL)
    assert matched.height > 0.99 * kernels.height
    # The CPU and GPU timestamps of this trace agree: no kernel starts before its launch call.
    assert (lat["latency_ns"] >= 0).all()
    assert lat["correlation_id"].n_unique() == lat.height
    assert (lat["launch_end_ns"] >= lat["launch_start_ns"]).all()

    # One kernel against a hand computation from the raw JSON.
    doc = json.load(gzip.open(shared_dir / NW0))
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    kernels_raw = sorted((e for e in xs if e.get("cat") == "Kernel"), key=lambda e: e["ts"])
    kernel = kernels_raw[len(kernels_raw) // 2]
    corr = kernel["args"]["correlation"]
    launch = [e for e in xs if e.get("cat") == "Runtime" and e.get("args", {}).get("correlation") == corr]
    assert len(launch) == 1 and launch[0]["name"] == "cudaLaunchKernel"
    row = lat.filter(pl.col("correlation_id") == corr)
    assert row.height == 1
    assert row["name"][0] == kernel["name"]
    assert row["latency_ns"][0] == round((kernel["ts"] - launch[0]["ts"]) * 1000)
    assert row["launch_end_ns"][0] - row["launch_start_ns"][0] == round(launch[0]["dur"] * 1000)


def test_nw0_queue_depth(events):
    ev = events["nw0"]
    depth = sch.queue_depth(ev)
    assert depth.select("rank", "device", "stream").unique().rows() == [(0, "cuda:0", 7)]
    assert depth["depth"].max() > 100  # the input-bound trace still queues hundreds of kernels in its compute phases
    _check_depth_series(ev, depth)


@pytest.mark.parametrize("trace", ["nw0", "two_ranks"])
def test_latency_and_depth_in_one_pass_equal_each_alone(events, trace):
    one_pass = sch.launches(events[trace])  # what the report holds
    lat, depth = one_pass.latency, one_pass.depth
    assert lat.height > 0 and depth.height > 0
    assert lat.equals(sch.launch_latency(events[trace])) and depth.equals(sch.queue_depth(events[trace]))


def test_nw0_summary_is_json(events):
    s = sch.summary(events["nw0"])
    json.dumps(s, allow_nan=False)
    (lat,) = s["latency"]
    assert lat["matched_share"] == 1.0
    assert 0 < lat["median_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]
    (q,) = s["queue_depth"]
    assert q["max"] == sch.queue_depth(events["nw0"])["depth"].max()
    assert 0 < q["mean"] < q["max"]


def test_nccl_compute_comm_overlap(events):
    ev = events["nccl"]
    ov = sch.stream_overlap(ev)
    assert ov.height == 1
    row = ov.row(0, named=True)
    assert row["comm_ns"] > 0 and row["compute_ns"] > 0
    assert row["compute_comm_overlap_ns"] > 0
    for a, b in sch.OVERLAP_PAIRS:
        share = row[f"{a}_{b}_share"]
        assert share is None or 0.0 <= share <= 1.0
        assert row[f"{a}_{b}_overlap_ns"] <= min(row[f"{a}_ns"], row[f"{b}_ns"])
    # Independently: the communication time covered by the union of compute kernels.
    dev = _device(ev).with_columns(end_ns=pl.col("start_ns") + pl.col("dur_ns"))
    nccl = dev.filter(pl.col("name").str.starts_with("ncclKernel"))
    assert set(nccl["stream"].to_list()) == {40}
    compute = dev.filter((pl.col("kind") == S.KERNEL) & ~pl.col("name").str.starts_with("ncclKernel"))
    cs, ce = union(compute["start_ns"].to_numpy(), compute["end_ns"].to_numpy())
    assert row["compute_comm_overlap_ns"] == int(covered_within(nccl["start_ns"].to_numpy(), nccl["end_ns"].to_numpy(), cs, ce).sum())
    # Memcpy and compute share stream 7 here: they cannot overlap.
    assert row["compute_copy_overlap_ns"] == 0
    # Restricted to the steps: never more than over the whole trace.
    steps = sch.stream_overlap(ev, windows="steps").row(0, named=True)
    assert 0 < steps["compute_comm_overlap_ns"] <= row["compute_comm_overlap_ns"]


def test_event_sync_several_streams(events):
    ev = events["sync"]
    depth = sch.queue_depth(ev)
    streams = depth.select("rank", "device", "stream").unique()
    assert streams.height >= 3
    _check_depth_series(ev, depth)
    # One kernel there starts 1 µs before its cudaLaunchKernel returns: counting from the
    # call's start keeps it queued from launch to finish.
    lat = sch.launch_latency(ev)
    assert (lat["start_ns"] < lat["launch_end_ns"]).any()


def test_two_real_ranks_repeat_correlation_ids(events):
    ev = events["two_ranks"]
    dev = _device(ev)
    per_rank = [set(dev.filter(pl.col("rank") == r)["correlation_id"].to_list()) for r in (0, 1)]
    assert per_rank[0] & per_rank[1], "this pair of ranks reuses some correlation ids"
    lat = sch.launch_latency(ev)
    assert lat.height == dev.height  # one row per device slice, none duplicated across ranks
    assert (lat["latency_ns"] >= 0).all()
    _check_depth_series(ev, sch.queue_depth(ev))


# -- exact values on a small table -------------------------------------------------------------
def _table(rows: list[tuple]) -> pl.DataFrame:
    """(rank, kind, name, device, stream, start_ns, dur_ns, correlation_id) rows as an events table."""
    return event_table(rows, ("rank", "kind", "name", "device", "stream", "start_ns", "dur_ns", "correlation_id"))


RT, K, MC = S.RUNTIME, S.KERNEL, S.MEMCPY
SYNTHETIC = _table(
    [
        # rank 0, stream 7: two kernels queued back to back
        (0, RT, "cudaLaunchKernel", "cpu", None, 100, 10, 1),
        (0, K, "gemm", "cuda:0", 7, 120, 30, 1),
        (0, RT, "cudaLaunchKernel", "cpu", None, 112, 6, 2),
        (0, K, "relu", "cuda:0", 7, 150, 20, 2),
        # rank 0, stream 8: a copy that starts before its launch call returns
        (0, RT, "cudaMemcpyAsync", "cpu", None, 130, 10, 3),
        (0, MC, "Memcpy HtoD", "cuda:0", 8, 135, 25, 3),
        # rank 0: a kernel whose launch was not recorded, and one without a correlation id
        (0, K, "orphan", "cuda:0", 7, 200, 10, 99),
        (0, K, "no_corr", "cuda:0", 7, 220, 10, None),
        # rank 1 reuses ids 1 and 2
        (1, RT, "cudaLaunchKernel", "cpu", None, 1000, 10, 1),
        (1, K, "gemm", "cuda:1", 7, 1050, 10, 1),
        (1, RT, "cudaLaunchKernel", "cpu", None, 1020, 10, 2),
        (1, K, "relu", "cuda:1", 7, 1060, 5, 2),
        # rank 1: id 5 appears on two runtime calls: the closest preceding one wins
        (1, RT, "cudaLaunchKernel", "cpu", None, 1100, 5, 5),
        (1, RT, "cudaLaunchKernel", "cpu", None, 1200, 5, 5),
        (1, K, "k5", "cuda:1", 7, 1210, 10, 5),
        # rank 1: a kernel stamped before its launch (clock skew): matched forward, kept negative
        (1, RT, "cudaLaunchKernel", "cpu", None, 1300, 10, 6),
        (1, K, "k6", "cuda:1", 7, 1295, 10, 6),
    ]
)


def test_synthetic_launch_latency():
    lat = sch.launch_latency(SYNTHETIC)
    assert lat.columns == list(sch.LAUNCH_SCHEMA)
    got = {(r["rank"], r["name"]): (r["launch_start_ns"], r["launch_end_ns"], r["start_ns"], r["latency_ns"]) for r in lat.to_dicts()}
    assert got == {
        (0, "gemm"): (100, 110, 120, 20),
        (0, "relu"): (112, 118, 150, 38),
        (0, "Memcpy HtoD"): (130, 140, 135, 5),
        (1, "gemm"): (1000, 1010, 1050, 50),
        (1, "relu"): (1020, 1030, 1060, 40),
        (1, "k5"): (1200, 1205, 1210, 10),
        (1, "k6"): (1300, 1310, 1295, -5),
    }
    assert lat["stream"].to_list() == [7, 7, 8, 7, 7, 7, 7]


def test_synthetic_queue_depth():
    depth = sch.queue_depth(SYNTHETIC)
    series = {k: list(zip(g["time_ns"], g["depth"])) for k, g in depth.group_by(["rank", "device", "stream"], maintain_order=True)}
    assert series == {
        (0, "cuda:0", 7): [(100, 1), (112, 2), (150, 1), (170, 0), (200, 1), (210, 0), (220, 1), (230, 0)],
        (0, "cuda:0", 8): [(130, 1), (160, 0)],
        # k6 counts from its own (earlier) start; k5's launch at 1200 meets nothing else
        (1, "cuda:1", 7): [(1000, 1), (1020, 2), (1060, 1), (1065, 0), (1200, 1), (1220, 0), (1295, 1), (1305, 0)],
    }
    assert [tuple(k) for k in depth.select("rank", "device", "stream").unique(maintain_order=True).rows()] == list(series)


def test_synthetic_summary():
    s = sch.summary(SYNTHETIC)
    json.dumps(s, allow_nan=False)
    lat = {r["rank"]: r for r in s["latency"]}
    assert lat[0]["device_ops"] == 5 and lat[0]["matched_share"] == 0.6
    assert lat[0]["median_us"] == 0.02 and lat[0]["max_us"] == 0.038
    depth = {(r["rank"], r["stream"]): r for r in s["queue_depth"]}
    assert depth[(0, 8)] == {"rank": 0, "device": "cuda:0", "stream": 8, "max": 1, "mean": 1.0, "span_us": 0.03}
    # stream 7 of rank 0: depth 1 for 12+20+10+10, 2 for 38, 0 for 30+10, over 130 ns
    assert depth[(0, 7)]["max"] == 2
    assert depth[(0, 7)]["mean"] == round((12 + 20 + 10 + 10 + 2 * 38) / 130, 4)


OVERLAP_TABLE = _table(
    [
        (0, K, "gemm", "cuda:0", 7, 0, 100, None),
        (0, K, "gemm", "cuda:0", 3, 20, 40, None),  # inside the first: unions, not sums
        (0, K, "ncclKernel_AllReduce_RING_LL_Sum_float", "cuda:0", 40, 50, 100, None),
        (0, MC, "Memcpy DtoH", "cuda:0", 9, 90, 110, None),
        (0, S.MEMSET, "Memset (Device)", "cuda:0", 9, 190, 5, None),
        (1, K, "gemm", "cuda:1", 7, 0, 10, None),
    ]
)


def test_synthetic_stream_overlap():
    ov = {r["rank"]: r for r in sch.stream_overlap(OVERLAP_TABLE).to_dicts()}
    r0 = ov[0]
    assert (r0["compute_ns"], r0["copy_ns"], r0["comm_ns"], r0["span_ns"]) == (100, 110, 100, 200)
    assert (r0["compute_copy_overlap_ns"], r0["compute_comm_overlap_ns"], r0["copy_comm_overlap_ns"]) == (10, 50, 60)
    assert (r0["compute_copy_share"], r0["compute_comm_share"], r0["copy_comm_share"]) == (0.1, 0.5, 0.6)
    r1 = ov[1]
    assert (r1["compute_ns"], r1["copy_ns"], r1["comm_ns"]) == (10, 0, 0)
    assert r1["compute_copy_share"] is None and r1["copy_comm_share"] is None


def test_synthetic_stream_overlap_in_windows():
    # Two overlapping windows merge into [0, 95); rank 1 has no window.
    windows = pl.DataFrame({"rank": [0, 0], "start_ns": [0, 40], "end_ns": [60, 95]})
    ov = {r["rank"]: r for r in sch.stream_overlap(OVERLAP_TABLE, windows).to_dicts()}
    r0 = ov[0]
    assert (r0["span_ns"], r0["compute_ns"], r0["copy_ns"], r0["comm_ns"]) == (95, 95, 5, 45)
    assert (r0["compute_copy_overlap_ns"], r0["compute_comm_overlap_ns"], r0["copy_comm_overlap_ns"]) == (5, 45, 5)
    assert ov[1]["compute_ns"] == 0 and ov[1]["span_ns"] == 0
    # Without a rank column the windows apply to every rank.
    everywhere = {r["rank"]: r for r in sch.stream_overlap(OVERLAP_TABLE, windows.drop("rank")).to_dicts()}
    assert everywhere[1]["compute_ns"] == 10


def test_empty_and_bad_input():
    empty = SYNTHETIC.clear()
    assert sch.launch_latency(empty).height == 0
    assert sch.queue_depth(empty).schema == pl.Schema(sch.DEPTH_SCHEMA)
    assert sch.stream_overlap(empty).height == 0
    assert sch.summary(empty) == {"latency": [], "queue_depth": [], "overlap": []}
    with pytest.raises(ValueError, match="correlation_id"):
        sch.launch_latency(SYNTHETIC.drop("correlation_id"))
    with pytest.raises(ValueError, match="DataFrame"):
        sch.queue_depth(SYNTHETIC.to_arrow())
    with pytest.raises(ValueError, match="end_ns < start_ns"):
        sch.stream_overlap(SYNTHETIC, pl.DataFrame({"start_ns": [10], "end_ns": [5]}))
    with pytest.raises(ValueError, match="end_ns"):
        sch.stream_overlap(SYNTHETIC, pl.DataFrame({"start_ns": [10]}))
    with pytest.raises(ValueError, match="steps"):
        sch.stream_overlap(SYNTHETIC, "epochs")
    with pytest.raises(ValueError, match="negative"):
        sch.queue_depth(SYNTHETIC.with_columns(pl.lit(-1, dtype=pl.Int64).alias("dur_ns")))


# -- speed ---------------------------------------------------------------------------------------
def test_one_million_events(events):
    ev = events["nw0"]
    span = int((ev["start_ns"] + ev["dur_ns"]).max() - ev["start_ns"].min()) + 1_000_000
    ids = int(ev["correlation_id"].max()) + 1
    copies = -(-1_000_000 // ev.height)
    big = pl.concat([ev.with_columns(pl.col("start_ns") + i * span, pl.col("correlation_id") + i * ids) for i in range(copies)])
    assert big.height >= 1_000_000
    timings = {}
    for name, fn in (("launch_latency", sch.launch_latency), ("queue_depth", sch.queue_depth), ("stream_overlap", sch.stream_overlap)):
        t0 = time.perf_counter()
        out = fn(big)
        timings[name] = time.perf_counter() - t0
        assert out.height > 0
    print("1M events:", {k: f"{v:.2f} s" for k, v in timings.items()})
    assert all(v < 10 for v in timings.values()), timings
    lat = sch.launch_latency(big)
    assert lat.height == copies * sch.launch_latency(ev).height

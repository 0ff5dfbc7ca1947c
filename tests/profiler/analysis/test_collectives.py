"""Collectives on real imported multi-rank traces: what is matched, who arrives last, and
what is left unmatched, against figures computed here from the raw trace events."""

from __future__ import annotations

import gzip
import json
import random

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.analysis import collectives as K
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

DLRM = "traces/more/param-dlrm-8rank"
TRACE_FILTER = "traces/HolisticTraceAnalysis/tests/data/trace_filter"
NCCL_PARSER = "traces/HolisticTraceAnalysis/tests/data/nccl_parser_config"


def _raw(path) -> dict:
    with gzip.open(path) as fh:
        return json.load(fh)


def _nccl_kernels(doc: dict) -> list[dict]:
    return sorted((e for e in doc["traceEvents"] if e.get("cat") == "kernel" and e.get("name", "").startswith("ncclKernel")), key=lambda e: e["ts"])


@pytest.fixture(scope="module")
def dlrm(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dlrm") / "run"
    return analyze(Run.open(import_traces([shared_dir / DLRM], out, progress=False)))


@pytest.fixture(scope="module")
def dlrm_raw(shared_dir) -> dict[int, list[dict]]:
    """Each rank's NCCL kernels, in time order, from the raw JSON."""
    out = {}
    for f in sorted((shared_dir / DLRM).glob("*.json.gz")):
        doc = _raw(f)
        out[doc["distributedInfo"]["rank"]] = _nccl_kernels(doc)
    return out


def test_every_nccl_kernel_of_the_8_rank_job_is_matched(dlrm, dlrm_raw):
    per_rank = {len(k) for k in dlrm_raw.values()}
    assert len(per_rank) == 1  # every rank ran the same collectives
    assert dlrm.collectives.height == per_rank.pop()
    assert dlrm.unmatched_collectives == 0
    assert sorted(dlrm.ranks["rank"].to_list()) == list(range(8))


def test_the_last_rank_of_each_dlrm_collective_is_the_raw_events_latest_start(dlrm, dlrm_raw):
    # The i-th kernel of each kind on every rank is one call; the last to start arrived last.
    calls: dict[tuple[str, int], dict[int, float]] = {}
    for rank, kernels in dlrm_raw.items():
        seen: dict[str, int] = {}
        for k in kernels:
            kind = k["name"].split("_")[1]
            i = seen[kind] = seen.get(kind, -1) + 1
            calls.setdefault((kind, i), {})[rank] = k["ts"]
    expected = sorted((min(ts.values()), max(ts, key=ts.get)) for ts in calls.values())
    got = dlrm.collectives.sort("first_arrival_ns").select("first_arrival_ns", "last_rank").rows()
    assert [last for _, last in got] == [last for _, last in expected]


def test_each_rank_waits_from_its_own_start_to_the_last_start(dlrm, dlrm_raw):
    first = dlrm.collectives.sort("first_arrival_ns")["instance"][0]
    arrivals = dlrm.arrivals.filter(pl.col("instance") == first).sort("rank")
    starts = {rank: kernels_by_order[0]["ts"] for rank, kernels_by_order in dlrm_raw.items()}
    last = max(starts.values())
    expected = [min(last - starts[r], dlrm_raw[r][0]["dur"]) * 1000 for r in sorted(starts)]
    assert arrivals["wait_ns"].to_list() == pytest.approx(expected, abs=1000)


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _minus(spans, cuts) -> float:
    """Length of the union of ``spans`` not covered by ``cuts`` (µs)."""
    total = 0.0
    for a, b in _union(spans):
        covered = sum(max(0.0, min(b, d) - max(a, c)) for c, d in _union(cuts))
        total += b - a - covered
    return total


def test_dlrm_exposed_communication_gets_a_recommendation(dlrm, shared_dir):
    """The job's NCCL kernels not overlapped by compute kernels, over its step time, from the
    raw events (about 37 % of the step): the breakdown's waiting + transfer, and a recommendation."""
    exposed = steps = 0.0
    for f in (shared_dir / DLRM).glob("*.json.gz"):
        ev = _raw(f)["traceEvents"]
        step = next(e for e in ev if e.get("name", "").startswith("ProfilerStep#") and e.get("ph") == "X")
        lo, hi = step["ts"], step["ts"] + step["dur"]
        kernels = [(e["name"].startswith("ncclKernel"), max(e["ts"], lo), min(e["ts"] + e["dur"], hi))
                   for e in ev if e.get("cat") == "kernel" and e["ts"] < hi and e["ts"] + e["dur"] > lo]
        exposed += _minus([(a, b) for is_nccl, a, b in kernels if is_nccl], [(a, b) for is_nccl, a, b in kernels if not is_nccl])
        steps += step["dur"]
    share = dlrm.share(dlrm.breakdown_ns["rank_wait"] + dlrm.breakdown_ns["communication"])
    assert share == pytest.approx(exposed / steps, abs=0.002)
    assert 0.3 < share < 0.45
    rec = next(a for a in dlrm.advice if a.cause == "communication")
    assert rec.idle_share == pytest.approx(share)


def test_every_dlrm_rank_waits_as_long_as_the_raw_kernels_say(dlrm, dlrm_raw):
    """Per rank, the summed wait over every collective: min(last start - own start, own
    kernel time), from the raw kernels."""
    n = len(dlrm_raw[0])
    expected = {r: 0.0 for r in dlrm_raw}
    for i in range(n):
        last = max(k[i]["ts"] for k in dlrm_raw.values())
        for r, k in dlrm_raw.items():
            expected[r] += min(last - k[i]["ts"], k[i]["dur"])
    got = dlrm.arrivals.group_by("rank").agg(pl.col("wait_ns").sum()).sort("rank")
    assert got["wait_ns"].to_list() == pytest.approx([expected[r] * 1000 for r in sorted(expected)], abs=n * 1000)


def test_collectives_that_do_not_overlap_across_ranks_are_reported_not_matched(shared_dir, tmp_path):
    """trace_filter's two sampled ranks keep different subsets of their NCCL kernels: what
    cannot be one call on both ranks (no common instant) is counted as unmatched."""
    report = analyze(Run.open(import_traces([shared_dir / TRACE_FILTER], tmp_path / "run", progress=False)))
    raw = sum(len(_nccl_kernels(_raw(f))) for f in (shared_dir / TRACE_FILTER).glob("*.json.gz"))
    assert report.collectives.height * 2 + report.unmatched_collectives == raw
    assert report.unmatched_collectives > 0 and any("did not overlap" in n for n in report.notes)
    assert not any("lined up" in n for n in report.notes)  # mismatched subsets are not a clock skew
    # Its kernels are all ncclKernel_SendRecv_*: the kinds come from the host calls that launched them.
    assert set(report.collectives["kind"].to_list()) <= {"all_reduce", "all_gather", "all_to_all"}
    for inst in report.collectives.iter_rows(named=True):
        spans = report.arrivals.filter(pl.col("instance") == inst["instance"])
        assert spans["start_ns"].max() <= spans["end_ns"].min()


def test_imported_ranks_with_skewed_clocks_are_lined_up_on_their_collectives(shared_dir, tmp_path, dlrm):
    """Each DLRM rank's clock moved by a seeded 0-5 ms, as hosts without clock sync would
    record it: no call overlaps across ranks as recorded, and lined up on the calls' ends every
    call matches again, each rank waiting what it waited in the job as recorded."""
    assert not any("lined up" in n for n in dlrm.notes)
    rng = random.Random(7)
    skewed = tmp_path / "skewed"
    skewed.mkdir()
    for f in sorted((shared_dir / DLRM).glob("*.json.gz")):
        doc = _raw(f)
        shift_us = rng.randint(0, 5000)
        for e in doc["traceEvents"]:
            if "ts" in e:
                e["ts"] += shift_us
        (skewed / f.name).write_bytes(gzip.compress(json.dumps(doc).encode()))
    report = analyze(Run.open(import_traces([skewed], tmp_path / "run", progress=False)))
    assert report.collectives.height == dlrm.collectives.height and report.unmatched_collectives == 0
    assert any("lined up on their ends" in n for n in report.notes)
    # The calls' ends differ by a few µs between ranks (a shift is the median of them); a skew
    # left in would be off by hundreds to thousands.
    got, want = report.arrivals.sort("instance", "rank"), dlrm.arrivals.sort("instance", "rank")
    assert got["rank"].to_list() == want["rank"].to_list()
    assert (got["wait_ns"] - want["wait_ns"]).abs().max() <= 5_000


def test_kernels_take_group_and_size_from_the_record_param_comms_that_launched_them(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / NCCL_PARSER], tmp_path / "run", progress=False))
    found = K.find(run.events_named(K.ANY_NAME), run.slices.filter(pl.col("kind") == "runtime"))
    all_reduce = found.filter(pl.col("kind") == "all_reduce")
    # The trace's record_param_comms: "In msg nelems" 2049000 of "Float" is 8,196,000 bytes.
    assert 8_196_000 in all_reduce["size_bytes"].to_list()
    assert set(found["group"].to_list()) == {"0"}


@pytest.mark.parametrize("name,kind", [
    ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)", "all_reduce"),
    ("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "reduce_scatter"),
    ("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "all_gather"),
    ("gloo:all_reduce", "all_reduce"),
    ("gloo:broadcast", "broadcast"),
    ("all-reduce.3", "all_reduce"),
    ("CollectiveReduceV2", "all_reduce"),
    ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", "send_recv"),
])
def test_collective_kinds_are_read_from_names(name, kind):
    assert pl.select(K.kind_expr(pl.lit(name))).item() == kind


def test_bus_bandwidth_uses_the_nccl_tests_factor():
    inst = pl.DataFrame({"kind": ["all_reduce", "all_gather"], "n_ranks": [8, 8], "size_bytes": [1_000_000, 1_000_000], "transfer_ns": [1000, 1000]})
    out = K._bandwidth(inst)
    assert out["algbw_gbps"].to_list() == [1000.0, 1000.0]
    assert out["busbw_gbps"].to_list() == pytest.approx([1000 * 2 * 7 / 8, 1000 * 7 / 8])


@pytest.mark.parametrize("name", ["CollectiveReduceV2", "CollectiveGatherV2", "CollectiveBcastSend", "CollectiveBcastRecvV2", "NcclAllReduce"])
def test_tensorflow_collective_ops_are_recognised(name):
    assert pl.select(pl.lit(name).str.contains(K.TF_NAME)).item()


def test_tensorflow_collectives_are_keyed_by_group_and_instance_key():
    # The args a TF 2.21 CollectiveReduceV2 op carries in its XPlane (a recorded MultiWorkerMirroredStrategy job).
    args = pl.Series(['{"step_id":-5772928280107381180,"iter_id":0,"frame_id":0,"instance_key":116,"group_key":1,"collective":0,'
                      '"long_name":"sgd_1/CollectiveReduceV2:CollectiveReduceV2"}'])
    facts = K._args_facts(args)
    assert facts.row(0, named=True) == {"group": "tf group 1", "seq": 116, "size_bytes": None}

"""The host op behind each idle gap, on a real DDP trace whose ~15 ms gaps sit under
``aten::unflatten_dense_tensors``, checked against a brute-force reading of the raw events."""

from __future__ import annotations

import gzip
import json

import numpy as np
import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.analysis import causes as C
from accelscope.analysis.gap_ops import COVER_SHARE, MIN_GAP_NS, driver_ops, with_depth
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

NCCL = "traces/HolisticTraceAnalysis/tests/data/nccl_parser_config/nccl_data.json.gz"


@pytest.fixture(scope="module")
def nccl(shared_dir, tmp_path_factory):
    run = Run.open(import_traces([shared_dir / NCCL], tmp_path_factory.mktemp("nccl") / "run", progress=False))
    return run, analyze(run)


def test_nesting_depth_matches_counting_the_enclosing_ops(nccl):
    run, _ = nccl
    ops = with_depth(driver_ops(run.slices))
    sample = ops.sample(300, seed=1)
    for r in sample.iter_rows(named=True):
        same = ops.filter((pl.col("pid") == r["pid"]) & (pl.col("tid") == r["tid"]))
        s, e = same["start_ns"].to_numpy(), same["end_ns"].to_numpy()
        enclosing = int(((s <= r["start_ns"]) & (e >= r["end_ns"])).sum()) - 1  # itself
        # ties (an op starting and ending with its parent) count the outer one first
        assert r["depth"] <= enclosing and r["depth"] >= enclosing - int(((s == r["start_ns"]) & (e == r["end_ns"])).sum()) + 1


def test_the_longest_gaps_sit_under_the_op_the_raw_events_say(nccl, shared_dir):
    _, report = nccl
    doc = json.loads(gzip.open(shared_dir / NCCL).read())
    base_us = doc["baseTimeNanoseconds"] / 1000  # Kineto's ts are µs after this
    raw = [e for e in doc["traceEvents"] if e.get("cat") == "cpu_op" and e.get("ph") == "X"]
    longest = report.gaps.filter(pl.col("dur_ns") >= MIN_GAP_NS).sort("dur_ns", descending=True).head(3)
    for g in longest.iter_rows(named=True):
        gs, ge = g["start_ns"] / 1000 - base_us, g["end_ns"] / 1000 - base_us  # back to the trace's µs
        cover = [(e, min(e["ts"] + e["dur"], ge) - max(e["ts"], gs)) for e in raw if e["ts"] < ge and e["ts"] + e["dur"] > gs]
        covering = [(e, o) for e, o in cover if o >= COVER_SHARE * (ge - gs) - 1e-3]
        depth = {id(e): sum(1 for p, _ in cover if p is not e and p["tid"] == e["tid"] and p["ts"] <= e["ts"] and p["ts"] + p["dur"] >= e["ts"] + e["dur"]) for e, _ in covering}
        expected = max(covering, key=lambda eo: depth[id(eo[0])])[0]["name"]
        assert g["host_op"] == expected == "aten::unflatten_dense_tensors"


def test_the_cause_table_and_the_advice_name_the_host_op(nccl):
    _, report = nccl
    assert report.host_ops_of(C.HOST_COMPUTE)[0][0] == "aten::unflatten_dense_tensors"
    assert report.to_dict()["idle_by_cause"][C.HOST_COMPUTE]["host_ops"][0]["name"] == "aten::unflatten_dense_tensors"
    advice = next(a for a in report.advice if a.cause == C.HOST_COMPUTE)
    assert "mostly under aten::unflatten_dense_tensors" in advice.evidence


def test_short_gaps_carry_no_host_op(nccl):
    _, report = nccl
    short = report.gaps.filter(pl.col("dur_ns") < MIN_GAP_NS)
    assert short.height and short["host_op"].null_count() == short.height
    assert np.all(report.gaps.filter(pl.col("host_op").is_not_null())["host_op_ns"].to_numpy() > 0)

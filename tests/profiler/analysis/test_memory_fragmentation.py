"""Fragmentation (analysis/memory.py ``fragmentation``) and memory advice (memory_advice.py)
on a real multi-step CUDA training trace from HTA's test data, whose allocator events carry
the caching allocator's totals, against figures computed here from the raw JSON."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.analysis import memory_advice as MA
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

TRACE = "traces/HolisticTraceAnalysis/tests/data/df_index_resolver/df_index_resolver.json.gz"


@pytest.fixture(scope="module")
def trace(shared_dir, tmp_path_factory):
    path = shared_dir / TRACE
    if not path.exists():
        pytest.skip(f"{TRACE} is not in ../shared")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        events = json.load(fh)["traceEvents"]
    report = analyze(Run.open(import_traces([path], tmp_path_factory.mktemp("frag") / "run", progress=False)))
    return events, report


def _cuda(report) -> dict:
    return report.memory.filter(pl.col("device") == "cuda:1").row(0, named=True)


def test_fragmentation_is_reserved_less_allocated_when_reserved_peaked(trace):
    events, report = trace
    mem = sorted(((e["ts"], e["args"]) for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 1), key=lambda r: r[0])
    top = max(a["Total Reserved"] for _, a in mem)
    first = next(a for _, a in mem if a["Total Reserved"] == top)
    assert _cuda(report)["fragmentation_bytes"] == first["Total Reserved"] - first["Total Allocated"]


def test_the_trend_is_the_least_squares_slope_at_the_steps_ends(trace):
    events, report = trace
    mem = sorted(((e["ts"], e["args"]["Total Reserved"] - e["args"]["Total Allocated"]) for e in events
                  if e.get("name") == "[memory]" and e["args"].get("Device Type") == 1), key=lambda r: r[0])
    ends = sorted((int(e["name"].split("#")[1]), e["ts"] + e["dur"]) for e in events if e.get("name", "").startswith("ProfilerStep#") and e.get("ph") == "X")
    points = [(step, [g for ts, g in mem if ts <= end][-1]) for step, end in ends if any(ts <= end for ts, _ in mem)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    assert _cuda(report)["fragmentation_bytes_per_step"] == pytest.approx(slope, abs=1)


def test_a_device_with_room_gets_no_memory_advice(trace):
    _, report = trace
    assert _cuda(report)["peak_share"] < 0.85
    assert not [a for a in report.advice if a.cause.startswith("memory_") and a.cause != "memory_leak"]


def test_a_full_device_is_advised_expandable_segments_freeing_its_fragmentation(trace):
    _, report = trace
    full = report.memory.with_columns(peak_share=pl.lit(0.95))
    advice = MA.memory_advice(full, report.memory_categories, 1e6, False)
    frag = [a for a in advice if a.cause == MA.MEMORY_FRAGMENTATION]
    assert len(frag) == 1 and frag[0].frees_bytes == _cuda(report)["fragmentation_bytes"]
    assert "expandable_segments:True" in frag[0].text


def test_activation_advice_frees_what_the_activations_held(trace, monkeypatch):
    _, report = trace
    monkeypatch.setattr(MA, "ACTIVATION_ADVICE_SHARE", 0.1)
    held = report.categories_at_peak(_cuda(report)["rank"], "cuda:1")
    advice = [a for a in MA.memory_advice(report.memory.with_columns(peak_share=pl.lit(0.95)), report.memory_categories, 1e6, False)
              if a.cause == MA.MEMORY_ACTIVATIONS]
    act = held["activation"]
    assert sorted(a.frees_bytes for a in advice) == sorted([act, (act + held.get("input", 0)) // 2, act // 2])


def test_memory_advice_is_in_the_json_with_its_bytes(trace):
    _, report = trace
    advice = MA.memory_advice(report.memory.with_columns(peak_share=pl.lit(0.95)), report.memory_categories, 1e6, False)
    document = advice[0].to_dict()
    assert document["frees_bytes"] == advice[0].frees_bytes and document["idle_share"] == 0

"""Every real trace in ../shared through everything a user runs on it: import, analyze, the
JSON report, the text report at 80 columns and the HTML report (which draws the dashboard's
figures from the same data layer). No crash, no share of one device over 100 %, and no
projection beyond what the trace supports."""

from __future__ import annotations

import io
import json

import pytest

from accelscope.analysis import analyze
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run
from tests.conftest import SHARED, shared_sources

# Directories that are one multi-rank job; every other trace file is a run of its own.
EPS = 1e-6
NOT_PROFILER_TRACES = ("traces/HolisticTraceAnalysis/tests/data/execution_trace/benchmark_simple_add_et.json.gz",)  # an execution trace
SOURCES = shared_sources(exclude=NOT_PROFILER_TRACES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep")


def _import(shared: str, tmp) -> Run:
    out = tmp / shared.replace("/", "__")
    if not out.exists():
        import_traces([SHARED / shared], out, progress=False)
    return Run.open(out)


@pytest.mark.skipif(not SOURCES, reason=f"real trace data not found at {SHARED}")
@pytest.mark.parametrize("source", SOURCES)
def test_every_shared_trace_imports_analyses_and_renders(source, runs):
    from rich.console import Console

    from accelscope.dashboard.report import build_report
    from accelscope.text import print_report

    run = _import(source, runs)
    report = analyze(run)
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["step_count"] > 0
    buf = io.StringIO()
    print_report(report, console=Console(file=buf, width=80, force_terminal=False))
    lines = buf.getvalue().splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert not [h for h in lines if h.startswith("┃") and "…" in h], "a table header squeezed at 80 columns"
    assert build_report(run.path).startswith("<!DOCTYPE html>")


@pytest.mark.skipif(not SOURCES, reason=f"real trace data not found at {SHARED}")
@pytest.mark.parametrize("source", SOURCES)
def test_no_share_of_one_device_exceeds_the_whole(source, runs):
    doc = analyze(_import(source, runs)).to_dict()
    shares = [doc["busy_share"], doc["idle_share"], doc["input_wait_share"]]
    shares += [d["busy_share"] for d in doc["devices"] if d.get("busy_share") is not None]
    shares += [k["share_of_step_time"] for k in doc["top_kernels"] + doc["top_ops"]]
    assert all(0 <= s <= 1 + EPS for s in shares), [s for s in shares if not 0 <= s <= 1 + EPS]


@pytest.mark.skipif(not SOURCES, reason=f"real trace data not found at {SHARED}")
@pytest.mark.parametrize("source", SOURCES)
def test_no_projection_exceeds_its_bound(source, runs):
    report = analyze(_import(source, runs))
    busy_per_step = report.busy_share * report.mean_step_ns
    for rec in report.advice:
        if rec.projected_step_ns is None:
            assert rec.projection, "a withheld projection says why"
            continue
        assert rec.projection
        assert rec.projected_step_ns >= busy_per_step * (1 - EPS) or rec.cause == "rank_wait"
        assert rec.projected_speedup <= 1 / (1 - rec.idle_share) + EPS


def test_the_sweep_finds_the_shared_traces():
    if not SOURCES:
        pytest.skip(f"real trace data not found at {SHARED}")
    assert len(SOURCES) >= 40  # every file of ../shared but the execution trace (not a profiler trace)

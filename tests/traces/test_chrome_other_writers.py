"""Chrome traces written by a tool other than Kineto, from real captures: XProf's trace viewer
JSON (``displayTimeUnit: "ns"``, slices without categories, instants, metadata) of the real
JAX capture in ../shared, converted by XProf itself. accelscope's XPlane reader reads the
same capture straight from the protobuf, so the two imports can be checked against each
other without any figure taken from accelscope."""

import json
import shutil
from collections import Counter

import pytest

from accelscope.analysis import analyze
from accelscope.traces import schema as S
from accelscope.traces.formats import Source, by_name
from accelscope.traces.importer import import_traces
from accelscope.traces.kineto import read_kineto
from accelscope.traces.run import Run

JAX_CPU = "xplane/local_cpu_jax0102_steptrace.xplane.pb"
# XProf's own rewrites of the capture (not slices of the protobuf): its step marker names
# and the regions it assembles from ThreadpoolListener start/stop instants.
XPROF_MADE = ("train ", "ThreadpoolListener::Region")


@pytest.fixture(scope="module")
def xprof_json(shared_dir, tmp_path_factory):
    """The trace viewer JSON XProf writes for the JAX capture (converted from a copy: XProf
    writes caches beside its input)."""
    raw_to_tool_data = pytest.importorskip("xprof.convert.raw_to_tool_data", reason="xprof (dev extra) converts the capture")
    work = tmp_path_factory.mktemp("xprof")
    copy = work / "capture.xplane.pb"
    shutil.copy(shared_dir / JAX_CPU, copy)
    data = raw_to_tool_data.xspace_to_tool_data([str(copy)], "trace_viewer", {})[0]
    path = work / "trace_viewer.json"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_xprof_writes_a_generic_chrome_trace(xprof_json):
    doc = json.loads(xprof_json.read_text())
    phases = Counter(e.get("ph") for e in doc["traceEvents"])
    assert doc["displayTimeUnit"] == "ns" and phases["X"] > 50 and phases["i"] > 0 and phases["M"] > 0
    assert not any("cat" in e for e in doc["traceEvents"]), "no Kineto categories"


@pytest.mark.parametrize("stream", [False, True])
def test_xprof_json_slices_are_the_slices_of_the_capture(shared_dir, xprof_json, stream):
    """Every complete slice and instant XProf wrote (µs, although displayTimeUnit says ns) is
    a slice the XPlane reader finds in the protobuf: same name, duration (0 for an instant)
    and start relative to the first."""
    doc = json.loads(xprof_json.read_text())
    got = read_kineto(xprof_json, stream=stream, chunk_bytes=2048).events
    assert got.num_rows == sum(e.get("ph") in ("X", "i") for e in doc["traceEvents"])
    assert sorted(n for n, d in zip(got.column("name").to_pylist(), got.column("dur_ns").to_pylist()) if d == 0 and n.startswith("ThreadpoolListener")) == sorted(
        e["name"] for e in doc["traceEvents"] if e.get("ph") == "i")
    xplane = by_name("xplane").read(Source(shared_dir / JAX_CPU, "xplane"), None).events

    def slices(table):
        first = min(table.column("start_ns").to_pylist())
        return Counter(zip(table.column("name").to_pylist(), table.column("dur_ns").to_pylist(), (s - first for s in table.column("start_ns").to_pylist())))

    from_json = slices(got)
    own = Counter({k: n for k, n in from_json.items() if not k[0].startswith(XPROF_MADE)})
    assert sum(own.values()) >= 50 and not own - slices(xplane)
    steps = sorted(d for (name, d, _), n in from_json.items() if name.startswith("train "))
    xplane_steps = sorted(d for k, d in zip(xplane.column("kind").to_pylist(), xplane.column("dur_ns").to_pylist()) if k == S.STEP)
    assert len(steps) == 3 and steps == xplane_steps, "XProf's 'train N' are the capture's steps"


def test_xprof_json_threads_and_processes_are_named(xprof_json):
    doc = json.loads(xprof_json.read_text())
    t = read_kineto(xprof_json)
    named = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"] if e.get("ph") == "M" and e["name"] == "thread_name"}
    assert {(th["pid"], th["tid"]): th["name"] for th in t.threads} == named
    assert t.processes == {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e.get("ph") == "M" and e["name"] == "process_name"}


def test_a_trace_without_accelerator_activity_says_so_in_the_analysis(xprof_json, tmp_path):
    run = Run.open(import_traces([xprof_json], tmp_path / "r", progress=False))
    assert set(run.events["device"].to_list()) == {"cpu"} and run.meta["json_form"] == "object"
    assert run.meta["framework"]["name"] == "none", "XProf wrote it from a JAX capture: not torch"
    assert run.meta["clock"]["name"] == "relative_ns", "XProf's ts count from the capture's start"
    report = analyze(run)
    assert not report.has_device
    assert any("no device activity recorded" in note for note in report.notes)

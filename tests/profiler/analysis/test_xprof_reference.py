"""accelscope's XPlane figures checked against XProf (PyPI ``xprof``, TensorFlow-free), the
reference reader of ``.xplane.pb`` files (docs/analysis.md, "Checked against XProf").

For every xplane in ../shared: XProf's ``overview_page`` and ``input_pipeline_analyzer``
(run on a copy: XProf writes caches beside its input) against accelscope's
``analyze(...)``. Compared where the definitions match, within 2 percentage points (step
times within 2 %):

* step time, step by step, matched by step number (XProf's "train N" = accelscope's
  ``ProfilerStep#N``, both from the same host root step markers);
* input share of each step: XProf's input ("infeed") time / step time against
  accelscope's ``input_wait_ns`` / ``dur_ns``;
* the device duty cycle (XProf's share of the profile each TPU core is busy, averaged over
  cores) against accelscope's ``devices[].capture_busy_share`` (each device's busy share
  of its whole capture, averaged over devices): on a trace without step markers XProf's
  step table is empty, so that is the device figure both give alike;
* where accelscope's iterations are the runs of an XLA module (no step markers: the TPU
  inference trace), the device compute share of those iterations: XProf's time in that
  program's ops per core (``op_profile``, by program, over ``device_core_count`` cores)
  against accelscope's busy time per device, both over accelscope's iterations' time.

XProf's numbers are the expectation; nothing is copied from accelscope's output.
``python -m tests.profiler.analysis.test_xprof_reference`` prints the docs table.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from accelscope.analysis import analyze
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run
from tests.conftest import SHARED

PP = 0.02  # 2 percentage points
STEP_REL = 0.02  # step times within 2 %


def _xplanes() -> list[str]:
    found = sorted(SHARED.glob("xplane/*.xplane.pb")) + sorted(SHARED.glob("traces/more/tracelens/*.xplane.pb"))
    return [str(p.relative_to(SHARED)) for p in found]


XPLANES = _xplanes() if SHARED.is_dir() else []


def xprof_tool(path: Path, tool: str, work: Path) -> list[dict[str, Any]]:
    """XProf's tables for one tool, run on a copy of ``path`` in ``work``."""
    from xprof.convert import raw_to_tool_data

    work.mkdir(parents=True, exist_ok=True)
    copy = work / path.name
    if not copy.exists():
        shutil.copy(path, copy)
    out = raw_to_tool_data.xspace_to_tool_data([str(copy)], tool, {})
    data = out[0] if isinstance(out, tuple) else out
    doc = json.loads(data)
    return [t for t in (doc if isinstance(doc, list) else [doc]) if isinstance(t, dict)]


def _table(tables: list[dict[str, Any]], first_col: str) -> dict[str, Any] | None:
    return next((t for t in tables if t.get("cols") and t["cols"][0].get("id") == first_col), None)


def _rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    ids = [c["id"] for c in table["cols"]]
    return [dict(zip(ids, (c.get("v") if isinstance(c, dict) else c for c in r["c"]))) for r in table.get("rows", [])]


def _pct(text: str | None) -> float | None:
    return None if text in (None, "") else float(str(text).rstrip("%")) / 100


def xprof_figures(path: Path, work: Path) -> dict[str, Any]:
    """XProf's steps ({number: (step ms, input ms)}) and device duty cycle (None when not given)."""
    overview = xprof_tool(path, "overview_page", work / "overview")
    pipeline = xprof_tool(path, "input_pipeline_analyzer", work / "input")
    analysis = overview[0].get("p", {}) if overview else {}
    steps: dict[int, tuple[float, float]] = {}
    table = _table(pipeline, "stepnum")
    for row in _rows(table) if table else []:
        number = str(row["stepnum"]).split()[-1]
        if number.isdigit() and "stepTimeMs" in row:
            steps[int(number)] = (float(row["stepTimeMs"]), float(row.get("infeedTimeMs") or 0.0))
    hosts = _table(overview, "host_id")
    cores = int((hosts or {}).get("p", {}).get("device_core_count") or 0)
    return {"steps": steps, "duty_cycle": _pct(analysis.get("device_duty_cycle_percent")) if analysis.get("device_duty_cycle_percent") not in (None, "0.0%") else None,
            "hardware": (table or {}).get("p", {}).get("hardware_type"), "cores": cores, "work": work}


def xprof_program_ms(work: Path, path: Path) -> dict[str, float]:
    """XProf's device time in each program's ops, summed over cores (op_profile, by program)."""
    from xprof.convert import raw_to_tool_data

    work.mkdir(parents=True, exist_ok=True)
    copy = work / path.name
    if not copy.exists():
        shutil.copy(path, copy)
    out = raw_to_tool_data.xspace_to_tool_data([str(copy)], "op_profile", {})
    doc = json.loads(out[0] if isinstance(out, tuple) else out)
    return {c["name"]: c["metrics"]["rawTime"] / 1e9 for c in (doc.get("byProgram") or {}).get("children", [])}


def accelscope_figures(path: Path, work: Path) -> dict[str, Any]:
    run_dir = work / "run"
    if not run_dir.exists():
        import_traces([path], run_dir, progress=False)
    run = Run.open(run_dir)
    report = analyze(run)
    steps = report.steps.filter(report.steps["name"].str.starts_with("ProfilerStep#"))
    numbered = {int(n.split("#")[1]): (d / 1e6, w / 1e6) for n, d, w in zip(steps["name"], steps["dur_ns"], steps["input_wait_ns"])}
    doc = report.to_dict()
    capture = [d["capture_busy_share"] for d in doc["devices"] if d.get("capture_busy_share") is not None]
    modules = {n.partition(": ")[2] for n in report.steps["name"] if n.startswith("iteration ") and ": " in n}
    devices = [d for d in doc["devices"] if d.get("busy_us") is not None]
    iterations_ms = float(report.steps["dur_ns"].sum()) / 1e6
    names = report.steps["name"]
    unit = "iterations" if names.str.starts_with("iteration ").all() else "equal windows" if names.str.starts_with("window ").all() else "steps"
    return {"steps": numbered, "unit": unit, "busy_share": doc["busy_share"], "module": modules.pop() if len(modules) == 1 else None,
            "iterations_ms": iterations_ms, "busy_ms_per_device": sum(d["busy_us"] for d in devices) / 1e3 / len(devices) if devices else None,
            "capture_busy_share": sum(capture) / len(capture) if capture else None, "has_device": doc["has_device"], "step_count": doc["step_count"],
            "mean_step_ms": doc["mean_step_us"] / 1e3, "notes": doc.get("notes") or []}


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    pytest.importorskip("xprof.convert.raw_to_tool_data", reason="xprof (the XProf reference) is not installed")
    cache: dict[str, tuple[dict, dict]] = {}

    def get(rel: str) -> tuple[dict, dict]:
        if rel not in cache:
            work = tmp_path_factory.mktemp(Path(rel).name.split(".")[0][:40])
            cache[rel] = (xprof_figures(SHARED / rel, work), accelscope_figures(SHARED / rel, work))
        return cache[rel]

    return get


@pytest.mark.skipif(not XPLANES, reason=f"real trace data not found at {SHARED}")
@pytest.mark.parametrize("rel", XPLANES)
def test_step_times_and_input_share_match_xprof(rel, shared_dir, figures):
    ref, ours = figures(rel)
    matched = sorted(set(ref["steps"]) & set(ours["steps"]))
    if not ref["steps"]:
        pytest.skip(f"XProf measures no step in {rel} (its step table is empty)")
    assert matched, f"no step number in common: XProf {sorted(ref['steps'])}, accelscope {sorted(ours['steps'])}"
    # XProf keeps the steps that are whole in the profile; accelscope's are a superset.
    assert len(matched) == len(ref["steps"])
    for n in matched:
        (x_ms, x_in), (a_ms, a_in) = ref["steps"][n], ours["steps"][n]
        assert a_ms == pytest.approx(x_ms, rel=STEP_REL), f"step {n}"
        assert a_in / a_ms == pytest.approx(x_in / x_ms, abs=PP), f"step {n} input share"


@pytest.mark.skipif(not XPLANES, reason=f"real trace data not found at {SHARED}")
@pytest.mark.parametrize("rel", XPLANES)
def test_device_busy_share_matches_xprof_duty_cycle(rel, shared_dir, figures):
    ref, ours = figures(rel)
    if ref["duty_cycle"] is None:
        pytest.skip(f"XProf gives no device duty cycle for {rel} (hardware: {ref['hardware']})")
    assert ours["has_device"] and ours["capture_busy_share"] is not None
    assert ours["capture_busy_share"] == pytest.approx(ref["duty_cycle"], abs=PP)


@pytest.mark.skipif(not XPLANES, reason=f"real trace data not found at {SHARED}")
@pytest.mark.parametrize("rel", XPLANES)
def test_device_compute_share_of_module_iterations_matches_xprof_program_time(rel, shared_dir, figures):
    ref, ours = figures(rel)
    if ours["module"] is None:
        pytest.skip(f"accelscope's windows of {rel} are not the runs of an XLA module")
    programs = xprof_program_ms(ref["work"] / "op_profile", SHARED / rel)
    matched = [ms for name, ms in programs.items() if name.split("(")[0] == ours["module"]]
    assert len(matched) == 1 and ref["cores"] > 0, f"XProf's programs: {sorted(programs)}"
    xprof_share = matched[0] / ref["cores"] / ours["iterations_ms"]
    assert ours["busy_ms_per_device"] / ours["iterations_ms"] == pytest.approx(xprof_share, abs=PP)


def _print_table() -> None:  # pragma: no cover - the docs table
    import tempfile

    print("| file | figure | XProf | accelscope |\n|---|---|---|---|")
    for rel in XPLANES:
        work = Path(tempfile.mkdtemp())
        ref, ours = xprof_figures(SHARED / rel, work), accelscope_figures(SHARED / rel, work)
        programs = xprof_program_ms(work / "op_profile", SHARED / rel) if ours["module"] else {}
        name = Path(rel).name
        if ref["steps"]:
            x_ms = sum(v[0] for v in ref["steps"].values()) / len(ref["steps"])
            a = [ours["steps"][n] for n in ref["steps"] if n in ours["steps"]]
            a_ms = sum(v[0] for v in a) / len(a) if a else float("nan")
            x_in = sum(v[1] for v in ref["steps"].values()) / sum(v[0] for v in ref["steps"].values())
            a_in = sum(v[1] for v in a) / sum(v[0] for v in a) if a else float("nan")
            print(f"| {name} | mean step time, XProf's {len(ref['steps'])} steps | {x_ms:.3f} ms | {a_ms:.3f} ms |")
            print(f"| {name} | input share of step | {x_in:.1%} | {a_in:.1%} |")
        else:
            print(f"| {name} | step time | none (no step marker) | {ours['mean_step_ms']:.3f} ms over {ours['step_count']} {ours['unit']} |")
        for program, ms in programs.items():
            if program.split("(")[0] == ours["module"]:
                print(f"| {name} | device compute share of the {ours['module']} iterations | {ms / ref['cores'] / ours['iterations_ms']:.3%} "
                      f"(program time per core) | {ours['busy_ms_per_device'] / ours['iterations_ms']:.3%} (busy per device) |")
        if ref["duty_cycle"] is not None:
            print(f"| {name} | device busy share of the capture | {ref['duty_cycle']:.1%} (duty cycle) | {ours['capture_busy_share']:.1%} |")
            print(f"| {name} | device busy share of step | not given (no steps) | {ours['busy_share']:.1%} over {ours['step_count']} {ours['unit']} |")
        elif ours["has_device"]:
            print(f"| {name} | device busy share of step | not given (no steps) | {ours['busy_share']:.1%} over {ours['step_count']} {ours['unit']} |")


if __name__ == "__main__":  # pragma: no cover
    _print_table()
    sys.exit(0)

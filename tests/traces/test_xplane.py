"""XSpace (.xplane.pb) importer: the real TF / Keras / JAX / TPU traces in ../shared/xplane,
plus small XSpaces built here for what those files do not hold (GPU streams, counters,
device step lines, a trace without a clock anchor)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf", reason="the protobuf package reads .xplane.pb files")

from accelscope.errors import AccelscopeError  # noqa: E402
from accelscope.traces import schema as S  # noqa: E402
from accelscope.traces.xplane import Imported, messages, read_xplane  # noqa: E402

CUSTOM_LOOP = "xplane/local_cpu_tf221_customloop_slowmap.xplane.pb"
KERAS_FIT = "xplane/local_cpu_tf221_kerasfit_slowmap.xplane.pb"
JAX_CPU = "xplane/local_cpu_jax0102_steptrace.xplane.pb"
TPU = "xplane/xprof_8c188e1a__tpu_inference_2.xplane.pb"


def _rows(imp: Imported) -> list[dict]:
    return imp.events.to_pylist()


def _union_within(intervals, lo, hi) -> int:
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted((max(s, lo), min(e, hi)) for s, e in intervals if e > lo and s < hi):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0)


def _input_share(rows) -> tuple[float, list[float]]:
    steps = [(r["start_ns"], r["start_ns"] + r["dur_ns"]) for r in rows if r["kind"] == "step"]
    waits = [(r["start_ns"], r["start_ns"] + r["dur_ns"]) for r in rows if r["kind"] == "input_wait"]
    per_step = [_union_within(waits, s, e) / (e - s) for s, e in steps]
    total = sum(_union_within(waits, s, e) for s, e in steps) / sum(e - s for s, e in steps)
    return total, per_step


def _epoch_year(ns: int) -> int:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).year


# --------------------------------------------------------------------------- real traces
def test_every_shared_xplane_imports_with_the_schema_and_named_lanes(shared_dir):
    files = sorted((shared_dir / "xplane").glob("*.xplane.pb"))
    assert len(files) >= 4
    for path in files:
        imp = read_xplane(path, rank=3)
        assert imp.events.schema.equals(S.EVENT_SCHEMA), path.name
        assert imp.counters.schema.equals(S.COUNTER_SCHEMA), path.name
        assert imp.events.num_rows > 0
        rows = _rows(imp)
        assert {r["kind"] for r in rows} <= set(S.KINDS)
        assert all(r["rank"] == 3 and r["dur_ns"] >= 0 for r in rows)
        assert all(json.loads(r["args"]) is not None for r in rows if r["args"])
        meta = imp.meta
        assert meta["source"] == {"format": "xplane", "path": str(path)}
        assert meta["framework"]["name"] in ("tensorflow", "jax")
        assert meta["devices"][0] == {**meta["devices"][0], "id": "cpu", "kind": "cpu"}
        named = {(t["pid"], t["tid"]) for t in meta["threads"]}
        assert {(r["pid"], r["tid"]) for r in rows if r["device"] == "cpu"} <= named, "every host lane is named"
        assert all(r["stream"] is None for r in rows if r["device"] == "cpu")
        # Every file here carries a Task Environment anchor: times are Unix epoch ns.
        assert meta["clock"]["name"] == "unix_epoch_ns"
        assert all(2025 <= _epoch_year(r["start_ns"]) <= 2027 for r in rows)
        assert meta["start_ns"] <= min(r["start_ns"] for r in rows)
        # (JAX's own stop_trace call runs a little past profile_stop_time.)
        assert max(r["start_ns"] + r["dur_ns"] for r in rows) <= meta["end_ns"] + 10_000_000


def test_tf_custom_loop_has_train_steps_and_input_waits_covering_them(shared_dir):
    imp = read_xplane(shared_dir / CUSTOM_LOOP)
    rows = _rows(imp)
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["name"] for r in steps] == [f"ProfilerStep#{i}" for i in range(12)], "step_num of train(_r=1)"
    assert all(json.loads(r["args"])["xplane_name"] == "train" for r in steps)
    assert imp.meta["step_source"].startswith("host root")
    assert imp.meta["framework"] == {"name": "tensorflow"}
    waits = [r for r in rows if r["kind"] == "input_wait"]
    assert {r["name"] for r in waits} == {"IteratorGetNextOp::DoCompute"}
    assert len(waits) == 12
    # "EagerLocalExecute: IteratorGetNext" wraps the wait; it is not a second wait.
    assert {r["kind"] for r in rows if r["name"] == "EagerLocalExecute: IteratorGetNext"} == {"cpu_op"}
    total, per_step = _input_share(rows)
    assert total > 0.8, "XProf: 99.6 % of step time waits for input"
    assert min(per_step) > 0.9
    # tf.data stages stay CPU work, most of it on the tf_data_* thread lanes (the
    # consumer side, Iterator::Root/Prefetch, runs inside the wait on the python thread).
    names = {(t["pid"], t["tid"]): t["name"] for t in imp.meta["threads"]}
    iter_rows = [r for r in rows if r["name"].startswith("Iterator::")]
    assert iter_rows and {r["kind"] for r in iter_rows} == {"cpu_op"}
    on_tf_data = [r for r in iter_rows if names[(r["pid"], r["tid"])].startswith("tf_data_")]
    assert len(on_tf_data) > 0.9 * len(iter_rows)
    assert any(json.loads(r["args"] or "{}").get("long_name", "").startswith("Iterator::Root::") for r in on_tf_data)
    # Epoch ns: anchor + line.timestamp_ns + offset_ps // 1000, ns precision kept.
    assert 2025 <= _epoch_year(steps[0]["start_ns"]) <= 2027
    assert steps[0]["start_ns"] % 1000 != 0 or steps[1]["start_ns"] % 1000 != 0


def test_keep_steps_false_leaves_step_markers_as_annotations(shared_dir):
    imp = read_xplane(shared_dir / CUSTOM_LOOP, keep_steps=False)
    rows = _rows(imp)
    assert not [r for r in rows if r["kind"] == "step"]
    markers = [r for r in rows if r["kind"] == "annotation" and r["name"] == "train"]
    assert len(markers) == 12 and "step_source" not in imp.meta


def test_keras_fit_steps_come_from_profiled_batch(shared_dir):
    imp = read_xplane(shared_dir / KERAS_FIT)
    rows = _rows(imp)
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["name"] for r in steps] == [f"ProfilerStep#{i}" for i in range(1, 5)], "Keras step_num 1..4"
    assert all(json.loads(r["args"])["xplane_name"] == "Profiled batch" for r in steps)
    assert "Profiled batch" in imp.meta["step_source"]
    waits = [r for r in rows if r["kind"] == "input_wait"]
    assert len(waits) == 4
    names = {(t["pid"], t["tid"]): t["name"] for t in imp.meta["threads"]}
    assert {names[(r["pid"], r["tid"])].split("/")[0] for r in waits} == {"tf_data_iterator_get_next"}
    total, _ = _input_share(rows)
    assert total > 0.8


def test_jax_step_trace_annotation_gives_steps(shared_dir):
    imp = read_xplane(shared_dir / JAX_CPU)
    rows = _rows(imp)
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["name"] for r in steps] == ["ProfilerStep#0", "ProfilerStep#1", "ProfilerStep#2"]
    assert imp.meta["framework"]["name"] == "jax" and imp.meta["framework"]["version"] == "0.10.2"
    assert any(r["kind"] == "python" and r["name"].startswith("$") for r in rows)
    # Work launched in a step falls inside it.
    pjit = [r for r in rows if r["name"] == "PjitFunction(<lambda>)"]
    for r in pjit:
        assert any(s["start_ns"] <= r["start_ns"] and r["start_ns"] + r["dur_ns"] <= s["start_ns"] + s["dur_ns"]
                   for s in steps)


def test_tpu_trace_has_kernels_and_module_annotations_on_four_chips(shared_dir):
    imp = read_xplane(shared_dir / TPU)
    rows = _rows(imp)
    tpus = [d for d in imp.meta["devices"] if d["kind"] == "tpu"]
    assert [d["id"] for d in tpus] == ["tpu:0", "tpu:1", "tpu:2", "tpu:3"]
    assert all(d["name"] == "TPU v6 Lite" and d["peak_teraflops_per_second"] == 918.0 for d in tpus)
    for dev in ("tpu:0", "tpu:1", "tpu:2", "tpu:3"):
        kernels = [r for r in rows if r["device"] == dev and r["kind"] == "kernel"]
        assert len(kernels) > 1000
        assert {json.loads(r["args"])["line"] for r in kernels} == {"XLA Ops"}
        modules = [r["name"] if r["kind"] == "annotation" else json.loads(r["args"])["xplane_name"] for r in rows
                   if r["device"] == dev and r["kind"] in ("annotation", "step") and json.loads(r["args"])["line"] == "XLA Modules"]
        assert sum(n.startswith("jit_f(") for n in modules) == 100
        assert all(r["stream"] is not None and r["pid"] == int(dev[-1]) for r in kernels)
    # TPU op names are the display names; the HLO text is kept.
    op = next(r for r in rows if r["kind"] == "kernel" and r["name"] == "broadcast.2")
    args = json.loads(op["args"])
    assert args["long_name"].startswith("%broadcast.2 = ") and args["hlo_category"] == "broadcast"
    # No step markers in this inference trace: no steps, but iterations, the runs of the jitted
    # function on the first chip (test_tpu_iterations_are_the_runs_of_its_jitted_module); the
    # others' stay annotations.
    assert {r["device"] for r in rows if r["kind"] == "step"} == {"tpu:0"}
    assert imp.meta["steps"] == 0 and imp.meta["iterations"] == 100
    assert imp.meta["framework"]["name"] == "jax"
    # Host and device share the clock: the first module on tpu:0 starts just after a host Execute.
    first_module = min(r["start_ns"] for r in rows if r["device"] == "tpu:0" and r["name"].startswith("jit_"))
    executes = [r["start_ns"] for r in rows if r["name"] == "TfrtTpuLoadedExecutable::Execute"]
    assert 0 < first_module - max(s for s in executes if s <= first_module) < 5_000_000


def test_gzipped_xplane_reads_the_same(shared_dir, tmp_path):
    src = shared_dir / JAX_CPU
    gz = tmp_path / "trace.xplane.pb.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    assert read_xplane(gz).events.equals(read_xplane(src).events)


# --------------------------------------------------------------------------- errors
def _error(path) -> str:
    with pytest.raises(AccelscopeError) as info:
        read_xplane(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_missing_empty_and_corrupt_files_give_one_line_errors(shared_dir, tmp_path):
    assert "No such file" in _error(tmp_path / "missing.xplane.pb")
    empty = tmp_path / "empty.xplane.pb"
    empty.write_bytes(b"")
    assert "empty" in _error(empty)
    # A real trace that went through a text editor: UTF-8 decoding with replacement.
    mangled = tmp_path / "mangled.xplane.pb"
    text = (shared_dir / CUSTOM_LOOP).read_bytes().decode("utf-8", errors="replace")
    mangled.write_bytes(text.encode("utf-8"))
    assert "not an XSpace protobuf" in _error(mangled)
    assert "directory" in _error(tmp_path).lower()


def test_valid_protobuf_without_events_is_an_error(tmp_path):
    m = messages()
    space = m.XSpace(hostnames=["h"])
    env = space.planes.add(name="Task Environment")
    env.stat_metadata[1].name = "profile_start_time"
    env.stats.add(metadata_id=1, uint64_value=1_760_000_000_000_000_000)
    cpu = space.planes.add(name="/host:CPU")
    cpu.lines.add(id=1, name="python")  # a lane with no events
    path = tmp_path / "noevents.xplane.pb"
    path.write_bytes(space.SerializeToString())
    assert "no trace events" in _error(path)
    # Bytes that parse as nothing but unknown fields are no trace either.
    odd = tmp_path / "odd.xplane.pb"
    odd.write_bytes(b"\x08\x01")
    assert "no trace events" in _error(odd)


# --------------------------------------------------------------------------- synthetic XSpaces
class _Plane:
    """Builds one XPlane with interned event and stat metadata."""

    def __init__(self, plane):
        self.plane, self.events, self.stats = plane, {}, {}

    def stat_id(self, name: str) -> int:
        if name not in self.stats:
            sid = len(self.stats) + 1
            self.stats[name] = sid
            self.plane.stat_metadata[sid].id = sid
            self.plane.stat_metadata[sid].name = name
        return self.stats[name]

    def set_stats(self, target, stats: dict) -> None:
        for k, v in stats.items():
            st = target.stats.add(metadata_id=self.stat_id(k))
            if isinstance(v, float):
                st.double_value = v
            elif isinstance(v, int):
                st.int64_value = v
            elif isinstance(v, bytes):
                st.bytes_value = v
            else:
                st.str_value = v

    def line(self, lid: int, name: str, ts_ns: int = 0):
        return self.plane.lines.add(id=lid, name=name, timestamp_ns=ts_ns)

    def event(self, line, name: str, off_ns: int, dur_ns: int, display: str = "", **stats):
        if name not in self.events:
            eid = len(self.events) + 1
            self.events[name] = eid
            md = self.plane.event_metadata[eid]
            md.id, md.name, md.display_name = eid, name, display
        ev = line.events.add(metadata_id=self.events[name], offset_ps=off_ns * 1000 + 7, duration_ps=dur_ns * 1000)
        self.set_stats(ev, stats)
        return ev


def _gpu_space(with_host_step: bool, anchor: int | None = 1_760_000_000_000_000_000):
    m = messages()
    space = m.XSpace()
    if anchor is not None:
        env = _Plane(space.planes.add(name="Task Environment"))
        env.set_stats(env.plane, {"profile_start_time": anchor, "profile_stop_time": anchor + 10**9})
    host = _Plane(space.planes.add(name="/host:CPU"))
    py = host.line(11, "python", ts_ns=1000)
    if with_host_step:
        host.event(py, "train", 0, 900_000, step_num=5, _r=1)
    host.event(py, "IteratorGetNextAsOptionalOp::DoCompute", 10, 400_000)
    host.event(py, "cudaLaunchKernel", 500_000, 1000, correlation_id=42)
    for index in (0, 1):
        gpu = _Plane(space.planes.add(id=index + 1, name=f"/device:GPU:{index}"))
        gpu.set_stats(gpu.plane, {"device_type_string": "NVIDIA H100", "device_vendor": "Nvidia",
                                  "memory_size": 80 * 2**30, "compute_cap_major": 9, "blob": b"\x01"})
        stream = gpu.line(7, "Stream #7(Kernel,MemcpyH2D)")
        gpu.event(stream, "MemcpyH2D", 410_000, 20_000, memcpy_details="kind_src:pinned")
        gpu.event(stream, "volta_sgemm_128x64_nn", 520_000, 100_000, correlation_id=42)
        gpu.event(stream, "Memset (Device)", 630_000, 1_000)
        gpu.event(stream, "void at::native::vectorized_elementwise_kernel", 640_000, 1_000)
        ops = gpu.line(0xDEADBEEF + 5, "XLA Ops")
        gpu.event(ops, "%dot.1 = f32[8,8] dot(...)", 520_000, 100_000, display="dot.1")
        steps = gpu.line(0xDEADBEEF, "Steps")
        gpu.event(steps, "17", 400_000, 500_000, group_id=17)
        counters = gpu.line(0xDEADBEEF + 9, "_counters_")
        gpu.event(counters, "HBM used", 450_000, 0, value=123.0)
    return space


def _write(space, tmp_path, name="t.xplane.pb") -> Path:
    path = tmp_path / name
    path.write_bytes(space.SerializeToString())
    return path


def test_gpu_streams_give_kernels_memcpy_memset_and_derived_lines_stay_annotations(tmp_path):
    imp = read_xplane(_write(_gpu_space(with_host_step=True), tmp_path))
    rows = _rows(imp)
    on0 = [r for r in rows if r["device"] == "cuda:0"]
    by_name = {r["name"]: r for r in on0}
    assert by_name["MemcpyH2D"]["kind"] == "memcpy"
    assert by_name["Memset (Device)"]["kind"] == "memset"
    assert by_name["volta_sgemm_128x64_nn"]["kind"] == "kernel"
    assert by_name["void at::native::vectorized_elementwise_kernel"]["kind"] == "kernel"
    assert by_name["volta_sgemm_128x64_nn"]["stream"] == 7 and by_name["volta_sgemm_128x64_nn"]["pid"] == 0
    # The XLA Ops line repeats the stream's work: an annotation, never a second kernel.
    assert by_name["dot.1"]["kind"] == "annotation"
    assert json.loads(by_name["dot.1"]["args"])["long_name"].startswith("%dot.1")
    # Host step markers win; device Steps lines become annotations.
    steps = [r for r in rows if r["kind"] == "step"]
    assert [(r["name"], r["device"]) for r in steps] == [("ProfilerStep#5", "cpu")]
    assert by_name["17"]["kind"] == "annotation"
    # Launch -> kernel correlation, input wait, anchor arithmetic at ns precision.
    launch = next(r for r in rows if r["name"] == "cudaLaunchKernel")
    assert launch["correlation_id"] == by_name["volta_sgemm_128x64_nn"]["correlation_id"] == 42
    wait = next(r for r in rows if r["kind"] == "input_wait")
    assert wait["start_ns"] == 1_760_000_000_000_000_000 + 1000 + 10
    assert by_name["MemcpyH2D"]["start_ns"] == 1_760_000_000_000_000_000 + 410_000
    assert imp.meta["clock"]["name"] == "unix_epoch_ns"
    dev0 = next(d for d in imp.meta["devices"] if d["id"] == "cuda:0")
    assert dev0["kind"] == "gpu" and dev0["name"] == "NVIDIA H100"
    assert dev0["memory_total_bytes"] == 80 * 2**30 and "blob" not in dev0
    assert {"device": "cuda:0", "stream": 7, "name": "Stream #7(Kernel,MemcpyH2D)"} in imp.meta["streams"]
    # Counter lines become counter samples, not slices.
    counters = imp.counters.to_pylist()
    assert {(c["name"], c["device"], c["value"]) for c in counters} == {
        ("HBM used", "cuda:0", 123.0),
        ("HBM used", "cuda:1", 123.0),
    }
    assert not any(r["name"] == "HBM used" for r in rows)


def test_device_steps_are_used_once_when_the_host_has_none(tmp_path):
    imp = read_xplane(_write(_gpu_space(with_host_step=False), tmp_path))
    rows = _rows(imp)
    steps = [r for r in rows if r["kind"] == "step"]
    assert [(r["name"], r["device"]) for r in steps] == [("ProfilerStep#17", "cuda:0")]
    assert json.loads(steps[0]["args"])["xplane_name"] == "17"
    assert [r["kind"] for r in rows if r["device"] == "cuda:1" and r["name"] == "17"] == ["annotation"]
    assert imp.meta["step_source"].startswith("device")


def test_without_task_environment_the_clock_is_relative(tmp_path):
    imp = read_xplane(_write(_gpu_space(with_host_step=True, anchor=None), tmp_path))
    assert imp.meta["clock"]["name"] == "relative_ns"
    assert "start_ns" not in imp.meta
    wait = next(r for r in _rows(imp) if r["kind"] == "input_wait")
    assert wait["start_ns"] == 1000 + 10


def test_keras_batches_are_annotations_when_root_markers_exist(tmp_path):
    space = messages().XSpace()
    host = _Plane(space.planes.add(name="/host:CPU"))
    py = host.line(1, "python")
    host.event(py, "Profiled batch", 0, 100, step_num=1)
    host.event(py, "test", 0, 100, _r=1)  # no step_num: numbered by position
    host.event(py, "train/inner", 200, 10, _r=1)  # a '/' in the name: not a step marker
    host.event(py, "MultiDeviceIteratorGetNextFromShard", 10, 50)
    rows = _rows(read_xplane(_write(space, tmp_path)))
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds == {"Profiled batch": "annotation", "ProfilerStep#0": "step", "train/inner": "cpu_op",
                     "MultiDeviceIteratorGetNextFromShard": "input_wait"}


def test_device_lines_name_their_streams_in_the_run(shared_dir, tmp_path):
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    run = Run.open(import_traces([shared_dir / "xplane" / "xprof_8c188e1a__tpu_inference_2.xplane.pb"], tmp_path / "r", progress=False))
    names = run.stream_names()
    assert names[(0, "tpu:0", 3)] == "XLA Ops" and names[(0, "tpu:0", 2)] == "XLA Modules"
    lanes = {(d, s) for d, s in run.slices.filter(run.slices["device"] != "cpu").select("device", "stream").unique().rows()}
    assert lanes <= {(d, s) for _, d, s in names}, "every device lane of the run has its name"


def _raw_device_lines(path: Path, plane_name: str, line_name: str) -> tuple[int, list[tuple[str, int, int]]]:
    """(Task Environment anchor, [(event name, start ns, end ns)]) of one device line, read
    straight from the protobuf (not through the importer); ns = ps // 1000, start and
    duration each (the documented clock rule)."""
    from accelscope.traces.xplane_proto import load_xspace, stats_of

    space = load_xspace(path)
    env = next(p for p in space.planes if p.name == "Task Environment")
    anchor = stats_of(env.stats, {sm.id: sm.name for sm in env.stat_metadata.values()})["profile_start_time"]
    plane = next(p for p in space.planes if p.name == plane_name)
    line = next(ln for ln in plane.lines if ln.name == line_name)
    base = anchor + line.timestamp_ns
    return anchor, [(plane.event_metadata[e.metadata_id].name, base + e.offset_ps // 1000, base + e.offset_ps // 1000 + e.duration_ps // 1000)
                    for e in line.events]


def test_tpu_iterations_are_the_runs_of_its_jitted_module(shared_dir):
    """The TPU inference trace has no step marker anywhere: the 100 runs of jit_f on TPU:0's
    "XLA Modules" line (not the one-off psum runs before them) become iterations, named
    so (not ProfilerStep#N: they are no training steps)."""
    _, raw = _raw_device_lines(shared_dir / TPU, "/device:TPU:0", "XLA Modules")
    runs = sorted((s, e) for n, s, e in raw if n.startswith("jit_f("))
    assert len(runs) == 100 and len(raw) > len(runs)
    imp = read_xplane(shared_dir / TPU)
    steps = sorted((r["start_ns"], r["start_ns"] + r["dur_ns"], r["name"]) for r in _rows(imp) if r["kind"] == "step")
    assert [(s, e) for s, e, _ in steps] == runs
    assert [n for _, _, n in steps] == [f"iteration {i}: jit_f" for i in range(100)]
    assert imp.meta["step_source"].startswith("iterations") and "jit_f(" in imp.meta["step_source"]


def test_tpu_analysis_runs_each_iteration_to_the_next_run_and_says_it_has_no_training_steps(shared_dir, tmp_path):
    """Each iteration runs from one jit_f run's start to the next's (the host's turnaround
    between runs belongs to it); the last to the end of TPU:0's work after it. Expected
    windows recomputed from the protobuf's own lines, not from the importer."""
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    _, modules = _raw_device_lines(shared_dir / TPU, "/device:TPU:0", "XLA Modules")
    _, ops = _raw_device_lines(shared_dir / TPU, "/device:TPU:0", "XLA Ops")
    starts = sorted(s for n, s, _ in modules if n.startswith("jit_f("))
    last_end = max(e for n, s, e in modules if s == starts[-1] and n.startswith("jit_f("))
    longest = max(b - a for a, b in zip(starts, starts[1:]))
    expected = list(zip(starts, starts[1:] + [max(last_end, min(starts[-1] + longest, max(e for _, _, e in ops)))]))

    report = analyze(Run.open(import_traces([shared_dir / TPU], tmp_path / "r", progress=False)))
    assert sorted(zip(report.steps["start_ns"].to_list(), report.steps["end_ns"].to_list())) == expected
    assert report.steps["name"].str.starts_with("iteration ").all()
    assert "no training steps in this trace" in report.notes
    assert any(n.startswith("inference trace") for n in report.notes)
    assert any("XLA module jit_f on tpu:0" in n for n in report.notes)
    assert not any("equal windows" in n for n in report.notes)


def test_empty_device_planes_are_listed_and_make_no_device_rows(shared_dir, tmp_path):
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run
    from accelscope.traces.xplane_proto import load_xspace

    path = shared_dir / "traces/more/tracelens/mi300__jax_conv_minimal_legacy__chi-mi300x-013.ord.vultr.cpe.ice.amd.com.xplane.pb"
    space = load_xspace(path)
    empty = [p.name for p in space.planes if p.name.startswith("/device:") and not any(ln.events for ln in p.lines)]
    assert len(empty) == 6
    imp = read_xplane(path)
    assert imp.meta["xplane"]["empty_device_planes"] == empty
    report = analyze(Run.open(import_traces([path], tmp_path / "r", progress=False))).to_dict()
    busy_devices = {d["device"] for d in report["devices"]}
    assert busy_devices == {"rocm:0", "rocm:7"}, "only the planes with work are devices in the busy figures"


def test_device_steps_line_gives_the_analysed_windows(tmp_path):
    """Without host steps, a device's Steps line gives the windows the analysis uses (the
    first device's only; the same steps on other devices are not counted again)."""
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    space = messages().XSpace()
    env = _Plane(space.planes.add(name="Task Environment"))
    anchor = 1_760_000_000_000_000_000
    env.set_stats(env.plane, {"profile_start_time": anchor, "profile_stop_time": anchor + 10**9})
    host = _Plane(space.planes.add(name="/host:CPU"))
    host.event(host.line(11, "python", ts_ns=0), "cudaLaunchKernel", 0, 1000)
    spans = [(100_000, 300_000), (400_000, 250_000), (700_000, 200_000)]  # (offset ns, duration ns)
    for index in (0, 1):
        gpu = _Plane(space.planes.add(id=index + 1, name=f"/device:GPU:{index}"))
        stream = gpu.line(7, "Stream #7(Kernel)")
        steps = gpu.line(0xDEADBEEF, "Steps")
        for n, (off, dur) in enumerate(spans):
            gpu.event(steps, str(n + 3), off, dur, group_id=n + 3)
            gpu.event(stream, "sgemm", off + 10_000, dur // 2)
    path = _write(space, tmp_path)
    report = analyze(Run.open(import_traces([path], tmp_path / "r", progress=False)))
    got = sorted(zip(report.steps["name"].to_list(), report.steps["start_ns"].to_list(), report.steps["dur_ns"].to_list()))
    assert got == [(f"ProfilerStep#{n + 3}", anchor + off, dur) for n, (off, dur) in enumerate(spans)]
    busy = report.steps.sort("start_ns")["busy_ns"].to_list()
    assert busy == [dur // 2 for _, dur in spans]

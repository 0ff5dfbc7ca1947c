"""TensorFlow / JAX profiler output (XSpace protobuf, ``*.xplane.pb``) to the columnar event model.

No TensorFlow needed: the message classes are built at run time from a
``FileDescriptorProto`` written below from the field numbers of TensorFlow's
``tsl/profiler/protobuf/xplane.proto``, and parsed with the ``protobuf`` package alone.

An XSpace holds planes; a plane holds lines (timelines) of events. Each event points at
an event metadata entry (its name) and carries stats (typed values keyed by stat
metadata). How they map here:

Times
    Epoch ns = ``profile_start_time`` (a stat of the plane named "Task Environment")
    + ``line.timestamp_ns`` + ``event.offset_ps // 1000``; durations are
    ``duration_ps // 1000``. TF 2.21 host traces, the JAX 0.10 trace and the TPU trace
    all store line timestamps relative to that anchor (host lines start a few µs after
    it, TPU device lines at 0), and host and TPU lines agree on one clock that way (a
    host ``Execute`` call precedes the module it launches by ~0.5 ms). A line whose
    ``timestamp_ns`` is already an epoch time (>= 1e17, as in some older writers) is
    taken as is. Without an anchor the clock is ``relative_ns`` (``meta["clock"]``).

Host planes (``/host:CPU``, ``/host:CUPTI``, ...; other planes with lines that are not
``/device:`` planes too)
    Each line is a thread lane: ``device="cpu"``, ``tid`` = line id, ``pid`` = the
    plane's ``process_id`` stat, else 0 for ``/host:CPU`` and (plane position + 1) for
    other host planes. Lane names go to ``meta["threads"]``. Kind by plane
    (:data:`HOST_PLANE_KINDS`, default ``other``), overridden by name: ``IteratorGetNext*``
    and ``MultiDeviceIteratorGetNextFromShard*`` (the training loop blocked on its next
    batch; see :data:`INPUT_WAIT_PREFIXES`) are ``input_wait``; ``$file:line func``
    (the Python tracer's naming) is ``python``. tf.data stage events (``Iterator::...``
    on ``tf_data_*`` threads) stay ``cpu_op`` on their named thread lanes.

Steps (kind ``step``, named ``ProfilerStep#N``; the original name is in args ``xplane_name``)
    a. host root TraceMes: events carrying a true ``_r`` stat whose name starts with
       ``train``/``test`` and has no ``/``, or that carry ``step_num`` (TF's
       ``tf.profiler.experimental.Trace("train", step_num=i, _r=1)``, Keras 2, and
       JAX's ``StepTraceAnnotation``, which writes the same ``train`` + ``_r`` +
       ``step_num`` event);
    b. else Keras 3's ``Profiled batch`` events (they carry ``step_num``);
    c. else the ``Steps`` line of a device plane: only the lowest-numbered device's steps
       become ``step`` slices (every device repeats the same steps; counting all would
       multiply step time), the others' stay ``annotation``;
    d. else (no marker at all, as in JAX inference on TPU) no steps but iterations: the
       runs of the first device's main XLA module (on its "XLA Modules" line, the module
       with the most device time among those run at least twice: the jitted step or
       inference function; one-off programs such as a first ``psum`` are left out) become
       ``step`` slices named ``iteration N: <module>`` (:data:`ITERATION_NAME`, the
       module's name without its fingerprint) in time order, which
       the analysis reads as iterations of a trace without training steps
       (analysis/iterations.py), not as steps.
    ``meta["step_source"]`` says which of a-d gave them; ``meta["steps"]`` counts a-c only,
    ``meta["iterations"]`` d.
    N is the event's ``step_num`` stat (device steps: ``step_num``, ``group_id`` or a
    numeric name), else the marker's position in time. Markers not used as steps are
    ``annotation``.

Device planes (``/device:GPU:N``, ``/device:TPU:N``, ``/device:CUSTOM:N``)
    Device id ``cuda:N`` (``rocm:N`` when the plane's ``device_vendor`` stat says AMD),
    ``tpu:N``, else the lower-cased type; ``stream`` = line id (offset by 1e6 per
    sub-plane such as ``/device:TPU:0 SparseCore 1``), ``pid`` = N, ``tid`` = line id.
    Each line's role comes from ONE table, :data:`LINE_ROLES` (XProf's line names for TPU
    and GPU planes): ``steps`` (see above), ``modules`` and ``annotation`` lines give
    ``annotation`` slices; ``ops`` lines ("XLA Ops") give ``kernel`` slices when the plane
    has no raw lane with events (TPU: the ops line *is* the device's execution record),
    else ``annotation`` (GPU: ops lines are derived from the stream lanes and would count
    the same work twice); ``counters`` lines become counter samples. Every line not in
    the table is a raw execution lane (a GPU "Stream #N"): ``memcpy`` if the name holds
    "memcpy" or the event has ``memcpy_details``, ``memset`` likewise, else ``kernel``.
    A name heuristic, like the TensorBoard plugin's.

Args (JSON)
    Stats of the event's metadata then of the event (event wins), by stat metadata
    name; ``ref_value`` stats give the referenced stat metadata's name; bytes values and
    :data:`DROP_STATS` are left out; strings are cut at 2,048 characters. A
    ``correlation_id`` stat fills the ``correlation_id`` column. A metadata
    ``display_name`` (TPU op "broadcast.2") is used as the slice name and the full name
    (the HLO text) kept as ``long_name``. Device slices also carry their ``line`` name.

Meta
    ``framework`` (``jax`` with version from the ``/host:metadata`` plane's
    ``jax_version``; else ``jax`` for ``PjitFunction``/``PjRt`` host events, else
    ``tensorflow`` for TF runtime events, else ``unknown``), ``devices`` (plane stats as
    properties: ``device_type_string`` becomes ``name``), ``threads``, ``streams``
    (device lanes: device, stream, name), ``clock``, ``source``, ``start_ns``/``end_ns``
    (profile start/stop) when anchored, ``steps``, ``iterations`` and ``step_source`` (where
    they came from, a-d above), and ``xplane`` (plane names, host names, the XSpace's errors and
    warnings, and ``empty_device_planes``: device planes with no work on any line, such
    as the six idle GPUs of an 8-GPU host of which a job used two; they make no device
    rows, so no busy share averages them in).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from accelscope.errors import AccelscopeError
from accelscope.traces import schema as S
from accelscope.traces.xplane_memory import ALLOCATOR_EVENTS, MemoryEvents
from accelscope.traces.xplane_proto import load_xspace, messages, stats_of

__all__ = ["ITERATION_NAME", "Imported", "LINE_ROLES", "load_xspace", "messages", "read_xplane"]

# ---------------------------------------------------------------------------------------
# Line semantics: the one table of XPlane line names (lower-cased), for TPU and GPU planes.
# Any line of a device plane that is not listed here is a raw execution lane.
STEPS, MODULES, OPS, ANNOTATION, COUNTERS = "steps", "modules", "ops", "annotation", "counters"
LINE_ROLES: dict[str, str] = {
    "steps": STEPS,
    "sparse core steps": STEPS,
    "xla modules": MODULES,
    "sparse core modules": MODULES,
    "xla ops": OPS,
    "sparse core ops": OPS,
    "async xla ops": ANNOTATION,  # spans of async ops; their start/done ops are on "XLA Ops"
    "host offload ops": ANNOTATION,
    "xla traceme": ANNOTATION,  # TPU "dependency-wait", "barrier-cores"
    "overlay": ANNOTATION,
    "framework ops": ANNOTATION,  # TF ops derived from annotations (GPU)
    "framework name scope": ANNOTATION,
    "tensorflow ops": ANNOTATION,  # the same two lines, older name
    "tensorflow name scope": ANNOTATION,
    "launch stats": ANNOTATION,
    "source code": ANNOTATION,
    "tensor core sync flag": ANNOTATION,
    "sparse core syncs": ANNOTATION,
    "_counters_": COUNTERS,
}

# Default kind of the events of a host plane (other host planes: "other").
HOST_PLANE_KINDS: dict[str, str] = {
    "/host:CPU": S.CPU_OP,
    "/host:CUPTI": S.RUNTIME,
    "/host:ROCTRACER": S.RUNTIME,
    "/host:TPU-runtime": S.RUNTIME,
    "/host:python-tracer": S.PYTHON,
}
HOST_CPU_PLANE = "/host:CPU"
TASK_ENV_PLANE = "Task Environment"
METADATA_PLANE = "/host:metadata"
# Planes that carry no timeline of their own.
_NO_LANES = {TASK_ENV_PLANE, METADATA_PLANE}

# Host events in which the training loop waits for its next batch (tf.data).
INPUT_WAIT_PREFIXES = ("IteratorGetNext", "MultiDeviceIteratorGetNextFromShard")
KERAS_BATCH_NAME = "Profiled batch"
_EPOCH_FLOOR_NS = 10**17  # 1973: a line timestamp above this is already an epoch time
_SUBPLANE_STREAM_STRIDE = 1_000_000
_DEVICE_RE = re.compile(r"^/device:([A-Za-z_]+):(\d+)(?:\s+(.+))?$")
MIN_MODULE_RUNS = 2  # an XLA module run fewer times is not an iteration (a one-off set-up program)
ITERATION_NAME = "iteration "  # module runs as iterations ("iteration 0", ...): not training steps
_STEP_MARKER_RE = re.compile(r"^(train|test)[^/]*$")
_DIGITS_RE = re.compile(r"^\d+$")

# ---------------------------------------------------------------------------------------
@dataclass
class Imported:
    """An imported trace: events (``EVENT_SCHEMA``), counters (``COUNTER_SCHEMA``), meta."""

    events: pa.Table
    counters: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)
    memory: pa.Table | None = None  # allocator events (MEMORY_SCHEMA, xplane_memory.py); None without any


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and _DIGITS_RE.match(v.strip()):
        return int(v.strip())
    return None


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("", "0", "false")
    return bool(v)


def _device_of(plane_name: str, plane_stats: dict[str, Any]) -> tuple[str, str, int, int] | None:
    """(device id, device kind, index, sub-plane number) for a ``/device:`` plane."""
    m = _DEVICE_RE.match(plane_name)
    if not m:
        return None
    dtype, index, suffix = m.group(1).upper(), int(m.group(2)), m.group(3)
    sub = 0
    if suffix:
        digits = re.findall(r"\d+", suffix)
        sub = int(digits[-1]) + 1 if digits else 1
    if dtype == "GPU":
        vendor = str(plane_stats.get("device_vendor", "")).lower()
        return (f"rocm:{index}" if vendor == "amd" else f"cuda:{index}"), "gpu", index, sub
    return f"{dtype.lower()}:{index}", dtype.lower(), index, sub


def _framework(space, host_names: set[str]) -> dict[str, Any]:
    for plane in space.planes:
        names = {sm.id: sm.name for sm in plane.stat_metadata.values()}
        st = stats_of(plane.stats, names)
        for key, fw in (("jax_version", "jax"), ("tensorflow_version", "tensorflow"), ("tf_version", "tensorflow")):
            if key in st:
                out = {"name": fw, "version": str(st[key])}
                if fw == "jax" and "jaxlib_version" in st:
                    out["jaxlib_version"] = str(st["jaxlib_version"])
                return out
    if any(n.startswith(("PjitFunction", "PjRt", "pjit")) for n in host_names):
        return {"name": "jax"}
    if any(n.startswith(("EagerExecute", "EagerLocalExecute", "ExecutorState::Process", "TFE_", "SessionRun"))
           for n in host_names):
        return {"name": "tensorflow"}
    return {"name": "unknown"}


def read_xplane(path: str | Path, rank: int = 0, keep_steps: bool = True) -> Imported:
    """Read an ``.xplane.pb`` (TensorFlow / JAX profiler) into events, counters and meta.

    ``keep_steps=False`` keeps every step marker as an ``annotation`` (for traces recorded
    inside a run whose steps ``prof.step()`` already marks). Raises :class:`AccelscopeError` (one line naming the file) for a missing, empty or
    corrupt file and for an XSpace without events. See the module docstring for the mapping.
    """
    p = Path(path)
    space = load_xspace(p)
    return _Builder(space, p, rank).build(keep_steps)


Candidate = tuple[int, "int | None", dict]
COLUMN_ORDER = ("start_ns", "dur_ns", "kind", "name", "device", "stream", "pid", "tid", "correlation_id", "args")  # a step marker: (row, step number or None, its args)


class _Builder:
    """One pass over an XSpace's planes, appending rows to event and counter columns; then the
    steps are chosen and the tables and meta assembled (``build``)."""

    def __init__(self, space, path: Path, rank: int):
        self.space, self.path, self.rank = space, path, rank
        self.cols: dict[str, list] = {c: [] for c in S.EVENT_COLUMNS}  # rank is filled at the end
        self.counters: dict[str, list] = {c: [] for c in S.COUNTER_COLUMNS}
        self.memory = MemoryEvents()
        self.threads: list[dict[str, Any]] = []
        self.streams: list[dict[str, Any]] = []
        self.devices: dict[str, dict[str, Any]] = {}
        self.cpu_entry: dict[str, Any] = {"id": "cpu", "kind": "cpu"}
        if space.hostnames:
            self.cpu_entry["hostname"] = space.hostnames[0]
        self.host_names_seen: set[str] = set()
        self.host_roots: list[Candidate] = []
        self.keras_batches: list[Candidate] = []
        self.device_steps: dict[int, list[Candidate]] = {}
        self.device_modules: dict[int, list[tuple[int, str]]] = {}  # (row, module name) of each "XLA Modules" run
        self.relative_lines = 0
        self.empty_device_planes: list[str] = []  # device planes with no work recorded: not devices that sat idle
        self.anchor, self.stop_ns = self._anchor()

    # -- the clock --------------------------------------------------------------------------
    def _anchor(self) -> tuple[int | None, int | None]:
        """profile_start_time and profile_stop_time of the Task Environment plane, when there."""
        anchor = stop = None
        for plane in self.space.planes:
            if plane.name == TASK_ENV_PLANE:
                names = {sm.id: sm.name for sm in plane.stat_metadata.values()}
                st = stats_of(plane.stats, names)
                anchor, stop = _as_int(st.get("profile_start_time")), _as_int(st.get("profile_stop_time"))
        return anchor, stop

    def _line_base_ns(self, ts: int) -> int:
        if ts >= _EPOCH_FLOOR_NS:
            return ts
        if self.anchor is not None:
            return self.anchor + ts
        self.relative_lines += 1
        return ts

    def _appends(self) -> tuple:
        """The next row number, then the ``append`` of each column in ``COLUMN_ORDER`` (bound
        once per line: the loops over events call them directly)."""
        c = self.cols
        return (len(c["start_ns"]), *(c[k].append for k in COLUMN_ORDER))

    # -- planes -----------------------------------------------------------------------------
    def planes(self) -> None:
        for position, plane in enumerate(self.space.planes):
            if plane.name in _NO_LANES:
                continue
            stat_names = {sm.id: sm.name for sm in plane.stat_metadata.values()}
            plane_stats = stats_of(plane.stats, stat_names)
            dev = _device_of(plane.name, plane_stats)
            if dev is not None:
                self._note_device(dev, plane.name, plane_stats)
                if not any(ln.events and LINE_ROLES.get((ln.display_name or ln.name).strip().lower()) != COUNTERS for ln in plane.lines):
                    self.empty_device_planes.append(plane.name)
            elif plane.name == HOST_CPU_PLANE:
                for k, v in plane_stats.items():
                    self.cpu_entry.setdefault(k, v)
            meta_of = _metadata_reader(plane.event_metadata, stat_names)
            if dev is not None:
                has_raw = any(ln.events and (ln.display_name or ln.name).strip().lower() not in LINE_ROLES for ln in plane.lines)
            else:
                process_id = _as_int(plane_stats.get("process_id"))
                pid = process_id if process_id is not None else (0 if plane.name == HOST_CPU_PLANE else position + 1)
                plane_kind = HOST_PLANE_KINDS.get(plane.name, S.OTHER)
            for line in plane.lines:
                if not line.events:
                    continue
                line_name = line.display_name or line.name
                role = LINE_ROLES.get(line_name.strip().lower())
                base_ns = self._line_base_ns(line.timestamp_ns)
                if role == COUNTERS:
                    self._counter_line(line, base_ns, dev[0] if dev is not None else "cpu", meta_of, stat_names)
                elif dev is None:
                    self._host_line(line, line_name, base_ns, pid, plane_kind, meta_of, stat_names)
                else:
                    self._device_line(line, line_name, role, base_ns, dev, has_raw, meta_of, stat_names)

    def _note_device(self, dev: tuple[str, str, int, int], plane_name: str, plane_stats: dict[str, Any]) -> None:
        device_id, device_kind, _, _ = dev
        entry = self.devices.setdefault(device_id, {"id": device_id, "kind": device_kind})
        entry.setdefault("planes", []).append(plane_name)
        for k, v in plane_stats.items():
            key = "name" if k in ("device_type_string", "gpu_device_name") else k
            entry.setdefault(key, v)
        if "memory_size" in plane_stats:
            entry.setdefault("memory_total_bytes", plane_stats["memory_size"])

    def _counter_line(self, line, base_ns: int, device_name: str, meta_of, stat_names: dict[int, str]) -> None:
        for ev in line.events:
            if ev.num_occurrences:
                continue
            name, _, _ = meta_of(ev.metadata_id)
            numeric = {k: v for k, v in stats_of(ev.stats, stat_names).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            t = base_ns + ev.offset_ps // 1000
            for k, v in numeric.items():
                for col, value in (("name", name if len(numeric) == 1 else f"{name}:{k}"), ("device", device_name), ("time_ns", t), ("value", float(v)), ("rank", self.rank)):
                    self.counters[col].append(value)

    def _host_line(self, line, line_name: str, base_ns: int, pid: int, plane_kind: str, meta_of, stat_names: dict[int, str]) -> None:
        """A host thread lane: its events, with input waits, Python frames and step markers told apart."""
        tid = line.id
        self.threads.append({"pid": pid, "tid": tid, "name": line_name})
        row, a_start, a_dur, a_kind, a_name, a_device, a_stream, a_pid, a_tid, a_corr, a_args = self._appends()
        kind_cache: dict[int, str] = {}
        for ev in line.events:
            if ev.num_occurrences:
                continue
            mid = ev.metadata_id
            name, long_name, md_args = meta_of(mid)
            if long_name in ALLOCATOR_EVENTS:  # the memory table's, not a slice
                self.memory.add(long_name, base_ns + ev.offset_ps // 1000, pid, tid, stats_of(ev.stats, stat_names) if ev.stats else {})
                continue
            kind = kind_cache.get(mid)
            if kind is None:
                kind = kind_cache[mid] = _host_kind(long_name, plane_kind)
                self.host_names_seen.add(long_name)
            args = dict(md_args)
            if ev.stats:
                args.update(stats_of(ev.stats, stat_names))
            if long_name != name:
                args["long_name"] = long_name
            root = "_r" in args and _truthy(args["_r"]) and (_STEP_MARKER_RE.match(long_name) or "step_num" in args)
            marker = root or long_name == KERAS_BATCH_NAME
            a_start(base_ns + ev.offset_ps // 1000)
            a_dur(ev.duration_ps // 1000)
            a_kind(kind)
            a_name(name)
            a_device("cpu")
            a_stream(None)
            a_pid(pid)
            a_tid(tid)
            a_corr(_as_int(args.get("correlation_id")))
            a_args(None if marker or not args else json.dumps(args, separators=(",", ":")))
            if root:
                self.host_roots.append((row, _as_int(args.get("step_num")), args))
            elif marker:
                self.keras_batches.append((row, _as_int(args.get("step_num")), args))
            row += 1

    def _device_line(self, line, line_name: str, role: str | None, base_ns: int, dev: tuple, has_raw: bool, meta_of, stat_names: dict[int, str]) -> None:
        """A device lane: its role (``LINE_ROLES``) says what its events are."""
        device_id, _, device_index, sub = dev
        stream = sub * _SUBPLANE_STREAM_STRIDE + line.id
        self.streams.append({"device": device_id, "stream": stream, "name": line_name})
        if role == OPS:
            fixed_kind = S.ANNOTATION if has_raw else None
        elif role in (MODULES, ANNOTATION, STEPS):
            fixed_kind = S.ANNOTATION
        else:
            fixed_kind = None  # raw lane: by name and stats
        row, a_start, a_dur, a_kind, a_name, a_device, a_stream, a_pid, a_tid, a_corr, a_args = self._appends()
        for ev in line.events:
            if ev.num_occurrences:
                continue
            name, long_name, md_args = meta_of(ev.metadata_id)
            args = dict(md_args)
            if ev.stats:
                args.update(stats_of(ev.stats, stat_names))
            if long_name != name:
                args["long_name"] = long_name
            args["line"] = line_name
            kind = fixed_kind if fixed_kind is not None else _raw_kind(long_name, args)
            a_start(base_ns + ev.offset_ps // 1000)
            a_dur(ev.duration_ps // 1000)
            a_kind(kind)
            a_name(name)
            a_device(device_id)
            a_stream(stream)
            a_pid(device_index)
            a_tid(line.id)
            a_corr(_as_int(args.get("correlation_id")))
            a_args(None if role == STEPS else json.dumps(args, separators=(",", ":")))
            if role == STEPS:
                num = _as_int(args.get("step_num"))
                if num is None:
                    num = _as_int(args.get("group_id"))
                if num is None:
                    num = _as_int(long_name)
                self.device_steps.setdefault(device_index, []).append((row, num, args))
            elif role == MODULES and sub == 0:
                self.device_modules.setdefault(device_index, []).append((row, long_name))
            row += 1

    # -- steps --------------------------------------------------------------------------------
    def _make_steps(self, cands: list[Candidate], iteration_of: str | None = None) -> int:
        c = self.cols
        for seq, (row, num, args) in enumerate(sorted(cands, key=lambda cand: c["start_ns"][cand[0]])):
            args = dict(args)
            args["xplane_name"] = args.pop("long_name", None) or c["name"][row]
            c["kind"][row] = S.STEP
            c["name"][row] = f"{ITERATION_NAME}{seq}: {iteration_of}" if iteration_of else S.step_name(num if num is not None else seq)
            c["args"][row] = json.dumps(args, separators=(",", ":"))
        return len(cands)

    def _as_annotations(self, cands: list[Candidate]) -> None:
        for row, _, args in cands:
            self.cols["kind"][row] = S.ANNOTATION
            self.cols["args"][row] = json.dumps(args, separators=(",", ":")) if args else None

    def steps(self, keep_steps: bool) -> tuple[int, str | None]:
        """Mark the steps: host root markers, else Keras batches, else the first device's Steps
        line, else the iterations of the main XLA module; every other candidate stays an
        annotation. (count, where they came from)."""
        devices = self.device_steps
        if not keep_steps:
            for cands in (self.host_roots, self.keras_batches, *devices.values()):
                self._as_annotations(cands)
            return 0, None
        if self.host_roots:
            self._as_annotations(self.keras_batches)
            for cands in devices.values():
                self._as_annotations(cands)
            return self._make_steps(self.host_roots), "host root TraceMe (_r) markers"
        if self.keras_batches:
            for cands in devices.values():
                self._as_annotations(cands)
            return self._make_steps(self.keras_batches), "Keras 'Profiled batch' events"
        if devices:
            first = min(devices)
            for idx, cands in devices.items():
                if idx != first:
                    self._as_annotations(cands)
            return self._make_steps(devices[first]), f"device 'Steps' line of device index {first}"
        return self._module_steps()

    def _module_steps(self) -> tuple[int, str | None]:
        """No step marker anywhere: the runs of the first device's dominant XLA module (the
        one with the most device time, run at least MIN_MODULE_RUNS times: a jitted train or
        inference step) are iterations, numbered in time order."""
        if not self.device_modules:
            return 0, None
        first = min(self.device_modules)
        runs = self.device_modules[first]
        dur = self.cols["dur_ns"]
        total: dict[str, int] = {}
        count: dict[str, int] = {}
        for row, name in runs:  # one entry per module run (hundreds), not per op
            total[name] = total.get(name, 0) + dur[row]
            count[name] = count.get(name, 0) + 1
        eligible = [n for n in total if count[n] >= MIN_MODULE_RUNS]
        if not eligible:
            return 0, None
        module = max(eligible, key=lambda n: (total[n], n))
        args = self.cols["args"]
        cands: list[Candidate] = [(row, None, {**json.loads(args[row] or "{}"), "xla_module": module}) for row, name in runs if name == module]
        short = re.sub(r"\(\d+\)$", "", module)  # the program's fingerprint is in args xplane_name
        return self._make_steps(cands, iteration_of=short), f"iterations: runs of XLA module {module!r} on the 'XLA Modules' line of device index {first} (no step markers)"

    # -- the result -----------------------------------------------------------------------------
    def build(self, keep_steps: bool) -> Imported:
        self.planes()
        if not self.cols["start_ns"]:
            planes = ", ".join(repr(pl.name) for pl in self.space.planes) or "none"
            errors = "; ".join(" ".join(e.split()) for e in self.space.errors)
            extra = f"; profiler errors: {errors}" if errors else ""
            raise AccelscopeError(f"{self.path}: XSpace holds no trace events (planes: {planes}){extra}")
        n_steps, step_source = self.steps(keep_steps)
        cols = self.cols
        cols["rank"] = [self.rank] * len(cols["start_ns"])
        events = pa.table({c: pa.array(cols[c], type=S.EVENT_SCHEMA.field(c).type) for c in S.EVENT_COLUMNS}, schema=S.EVENT_SCHEMA)
        counters = pa.table({c: pa.array(self.counters[c], type=S.COUNTER_SCHEMA.field(c).type) for c in S.COUNTER_COLUMNS}, schema=S.COUNTER_SCHEMA)
        memory = self.memory.table(self.rank, set(self.devices))
        return Imported(events=events, counters=counters, meta=self._meta(n_steps, step_source), memory=memory)

    def _meta(self, n_steps: int, step_source: str | None) -> dict[str, Any]:
        space, anchor = self.space, self.anchor
        if anchor is not None and self.relative_lines == 0:
            clock = {"name": "unix_epoch_ns", "source": "xplane: Task Environment profile_start_time + line.timestamp_ns + offset_ps // 1000"}
        elif anchor is None and self.relative_lines == 0:
            clock = {"name": "unix_epoch_ns", "source": "xplane: line.timestamp_ns (epoch) + offset_ps // 1000"}
        else:
            clock = {"name": "relative_ns", "source": "xplane: line.timestamp_ns + offset_ps // 1000; no Task Environment profile_start_time"}
        meta: dict[str, Any] = {
            "framework": _framework(space, self.host_names_seen),
            "devices": [self.cpu_entry, *sorted(self.devices.values(), key=lambda d: (d["kind"], _index_key(d["id"])))],
            "threads": self.threads,
            "streams": self.streams,
            "clock": clock,
            "source": {"format": "xplane", "path": str(self.path)},
            "rank": self.rank,
            "steps": 0 if step_source and step_source.startswith("iterations") else n_steps,
            "xplane": {"planes": [pl.name for pl in space.planes], "hostnames": list(space.hostnames),
                       "errors": list(space.errors), "warnings": list(space.warnings),
                       "empty_device_planes": self.empty_device_planes},
        }
        if step_source:
            meta["step_source"] = step_source
            if step_source.startswith("iterations"):
                meta["iterations"] = n_steps
        if anchor is not None and clock["name"] == "unix_epoch_ns":
            meta["start_ns"] = anchor
            if self.stop_ns is not None:
                meta["end_ns"] = self.stop_ns
        return meta


def _metadata_reader(event_metadata, stat_names: dict[int, str]):
    """(name, long name, metadata args) of an event metadata id, cached per plane."""
    cache: dict[int, tuple[str, str, dict]] = {}

    def meta_of(mid: int) -> tuple[str, str, dict]:
        got = cache.get(mid)
        if got is None:
            md = event_metadata.get(mid)
            got = (f"event_{mid}", f"event_{mid}", {}) if md is None else (md.display_name or md.name, md.name, stats_of(md.stats, stat_names))
            cache[mid] = got
        return got

    return meta_of


def _host_kind(long_name: str, plane_kind: str) -> str:
    if long_name.startswith(INPUT_WAIT_PREFIXES):
        return S.INPUT_WAIT
    if long_name.startswith("$"):
        return S.PYTHON
    if long_name == KERAS_BATCH_NAME:
        return S.ANNOTATION
    return plane_kind


def _raw_kind(long_name: str, args: dict[str, Any]) -> str:
    """A raw device lane's event: a copy, a memset, else a kernel (by name and stats)."""
    low = long_name.lower()
    if "memcpy" in low or "memcpy_details" in args:
        return S.MEMCPY
    if "memset" in low or "memset_details" in args or "Memset_details" in args:
        return S.MEMSET
    return S.KERNEL


def _index_key(device_id: str) -> tuple[str, int]:
    kind, _, idx = device_id.partition(":")
    return kind, int(idx) if idx.isdigit() else -1

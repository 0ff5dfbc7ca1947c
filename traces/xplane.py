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
       multiply step time), the others' stay ``annotation``.
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
    (profile start/stop) when anchored, ``steps``, and ``xplane`` (plane names, host
    names, the XSpace's errors and warnings).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa

from accelscope.errors import AccelscopeError
from accelscope.traces import schema as S

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
DROP_STATS = frozenset({"_pt", "_ct", "_src", "Hlo Proto"})
MAX_STR = 2048
_EPOCH_FLOOR_NS = 10**17  # 1973: a line timestamp above this is already an epoch time
_SUBPLANE_STREAM_STRIDE = 1_000_000
_DEVICE_RE = re.compile(r"^/device:([A-Za-z_]+):(\d+)(?:\s+(.+))?$")
_STEP_MARKER_RE = re.compile(r"^(train|test)[^/]*$")
_DIGITS_RE = re.compile(r"^\d+$")

# ---------------------------------------------------------------------------------------
# The schema: XSpace and friends from tsl/profiler/protobuf/xplane.proto (proto3).
_PKG = "tensorflow.profiler"


def _schema() -> dict[str, tuple[list[tuple], list[tuple[str, int, str]], list[str]]]:
    from google.protobuf import descriptor_pb2

    F = descriptor_pb2.FieldDescriptorProto
    i64, u64, dbl, s, b, msg = F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_DOUBLE, F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    # message -> (fields, map<int64, message> fields, oneof names); a field is
    # (name, number, type, label, message type or None, oneof index or None).
    return {
        "XSpace": (
            [("planes", 1, msg, rep, "XPlane", None), ("errors", 2, s, rep, None, None),
             ("warnings", 3, s, rep, None, None), ("hostnames", 4, s, rep, None, None)],
            [], [],
        ),
        "XPlane": (
            [("id", 1, i64, opt, None, None), ("name", 2, s, opt, None, None),
             ("lines", 3, msg, rep, "XLine", None), ("stats", 6, msg, rep, "XStat", None)],
            [("event_metadata", 4, "XEventMetadata"), ("stat_metadata", 5, "XStatMetadata")], [],
        ),
        "XLine": (
            [("id", 1, i64, opt, None, None), ("display_id", 10, i64, opt, None, None),
             ("name", 2, s, opt, None, None), ("display_name", 11, s, opt, None, None),
             ("timestamp_ns", 3, i64, opt, None, None), ("duration_ps", 9, i64, opt, None, None),
             ("events", 4, msg, rep, "XEvent", None)],
            [], [],
        ),
        "XEvent": (
            [("metadata_id", 1, i64, opt, None, None), ("offset_ps", 2, i64, opt, None, 0),
             ("num_occurrences", 5, i64, opt, None, 0), ("duration_ps", 3, i64, opt, None, None),
             ("stats", 4, msg, rep, "XStat", None)],
            [], ["data"],
        ),
        "XStat": (
            [("metadata_id", 1, i64, opt, None, None), ("double_value", 2, dbl, opt, None, 0),
             ("uint64_value", 3, u64, opt, None, 0), ("int64_value", 4, i64, opt, None, 0),
             ("str_value", 5, s, opt, None, 0), ("bytes_value", 6, b, opt, None, 0),
             ("ref_value", 7, u64, opt, None, 0)],
            [], ["value"],
        ),
        "XEventMetadata": (
            [("id", 1, i64, opt, None, None), ("name", 2, s, opt, None, None),
             ("display_name", 4, s, opt, None, None), ("metadata", 3, b, opt, None, None),
             ("stats", 5, msg, rep, "XStat", None), ("child_id", 6, i64, rep, None, None)],
            [], [],
        ),
        "XStatMetadata": (
            [("id", 1, i64, opt, None, None), ("name", 2, s, opt, None, None),
             ("description", 3, s, opt, None, None)],
            [], [],
        ),
    }


@functools.lru_cache(maxsize=1)
def messages() -> SimpleNamespace:
    """The XPlane message classes (``.XSpace``, ``.XPlane``, ``.XLine``, ``.XEvent``, ...),
    built from a descriptor in a private pool (no clash with TensorFlow's own bindings)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError as exc:
        raise AccelscopeError(
            f"reading .xplane.pb files needs the 'protobuf' package: pip install protobuf ({exc})"
        ) from None

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="accelscope/xplane.proto", package=_PKG, syntax="proto3")
    for name, (fields, maps, oneofs) in _schema().items():
        m = fdp.message_type.add(name=name)
        for oneof in oneofs:
            m.oneof_decl.add(name=oneof)
        for fname, number, ftype, label, type_name, oneof_index in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PKG}.{type_name}"
            if oneof_index is not None:
                f.oneof_index = oneof_index
        for fname, number, value_type in maps:
            entry_name = "".join(part.title() for part in fname.split("_")) + "Entry"
            entry = m.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                            type_name=f".{_PKG}.{value_type}")
            m.field.add(name=fname, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                        type_name=f".{_PKG}.{name}.{entry_name}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        factory = message_factory.MessageFactory(pool)
        get_class = factory.GetPrototype
    return SimpleNamespace(**{name: get_class(pool.FindMessageTypeByName(f"{_PKG}.{name}")) for name in _schema()})


# ---------------------------------------------------------------------------------------
@dataclass
class Imported:
    """An imported trace: events (``EVENT_SCHEMA``), counters (``COUNTER_SCHEMA``), meta."""

    events: pa.Table
    counters: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def load_xspace(path: str | Path):
    """Parse an ``.xplane.pb`` (optionally gzipped) into an XSpace message, with one-line errors."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        reason = exc.strerror or _one_line(exc)
        raise AccelscopeError(f"{p}: cannot read the XPlane file ({reason})") from None
    if not data:
        raise AccelscopeError(f"{p}: empty file, not an XSpace protobuf")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise AccelscopeError(f"{p}: corrupt gzip data ({_one_line(exc)})") from None
    space = messages().XSpace()
    try:
        space.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError, and RuntimeError/ValueError from some backends
        raise AccelscopeError(f"{p}: not an XSpace protobuf ({_one_line(exc)})") from None
    return space


def _stat_value(stat, stat_names: dict[int, str]) -> Any:
    """A stat's value as JSON-able Python (None for bytes and non-finite doubles)."""
    which = stat.WhichOneof("value")
    if which == "int64_value":
        return stat.int64_value
    if which == "uint64_value":
        return stat.uint64_value
    if which == "str_value":
        v = stat.str_value
        return v if len(v) <= MAX_STR else v[:MAX_STR] + "…"
    if which == "double_value":
        v = stat.double_value
        return v if math.isfinite(v) else None
    if which == "ref_value":
        return stat_names.get(stat.ref_value, stat.ref_value)
    return None  # bytes_value (serialized protos) or unset


def _stats(stats, stat_names: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for st in stats:
        name = stat_names.get(st.metadata_id) or f"stat_{st.metadata_id}"
        if name in DROP_STATS:
            continue
        v = _stat_value(st, stat_names)
        if v is not None:
            out[name] = v
    return out


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
        st = _stats(plane.stats, names)
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
    return _convert(space, p, rank, keep_steps)


def _convert(space, p: Path, rank: int, keep_steps: bool = True) -> Imported:  # noqa: C901 - one pass over the planes
    cols: dict[str, list] = {c: [] for c in S.EVENT_COLUMNS}
    c_start, c_dur, c_kind, c_name = cols["start_ns"], cols["dur_ns"], cols["kind"], cols["name"]
    c_dev, c_stream, c_pid, c_tid = cols["device"], cols["stream"], cols["pid"], cols["tid"]
    c_corr, c_args = cols["correlation_id"], cols["args"]
    counters: dict[str, list] = {c: [] for c in S.COUNTER_COLUMNS}

    # Clock anchor.
    anchor: int | None = None
    stop_ns: int | None = None
    for plane in space.planes:
        if plane.name == TASK_ENV_PLANE:
            names = {sm.id: sm.name for sm in plane.stat_metadata.values()}
            st = _stats(plane.stats, names)
            anchor = _as_int(st.get("profile_start_time"))
            stop_ns = _as_int(st.get("profile_stop_time"))
    relative_lines = 0

    threads: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    devices: dict[str, dict[str, Any]] = {}
    cpu_entry: dict[str, Any] = {"id": "cpu", "kind": "cpu"}
    if space.hostnames:
        cpu_entry["hostname"] = space.hostnames[0]
    host_names_seen: set[str] = set()
    # Step marker candidates: (row, step number or None, args dict); args are written at the end.
    host_roots: list[tuple[int, int | None, dict]] = []
    keras_batches: list[tuple[int, int | None, dict]] = []
    device_steps: dict[int, list[tuple[int, int | None, dict]]] = {}

    for position, plane in enumerate(space.planes):
        if plane.name in _NO_LANES:
            continue
        stat_names = {sm.id: sm.name for sm in plane.stat_metadata.values()}
        plane_stats = _stats(plane.stats, stat_names)
        dev = _device_of(plane.name, plane_stats)
        if dev is not None:
            device_id, device_kind, device_index, sub = dev
            entry = devices.setdefault(device_id, {"id": device_id, "kind": device_kind})
            entry.setdefault("planes", []).append(plane.name)
            for k, v in plane_stats.items():
                key = "name" if k in ("device_type_string", "gpu_device_name") else k
                entry.setdefault(key, v)
            if "memory_size" in plane_stats:
                entry.setdefault("memory_total_bytes", plane_stats["memory_size"])
        elif plane.name == HOST_CPU_PLANE:
            for k, v in plane_stats.items():
                cpu_entry.setdefault(k, v)

        # Per-metadata cache: (name, long name, metadata args).
        emd_cache: dict[int, tuple[str, str, dict]] = {}

        def meta_of(mid: int, _emd=plane.event_metadata, _names=stat_names, _cache=emd_cache):
            got = _cache.get(mid)
            if got is None:
                md = _emd.get(mid)
                if md is None:
                    got = (f"event_{mid}", f"event_{mid}", {})
                else:
                    got = (md.display_name or md.name, md.name, _stats(md.stats, _names))
                _cache[mid] = got
            return got

        if dev is not None:
            has_raw = any(
                ln.events and (ln.display_name or ln.name).strip().lower() not in LINE_ROLES for ln in plane.lines
            )
            stream_base = sub * _SUBPLANE_STREAM_STRIDE
        else:
            process_id = _as_int(plane_stats.get("process_id"))
            pid = process_id if process_id is not None else (0 if plane.name == HOST_CPU_PLANE else position + 1)
            plane_kind = HOST_PLANE_KINDS.get(plane.name, S.OTHER)

        for line in plane.lines:
            if not line.events:
                continue
            line_name = line.display_name or line.name
            role = LINE_ROLES.get(line_name.strip().lower())
            ts = line.timestamp_ns
            if ts >= _EPOCH_FLOOR_NS:
                base_ns = ts
            elif anchor is not None:
                base_ns = anchor + ts
            else:
                base_ns = ts
                relative_lines += 1

            if role == COUNTERS:
                device_name = dev[0] if dev is not None else "cpu"
                for ev in line.events:
                    if ev.num_occurrences:
                        continue
                    name, _, _ = meta_of(ev.metadata_id)
                    numeric = {k: v for k, v in _stats(ev.stats, stat_names).items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)}
                    t = base_ns + ev.offset_ps // 1000
                    for k, v in numeric.items():
                        counters["name"].append(name if len(numeric) == 1 else f"{name}:{k}")
                        counters["device"].append(device_name)
                        counters["time_ns"].append(t)
                        counters["value"].append(float(v))
                        counters["rank"].append(rank)
                continue

            if dev is None:
                # A host thread lane.
                tid = line.id
                threads.append({"pid": pid, "tid": tid, "name": line_name})
                kind_cache: dict[int, str] = {}
                for ev in line.events:
                    if ev.num_occurrences:
                        continue
                    mid = ev.metadata_id
                    name, long_name, md_args = meta_of(mid)
                    kind = kind_cache.get(mid)
                    if kind is None:
                        if long_name.startswith(INPUT_WAIT_PREFIXES):
                            kind = S.INPUT_WAIT
                        elif long_name.startswith("$"):
                            kind = S.PYTHON
                        elif long_name == KERAS_BATCH_NAME:
                            kind = S.ANNOTATION
                        else:
                            kind = plane_kind
                        kind_cache[mid] = kind
                        host_names_seen.add(long_name)
                    args = dict(md_args)
                    if ev.stats:
                        args.update(_stats(ev.stats, stat_names))
                    if long_name != name:
                        args["long_name"] = long_name
                    row = len(c_start)
                    c_start.append(base_ns + ev.offset_ps // 1000)
                    c_dur.append(ev.duration_ps // 1000)
                    c_kind.append(kind)
                    c_name.append(name)
                    c_dev.append("cpu")
                    c_stream.append(None)
                    c_pid.append(pid)
                    c_tid.append(tid)
                    c_corr.append(_as_int(args.get("correlation_id")))
                    if "_r" in args and _truthy(args["_r"]) and (
                        _STEP_MARKER_RE.match(long_name) or "step_num" in args
                    ):
                        host_roots.append((row, _as_int(args.get("step_num")), args))
                        c_args.append(None)
                    elif long_name == KERAS_BATCH_NAME:
                        keras_batches.append((row, _as_int(args.get("step_num")), args))
                        c_args.append(None)
                    else:
                        c_args.append(json.dumps(args, separators=(",", ":")) if args else None)
                continue

            # A device lane.
            device_id, _, device_index, _ = dev
            stream = stream_base + line.id
            streams.append({"device": device_id, "stream": stream, "name": line_name})
            if role == OPS:
                fixed_kind = S.ANNOTATION if has_raw else None
            elif role in (MODULES, ANNOTATION, STEPS):
                fixed_kind = S.ANNOTATION
            else:
                fixed_kind = None  # raw lane: by name and stats
            for ev in line.events:
                if ev.num_occurrences:
                    continue
                name, long_name, md_args = meta_of(ev.metadata_id)
                args = dict(md_args)
                if ev.stats:
                    args.update(_stats(ev.stats, stat_names))
                if long_name != name:
                    args["long_name"] = long_name
                args["line"] = line_name
                if fixed_kind is not None:
                    kind = fixed_kind
                else:
                    low = long_name.lower()
                    if "memcpy" in low or "memcpy_details" in args:
                        kind = S.MEMCPY
                    elif "memset" in low or "memset_details" in args or "Memset_details" in args:
                        kind = S.MEMSET
                    else:
                        kind = S.KERNEL
                row = len(c_start)
                c_start.append(base_ns + ev.offset_ps // 1000)
                c_dur.append(ev.duration_ps // 1000)
                c_kind.append(kind)
                c_name.append(name)
                c_dev.append(device_id)
                c_stream.append(stream)
                c_pid.append(device_index)
                c_tid.append(line.id)
                c_corr.append(_as_int(args.get("correlation_id")))
                if role == STEPS:
                    num = _as_int(args.get("step_num"))
                    if num is None:
                        num = _as_int(args.get("group_id"))
                    if num is None:
                        num = _as_int(long_name)
                    device_steps.setdefault(device_index, []).append((row, num, args))
                    c_args.append(None)
                else:
                    c_args.append(json.dumps(args, separators=(",", ":")))

    if not c_start:
        planes = ", ".join(repr(pl.name) for pl in space.planes) or "none"
        errors = "; ".join(" ".join(e.split()) for e in space.errors)
        extra = f"; profiler errors: {errors}" if errors else ""
        raise AccelscopeError(f"{p}: XSpace holds no trace events (planes: {planes}){extra}")

    # Steps.
    def make_steps(cands: list[tuple[int, int | None, dict]]) -> int:
        cands = sorted(cands, key=lambda c: c_start[c[0]])
        for seq, (row, num, args) in enumerate(cands):
            args = dict(args)
            args["xplane_name"] = args.pop("long_name", None) or c_name[row]
            c_kind[row] = S.STEP
            c_name[row] = S.step_name(num if num is not None else seq)
            c_args[row] = json.dumps(args, separators=(",", ":"))
        return len(cands)

    def keep_as_annotation(cands: list[tuple[int, int | None, dict]]) -> None:
        for row, _, args in cands:
            c_kind[row] = S.ANNOTATION
            c_args[row] = json.dumps(args, separators=(",", ":")) if args else None

    step_source = None
    n_steps = 0
    if not keep_steps:
        for cands in (host_roots, keras_batches, *device_steps.values()):
            keep_as_annotation(cands)
    elif host_roots:
        n_steps, step_source = make_steps(host_roots), "host root TraceMe (_r) markers"
        keep_as_annotation(keras_batches)
        for cands in device_steps.values():
            keep_as_annotation(cands)
    elif keras_batches:
        n_steps, step_source = make_steps(keras_batches), "Keras 'Profiled batch' events"
        for cands in device_steps.values():
            keep_as_annotation(cands)
    elif device_steps:
        first = min(device_steps)
        n_steps = make_steps(device_steps[first])
        step_source = f"device 'Steps' line of device index {first}"
        for idx, cands in device_steps.items():
            if idx != first:
                keep_as_annotation(cands)

    cols["rank"] = [rank] * len(c_start)
    events = pa.table({c: pa.array(cols[c], type=S.EVENT_SCHEMA.field(c).type) for c in S.EVENT_COLUMNS},
                      schema=S.EVENT_SCHEMA)
    counter_table = pa.table(
        {c: pa.array(counters[c], type=S.COUNTER_SCHEMA.field(c).type) for c in S.COUNTER_COLUMNS},
        schema=S.COUNTER_SCHEMA,
    )

    if anchor is not None and relative_lines == 0:
        clock = {"name": "unix_epoch_ns",
                 "source": "xplane: Task Environment profile_start_time + line.timestamp_ns + offset_ps // 1000"}
    elif anchor is None and relative_lines == 0:
        clock = {"name": "unix_epoch_ns", "source": "xplane: line.timestamp_ns (epoch) + offset_ps // 1000"}
    else:
        clock = {"name": "relative_ns",
                 "source": "xplane: line.timestamp_ns + offset_ps // 1000; no Task Environment profile_start_time"}

    meta: dict[str, Any] = {
        "framework": _framework(space, host_names_seen),
        "devices": [cpu_entry, *sorted(devices.values(), key=lambda d: (d["kind"], _index_key(d["id"])))],
        "threads": threads,
        "streams": streams,
        "clock": clock,
        "source": {"format": "xplane", "path": str(p)},
        "rank": rank,
        "steps": n_steps,
        "xplane": {
            "planes": [pl.name for pl in space.planes],
            "hostnames": list(space.hostnames),
            "errors": list(space.errors),
            "warnings": list(space.warnings),
        },
    }
    if step_source:
        meta["step_source"] = step_source
    if anchor is not None and clock["name"] == "unix_epoch_ns":
        meta["start_ns"] = anchor
        if stop_ns is not None:
            meta["end_ns"] = stop_ns
    return Imported(events=events, counters=counter_table, meta=meta)


def _index_key(device_id: str) -> tuple[str, int]:
    kind, _, idx = device_id.partition(":")
    return kind, int(idx) if idx.isdigit() else -1

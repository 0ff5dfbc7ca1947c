"""The XPlane protobuf (``tsl/profiler/protobuf/xplane.proto``) without TensorFlow: the
message classes built at run time from a ``FileDescriptorProto`` in a private pool,
parsing a file into an XSpace with one-line errors, and reading stats.

An XSpace holds planes; a plane holds lines (timelines) of events. Each event points at
an event metadata entry (its name) and carries stats (typed values keyed by stat metadata).
"""

from __future__ import annotations

import functools
import gzip
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from accelscope.errors import AccelscopeError

DROP_STATS = frozenset({"_pt", "_ct", "_src", "Hlo Proto"})
MAX_STR = 2048

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


def stat_value(stat, stat_names: dict[int, str]) -> Any:
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


def stats_of(stats, stat_names: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for st in stats:
        name = stat_names.get(st.metadata_id) or f"stat_{st.metadata_id}"
        if name in DROP_STATS:
            continue
        v = stat_value(st, stat_names)
        if v is not None:
            out[name] = v
    return out

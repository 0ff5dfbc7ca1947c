"""The one door to libtpu's runtime metrics service (the service the ``tpu-info`` CLI reads).

A process that runs a TPU through libtpu (JAX, PyTorch/XLA, TensorFlow) serves runtime
metrics over gRPC on ``localhost:8431`` (the port is set by ``TPU_RUNTIME_METRICS_PORTS``).
The protocol, ``tpu.monitoring.runtime.RuntimeMetricService``:

* ``GetRuntimeMetric(MetricRequest{metric_name=1: string, skip_node_aggregation=2: bool})``
  returns ``MetricResponse{metric=1: TPUMetric{name=1, description=2, metrics=3: repeated
  Metric}}``; each ``Metric`` is one device's data point: ``attribute=1`` (an ``Attribute``
  ``{key=1: string, value=2: AttrValue}``, key ``"device-id"`` with the device number in
  ``AttrValue.int_attr=3``), ``timestamp=2``, and one measure of the oneof ``measure``:
  ``gauge=3`` (``Gauge`` oneof ``as_double=1`` / ``as_int=2`` / ``as_string=3`` /
  ``as_bool=4``), ``counter=4`` (``as_double=1`` / ``as_int=2: uint64``), ``distribution=5``,
  ``summary=6``.
* ``ListSupportedMetrics(ListSupportedMetricsRequest{filter=1})`` returns
  ``ListSupportedMetricsResponse{supported_metric=1: repeated SupportedMetric{metric_name=1}}``.

This is the only module that imports ``grpc`` (the ``tpu`` extra), lazily, inside
functions: importing accelscope never loads it and never opens a channel. The message
classes are built at run time from a ``FileDescriptorProto`` written below (no generated
``_pb2`` modules); distributions and summaries are left out of the schema (their bytes
are kept as unknown fields and ignored).

Every call returns a value or a typed "not available" value, and never raises:

* :class:`NotAvailable` - no value this time (the service answered with an error or
  with bytes that do not decode);
* :class:`TimedOut` - no answer within the deadline (a :class:`NotAvailable`);
* :class:`NotSupported` - the service does not export this metric (``NOT_FOUND``,
  ``UNIMPLEMENTED``, ``INVALID_ARGUMENT``);
* :class:`Lost` - nothing serves at the address (connection refused: gRPC
  ``UNAVAILABLE``), or gRPC is not installed.

All are falsy; test with :func:`is_na` or ``isinstance``.
"""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace
from typing import Any

from accelscope.collectors.base import NotAvailable, is_na  # noqa: F401 - re-exported

log = logging.getLogger("accelscope")

DEFAULT_ADDRESS = "localhost:8431"
PACKAGE = "tpu.monitoring.runtime"
SERVICE = f"{PACKAGE}.RuntimeMetricService"
GET_RUNTIME_METRIC = f"/{SERVICE}/GetRuntimeMetric"
LIST_SUPPORTED_METRICS = f"/{SERVICE}/ListSupportedMetrics"

# Metric names libtpu exports (as tpu-info asks for them).
DUTY_CYCLE_PERCENT = "tpu.runtime.tensorcore.dutycycle.percent"  # gauge as_double, per chip
HBM_USAGE_BYTES = "tpu.runtime.hbm.memory.usage.bytes"  # gauge as_int, per device
HBM_TOTAL_BYTES = "tpu.runtime.hbm.memory.total.bytes"  # gauge as_int, per device

#: Attribute keys that carry the device number: libtpu's usage metrics use "device-id";
#: its HLO metrics put "device_ordinal" inside a key/value list.
DEVICE_KEYS = ("device-id", "device_ordinal")


class TimedOut(NotAvailable):
    """The service did not answer within the deadline."""


class NotSupported(NotAvailable):
    """The service does not export this metric."""


class Lost(NotAvailable):
    """Nothing serves at the address (or gRPC itself is missing)."""


def missing_grpc() -> str | None:
    """``None`` when grpc imports, else a one-line reason naming the ``tpu`` extra."""
    try:
        import grpc  # noqa: F401
    except ImportError as exc:
        return f"grpcio is not installed ({exc}): pip install 'accelscope[tpu]'"
    return None


# ---------------------------------------------------------------------------------------
# The schema: the messages of tpu_metric_service.proto that the client and a test server
# need, by field number. message -> [(name, number, type, label, message type, oneof)].
def _schema() -> tuple[dict[str, tuple[list[tuple], list[str]]], dict[str, tuple[str, str]]]:
    from google.protobuf import descriptor_pb2

    F = descriptor_pb2.FieldDescriptorProto
    dbl, i64, u64, s, b, bl, msg = (F.TYPE_DOUBLE, F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_STRING,
                                     F.TYPE_BYTES, F.TYPE_BOOL, F.TYPE_MESSAGE)
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    ts = ".google.protobuf.Timestamp"
    messages = {
        "Attribute": ([("key", 1, s, opt, None, None), ("value", 2, msg, opt, "AttrValue", None)], []),
        "AttrValue": (
            [("string_attr", 1, s, opt, None, 0), ("bool_attr", 2, bl, opt, None, 0),
             ("int_attr", 3, i64, opt, None, 0), ("double_attr", 4, dbl, opt, None, 0),
             ("array_attr", 5, msg, opt, "ArrayAttrValue", 0), ("kvlist_attr", 6, msg, opt, "KeyValueList", 0),
             ("bytes_attr", 7, b, opt, None, 0)],
            ["attr"],
        ),
        "ArrayAttrValue": ([("attrs", 1, msg, rep, "AttrValue", None)], []),
        "KeyValueList": ([("attributes", 1, msg, rep, "Attribute", None)], []),
        "Exemplar": ([("value", 1, dbl, opt, None, None), ("timestamp", 2, msg, opt, ts, None),
                      ("attributes", 3, msg, rep, "Attribute", None)], []),
        "Gauge": ([("as_double", 1, dbl, opt, None, 0), ("as_int", 2, i64, opt, None, 0),
                   ("as_string", 3, s, opt, None, 0), ("as_bool", 4, bl, opt, None, 0)], ["value"]),
        "Counter": ([("as_double", 1, dbl, opt, None, 0), ("as_int", 2, u64, opt, None, 0),
                     ("exemplar", 3, msg, opt, "Exemplar", None)], ["value"]),
        "Metric": (
            [("attribute", 1, msg, opt, "Attribute", None), ("start_timestamp", 7, msg, opt, ts, None),
             ("timestamp", 2, msg, opt, ts, None), ("gauge", 3, msg, opt, "Gauge", 0),
             ("counter", 4, msg, opt, "Counter", 0)],
            ["measure"],
        ),
        "TPUMetric": ([("name", 1, s, opt, None, None), ("description", 2, s, opt, None, None),
                       ("metrics", 3, msg, rep, "Metric", None)], []),
        "MetricRequest": ([("metric_name", 1, s, opt, None, None), ("skip_node_aggregation", 2, bl, opt, None, None)], []),
        "MetricResponse": ([("metric", 1, msg, opt, "TPUMetric", None)], []),
        "ListSupportedMetricsRequest": ([("filter", 1, s, opt, None, None)], []),
        "SupportedMetric": ([("metric_name", 1, s, opt, None, None)], []),
        "ListSupportedMetricsResponse": ([("supported_metric", 1, msg, rep, "SupportedMetric", None)], []),
    }
    methods = {
        "GetRuntimeMetric": ("MetricRequest", "MetricResponse"),
        "ListSupportedMetrics": ("ListSupportedMetricsRequest", "ListSupportedMetricsResponse"),
    }
    return messages, methods


@functools.lru_cache(maxsize=1)
def messages() -> SimpleNamespace:
    """The message classes (``.MetricRequest``, ``.MetricResponse``, ``.Metric``, ...),
    built in a private descriptor pool (no clash with tpu-info's own bindings)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

    schema, methods = _schema()
    pool = descriptor_pool.DescriptorPool()
    ts_file = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts_file)
    pool.Add(ts_file)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="accelscope/tpu_metric_service.proto", package=PACKAGE, syntax="proto3",
        dependency=[ts_file.name],
    )
    for name, (fields, oneofs) in schema.items():
        m = fdp.message_type.add(name=name)
        for oneof in oneofs:
            m.oneof_decl.add(name=oneof)
        for fname, number, ftype, label, type_name, oneof_index in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name if type_name.startswith(".") else f".{PACKAGE}.{type_name}"
            if oneof_index is not None:
                f.oneof_index = oneof_index
    service = fdp.service.add(name=SERVICE.rsplit(".", 1)[1])
    for method, (request, response) in methods.items():
        service.method.add(name=method, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}")
    pool.Add(fdp)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return SimpleNamespace(**{name: get_class(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in schema})


# ---------------------------------------------------------------------------------------
def _attr_int(value: Any) -> int | None:
    kind = value.WhichOneof("attr")
    if kind == "int_attr":
        return int(value.int_attr)
    if kind == "string_attr" and value.string_attr.strip().isdigit():
        return int(value.string_attr)
    if kind == "double_attr" and float(value.double_attr).is_integer():
        return int(value.double_attr)
    return None


def device_id(metric: Any) -> int | None:
    """The device number of one ``Metric``: attribute ``device-id`` (or ``device_ordinal``),
    directly or inside a key/value list; ``None`` when it names none."""
    attr = metric.attribute
    if attr.key in DEVICE_KEYS:
        return _attr_int(attr.value)
    if attr.value.WhichOneof("attr") == "kvlist_attr":
        for inner in attr.value.kvlist_attr.attributes:
            if inner.key in DEVICE_KEYS:
                return _attr_int(inner.value)
    return None


def measure(metric: Any) -> float | None:
    """The number in one ``Metric``'s gauge or counter; ``None`` for anything else."""
    kind = metric.WhichOneof("measure")
    if kind not in ("gauge", "counter"):
        return None
    holder = getattr(metric, kind)
    which = holder.WhichOneof("value")
    if which in ("as_double", "as_int", "as_bool"):
        return float(getattr(holder, which))
    if which == "as_string":
        try:
            return float(holder.as_string)
        except ValueError:
            return None
    return None


def per_device(response: Any) -> dict[int, float | None]:
    """``{device number: value}`` from a ``MetricResponse``. A data point without a device
    attribute takes its position in the response as its number."""
    out: dict[int, float | None] = {}
    for position, metric in enumerate(response.metric.metrics):
        number = device_id(metric)
        out[position if number is None else number] = measure(metric)
    return out


def _is_loopback(address: str) -> bool:
    """Whether a gRPC target (``host:port``, ``[::1]:port``, ``dns:///host:port``,
    ``ipv4:127.0.0.1:port``) names this machine over TCP."""
    target = address.split("///", 1)[-1]
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme):]
    if target.startswith("["):
        host = target[1:target.find("]")]
    elif target.count(":") == 1:
        host = target.split(":", 1)[0]
    else:
        host = target
    host = host.lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class MetricsClient:
    """A channel to one metrics service. Build it with :func:`connect`; every method
    returns a value or a :class:`NotAvailable` and never raises."""

    def __init__(self, address: str, timeout_s: float):
        import grpc

        self.address = address
        self.timeout_s = timeout_s
        self._grpc = grpc
        m = messages()
        self._m = m
        options = [
            ("grpc.enable_http_proxy", 0),  # a local service: never through $http_proxy
            ("grpc.initial_reconnect_backoff_ms", 100),  # notice a restarted service within ~1 s
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if _is_loopback(address):  # what tpu-info uses; on the wire the same as plaintext
            self._channel = grpc.secure_channel(address, grpc.local_channel_credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._get = self._channel.unary_unary(
            GET_RUNTIME_METRIC, request_serializer=m.MetricRequest.SerializeToString,
            response_deserializer=m.MetricResponse.FromString,
        )
        self._list = self._channel.unary_unary(
            LIST_SUPPORTED_METRICS, request_serializer=m.ListSupportedMetricsRequest.SerializeToString,
            response_deserializer=m.ListSupportedMetricsResponse.FromString,
        )

    def _call(self, stub: Any, request: Any) -> Any:
        grpc = self._grpc
        try:
            return stub(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = " ".join(str(exc.details() if hasattr(exc, "details") else exc).split())
            name = getattr(code, "name", "UNKNOWN")
            if code == grpc.StatusCode.UNAVAILABLE:
                return Lost(f"nothing answers at {self.address} ({details or name})")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return TimedOut(f"no answer from {self.address} within {self.timeout_s:g} s")
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
                return NotSupported(f"{name}: {details}" if details else name)
            if code == grpc.StatusCode.INTERNAL and "deserializ" in details.lower():
                return NotAvailable("the service's response does not decode as a MetricResponse")
            return NotAvailable(f"{name}: {details}" if details else name)
        except Exception as exc:  # a broken grpc install must not break the caller
            return NotAvailable(f"{type(exc).__name__}: {exc}")

    def get(self, metric_name: str) -> dict[int, float | None] | NotAvailable:
        """One metric for every device: ``{device number: value}`` (a value is ``None``
        when its data point holds no number), or a :class:`NotAvailable`."""
        response = self._call(self._get, self._m.MetricRequest(metric_name=metric_name))
        if is_na(response):
            return response
        try:
            values = per_device(response)
        except Exception as exc:
            return NotAvailable(f"cannot read the response: {type(exc).__name__}: {exc}")
        if not values:
            return NotAvailable(f"the service returned no data points for {metric_name}")
        return values

    def supported(self) -> set[str] | NotAvailable:
        """The metric names the service says it exports (older libtpu: NotSupported)."""
        response = self._call(self._list, self._m.ListSupportedMetricsRequest())
        if is_na(response):
            return response
        try:
            return {s.metric_name for s in response.supported_metric}
        except Exception as exc:
            return NotAvailable(f"cannot read the response: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        try:
            self._channel.close()
        except Exception as exc:
            log.debug("accelscope: closing the TPU metrics channel failed: %s", exc)


def connect(address: str = DEFAULT_ADDRESS, timeout_s: float = 0.5) -> MetricsClient | NotAvailable:
    """A :class:`MetricsClient` for ``address`` (no connection is made until the first
    call), or :class:`Lost` when gRPC is missing or the channel cannot be built."""
    reason = missing_grpc()
    if reason is not None:
        return Lost(reason)
    try:
        return MetricsClient(address, timeout_s)
    except Exception as exc:
        return Lost(f"cannot open a gRPC channel to {address}: {type(exc).__name__}: {exc}")

"""Why the accelerator sat idle: the one table of idle causes, and the rules that recognise them.

Each row of :data:`TABLE` is one cause: its name (the key in every report and JSON
document), the label people read, how a host slice is recognised as it (slice kinds, a
regular expression on the slice name), which host threads count, and the advice a
recommendation gives. The row's position is its priority: when the host does several
things during an idle gap, each instant goes to the first cause active then. The
classifier, the per-step breakdown, every label and every recommendation read this table,
so adding a cause is one row here (and a line in docs/analysis.md).

Every rule is a Polars expression over the events table, so classification is columnar.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from accelscope.traces import schema as S


@dataclass(frozen=True)
class Cause:
    name: str
    label: str  # what people read: "waiting for input"
    advice: str  # what to change when this cause idles the device (recommendations)
    kinds: tuple[str, ...] = ()  # host slice kinds that are this cause whatever their name
    names: str | None = None  # regular expression on host slice names
    any_thread: bool = False  # counts on any host thread, not only those that drive the device
    fallback: bool = False  # every other host activity (the last recognisable cause)
    remainder: bool = False  # the idle time no host slice explains (the last row)
    cross_rank: bool = False  # found by matching collectives across ranks, not from host slices
    # The advice in the words of another framework ("tensorflow", "jax"); ``advice`` is PyTorch's.
    advice_by: dict[str, str] = field(default_factory=dict)


# Name rules, kept apart for docs/analysis.md and the tests.
INPUT_WAIT_NAME = r"^enumerate\(DataLoader\)#.*__next__|DataLoader.*__next__|^IteratorGetNext|^MultiDeviceIteratorGetNext"
H2D_NAME = r"^aten::(to|_to_copy|copy_)$|^cuda(Memcpy|MemcpyAsync|Memcpy2D\w*)$|^hip(Memcpy|MemcpyAsync|MemcpyWithStream)$|^Memcpy HtoD"
COLLECTIVE_NAME = r"(?i)nccl|rccl|gloo|^c10d::|record_param_comms|all_?reduce|all_?gather|reduce_?scatter|alltoall|all_to_all|^ProcessGroup"
SYNC_NAME = r"(?i)synchronize$|^cuda(Device|Stream|Event)Synchronize|^hip(Device|Stream|Event)Synchronize|^cudaStreamWaitEvent|^aten::(item|_local_scalar_dense)$"
OPTIMIZER_NAME = r"^Optimizer\.(step|zero_grad)|^optimizer$|^(?i:adam|adamw|sgd|lamb|adagrad)\b"
PROFILER_NAME = r"^(Activity Buffer Request|Profiler|cupti|CUPTI|\[memory\])"

RANK_WAIT = "rank_wait"
INPUT_WAIT = "input_wait"
H2D_COPY = "h2d_copy"
COLLECTIVE = "collective_wait"
SYNC = "synchronization"
OPTIMIZER = "optimizer_python"
PROFILER = "profiler_overhead"
HOST_COMPUTE = "host_compute"
NO_HOST = "no_host_activity"

# In priority order.
TABLE: tuple[Cause, ...] = (
    Cause(
        RANK_WAIT, "waiting for another rank in a collective",
        "the rank that arrives last holds every other rank back: fix its own cause (see the straggler table)",
        cross_rank=True,
    ),
    Cause(
        INPUT_WAIT, "waiting for input",
        "raise DataLoader num_workers, set pin_memory=True and persistent_workers=True, prefetch (prefetch_factor; "
        "tf.data .prefetch), or move decoding/augmentation off the critical path",
        kinds=(S.INPUT_WAIT,), names=INPUT_WAIT_NAME, any_thread=True,
        advice_by={
            "tensorflow": "tf.data: .prefetch(tf.data.AUTOTUNE), num_parallel_calls=tf.data.AUTOTUNE on .map, .cache() what "
                          "does not change, interleave file reads, or move decoding off the critical path (tf.data service)",
            "jax": "load ahead of the step: more loader workers (e.g. grain's worker_count), prefetch batches to the device "
                   "while the step runs, or move decoding off the critical path",
        },
    ),
    Cause(
        H2D_COPY, "host-to-device copy of the batch",
        "pin host memory (pin_memory=True) and copy with .to(device, non_blocking=True), or prefetch the next batch "
        "to the device on a side stream",
        names=H2D_NAME,
        advice_by={
            "tensorflow": "prefetch to the device (tf.data.experimental.prefetch_to_device, or a distribution strategy's "
                          "distributed dataset) so the copy overlaps the step",
            "jax": "put the next batch on the device while the step runs (jax.device_put ahead of time, a prefetch-to-device "
                   "iterator), sharded as the step expects it",
        },
    ),
    Cause(
        COLLECTIVE, "waiting in a collective",
        "overlap communication with compute (DDP bucket_cap_mb, gradient accumulation), and look for a straggler rank",
        names=COLLECTIVE_NAME,
        advice_by={
            "tensorflow": "overlap communication with compute (CommunicationOptions bytes_per_pack, fewer and larger "
                          "all-reduces), and look for a straggler worker",
            "jax": "overlap collectives with compute (XLA's async collectives and latency-hiding scheduler), check the "
                   "sharding for all-gathers it does not need, and look for a straggler host",
        },
    ),
    Cause(
        SYNC, "synchronisation (device/stream/event sync, .item())",
        "remove host-device syncs from the loop (.item(), .cpu(), printing tensors, torch.cuda.synchronize); "
        "log metrics every N steps",
        kinds=(S.SYNC,), names=SYNC_NAME,
        advice_by={
            "tensorflow": "stop reading results back every step (.numpy(), float(loss), printing tensors); log metrics every "
                          "N steps and keep the loop inside tf.function",
            "jax": "stop blocking on results every step (block_until_ready, float(loss), printing arrays); log metrics every "
                   "N steps so dispatch runs ahead",
        },
    ),
    Cause(
        OPTIMIZER, "optimizer / Python work",
        "use a fused or foreach optimizer (fused=True / foreach=True) and keep Python work out of the step",
        names=OPTIMIZER_NAME,
        advice_by={
            "tensorflow": "keep the optimizer inside the compiled step (tf.function(jit_compile=True)) and Python work out "
                          "of the step",
            "jax": "jit the whole update (the optax update inside the jitted step) and keep Python work out of the step",
        },
    ),
    Cause(
        PROFILER, "profiler overhead",
        "reduce profiler overhead (record_shapes/with_stack off, shorter active windows)",
        names=PROFILER_NAME,
        advice_by={
            "tensorflow": "reduce profiler overhead (a lower host_tracer_level, python_tracer off, shorter windows)",
            "jax": "reduce profiler overhead (shorter traces, the Python tracer off)",
        },
    ),
    Cause(
        HOST_COMPUTE, "host compute / late kernel launches",
        "the host launches work too slowly for the device: fewer, larger kernels (torch.compile, CUDA graphs), "
        "a larger batch, or less Python per step",
        fallback=True,
        advice_by={
            "tensorflow": "the host dispatches work too slowly for the device: compile the step (tf.function(jit_compile=True)), "
                          "run several steps per call (Keras steps_per_execution), a larger batch, or less Python per step",
            "jax": "the host dispatches work too slowly for the device: jit larger pieces (the whole step), several steps "
                   "per dispatch (lax.scan), a larger batch, or fewer host round trips",
        },
    ),
    Cause(
        NO_HOST, "no host activity recorded",
        "nothing was traced on the host then: usually Python between ops; record with stacks (with_stack=True) to see it",
        remainder=True,
        advice_by={
            "tensorflow": "nothing was traced on the host then: usually Python between ops; profile with "
                          "python_tracer_level=1 (and host_tracer_level=3) to see it",
            "jax": "nothing was traced on the host then: usually Python between dispatches; profile with the Python "
                   "tracer on to see it",
        },
    ),
)

CAUSES: tuple[str, ...] = tuple(c.name for c in TABLE)
BY_NAME: dict[str, Cause] = {c.name: c for c in TABLE}
CAUSE_TEXT: dict[str, str] = {c.name: c.label for c in TABLE}
ADVICE: dict[str, str] = {c.name: c.advice for c in TABLE}
FRAMEWORKS = ("torch", "tensorflow", "jax")  # the words advice comes in (PyTorch's is the default)


def advice_for(cause: str, framework: str) -> str:
    """What to change about ``cause``, in the words of ``framework``."""
    row = BY_NAME[cause]
    return row.advice_by.get(framework, row.advice)
# The causes an instant of idle time can be given (all but the remainder), in priority order:
# a host slice's, or (``cross_rank``) a collective's wait for the last rank.
HOST_CAUSES: tuple[Cause, ...] = tuple(c for c in TABLE if not c.remainder)


def _check_table() -> None:
    """The table's shape, checked at import: one fallback just before one remainder, at the end."""
    if TABLE[-2].kinds or TABLE[-2].names:
        raise RuntimeError("causes.TABLE: the fallback cause has no rules of its own")
    if not (TABLE[-1].remainder and TABLE[-2].fallback and sum(c.remainder for c in TABLE) == 1 and sum(c.fallback for c in TABLE) == 1):
        raise RuntimeError("causes.TABLE must end with one fallback cause followed by one remainder cause")
    if len(set(CAUSES)) != len(CAUSES):
        raise RuntimeError("causes.TABLE has a duplicate cause name")


_check_table()

_name = pl.col("name")
_kind = pl.col("kind")

# Device kernels that are communication, not compute (NCCL/RCCL on GPUs, XLA collectives on TPUs).
COMM_KERNEL_NAME = r"(?i)nccl|rccl|all-?reduce|all_?gather|all-gather|reduce-?scatter|collective-permute|all-to-all|alltoall|send-done|recv-done"

# Host slices that say the host was doing something (steps are containers, not activity).
HOST_ACTIVITY_KINDS = [S.CPU_OP, S.RUNTIME, S.PYTHON, S.ANNOTATION, S.OTHER, S.SYNC, S.INPUT_WAIT]


# Causes as small integers (their priority: position in the table), for columnar work on
# millions of host slices: comparing integers is many times cheaper than comparing strings.
CODE: dict[str, int] = {c: i for i, c in enumerate(CAUSES)}
# The fallback is the last host cause, so "the first rule that matches, else the fallback"
# is the smallest of the name rule's code and the kind rule's code, each the fallback when none matches.
_FALLBACK = CODE[HOST_CAUSES[-1].name]


def _name_code_expr() -> pl.Expr:
    """The code of the first cause whose name rule a name matches (else the fallback's)."""
    expr = None
    for cause in HOST_CAUSES:
        if cause.names:
            expr = (pl.when if expr is None else expr.when)(_name.str.contains(cause.names)).then(pl.lit(CODE[cause.name], dtype=pl.UInt8))
    return expr.otherwise(pl.lit(_FALLBACK, dtype=pl.UInt8)) if expr is not None else pl.lit(_FALLBACK, dtype=pl.UInt8)


def _kind_code_expr() -> pl.Expr:
    """Per slice kind: null when the kind is not host activity; else the code of the first
    cause that claims the kind (else the fallback's)."""
    codes = {k: _FALLBACK for k in HOST_ACTIVITY_KINDS}
    for cause in reversed(HOST_CAUSES):  # the first cause in the table wins
        for k in cause.kinds:
            codes[k] = CODE[cause.name]
    return _kind.replace_strict(list(codes), list(codes.values()), default=None, return_dtype=pl.UInt8)


def classify_host(host: pl.DataFrame) -> pl.DataFrame:
    """Host slices (kind, name, ...) that are host activity, with ``cause``: the code
    (``CODE``) of the first cause in the table whose kinds hold the slice's kind or whose
    name rule matches, else the fallback cause. The name rules run once per distinct name
    (a trace has hundreds, not millions), joined back on the name alone (several times
    cheaper than a join on kind and name)."""
    names = host.select(pl.col("name").unique()).with_columns(_name_code=_name_code_expr())
    return (
        host.with_columns(_kind_code=_kind_code_expr())
        .filter(pl.col("_kind_code").is_not_null())
        .join(names, on="name", how="left")
        .with_columns(cause=pl.min_horizontal(pl.col("_name_code"), pl.col("_kind_code")))
        .drop("_name_code", "_kind_code")
    )


def is_comm_kernel() -> pl.Expr:
    """Device kernels that are communication (collectives), not compute."""
    return _name.str.contains(COMM_KERNEL_NAME)


def gap_slices(gaps: pl.DataFrame) -> pl.DataFrame:
    """The analysis' idle gaps (``Report.gaps``) as slices for an export's gap track
    (``accelscope.traces.chrome.GAP_SLICE_SCHEMA``): each named after its cause, its args the
    cause, its label, its length, its step, the time of each cause in it and the host op it
    sat under, as JSON text."""
    per_cause = [c for c in CAUSES if f"{c}_ns" in gaps.columns]
    why = pl.col("cause").replace_strict(CAUSE_TEXT, default=pl.col("cause"), return_dtype=pl.String)
    host_op = pl.col("host_op") if "host_op" in gaps.columns else pl.lit(None, dtype=pl.String)
    args = pl.struct(
        pl.col("cause"),
        why.alias("why"),
        (pl.col("dur_ns") / 1e6).round(6).alias("dur_ms"),
        pl.col("step"),
        pl.struct([(pl.col(f"{c}_ns") / 1e6).round(6).alias(c) for c in per_cause]).alias("by_cause_ms") if per_cause else pl.lit(None).alias("by_cause_ms"),
        host_op.alias("host_op"),
    )
    from accelscope.traces.chrome import GAP_SLICE_SCHEMA

    return gaps.select(
        "rank", "device", "start_ns", "dur_ns", (pl.lit("idle: ") + why).alias("name"), args.struct.json_encode().alias("args"),
    ).cast(GAP_SLICE_SCHEMA)

"""Which host activity is which: the name and kind rules the analyzer uses, in one place.

Every rule is a Polars expression over the events table, so classification is columnar.
docs/analysis.md explains each rule; change them here and there together.
"""

from __future__ import annotations

import polars as pl

from accelscope.traces import schema as S

# Causes of accelerator idle time, in priority order: when the host does several things
# during a gap (e.g. a DataLoader call that copies to the device), each instant goes to
# the first cause active at that instant.
INPUT_WAIT = "input_wait"
H2D_COPY = "h2d_copy"
COLLECTIVE = "collective_wait"
SYNC = "synchronization"
OPTIMIZER = "optimizer_python"
PROFILER = "profiler_overhead"
HOST_COMPUTE = "host_compute"
NO_HOST = "no_host_activity"
CAUSES = (INPUT_WAIT, H2D_COPY, COLLECTIVE, SYNC, OPTIMIZER, PROFILER, HOST_COMPUTE, NO_HOST)

CAUSE_TEXT = {
    INPUT_WAIT: "waiting for input",
    H2D_COPY: "host-to-device copy of the batch",
    COLLECTIVE: "waiting in a collective (NCCL/gloo)",
    SYNC: "synchronisation (device/stream/event sync, .item())",
    OPTIMIZER: "optimizer / Python work",
    PROFILER: "profiler overhead",
    HOST_COMPUTE: "host compute / late kernel launches",
    NO_HOST: "no host activity recorded",
}

_name = pl.col("name")
_kind = pl.col("kind")

INPUT_WAIT_NAME = r"^enumerate\(DataLoader\)#.*__next__|DataLoader.*__next__|^IteratorGetNext|^MultiDeviceIteratorGetNext"
H2D_NAME = r"^aten::(to|_to_copy|copy_)$|^cuda(Memcpy|MemcpyAsync|Memcpy2D\w*)$|^hip(Memcpy|MemcpyAsync|MemcpyWithStream)$|^Memcpy HtoD"
COLLECTIVE_NAME = r"(?i)nccl|rccl|gloo|^c10d::|record_param_comms|all_?reduce|all_?gather|reduce_?scatter|alltoall|all_to_all|^ProcessGroup"
SYNC_NAME = r"(?i)synchronize$|^cuda(Device|Stream|Event)Synchronize|^hip(Device|Stream|Event)Synchronize|^cudaStreamWaitEvent|^aten::(item|_local_scalar_dense)$"
OPTIMIZER_NAME = r"^Optimizer\.(step|zero_grad)|^optimizer$|^(?i:adam|adamw|sgd|lamb|adagrad)\b"
PROFILER_NAME = r"^(Activity Buffer Request|Profiler|cupti|CUPTI|\[memory\])"
# Device kernels that are communication, not compute (NCCL/RCCL on GPUs, XLA collectives on TPUs).
COMM_KERNEL_NAME = r"(?i)nccl|rccl|all-?reduce|all_?gather|all-gather|reduce-?scatter|collective-permute|all-to-all|alltoall|send-done|recv-done"

# Host slices that say the host was doing something (steps are containers, not activity).
HOST_ACTIVITY_KINDS = [S.CPU_OP, S.RUNTIME, S.PYTHON, S.ANNOTATION, S.OTHER, S.SYNC, S.INPUT_WAIT]


def host_cause_expr() -> pl.Expr:
    """The idle cause a host slice stands for (null for slices that are not host activity)."""
    return (
        pl.when(~_kind.is_in(HOST_ACTIVITY_KINDS)).then(pl.lit(None, dtype=pl.String))
        .when((_kind == S.INPUT_WAIT) | _name.str.contains(INPUT_WAIT_NAME)).then(pl.lit(INPUT_WAIT))
        .when(_name.str.contains(H2D_NAME)).then(pl.lit(H2D_COPY))
        .when(_name.str.contains(COLLECTIVE_NAME)).then(pl.lit(COLLECTIVE))
        .when((_kind == S.SYNC) | _name.str.contains(SYNC_NAME)).then(pl.lit(SYNC))
        .when(_name.str.contains(OPTIMIZER_NAME)).then(pl.lit(OPTIMIZER))
        .when(_name.str.contains(PROFILER_NAME)).then(pl.lit(PROFILER))
        .otherwise(pl.lit(HOST_COMPUTE))
    )


def is_comm_kernel() -> pl.Expr:
    return _name.str.contains(COMM_KERNEL_NAME)

"""The per-rank tasks of an import on an existing Dask distributed cluster.

``accelscope import DIR --cluster tcp://scheduler:8786`` sends one task per trace file to the
cluster's workers: each reads its file (by path, or fsspec URL, on that node) and writes it as
a rank part of the run being made, and only the part's summary comes back to this process
(traces/assemble.py). The run's directory must therefore be on storage the workers can write
(the shared file system a cluster's jobs already use); a LocalCluster shares this machine's.

Only this module imports ``distributed`` (the ``[cluster]`` extra). Failures are contained as
in the local pool (traces/parallel.py): a file whose worker was killed, or that cannot be read,
is left out and named; losing the scheduler ends the import with one line, and the import's
temporary directory is removed by its caller, so no half-written run is left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

from accelscope.errors import AccelscopeError
from accelscope.traces.formats import Source

CONNECT_TIMEOUT_S = 30  # how long to wait for the scheduler to answer at first


class ClusterError(AccelscopeError):
    """The cluster cannot be used (no ``distributed``, no scheduler at the address, or the
    connection was lost mid-way); one line."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("--cluster needs Dask distributed: pip install 'accelscope[cluster]'") from None
    return distributed


def connect(cluster: Any):
    """A ``distributed.Client`` for ``cluster``: an address (``tcp://host:8786``), or a Client
    or cluster object the caller made (used as it is). Returns (client, whether we own it)."""
    distributed = _distributed()
    if isinstance(cluster, distributed.Client):
        return cluster, False
    address = getattr(cluster, "scheduler_address", cluster)
    if not isinstance(address, str) or not address:
        raise ClusterError(f"--cluster {cluster!r}: give the scheduler's address, e.g. tcp://host:8786")
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False), True
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def _session(cluster: Any) -> Iterator[Any]:
    """A client for ``cluster`` (closed afterwards when we made it); losing the scheduler
    inside the block, as a broken connection or cancelled tasks, is one ClusterError."""
    distributed = _distributed()
    client, owned = connect(cluster)
    address = client.scheduler.address if getattr(client, "scheduler", None) else cluster
    try:
        yield client
    except (OSError, TimeoutError, CancelledError, distributed.comm.CommClosedError) as exc:
        raise ClusterError(f"lost the connection to the Dask scheduler at {address} "
                           f"({_first_line(exc) or 'its tasks were cancelled'}); no run was written") from None
    finally:
        if owned:
            try:
                client.close(timeout=5)
            except Exception:  # closing a client whose scheduler is gone may itself fail
                pass


def read_on_cluster(cluster: Any, sources: list[Source], read: Callable[..., Any], outcomes: dict[int, Any],
                    on_file: Callable[[int], None] | None) -> None:
    """Fill ``outcomes`` (index -> what ``read(source, None)`` returned, or the exception that
    is the file's failure) from one cluster task per source, largest first. Dask gives up on
    every task that was on a worker when it died, not only the one that killed it: those are
    read again one at a time, as the local pool does, so only the file that kills is lost."""
    distributed = _distributed()
    from accelscope.traces.parallel import WORKER_DIED

    order = sorted(range(len(sources)), key=lambda i: -sources[i].size_bytes)
    with _session(cluster) as client:

        def run(indices: list[int]) -> list[int]:
            """Outcomes of ``indices``; returns those whose worker died."""
            died = []
            futures = {client.submit(read, sources[i], None, pure=False, retries=0): i for i in indices}
            for future in distributed.as_completed(list(futures), loop=client.loop):
                i = futures[future]
                if future.status == "cancelled":  # the scheduler went away
                    raise CancelledError(f"{len(sources) - len(outcomes)} of {len(sources)} files unread")
                exc = future.exception() if future.status == "error" else None
                if isinstance(exc, distributed.KilledWorker):
                    died.append(i)
                    continue
                if exc is not None and not isinstance(exc, AccelscopeError):
                    raise exc
                outcomes[i] = exc if exc is not None else future.result()
                if on_file is not None:
                    on_file(sources[i].size_bytes)
            return died

        for i in run(order):
            if run([i]):
                outcomes[i] = AccelscopeError(f"{sources[i].location}: {WORKER_DIED}")
                if on_file is not None:
                    on_file(sources[i].size_bytes)


def map_on_cluster(cluster: Any, fn: Callable[..., Any], args: list[tuple]) -> list[Any]:
    """``fn(*a)`` for every ``a`` in ``args`` as tasks on the Dask cluster, results in order.
    A task's own exception is raised as it is; losing the scheduler is one ClusterError."""
    with _session(cluster) as client:
        futures = [client.submit(fn, *a, pure=False, retries=0) for a in args]
        return [future.result() for future in futures]

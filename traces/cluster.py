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

from collections.abc import Callable
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


def read_on_cluster(cluster: Any, sources: list[Source], read: Callable[..., Any], outcomes: dict[int, Any],
                    on_file: Callable[[int], None] | None) -> None:
    """Fill ``outcomes`` (index -> what ``read(source, None)`` returned, or the exception that
    is the file's failure) from one cluster task per source, largest first."""
    distributed = _distributed()
    from accelscope.traces.parallel import WORKER_DIED

    client, owned = connect(cluster)
    address = getattr(client, "scheduler", None) and client.scheduler.address
    order = sorted(range(len(sources)), key=lambda i: -sources[i].size_bytes)
    try:
        futures = {client.submit(read, sources[i], None, pure=False, retries=0): i for i in order}
        for future in distributed.as_completed(list(futures), loop=client.loop):
            i = futures[future]
            status = future.status
            if status == "finished":
                outcomes[i] = future.result()
            elif status == "error":
                exc = future.exception()
                if isinstance(exc, distributed.KilledWorker):
                    outcomes[i] = AccelscopeError(f"{sources[i].location}: {WORKER_DIED}")
                elif isinstance(exc, AccelscopeError):
                    outcomes[i] = exc
                else:
                    raise exc
            else:  # cancelled: the scheduler went away
                raise ClusterError(f"lost the connection to the Dask scheduler at {address} with "
                                   f"{len(sources) - len(outcomes)} of {len(sources)} files unread; no run was written")
            if on_file is not None:
                on_file(sources[i].size_bytes)
    except (OSError, TimeoutError, distributed.comm.CommClosedError) as exc:
        raise ClusterError(f"lost the connection to the Dask scheduler at {address} ({_first_line(exc)}); no run was written") from None
    finally:
        if owned:
            try:
                client.close(timeout=5)
            except Exception:  # closing a client whose scheduler is gone may itself fail
                pass


def map_on_cluster(cluster: Any, fn: Callable[..., Any], args: list[tuple]) -> list[Any]:
    """``fn(*a)`` for every ``a`` in ``args`` as tasks on the Dask cluster, results in order.
    A task's own exception is raised as it is; losing the scheduler is one ClusterError."""
    distributed = _distributed()
    client, owned = connect(cluster)
    address = getattr(client, "scheduler", None) and client.scheduler.address
    try:
        futures = [client.submit(fn, *a, pure=False, retries=0) for a in args]
        # Each result raises the task's own exception, or CancelledError when the scheduler is gone.
        return [future.result() for future in futures]
    except (OSError, TimeoutError, distributed.comm.CommClosedError, _cancelled()) as exc:
        raise ClusterError(f"lost the connection to the Dask scheduler at {address} ({_first_line(exc) or 'tasks cancelled'})") from None
    finally:
        if owned:
            try:
                client.close(timeout=5)
            except Exception:  # closing a client whose scheduler is gone may itself fail
                pass


def _cancelled() -> type[BaseException]:
    from concurrent.futures import CancelledError

    return CancelledError

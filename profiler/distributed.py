"""Rank-aware recording: which rank this process is, which run directory its job records
into, and how its clock relates to the reference rank's.

* ``detect``: the rank and world size from an initialised ``torch.distributed`` process
  group, else the launcher's environment (torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``,
  Open MPI's ``OMPI_COMM_WORLD_*``, Slurm's ``SLURM_PROCID``/``SLURM_NTASKS``), else
  ``TF_CONFIG`` (tf.distribute), else JAX's ``process_index``.
* ``Coordinator``: with a torch process group, a small gloo side group (never the
  training's own communicator, so NCCL jobs work too): rank 0 claims the run directory
  and broadcasts it, and each rank measures its clock against rank 0's with NTP-style
  timestamp exchanges, keeping the best round trip. Without one, the ranks claim the same
  directory through its ``job.json`` (traces/ranks.py), keyed by what the launcher set for
  the job, and keep their host epoch clocks.

Nothing here may stop training: every failure falls back to the next method with a log line.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelscope.traces import ranks

log = logging.getLogger("accelscope")

CLOCK_ROUNDS = 32  # timestamp exchanges per rank; the one with the shortest round trip is kept
SIDE_GROUP_TIMEOUT_S = 30  # how long rank exchanges may block before accelscope gives up on them
_JOB_ENV = (
    "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_STEP_ID",
    "PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "TF_CONFIG", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE",
)


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    source: str  # where the rank came from: "torch.distributed", "RANK", "TF_CONFIG", "jax", "argument", "default"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(*names: str) -> tuple[int | None, str | None]:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value), name
    return None, None


def _torch_group() -> Any | None:
    """``torch.distributed`` when a default process group is initialised (never imports torch)."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    try:
        return dist if dist is not None and dist.is_available() and dist.is_initialized() else None
    except Exception:
        return None


def _tf_config() -> tuple[int, int] | None:
    """(rank, world size) from TF_CONFIG: the chief first, then workers, in the cluster's order."""
    try:
        cfg = json.loads(os.environ.get("TF_CONFIG", ""))
        cluster, task = cfg["cluster"], cfg["task"]
        order = [t for t in ("chief", "master", "worker") if t in cluster]
        rank = sum(len(cluster[t]) for t in order[: order.index(task["type"])]) + int(task["index"])
        return rank, sum(len(cluster[t]) for t in order)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _jax() -> tuple[int, int] | None:
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    try:
        count = int(jax.process_count())
        return (int(jax.process_index()), count) if count > 1 else None
    except Exception:
        return None


def detect(rank: int | None = None) -> RankInfo:
    """This process's rank in its job (see the module docstring for the order of sources)."""
    local, _ = _env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
    dist = _torch_group()
    if dist is not None:
        found = RankInfo(int(dist.get_rank()), int(dist.get_world_size()), local or 0, "torch.distributed")
    else:
        env_rank, name = _env_int("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")
        world, _ = _env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")
        if env_rank is not None:
            found = RankInfo(env_rank, max(world or 1, env_rank + 1), local or 0, name or "environment")
        elif (tf := _tf_config()) is not None:
            found = RankInfo(tf[0], tf[1], 0, "TF_CONFIG")
        elif (jx := _jax()) is not None:
            found = RankInfo(jx[0], jx[1], 0, "jax")
        else:
            found = RankInfo(0, 1, 0, "default")
    if rank is not None and rank != found.rank:
        return RankInfo(rank, max(found.world_size, rank + 1), found.local_rank, "argument")
    return found


def job_key() -> str:
    """What every rank of one job shares and two jobs do not: the launcher's job facts."""
    facts = {name: os.environ[name] for name in _JOB_ENV if name in os.environ}
    if "TF_CONFIG" in facts:  # every worker's TF_CONFIG names its own task: only the cluster is shared
        try:
            facts["TF_CONFIG"] = json.dumps(json.loads(facts["TF_CONFIG"]).get("cluster"), sort_keys=True)
        except (ValueError, AttributeError):
            pass
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Placement:
    run_dir: Path  # the job's run (what users open)
    part_dir: Path  # this rank's part of it


class Coordinator:
    """Puts one rank of a job into the job's run, and measures its clock against rank 0's."""

    def __init__(self, info: RankInfo, now_ns: Callable[[], int]):
        self.info = info
        self.now_ns = now_ns
        self._group: Any = None
        self._dist: Any = None
        self._responder: Any = None
        self._responder_addr: tuple[str, int] | None = None
        #: True until a torch process group was found (or given up on): ``adopt_group``
        #: looks again at each step, for scripts that initialise it after ``profile`` starts.
        self.awaiting_group = info.source != "argument"
        self.adopt_group()

    def adopt_group(self) -> bool:
        """Make the gloo side group if a torch process group exists now; True if it did.
        Every rank must call this at the same point (start, or the same step)."""
        dist = _torch_group() if self.awaiting_group else None
        if dist is None:
            return False
        self.awaiting_group = False
        if int(dist.get_world_size()) != self.info.world_size or int(dist.get_rank()) != self.info.rank:
            log.warning("accelscope: the process group (rank %s of %s) is not the job this run was placed for; clocks unsynchronised",
                        dist.get_rank(), dist.get_world_size())
            return False
        try:
            self._group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=SIDE_GROUP_TIMEOUT_S))
            self._dist = dist
            return True
        except Exception as exc:
            log.warning("accelscope: no gloo side group for rank exchanges (%s): ranks agree through job.json, clocks unsynchronised", exc)
            return False

    def place(self, requested: Path) -> Placement:
        """Claim (rank 0) or learn (the others) the job's run directory; make this rank's part."""
        run_dir = None
        if self._group is not None:
            try:
                run_dir = self._broadcast_claim(requested)
            except Exception as exc:
                log.warning("accelscope: could not agree on the run directory over the process group (%s); using job.json", exc)
                self._group = None
        if run_dir is None:
            run_dir = ranks.claim(requested, job_key(), self.info.rank, self.info.world_size)
        part = run_dir / ranks.rank_dir_name(self.info.rank)
        return Placement(run_dir, part)

    def _broadcast_claim(self, requested: Path) -> Path:
        box: list[Any] = [None]
        if self.info.rank == 0:
            key = f"{job_key()}-{os.getpid()}-{self.now_ns()}"  # unique: rank 0 decides alone
            box[0] = str(ranks.claim(requested, key, 0, self.info.world_size))
        self._dist.broadcast_object_list(box, src=0, group=self._group)
        return Path(box[0])

    def measure_clock(self) -> dict[str, Any] | None:
        """This rank's offset to rank 0's clock, now: ``{"at_ns", "offset_ns", "error_ns",
        "rtt_ns", "via"}`` (``offset_ns`` added to a local time gives rank 0's time; the true
        offset lies within ``error_ns`` of it, half the best round trip). Every rank calls it
        at the same point. Timestamps go over UDP to a responder thread in rank 0 (a round
        trip of ~30 µs on one host, against ~120 µs for gloo send/recv); a rank UDP cannot
        reach exchanges them over the gloo group instead. None without a group."""
        if self._group is None:
            return None
        try:
            if self._responder is None:
                self._start_responder()
            best = _udp_ping(self._responder_addr, self.now_ns) if self.info.rank != 0 else None
            failed = [None] * self.info.world_size
            self._dist.all_gather_object(failed, self.info.rank != 0 and best is None, group=self._group)
            via = "udp"
            for peer in (r for r, f in enumerate(failed) if f):
                got = self._gloo_ping(peer)
                if self.info.rank == peer:
                    best, via = got, "gloo"
        except Exception as exc:
            log.warning("accelscope: clock exchange with rank 0 failed (%s); this rank keeps its own clock", exc)
            self.close()
            return None
        if self.info.rank == 0:
            return {"at_ns": self.now_ns(), "offset_ns": 0, "error_ns": 0, "rtt_ns": 0, "via": "reference"}
        if best is None:
            return None
        rtt, offset, at = best
        return {"at_ns": at, "offset_ns": offset, "error_ns": (rtt + 1) // 2, "rtt_ns": rtt, "via": via}

    def _start_responder(self) -> None:
        """Rank 0: a UDP socket answering every datagram with rank 0's time; its address to all."""
        box: list[Any] = [None]
        if self.info.rank == 0:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", 0))
            self._responder = _Responder(sock, self.now_ns)
            box[0] = (socket.gethostname(), sock.getsockname()[1])
        self._dist.broadcast_object_list(box, src=0, group=self._group)
        host, port = box[0]
        self._responder_addr = ("127.0.0.1" if host == socket.gethostname() else host, port)
        if self.info.rank != 0:
            self._responder = True  # started (on rank 0)

    def _gloo_ping(self, peer: int) -> tuple[int, int, int] | None:
        """Timestamp exchanges between rank 0 and ``peer`` over the gloo group: (rtt, offset, at) on ``peer``."""
        import torch

        dist, group = self._dist, self._group
        buf = torch.zeros(1, dtype=torch.int64)
        best = None
        for _ in range(CLOCK_ROUNDS):
            if self.info.rank == 0:
                dist.recv(buf, src=peer, group=group)
                buf[0] = self.now_ns()
                dist.send(buf, dst=peer, group=group)
            elif self.info.rank == peer:
                t1 = self.now_ns()
                dist.send(buf, dst=0, group=group)
                dist.recv(buf, src=0, group=group)
                t3 = self.now_ns()
                if best is None or t3 - t1 < best[0]:
                    best = (t3 - t1, int(buf[0]) - (t1 + t3) // 2, (t1 + t3) // 2)
        return best

    def clock_method(self) -> str:
        if self._group is not None:
            return f"offset to rank 0, best of {CLOCK_ROUNDS} timestamp exchanges (NTP-style) over UDP (else the gloo group), at start and end"
        return "host epoch clock (no process group to measure through): ranks on one host share it; across hosts it is as good as their NTP sync"

    def close(self) -> None:
        if isinstance(self._responder, _Responder):
            self._responder.stop()
        self._responder = None
        if self._group is not None:
            try:
                self._dist.destroy_process_group(self._group)
            except Exception:
                pass
            self._group = None


def _udp_ping(addr: tuple[str, int], now_ns: Callable[[], int]) -> tuple[int, int, int] | None:
    """(rtt, offset, at) of the exchange with the shortest round trip, None if none came back."""
    best = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        for i in range(CLOCK_ROUNDS):
            token = i.to_bytes(8, "little")
            t1 = now_ns()
            try:
                sock.sendto(token, addr)
                while True:
                    data, _ = sock.recvfrom(64)
                    if data[:8] == token:  # not a late answer to an earlier, timed-out datagram
                        break
            except OSError:
                continue
            t3 = now_ns()
            if len(data) == 16 and (best is None or t3 - t1 < best[0]):
                best = (t3 - t1, int.from_bytes(data[8:], "little", signed=True) - (t1 + t3) // 2, (t1 + t3) // 2)
    return best


class _Responder:
    """Rank 0's side of the UDP exchanges: a daemon thread echoing each datagram with the time."""

    def __init__(self, sock: socket.socket, now_ns: Callable[[], int]):
        self._sock = sock
        self._now_ns = now_ns
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name="accelscope-clock", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                data, addr = self._sock.recvfrom(64)
                self._sock.sendto(data[:8] + self._now_ns().to_bytes(8, "little", signed=True), addr)
            except OSError:
                return

    def stop(self) -> None:
        self._stopped = True
        try:
            self._sock.sendto(b"", self._sock.getsockname())  # wake the blocked recvfrom
        except OSError:
            pass
        self._thread.join(timeout=1)
        self._sock.close()

"""The public profiling API: ``accelscope.profile``, ``prof.step``, ``prof.iter``, ``prof.region``.

Everything on the training thread is an append to an in-memory queue; collectors and
the writer run in background threads. No failure inside accelscope propagates into the
training loop: a broken collector is stopped, recorded as dropped in the run metadata,
and warned about once.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from accelscope import __version__, oom_capture
from accelscope import distributed as D
from accelscope.collectors import torch_cuda
from accelscope.collectors.base import Collector, CollectorContext, CollectorUnavailable
from accelscope.collectors.registry import Settings, built_in
from accelscope.live import StepRecord
from accelscope.schedule import Schedule
from accelscope.traces import schema as S
from accelscope.traces.run import RunWriter, unique_run_dir

log = logging.getLogger("accelscope")
T = TypeVar("T")
Mode = Literal["full", "light"]
FRAMEWORKS = ("torch", "tensorflow", "none")


def detect_framework() -> str:
    """The framework the program already imported (accelscope never imports one to find out)."""
    if "torch" in sys.modules:
        return "torch"
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        return "tensorflow"
    return "none"


class Region:
    """A named span of host work; use as ``with prof.region("fwd"):`` or ``@prof.region("fwd")``."""

    def __init__(self, prof: Profiler, name: str):
        self._prof = prof
        self.name = name
        self._starts = threading.local()

    def __enter__(self) -> Region:
        stack = getattr(self._starts, "stack", None)
        if stack is None:
            stack = self._starts.stack = []
        stack.append(self._prof.now_ns())
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._prof.now_ns()
        start = self._starts.stack.pop()
        self._prof._record(S.ANNOTATION, self.name, start, end)

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            with self:
                return fn(*args, **kwargs)

        return wrapper


class Profiler:
    """Records one run. Create it with :func:`profile`."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        mode: Mode = "full",
        framework: str = "auto",
        schedule: Schedule | None = None,
        host_interval_s: float = 0.1,
        flush_interval_s: float = 1.0,
        rank: int | None = None,
        collectors: Iterable[Collector] = (),
        live: bool = True,
        distributed: bool | None = None,
        profile_memory: bool = True,
    ):
        if mode not in ("full", "light"):
            raise ValueError(f"mode must be 'full' or 'light', got {mode!r}")
        if framework != "auto" and framework not in FRAMEWORKS:
            raise ValueError(f"framework must be 'auto' or one of {FRAMEWORKS}, got {framework!r}")
        if host_interval_s <= 0:
            raise ValueError(f"host_interval_s must be > 0, got {host_interval_s}")
        self.requested_dir = Path(out_dir)
        self.mode = mode
        self.framework = framework
        self.schedule = schedule if schedule is not None else Schedule()
        self.host_interval_s = host_interval_s
        self.flush_interval_s = flush_interval_s
        self._rank_arg = rank
        self.distributed = distributed
        self.profile_memory = profile_memory
        self.rank_info = D.detect(rank)
        self.rank = self.rank_info.rank
        self.pid = os.getpid()
        self.run_dir: Path | None = None  # the run users open (a multi-rank job's: every rank's)
        self.part_dir: Path | None = None  # where this process writes (run_dir, or run_dir/rank-N)
        self._coord: D.Coordinator | None = None
        self._clock_samples: list[dict[str, Any]] = []
        self.steps = 0
        self._extra_collectors = list(collectors)
        self.live = live
        self._live = None
        self._step_wait_ns = 0
        self._input_timed = False
        self._collectors: list[Collector] = []
        self._step_collectors: list[Collector] = []
        self._writer: RunWriter | None = None
        self._offset_ns = time.time_ns() - time.perf_counter_ns()
        self._enter_ns = 0
        self._step_start_ns: int | None = None
        self._last_step_ns: tuple[int, int] | None = None  # (start, end) of the step that ended last
        self._failed: set[str] = set()
        self._fail_lock = threading.Lock()
        self._watchdog_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._active = False
        self._error: str | None = None  # what the training loop raised (``failed``)
        self._watch_ooms = False  # still to attach torch's CUDA OOM observer (CUDA not initialised yet)

    # -- clock ------------------------------------------------------------------------
    def now_ns(self) -> int:
        """Now on the run's clock: Unix epoch ns, advanced by the monotonic perf counter."""
        return time.perf_counter_ns() + self._offset_ns

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> Profiler:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.failed(exc)
        self.stop()  # never swallows: the exception goes on, the same object

    def start(self) -> Profiler:
        framework = detect_framework() if self.framework == "auto" else self.framework
        self.framework = framework
        self.rank_info = D.detect(self._rank_arg)
        self.rank = self.rank_info.rank
        try:
            self._place()
            self._writer = RunWriter(self.part_dir, self._initial_meta(framework), self.flush_interval_s)
        except OSError as exc:
            log.error("accelscope: cannot record to %s (%s); profiling is off, training continues", self.requested_dir, exc)
            self._writer = None
            return self
        self._writer.set_thread_name(self.pid, threading.get_native_id(), f"{threading.current_thread().name} (training)")
        if self.live:
            from accelscope.live import LiveAnalyzer

            self._live = LiveAnalyzer(self.part_dir)
            self._writer.counter_listener = self._live.on_counter
        ctx = CollectorContext(self._writer, self.now_ns, self.pid, self.rank, self._report_failure, lambda: self._last_step_ns)
        settings = Settings(self.mode, framework, self.schedule, self.host_interval_s, self.part_dir, self.profile_memory)
        candidates = built_in(settings, {c.name for c in self._extra_collectors}, self._report_failure) + list(self._extra_collectors)
        for collector in candidates:
            try:
                collector.start(ctx)
            except CollectorUnavailable as exc:
                self._writer.set_collector_status(collector.name, "unavailable", str(exc))
                log.info("accelscope: collector %s unavailable: %s", collector.name, exc)
                continue
            except Exception as exc:
                self._drop(collector, f"failed to start: {type(exc).__name__}: {exc}")
                continue
            self._collectors.append(collector)
            with self._fail_lock:  # a sampler may already have failed on its own thread
                if collector.name not in self._failed:
                    self._writer.set_collector_status(collector.name, "ok")
        # (A collector that reported a failure while starting is already dropped.)
        self._step_collectors = [c for c in self._collectors if type(c).on_step is not Collector.on_step and c.name not in self._failed]
        if any(c.background for c in self._collectors):
            self._watchdog = threading.Thread(target=self._watch, name="accelscope-watchdog", daemon=True)
            self._watchdog.start()
        self._sync_clock()
        self._watch_ooms = framework == "torch" and torch_cuda.call("cuda.is_available") is True
        if self._watch_ooms:
            self._attach_oom_observer()
        self._enter_ns = self.now_ns()
        self._active = True
        return self

    def _place(self) -> None:
        """Pick the run directory: this process's own, or its rank's part of its job's run."""
        if self.rank_info.distributed and self.distributed is not False:
            self._coord = D.Coordinator(self.rank_info, self.now_ns)
            placement = self._coord.place(self.requested_dir)
            self.run_dir, self.part_dir = placement.run_dir, placement.part_dir
            if self.rank == 0 and self.run_dir != self.requested_dir:
                log.warning("accelscope: %s already holds a run; this job records to %s", self.requested_dir, self.run_dir)
            return
        self.run_dir = self.part_dir = unique_run_dir(self.requested_dir)
        if self.run_dir != self.requested_dir:
            log.warning("accelscope: %s already holds a run; recording to %s", self.requested_dir, self.run_dir)

    def _sync_clock(self) -> None:
        """Measure this rank's offset to rank 0's clock (when there is a process group) into the metadata."""
        if self._coord is None or self._writer is None:
            return
        sample = self._coord.measure_clock()
        if sample is not None:
            self._clock_samples.append(sample)
        errors = [s["error_ns"] for s in self._clock_samples]
        self._writer.update_meta(clock_sync={
            "reference_rank": 0,
            "method": self._coord.clock_method(),
            "samples": self._clock_samples,
            "error_ns": max(errors) if errors else None,
        })

    def _initial_meta(self, framework: str) -> dict[str, Any]:
        fw: dict[str, Any] = {"name": framework}
        devices: list[dict[str, Any]] = [{"id": "cpu", "kind": "cpu", "name": platform.processor() or platform.machine(), "cores": os.cpu_count()}]
        mod = sys.modules.get(framework)
        if mod is not None:
            fw["version"] = getattr(mod, "__version__", None)
        if framework == "torch" and mod is not None:
            try:
                if mod.cuda.is_available():
                    for i in range(mod.cuda.device_count()):
                        props = mod.cuda.get_device_properties(i)
                        devices.append({"id": f"cuda:{i}", "kind": "gpu", "name": props.name, "memory_total_bytes": props.total_memory})
            except Exception as exc:  # a broken CUDA install must not stop training
                log.info("accelscope: could not list CUDA devices: %s", exc)
        return {
            "accelscope_version": __version__,
            "clock": {"name": "unix_epoch_ns", "source": "time.perf_counter_ns anchored to time.time_ns at start"},
            "host": socket.gethostname(),
            "pid": self.pid,
            "python": platform.python_version(),
            "argv": list(sys.argv),
            "framework": fw,
            "devices": devices,
            "mode": self.mode,
            "schedule": self.schedule.to_dict() if self.mode == "full" else None,
            "rank": self.rank,
            "ranks": [self.rank],
            "world_size": self.rank_info.world_size,
            "rank_source": self.rank_info.source,
            "host_interval_s": self.host_interval_s,
            "start_ns": time.time_ns(),
            "collectors": {},
        }

    def stop(self, error: str | None = None) -> None:
        """Stop every collector and close the run; ``error``: what ended training, if something
        did (``failed`` already noted it when the loop raised inside ``with``)."""
        if not self._active:
            return
        error = error or self._error
        self._active = False
        self._watchdog_stop.set()
        for collector in self._collectors:
            if collector.name in self._failed:
                continue
            try:
                collector.stop()
            except Exception as exc:
                self._drop(collector, f"failed to stop: {type(exc).__name__}: {exc}")
        if self._live is not None:
            self._live.close()
        if self._coord is not None:
            if not error:  # a failing job's peers may be gone: no exchange that could block
                self._sync_clock()
            self._coord.close()
        final: dict[str, Any] = {"end_ns": self.now_ns(), "steps": self.steps}
        if error:
            final["training_error"] = error
        self._writer.close(**final)

    # -- a training loop that raised ----------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        """Note that the training loop raised ``exc`` (``__exit__`` calls this; so does
        ``accelscope run``, which catches the script's exception itself): kept as the run's
        ``training_error``; an out-of-memory error also records the memory state at the
        failure (``meta["oom"]``, ``oom_capture.py``), and the framework profiler's open window
        keeps the failing step up to the error (``Collector.on_error``). Never raises, never
        touches ``exc``: recording that fails is warned about and the exception goes on."""
        if not self._active or self._writer is None:
            return
        now = self.now_ns()
        step = self.steps
        start = self._step_start_ns if self._step_start_ns is not None else self._enter_ns
        try:
            self._error = f"{type(exc).__name__}: {exc}"
            what = oom_capture.kind(exc)
            if what is not None:
                oom = oom_capture.record(exc, what, step=step, rank=self.rank, now_ns=now, step_start_ns=start, offset_ns=self._offset_ns)
                self._writer.update_meta(oom=oom)
                log.warning("accelscope: out of memory in step %d%s: the memory state at the failure is recorded in %s",
                            step, f" on {oom['device']}" if oom["device"] else "", self.run_dir)
        except Exception as record_exc:  # never in the way of the training's own exception
            log.warning("accelscope: could not record the out-of-memory state (%s: %s)", type(record_exc).__name__, record_exc)
        for collector in self._collectors:
            if collector.name in self._failed:
                continue
            try:
                collector.on_error(step, (start, now))
            except Exception as hook_exc:
                self._drop(collector, f"{type(hook_exc).__name__} in on_error: {hook_exc}")

    def _attach_oom_observer(self) -> None:
        """Attach torch's CUDA OOM observer once CUDA is initialised (attaching would initialise
        it): at start, else at the steps' ends until it is, or cannot be."""
        got = torch_cuda.observe_ooms()
        if got is True or got is not torch_cuda.NO_CUDA:
            self._watch_ooms = False
            if got is not True:
                log.info("accelscope: torch's CUDA OOM observer not attached: %s", got.reason)

    # -- failure containment ------------------------------------------------------------
    def _report_failure(self, name: str, reason: str) -> None:
        """Called from any thread when a collector failed; marks it dropped, warns once."""
        with self._fail_lock:
            if name in self._failed:
                return
            self._failed.add(name)
        self._step_collectors = [c for c in self._step_collectors if c.name != name]
        if self._writer is not None:
            self._writer.set_collector_status(name, "dropped", reason)
        log.warning("accelscope: collector %s dropped: %s (training continues)", name, reason)

    def _drop(self, collector: Collector, reason: str) -> None:
        self._report_failure(collector.name, reason)
        if collector not in self._collectors:
            return
        try:
            collector.stop()
        except Exception:
            pass

    def _watch(self) -> None:
        while not self._watchdog_stop.wait(1.0):
            now = time.monotonic_ns()
            for c in self._collectors:
                if c.background and c.name not in self._failed and c.heartbeat_ns is not None:
                    if now - c.heartbeat_ns > c.hang_timeout_s * 1e9:
                        self._report_failure(c.name, f"hung: no sample for more than {c.hang_timeout_s:.0f} s")

    # -- recording (training thread) -----------------------------------------------------
    def _record(self, kind: str, name: str, start_ns: int, end_ns: int, args: str | None = None) -> None:
        if self._writer is not None:
            self._writer.add_event((start_ns, end_ns - start_ns, kind, name, "cpu", None, self.pid, threading.get_native_id(), self.rank, None, args))

    def start_step(self) -> None:
        """Mark that the next step starts now.

        By default a step starts where the previous one ended; loops that do other work
        between steps (validation, callbacks) call this so that work stays out of steps.
        """
        if self._active:
            self._step_start_ns = self.now_ns()
            self._step_wait_ns = 0

    def step(self) -> None:
        """Mark the end of one training step (and the start of the next)."""
        if not self._active:
            return
        now = self.now_ns()
        start = self._step_start_ns if self._step_start_ns is not None else self._enter_ns
        index = self.steps
        self._record(S.STEP, S.step_name(index), start, now)
        self._last_step_ns = (start, now)
        self.steps = index + 1
        self._step_start_ns = now
        if self._live is not None:
            self._live.on_step(StepRecord(index, start, now, self._step_wait_ns))
        self._step_wait_ns = 0
        if self._coord is not None and self._coord.awaiting_group and self._coord.adopt_group():
            self._sync_clock()  # the script initialised its process group after profile() started
        if self._watch_ooms:
            self._attach_oom_observer()
        for collector in self._step_collectors:
            try:
                collector.on_step(index)
            except Exception as exc:
                self._drop(collector, f"{type(exc).__name__} in on_step: {exc}")

    def iter(self, iterable: Iterable[T]) -> Iterator[T]:
        """Iterate ``iterable``, recording every wait for the next item as an input wait."""
        label = f"next({type(iterable).__name__})"
        self._note_input_pipeline(iterable)
        it = iter(iterable)
        while True:
            t0 = self.input_wait_started()
            try:
                item = next(it)
            except StopIteration:
                self.input_wait_ended(label + " [exhausted]", t0)
                return
            self.input_wait_ended(label, t0)
            yield item

    def input_wait_started(self) -> int:
        """Now, as the start of a wait for input (the first one also starts step 0)."""
        t0 = self.now_ns()
        if self._step_start_ns is None:
            self._step_start_ns = t0
        return t0

    def input_wait_ended(self, label: str, start_ns: int) -> None:
        """Record the wait for input that began at ``start_ns`` (for loaders not behind ``iter``)."""
        if self._active:
            t1 = self.now_ns()
            self._record(S.INPUT_WAIT, label, start_ns, t1)
            self._step_wait_ns += t1 - start_ns
            if not self._input_timed and self._writer is not None:
                self._input_timed = True
                self._writer.update_meta(input_timing="every step")

    def _note_input_pipeline(self, iterable: object) -> None:
        """Record a DataLoader's settings, the evidence behind input-wait advice."""
        if self._writer is None or not hasattr(iterable, "num_workers"):
            return
        info: dict[str, Any] = {"type": type(iterable).__name__}
        for attr in ("num_workers", "batch_size", "pin_memory", "prefetch_factor", "persistent_workers"):
            value = getattr(iterable, attr, None)
            if isinstance(value, (int, float, bool, str)) or value is None:
                info[attr] = value
        self._writer.update_meta(input_pipeline=info)

    def region(self, name: str) -> Region:
        """A named span, as a context manager or a decorator."""
        return Region(self, name)


def profile(
    out_dir: str | os.PathLike[str],
    *,
    mode: Mode = "full",
    framework: str = "auto",
    schedule: Schedule | None = None,
    host_interval_s: float = 0.1,
    flush_interval_s: float = 1.0,
    rank: int | None = None,
    collectors: Iterable[Collector] = (),
    live: bool = True,
    distributed: bool | None = None,
    profile_memory: bool = True,
) -> Profiler:
    """Profile a training loop into the run directory ``out_dir``.

    ``mode="light"`` records host metrics, steps and input waits only; ``"full"`` adds the
    framework's op/kernel trace in the windows ``schedule`` picks. ``out_dir`` is never
    overwritten: if it already holds a run, ``out_dir.1`` (``.2``, ...) is used and
    ``prof.run_dir`` says which. ``live=True`` flags input-bound steps while training
    runs (a log line, and ``RUN/live.json`` for the dashboard).

    In a distributed job (torch.distributed, torchrun/MPI/Slurm environment, TF_CONFIG,
    JAX multi-process) every rank calls ``profile`` with the same ``out_dir`` and the job
    records ONE run: each rank into ``run_dir/rank-N/``, on rank 0's clock (measured over a
    gloo side group when a torch process group exists). ``rank`` overrides the detected
    rank; ``distributed=False`` records this process alone, as a single-process run.

    In full mode with PyTorch, ``profile_memory=True`` also records every allocator call in
    the traced windows (torch.profiler's ``profile_memory``: the memory peaks and leaks of
    ``accelscope analyze``); ``profile_memory=False`` leaves them out, for a cheaper trace.

    An exception from the training loop goes on unchanged. When it is an out-of-memory error
    (``torch.OutOfMemoryError``, torch's CPU allocator, TF's ``ResourceExhaustedError``), the
    run first records the memory state at the failure, and the profiler window open then
    keeps the failing step's allocations: ``accelscope analyze`` opens with it.
    """
    return Profiler(
        out_dir,
        mode=mode,
        framework=framework,
        schedule=schedule,
        host_interval_s=host_interval_s,
        flush_interval_s=flush_interval_s,
        rank=rank,
        collectors=collectors,
        live=live,
        distributed=distributed,
        profile_memory=profile_memory,
    )

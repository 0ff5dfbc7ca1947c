"""TensorFlow op timelines through the TensorFlow profiler, in bounded windows.

The TF profiler runs only in the windows accelscope's ``Schedule`` picks (warm-up steps
are traced and discarded, as torch.profiler does). When a window ends, the profiler's
XSpace is written to a temporary directory on the training thread (TF offers no other
hand-off; a few ms), and a converter thread reads it with the XPlane importer, keeps
the recorded steps' events, and deletes the files. ``IteratorGetNext`` ops (the step
blocked on tf.data) arrive as input-wait spans, so ``model.fit`` gets input waits even
though Python never sees the iterator.

Step markers in the trace (``tf.profiler.experimental.Trace("train", _r=1)``, Keras'
"Profiled batch") are kept as annotations: the run's steps are those ``prof.step()``
marked. Host lanes that TF reports for "this process" get the run's pid.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from accelscope.collectors.base import Collector, CollectorContext, CollectorUnavailable, TracedSteps, Window, window_events, window_memory
from accelscope.schedule import TRANSITIONS, Action, Schedule
from accelscope.traces import xplane

log = logging.getLogger("accelscope")


class TensorFlowProfilerCollector(Collector):
    name = "tensorflow_profiler"

    def __init__(self, schedule: Schedule, tmp_dir: Path, host_tracer_level: int = 2, python_tracer: bool = False):
        self.schedule = schedule
        self.tmp_dir = Path(tmp_dir)
        self.host_tracer_level = host_tracer_level
        self.python_tracer = python_tracer
        self.windows_saved = 0
        self.windows_converted = 0
        self._tf = None
        self._options = None
        self._action = Action.NONE
        self._tracing = False
        self._record_from_ns: int | None = None
        self._logdir: Path | None = None
        self._window: Window | None = None  # the recorded steps that ended in this window
        self._traced: TracedSteps | None = None
        self._queue: queue.Queue[tuple[Path, int, int, Window | None] | None] = queue.Queue()
        self._converter: threading.Thread | None = None
        self.ctx: CollectorContext | None = None

    def start(self, ctx: CollectorContext) -> None:
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise CollectorUnavailable(f"tensorflow is not importable ({exc}): pip install 'accelscope[tf]'") from None
        self.ctx = ctx
        self._tf = tf
        self._options = tf.profiler.experimental.ProfilerOptions(
            host_tracer_level=self.host_tracer_level,
            python_tracer_level=1 if self.python_tracer else 0,
            device_tracer_level=1,
        )
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._traced = TracedSteps(ctx, self.name)
        self._converter = threading.Thread(target=self._convert_loop, name="accelscope-tf-convert", daemon=True)
        self._converter.start()
        self._enter(self.schedule(0))

    # -- windows (training thread) ---------------------------------------------------------
    def on_step(self, step: int) -> None:
        self._recorded(step, self.ctx.last_step_ns())
        self._enter(self.schedule(step + 1))

    def on_error(self, step: int, span: tuple[int, int]) -> None:
        # the window that stop() closes then holds the failing step, up to the error
        self._recorded(step, span)

    def _recorded(self, step: int, span: tuple[int, int] | None) -> None:
        if self._action in (Action.RECORD, Action.RECORD_AND_SAVE):  # step ``step`` was recorded
            if self._window is None:
                self._window = Window(step, span)
            else:
                self._window.add(step, span)

    def _enter(self, action: Action) -> None:
        """Apply the tracer transitions from the current action to ``action``."""
        for what in TRANSITIONS[(self._action, action)]:
            if what == "prepare":
                self._start_tracing()
            elif what == "start":
                self._record_from_ns = self.ctx.now_ns()
            elif what == "stop":
                self._stop_tracing(save=True)
        self._action = action

    def _start_tracing(self) -> None:
        self._logdir = self.tmp_dir / f"window-{self.windows_saved:05d}"
        try:
            self._tf.profiler.experimental.start(str(self._logdir), options=self._options)
        except Exception as exc:
            # Usually another profiler session (TensorBoard's profile_batch) is running.
            raise RuntimeError(f"could not start the TensorFlow profiler: {' '.join(str(exc).split())}") from None
        self._tracing = True

    def _stop_tracing(self, save: bool) -> None:
        if not self._tracing:
            return
        self._tracing = False
        record_to_ns = self.ctx.now_ns()
        # The window holds the recorded steps that ended (fewer when stop() cut it short).
        window, self._window = self._window, None
        self._tf.profiler.experimental.stop(save=save)
        if save and self._record_from_ns is not None:
            self.windows_saved += 1
            self._queue.put((self._logdir, self._record_from_ns, record_to_ns, window))
        elif self._logdir is not None:
            shutil.rmtree(self._logdir, ignore_errors=True)
        self._record_from_ns = None

    # -- conversion (converter thread) -----------------------------------------------------------
    def _convert_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            logdir, record_from_ns, record_to_ns, window = item
            try:
                self._convert(logdir, record_from_ns, record_to_ns, window)
                self.windows_converted += 1
                if window is not None:
                    self._traced.landed(window.steps)
                shutil.rmtree(logdir, ignore_errors=True)
            except Exception as exc:  # keep the files for the user; report, keep converting
                log.warning("accelscope: could not convert TensorFlow profiler window %s: %s", logdir, exc)

    def _convert(self, logdir: Path, record_from_ns: int, record_to_ns: int, window: Window | None) -> None:
        files = sorted(logdir.rglob("*.xplane.pb"))
        if not files:
            raise FileNotFoundError(f"the TensorFlow profiler wrote no .xplane.pb under {logdir}")
        for path in files:
            imported = xplane.read_xplane(path, rank=self.ctx.rank, keep_steps=False)
            # Warm-up steps were traced only to settle the tracer, and what began after the
            # window's last step is not part of it: keep the recorded steps' events.
            events = window_events(imported.events, window, from_ns=record_from_ns, to_ns=record_to_ns)
            self.ctx.writer.add_table("events", self._own_pid(events, pc.equal(events["device"], "cpu")))
            if imported.memory is not None:
                # Allocator calls are host-side: kept within the recorded steps, as host events are.
                memory = window_memory(imported.memory, window, from_ns=record_from_ns, to_ns=record_to_ns)
                if memory.num_rows:
                    self.ctx.writer.add_table("memory", self._own_pid(memory))
            if imported.counters.num_rows:
                self.ctx.writer.add_table("counters", imported.counters)
            for t in imported.meta.get("threads", []):
                self.ctx.writer.set_thread_name(self.ctx.pid if t["pid"] == 0 else t["pid"], t["tid"], t["name"])
            devices = [d for d in imported.meta.get("devices", []) if d.get("kind") != "cpu"]
            if devices:
                self.ctx.writer.update_meta(tensorflow_devices=devices)

    def _own_pid(self, table: pa.Table, on_host: pa.ChunkedArray | None = None) -> pa.Table:
        """``table`` with the XPlane's host pid 0 (rows ``on_host``, else all) as this process's."""
        host = pc.equal(table["pid"], 0) if on_host is None else pc.and_(on_host, pc.equal(table["pid"], 0))
        pid = pc.if_else(host, pa.scalar(self.ctx.pid, pa.int64()), table["pid"])
        return table.set_column(table.schema.get_field_index("pid"), "pid", pid)

    def stop(self) -> None:
        try:
            if self._tracing:
                # A window cut short by the end of training still holds recorded steps.
                self._stop_tracing(save=self._record_from_ns is not None)
        finally:
            self._queue.put(None)
            if self._converter is not None:
                self._converter.join(timeout=120)
            if self.windows_converted == self.windows_saved:  # else the files stay for the user
                shutil.rmtree(self.tmp_dir, ignore_errors=True)

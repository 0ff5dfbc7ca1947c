"""PyTorch op and kernel timelines through torch.profiler (Kineto), in bounded windows.

torch.profiler runs with accelscope's Schedule. When a window ends, Kineto's trace is
exported to a temporary file on the training thread (torch offers no cheaper hand-off),
and a converter thread turns it into event rows and deletes the file, so the training
loop pays for the export only.

With ``profile_memory`` (the default) torch also records every allocator call in the
windows; the converter writes those of the recorded steps into the run's memory table. A
window whose memory events cannot be written keeps its other events (a warning says so).
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from pathlib import Path

from accelscope.collectors.base import Collector, CollectorContext, CollectorUnavailable, TracedSteps, Window, window_events, window_memory
from accelscope.schedule import Action, Schedule
from accelscope.traces import kineto

log = logging.getLogger("accelscope")


class TorchProfilerCollector(Collector):
    name = "torch_profiler"

    def __init__(self, schedule: Schedule, tmp_dir: Path, record_shapes: bool = False, with_stack: bool = False, profile_memory: bool = True):
        self.schedule = schedule
        self.tmp_dir = Path(tmp_dir)
        self.record_shapes = record_shapes
        self.with_stack = with_stack
        self.profile_memory = profile_memory
        self.windows_saved = 0
        self._prof = None
        self._window: Window | None = None  # the recorded steps that ended since the last save
        self._traced: TracedSteps | None = None
        self._queue: queue.Queue[tuple[Path, Window | None] | None] = queue.Queue()
        self._converter: threading.Thread | None = None
        self.ctx: CollectorContext | None = None

    def start(self, ctx: CollectorContext) -> None:
        try:
            import torch
            from torch.profiler import ProfilerAction, ProfilerActivity, profile
        except ImportError as exc:
            raise CollectorUnavailable(f"torch is not importable ({exc}): pip install 'accelscope[torch]'") from None
        self.ctx = ctx
        to_torch = {
            Action.NONE: ProfilerAction.NONE,
            Action.WARMUP: ProfilerAction.WARMUP,
            Action.RECORD: ProfilerAction.RECORD,
            Action.RECORD_AND_SAVE: ProfilerAction.RECORD_AND_SAVE,
        }
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._traced = TracedSteps(ctx, self.name)
        self._converter = threading.Thread(target=self._convert_loop, name="accelscope-torch-convert", daemon=True)
        self._converter.start()
        # torch warns, from inside step(), that each window's events are cleared when the
        # window is saved: that is exactly what bounded windows want. Silence only that.
        warnings.filterwarnings("ignore", message=".*Profiler clears events at the end of each cycle", category=UserWarning)
        self._prof = profile(
            activities=activities,
            schedule=lambda step: to_torch[self.schedule(step)],
            on_trace_ready=self._on_trace_ready,
            record_shapes=self.record_shapes,
            with_stack=self.with_stack,
            profile_memory=self.profile_memory,
        )
        self._prof.start()

    def _on_trace_ready(self, prof) -> None:
        path = self.tmp_dir / f"window-{self.windows_saved:05d}.json"
        prof.export_chrome_trace(str(path))
        self.windows_saved += 1
        # The window holds the recorded steps that ended since the last save (at stop(), a
        # window cut short holds fewer; none when it had just begun).
        window, self._window = self._window, None
        self._queue.put((path, window))

    def _convert_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, window = item
            try:
                trace = kineto.read_kineto(path, rank=self.ctx.rank, keep_steps=False)
                # torch stops tracing inside prof.step(), after the window's last step ended:
                # keep the recorded steps' events.
                self.ctx.writer.add_table("events", window_events(trace.events, window))
                self._write_memory(trace.memory, window, path)
                for t in trace.threads:
                    self.ctx.writer.set_thread_name(t["pid"], t["tid"], t["name"])
                if trace.header.get("deviceProperties"):
                    self.ctx.writer.update_meta(device_properties=trace.header["deviceProperties"])
                if window is not None:
                    self._traced.landed(window.steps)
                path.unlink(missing_ok=True)
            except Exception as exc:  # keep the file for the user; report, keep converting
                log.warning("accelscope: could not convert torch.profiler window %s: %s", path, exc)

    def _write_memory(self, memory, window: Window | None, path: Path) -> None:
        """The window's allocator events of its recorded steps into the memory table; a
        failure here costs the window its memory events only."""
        if memory is None or not self.profile_memory:
            return
        try:
            self.ctx.writer.add_table("memory", window_memory(memory, window))
        except Exception as exc:
            log.warning("accelscope: could not record the allocator events of torch.profiler window %s: %s", path, exc)

    def on_step(self, step: int) -> None:
        # torch's step_num is the run's step number: torch.profiler traced step ``step``
        # under schedule(step), and its window closes inside this prof.step() after the
        # window's last step (on_trace_ready, above).
        self._recorded(step, self.ctx.last_step_ns())
        self._prof.step()

    def on_error(self, step: int, span: tuple[int, int]) -> None:
        # the window that stop() closes then holds the failing step, up to the error
        self._recorded(step, span)

    def _recorded(self, step: int, span: tuple[int, int] | None) -> None:
        """Step ``step``, over ``span``, is in the open window if torch.profiler recorded it."""
        if self.schedule(step) in (Action.RECORD, Action.RECORD_AND_SAVE):
            if self._window is None:
                self._window = Window(step, span)
            else:
                self._window.add(step, span)

    def stop(self) -> None:
        try:
            if self._prof is not None:
                self._prof.stop()
        finally:
            self._queue.put(None)
            if self._converter is not None:
                self._converter.join(timeout=120)
            try:
                self.tmp_dir.rmdir()
            except OSError:
                pass

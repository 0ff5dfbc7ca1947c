"""PyTorch op and kernel timelines through torch.profiler (Kineto), in bounded windows.

torch.profiler runs with accelscope's Schedule. When a window ends, Kineto's trace is
exported to a temporary file on the training thread (torch offers no cheaper hand-off),
and a converter thread turns it into event rows and deletes the file, so the training
loop pays for the export only.
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from pathlib import Path

from accelscope.collectors.base import Collector, CollectorContext, CollectorUnavailable, TracedSteps
from accelscope.schedule import Action, Schedule
from accelscope.traces import kineto

log = logging.getLogger("accelscope")


class TorchProfilerCollector(Collector):
    name = "torch_profiler"

    def __init__(self, schedule: Schedule, tmp_dir: Path, record_shapes: bool = False, with_stack: bool = False):
        self.schedule = schedule
        self.tmp_dir = Path(tmp_dir)
        self.record_shapes = record_shapes
        self.with_stack = with_stack
        self.windows_saved = 0
        self._prof = None
        self._last_step: int | None = None  # the step that ended last (torch's step_num - 1)
        self._saved_through: int | None = None  # the last step of the last window handed over
        self._traced: TracedSteps | None = None
        self._queue: queue.Queue[tuple[Path, tuple[int, int] | None] | None] = queue.Queue()
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
        )
        self._prof.start()

    def _on_trace_ready(self, prof) -> None:
        path = self.tmp_dir / f"window-{self.windows_saved:05d}.json"
        prof.export_chrome_trace(str(path))
        self.windows_saved += 1
        # torch's step_num is our step index: the window holds the steps up to the last that ended
        # (at stop(), a window cut short; none when it had just begun).
        window = self.schedule.window_of(self._last_step) if self._last_step is not None and self._last_step != self._saved_through else None
        if window is not None:
            self._saved_through = window[1]
        self._queue.put((path, window))

    def _convert_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, window = item
            try:
                trace = kineto.read_kineto(path, rank=self.ctx.rank, keep_steps=False)
                self.ctx.writer.add_table("events", trace.events)
                for t in trace.threads:
                    self.ctx.writer.set_thread_name(t["pid"], t["tid"], t["name"])
                if trace.header.get("deviceProperties"):
                    self.ctx.writer.update_meta(device_properties=trace.header["deviceProperties"])
                if window is not None:
                    self._traced.landed(window)
                path.unlink(missing_ok=True)
            except Exception as exc:  # keep the file for the user; report, keep converting
                log.warning("accelscope: could not convert torch.profiler window %s: %s", path, exc)

    def on_step(self, step: int) -> None:
        self._last_step = step
        self._prof.step()

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

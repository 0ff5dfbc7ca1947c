"""What every collector implements, and the containment that keeps its failures away
from the training loop.

A collector is started once, may be told about each step (``on_step``, called on the
training thread, so it must be cheap), and is stopped once. Background collectors run a
sampler thread and publish a heartbeat so a watchdog can tell when they hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from accelscope.traces.run import RunWriter

log = logging.getLogger("accelscope")


class NotAvailable:
    """A value a device library or service could not give; ``reason`` says why.

    Falsy and never equal to a number, so a sample is the value or one of these: the
    hardware wrappers (``libnvml``, ``libtpu``) return it instead of raising.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.reason}>"


def is_na(value: object) -> bool:
    """True for a :class:`NotAvailable` value."""
    return isinstance(value, NotAvailable)


class CollectorUnavailable(Exception):
    """Raised by ``start`` when a collector cannot run here (no driver, no framework)."""


@dataclass
class CollectorContext:
    """What a collector needs from the profiler."""

    writer: RunWriter
    now_ns: Callable[[], int]
    pid: int
    rank: int
    report_failure: Callable[[str, str], None] = field(repr=False)


class TracedSteps:
    """Which steps a framework profiler's windows held, kept in the run as the analyzer reads
    it: ``meta["traced_steps"] = {name: [[first, last], ...]}`` (inclusive step numbers). A
    window is listed once its events are in the run; an empty list says the profiler ran
    but no window landed (a run without the key was not traced in windows)."""

    def __init__(self, ctx: CollectorContext, name: str):
        self._ctx = ctx
        self._name = name
        self._windows: list[list[int]] = []
        self._lock = threading.Lock()
        ctx.writer.update_meta(traced_steps={name: []})

    def landed(self, window: tuple[int, int]) -> None:
        """Called (from any thread) once a window's events were written into the run."""
        with self._lock:
            self._windows.append([int(window[0]), int(window[1])])
            self._windows.sort()
            windows = [list(w) for w in self._windows]
        self._ctx.writer.update_meta(traced_steps={self._name: windows})


class Collector:
    name = "collector"
    #: True when the collector samples in its own thread and keeps ``heartbeat_ns`` fresh.
    background = False

    def start(self, ctx: CollectorContext) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_step(self, step: int) -> None:
        """Called on the training thread right after step ``step`` ended."""

    def stop(self) -> None:
        """Stop and flush everything recorded."""

    heartbeat_ns: int | None = None
    #: Seconds without a heartbeat after which the watchdog declares the collector hung.
    hang_timeout_s: float = 10.0


class SamplerCollector(Collector):
    """A collector that calls ``sample()`` every ``interval_s`` seconds in its own thread.

    An exception escaping ``sample`` stops the thread and reports the collector dropped;
    the training loop never sees it.
    """

    background = True

    def __init__(self, interval_s: float = 0.1):
        if interval_s <= 0:
            raise ValueError(f"{self.name}: sampling interval must be > 0 s, got {interval_s}")
        self.interval_s = interval_s
        self.hang_timeout_s = max(10.0, 50 * interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ctx: CollectorContext | None = None
        self.samples = 0

    def setup(self) -> None:
        """Called once on the sampler thread before the first sample."""

    def sample(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def start(self, ctx: CollectorContext) -> None:
        self.ctx = ctx
        self.heartbeat_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._loop, name=f"accelscope-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            self.setup()
            while True:
                self.heartbeat_ns = time.monotonic_ns()
                self.sample()
                self.samples += 1
                if self._stop.wait(self.interval_s):
                    return
        except Exception as exc:  # contained: reported, never raised into training
            self.ctx.report_failure(self.name, f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(2.0, 5 * self.interval_s))
            if self._thread.is_alive():
                raise TimeoutError(f"sampler thread did not stop within {max(2.0, 5 * self.interval_s):.1f} s")

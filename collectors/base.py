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

import pyarrow as pa
import pyarrow.compute as pc

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


def _no_step() -> tuple[int, int] | None:
    return None


@dataclass
class CollectorContext:
    """What a collector needs from the profiler."""

    writer: RunWriter
    now_ns: Callable[[], int]
    pid: int
    rank: int
    report_failure: Callable[[str, str], None] = field(repr=False)
    #: (start_ns, end_ns) of the step that ended last, as the run records it; valid inside
    #: ``on_step`` (framework collectors bound their windows by it); None before any step.
    last_step_ns: Callable[[], tuple[int, int] | None] = field(default=_no_step, repr=False)


class TracedSteps:
    """Which steps a framework profiler's windows held, kept in the run as the analyzer reads
    it: ``meta["traced_steps"] = {name: [[first, last], ...]}`` (inclusive step numbers,
    sorted). A window is listed once its events are in the run; an empty list says the
    profiler ran but no window landed (a run without the key was not traced in windows).

    Each change rewrites the whole key with a new dict, merged with the other profilers'
    entries under one lock, so the writer (which serialises ``meta`` under its own lock)
    never sees a dict being changed.
    """

    _merge_lock = threading.Lock()  # one read-merge-write of meta["traced_steps"] at a time

    def __init__(self, ctx: CollectorContext, name: str):
        self._ctx = ctx
        self._name = name
        self._windows: list[list[int]] = []
        self._publish()

    def landed(self, window: tuple[int, int]) -> None:
        """Called (from any thread) once a window's events were written into the run."""
        with self._merge_lock:
            self._windows.append([int(window[0]), int(window[1])])
            self._windows.sort()
        self._publish()

    @property
    def windows(self) -> list[list[int]]:
        """The windows listed so far."""
        return [list(w) for w in self._windows]

    def _publish(self) -> None:
        with self._merge_lock:
            current = self._ctx.writer.meta.get("traced_steps")
            merged = dict(current) if isinstance(current, dict) else {}
            merged[self._name] = [list(w) for w in self._windows]
            self._ctx.writer.update_meta(traced_steps=merged)


class Window:
    """The recorded steps of one framework-profiler window, as the collector saw them end:
    their numbers and where they lie on the run's clock (None where the profiler gave no
    step times)."""

    __slots__ = ("first", "last", "start_ns", "end_ns")

    def __init__(self, step: int, span: tuple[int, int] | None):
        self.first = self.last = step
        self.start_ns = span[0] if span else None
        self.end_ns = span[1] if span else None

    def add(self, step: int, span: tuple[int, int] | None) -> None:
        """Step ``step``, recorded, ended at ``span``."""
        self.last = step
        self.end_ns = span[1] if span else None

    @property
    def steps(self) -> tuple[int, int]:
        return self.first, self.last


def window_events(events: pa.Table, window: Window | None, *, from_ns: int | None = None, to_ns: int | None = None) -> pa.Table:
    """The events of a framework-profiler window that belong to its recorded steps.

    Host events (device ``cpu``) are kept from the start of the window's first step to the
    end of its last, as the run's step slices say: the tracer starts and stops inside
    ``prof.step()`` a few µs after those instants, and its clock and the run's agree only
    to a µs or two, so its own bounds would put the odd host op into an untraced step.
    Device events may run after their step ended on the host: they are kept from the first
    step's start until ``to_ns`` (the tracer's stop), when given. ``from_ns`` / ``to_ns``
    stand in where the window has no step times (a context that gives none); with neither,
    everything is kept.
    """
    on_host = pc.fill_null(pc.equal(events["device"], "cpu"), False)
    return _in_window(events, events["start_ns"], on_host, window, from_ns, to_ns)


def window_memory(memory: pa.Table, window: Window | None, *, from_ns: int | None = None, to_ns: int | None = None) -> pa.Table:
    """The allocator events (memory table) of a framework-profiler window that belong to its
    recorded steps: as host events in ``window_events``, whatever the device, because the
    allocator is called, and timed, on the host thread that asked for the memory."""
    return _in_window(memory, memory["time_ns"], None, window, from_ns, to_ns)


def _in_window(table: pa.Table, start: pa.ChunkedArray, on_host: pa.ChunkedArray | None, window: Window | None, from_ns: int | None,
               to_ns: int | None) -> pa.Table:
    """``table``'s rows inside ``window`` (``window_events``' rule), ``start`` their times,
    ``on_host`` which rows are host events (None: all of them)."""
    lo = window.start_ns if window is not None and window.start_ns is not None else from_ns
    host_hi = window.end_ns if window is not None and window.end_ns is not None else to_ns
    conditions = []
    if lo is not None:
        conditions.append(pc.greater_equal(start, lo))
    if host_hi is not None:
        conditions.append(pc.less(start, host_hi) if on_host is None else pc.or_(pc.invert(on_host), pc.less(start, host_hi)))
    if to_ns is not None and on_host is not None:
        conditions.append(pc.or_(on_host, pc.less(start, to_ns)))
    if not conditions or table.num_rows == 0:
        return table
    keep = conditions[0]
    for condition in conditions[1:]:
        keep = pc.and_(keep, condition)
    return table.filter(keep)


class Collector:
    name = "collector"
    #: True when the collector samples in its own thread and keeps ``heartbeat_ns`` fresh.
    background = False

    def start(self, ctx: CollectorContext) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_step(self, step: int) -> None:
        """Called on the training thread right after step ``step`` ended."""

    def on_error(self, step: int, span: tuple[int, int]) -> None:
        """Called on the training thread, before ``stop``, when the training loop raised inside
        step ``step`` (``span``: from its start to the error on the run's clock): a framework
        profiler keeps what it recorded of that step, up to the error, in the window it closes
        (the allocations that led to an out-of-memory error among them)."""

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

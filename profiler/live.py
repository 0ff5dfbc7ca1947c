"""Live analysis while training runs: flag input-bound and idle-heavy steps as they end.

The training thread hands each finished step (start, end, input-wait time) to a queue;
a background thread classifies it, keeps bounded rolling statistics, logs flagged steps
(rate-limited), and rewrites ``RUN/live.json`` (at most every ``status_interval_s``), which
the dashboard's live badge shows. Device utilisation samples, when a device collector
provides them, mark steps whose accelerator sat mostly idle.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from accelscope.traces import counters
from accelscope.traces.run import LIVE_FILE
from accelscope.verdicts import HIGH_THRESHOLD, IDLE_HEAVY_UTIL_PERCENT, MODERATE_THRESHOLD, VERDICT_TEXT, verdict_for

log = logging.getLogger("accelscope")

MIN_STATUS_GAP_S = 0.02
MIN_FLAGGED_STEP_NS = 1_000_000
# Utilisation counters the live analyzer listens to (NVML GPU, TPU duty cycle).
UTIL_COUNTERS = frozenset(counters.with_role(counters.UTILISATION))


class StepRecord(NamedTuple):
    """One finished step, made on the training thread (a tuple: cheaper than a dataclass)."""

    index: int
    start_ns: int
    end_ns: int
    input_wait_ns: int


class LiveAnalyzer:
    """Consumes steps and device samples in a background thread; memory is bounded."""

    def __init__(self, run_dir: Path, window: int = 50, status_interval_s: float = 0.5, log_interval_s: float = 30.0):
        self.run_dir = Path(run_dir)
        self.window = window
        self.status_interval_s = status_interval_s
        self.log_interval_s = log_interval_s
        self._queue: queue.SimpleQueue[StepRecord | None] = queue.SimpleQueue()
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=window)
        self._flags: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._util: collections.deque[tuple[int, float]] = collections.deque(maxlen=4096)
        self._util_lock = threading.Lock()
        self.steps = 0
        self.flagged = 0
        self.total_ns = 0
        self.total_wait_ns = 0
        self._last_status = 0.0
        self._last_log = float("-inf")
        self._unlogged = 0
        self._dirty = False
        self._status_file = StatusFile(self.run_dir / LIVE_FILE)
        self._thread = threading.Thread(target=self._run, name="accelscope-live", daemon=True)
        self._thread.start()

    # -- producers --------------------------------------------------------------------------
    def on_step(self, record: StepRecord) -> None:
        """Called on the training thread: one queue put."""
        self._queue.put(record)

    def on_counter(self, name: str, device: str, time_ns: int, value: float | None) -> None:
        if name in UTIL_COUNTERS and value is not None:
            with self._util_lock:
                self._util.append((time_ns, value))

    def close(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    # -- consumer -----------------------------------------------------------------------------
    def _util_during(self, start_ns: int, end_ns: int) -> float | None:
        with self._util_lock:
            values = [v for t, v in self._util if start_ns <= t <= end_ns]
            # Drop samples older than this step: later steps never need them.
            while self._util and self._util[0][0] < start_ns:
                self._util.popleft()
        return sum(values) / len(values) if values else None

    def _run(self) -> None:
        while True:
            try:
                record = self._queue.get(timeout=MIN_STATUS_GAP_S if self._dirty else self.status_interval_s)
            except queue.Empty:
                if self._dirty:
                    self._publish()
                continue
            if record is None:
                self._write_status(finished=True)
                return
            try:
                self._consume(record)
            except Exception as exc:  # live analysis is best effort; never stop training
                log.warning("accelscope: live analysis stopped: %s", exc)
                return

    def _consume(self, r: StepRecord) -> None:
        dur = max(r.end_ns - r.start_ns, 1)
        share = r.input_wait_ns / dur
        util = self._util_during(r.start_ns, r.end_ns)
        verdict = verdict_for(share)
        idle_heavy = util is not None and util < IDLE_HEAVY_UTIL_PERCENT
        step = {"step": r.index, "dur_ms": round(dur / 1e6, 3), "input_wait_share": round(share, 4), "verdict": verdict, "device_util_percent": None if util is None else round(util, 1), "idle_heavy": idle_heavy, "end_ns": r.end_ns}
        self.steps += 1
        self.total_ns += dur
        self.total_wait_ns += r.input_wait_ns
        self._recent.append(step)
        # Sub-millisecond "steps" (a loop without real work) are not worth a warning.
        flagged = (verdict != "none" or idle_heavy) and dur >= MIN_FLAGGED_STEP_NS
        if flagged:
            self.flagged += 1
            self._flags.append(step)
            self._log_flag(step)
        # Published when the queue drains (so within one step of its end) but at most every
        # MIN_STATUS_GAP_S, and at least every status_interval_s while steps stream in fast.
        self._dirty = True
        since = time.monotonic() - self._last_status
        if since >= self.status_interval_s or ((flagged or self._queue.empty()) and since >= MIN_STATUS_GAP_S):
            self._publish()

    def _publish(self) -> None:
        self._write_status()
        self._last_status = time.monotonic()
        self._dirty = False

    def _log_flag(self, step: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last_log < self.log_interval_s:
            self._unlogged += 1
            return
        what = VERDICT_TEXT[step["verdict"]] if step["verdict"] != "none" else "not input-bound"
        idle = f", device {step['device_util_percent']}% busy" if step["idle_heavy"] else ""
        more = f" ({self._unlogged} more flagged steps since the last message)" if self._unlogged else ""
        log.warning("accelscope: step %d %s: %.0f%% of %.1f ms waiting for input%s%s", step["step"], what, step["input_wait_share"] * 100, step["dur_ms"], idle, more)
        self._last_log = now
        self._unlogged = 0

    def status(self, finished: bool = False) -> dict[str, Any]:
        recent = list(self._recent)
        r_total = sum(s["dur_ms"] for s in recent)
        r_wait = sum(s["dur_ms"] * s["input_wait_share"] for s in recent)
        r_share = r_wait / r_total if r_total else 0.0
        overall = self.total_wait_ns / self.total_ns if self.total_ns else 0.0
        return {
            "updated_ns": time.time_ns(),
            "finished": finished,
            "steps": self.steps,
            "flagged_steps": self.flagged,
            "thresholds": {"high": HIGH_THRESHOLD, "moderate": MODERATE_THRESHOLD, "idle_heavy_util_percent": IDLE_HEAVY_UTIL_PERCENT},
            "overall": {"input_wait_share": round(overall, 4), "verdict": verdict_for(overall)},
            "recent": {"window": len(recent), "input_wait_share": round(r_share, 4), "verdict": verdict_for(r_share), "mean_step_ms": round(r_total / len(recent), 3) if recent else None},
            "last_step": recent[-1] if recent else None,
            "flags": list(self._flags),
        }

    def _write_status(self, finished: bool = False) -> None:
        try:
            self._status_file.write(json.dumps(self.status(finished)).encode(), final=finished)
        except OSError as exc:  # a full disk must not stop live analysis of the next steps
            log.debug("accelscope: cannot write %s: %s", self._status_file.path, exc)


class StatusFile:
    """A small JSON file rewritten in place: one ``pwrite`` (about 2 µs) instead of a
    write-and-rename (about 230 µs here, much of it kernel time taken from training).

    The document is padded with spaces to the file's capacity, which doubles when
    needed. A reader may rarely see a torn write and should retry on a JSON error; the
    last write (``final=True``) is an atomic replace.
    """

    def __init__(self, path: Path, capacity: int = 16384):
        self.path = Path(path)
        self.capacity = capacity
        self._fd: int | None = None

    def write(self, data: bytes, final: bool = False) -> None:
        if final:
            self.close()
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if len(data) > self.capacity:
            while len(data) > self.capacity:
                self.capacity *= 2
            os.ftruncate(self._fd, self.capacity)
        os.pwrite(self._fd, data.ljust(self.capacity), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

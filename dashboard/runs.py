"""The dashboard's runs: one ``RunView`` per run, caching what is computed from it, and the
progress of a first view that takes long (a 10M-event run takes seconds to prepare).

A ``RunView`` holds the run, its label, the analyzer's report and anything a section
caches through ``cached(key, build)``: each key is built once, under its own lock, so
independent ones (the analysis, the lane layout) can be built at the same time. Keys in
``STAGES`` are the slow steps of a first view; their timing is kept for ``progress``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from accelscope.analysis import NoStepsError, Report
from accelscope.analysis.analyzer import BY_RANK_MIN_EVENTS
from accelscope.analysis.cache import analyze_cached
from accelscope.dashboard import prepared
from accelscope.traces.run import Run

T = TypeVar("T")
# A job of more ranks than this shows a few of them at a time on its timeline.
MAX_RANKS_AT_ONCE = 16

# The slow steps of a first view, by cache key (a whole-run timeline is "timeline" or
# "timeline@<width>"), in the order they run; the page shows them while a large run loads.
STAGES = {
    "slices": "reading the events",
    "report": "analysing steps, idle gaps and launches",
    "lanes": "laying out the lanes",
    "scheduling": "indexing launches for drawing",
    "timeline": "drawing the whole run",
}


@dataclass(frozen=True)
class Stage:
    """One step of preparing a run: ``seconds`` so far (running) or in all (done, failed)."""

    label: str
    state: str  # "running", "done" or "failed"
    seconds: float
    error: str = ""


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short, unique labels for runs: the directory name, with parents added where names clash.

    The same directory given twice gets a number: ``run``, ``run (2)``.
    """
    resolved = [Path(p).resolve() for p in paths]
    distinct = list(dict.fromkeys(resolved))
    depth = {p: 1 for p in distinct}

    def label(p: Path) -> str:
        return "/".join(p.parts[-depth[p]:]) if depth[p] < len(p.parts) else str(p)

    while True:
        labels = {p: label(p) for p in distinct}
        counts: dict[str, int] = {}
        for lab in labels.values():
            counts[lab] = counts.get(lab, 0) + 1
        clashing = [p for p in distinct if counts[labels[p]] > 1 and depth[p] < len(p.parts)]
        if not clashing:
            break
        for p in clashing:
            depth[p] += 1
    out: list[str] = []
    seen: dict[Path, int] = {}
    for p in resolved:
        seen[p] = seen.get(p, 0) + 1
        out.append(labels[p] if seen[p] == 1 else f"{labels[p]} ({seen[p]})")
    return out


class RunView:
    """One run as the dashboard sees it: the run, its report and a per-run cache."""

    def __init__(self, run: Run, label: str):
        self.run = run
        self.label = label
        self._lock = threading.Lock()  # guards _locks and _stages
        self._locks: dict[str, threading.RLock] = {}
        self._cache: dict[str, Any] = {}
        self._stages: dict[str, list] = {}  # stage key -> [start, end or None, error]

    def cached(self, key: str, build: Callable[[], T]) -> T:
        """``build()`` once per key; a key in ``STAGES`` (before any "@") is timed for ``progress``;
        a key in ``prepared.PERSISTED`` is kept inside the run for the next time it is opened."""
        if key in self._cache:
            return self._cache[key]
        if prepared.persisted(key):
            inner = build
            build = lambda: prepared.load_or_build(self.run.path, self._prepared_key(), key, inner)  # noqa: E731
        with self._lock:
            lock = self._locks.setdefault(key, threading.RLock())
        with lock:
            if key not in self._cache:
                stage = key.split("@")[0]
                if stage not in STAGES:
                    self._cache[key] = build()
                    return self._cache[key]
                with self._lock:
                    record = self._stages[stage] = [time.monotonic(), None, ""]
                try:
                    self._cache[key] = build()
                except BaseException as exc:
                    with self._lock:
                        record[1], record[2] = time.monotonic(), f"{type(exc).__name__}: {exc}".splitlines()[0]
                    raise
                with self._lock:
                    record[1] = time.monotonic()
            return self._cache[key]

    def kept(self, key: str) -> Any:
        """What ``cached(key, ...)`` holds or what an earlier opening kept inside the run (a
        ``prepared.PERSISTED`` key), without building it; None when neither has it."""
        if key in self._cache:
            return self._cache[key]
        if not prepared.persisted(key):
            return None
        got = prepared.load(self.run.path, self._prepared_key(), key)
        if got is not None:
            self._cache[key] = got[0]
            return got[0]
        return None

    def _prepared_key(self) -> str | None:
        """The run's key for what is kept inside it (computed once: a finished run does not change)."""
        if "prepared-key" not in self._cache:
            self._cache["prepared-key"] = prepared.run_key(self.run)
        return self._cache["prepared-key"]

    def progress(self) -> list[Stage]:
        """The stages of preparing this run that have started, in ``STAGES`` order."""
        now = time.monotonic()
        with self._lock:
            records = {k: list(v) for k, v in self._stages.items()}
        out = []
        for key, label in STAGES.items():
            if key in records:
                start, end, error = records[key]
                state = "failed" if error else "running" if end is None else "done"
                out.append(Stage(label, state, (end if end is not None else now) - start, error))
        return out

    @property
    def big(self) -> bool:
        """A job too big to hold at once: several ranks, and more than MAX_RANKS_AT_ONCE of them
        or more events than the analyzer holds at once. Its timeline shows a few ranks at a
        time (read when chosen), and its analysis reads one rank at a time."""
        def build() -> bool:
            ids = self.run.rank_ids()
            return len(ids) > 1 and (len(ids) > MAX_RANKS_AT_ONCE or self.run.event_rows() > BY_RANK_MIN_EVENTS)

        return self.cached("big", build)

    def default_ranks(self) -> tuple[int, ...] | None:
        """The ranks a first view shows: all (None), or for a big job its first rank."""
        return (self.run.rank_ids()[0],) if self.big else None

    def slices_of(self, ranks: tuple[int, ...] | None) -> pl.DataFrame:
        """The slices of ``ranks`` (None: every rank), each rank read alone the first time."""
        if ranks is None:
            return self.slices
        key = "slices@" + ",".join(map(str, ranks))
        return self.cached(key, lambda: pl.concat([self.run.rank_slices(r) for r in ranks]))

    def slice_count(self) -> int | None:
        """How many slices the run holds, once they are read (None before)."""
        slices = self._cache.get("slices")
        return None if slices is None else slices.height

    @property
    def slices(self) -> pl.DataFrame:
        """The run's slices, read once (``Run`` itself does not lock: two threads would both read)."""
        return self.cached("slices", lambda: self.run.slices)

    @property
    def report(self) -> Report | None:
        """The analyzer's report, or None when the run recorded no events at all."""

        def build() -> Report | None:
            try:  # on a cache miss, the slices are read under our lock first; analyze then finds them in the run
                # (a big job's never are: its analysis reads one rank at a time)
                if self.big:
                    return analyze_cached(self.run, by_rank=True)
                return analyze_cached(self.run, before_analysis=lambda: self.slices)
            except NoStepsError:
                return None

        return self.cached("report", build)

    # -- clock -------------------------------------------------------------------------
    def _span(self) -> tuple[int, int]:
        """From the slices when they are read, else by streaming two columns (a reopened run's
        first view reads no event)."""
        return self.cached("span", self.run.span_ns)

    @property
    def origin_ns(self) -> int:
        """Time zero of every plot: the run's start (never after its first event or sample)."""
        return self._span()[0]

    @property
    def end_ms(self) -> float:
        """The run's end in ms since ``origin_ns``."""
        first, last = self._span()
        return (last - first) / 1e6

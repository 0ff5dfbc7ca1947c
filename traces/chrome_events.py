"""Begin/end pairs of generic Chrome traces as complete slices.

Tools other than Kineto (Chrome itself, Perfetto's JSON exporters, hand-written tracers)
write duration events as pairs: ``B``/``E`` on one thread (they nest: ``E`` closes the
latest open ``B`` of its pid/tid) and async ``b``/``e`` matched by category and ``id``
(or ``id2``) instead of thread. Each closed pair becomes one ``X`` slice with the begin
event's name, pid, tid and args, category ``user_annotation`` (a host annotation), so the
rest of the import treats it like any Kineto slice. Pairs still open at the end of the
file, ends without a begin and ends before their begin are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

SPAN_PHASES = frozenset({"B", "E", "b", "e"})
SPAN_CATEGORY = "user_annotation"


@dataclass
class SpanPairer:
    """Pairs begin/end events across batches; ``make`` builds a slice (the reader's struct)."""

    make: Any  # (ph, cat, name, pid, tid, ts, dur, args) -> event struct
    thread_stacks: dict[tuple[Any, Any], list[Any]] = field(default_factory=dict)
    async_stacks: dict[tuple[Any, bytes], list[Any]] = field(default_factory=dict)
    paired: int = 0
    dropped: int = 0

    def feed(self, events: list[Any]) -> tuple[list[Any], list[msgspec.Raw]]:
        """Slices closed by these events, in closing order, and their timestamps as JSON text
        (the reader parses large float timestamps from text to keep their nanoseconds)."""
        out: list[Any] = []
        for e in events:
            if e.ts is None:
                self.dropped += 1
                continue
            if e.ph in ("B", "b"):
                # A Raw refers to its whole batch's text: copy the args so that an open
                # begin keeps only its own bytes alive.
                e.args = msgspec.Raw(bytes(e.args))
                if e.ph == "B":
                    self.thread_stacks.setdefault((e.pid, e.tid), []).append(e)
                else:
                    self.async_stacks.setdefault((e.cat, _async_id(e)), []).append(e)
            else:
                stack = self.thread_stacks.get((e.pid, e.tid)) if e.ph == "E" else self.async_stacks.get((e.cat, _async_id(e)))
                if not stack:
                    self.dropped += 1
                    continue
                begin = stack.pop()
                if e.ts < begin.ts:
                    self.dropped += 1
                    continue
                out.append(self.make("X", SPAN_CATEGORY, begin.name, begin.pid, begin.tid, begin.ts, e.ts - begin.ts, begin.args))
                self.paired += 1
        return out, [msgspec.Raw(repr(s.ts).encode()) for s in out]

    def unclosed(self) -> int:
        """Begins never ended (counted once the whole file was read)."""
        return sum(len(s) for s in self.thread_stacks.values()) + sum(len(s) for s in self.async_stacks.values())


def _async_id(e: Any) -> bytes:
    """An async event's id as text: ``id``, else ``id2`` (``{"local": ...}`` or ``{"global": ...}``)."""
    return bytes(e.id) or bytes(e.id2)


@dataclass
class CounterSamples:
    """``C`` events as counter samples: one series per key of ``args`` (Chrome draws each key
    as its own line), named ``"<name>.<key>"``, or just ``<name>`` for the key ``value``;
    on the host ("cpu"), since a Chrome counter says nothing of a device. Values that are
    not numbers are skipped."""

    names: list[str] = field(default_factory=list)
    ts: list[int | float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    skipped: int = 0

    def feed(self, events: list[Any]) -> None:
        """Add the samples of these ``C`` events."""
        for e in events:
            try:
                series = msgspec.json.decode(bytes(e.args)) if e.args else None
            except msgspec.DecodeError:
                series = None
            if e.ts is None or not isinstance(series, dict):
                self.skipped += 1
                continue
            name = e.name if isinstance(e.name, str) else str(e.name)
            for key, value in series.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300:
                    self.names.append(name if key == "value" else f"{name}.{key}")
                    self.ts.append(e.ts)
                    self.values.append(float(value))
                else:
                    self.skipped += 1

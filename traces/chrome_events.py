"""Begin/end pairs and counters of generic Chrome traces, read the way Perfetto reads them.

Tools other than Kineto (Chrome itself, Perfetto's JSON exporters, hand-written tracers)
write duration events as pairs: ``B``/``E`` on one thread (they nest: an ``E`` closes the
latest open ``B`` of its pid/tid) and async ``b``/``e`` (legacy ``S``/``F``) matched by
category, ``scope`` and ``id`` instead of thread; ``id2: {"global": ...}`` is an id across
processes, ``id2: {"local": ...}`` one within its process. An end without a name closes
the latest open begin; one with a ``name`` the latest open begin of that name (and ``cat``,
where both have one); its ``args`` are merged into the begin's (Perfetto does both). Each closed
pair becomes one ``X`` slice with the begin event's name, pid, tid and args, category
``user_annotation`` (a host annotation), so the rest of the import treats it like any
Kineto slice. Ends without a begin, ends before their begin, async events without an id
and pairs still open at the end of the file are dropped and counted.

Pairing walks the begin/end events once, in file order, with one stack per thread or
async id: Kineto traces have none, and generic traces usually write complete ``X`` slices
(1.5 million B/E events take about 0.6 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec
import polars as pl

SPAN_PHASES = frozenset({"B", "E", "b", "e", "S", "F"})
_BEGIN_PHASES = frozenset({"B", "b", "S"})
SPAN_CATEGORY = "user_annotation"
_decode_json = msgspec.json.decode


@dataclass
class SpanPairer:
    """Pairs begin/end events across batches; ``make`` builds a slice (the reader's struct)."""

    make: Any  # (ph, cat, name, pid, tid, ts, dur, args) -> event struct
    exact_ns: Any = None  # JSON number text (µs) -> exact int ns, for timestamps a float64 cannot hold
    stacks: dict[tuple[Any, ...], list[tuple[Any, bytes | None]]] = field(default_factory=dict)
    paired: int = 0
    dropped: int = 0

    def feed(self, events: list[Any], raw_ts: list[Any] | None = None) -> tuple[list[Any], list[msgspec.Raw]]:
        """Slices closed by these events, in closing order, and their timestamps as JSON text.

        ``raw_ts``: each event's timestamp as its JSON text, given when the timestamps are
        floats too large for a float64 to keep their nanoseconds (absolute µs with decimals);
        the slices' starts and durations are then computed from the text, exactly."""
        out: list[Any] = []
        texts: list[msgspec.Raw] = []
        stacks, make, dropped = self.stacks, self.make, 0
        for i, e in enumerate(events):
            ph, ts = e.ph, e.ts
            # Thread keys are pairs, async keys longer: the two never collide.
            key = (e.pid, e.tid) if ph == "B" or ph == "E" else _async_key(e)
            if ts is None or key is None:
                dropped += 1
            elif ph in _BEGIN_PHASES:
                # A Raw refers to its whole batch's text: copy the args (and the timestamp
                # text) so that an open begin keeps only its own bytes alive.
                e.args = msgspec.Raw(bytes(e.args))
                entry = (e, bytes(raw_ts[i]) if raw_ts is not None else None)
                stack = stacks.get(key)
                if stack is None:
                    stacks[key] = [entry]
                else:
                    stack.append(entry)
            else:
                stack = stacks.get(key)
                at = (-1 if e.name is None and e.cat is None else _matching_begin(stack, e)) if stack else None
                if at is None:
                    dropped += 1
                    continue
                begin, begin_text = stack[at]
                if begin_text is not None and raw_ts is not None:
                    dur_ns = self.exact_ns(raw_ts[i]) - self.exact_ns(begin_text)
                    dur, text = dur_ns / 1000, begin_text
                else:
                    dur, text = ts - begin.ts, repr(begin.ts).encode()
                if dur < 0:
                    dropped += 1
                    continue
                del stack[at]
                args = _merged_args(begin.args, e.args) if len(e.args) > 2 else begin.args
                out.append(make("X", SPAN_CATEGORY, begin.name, begin.pid, begin.tid, begin.ts, dur, args))
                texts.append(msgspec.Raw(text))
        self.paired += len(out)
        self.dropped += dropped
        return out, texts

    def unclosed(self) -> int:
        """Begins never ended (counted once the whole file was read)."""
        return sum(len(s) for s in self.stacks.values())


def _matching_begin(stack: list[Any], end: Any) -> int | None:
    """Index in ``stack`` of the latest begin with the end's name (and category, where both
    have one); None if none."""
    for i in range(len(stack) - 1, -1, -1):
        b = stack[i][0]
        if (end.name is None or b.name is None or b.name == end.name) and (end.cat is None or b.cat is None or b.cat == end.cat):
            return i
    return None


def _id_text(raw: Any) -> str | None:
    """An id as text, so that ``1`` and ``"1"`` are one id (Perfetto reads both as "1")."""
    if not raw:
        return None
    try:
        value = _decode_json(raw)
    except msgspec.DecodeError:
        return None
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _async_key(e: Any) -> tuple[Any, ...] | None:
    """The async track of ``b``/``e``/``S``/``F``: (category, scope, id), with the pid for a
    process-local ``id2``; None when the event has no id (the spec requires one)."""
    scope = bytes(e.scope) if e.scope else b""
    ident = _id_text(e.id)
    if ident is not None:
        return ("a", e.cat, scope, ident)
    if not e.id2:
        return None
    try:
        id2 = _decode_json(e.id2)
    except msgspec.DecodeError:
        return None
    if not isinstance(id2, dict):
        return None
    if id2.get("global") is not None:
        return ("a", e.cat, scope, str(id2["global"]))
    if id2.get("local") is not None:
        return ("l", e.cat, scope, e.pid, str(id2["local"]))
    return None


def _merged_args(begin: msgspec.Raw, end: msgspec.Raw) -> msgspec.Raw:
    """The begin's args object with the end's keys added (the end's win)."""
    try:
        first = _decode_json(begin) if begin else {}
        second = _decode_json(end)
    except msgspec.DecodeError:
        return begin
    if not isinstance(second, dict) or not second:
        return begin
    if not isinstance(first, dict):
        first = {}
    return msgspec.Raw(msgspec.json.encode({**first, **second}))


def _number(value: Any) -> float | None:
    """A counter value: a finite number, or a string that is one (Perfetto reads both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and abs(value) < 1e300 and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


@dataclass
class CounterSamples:
    """``C`` events as counter samples: one series per key of ``args`` (Chrome draws each key
    as its own line), named ``"<name>.<key>"``, or just ``<name>`` for the key ``value``
    or ``<name>`` (accelscope's export writes that) (``"<name> id: <id>"`` when the event has an ``id``); on the host ("cpu"), since a
    Chrome counter says nothing of a device. A Chrome counter belongs to its process: a
    name that several pids write becomes one series per pid (``" (pid N)"`` appended).
    Values that are not numbers (or numeric strings) are skipped."""

    names: list[str] = field(default_factory=list)
    pids: list[str] = field(default_factory=list)
    ts: list[int | float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    skipped: int = 0

    def extend(self, other: CounterSamples) -> None:
        """Add ``other``'s samples after these (the samples of a later part of the same file)."""
        self.names += other.names
        self.pids += other.pids
        self.ts += other.ts
        self.values += other.values
        self.skipped += other.skipped

    def feed(self, events: list[Any]) -> None:
        """Add the samples of these ``C`` events."""
        for e in events:
            try:
                series = _decode_json(e.args) if e.args else None
            except msgspec.DecodeError:
                series = None
            if e.ts is None or not isinstance(series, dict):
                self.skipped += 1
                continue
            name = e.name if isinstance(e.name, str) else str(e.name)
            ident = _id_text(e.id)
            if ident is not None:
                name = f"{name} id: {ident}"
            pid = str(e.pid)
            for key, raw in series.items():
                value = _number(raw)
                if value is None:
                    self.skipped += 1
                    continue
                self.names.append(name if key == "value" or key == name else f"{name}.{key}")
                self.pids.append(pid)
                self.ts.append(e.ts)
                self.values.append(value)

    def series_names(self) -> list[str]:
        """Each sample's series name, with its pid appended where a name spans several pids."""
        frame = pl.DataFrame({"name": self.names, "pid": self.pids}, schema={"name": pl.String, "pid": pl.String})
        shared = pl.col("pid").n_unique().over("name") > 1
        return frame.select(pl.when(shared).then(pl.format("{} (pid {})", "name", "pid")).otherwise("name")).to_series().to_list()

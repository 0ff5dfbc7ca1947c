"""The report: every figure any output shows, computed once by the analyzer.

``analyze(run)`` builds one :class:`Report`; ``accelscope analyze`` (text and ``--json``),
``accelscope diff``, the HTML report and every dashboard section render it and compute no
figure of their own. Tables are Polars frames in nanoseconds; small facts are typed
records. ``Report.to_dict()`` is the ``analyze --json`` document (docs/cli.md): the same
model, with every time in µs and a ``schema_version``.

Every figure has a stated basis (:class:`Basis`): which steps of which ranks it is over.
Step timing is over the steady steps; shares, the breakdown, idle causes and per-device
utilisation are over the analysed steps (the steady steps whose device work and input
waits were recorded); the kernel and op tables over the traced steady steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from accelscope.analysis.breakdown import BREAKDOWN, STEP_WORDS, step_unit
from accelscope.analysis.causes import CAUSE_TEXT, CAUSES
from accelscope.analysis.collectives import summary as collective_summary
from accelscope.analysis.launches import Launches
from accelscope.analysis.leaks import empty as empty_leaks
from accelscope.analysis.memory import empty as empty_memory
from accelscope.analysis.memory import rank_skew
from accelscope.analysis.memory_categories import empty as empty_memory_categories
from accelscope.analysis.memory_ops import empty as empty_memory_ops
from accelscope.analysis.memory_ops import most as most_memory_ops
from accelscope.analysis.memory_samples import SOURCE_SAMPLES
from accelscope.analysis.oom import Oom
from accelscope.analysis.stragglers import Straggler
from accelscope.verdicts import HIGH_THRESHOLD, MODERATE_THRESHOLD, VERDICT_TEXT

# Version of the ``analyze --json`` / ``diff --json`` documents: raised when a key changes meaning or goes.
SCHEMA_VERSION = 1
TOP_N = 20
# The fastest leak's bytes per step, for ``--fail-if "memory_leak_bytes_per_step>N"``.
LEAK_METRIC = "memory_leak_bytes_per_step"
# The fullest device's peak share of its memory, for ``--fail-if "peak_memory_share>0.9"``.
PEAK_SHARE_METRIC = "peak_memory_share"
# 1 when the training loop ran out of memory, else 0, for ``--fail-if "out_of_memory>0"``.
OOM_METRIC = "out_of_memory"


@dataclass(frozen=True)
class RunInfo:
    """What the run is: the facts every output's header shows."""

    name: str
    path: str
    ranks: tuple[int, ...]
    devices: tuple[tuple[int, str], ...]  # (rank, device) with device work or device counters; ("cpu" on CPU-only ranks)
    framework: str | None
    framework_version: str | None
    mode: str | None  # "full", "light" or "imported"
    host: str | None
    start_ns: int | None  # Unix epoch
    duration_ns: int  # first to last event or sample
    complete: bool
    live: bool  # still being recorded
    collector_problems: tuple[str, ...] = ()  # "nvml unavailable", ...
    memory_only: bool = False  # allocator events and no timeline (a PyTorch memory snapshot): no timing figure means anything


@dataclass(frozen=True)
class Basis:
    """Which steps a group of figures is over, in words and numbers."""

    kind: str  # "steady", "analysed" or "traced"
    steps: int  # (rank, step) rows
    ranks: int
    text: str  # "the 12 traced steady steps of 2 ranks"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": self.steps, "ranks": self.ranks, "text": self.text}


@dataclass(frozen=True)
class Recommendation:
    cause: str
    evidence: str
    action: str
    idle_share: float  # of step time
    projected_step_ns: float | None  # at best, the mean step if this idle time went away (None: no projection)
    mean_step_ns: float
    projection: str = ""  # the model behind projected_step_ns, or why there is none
    unit: str = "step"  # what a step is here: "step", "iteration" or "window" (breakdown.STEP_WORDS)
    frees_bytes: int | None = None  # memory advice: about how much the action frees at the peak (None: not memory advice)

    @property
    def projected_speedup(self) -> float | None:
        p = self.projected_step_ns
        return self.mean_step_ns / p if p is not None and p > 0 else None

    @property
    def text(self) -> str:
        p = self.projected_step_ns
        if self.frees_bytes is not None:
            return f"{self.evidence}: {self.action}. Expected: frees about {self.frees_bytes / 2**20:,.0f} MiB at the peak ({self.projection})."
        if p is None or p <= 0:
            return f"{self.evidence}: {self.action}." + (f" No projection: {self.projection}." if self.projection else "")
        return (f"{self.evidence}: {self.action}. Expected: at best {self.mean_step_ns / 1e6:.1f} -> {p / 1e6:.1f} ms per {self.unit} "
                f"({self.mean_step_ns / p:.2f}x) if all of this idle time goes.")

    def to_dict(self) -> dict[str, Any]:
        speedup = self.projected_speedup
        return {
            "cause": self.cause,
            "evidence": self.evidence,
            "action": self.action,
            "idle_share": round(self.idle_share, 6),
            "projected_step_us": round(self.projected_step_ns / 1000, 3) if self.projected_step_ns is not None else None,
            "projected_speedup": round(speedup, 4) if speedup is not None else None,
            "projection": self.projection,
            "frees_bytes": self.frees_bytes,
            "text": self.text,
        }


@dataclass
class Report:
    run: RunInfo
    timing_basis: Basis  # n_steps' steady part, mean step
    basis: Basis  # shares, breakdown, idle causes, per-device utilisation
    table_basis: Basis  # kernel and op tables
    steps: pl.DataFrame  # one row per (rank, step): breakdown <category>_ns, shares, verdict, warmup, traced, input_timed, analysed, outlier
    gaps: pl.DataFrame  # one row per idle interval per device: cause and time per cause
    devices: pl.DataFrame  # per (rank, device): busy share, main idle cause, streams, sampled counters, memory (utilisation.py)
    streams: pl.DataFrame  # per (rank, device, stream): busy share
    mean_step_ns: float
    median_step_ns: float  # of the steady steps, every rank's together
    input_wait_share: float
    busy_share: float
    verdict: str
    idle_by_cause_ns: dict[str, int]  # over the analysed steps, scaled to the steady steps' time
    breakdown_ns: dict[str, int]  # likewise
    # Time per name over the traced steady steps, every name (comparisons need both runs'
    # time for each), longest first: device work (kernels, copies, memsets) and host ops.
    kernels_by_name: pl.DataFrame
    ops_by_name: pl.DataFrame
    has_device: bool
    launches: Launches
    notes: list[str] = field(default_factory=list)
    advice: list[Recommendation] = field(default_factory=list)
    # Across ranks (stragglers.py, collectives.py); None / empty for a single rank.
    ranks: pl.DataFrame | None = None  # per rank: step time, busy, wait for other ranks, last arrivals, main cause
    stragglers: list[Straggler] = field(default_factory=list)  # most costly first
    straggler_share: float = 0.0  # the costliest last-arriving rank's share of step time, straggler or not
    collectives: pl.DataFrame | None = None  # per matched collective instance (collectives.INSTANCES_SCHEMA)
    arrivals: pl.DataFrame | None = None  # per instance and rank: arrival, end, wait
    straggler_costs: pl.DataFrame | None = None  # per late instance: the late rank and what it cost
    unmatched_collectives: int = 0
    # Figures the run cannot know (name -> why); JSON gives them as null, gates on them fail.
    unknown: dict[str, str] = field(default_factory=dict)
    # Per idle cause, the host ops the device-driving threads were in during its gaps
    # (gap_ops.py: self time inside the gaps, over the steady steps like idle_by_cause_ns).
    host_ops_by_cause: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"cause": pl.String, "name": pl.String, "self_ns": pl.Int64}))
    # Per (rank, device) with allocator events: the allocation peak, its step and op (memory.py).
    memory: pl.DataFrame = field(default_factory=empty_memory)
    # Per leaking (rank, device): bytes per step, the steps fitted, the op never freeing (leaks.py).
    memory_leaks: pl.DataFrame = field(default_factory=empty_leaks)
    # Per (rank, device, host op name): allocations self to the op and under it, the TOP_N
    # allocating most on each device (memory_ops.py), and how many more ops held any.
    memory_ops: pl.DataFrame = field(default_factory=empty_memory_ops)
    memory_ops_more: int = 0
    # Per (rank, device, category): the kinds of tensor held at the device's peak (memory_categories.py).
    memory_categories: pl.DataFrame = field(default_factory=empty_memory_categories)
    # The out-of-memory error that ended training, what held the memory then (oom.py); None: none.
    oom: Oom | None = None

    @property
    def run_name(self) -> str:
        return self.run.name

    @property
    def n_steps(self) -> int:
        """Every step of every rank, warm-up included."""
        return self.steps.height

    @property
    def step_unit(self) -> str:
        """What the rows of ``steps`` are: "steps", "iterations" or "equal windows"
        (``breakdown.step_unit``)."""
        return step_unit(self.steps["name"])

    @property
    def step_word(self) -> str:
        """One of ``steps`` in the report's own word: "step", "iteration" or "window"."""
        return STEP_WORDS[self.step_unit]

    @property
    def top_kernels(self) -> pl.DataFrame:
        """The ``TOP_N`` device-work names with most time."""
        return self.kernels_by_name.head(TOP_N)

    @property
    def top_ops(self) -> pl.DataFrame:
        return self.ops_by_name.head(TOP_N)

    @property
    def recommendations(self) -> list[str]:
        return [a.text for a in self.advice]

    @property
    def steady_ns(self) -> int:
        """Step time of the steady steps (warm-up left out): what shares are scaled to."""
        return int(self.steps.filter(~pl.col("warmup"))["dur_ns"].sum())

    @property
    def n_steady(self) -> int:
        return self.steps.filter(~pl.col("warmup")).height

    @property
    def traced_steady(self) -> pl.DataFrame:
        """The steady steps whose ops and device work were recorded: those the framework
        profiler traced when it ran only in windows, else every steady step."""
        steady = self.steps.filter(~pl.col("warmup"))
        traced = steady.filter(pl.col("traced"))
        return traced if traced.height else steady

    @property
    def traced_ns(self) -> int:
        """Step time the op and kernel tables' shares are of (``traced_steady``)."""
        return int(self.traced_steady["dur_ns"].sum())

    @property
    def idle_share(self) -> float:
        return 1.0 - self.busy_share

    def share(self, ns: float) -> float:
        """A time over the steady steps (``breakdown_ns``, ``idle_by_cause_ns``) as a share of their step time."""
        return ns / (self.steady_ns or 1)

    @property
    def idle_causes(self) -> list[tuple[str, int, float]]:
        """(cause, ns over the steady steps, share of step time) with any time, most first."""
        ranked = sorted(((c, v) for c, v in self.idle_by_cause_ns.items() if v > 0), key=lambda kv: (-kv[1], CAUSES.index(kv[0])))
        return [(c, v, self.share(v)) for c, v in ranked]

    def host_ops_of(self, cause: str) -> list[tuple[str, int]]:
        """(op name, ns over the steady steps) the device-driving threads were in during
        ``cause``'s idle gaps, most first."""
        from accelscope.analysis.gap_ops import ops_of

        return ops_of(self.host_ops_by_cause, cause)

    def per_step_ms(self, ns: float) -> float:
        """A time over the steady steps, per steady step, in ms."""
        return ns / max(self.n_steady, 1) / 1e6

    @property
    def memory_leak_bytes_per_step(self) -> int | None:
        """The fastest leak's growth in bytes per step; 0 without leaks; None when the run
        cannot tell (``unknown`` says why)."""
        if LEAK_METRIC in self.unknown:
            return None
        return int(self.memory_leaks["bytes_per_step"].max()) if self.memory_leaks.height else 0

    @property
    def peak_memory_share(self) -> float | None:
        """The most any device held at once (allocated or reserved) over its memory; None
        when no device has both a known total and an absolute peak (``unknown`` says why)."""
        shares = self.memory["peak_share"].drop_nulls()
        return None if shares.len() == 0 else round(float(shares.max()), 6)

    @property
    def top_memory_ops(self) -> pl.DataFrame:
        """The rows of ``memory_ops`` that allocated most themselves (then under them), any
        device: analyze's "Memory by op" table."""
        return most_memory_ops(self.memory_ops)

    def categories_at_peak(self, rank: int, device: str) -> dict[str, int] | None:
        """The bytes of each kind of tensor held at the device's peak (None: its allocator
        events carry no addresses, so what was live is unknown)."""
        rows = self.memory_categories.filter((pl.col("rank") == rank) & (pl.col("device") == device))
        return {r["category"]: r["bytes"] for r in rows.iter_rows(named=True)} if rows.height else None

    @property
    def memory_peak_texts(self) -> list[str]:
        """Per device with categories or fragmentation, one line: "at the peak on cuda:0:
        activation 5.1 GiB (43%) · gradient 2.0 GiB (17%) · ...; 1.2 GiB reserved unallocated"."""
        multi_rank = len(self.run.ranks) > 1
        out = []
        for m in self.memory.iter_rows(named=True):
            where = f"rank {m['rank']} · {m['device']}" if multi_rank else m["device"]
            held = self.categories_at_peak(m["rank"], m["device"]) or {}
            peak = m["peak_allocated_bytes"]
            parts = [f"{c.replace('_', ' ')} {_size(b)} ({b / peak:.0%})" for c, b in sorted(held.items(), key=lambda kv: -kv[1])] if peak >= 2**20 else []
            line = f"at the peak on {where}: " + " · ".join(parts) if parts else ""
            frag, trend = m["fragmentation_bytes"], m["fragmentation_bytes_per_step"]
            if frag is not None and m["peak_reserved_bytes"]:
                more = f"{_size(frag)} of the {_size(m['peak_reserved_bytes'])} reserved was unallocated at the reservation's peak"
                if trend is not None and abs(trend) >= 2**20:
                    more += f", {'growing' if trend > 0 else 'shrinking'} {_size(abs(trend))} per {self.step_word}"
                line = f"{line}; {more}" if line else f"on {where}: {more}"
            if line:
                out.append(line)
        return out

    @property
    def memory_leak_texts(self) -> list[str]:
        """One line per leak: "memory grows 1.0 MiB per step on cpu, allocated under aten::ones and never freed"."""
        multi = len(self.run.ranks) > 1
        out = []
        for r in self.memory_leaks.iter_rows(named=True):
            where = f"rank {r['rank']} · {r['device']}" if multi else r["device"]
            line = f"memory grows {r['bytes_per_step'] / 2**20:.1f} MiB per {self.step_word} on {where}"
            if r["op"]:
                line += f", allocated under {r['op']} and never freed"
            elif r.get("source") == SOURCE_SAMPLES:
                line += " (per-step samples of torch.cuda's allocator: the op is unknown; mode='full' records the allocator events that name it)"
            else:
                line += " (the trace records no addresses: what is never freed is unknown)"
            out.append(line)
        return out

    @property
    def collectives_by_kind(self) -> pl.DataFrame:
        """Per collective kind, group and size: count, transfer time, bandwidth."""
        return collective_summary(self.collectives if self.collectives is not None else pl.DataFrame(schema={}))

    def to_dict(self) -> dict[str, Any]:
        """The ``analyze --json`` document (schema in docs/cli.md): every time in µs."""
        return {
            "schema_version": SCHEMA_VERSION,
            "run": self.run.name,
            "run_info": _run_json(self.run),
            "basis": {"timing": self.timing_basis.to_dict(), "shares": self.basis.to_dict(), "tables": self.table_basis.to_dict()},
            "verdict": self.verdict,
            "verdict_text": VERDICT_TEXT[self.verdict],
            "input_wait_share": None if "input_wait_share" in self.unknown else round(self.input_wait_share, 6),
            "busy_share": None if "busy_share" in self.unknown else round(self.busy_share, 6),
            "idle_share": None if "idle_share" in self.unknown else round(self.idle_share, 6),
            "main_idle_causes": [{"cause": c, "label": CAUSE_TEXT[c], "share": round(s, 6)} for c, _, s in self.idle_causes[:3]],
            "step_count": self.n_steps,
            "step_unit": self.step_unit,
            "mean_step_us": _us(self.mean_step_ns),
            "median_step_us": _us(self.median_step_ns),
            "has_device": self.has_device,
            "thresholds": {"high": HIGH_THRESHOLD, "moderate": MODERATE_THRESHOLD},
            "devices": table_json(self.devices),
            "streams": table_json(self.streams),
            "breakdown": {c: {"us": _us(v), "share": round(self.share(v), 6)} for c, v in self.breakdown_ns.items()},
            "idle_by_cause": {c: {"us": _us(v), "share": round(self.share(v), 6), "label": CAUSE_TEXT[c],
                                  "host_ops": [{"name": n, "us": _us(t)} for n, t in self.host_ops_of(c)]}
                              for c, v in self.idle_by_cause_ns.items()},
            "steps": [_step_json(r) for r in self.steps.iter_rows(named=True)],
            "recommendations": [a.to_dict() for a in self.advice],
            "top_kernels": table_json(self.top_kernels),
            "top_ops": table_json(self.top_ops),
            "launches": self.launches.to_dict(),
            "ranks": table_json(self.ranks) if self.ranks is not None else [],
            "stragglers": [s.to_dict() for s in self.stragglers],
            "straggler_share": round(self.straggler_share, 6),
            "collectives": {
                "instances": self.collectives.height if self.collectives is not None else 0,
                "unmatched_events": self.unmatched_collectives,
                "by_kind": table_json(self.collectives_by_kind),
            },
            "memory": {"devices": [_memory_json(r, self.categories_at_peak(r["rank"], r["device"])) for r in self.memory.iter_rows(named=True)], "leaks": table_json(self.memory_leaks),
                       "rank_skew": rank_skew(self.memory), "ops": table_json(self.memory_ops), "ops_more": self.memory_ops_more},
            LEAK_METRIC: self.memory_leak_bytes_per_step,
            PEAK_SHARE_METRIC: self.peak_memory_share,
            "oom": self.oom.to_dict() if self.oom is not None else None,
            OOM_METRIC: int(self.oom is not None),
            "unknown": dict(self.unknown),
            "notes": self.notes,
        }


def _us(ns: float | None) -> float | None:
    if ns is None or ns != ns:  # NaN: no steps
        return None
    return round(ns / 1000, 3)


def table_json(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of a table for JSON: ``*_ns`` columns become ``*_us``, floats rounded."""
    out = []
    for r in df.iter_rows(named=True):
        row = {}
        for k, v in r.items():
            if k.endswith("_ns"):
                row[k[:-3] + "_us"] = _us(v)
            else:
                row[k] = round(v, 6) if isinstance(v, float) else v
        out.append(row)
    return out


def _run_json(info: RunInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "path": info.path,
        "ranks": list(info.ranks),
        "devices": [{"rank": r, "device": d} for r, d in info.devices],
        "framework": info.framework,
        "framework_version": info.framework_version,
        "mode": info.mode,
        "host": info.host,
        "start_unix_us": _us(info.start_ns),
        "duration_us": _us(info.duration_ns),
        "complete": info.complete,
        "live": info.live,
        "collector_problems": list(info.collector_problems),
        "memory_only": info.memory_only,
    }


def _size(n: int) -> str:
    """Bytes in MiB, or GiB from 1 GiB."""
    return f"{n / 2**30:.1f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.1f} MiB"


def _memory_json(r: dict[str, Any], categories: dict[str, int] | None) -> dict[str, Any]:
    return {
        "rank": r["rank"],
        "device": r["device"],
        "peak_allocated_bytes": r["peak_allocated_bytes"],
        "peak_reserved_bytes": r["peak_reserved_bytes"],
        "peak_unix_us": _us(r["peak_time_ns"]),
        "peak_step": r["peak_step"],
        "peak_op": r["peak_op"],
        "relative": r["relative"],
        "memory_total_bytes": r["memory_total_bytes"],
        "peak_share": None if r["peak_share"] is None else round(r["peak_share"], 6),
        "categories_at_peak": categories,
        "fragmentation_bytes": r["fragmentation_bytes"],
        "fragmentation_bytes_per_step": r["fragmentation_bytes_per_step"],
        "source": r.get("source"),
    }


def _step_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "rank": r["rank"],
        "step": r["step"],
        "name": r["name"],
        "start_unix_us": _us(r["start_ns"]),
        "dur_us": _us(r["dur_ns"]),
        "busy_share": round(r["busy_share"], 6),
        "input_wait_us": _us(r["input_wait_ns"]),
        "input_wait_share": round(r["input_wait_share"], 6),
        "verdict": r["verdict"],
        "warmup": r["warmup"],
        "input_timed": r["input_timed"],
        "traced": r["traced"],
        "analysed": r["analysed"],
        "outlier": r["outlier"],
        "outlier_reason": r["outlier_reason"],
        "breakdown": {c: _us(r[f"{c}_ns"]) for c in BREAKDOWN},
    }

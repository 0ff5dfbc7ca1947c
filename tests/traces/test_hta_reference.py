"""Kineto figures checked against HTA (Holistic Trace Analysis, PyPI ``traceinsight``), the
independent reference for Kineto traces, on every real Kineto trace in ../shared that HTA
loads (docs/analysis.md, "Checked against HTA").

HTA's temporal breakdown (idle / compute / non-compute time per rank) and idle time
breakdown (host wait / kernel wait / other per stream) are over HTA's own span: the first
to the last GPU op launched before the last ``ProfilerStep`` (the last step is dropped), or
every GPU op when the trace has fewer than two step names. accelscope's figures are per
``ProfilerStep`` window. So each figure is compared where it is defined the same:

* HTA's span figures against accelscope's imported events reduced over that same span with
  accelscope's own launch matching (``launches.match_launches``), compute/communication
  classes (``launches.stream_overlap``) and interval arithmetic (``intervals.union``);
* accelscope's report (``busy_share``, ``steps[].busy_share``, ``streams[].busy_share``)
  against HTA's own device intervals (its parser's reading, before its last-step filter)
  over the same ``ProfilerStep`` windows; and ``devices[].capture_busy_share`` against
  HTA's idle share where both are over every GPU op.

HTA runs with its rounding of nanosecond timestamps off (HTA_DISABLE_NS_ROUNDING). Where a
definition differs for a trace (the docs list each difference) the figure is measured but
not compared. Nothing here copies accelscope's outputs into expectations: HTA is the
expectation, and a drift of more than 0.5 percentage points fails. Traces HTA cannot load
or analyse skip with HTA's own error. ``python -m tests.traces.test_hta_reference`` prints
the table in the docs (``--all``: every rank, stream and step).
"""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pytest

pytestmark = pytest.mark.filterwarnings("ignore")  # pandas deprecations and HTA's own warnings

hta_analysis = pytest.importorskip("hta.trace_analysis", reason="HTA is not installed (pip install traceinsight): Kineto figures not checked against it")

from hta.common.trace import Trace  # noqa: E402
from hta.configs.env_options import HTAEnvOptions  # noqa: E402
from hta.utils.utils import KernelType, get_kernel_type, merge_kernel_intervals  # noqa: E402

from accelscope.analysis import analyze  # noqa: E402
from accelscope.analysis.intervals import union  # noqa: E402
from accelscope.analysis.launches import match_launches, runtime_slices, stream_overlap  # noqa: E402
from accelscope.traces import schema as S  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402
from tests.conftest import SHARED, shared_sources  # noqa: E402

TOLERANCE_PP = 0.5
# A PyTorch execution trace (operator graph, no traceEvents): not a Kineto trace.
NOT_KINETO = ("traces/HolisticTraceAnalysis/tests/data/execution_trace/benchmark_simple_add_et.json.gz",)
# HTA's device work (BreakdownAnalysis.get_idle_time_breakdown's kernel categories).
HTA_WORK_CATS = ("kernel", "Kernel", "gpu_memset", "Memset", "gpu_memcpy", "Memcpy", "mtia_ccp_events")
HTA_KERNEL_WAIT_US = 30  # get_idle_time_breakdown's default consecutive_kernel_delay (trace µs)
STEP_NAME = r"^ProfilerStep#\d+$"
IDLE_CATEGORIES = ("host_wait", "kernel_wait", "other")
DEVICE_COLUMNS = ("rank", "device", "stream", "name", "kind", "correlation_id", "start_ns", "dur_ns")
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"


SOURCES = shared_sources("traces", endings=(".json", ".json.gz"), exclude=NOT_KINETO)  # a job directory, or one file per run
needs_shared = pytest.mark.skipif(not SOURCES, reason=f"real trace data not found at {SHARED} (set ACCELSCOPE_SHARED)")


def _short(source: str) -> str:
    return source.removeprefix("traces/").replace("HolisticTraceAnalysis/tests/data/", "hta/").replace("tb_plugin/samples/", "")


# -- HTA ---------------------------------------------------------------------------------------

class HTAFailed(Exception):
    """HTA could not load or analyse a trace; the message is HTA's own error."""


def _hta_error(exc: BaseException) -> str:
    """HTA's exception with the HTA line that raised it (an IndexError from pandas says little)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f"{os.sep}hta{os.sep}" in f.filename]
    where = f" in hta {frames[-1].name}(): `{frames[-1].line}`" if frames else ""
    return f"{type(exc).__name__}{where}{': ' + str(exc) if str(exc) else ''}"


def _hta(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # HTA's own failure on this trace: the reason to skip
        raise HTAFailed(_hta_error(exc)) from exc


def _exact(call: Callable[[], Any]) -> Any:
    """``call()`` with HTA's rounding of nanosecond timestamps off (HTA_DISABLE_NS_ROUNDING):
    by default HTA moves each start of a ns-resolution trace up and each end down to a whole
    µs, which opens gaps of up to 2 µs around every kernel (docs/analysis.md)."""
    options = HTAEnvOptions.instance()
    before = options.disable_ns_rounding()
    options.set_disable_ns_rounding(True)
    logging.getLogger("hta").setLevel(logging.ERROR)
    try:
        return _hta(call)
    finally:
        options.set_disable_ns_rounding(before)


def _hta_load(trace_dir: Path) -> Any:
    """HTA's TraceAnalysis as HTA loads by default (the GPU ops of the last step dropped)."""
    return _exact(lambda: hta_analysis.TraceAnalysis(trace_dir=str(trace_dir)))


def _hta_parse(trace_dir: Path) -> Any:
    """HTA's reading of every event (its parser, without its filter): the device intervals
    to measure accelscope's step windows with. HTA's filter would drop device work whose
    launch the trace does not hold (kernels queued before the profiler started)."""
    def parse() -> Any:
        trace = Trace(trace_dir=str(trace_dir))
        trace.parse_traces(use_multiprocessing=False, use_memory_profiling=False)
        return trace

    return _exact(parse)


def _hta_filters(trace: Any) -> bool:
    """Whether HTA dropped the GPU ops launched from the last step on (it does with two or
    more ``ProfilerStep`` names; with one or none it keeps every event)."""
    return len(trace.symbol_table.get_profiler_step_ids()) >= 2


def _hta_rows(trace: Any, rank: int) -> Any:
    """HTA's events of one rank (an HTA ``Trace``) with decoded ``cat_name`` and ``name_str``."""
    table = trace.symbol_table.get_sym_table()
    df = trace.traces[rank]
    return df.assign(cat_name=df["cat"].map(lambda i: table[i]), name_str=df["name"].map(lambda i: table[i]))


def _hta_work(trace: Any, rank: int, stream: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """HTA's device work of one rank (its kernel, memcpy and memset rows; of one stream when
    given), merged by HTA's ``merge_kernel_intervals``: µs."""
    df = _hta_rows(trace, rank)
    work = df[df["stream"].ne(-1) & df["cat_name"].isin(HTA_WORK_CATS)]
    if stream is not None:
        work = work[work["stream"].eq(stream)]
    merged = merge_kernel_intervals(work[["ts", "dur"]].copy())
    return merged["ts"].to_numpy(float), merged["end"].to_numpy(float)


def _hta_steps(trace: Any, rank: int) -> dict[int, tuple[float, float]]:
    """Host ``ProfilerStep#N`` windows of one rank in HTA's reading: N -> (start, end) µs."""
    df = _hta_rows(trace, rank)
    steps = df[df["stream"].eq(-1) & df["cat_name"].ne("gpu_user_annotation") & df["name_str"].str.match(STEP_NAME)]
    out = {int(n.split("#")[1]): (float(ts), float(ts + dur)) for n, ts, dur in zip(steps["name_str"], steps["ts"], steps["dur"])}
    assert len(out) == len(steps), f"rank {rank}: a ProfilerStep number repeats in HTA's reading"
    return out


def _covered(starts: np.ndarray, ends: np.ndarray, lo: float, hi: float) -> float:
    """Length of sorted disjoint intervals inside [lo, hi) (plain numpy: the reference side)."""
    return float(np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None).sum())


# -- accelscope ----------------------------------------------------------------------------------

def _kept(events: pl.DataFrame, slices: pl.DataFrame, hta_filters: bool) -> pl.DataFrame:
    """The device slices HTA's breakdowns keep, found in accelscope's events: all of them, or
    (when HTA drops the last step) those whose launching runtime call, matched by accelscope,
    started before the rank's last ``ProfilerStep``. Adds ``launch_start_ns`` and ``end_ns``."""
    matched = match_launches(slices.select(DEVICE_COLUMNS), runtime_slices(events))
    if not hta_filters:
        return matched
    last = (events.filter((pl.col("kind") == S.STEP) & pl.col("name").str.contains(STEP_NAME))
            .group_by("rank").agg(pl.col("start_ns").max().alias("last_step_ns")))
    return matched.join(last, on="rank").filter(pl.col("launch_start_ns") < pl.col("last_step_ns")).drop("last_step_ns")


def _one_device(kept: pl.DataFrame, rank: int) -> pl.DataFrame:
    mine = kept.filter(pl.col("rank") == rank)
    devices = mine["device"].unique().to_list()
    assert len(devices) <= 1, f"rank {rank} has several devices {devices}: HTA's figures are per rank, these per device"
    return mine


# -- one trace, both tools ---------------------------------------------------------------------

@dataclass
class Case:
    """One trace read by HTA and by accelscope."""

    source: str
    temporal: Any  # HTA's get_temporal_breakdown (default load: last step dropped), indexed by rank
    idle: Any | HTAFailed  # HTA's get_idle_time_breakdown over every rank
    loaded: Any  # the HTA Trace those two ran on
    raw: Any | HTAFailed  # HTA's reading of every event, unfiltered (``loaded`` when HTA dropped nothing)
    hta_filters: bool
    mtia: bool  # HTA counts every MTIA device event as work, its event waits and records too
    events: pl.DataFrame  # accelscope's events of the same file(s)
    doc: dict[str, Any]  # accelscope's report, as `analyze --json` writes it
    ranks: dict[int, int]  # HTA rank -> accelscope rank

    def kept(self, sync: bool) -> pl.DataFrame:
        """``_kept`` device work; ``sync``: with the device's ``sync`` slices (waits), which
        HTA counts as device time where they have a stream (CUDA's cuda_sync rows in the
        temporal breakdown; MTIA's event waits everywhere)."""
        kinds = [*S.DEVICE_KINDS, S.SYNC] if sync else list(S.DEVICE_KINDS)
        slices = self.events.filter(pl.col("kind").is_in(kinds) & (pl.col("device") != "cpu"))
        if sync:  # HTA leaves out rows on stream -1 (written -1, or as the unsigned 2**32 - 1)
            slices = slices.filter(~pl.col("stream").is_in([-1, 2**32 - 1]))
        return _kept(self.events, slices, self.hta_filters)

    def not_work(self, rank: int) -> dict[str, int]:
        """Rows HTA's temporal breakdown counts as GPU time that are not device work, by category."""
        df = _hta_rows(self.loaded, rank)
        extra = df[df["stream"].ne(-1) & ~df["cat_name"].isin(HTA_WORK_CATS)]
        return {str(k): int(v) for k, v in extra.groupby("cat_name").size().items()}

    def temporal_sync(self) -> bool:
        return self.mtia or any(self.not_work(r).get("cuda_sync") for r in self.ranks)


def _copy_in(source: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    for f in sorted(source.iterdir()) if source.is_dir() else [source]:
        shutil.copy(f, into / f.name)
    return into


def _rank_map(hta_ranks: list[int], ours: list[int]) -> dict[int, int]:
    if sorted(hta_ranks) == sorted(ours):
        return {r: r for r in hta_ranks}
    assert len(hta_ranks) == len(ours) == 1, f"HTA's ranks {hta_ranks} vs accelscope's {ours}"
    return {hta_ranks[0]: ours[0]}


def build_case(source: str, tmp: Path) -> Case:
    """Read ``source`` (relative to ../shared) with HTA and with accelscope; HTAFailed with
    HTA's error when HTA cannot load it or compute its temporal breakdown."""
    src = SHARED / source
    trace_dir = _copy_in(src, tmp / "hta")
    hta = _hta_load(trace_dir)
    if not hta.t.traces:
        raise HTAFailed("HTA loaded no rank from it")
    temporal = _hta(lambda: hta.get_temporal_breakdown(visualize=False)).set_index("rank")
    ranks = sorted(hta.t.traces)
    try:
        idle = _hta(lambda: hta.get_idle_time_breakdown(ranks=ranks, visualize=False)[0])
    except HTAFailed as exc:
        idle = exc
    filters = _hta_filters(hta.t)
    try:
        raw = _hta_parse(trace_dir) if filters else hta.t
    except HTAFailed as exc:
        raw = exc
    run = Run.open(import_traces(sorted(src.iterdir()) if src.is_dir() else [src], tmp / "run", progress=False))
    events = run.slices
    doc = analyze(run).to_dict()
    mtia = hta.t.get_device_type() == "MTIA"
    return Case(source, temporal, idle, hta.t, raw, filters, mtia, events, doc, _rank_map(ranks, events["rank"].unique().to_list()))


# -- the figures, side by side -----------------------------------------------------------------

class Row(NamedTuple):
    """One figure of one trace: HTA's and accelscope's value in %, and why they are not
    compared (``differs``: the definitions differ there) or None."""

    figure: str
    where: str
    hta: float
    ours: float
    differs: str | None = None


def _classed_differently(kept: pl.DataFrame) -> list[str]:
    """Names HTA's kernel types and accelscope's classes cannot agree on: device work HTA has
    no type for (``OTHER``, e.g. MTIA's ``pe_exe``), and waits HTA calls computation. A
    kernel both tools type (computation, communication, memory) is compared, never excused."""
    names = kept.select("kind", "name").unique()
    return sorted(
        n for k, n in names.iter_rows()
        if (k in S.DEVICE_KINDS and get_kernel_type(n) == KernelType.OTHER.name)
        or (k == S.SYNC and get_kernel_type(n) == KernelType.COMPUTATION.name)
    )


def temporal_rows(case: Case, figure: str) -> Iterator[Row]:
    """HTA's temporal breakdown per rank (``idle``, ``compute`` or ``non_compute`` share of
    HTA's span) and accelscope's events reduced over the same span: idle = span - union of
    the kept device slices; compute = accelscope's compute class (``stream_overlap``)."""
    kept = case.kept(sync=case.temporal_sync())
    for hta_rank, rank in case.ranks.items():
        mine = _one_device(kept, rank)
        differs = None
        if host := {k: v for k, v in case.not_work(hta_rank).items() if k != "cuda_sync"}:
            differs = f"HTA's temporal breakdown counts host rows that carry a stream as GPU time ({host})"
        elif figure != "idle" and (names := _classed_differently(mine)):
            differs = f"HTA's kernel types and accelscope's classes differ by definition for {names}"
        t = case.temporal.loc[hta_rank]
        hta = 100 * t[f"{figure}_time(us)"] / t["kernel_time(us)"]
        lo, hi = int(mine["start_ns"].min()), int(mine["end_ns"].max())
        bs, be = union(mine["start_ns"].to_numpy(), mine["end_ns"].to_numpy())
        idle = (hi - lo) - int((be - bs).sum())
        window = pl.DataFrame({"rank": [rank], "start_ns": [lo], "end_ns": [hi]}, schema={"rank": pl.Int32, "start_ns": pl.Int64, "end_ns": pl.Int64})
        work = mine.filter(pl.col("kind").is_in(list(S.DEVICE_KINDS)))
        compute = int(stream_overlap(work.select(DEVICE_COLUMNS), window)["compute_ns"].sum()) if work.height else 0
        ours = {"idle": idle, "compute": compute, "non_compute": (hi - lo) - idle - compute}[figure]
        yield Row(f"{figure.replace('_', '-')} share of HTA's span", f"rank {hta_rank}", hta, 100 * ours / (hi - lo), differs)


def idle_rows(case: Case) -> Iterator[Row]:
    """HTA's idle time breakdown per stream and the same rule over accelscope's kept device
    slices and the launches accelscope matched to them, in % of HTA's span. Host wait: the
    op's launch began after the previous op on the stream ended; kernel wait: otherwise a gap
    under 30 µs; other: the rest. The stream's idle time in all is always comparable; its
    split is not on a stream with an op whose launch the trace lacks: HTA links such an op to
    its first event (index_correlation 0), whatever that is, and calls the gap before it
    host wait when that event is later (docs/analysis.md)."""
    if isinstance(case.idle, HTAFailed):
        raise case.idle
    kept = case.kept(sync=case.mtia)
    for hta_rank, rank in case.ranks.items():
        span = case.temporal.loc[hta_rank]["kernel_time(us)"]
        hta = case.idle[case.idle["rank"] == hta_rank]
        mine = _one_device(kept, rank).sort("stream", "start_ns").with_columns(prev_end=pl.col("end_ns").shift(1).over("stream"))
        mine = mine.filter(pl.col("prev_end").is_not_null()).with_columns(gap=pl.col("start_ns") - pl.col("prev_end"))
        host = pl.col("launch_start_ns").is_not_null() & (pl.col("launch_start_ns") > pl.col("prev_end"))
        mine = mine.with_columns(cat=pl.when(host).then(pl.lit("host_wait"))
                                 .when(pl.col("gap") < HTA_KERNEL_WAIT_US * 1000).then(pl.lit("kernel_wait")).otherwise(pl.lit("other")))
        unlaunched = set(mine.filter(pl.col("launch_start_ns").is_null())["stream"].to_list())
        ours = {(s, c): g / 1000 for s, c, g in mine.group_by("stream", "cat").agg(pl.col("gap").sum()).iter_rows()}
        theirs = {(int(s), str(c)): float(v) for s, c, v in zip(hta["stream"], hta["idle_category"], hta["idle_time"])}
        for stream in sorted({s for s, _ in theirs} | {s for s, _ in ours}):
            where = f"rank {hta_rank} stream {stream}"
            both = [sum(d.get((stream, c), 0.0) for c in IDLE_CATEGORIES) for d in (theirs, ours)]
            yield Row("stream idle share of HTA's span", where, 100 * both[0] / span, 100 * both[1] / span)
            differs = "an op on the stream has no launch in the trace" if stream in unlaunched else None
            for cat in IDLE_CATEGORIES:
                yield Row(f"{cat.replace('_', ' ')} share of HTA's span", where, 100 * theirs.get((stream, cat), 0.0) / span,
                          100 * ours.get((stream, cat), 0.0) / span, differs)


def _windows(case: Case) -> Iterator[tuple[int, int, Any, dict[int, tuple[float, float]], list[dict[str, Any]]]]:
    """Per rank: HTA rank, accelscope rank, HTA's unfiltered reading, its ProfilerStep windows
    and accelscope's steps of that rank."""
    if isinstance(case.raw, HTAFailed):
        raise case.raw
    for hta_rank, rank in case.ranks.items():
        ours = [s for s in case.doc["steps"] if s["rank"] == rank]
        if not any(s["name"].startswith("ProfilerStep#") for s in ours):
            raise HTAFailed("no ProfilerStep: accelscope analyses equal windows that HTA has no counterpart for")
        yield hta_rank, rank, case.raw, _hta_steps(case.raw, hta_rank), ours


def _occupied(step: dict[str, Any]) -> float:
    """A step's busy share plus its rank wait: the device running anything (rank wait is time
    an NCCL kernel spins for a late rank, which accelscope does not count as busy)."""
    return step["busy_share"] + step["breakdown"]["rank_wait"] / step["dur_us"]


def _steady(ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A rank's steps without its warm-up step (``ProfilerStep#0`` when it has three or more
    steps, docs/analysis.md "Steps"): what an imported trace's shares are over."""
    return [s for s in ours if not (len(ours) >= 3 and s["name"] == "ProfilerStep#0")]


def step_rows(case: Case) -> Iterator[Row]:
    """accelscope's ``steps[].busy_share`` (+ rank wait) against HTA's device intervals
    (union of its kernel, memcpy and memset rows) inside the same ``ProfilerStep``."""
    for hta_rank, _, raw, windows, ours in _windows(case):
        ms, me = _hta_work(raw, hta_rank)
        for s in ours:
            lo, hi = windows[s["step"]]
            yield Row("busy share of a step", f"rank {hta_rank} {s['name']}", 100 * _covered(ms, me, lo, hi) / (hi - lo), 100 * _occupied(s))


def headline_rows(case: Case) -> Iterator[Row]:
    """accelscope's run-level ``busy_share`` (+ rank wait share) against HTA's device
    intervals over every rank's steady steps (the warm-up step left out)."""
    busy = total = 0.0
    for hta_rank, _, raw, windows, ours in _windows(case):
        ms, me = _hta_work(raw, hta_rank)
        for s in _steady(ours):
            lo, hi = windows[s["step"]]
            busy, total = busy + _covered(ms, me, lo, hi), total + (hi - lo)
    ours = case.doc["busy_share"] + case.doc["breakdown"]["rank_wait"]["share"]
    yield Row("busy_share", case.doc["basis"]["shares"]["text"], 100 * busy / total, 100 * ours)


def stream_rows(case: Case) -> Iterator[Row]:
    """accelscope's ``streams[].busy_share`` against the union of HTA's device rows on that
    stream over the rank's steady steps."""
    for hta_rank, rank, raw, windows, ours in _windows(case):
        steps = [windows[s["step"]] for s in _steady(ours)]
        total = sum(hi - lo for lo, hi in steps)
        for st in (x for x in case.doc["streams"] if x["rank"] == rank):
            ms, me = _hta_work(raw, hta_rank, st["stream"])
            hta = sum(_covered(ms, me, lo, hi) for lo, hi in steps)
            yield Row("streams[].busy_share", f"rank {hta_rank} stream {st['stream']}", 100 * hta / total, 100 * st["busy_share"])


def capture_rows(case: Case) -> Iterator[Row]:
    """accelscope's whole-capture idle share (1 - ``devices[].capture_busy_share``) against
    HTA's idle share. The same figure where HTA kept every GPU op, counts nothing but device
    work, and the capture is over the device's activity span (``capture_window`` "span")."""
    for hta_rank, rank in case.ranks.items():
        (dev,) = [d for d in case.doc["devices"] if d["rank"] == rank]
        extra = case.not_work(hta_rank)
        differs = (
            "HTA dropped the last step: its span is not the capture's" if case.hta_filters
            else "HTA counts MTIA event waits and records as device work, the capture does not" if case.mtia
            else f"HTA counts rows that are not device work as GPU time ({extra})" if extra
            else "the capture is over the GPU-side ProfilerStep annotations, HTA's over the span" if dev["capture_window"] != "span"
            else None
        )
        t = case.temporal.loc[hta_rank]
        yield Row("idle share of the capture", f"rank {hta_rank}", 100 * t["idle_time(us)"] / t["kernel_time(us)"], 100 * (1 - dev["capture_busy_share"]), differs)


# -- tests -------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=SOURCES, ids=_short)
def case(request: pytest.FixtureRequest, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Case:
    """One trace read by both tools, once for all its tests (HTA takes seconds per trace);
    skips with HTA's error when HTA cannot load or analyse the trace."""
    try:
        return build_case(request.param, tmp_path_factory.mktemp("hta_ref"))
    except HTAFailed as exc:
        pytest.skip(f"HTA cannot analyse {_short(request.param)}: {exc}")


def _within(case: Case, rows: Callable[[], Iterator[Row]]) -> None:
    """Every row defined the same by both tools agrees within TOLERANCE_PP; skips, with the
    reason, where none is (docs/analysis.md, "Checked against HTA", says why)."""
    try:
        got = list(rows())
    except HTAFailed as exc:
        pytest.skip(f"{_short(case.source)}: {exc}")
    compared = [r for r in got if r.differs is None]
    if not compared:
        pytest.skip(f"{_short(case.source)}: " + "; ".join(sorted({str(r.differs) for r in got})) if got else "nothing to compare")
    off = [f"{r.figure} ({r.where}): HTA {r.hta:.2f} %, accelscope {r.ours:.2f} %" for r in compared if abs(r.hta - r.ours) > TOLERANCE_PP]
    assert not off, "\n".join(off)


@needs_shared
@pytest.mark.parametrize("case", [NW0, NW4], ids=["nw0", "nw4"], indirect=True)
def test_hta_reads_the_resnet_traces_as_documented(case: Case) -> None:
    """HTA's idle share of the two V100 ResNet-50 traces is the one shared/README.md records
    (39.43 % and 24.32 %): the reference itself has not moved (another HTA version would)."""
    assert case.temporal.loc[0, "idle_time_pctg"] == {NW0: 39.43, NW4: 24.32}[case.source]


@needs_shared
@pytest.mark.parametrize("figure", ["idle", "compute", "non_compute"])
def test_temporal_breakdown_over_htas_span(case: Case, figure: str) -> None:
    """HTA's idle / compute / non-compute share of its span per rank equals accelscope's
    events reduced over the same span: the importer's device slices, launches and classes."""
    _within(case, lambda: temporal_rows(case, figure))


@needs_shared
def test_idle_time_breakdown_per_stream(case: Case) -> None:
    """HTA's host wait / kernel wait / other idle time of each stream equals the same rule
    applied to accelscope's device slices and the launches accelscope matched to them."""
    _within(case, lambda: idle_rows(case))


@needs_shared
def test_step_busy_share_matches_htas_intervals(case: Case) -> None:
    """Each step's busy share in accelscope's report equals the union of HTA's device rows
    inside that ProfilerStep (plus accelscope's rank wait, which it does not count as busy)."""
    _within(case, lambda: step_rows(case))


@needs_shared
def test_headline_busy_share_matches_htas_intervals(case: Case) -> None:
    """The report's ``busy_share`` (plus rank wait) equals HTA's device time over the steady
    steps (warm-up step left out) divided by their duration."""
    _within(case, lambda: headline_rows(case))


@needs_shared
def test_stream_busy_share_matches_htas_intervals(case: Case) -> None:
    """Each stream's busy share in the report equals the union of HTA's device rows on that
    stream over the rank's steady steps."""
    _within(case, lambda: stream_rows(case))


@needs_shared
def test_capture_idle_share_matches_htas_idle_share(case: Case) -> None:
    """Where HTA keeps every GPU op and counts only device work, its idle share is the
    report's whole-capture idle share (1 - ``devices[].capture_busy_share``, over the span)."""
    _within(case, lambda: capture_rows(case))


# -- the table in docs/analysis.md ---------------------------------------------------------------

FIGURES: tuple[Callable[[Case], Iterator[Row]], ...] = (
    lambda c: temporal_rows(c, "idle"),
    lambda c: temporal_rows(c, "compute"),
    lambda c: temporal_rows(c, "non_compute"),
    idle_rows,
    headline_rows,
    step_rows,
    stream_rows,
    capture_rows,
)


def _values(rows: list[Row]) -> tuple[str, str]:
    return " / ".join(f"{r.hta:.2f}" for r in rows), " / ".join(f"{r.ours:.2f}" for r in rows)


def _largest(rows: list[Row]) -> str:
    compared = [abs(r.hta - r.ours) for r in rows if r.differs is None]
    return f"{max(compared):.2f}" if compared else "not compared"


def _why(rows: list[Row]) -> str:
    out = []
    for reason in sorted({r.differs for r in rows if r.differs}):
        figures = sorted({r.figure.split(" share")[0] for r in rows if r.differs == reason})
        places = {r.where for r in rows if r.differs == reason}
        where = f" on {len(places)} of {len({r.where for r in rows})} streams" if rows[0].figure.endswith("HTA's span") and " stream " in rows[0].where else ""
        out.append(f"{', '.join(figures)} not compared{where}: {reason}")
    return f" ({'; '.join(out)})" if out else ""


def _docs_rows(case: Case) -> Iterator[tuple[str, str, str, str]]:
    """The docs table's rows of one trace: (figure, HTA, accelscope, largest difference)."""
    def rows(fn: Callable[[Case], Iterator[Row]]) -> list[Row]:
        try:
            return list(fn(case))
        except HTAFailed:
            return []

    ranks = list(case.ranks)
    several = f", rank {ranks[0]} shown of {len(ranks)} (difference: the largest of all)" if len(ranks) > 1 else ""
    temporal = [r for f in ("idle", "compute", "non_compute") for r in rows(lambda c, f=f: temporal_rows(c, f))]
    if temporal:
        shown = [r for r in temporal if r.where == temporal[0].where]
        yield (f"idle / compute / non-compute % of HTA's span{several}{_why(temporal)}", *_values(shown), _largest(temporal))
    idle = rows(idle_rows)
    if idle:
        span_ms = case.temporal.loc[ranks[0]]["kernel_time(us)"] / 1000 / 100
        mine = [r for r in idle if r.where.startswith(f"rank {ranks[0]} ")]
        sums = [Row(c, "", sum(r.hta for r in mine if r.figure.startswith(c)) * span_ms, sum(r.ours for r in mine if r.figure.startswith(c)) * span_ms)
                for c in ("host wait", "kernel wait", "other")]
        streams = len({r.where for r in mine})
        yield (f"host / kernel / other wait in ms, {streams} stream{'s' if streams > 1 else ''} summed{several}{_why(idle)}",
               *(" / ".join(f"{v:.2f}" for v in col) for col in ([r.hta for r in sums], [r.ours for r in sums])), _largest(idle))
    headline, steps, streams_ = rows(headline_rows), rows(step_rows), rows(stream_rows)
    if headline:
        yield (f"busy_share % ({headline[0].where}; difference: the largest of it, {len(steps)} steps' and {len(streams_)} streams' busy_share)",
               *_values(headline), _largest(headline + steps + streams_))
    capture = rows(capture_rows)
    if capture:
        shown = [r for r in capture if r.where == capture[0].where]
        yield (f"idle % of the capture{several}{_why(capture)}", *_values(shown), _largest(capture))


def main() -> None:  # pragma: no cover - prints the table in docs/analysis.md
    import sys
    import tempfile

    every = "--all" in sys.argv  # every row of every figure, instead of the docs table
    print("| trace | figure | HTA | accelscope | largest difference (pp) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, source in enumerate(SOURCES):
            try:
                case = build_case(source, Path(tmp) / str(i))
            except HTAFailed as exc:
                print(f"| {_short(source)} | HTA cannot analyse it: {exc if every else str(exc).split(' ')[0] + ' (see above)'} | | | |")
                continue
            if every:
                for fn in FIGURES:
                    try:
                        for r in fn(case):
                            print(f"| {_short(source)} | {r.figure}, {r.where}{f' (not compared: {r.differs})' if r.differs else ''} | {r.hta:.2f} | {r.ours:.2f} | {r.ours - r.hta:+.2f} |")
                    except HTAFailed as exc:
                        print(f"| {_short(source)} | not compared: {exc} | | | |")
                continue
            for figure, hta, ours, diff in _docs_rows(case):
                print(f"| {_short(source)} | {figure} | {hta} | {ours} | {diff} |")


if __name__ == "__main__":
    main()

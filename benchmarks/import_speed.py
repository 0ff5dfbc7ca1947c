"""Import speed and memory of real Kineto traces, against HTA and the JSON parse floor.

Cases (all measured in this one run, rounds interleaved so machine noise hits each alike):

* nw0: the ResNet-50 ``num_workers=0`` trace from the PyTorch TensorBoard plugin samples
  (75.7k events, 34 MiB of JSON);
* 3 ranks: a directory of the three larger HTA test traces, as ``rank-0/1/2.json.gz``
  (394k events, 90 MiB of JSON). Both tools take a file's rank from its contents
  (``distributedInfo.rank``; HTA from the first ``"rank": N`` in the text), and two of
  the three files say rank 0, so the copies differ from the originals in that one
  number, else HTA silently keeps one of the two and accelscope refuses the duplicate;
* a trace scaled from nw0 with ``shared/tools/scale_trace.py`` (``--events``, default 1M).

For the real cases, the median over the rounds of:
  (a) our import: ``import_traces([...], out)``, wall time, writing the run included;
  (b) HTA's load: what ``TraceAnalysis(trace_dir=...)`` does, with multiprocessing off
      (HTA 0.5 has no switch for it on ``TraceAnalysis``: the benchmark calls
      ``Trace.load_traces(use_multiprocessing=False)`` and wraps the result, which is
      all ``TraceAnalysis.__init__`` does); for several ranks HTA's default (a fork pool
      of min(ranks, cores) processes) is shown as well, for information;
  (c) the parse floor: gunzip + ``json.loads`` of the same files;
  (d) reopening the imported run: ``Run.open(out)`` + materialising ``.slices`` (every column but the args JSON,
      which only exports and detail views read).
Peak memory: a child process imports the modules and reads its ``VmHWM``, imports a 15 kB
trace (which loads what the first import loads lazily) and reads it again (the baseline),
runs the import, and reads ``VmHWM`` once more; the net figure (peak - baseline) is the
import's own footprint, compared with the uncompressed JSON size.

Targets: HTA load / our import >= 5; our import / parse floor <= 1.5;
HTA load / our reopen >= 50; net peak RSS / uncompressed JSON <= 1.5.

    python benchmarks/import_speed.py [--rounds 3] [--events 1000000] [--keep PATH]
    python benchmarks/import_speed.py --events 10000000 --no-real --keep /tmp/nw0x10M.json
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACCELSCOPE_SHARED", REPO.parent / "shared"))
TRACES = SHARED / "traces"
NW0 = TRACES / "kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
HTA_DATA = TRACES / "HolisticTraceAnalysis/tests/data"
RANK_FILES = [
    HTA_DATA / "negative_queue_length_values_check/rank0.json.gz",
    HTA_DATA / "df_index_resolver/df_index_resolver.json.gz",
    HTA_DATA / "ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz",
]
SCALE_TOOL = SHARED / "tools/scale_trace.py"
WARMUP = TRACES / "kineto/_history/00a807b7/docs/traces/before_fix_trace.json"
_RANK_RE = re.compile(rb'("distributedInfo"\s*:\s*\{[^{}]*?"rank"\s*:\s*)(\d+)')
TARGETS = {"hta_over_import": 5.0, "import_over_floor": 1.5, "hta_over_reopen": 50.0, "rss_over_json": 1.5}


# -- helpers -----------------------------------------------------------------------------
def vm_hwm() -> int:
    """Peak resident set size of this process so far, in bytes (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def uncompressed_size(path: Path) -> int:
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return path.stat().st_size
        fh.seek(0)
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        n = 0
        while chunk := fh.read(1 << 20):
            n += len(d.decompress(chunk))
        return n + len(d.flush())


def trace_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.name.endswith((".json", ".json.gz"))))
        else:
            out.append(p)
    return out


def make_rank_dir(directory: Path) -> Path:
    """rank-0/1/2.json.gz: the three HTA traces, each with its distributedInfo.rank set to its index."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(RANK_FILES):
        data = gzip.decompress(src.read_bytes())
        data, n = _RANK_RE.subn(lambda m, i=i: m.group(1) + str(i).encode(), data, count=1)
        if n != 1:
            raise SystemExit(f"{src}: no distributedInfo.rank to renumber")
        with gzip.open(directory / f"rank-{i}.json.gz", "wb", compresslevel=6) as fh:
            fh.write(data)
    return directory


def slug(label: str) -> str:
    return re.sub(r"\W+", "-", label)


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 10 * 2**30 else f"{n / 2**30:,.2f} GiB"


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return f"(target {'>=' if higher_is_better else '<='} {target:g}: {'met' if ok else 'MISSED'})"


# -- what is timed -----------------------------------------------------------------------------
def parse_floor(files: list[Path]) -> tuple[float, float, int]:
    """Seconds to gunzip, seconds to json.loads, and the number of trace events."""
    gunzip = loads = 0.0
    n = 0
    for f in files:
        t0 = time.perf_counter()
        raw = f.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        t1 = time.perf_counter()
        doc = json.loads(data)
        t2 = time.perf_counter()
        gunzip += t1 - t0
        loads += t2 - t1
        n += len(doc["traceEvents"])
        del doc, data, raw
    return gunzip, loads, n


def our_import(paths: list[Path], out: Path) -> float:
    from accelscope.traces.importer import import_traces

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    import_traces([str(p) for p in paths], out, progress=False)
    return time.perf_counter() - t0


def our_reopen(run_dir: Path) -> tuple[float, int]:
    from accelscope.traces.run import Run

    t0 = time.perf_counter()
    rows = Run.open(run_dir).slices.height  # what analysis and the dashboard load
    return time.perf_counter() - t0, rows


def hta_load(trace_dir: Path, multiprocessing: bool = False):
    """``TraceAnalysis(trace_dir=...)``, with HTA's multiprocessing switched as asked."""
    from hta.common.trace import Trace
    from hta.trace_analysis import TraceAnalysis

    t = Trace(trace_dir=str(trace_dir))
    t.load_traces(include_last_profiler_step=False, use_multiprocessing=multiprocessing)
    analysis = TraceAnalysis.__new__(TraceAnalysis)
    analysis.t = t
    return analysis


def timed_hta(trace_dir: Path, multiprocessing: bool = False) -> tuple[float, int]:
    t0 = time.perf_counter()
    a = hta_load(trace_dir, multiprocessing)
    dt = time.perf_counter() - t0
    ranks = len(a.t.traces)
    del a
    return dt, ranks


# -- child processes for peak memory ------------------------------------------------------------
def child_import(out: str, paths: list[str]) -> None:
    """Runs in a fresh interpreter: modules, a tiny warm-up import, then the import alone.

    The warm-up (a 15 kB trace) loads what the first import loads lazily (pyarrow imports
    pandas on its first ``pa.array(list)`` when pandas is installed: ~40 MiB), so that
    ``peak - warm`` is the import's own footprint; ``peak - modules`` is printed too.
    """
    import polars  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import accelscope.traces.importer  # noqa: F401  the modules an import needs, loaded up front
    import accelscope.traces.kineto  # noqa: F401
    import accelscope.traces.run  # noqa: F401
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    modules = vm_hwm()
    with tempfile.TemporaryDirectory() as tmp:
        import_traces([str(WARMUP)], Path(tmp) / "warm", progress=False)
    warm = vm_hwm()
    t0 = time.perf_counter()
    import_traces(paths, out, progress=False)
    seconds = time.perf_counter() - t0
    peak = vm_hwm()
    t1 = time.perf_counter()
    rows = Run.open(out).slices.height
    reopen = time.perf_counter() - t1
    print(json.dumps({"modules_bytes": modules, "baseline_bytes": warm, "peak_bytes": peak, "seconds": seconds, "rows": rows, "reopen_seconds": reopen}))


def run_child(paths: list[Path], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child-import", str(out), *map(str, paths)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"child import failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def print_memory(m: dict, json_bytes: int) -> dict:
    net = m["peak_bytes"] - m["baseline_bytes"]
    net_modules = m["peak_bytes"] - m["modules_bytes"]
    ratio = net / json_bytes
    print(f"  peak RSS of the importing child: {fmt_bytes(m['peak_bytes'])} raw; baselines: modules imported {fmt_bytes(m['modules_bytes'])}, after a tiny warm-up import {fmt_bytes(m['baseline_bytes'])}")
    print(f"  uncompressed JSON {fmt_bytes(json_bytes)}: raw peak / JSON = {m['peak_bytes'] / json_bytes:.2f}; (peak - modules) / JSON = {net_modules / json_bytes:.2f} ({fmt_bytes(net_modules)})")
    print(f"  net peak (peak - warm) {fmt_bytes(net)}: net / JSON = {ratio:.2f}  {verdict(ratio, TARGETS['rss_over_json'], False)}")
    return {
        "peak_bytes": m["peak_bytes"], "modules_bytes": m["modules_bytes"], "baseline_bytes": m["baseline_bytes"], "net_bytes": net,
        "json_bytes": json_bytes, "net_over_json": ratio, "net_modules_over_json": net_modules / json_bytes, "raw_over_json": m["peak_bytes"] / json_bytes,
    }


# -- the cases -----------------------------------------------------------------------------------
def bench_real(cases: dict[str, tuple[list[Path], Path]], rounds: int, work: Path, have_hta: bool) -> dict:
    """cases: label -> (paths given to import_traces, directory HTA loads)."""
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in cases}
    info: dict[str, dict] = {}
    for label, (paths, _hta_dir) in cases.items():
        files = trace_files(paths)
        info[label] = {"files": len(files), "json_bytes": sum(uncompressed_size(f) for f in files), "gz_bytes": sum(f.stat().st_size for f in files)}
    # warm-up: module imports, page cache, allocator
    for label, (paths, _hta_dir) in cases.items():
        our_import(paths, work / f"{slug(label)}.run")
        our_reopen(work / f"{slug(label)}.run")
    if have_hta:
        timed_hta(next(iter(cases.values()))[1])
    for r in range(rounds):
        for label, (paths, hta_dir) in cases.items():
            s = samples[label]
            files = trace_files(paths)
            gc.collect()
            gunzip, loads, n_events = parse_floor(files)
            s.setdefault("gunzip", []).append(gunzip)
            s.setdefault("json_loads", []).append(loads)
            s.setdefault("floor", []).append(gunzip + loads)
            info[label]["events"] = n_events
            gc.collect()
            s.setdefault("import", []).append(our_import(paths, work / f"{slug(label)}.run"))
            gc.collect()
            dt, rows = our_reopen(work / f"{slug(label)}.run")
            s.setdefault("reopen", []).append(dt)
            info[label]["rows"] = rows
            if have_hta:
                gc.collect()
                dt, ranks = timed_hta(hta_dir)
                s.setdefault("hta", []).append(dt)
                info[label]["hta_ranks"] = ranks
                if len(files) > 1:
                    gc.collect()
                    s.setdefault("hta_mp", []).append(timed_hta(hta_dir, multiprocessing=True)[0])
            gc.collect()
            print(f"round {r + 1}/{rounds} {label}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in s.items()), flush=True)
    results = {}
    for label, s in samples.items():
        med = {k: statistics.median(v) for k, v in s.items()}
        inf = info[label]
        print(f"\n{label}: {inf['files']} file(s), {inf['events']:,} trace events -> {inf['rows']:,} rows, {fmt_bytes(inf['gz_bytes'])} gzipped, {fmt_bytes(inf['json_bytes'])} JSON (median of {rounds} rounds)")
        print(f"  parse floor          {med['floor']:7.3f} s  (gunzip {med['gunzip']:.3f} + json.loads {med['json_loads']:.3f})")
        print(f"  our import           {med['import']:7.3f} s  ({inf['events'] / med['import']:,.0f} events/s, writing the run included)")
        print(f"  our reopen           {med['reopen']:7.3f} s  (Run.open + .slices: every column but the args JSON)")
        res = {**inf, "median_s": med, "rounds": rounds}
        if have_hta:
            print(f"  HTA load             {med['hta']:7.3f} s  (multiprocessing off, {inf['hta_ranks']} rank(s))")
            if "hta_mp" in med:
                print(f"  HTA load, default    {med['hta_mp']:7.3f} s  (multiprocessing on: TraceAnalysis(trace_dir=...) as users call it; for information)")
        r_floor = med["import"] / med["floor"]
        print(f"  our import / parse floor = {r_floor:6.2f}  {verdict(r_floor, TARGETS['import_over_floor'], False)}")
        res["import_over_floor"] = r_floor
        if have_hta:
            r_imp = med["hta"] / med["import"]
            r_reo = med["hta"] / med["reopen"]
            print(f"  HTA load / our import    = {r_imp:6.2f}  {verdict(r_imp, TARGETS['hta_over_import'], True)}")
            print(f"  HTA load / our reopen    = {r_reo:6.1f}  {verdict(r_reo, TARGETS['hta_over_reopen'], True)}")
            res.update(hta_over_import=r_imp, hta_over_reopen=r_reo)
        m = run_child(paths, work / f"{slug(label)}.child.run")
        res["memory"] = print_memory(m, inf["json_bytes"])
        results[label] = res
    return results


def bench_scaled(n_events: int, keep: Path | None, work: Path) -> dict:
    target = keep if keep is not None else work / f"nw0x{n_events}.json"
    if target.exists():
        print(f"\nscaled trace: reusing {target}")
        n_written = None
    else:
        print(f"\nscaled trace: writing {target} ({n_events:,} events or more, uncompressed) with {SCALE_TOOL.name} ...", flush=True)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, str(SCALE_TOOL), str(NW0), str(target), "--events", str(n_events)], capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"scale_trace failed:\n{res.stderr[-3000:]}")
        m = re.search(r"wrote (\d+) events", res.stdout)
        n_written = int(m.group(1)) if m else None
        gen_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # max over children so far
        print(f"  {res.stdout.strip()} in {time.perf_counter() - t0:.0f} s (generator peak RSS <= {fmt_bytes(gen_peak)})")
    json_bytes = uncompressed_size(target)
    m = run_child([target], work / "scaled.child.run")
    events = n_written if n_written is not None else m["rows"]
    what = "trace events" if n_written is not None else "rows (trace event count unknown for a reused file)"
    print(f"scaled nw0: {events:,} {what} -> {m['rows']:,} rows, {fmt_bytes(json_bytes)} JSON")
    print(f"  our import           {m['seconds']:7.2f} s  ({events / m['seconds']:,.0f} events/s, in a child process, writing the run included)")
    print(f"  our reopen           {m['reopen_seconds']:7.2f} s  (Run.open + .slices: every column but the args JSON)")
    mem = print_memory(m, json_bytes)
    shutil.rmtree(work / "scaled.child.run", ignore_errors=True)
    return {"events": events, "rows": m["rows"], "json_bytes": json_bytes, "seconds": m["seconds"], "events_per_s": events / m["seconds"], "reopen_seconds": m["reopen_seconds"], "memory": mem}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child-import":
        child_import(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds for the real traces (median)")
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the scaled trace (0: skip it)")
    ap.add_argument("--keep", type=Path, help="write the scaled trace here and keep it (reused when it exists)")
    ap.add_argument("--no-real", action="store_true", help="skip the two real cases")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    if not TRACES.is_dir():
        raise SystemExit(f"real traces not found under {SHARED} (set ACCELSCOPE_SHARED)")
    try:
        import hta  # noqa: F401

        have_hta = True
        logging.getLogger("hta").setLevel(logging.ERROR)
    except ImportError:
        have_hta = False
        print("HTA is not installed (pip install holistictraceanalysis): HTA ratios are skipped")
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="import-speed-") as tmp:
        work = Path(tmp)
        if not args.no_real:
            nw0_dir = work / "nw0-hta"
            nw0_dir.mkdir()
            (nw0_dir / NW0.name).symlink_to(NW0)
            ranks = make_rank_dir(work / "ranks")
            if have_hta:
                from hta.common.trace_file import create_rank_to_trace_dict_from_dir

                found = sorted(create_rank_to_trace_dict_from_dir(str(ranks))[1])
                assert found == [0, 1, 2], f"HTA sees ranks {found} in {ranks}"
            results["real"] = bench_real({"nw0": ([NW0], nw0_dir), "3 ranks": ([ranks], ranks)}, args.rounds, work, have_hta)
        if args.events:
            results["scaled"] = bench_scaled(args.events, args.keep, work)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()

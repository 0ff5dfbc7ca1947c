"""Speed of the memory analysis and the dashboard's Memory section on a 1M-event trace whose
allocator events carry addresses, against the analysis of the same run without them,
measured in the same run of this script.

The trace is HTA's df_index_resolver trace (a real 5-step CUDA job: 28k allocator events
with addresses and the caching allocator's totals) scaled in time with
shared/tools/scale_trace.py to ``--events`` trace events and imported once, both cached
under ``--cache-dir``. A copy of the run without its memory table is the baseline. Each
measurement is a fresh child process:

* ``analyze``: ``Run.open`` + ``analyze`` (everything, memory included), and the same on the
  baseline: their difference is what memory costs the report;
* memory section: the dashboard's Memory section rendered by a fresh app on the run whose
  report is cached (``analyze_cached``, as a reopened run has it): the allocator events,
  the stacked category timeline (``memory_categories.run_timeline``), thinned per pixel;
* ``live_at``: one click on the curve (what was live at the peak).

Target (issue 15): the Memory section within the dashboard's first-view budget (3 s).

    python benchmarks/memory_speed.py [--events 1000000] [--cache-dir DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TRACE = SHARED / "traces/HolisticTraceAnalysis/tests/data/df_index_resolver/df_index_resolver.json.gz"
BUDGET_S = 3.0


def child_analyze(run_dir: str) -> None:
    from accelscope.analysis import analyze
    from accelscope.traces.run import Run

    t0 = time.perf_counter()
    report = analyze(Run.open(run_dir))
    print(json.dumps({"analyze": time.perf_counter() - t0, "memory_rows": report.memory.height}))


def child_section(run_dir: str) -> None:
    from accelscope.analysis.cache import analyze_cached
    from accelscope.analysis.memory_live import live_at
    from accelscope.dashboard.app import create_app
    from accelscope.dashboard.sections import memory
    from accelscope.traces.run import Run

    report = analyze_cached(Run.open(run_dir))  # a reopened run: its report is cached
    board = create_app([run_dir])._accelscope
    t0 = time.perf_counter()
    memory.render(board, {"run": 0, "n": 1})
    t1 = time.perf_counter()
    peak = report.memory.sort("peak_allocated_bytes", descending=True).row(0, named=True)
    live_at(Run.open(run_dir), peak["rank"], peak["device"], peak["peak_time_ns"])
    print(json.dumps({"section": t1 - t0, "live_at": time.perf_counter() - t1}))


def run_child(kind: str, run_dir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(run_dir)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(events: int, cache: Path) -> tuple[Path, Path]:
    """The scaled trace's run and its copy without a memory table, built once."""
    cache.mkdir(parents=True, exist_ok=True)
    trace, run, bare = cache / f"dfi-{events}.json", cache / f"run-dfi-{events}", cache / f"run-dfi-{events}-nomem"
    if not trace.exists():
        subprocess.run([sys.executable, str(SHARED / "tools/scale_trace.py"), "--events", str(events), str(TRACE), str(trace)], check=True)
    if not run.exists():
        subprocess.run([sys.executable, "-m", "accelscope", "import", str(trace), "-o", str(run)], check=True)
    if not bare.exists():
        shutil.copytree(run, bare, ignore=shutil.ignore_patterns("memory", ".accelscope-cache"))
    return run, bare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache/accelscope-bench")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        {"analyze": child_analyze, "section": child_section}[args.child[0]](args.child[1])
        return
    if not TRACE.exists():
        sys.exit(f"{TRACE} is not there: this benchmark needs ../shared")
    run, bare = prepare(args.events, args.cache_dir)
    rows: dict[str, list[float]] = {"analyze": [], "analyze_without_memory": [], "section": [], "live_at": []}
    for _ in range(args.rounds):  # interleaved: the machine's noise hits both alike
        rows["analyze"].append(run_child("analyze", run)["analyze"])
        rows["analyze_without_memory"].append(run_child("analyze", bare)["analyze"])
        got = run_child("section", run)
        rows["section"].append(got["section"])
        rows["live_at"].append(got["live_at"])
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(json.dumps({"events": args.events, "rounds": args.rounds, **{f"{k}_s": round(v, 3) for k, v in med.items()},
                      "analyze_with_over_without_memory": round(med["analyze"] / med["analyze_without_memory"], 3),
                      "section_over_budget": round(med["section"] / BUDGET_S, 3)}, indent=1))


if __name__ == "__main__":
    main()

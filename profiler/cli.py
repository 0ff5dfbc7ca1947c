"""The ``accelscope`` command line: demo, analyze, export, dashboard.

User errors (a missing path, a file that is not a run, a missing extra) print one line
on stderr and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelscope import __version__
from accelscope.errors import AccelscopeError

EXIT_USAGE = 2
EXIT_GATE = 1


def _fail(message: str) -> int:
    print(f"accelscope: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _open(path: str, workers: int | None = None, cluster: str | None = None):
    """A run directory, or a trace file/directory imported on the fly (cached), its files
    read by ``workers`` processes (None: every core), or on the Dask cluster at ``cluster``."""
    from accelscope.traces.importer import resolve_run
    from accelscope.traces.run import Run

    def announce(src: Path | str, dest: Path) -> None:
        print(f"importing {src} -> {dest}", file=sys.stderr, flush=True)

    return Run.open(resolve_run(path, on_import=announce, workers=workers, cluster=cluster))


def cmd_import(args: argparse.Namespace) -> int:
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    out = import_traces(args.paths, args.output, force=args.force, workers=args.workers, cluster=args.cluster)
    run = Run.open(out)
    ranks = run.meta.get("ranks", [])
    allocator = f" and {run.memory.height:,} allocator events" if run.holds("memory") else ""
    print(f"imported {run.events.height:,} events{allocator} from {len(run.meta.get('sources', []))} file(s), "
          f"rank(s) {', '.join(map(str, ranks))}, into {out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from accelscope.analysis import check_gates
    from accelscope.analysis.cache import analyze_cached
    from accelscope.text import print_report

    report = analyze_cached(_open(args.run, args.workers, args.cluster), cluster=args.cluster)
    doc = report.to_dict()
    crossed = check_gates(doc, args.fail_if or [])
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_report(report)
    for message in crossed:
        print(f"accelscope: gate failed: {message}", file=sys.stderr)
    return EXIT_GATE if crossed else 0


def _idle_gaps(run: Any) -> Any:
    """The analysis' idle gaps as slices (a DataFrame) for an export's gap track; None (with a
    warning) when the run cannot be analysed: the export itself does not need the analysis."""
    from accelscope.analysis.cache import analyze_cached
    from accelscope.analysis.causes import gap_slices

    try:
        return gap_slices(analyze_cached(run).gaps)
    except AccelscopeError as exc:
        print(f"accelscope: warning: exporting without the idle-gap track: {exc}", file=sys.stderr)
        return None


def cmd_export(args: argparse.Namespace) -> int:
    from accelscope.traces.chrome import export_chrome_trace, export_per_rank

    out = Path(args.output)
    if args.per_rank:
        if out.exists() and any(out.iterdir()) and not args.force:
            return _fail(f"{out} exists and is not empty (use --force to write into it)")
        run = _open(args.run, args.workers, args.cluster)
        files = export_per_rank(run, out, gaps=None if args.no_gaps else _idle_gaps(run))
        print(f"wrote {len(files)} file(s), one per rank, into {out} (HTA: TraceAnalysis(trace_dir={str(out)!r}))")
        return 0
    if not (out.name.endswith(".json") or out.name.endswith(".json.gz")):
        return _fail(f"{out}: the output must end in .json or .json.gz")
    if out.exists() and not args.force:
        return _fail(f"{out} exists (use --force to overwrite)")
    run = _open(args.run, args.workers, args.cluster)
    path = export_chrome_trace(run, out, gaps=None if args.no_gaps else _idle_gaps(run))
    print(f"wrote {path} (open it in https://ui.perfetto.dev or chrome://tracing)")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from accelscope.analysis.cache import analyze_cached
    from accelscope.analysis.compare import compare
    from accelscope.text import print_comparison

    cmp = compare(analyze_cached(_open(args.a, args.workers, args.cluster)), analyze_cached(_open(args.b, args.workers, args.cluster)))
    if args.json:
        print(json.dumps(cmp.to_dict(), indent=2))
    else:
        print_comparison(cmp)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from accelscope.runner import run_script

    argv = list(args.script)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        return _fail("run: name a script to profile, e.g. accelscope run -- train.py --epochs 1")
    code, run_dir = run_script(argv[0], argv[1:], args.out_dir, mode=args.mode)
    if run_dir is not None:
        print(f"accelscope: run written to {run_dir} (accelscope analyze {run_dir})", file=sys.stderr)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from accelscope.dashboard.report import write_report

    out = Path(args.output)
    if out.suffix.lower() not in (".html", ".htm"):
        return _fail(f"{out}: the report must end in .html")
    if out.exists() and not args.force:
        return _fail(f"{out} exists (use --force to overwrite)")
    path = write_report(_open(args.run, args.workers, args.cluster).path, out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
    return 0


def _check_serving(host: str, port: int) -> None:
    """Fail early, in one line, when the dashboard could not be served: its extra is missing,
    or ``host:port`` cannot be bound (checked by binding it and letting it go again)."""
    from accelscope.errors import require

    require("dash", "dashboard", "accelscope dashboard")
    require("dash_ag_grid", "dashboard", "accelscope dashboard")
    from accelscope.dashboard.server import listen

    listen(host, port).close()


def _serve(runs: Sequence[str], host: str, port: int, token: str | None = None, no_token: bool = False) -> int:
    """Serve ``runs``; the callers ran ``_check_serving`` first, and ``serve`` binds the
    port before anything is printed (a port taken since fails there, in one line)."""
    from accelscope.dashboard.app import serve
    from accelscope.dashboard.auth import choose_token, is_loopback

    required = choose_token(host, token, no_token)

    def listening(url: str) -> None:  # called once the port is bound and the app built
        if not is_loopback(host) and required is None:
            print(f"accelscope: warning: serving on {host} without a token (--no-token): anyone who can reach this machine "
                  "can read these runs", file=sys.stderr)
        print(f"dashboard: {url}  (Ctrl+C to stop)", flush=True)

    serve(list(runs), host=host, port=port, on_listening=listening, token=required)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    # The extra and the address first (one line each), then import and validate every run.
    _check_serving(args.host, args.port)
    runs = [str(_open(run, args.workers, args.cluster).path) for run in args.runs]
    return _serve(runs, args.host, args.port, args.token, args.no_token)


def cmd_demo(args: argparse.Namespace) -> int:
    from accelscope.analysis import analyze
    from accelscope.demo import run_demo
    from accelscope.text import print_report
    from accelscope.traces.run import Run

    if not args.no_serve:
        _check_serving(args.host, args.port)  # the extra and the port, before training
        from accelscope.dashboard.app import create_app  # noqa: F401 - fail early without the dashboard extra
    if args.framework == "tensorflow":
        how = "Keras model.fit" if args.keras_fit else "a Keras custom loop"
        feed = f"tf.data, {args.workers} parallel map calls"
    else:
        how, feed = "PyTorch", f"{args.workers} DataLoader workers"
    print(f"accelscope demo: training a small CNN on the CPU for {args.steps} steps with {how} "
          f"(loader delay {args.loader_delay_ms:g} ms/batch, {feed})", flush=True)
    run_dir = run_demo(args.out_dir, steps=args.steps, loader_delay_ms=args.loader_delay_ms, workers=args.workers,
                       mode=args.mode, framework=args.framework, keras_fit=args.keras_fit)
    print(f"run written to {run_dir}\n", flush=True)
    print_report(analyze(Run.open(run_dir)))
    if args.no_serve:
        return 0
    print()
    return _serve([str(run_dir)], args.host, args.port, args.token, args.no_token)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: give at least 1 (1 reads the files one by one)")
    return n


def _workers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="processes reading trace files, one rank file each (default: up to every core for jobs of "
                        "8 MiB and 4 files per process or more; 1: one by one)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="read the trace files on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786), one task "
                        "per rank file (analyze: and analyse each rank there); the run directory must be on storage its "
                        "workers can write (needs the cluster extra)")


def build_parser() -> argparse.ArgumentParser:
    from accelscope.demo import DEFAULT_DELAY_MS, DEFAULT_STEPS, DEFAULT_WORKERS

    parser = argparse.ArgumentParser(prog="accelscope", description="Find out why your accelerator sat idle.")
    parser.add_argument("--version", action="version", version=f"accelscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_serve_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the runs to the network)")
        p.add_argument("--port", type=int, default=8050, help="port (default 8050)")
        token = p.add_mutually_exclusive_group()
        token.add_argument("--token", help="the token the dashboard requires (default: a new one per start when --host is not loopback)")
        token.add_argument("--no-token", action="store_true", help="serve beyond loopback without a token (anyone who can reach the port reads the runs)")

    p = sub.add_parser("demo", help="profile a real small CNN training loop on the CPU and open the dashboard")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps (default {DEFAULT_STEPS})")
    p.add_argument("--loader-delay-ms", type=float, default=DEFAULT_DELAY_MS, help=f"simulated input-pipeline cost per batch (default {DEFAULT_DELAY_MS:g})")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help=f"DataLoader num_workers, or tf.data parallel map calls (default {DEFAULT_WORKERS})")
    p.add_argument("--framework", choices=("torch", "tensorflow"), default="torch", help="train with PyTorch (default) or TensorFlow/Keras (needs the tf extra)")
    p.add_argument("--keras-fit", action="store_true", help="with --framework tensorflow: train with model.fit and accelscope.keras.ProfileCallback instead of a custom loop")
    p.add_argument("--mode", choices=("full", "light"), default="full", help="full: with framework profiler windows (default); light: steps, input waits, host metrics")
    p.add_argument("--out-dir", default="runs", help="directory for the run (default ./runs)")
    p.add_argument("--no-serve", action="store_true", help="do not start the dashboard")
    add_serve_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="profile an unmodified PyTorch script: accelscope run [options] -- script.py args...")
    p.add_argument("--mode", choices=("full", "light"), default="light", help="light (default): steps, input waits, host and GPU metrics; full adds torch.profiler windows")
    p.add_argument("--out-dir", default="runs", help="directory for the run (default ./runs)")
    p.add_argument("script", nargs=argparse.REMAINDER, help="the script and its arguments")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("import", help="import Kineto JSON / XPlane traces (files, rank directories, TensorBoard logdirs; a file without a known ending is recognised by its content) into a run")
    _workers_option(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace files or directories; several files become ranks of one run")
    p.add_argument("-o", "--output", required=True, help="run directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("analyze", help="report step time and input-wait share of a run")
    _workers_option(p)
    p.add_argument("run", help="run directory, or a trace file/directory (imported on the fly and cached)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--fail-if", nargs="+", metavar="GATE", help="exit 1 if any gate holds, e.g. 'input_wait_share>0.10' 'idle_share>0.30' (metrics: docs/cli.md)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("diff", help="compare two runs: step time, breakdown, idle causes, top kernels and ops")
    _workers_option(p)
    p.add_argument("a", help="the baseline run (or trace)")
    p.add_argument("b", help="the run (or trace) to compare with it")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("export", help="export a run to Chrome trace JSON (Perfetto, chrome://tracing)")
    _workers_option(p)
    p.add_argument("run", help="run directory, or a trace file/directory (imported on the fly and cached)")
    p.add_argument("-o", "--output", required=True, help="output file, .json or .json.gz (a directory with --per-rank)")
    p.add_argument("--per-rank", action="store_true", help="write one rank-N.json.gz per rank into the -o directory (what HTA loads)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-gaps", action="store_true", help="leave out the 'accelscope idle gaps' track (the analysis' idle gaps and their causes)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run (opens offline)")
    _workers_option(p)
    p.add_argument("run", help="run directory, or a trace file/directory (imported on the fly and cached)")
    p.add_argument("-o", "--output", required=True, help="output .html file")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", help="browse runs in a web dashboard")
    _workers_option(p)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or trace files/directories (imported on the fly and cached)")
    add_serve_options(p)
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (AccelscopeError, ValueError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

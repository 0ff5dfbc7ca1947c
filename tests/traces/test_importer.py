import gzip
import json
import shutil
import subprocess
import sys

import polars as pl
import pytest

from accelscope.errors import AccelscopeError
from accelscope.traces.chrome import export_chrome_trace
from accelscope.traces.importer import TraceImportError, discover, import_traces, resolve_run
from accelscope.traces.run import Run

HTA = "traces/HolisticTraceAnalysis/tests/data"
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
CORE = ["start_ns", "dur_ns", "kind", "name", "device", "stream", "pid", "tid", "rank", "correlation_id"]


def _all_trace_files(shared):
    files = sorted(p for p in (shared / "traces").rglob("*") if p.name.endswith((".json", ".json.gz")) and ".accelscope" not in str(p))
    return [p for p in files if "execution_trace/benchmark_simple_add_et" not in str(p)] + sorted((shared / "xplane").glob("*.xplane.pb"))


def test_every_shared_trace_imports(shared_dir, tmp_path):
    files = _all_trace_files(shared_dir)
    assert len(files) > 35
    for i, f in enumerate(files):
        out = import_traces([f], tmp_path / f"r{i}", progress=False)
        run = Run.open(out)
        assert run.meta["complete"] and run.events.height > 0, f
        assert (run.events["dur_ns"] >= 0).all(), f
        assert run.meta["sources"][0]["path"] == str(f.resolve())


def test_an_execution_trace_is_not_a_kineto_trace(shared_dir, tmp_path):
    et = shared_dir / HTA / "execution_trace/benchmark_simple_add_et.json.gz"
    with pytest.raises(AccelscopeError, match="not a Kineto trace"):
        import_traces([et], tmp_path / "r", progress=False)
    # In a directory it is skipped, with a note, and the real trace beside it imports.
    run = Run.open(import_traces([et.parent], tmp_path / "d", progress=False))
    assert len(run.meta["sources"]) == 1 and any("skipped" in n for n in run.meta["import_notes"])


def test_rank_directory_imports_as_one_run_with_a_rank_column(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / HTA / "trace_filter"], tmp_path / "r", progress=False))
    assert run.meta["ranks"] == [0, 1]
    assert sorted(run.events["rank"].unique().to_list()) == [0, 1]
    assert run.meta["clock_alignment"]["method"].startswith("as recorded")
    counts = run.events.group_by("rank").len().sort("rank")["len"].to_list()
    assert counts == [4811 - 1, 4676 - 1], "X events minus the profiler's Trace span, per rank"


def test_duplicate_ranks_are_refused(shared_dir, tmp_path):
    d = tmp_path / "dup"
    d.mkdir()
    src = shared_dir / HTA / "trace_filter/sampled_rank-0.json.gz"
    shutil.copy(src, d / "a.json.gz")
    shutil.copy(src, d / "b.json.gz")
    with pytest.raises(TraceImportError, match="duplicate rank 0"):
        import_traces([d], tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_files_without_any_rank_are_numbered_in_name_order(shared_dir, tmp_path):
    d = tmp_path / "noranks"
    d.mkdir()
    src = shared_dir / HTA / "distributed_info_unavailable/distributed_info_not_found.json.gz"
    shutil.copy(src, d / "host-a.json.gz")
    shutil.copy(src, d / "host-b.json.gz")
    run = Run.open(import_traces([d], tmp_path / "r", progress=False))
    assert run.meta["ranks"] == [0, 1]
    assert [s["rank_source"] for s in run.meta["sources"]] == ["file order", "file order"]


def test_ranks_on_unrelated_clocks_are_aligned_on_the_first_shared_step(tmp_path):
    def trace(rank, base):
        events = [{"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{i}", "ts": base + i * 100, "dur": 100, "pid": 1, "tid": 1} for i in range(3)]
        return {"distributedInfo": {"rank": rank}, "traceEvents": events}

    d = tmp_path / "ranks"
    d.mkdir()
    (d / "r0.json").write_text(json.dumps(trace(0, 1_000_000)))
    (d / "r1.json").write_text(json.dumps(trace(1, 5)))
    run = Run.open(import_traces([d], tmp_path / "r", progress=False))
    align = run.meta["clock_alignment"]
    assert align["reference_step"] == "ProfilerStep#0" and align["offsets_ns"] == {"0": 0, "1": (1_000_000 - 5) * 1000}
    starts = run.events.filter(pl.col("name") == "ProfilerStep#1").sort("rank")["start_ns"].to_list()
    assert starts[0] == starts[1]


def test_tensorboard_logdir_takes_the_newest_session(shared_dir, tmp_path):
    for session, src in (("2024_01_01", NW0), ("2024_02_01", HTA + "/trace_filter/sampled_rank-0.json.gz")):
        d = tmp_path / "logs" / "plugins" / "profile" / session
        d.mkdir(parents=True)
        shutil.copy(shared_dir / src, d / "worker0.pt.trace.json.gz")
    sources, notes = discover([tmp_path / "logs"])
    assert [s.path.parent.name for s in sources] == ["2024_02_01"]
    assert "newest" in notes[0]


def test_a_multi_worker_logdir_takes_each_workers_newest_session_as_its_rank(shared_dir, tmp_path):
    # tf.distribute: every worker profiles into its own log directory, sessions named by time.
    xp = shared_dir / "xplane" / "local_cpu_tf221_customloop_slowmap.xplane.pb"
    for worker, sessions in (("worker0", ("2024_01_01_10_00_00", "2024_02_01_10_00_00")), ("worker1", ("2024_02_01_10_00_01",))):
        for session in sessions:
            d = tmp_path / "logs" / worker / "plugins" / "profile" / session
            d.mkdir(parents=True)
            shutil.copy(xp, d / "localhost.xplane.pb")
    sources, notes = discover([tmp_path / "logs"])
    assert [(s.path.parents[3].name, s.path.parent.name) for s in sources] == [("worker0", "2024_02_01_10_00_00"), ("worker1", "2024_02_01_10_00_01")]
    assert "newest of each log directory" in notes[0]
    run = Run.open(import_traces([tmp_path / "logs"], tmp_path / "r", progress=False))
    assert run.meta["ranks"] == [0, 1]


def test_existing_output_is_not_overwritten(shared_dir, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "precious.txt").write_text("x")
    with pytest.raises(TraceImportError, match="exists"):
        import_traces([shared_dir / HTA / "trace_compare/base/base.json.gz"], tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "precious.txt").exists()


def test_failed_import_leaves_nothing_that_looks_like_a_run(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"traceEvents": [{"ph": "X", "ts": 1, "dur": 1}, {"ph"')
    with pytest.raises(AccelscopeError):
        import_traces([bad], tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    assert not any(p.name.startswith(".r.importing") for p in tmp_path.iterdir())


def test_on_the_fly_import_is_cached_beside_the_input_and_refreshed_when_it_changes(shared_dir, tmp_path):
    src = tmp_path / "t.json.gz"
    shutil.copy(shared_dir / HTA / "trace_compare/base/base.json.gz", src)
    first = resolve_run(src, progress=False)
    assert first == tmp_path / "t.json.gz.accelscope"
    mtime = (first / "meta.json").stat().st_mtime_ns
    assert resolve_run(src, progress=False) == first and (first / "meta.json").stat().st_mtime_ns == mtime, "reused"
    shutil.copy(shared_dir / HTA / "trace_compare/test/test.json.gz", src)
    again = resolve_run(src, progress=False)
    assert again == first and Run.open(again).events.height == 34 - 0, "re-imported after the input changed"


def test_an_import_cached_by_other_import_code_is_made_again(shared_dir, tmp_path, monkeypatch):
    """An upgrade (or a fix to a reader) re-imports a cached trace although the trace itself
    did not change: the cache records which import code made it."""
    from accelscope.traces import importer

    src = tmp_path / "t.json.gz"
    shutil.copy(shared_dir / HTA / "trace_compare/base/base.json.gz", src)
    first = resolve_run(src, progress=False)
    made = json.loads((first / "meta.json").read_text())["importer"]
    assert made == importer.importer_fingerprint()
    monkeypatch.setattr(importer, "importer_fingerprint", lambda: "other-code")
    imported = []
    again = resolve_run(src, progress=False, on_import=lambda p, run_dir: imported.append(run_dir))
    assert again == first and imported == [first]
    assert json.loads((again / "meta.json").read_text())["importer"] == "other-code"


def test_on_the_fly_import_never_touches_a_foreign_directory(shared_dir, tmp_path, monkeypatch):
    src = tmp_path / "t.json.gz"
    shutil.copy(shared_dir / HTA / "trace_compare/base/base.json.gz", src)
    foreign = tmp_path / "t.json.gz.accelscope"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    monkeypatch.setenv("ACCELSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = resolve_run(src, progress=False)
    assert run_dir.parent == tmp_path / "cache" and (foreign / "mine.txt").exists()


def test_chrome_export_reimports_to_the_same_events(shared_dir, recorded_run, tmp_path):
    for i, run_dir in enumerate([recorded_run, import_traces([shared_dir / NW0], tmp_path / "nw0", progress=False)]):
        run = Run.open(run_dir)
        out = export_chrome_trace(run, tmp_path / f"export{i}.json.gz")
        back = Run.open(import_traces([out], tmp_path / f"back{i}", progress=False))
        a = run.events.select(CORE).sort(CORE)
        b = back.events.select(CORE).sort(CORE)
        if i == 0:  # our own recording: host slices have no stream; pids/tids as recorded
            assert a.equals(b)
        else:
            assert a.equals(b), "an imported Kineto trace survives export + re-import"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "x.txt").write_text("hi"), "no trace files"),
        (lambda d: None, "empty directory"),
        (lambda d: (d / "notes.json").write_text('{"a": 1}'), "nothing importable"),
    ],
)
def test_directory_with_nothing_importable(tmp_path, make, message):
    d = tmp_path / "d"
    d.mkdir()
    make(d)
    with pytest.raises(TraceImportError, match=message):
        import_traces([d], tmp_path / "r", progress=False)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "accelscope", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_import_then_analyze_and_export(shared_dir, tmp_path):
    proc = _cli("import", str(shared_dir / HTA / "trace_filter"), "-o", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "rank(s) 0, 1" in proc.stdout
    assert _cli("analyze", "r", "--json", cwd=tmp_path).returncode == 0
    trace = tmp_path / "base.json.gz"  # a copy: the on-the-fly cache goes beside it
    shutil.copy(shared_dir / HTA / "trace_compare/base/base.json.gz", trace)
    proc = _cli("export", str(trace), "-o", "e.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "base.json.gz.accelscope" / "meta.json").exists()
    assert len(json.loads((tmp_path / "e.json").read_text())["traceEvents"]) > 33


def _w(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _corrupt_xplane(shared, tmp_path):
    data = (shared / "xplane/local_cpu_jax0102_steptrace.xplane.pb").read_bytes()
    bad = tmp_path / "mangled.xplane.pb"
    bad.write_bytes(data.decode("utf-8", errors="replace").encode("utf-8"))
    return bad


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s, t: _w(t / "trunc.json.gz", (s / NW0).read_bytes()[:50_000]), "truncated"),
        (lambda s, t: _w(t / "cut.json", gzip.decompress((s / HTA / "trace_compare/base/base.json.gz").read_bytes())[:-40]), "truncated"),
        (lambda s, t: _w(t / "other.json", '{"nodes": []}'), "not a Kineto trace"),
        (lambda s, t: _w(t / "empty.json", '{"traceEvents": []}'), "no complete"),
        (lambda s, t: _w(t / "neg.json", '{"traceEvents": [{"ph": "X", "name": "k", "ts": 5, "dur": -1}]}'), "negative duration"),
        (lambda s, t: _w(t / "nots.json", '{"traceEvents": [{"ph": "X", "name": "k", "dur": 1}]}'), "no timestamp"),
        (_corrupt_xplane, "not an XSpace protobuf"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(shared_dir, tmp_path, make, message):
    path = make(shared_dir, tmp_path)
    proc = _cli("import", str(path), "-o", "r", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and path.name in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_on_the_fly_import_leaves_read_only_directories_alone(shared_dir, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(shared_dir / HTA / "trace_compare/base/base.json.gz", ro / "t.json.gz")
    ro.chmod(0o555)
    monkeypatch.setenv("ACCELSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    try:
        run_dir = resolve_run(ro / "t.json.gz", progress=False)
        assert run_dir.parent == tmp_path / "cache" and list(ro.iterdir()) == [ro / "t.json.gz"]
    finally:
        ro.chmod(0o755)

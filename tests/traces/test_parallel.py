"""Reading rank files in a pool of processes (traces/parallel.py): the same run as a serial
import, failures contained per file, a killed worker found and named."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import shutil
import signal
from types import SimpleNamespace

import psutil
import pytest

from accelscope.errors import AccelscopeError
from accelscope.traces import parallel
from accelscope.traces.formats import Source
from accelscope.traces.importer import discover, import_traces, read_source
from accelscope.traces.parallel import WORKER_DIED, read_sources
from accelscope.traces.run import Run

DLRM = "traces/more/param-dlrm-8rank"
KEY = ["rank", "start_ns", "dur_ns", "kind", "name", "device", "stream", "pid", "tid"]


KILLER = "ACCELSCOPE_TEST_KILLER"  # the file name a worker dies on


def killing_read(source: Source, on_bytes=None):
    """The reader, except that a spawned worker kills itself on the file named in $KILLER
    (a worker killed mid-way: the OOM killer, a preempted node)."""
    if source.path.name == os.environ.get(KILLER) and multiprocessing.parent_process() is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    return read_source(source, on_bytes)


def _copy(shared_dir, tmp_path):
    return shutil.copytree(shared_dir / DLRM, tmp_path / "job")


def test_a_pool_of_workers_imports_the_same_run_as_one_process(shared_dir, tmp_path):
    serial = Run.open(import_traces([shared_dir / DLRM], tmp_path / "serial", progress=False, workers=1))
    pooled = Run.open(import_traces([shared_dir / DLRM], tmp_path / "pooled", progress=False, workers=2))
    assert pooled.meta["ranks"] == serial.meta["ranks"] == list(range(8))
    assert pooled.events.sort(KEY).equals(serial.events.sort(KEY))
    assert pooled.counters.sort(["rank", "time_ns", "name"]).equals(serial.counters.sort(["rank", "time_ns", "name"]))
    assert pooled.meta["clock_alignment"] == serial.meta["clock_alignment"] and pooled.meta["failed_sources"] == []


def test_a_corrupt_rank_file_is_left_out_and_named_and_the_others_import(shared_dir, tmp_path):
    job = _copy(shared_dir, tmp_path)
    victim = sorted(job.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated mid-way
    for workers in (1, 2):
        run = Run.open(import_traces([job], tmp_path / f"r{workers}", progress=False, workers=workers))
        assert len(run.meta["ranks"]) == 7
        assert [f["path"] for f in run.meta["failed_sources"]] == [str(victim)]
        assert any(n.startswith("left out ") and victim.name in n for n in run.meta["import_notes"])


@pytest.mark.parametrize("here", [True, False], ids=["this process reads too", "workers only"])
def test_a_killed_worker_costs_only_its_own_file(shared_dir, tmp_path, monkeypatch, here):
    job = _copy(shared_dir, tmp_path)
    sources, _ = discover([job])
    monkeypatch.setattr(parallel, "_fits_here", lambda largest: here)
    # This process takes the largest file; the worker the next ones: it dies on the second largest.
    killer = sorted(sources, key=lambda s: -s.size_bytes)[1]
    monkeypatch.setenv(KILLER, killer.path.name)
    got = read_sources(sources, killing_read, workers=2)
    assert len(got.traces) == len(sources) - 1
    assert got.failed == [{"path": str(killer.path), "error": f"{killer.path}: {WORKER_DIED}"}]


def test_this_process_reads_only_where_no_file_can_press_its_memory(tmp_path, monkeypatch):
    trace = tmp_path / "rank-0.json.gz"
    trace.write_bytes(gzip.compress(b" " * 100_000))  # its JSON's size from the gzip trailer, not a guess
    source = Source(trace, "kineto")
    needs = parallel.PEAK_PER_BYTE * 100_000 / parallel.HERE_MEMORY_SHARE  # the guard's estimate, in available memory
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=int(needs)))
    assert parallel._fits_here(source)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=int(needs) - 1))
    assert not parallel._fits_here(source)


def test_a_file_named_by_the_user_still_fails_the_import(shared_dir, tmp_path):
    job = _copy(shared_dir, tmp_path)
    files = sorted(job.iterdir())
    files[0].write_bytes(b'{"traceEvents": [{"ph": "X", "ts": 1')
    with pytest.raises(AccelscopeError, match=files[0].name):
        import_traces(files, tmp_path / "r", progress=False, workers=2)
    assert not (tmp_path / "r").exists()


def test_a_worker_count_below_one_is_one_line(shared_dir):
    sources, _ = discover([shared_dir / DLRM])
    with pytest.raises(AccelscopeError, match="at least 1"):
        read_sources(sources, read_source, workers=0)


def test_the_analysis_says_first_which_file_is_missing(shared_dir, tmp_path):
    from accelscope.analysis import analyze

    job = _copy(shared_dir, tmp_path)
    victim = sorted(job.iterdir())[5]
    victim.write_bytes(b"\x1f\x8b not gzip at all")
    report = analyze(Run.open(import_traces([job], tmp_path / "r", progress=False, workers=1)))
    assert report.notes[0].startswith("1 trace file could not be read") and victim.name in report.notes[0]


def test_the_cli_imports_with_a_pool(shared_dir, tmp_path):
    """``accelscope import --workers 2`` end to end: spawned workers, one line of output."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "accelscope", "import", str(shared_dir / DLRM), "-o", str(tmp_path / "r"), "--workers", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "rank(s) 0, 1, 2, 3, 4, 5, 6, 7" in out.stdout and out.stderr == ""


def test_a_rank_file_that_fails_marks_its_rank_missing(shared_dir, tmp_path):
    """Where the file's name says its rank (rank-2.json.gz), the run lists that rank as missing."""
    job = tmp_path / "job"
    job.mkdir()
    for i, f in enumerate(sorted((shared_dir / DLRM).iterdir())):
        shutil.copy(f, job / f"rank-{i}.json.gz")
    (job / "rank-2.json.gz").write_bytes(b"\x1f\x8b not gzip at all")
    run = Run.open(import_traces([job], tmp_path / "r", progress=False, workers=1))
    assert run.meta["missing_ranks"] == [2] and 2 not in run.meta["ranks"] and len(run.meta["ranks"]) == 7

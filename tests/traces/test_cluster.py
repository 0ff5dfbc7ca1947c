"""Importing on a Dask distributed cluster (traces/cluster.py): a LocalCluster started here
gives the same run as a serial import, reads fsspec URLs, contains a killed worker and a
corrupt file, and a lost scheduler ends with one line and no run."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("distributed", reason="the [cluster] extra (dask distributed) is not installed")

import cloudpickle  # noqa: E402  (installed with distributed)
from distributed import LocalCluster  # noqa: E402

from accelscope.errors import AccelscopeError  # noqa: E402
from accelscope.traces import importer  # noqa: E402
from accelscope.traces.assemble import PartSummary, write_part  # noqa: E402
from accelscope.traces.cluster import ClusterError  # noqa: E402
from accelscope.traces.importer import discover, import_traces  # noqa: E402
from accelscope.traces.parallel import WORKER_DIED, read_sources  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

DLRM = "traces/more/param-dlrm-8rank"
KEY = ["rank", "start_ns", "dur_ns", "kind", "name", "device", "stream", "pid", "tid"]

# The tasks below run on the cluster's workers, which cannot import this test module: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster(local_cluster):
    return local_cluster


@pytest.fixture(scope="module")
def serial(shared_dir, tmp_path_factory):
    return Run.open(import_traces([shared_dir / DLRM], tmp_path_factory.mktemp("serial") / "r", progress=False, workers=1))


def _same_run(a: Run, b: Run) -> None:
    assert a.meta["ranks"] == b.meta["ranks"]
    assert a.events.sort(KEY).equals(b.events.sort(KEY))
    assert a.counters.sort(["rank", "time_ns", "name"]).equals(b.counters.sort(["rank", "time_ns", "name"]))
    assert a.meta["clock_alignment"] == b.meta["clock_alignment"]


def test_a_cluster_imports_the_same_run_as_one_process(cluster, serial, shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / DLRM], tmp_path / "r", progress=False, cluster=cluster.scheduler_address))
    _same_run(run, serial)
    assert run.meta["failed_sources"] == []


def test_only_a_small_summary_of_each_rank_comes_back(cluster, shared_dir, tmp_path):
    sources, _ = discover([shared_dir / DLRM])
    task = importer.functools.partial(write_part, out_dir=str(tmp_path))
    got = read_sources(sources, task, cluster=cluster.scheduler_address)
    assert len(got.traces) == len(sources) and all(isinstance(p, PartSummary) for p in got.traces)
    largest = max(len(pickle.dumps(p)) for p in got.traces)
    smallest_file = min(s.size_bytes for s in sources)
    assert largest < 64 * 1024 and largest < smallest_file / 4, (largest, smallest_file)


def test_a_cluster_reads_a_local_file_url(cluster, serial, shared_dir, tmp_path):
    url = (shared_dir / DLRM).resolve().as_uri()
    run = Run.open(import_traces([url], tmp_path / "r", progress=False, cluster=cluster.scheduler_address))
    _same_run(run, serial)
    assert all(s["path"].startswith("file://") for s in run.meta["sources"])


def test_a_cluster_reads_fsspec_memory_urls(serial, shared_dir, tmp_path):
    """The memory file system lives in one process: a cluster of threads shares it."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for f in sorted((shared_dir / DLRM).iterdir()):
        fs.pipe(f"/accelscope-test-job/{f.name}", f.read_bytes())
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as threads:
            run = Run.open(import_traces(["memory://accelscope-test-job"], tmp_path / "r", progress=False, cluster=threads.scheduler_address))
    finally:
        fs.rm("/accelscope-test-job", recursive=True)
    _same_run(run, serial)


def killing_read(source, on_bytes=None, *, out_dir):
    """The task, except that it kills its own worker on rank 3's file (the OOM killer)."""
    if source.path.name.startswith("worker3_"):
        os.kill(os.getpid(), signal.SIGKILL)
    return write_part(source, on_bytes, out_dir=out_dir)


def test_a_killed_worker_and_a_corrupt_file_cost_only_their_own_ranks(cluster, shared_dir, tmp_path, monkeypatch):
    import shutil

    job = shutil.copytree(shared_dir / DLRM, tmp_path / "job")
    victim = sorted(job.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    monkeypatch.setattr(importer, "write_part", killing_read)
    run = Run.open(import_traces([job], tmp_path / "r", progress=False, cluster=cluster.scheduler_address))
    failed = {f["path"]: f["error"] for f in run.meta["failed_sources"]}
    killer = next(str(f) for f in job.iterdir() if f.name.startswith("worker3_"))
    assert set(failed) == {killer, str(victim)} and failed[killer] == f"{killer}: {WORKER_DIED}"
    assert len(run.meta["ranks"]) == 6


def sleeping_write(source, on_bytes=None, *, out_dir):
    time.sleep(120)


def test_a_lost_scheduler_is_one_line_and_leaves_no_run(shared_dir, tmp_path, monkeypatch):
    script = ("import time\nfrom distributed import LocalCluster\n"
              "c = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol='tcp://', dashboard_address=':0')\n"
              "print(c.scheduler_address, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), address
        monkeypatch.setattr(importer, "write_part", sleeping_write)
        threading.Timer(3.0, proc.kill).start()
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="lost the connection to the Dask scheduler") as err:
            import_traces([shared_dir / DLRM], tmp_path / "r", progress=False, cluster=address)
        assert time.monotonic() - t0 < 60 and "\n" not in str(err.value)
    finally:
        proc.kill()
        proc.wait()
    assert list(tmp_path.iterdir()) == [], "no run, and no half-written one"


def test_no_scheduler_at_the_address_is_one_line(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("accelscope.traces.cluster.CONNECT_TIMEOUT_S", 2)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        import_traces([shared_dir / DLRM], tmp_path / "r", progress=False, cluster="tcp://127.0.0.1:9")
    assert list(tmp_path.iterdir()) == []


def test_without_distributed_the_cluster_option_names_the_extra(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(AccelscopeError, match=r"pip install 'accelscope\[cluster\]'"):
        import_traces([shared_dir / DLRM], tmp_path / "r", progress=False, cluster="tcp://127.0.0.1:8786")


def test_the_cli_imports_on_a_cluster(cluster, shared_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "accelscope", "import", str(shared_dir / DLRM), "-o", str(tmp_path / "r"),
                          "--cluster", cluster.scheduler_address], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "rank(s) 0, 1, 2, 3, 4, 5, 6, 7" in out.stdout

"""The per-rank tasks of an analysis (analysis/rank_tasks.py) on a Dask LocalCluster started
here: the same report as in this process, each worker reading only its rank of the run."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("distributed", reason="the [cluster] extra (dask distributed) is not installed")

from accelscope.analysis import analyze  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

DLRM = "traces/more/param-dlrm-8rank"


@pytest.fixture(scope="module")
def cluster(local_cluster):
    return local_cluster


@pytest.fixture(scope="module")
def job(shared_dir, tmp_path_factory):
    return import_traces([shared_dir / DLRM], tmp_path_factory.mktemp("an") / "job", progress=False, workers=1)


def test_a_cluster_analyses_a_job_as_this_process_does(cluster, job):
    here = analyze(Run.open(job)).to_dict()
    run = Run.open(job)
    there = analyze(run, cluster=cluster.scheduler_address).to_dict()
    assert there == here
    assert not run.slices_loaded, "this process read no rank's events"


def test_the_cli_analyzes_on_a_cluster(cluster, job):
    out = subprocess.run([sys.executable, "-m", "accelscope", "analyze", str(job), "--cluster", cluster.scheduler_address, "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"ranks"' in out.stdout

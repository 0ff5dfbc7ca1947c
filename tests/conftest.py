"""Shared fixtures: real runs recorded from a real CPU training loop, and paths to the
real traces in ../shared (tests that need them skip with the reason when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACCELSCOPE_SHARED", REPO.parent / "shared"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
# TensorFlow turns its oneDNN CPU path on by default only on CPUs with AVX-512; its allocator
# then records each allocation in the profile (MemoryAllocation), the plain CPU allocator
# records none. On for every CPU, so that the TF tests see the same profiles everywhere.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


# Directories in ../shared that are one multi-rank job each; every other trace file is a run of its own.
SHARED_JOBS = ("traces/more/param-dlrm-8rank", "traces/HolisticTraceAnalysis/tests/data/trace_filter")


def shared_sources(under: str = "", endings: tuple[str, ...] = (".json", ".json.gz", ".xplane.pb"), exclude: tuple[str, ...] = ()) -> list[str]:
    """Every trace source under ``SHARED/under``, relative to SHARED: each job directory of
    ``SHARED_JOBS``, then every other file with one of ``endings``, less ``exclude``. Empty
    when ../shared is absent (tests then skip)."""
    root = SHARED / under
    if not root.is_dir():
        return []
    out = [j for j in SHARED_JOBS if (SHARED / j).is_dir() and (not under or j.startswith(under))]
    for dirpath, _, files in os.walk(root):
        rel = os.path.relpath(dirpath, SHARED)
        if any(rel == j or rel.startswith(j + os.sep) for j in SHARED_JOBS):
            continue
        out += [os.path.join(rel, f) for f in files if f.endswith(endings)]
    return sorted(s for s in out if s not in exclude)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real trace data not found at {SHARED} (set ACCELSCOPE_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory) -> Path:
    """A full-mode run of the demo CNN: 14 input-bound steps (20 ms loader delay)."""
    pytest.importorskip("torch", reason="the torch extra is needed to record a run")
    from accelscope.demo import run_demo

    out = tmp_path_factory.mktemp("runs")
    return run_demo(out, steps=14, loader_delay_ms=20, workers=0, name="recorded", progress=False)


@pytest.fixture(scope="module")
def local_cluster():
    """A Dask LocalCluster of 2 single-threaded worker processes, shared by one module's
    cluster tests and closed after them: idle, its scheduler and workers still take ~7 % of
    a core, which the timing-truth tests of later modules should not share."""
    pytest.importorskip("distributed", reason="the [cluster] extra (dask distributed) is not installed")
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture
def fresh_run(recorded_run, tmp_path) -> Path:
    """A copy of ``recorded_run`` without what earlier tests cached inside it (the report, the
    dashboard's prepared tables): for tests that watch those being built."""
    import shutil

    return Path(shutil.copytree(recorded_run, tmp_path / recorded_run.name, ignore=shutil.ignore_patterns(".accelscope-cache")))


@pytest.fixture(scope="session")
def ddp_job(tmp_path_factory):
    """``ddp_job(nproc, *args)``: the directory of a real torchrun DDP job (gloo, CPU) run
    with ``tests/jobs/ddp_job.py ARGS``, recorded once per session and shared by every test
    that asks for the same job (its run is ``DIR/ddp``, its truths ``DIR/truth-rank-N.json``)."""
    pytest.importorskip("torch", reason="the torch extra is needed for torchrun jobs")
    from tests.jobs.launch import torchrun

    done: dict[tuple, Path] = {}

    def get(nproc: int, *args: str) -> Path:
        key = (nproc, *args)
        if key not in done:
            tmp = tmp_path_factory.mktemp(f"ddp{nproc}")
            torchrun(tmp, nproc, *args)
            done[key] = tmp
        return done[key]

    return get


@pytest.fixture
def fake_cuda(monkeypatch):
    """A scripted CUDA caching allocator behind the ``torch.cuda`` functions accelscope
    calls (tests/cuda_fake.py), on the real (CPU) torch: the one fake of the CUDA boundary."""
    torch = pytest.importorskip("torch", reason="the torch extra is needed to fake its CUDA boundary")
    from tests.cuda_fake import FakeCudaAllocator

    fake = FakeCudaAllocator()
    fake.install(monkeypatch, torch.cuda)
    return fake

"""Rank-aware recording: every rank of a job into one run, on rank 0's clock (real torchrun jobs)."""

from __future__ import annotations

import json

import pytest

from accelscope import distributed as D
from accelscope.traces.run import Run
from tests.jobs.launch import torchrun, truths

pytest.importorskip("torch", reason="the torch extra is needed for torchrun jobs")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
                 "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_rank_and_world_size_come_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert D.detect() == D.RankInfo(3, 8, 1, "RANK")


def test_rank_comes_from_slurm_when_nothing_else_says(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    info = D.detect()
    assert (info.rank, info.world_size, info.source) == (2, 4, "SLURM_PROCID")


def test_rank_comes_from_tf_config_chief_first(monkeypatch):
    cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    info = D.detect()
    assert (info.rank, info.world_size, info.source) == (2, 3, "TF_CONFIG")


def test_a_single_process_is_rank_0_of_1():
    assert not D.detect().distributed


def test_the_job_key_differs_between_jobs_and_not_between_ranks(monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("RANK", "0")
    a = D.job_key()
    monkeypatch.setenv("RANK", "1")
    assert D.job_key() == a
    monkeypatch.setenv("MASTER_PORT", "29501")
    assert D.job_key() != a


def test_tf_workers_share_a_job_key_though_each_tf_config_names_its_own_task(monkeypatch):
    def key(cluster, index):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        return D.job_key()

    job = {"worker": ["localhost:1", "localhost:2"]}
    assert key(job, 0) == key(job, 1)
    assert key({"worker": ["localhost:3", "localhost:4"]}, 0) != key(job, 0)


@pytest.fixture(scope="module")
def two_rank_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    torchrun(tmp, 2, "--steps", "6")
    return tmp


def test_every_rank_of_a_job_records_into_one_run(two_rank_job):
    run = Run.open(two_rank_job / "ddp")
    assert run.meta["ranks"] == [0, 1] and run.meta["complete"]
    assert sorted(run.events["rank"].unique().to_list()) == [0, 1]
    assert {t["run_dir"] for t in truths(two_rank_job).values()} == {str(two_rank_job / "ddp")}


def test_clock_offsets_are_measured_and_recorded(two_rank_job):
    part = json.loads((two_rank_job / "ddp" / "rank-1" / "meta.json").read_text())
    samples = part["clock_sync"]["samples"]
    assert len(samples) == 2  # at start and at end
    # One host, one clock: what is measured is the anchoring noise, well under a millisecond,
    # and the error is half the best round trip.
    assert all(abs(s["offset_ns"]) < 1_000_000 and 0 < s["error_ns"] < 1_000_000 for s in samples)
    assert part["clock_sync"]["error_ns"] == max(s["error_ns"] for s in samples)


def test_a_second_job_records_into_the_next_run_with_all_its_ranks(tmp_path):
    torchrun(tmp_path, 2, "--steps", "4")
    torchrun(tmp_path, 2, "--steps", "4")
    second = Run.open(tmp_path / "ddp.1")
    assert second.meta["ranks"] == [0, 1]
    assert Run.open(tmp_path / "ddp").meta["ranks"] == [0, 1]


def test_accelscope_run_under_torchrun_records_one_run(tmp_path):
    torchrun(tmp_path, 2, "--steps", "8", run=True)
    run = Run.open(tmp_path / "ddp_job")
    assert run.meta["ranks"] == [0, 1]
    # The script initialised its process group after profiling started: the clocks are
    # measured at the first step that finds it.
    part = json.loads((tmp_path / "ddp_job" / "rank-1" / "meta.json").read_text())
    assert part["clock_sync"]["samples"]


def test_a_killed_rank_leaves_the_others_intact_and_is_marked_incomplete(tmp_path):
    proc = torchrun(tmp_path, 2, "--steps", "30", "--die-rank", "1", "--die-at-step", "5", check=False, timeout_s=240)
    assert proc.returncode != 0
    run = Run.open(tmp_path / "ddp")
    assert 1 in run.meta["incomplete_ranks"]
    assert sorted(run.events["rank"].unique().to_list()) == [0, 1]  # what rank 1 flushed before it died

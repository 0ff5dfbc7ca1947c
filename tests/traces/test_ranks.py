"""Multi-rank run directories: claiming one per job, and reading them as one run on one clock."""

from __future__ import annotations

import json
import threading

import polars as pl
import pytest

from accelscope.errors import RunFormatError
from accelscope.traces import ranks
from accelscope.traces import schema as S
from accelscope.traces.run import Run, write_run


def _events(rank: int, starts: list[int]) -> pl.DataFrame:
    n = len(starts)
    return pl.DataFrame({
        "start_ns": starts, "dur_ns": [10] * n, "kind": [S.STEP] * n, "name": [S.step_name(i) for i in range(n)],
        "device": ["cpu"] * n, "stream": [None] * n, "pid": [100 + rank] * n, "tid": [1] * n, "rank": [rank] * n,
        "correlation_id": [None] * n, "args": [None] * n,
    }, schema_overrides={"stream": pl.Int64, "correlation_id": pl.Int64, "args": pl.String, "rank": pl.Int32})


def _job(root, world: int, samples: dict[int, list[dict]], complete: dict[int, bool] | None = None):
    run = ranks.claim(root, "job-a", 0, world)
    for rank, s in samples.items():
        meta = {"rank": rank, "start_ns": 1000, "end_ns": 5000, "clock_sync": {"samples": s}, "threads": [{"pid": 100 + rank, "tid": 1, "name": "main"}]}
        part = write_run(run / ranks.rank_dir_name(rank), _events(rank, [1000, 2000, 3000]), None, meta)
        if complete is not None and not complete.get(rank, True):
            doc = json.loads((part / "meta.json").read_text())
            doc["complete"] = False
            (part / "meta.json").write_text(json.dumps(doc))
    return run


def test_ranks_of_one_job_claim_one_directory(tmp_path):
    got: dict[int, object] = {}

    def join(rank: int) -> None:
        got[rank] = ranks.claim(tmp_path / "ddp", "job-a", rank, 4)

    threads = [threading.Thread(target=join, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(got.values()) == {tmp_path / "ddp"}


def test_a_second_job_gets_the_next_name(tmp_path):
    first = ranks.claim(tmp_path / "ddp", "job-a", 0, 2)
    (first / ranks.rank_dir_name(0)).mkdir()
    assert ranks.claim(tmp_path / "ddp", "job-b", 1, 2) == tmp_path / "ddp.1"


def test_a_rerun_with_the_same_key_does_not_join_the_old_run(tmp_path):
    """A fixed MASTER_PORT gives two jobs the same key: a rank whose part exists moves on."""
    old = ranks.claim(tmp_path / "ddp", "job-a", 0, 2)
    for r in (0, 1):
        (old / ranks.rank_dir_name(r)).mkdir()
    assert ranks.claim(tmp_path / "ddp", "job-a", 1, 2) == tmp_path / "ddp.1"


def test_a_single_process_run_is_never_joined(tmp_path):
    write_run(tmp_path / "ddp", _events(0, [1]), None, {})
    assert ranks.claim(tmp_path / "ddp", "job-a", 0, 2) == tmp_path / "ddp.1"


def test_parts_open_as_one_run_on_the_reference_clock(tmp_path):
    run = Run.open(_job(tmp_path / "ddp", 2, {0: [], 1: [{"at_ns": 1000, "offset_ns": 500}]}))
    ev = run.events.sort("rank", "start_ns")
    assert ev.filter(pl.col("rank") == 0)["start_ns"].to_list() == [1000, 2000, 3000]
    assert ev.filter(pl.col("rank") == 1)["start_ns"].to_list() == [1500, 2500, 3500]
    assert run.meta["ranks"] == [0, 1] and run.meta["complete"]
    assert {(t["rank"], t["pid"]) for t in run.meta["threads"]} == {(0, 100), (1, 101)}


def test_drift_between_the_start_and_end_offsets_is_interpolated(tmp_path):
    samples = {0: [], 1: [{"at_ns": 1000, "offset_ns": 0}, {"at_ns": 3000, "offset_ns": 200}]}
    run = Run.open(_job(tmp_path / "ddp", 2, samples))
    assert run.events.filter(pl.col("rank") == 1).sort("start_ns")["start_ns"].to_list() == [1000, 2100, 3200]


def test_a_dead_rank_is_marked_incomplete_and_a_missing_one_missing(tmp_path):
    run = Run.open(_job(tmp_path / "ddp", 3, {0: [], 1: []}, complete={1: False}))
    assert not run.meta["complete"]
    assert run.meta["incomplete_ranks"] == [1] and run.meta["missing_ranks"] == [2]
    assert run.events["rank"].unique().sort().to_list() == [0, 1]


def test_the_first_rank_to_run_out_of_memory_is_the_runs_on_the_reference_clock(tmp_path):
    """Rank 0 did not run out of memory; ranks 1 and 2 did, rank 2 first on the reference clock."""
    run = _job(tmp_path / "ddp", 3, {0: [], 1: [{"at_ns": 1000, "offset_ns": 500}], 2: [{"at_ns": 1000, "offset_ns": -500}]})
    for rank, at in ((1, 3000), (2, 3200)):
        path = run / ranks.rank_dir_name(rank) / "meta.json"
        doc = json.loads(path.read_text())
        doc["oom"] = {"step": 2, "time_ns": at, "rank": rank, "device": f"cuda:{rank}"}
        path.write_text(json.dumps(doc))
    oom = Run.open(run).meta["oom"]
    assert (oom["rank"], oom["device"], oom["time_ns"]) == (2, "cuda:2", 2700), "3200 - 500 on rank 0's clock, before rank 1's 3500"


def test_a_job_with_no_rank_recorded_yet_says_so(tmp_path):
    ranks.claim(tmp_path / "ddp", "job-a", 0, 2)
    with pytest.raises(RunFormatError, match="no rank recorded yet"):
        Run.open(tmp_path / "ddp")


def test_back_to_back_slices_stay_back_to_back_under_drift(tmp_path):
    """Both ends of a slice move with the clock, so step N still ends where step N+1 starts."""
    samples = {0: [], 1: [{"at_ns": 1000, "offset_ns": 300}, {"at_ns": 3000, "offset_ns": 100}]}
    run = ranks.claim(tmp_path / "ddp", "job-a", 0, 2)
    for rank, s in samples.items():
        ev = _events(rank, [1000, 2000, 3000]).with_columns(dur_ns=pl.lit(1000, dtype=pl.Int64))
        write_run(run / ranks.rank_dir_name(rank), ev, None, {"rank": rank, "clock_sync": {"samples": s}})
    ev = Run.open(run).events.filter(pl.col("rank") == 1).sort("start_ns")
    ends = (ev["start_ns"] + ev["dur_ns"]).to_list()
    assert ev["start_ns"].to_list()[1:] == ends[:-1]
    assert ev["start_ns"].to_list() == [1300, 2200, 3100]

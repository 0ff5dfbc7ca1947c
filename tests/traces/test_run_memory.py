"""The run's memory table (traces/run.py, traces/assemble.py): written per rank part by an
import, read back on the run's clock, empty for runs written before it existed, and part
of what a run's fingerprint and report cache key see."""

from __future__ import annotations

import gzip
import json
import shutil

import polars as pl
import pytest

from accelscope.traces import schema as S
from accelscope.traces.run import Run, run_fingerprint, write_run
from tests.builders import numbered_steps

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"


def _raw_memory_ts_us(path) -> list[int]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [e["ts"] for e in json.load(fh)["traceEvents"] if e.get("ph") == "i" and e.get("name") == "[memory]"]


@pytest.fixture(scope="module")
def two_ranks(shared_dir, tmp_path_factory):
    """nw0 and nw4 imported as ranks 0 and 1 of one run: recorded on different days, so the
    import shifts rank 1 onto rank 0's clock."""
    from accelscope.traces.importer import import_traces

    return Run.open(import_traces([shared_dir / NW0, shared_dir / NW4], tmp_path_factory.mktemp("mem") / "run", progress=False, workers=1))


def test_an_import_writes_each_ranks_memory_events(two_ranks, shared_dir):
    counts = dict(two_ranks.memory.group_by("rank").len().iter_rows())
    assert counts == {0: len(_raw_memory_ts_us(shared_dir / NW0)), 1: len(_raw_memory_ts_us(shared_dir / NW4))}
    assert all((two_ranks.path / f"rank-{r}" / "memory").is_dir() for r in (0, 1))


def test_holds_says_whether_any_rank_wrote_a_memory_part(two_ranks, tmp_path):
    assert two_ranks.holds("memory")
    bare = Run.open(write_run(tmp_path / "bare", numbered_steps([(0, 100, "step")]), None, {}))
    assert bare.holds("events") and not bare.holds("memory")


def test_memory_times_move_with_their_ranks_clock(two_ranks, shared_dir):
    offset = int(two_ranks.meta["clock_alignment"]["offsets_ns"]["1"])
    assert offset != 0  # the two traces are a day apart: rank 1 is shifted
    got = two_ranks.memory.filter(pl.col("rank") == 1)["time_ns"].to_list()
    assert got == [ts * 1000 + offset for ts in _raw_memory_ts_us(shared_dir / NW4)]
    ev = two_ranks.slices.filter(pl.col("rank") == 1)
    assert ev["start_ns"].min() <= min(got) and max(got) <= (ev["start_ns"] + ev["dur_ns"]).max()


def test_a_run_without_a_memory_directory_opens_with_an_empty_memory_table(tmp_path):
    path = write_run(tmp_path / "old", numbered_steps([(0, 100, "step"), (100, 100, "step")]), None, {})
    shutil.rmtree(path / "memory")  # as written before the table existed
    run = Run.open(path)
    assert run.memory.height == 0 and tuple(run.memory.columns) == S.MEMORY_COLUMNS
    assert run.slices.height == 2


def test_memory_rows_round_trip_through_a_run(tmp_path):
    rows = pl.DataFrame({"time_ns": [10, 20], "device": ["cuda:0", "cuda:0"], "bytes": [512, -512], "total_allocated_bytes": [512, 0],
                         "total_reserved_bytes": [2048, 2048], "addr": [7, 7], "pid": [1, 1], "tid": [1, 1], "rank": [0, 0]},
                        schema_overrides={"rank": pl.Int32})
    run = Run.open(write_run(tmp_path / "r", numbered_steps([(0, 100, "step")]), None, {}, memory=rows))
    assert run.memory.to_dicts() == rows.with_columns(stack=pl.lit(None, pl.String)).to_dicts()  # a column it does not fill is null


def test_a_new_memory_part_changes_the_runs_fingerprint(tmp_path):
    path = write_run(tmp_path / "r", numbered_steps([(0, 100, "step")]), None, {})
    before = run_fingerprint(path)
    (path / "memory" / "part-000001.parquet").write_bytes(b"")
    assert run_fingerprint(path) != before


def _memory_part(run_dir, frame: pl.DataFrame) -> None:
    (run_dir / "memory").mkdir(exist_ok=True)
    frame.write_parquet(run_dir / "memory" / "part-000001.parquet")


def _older_memory_rows() -> pl.DataFrame:
    """Memory rows as a writer that predates the ``addr`` column would have written them."""
    return pl.DataFrame({"time_ns": [1, 2], "device": ["cpu", "cpu"], "bytes": [64, -64], "total_allocated_bytes": [64, 0],
                         "total_reserved_bytes": [None, None], "pid": [1, 1], "tid": [2, 2], "rank": [0, 0]},
                        schema_overrides={"rank": pl.Int32, "total_reserved_bytes": pl.Int64})


def test_a_part_written_before_a_nullable_column_existed_reads_it_as_null(tmp_path):
    run_dir = write_run(tmp_path / "r", numbered_steps([(0, 10, "step"), (10, 10, "step")]), None, {})
    _memory_part(run_dir, _older_memory_rows())
    run = Run.open(run_dir)
    assert run.memory["bytes"].to_list() == [64, -64] and run.memory["addr"].null_count() == 2
    assert run.read_warnings == []


def test_a_part_missing_a_required_column_is_skipped_with_a_warning(tmp_path):
    run_dir = write_run(tmp_path / "r", numbered_steps([(0, 10, "step"), (10, 10, "step")]), None, {})
    _memory_part(run_dir, _older_memory_rows().drop("bytes"))
    run = Run.open(run_dir)
    assert run.memory.height == 0
    assert len(run.read_warnings) == 1 and "skipped unreadable part" in run.read_warnings[0]

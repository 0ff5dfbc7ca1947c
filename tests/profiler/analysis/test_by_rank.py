"""Analysing one rank at a time (``analyze(run, by_rank=True)``, what runs too big to hold
use): the same report as analysing the whole events table at once, on real jobs."""

from __future__ import annotations

import pytest

from accelscope.analysis import analyze
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

DLRM = "traces/more/param-dlrm-8rank"
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"


def _both(run_dir):
    whole = analyze(Run.open(run_dir), by_rank=False).to_dict()
    lazy_run = Run.open(run_dir)
    by_rank = analyze(lazy_run, by_rank=True).to_dict()
    return whole, by_rank, lazy_run


def test_a_multi_rank_job_gives_the_same_report_rank_by_rank(shared_dir, tmp_path):
    whole, by_rank, run = _both(import_traces([shared_dir / DLRM], tmp_path / "r", progress=False, workers=1))
    assert by_rank == whole
    assert whole["stragglers"] or whole["collectives"], "the job's collectives were matched across ranks"
    assert not run.slices_loaded, "no rank's events but its own were ever read at once"


def test_a_single_rank_trace_gives_the_same_report_rank_by_rank(shared_dir, tmp_path):
    whole, by_rank, _ = _both(import_traces([shared_dir / NW0], tmp_path / "r", progress=False))
    assert by_rank == whole


@pytest.mark.parametrize("threshold, expect_loaded", [(0, False), (10**12, True)])
def test_the_default_reads_rank_by_rank_only_beyond_the_threshold(shared_dir, tmp_path, monkeypatch, threshold, expect_loaded):
    from accelscope.analysis import analyzer

    run_dir = import_traces([shared_dir / DLRM], tmp_path / "r", progress=False, workers=1)
    monkeypatch.setattr(analyzer, "BY_RANK_MIN_EVENTS", threshold)
    run = Run.open(run_dir)
    analyze(run)
    assert run.slices_loaded is expect_loaded


def test_a_single_part_run_of_several_ranks_gives_the_same_report_rank_by_rank(shared_dir, tmp_path):
    """Runs imported before rank parts hold every rank in one table: each rank's rows are
    pushed into the scan instead."""
    from accelscope.traces.run import write_run

    parts = Run.open(import_traces([shared_dir / DLRM], tmp_path / "parts", progress=False, workers=1))
    meta = {k: v for k, v in parts.meta.items() if k not in ("rank_parts", "job")}
    one = write_run(tmp_path / "one", parts.events.to_arrow(), parts.counters.to_arrow(), meta)
    single = Run.open(one)
    assert not single.parts and single.rank_ids() == list(range(8))
    whole, by_rank, run = _both(one)
    assert by_rank == whole
    assert not run.slices_loaded

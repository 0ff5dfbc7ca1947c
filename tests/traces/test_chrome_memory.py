"""The memory table through the Chrome export: written as Kineto's ``[memory]`` instants and
read back by a re-import unchanged, one rank or several, with the same peaks."""

from __future__ import annotations

import json

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.traces.chrome import export_chrome_trace
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run
from accelscope.traces.schema import MEMORY_COLUMNS

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"
QWEN = "traces/more/tracelens"  # the H100 Qwen trace carries Total Allocated / Reserved and Addr


def _sorted(mem: pl.DataFrame) -> pl.DataFrame:
    return mem.select(MEMORY_COLUMNS).sort(list(MEMORY_COLUMNS))


def _round_trip(run: Run, tmp_path) -> Run:
    out = export_chrome_trace(run, tmp_path / "export.json")
    return Run.open(import_traces([out], tmp_path / "back", progress=False))


@pytest.fixture(scope="module")
def qwen(shared_dir, tmp_path_factory):
    path = next((shared_dir / QWEN).glob("h100__Qwen*.json.gz"), None)
    if path is None:
        pytest.skip("the H100 Qwen trace is not in ../shared")
    return Run.open(import_traces([path], tmp_path_factory.mktemp("qwen") / "run", progress=False))


def test_the_export_writes_each_allocator_event_as_a_memory_instant(qwen, tmp_path):
    doc = json.loads(export_chrome_trace(qwen, tmp_path / "t.json").read_text())
    instants = [e for e in doc["traceEvents"] if e.get("name") == "[memory]"]
    assert len(instants) == qwen.memory.height > 0
    first = instants[0]["args"]
    assert first["Device Type"] == 1 and {"Bytes", "Total Allocated", "Total Reserved", "Addr"} <= set(first)


def test_a_reimported_export_has_the_same_memory_table_and_peaks(qwen, tmp_path):
    back = _round_trip(qwen, tmp_path)
    assert _sorted(back.memory).equals(_sorted(qwen.memory))
    assert analyze(back).memory.equals(analyze(qwen).memory)


def test_a_two_rank_export_keeps_each_ranks_memory(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / NW0, shared_dir / NW4], tmp_path / "two", progress=False, workers=1))
    back = _round_trip(run, tmp_path)
    assert _sorted(back.memory).equals(_sorted(run.memory))
    assert set(back.memory["rank"]) == {0, 1}


def test_a_snapshot_runs_stacks_survive_the_export(tmp_path):
    import pickle

    from tests.traces.test_torch_snapshot import _snapshot

    path = tmp_path / "snap.pickle"
    path.write_bytes(pickle.dumps(_snapshot()))
    run = Run.open(import_traces([path], tmp_path / "run", progress=False))
    back = _round_trip(run, tmp_path)
    assert run.memory["stack"].null_count() < run.memory.height
    kept = [c for c in MEMORY_COLUMNS if c not in ("pid", "tid")]  # a snapshot names no thread; the export puts its rows on the host's
    assert back.memory.select(kept).sort(kept).equals(run.memory.select(kept).sort(kept))

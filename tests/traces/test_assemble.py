"""Writing a rank part (traces/assemble.py): a large rank's events go into two Parquet
parts written at once, read back as the one table a single part gives."""

from accelscope.traces import assemble
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"


def test_a_large_rank_is_written_as_two_parts_read_back_as_one(shared_dir, tmp_path, monkeypatch):
    one = Run.open(import_traces([shared_dir / NW0], tmp_path / "one", progress=False))
    assert sorted(p.name for p in (tmp_path / "one" / "events").iterdir()) == ["part-000001.parquet"]
    monkeypatch.setattr(assemble, "SPLIT_ROWS", 10_000)  # nw0 has 44,665 rows
    two = Run.open(import_traces([shared_dir / NW0], tmp_path / "two", progress=False))
    assert sorted(p.name for p in (tmp_path / "two" / "events").iterdir()) == ["part-000001.parquet", "part-000002.parquet"]
    assert two.events.equals(one.events)

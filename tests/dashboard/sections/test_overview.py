"""The Overview section of a run without a timeline (an imported PyTorch memory snapshot)."""

from __future__ import annotations

import pickle

from accelscope.dashboard.app import create_app
from accelscope.dashboard.sections import overview
from accelscope.traces.importer import import_traces
from tests.traces.test_torch_snapshot import _snapshot


def test_a_snapshot_run_shows_no_timing_and_points_to_memory(tmp_path):
    path = tmp_path / "snap.pickle"
    path.write_bytes(pickle.dumps(_snapshot()))
    board = create_app([import_traces([path], tmp_path / "run", progress=False)])._accelscope
    out = dict(zip((f"{cid}.{prop}" for cid, prop in overview.OUTPUTS), overview.render(board, 0)))
    assert [v for k, v in out.items() if k.endswith(".children") and isinstance(v, str) and v.endswith("%")] == [], "no idle or input share"
    assert any(getattr(c, "id", None) == "overview-memory-only" for c in _flat(out.values()))


def _flat(values):
    for v in values:
        if isinstance(v, list):
            yield from _flat(v)
        else:
            yield v

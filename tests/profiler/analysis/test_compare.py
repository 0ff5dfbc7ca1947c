import json
import subprocess
import sys

import pytest

from accelscope.analysis import analyze
from accelscope.analysis.compare import compare
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"


@pytest.fixture(scope="module")
def pair(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    return [import_traces([shared_dir / p], out / name, progress=False) for name, p in (("nw0", NW0), ("nw4", NW4))]


def test_more_workers_remove_the_input_wait(pair):
    a, b = (analyze(Run.open(p)) for p in pair)
    cmp = compare(a, b)
    wait_a, wait_b = cmp.breakdown_ms["input_wait"]
    assert wait_a > 50 and wait_b < 2, "nw0 waits ~59 ms per step for input, nw4 ~1 ms"
    assert cmp.summary["mean_step_ms"][1] < cmp.summary["mean_step_ms"][0]
    loader = cmp.ops.filter(cmp.ops["name"].str.starts_with("enumerate(DataLoader)"))
    assert loader.height and loader["delta_ms"][0] < -50
    # Per-step breakdowns of each run still add up to its mean step.
    for side in (0, 1):
        total = sum(v[side] for v in cmp.breakdown_ms.values())
        assert total == pytest.approx(cmp.summary["mean_step_ms"][side], rel=1e-6)


def test_cli_diff_prints_and_serialises(pair):
    proc = subprocess.run([sys.executable, "-m", "accelscope", "diff", str(pair[0]), str(pair[1]), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == {"a": "high", "b": "none"}
    assert doc["idle_us_per_step"]["input_wait"]["delta"] < -50_000
    text = subprocess.run([sys.executable, "-m", "accelscope", "diff", str(pair[0]), str(pair[1])], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "mean step" in text.stdout and "waiting for input" in text.stdout


def test_an_op_outside_one_runs_top_table_is_not_shown_as_absent(pair):
    a, b = (analyze(Run.open(p)) for p in pair)
    cmp = compare(a, b)
    for side, report in ((0, a), (1, b)):
        steps = report.traced_steady.height
        for row in cmp.ops.iter_rows(named=True):
            value = (row["a_ms"], row["b_ms"])[side]
            present = report.ops_by_name.filter(report.ops_by_name["name"] == row["name"])
            expected = present["total_ns"][0] / steps / 1e6 if present.height else 0.0
            assert value == pytest.approx(expected), (row["name"], side)
    # Some compared op is outside a run's top-20 table yet present in the run.
    top_a, top_b = set(a.top_ops["name"]), set(b.top_ops["name"])
    assert any((r["name"] not in top_a and r["a_ms"] > 0) or (r["name"] not in top_b and r["b_ms"] > 0) for r in cmp.ops.iter_rows(named=True))

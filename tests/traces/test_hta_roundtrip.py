"""Round trip through HTA: a real Kineto trace, imported and exported again as Chrome trace
JSON (with accelscope's idle-gap track), must give Holistic Trace Analysis the same answers
as the original file.

HTA (``holistictraceanalysis``, a dev extra) is the reference here, not a dependency:
these tests skip when it is not installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:::hta")  # pandas deprecations inside HTA 0.5

hta_trace = pytest.importorskip("hta.common.trace", reason="HolisticTraceAnalysis is not installed (pip install holistictraceanalysis): HTA round trip not checked")

from accelscope.analysis import analyze  # noqa: E402
from accelscope.analysis.causes import gap_slices  # noqa: E402
from accelscope.traces.chrome import export_chrome_trace  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from accelscope.traces.kineto import GAP_CATEGORY  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NS = "traces/HolisticTraceAnalysis/tests/data/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz"
SMALL = "traces/kineto/_history/00a807b7/docs/traces/before_fix_trace.json"
PCT = ("idle_time_pctg", "compute_time_pctg", "non_compute_time_pctg")
TIMES = ("idle_time(us)", "compute_time(us)", "non_compute_time(us)", "kernel_time(us)")


def hta_analysis(trace_dir: Path):
    """What ``TraceAnalysis(trace_dir=...)`` does, without HTA's process pool."""
    from hta.trace_analysis import TraceAnalysis

    logging.getLogger("hta").setLevel(logging.ERROR)
    t = hta_trace.Trace(trace_dir=str(trace_dir))
    t.load_traces(include_last_profiler_step=False, use_multiprocessing=False)
    analysis = TraceAnalysis.__new__(TraceAnalysis)
    analysis.t = t
    return analysis


@pytest.fixture(scope="module")
def breakdowns(shared_dir, tmp_path_factory):
    """trace -> {"original"|"exported": (HTA's ranks, HTA's temporal breakdown)}, computed once."""
    cache: dict[str, dict] = {}

    def get(trace: str) -> dict:
        if trace not in cache:
            src = shared_dir / trace
            tmp = tmp_path_factory.mktemp("hta_roundtrip")
            original = tmp / "original"
            original.mkdir()
            (original / src.name).symlink_to(src)
            run = Run.open(import_traces([src], tmp / "run", progress=False))
            # With the idle-gap track, as `accelscope export` writes it: HTA must not see it as GPU work.
            exported = export_chrome_trace(run, tmp / "exported" / "rank-0.json", gaps=gap_slices(analyze(run).gaps))
            assert f'"cat":"{GAP_CATEGORY}"' in exported.read_text(), "the export carries the gap track"
            cache[trace] = {}
            for label, trace_dir in (("original", original), ("exported", exported.parent)):
                analysis = hta_analysis(trace_dir)
                cache[trace][label] = (sorted(analysis.t.traces), analysis.get_temporal_breakdown(visualize=False))
        return cache[trace]

    return get


def test_hta_reads_the_original_as_documented(breakdowns):
    ranks, df = breakdowns(NW0)["original"]
    assert ranks == [0]
    assert df["idle_time_pctg"].iloc[0] == pytest.approx(39.43, abs=0.01), "HTA's idle share of nw0 differs from shared/README.md: another HTA version?"


@pytest.mark.parametrize("trace", [pytest.param(NW0, id="nw0"), pytest.param(NS, id="ns_resolution")])
def test_temporal_breakdown_survives_import_and_export(breakdowns, trace):
    both = breakdowns(trace)
    ranks, ours = both["exported"]
    _, theirs = both["original"]
    assert ranks == [0]
    for col in PCT:
        assert ours[col].iloc[0] == pytest.approx(theirs[col].iloc[0], abs=0.1), f"{col}: export {ours[col].iloc[0]} vs original {theirs[col].iloc[0]}"
    for col in TIMES:
        assert ours[col].iloc[0] == pytest.approx(theirs[col].iloc[0], rel=1e-3), f"{col}: export {ours[col].iloc[0]} vs original {theirs[col].iloc[0]}"


def test_hta_finds_the_rank_of_an_export(shared_dir, tmp_path):
    from hta.common.trace_file import create_rank_to_trace_dict

    src = tmp_path / "in" / "rank-3.json"  # no distributedInfo inside: the rank comes from the name
    src.parent.mkdir()
    src.symlink_to(shared_dir / SMALL)
    run = Run.open(import_traces([src], tmp_path / "run", progress=False))
    assert run.meta["ranks"] == [3]
    exported = export_chrome_trace(run, tmp_path / "exported" / "rank-3.json")
    ok, ranks = create_rank_to_trace_dict([str(exported)])
    assert ok and sorted(ranks) == [3]
